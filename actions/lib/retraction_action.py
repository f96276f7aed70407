"""What the `retract` and `restore` actions share: parameters in, `(ok, result)` out.

No business logic here: validation, policy and the run live in `lib/retraction`; this turns
a StackStorm call into a request, streams the run with progress lines, and shapes the result.
"""
import time

import pack_lib  # noqa: F401  (puts the pack's lib/ on sys.path; must come first)
from retraction.bootstrap import build
from retraction.validation import build_request, skip_flag

PROGRESS_EVERY_S = 10.0  # a progress line at most this often on long runs


class Progress:
    """`done/total, rate, eta` lines through the action's logger, at most every few seconds.
    tqdm formats the line; it is imported only when a run is long enough to need one."""

    def __init__(self, logger, run_id, total, every_s=PROGRESS_EVERY_S):
        self.logger = logger
        self.run_id = run_id
        self.total = total
        self.every_s = every_s
        self.started = time.monotonic()
        self.last = self.started
        self.lines = 0

    def update(self, done, force=False):
        now = time.monotonic()
        if not force and now - self.last < self.every_s:
            return
        self.last = now
        from tqdm import tqdm

        meter = tqdm.format_meter(done, max(self.total, done), now - self.started, ncols=0,
                                  unit="copies")
        self.logger.info("run %s: %s", self.run_id, meter)
        self.lines += 1


def execute(config, params, logger, destination=None):
    """Run one retraction for an action. Raises (InvalidRequest, ConfigError) on bad input,
    which StackStorm reports as a failed execution with the message naming the field."""
    params = dict(params)
    if destination is not None:
        params["destination"] = destination
    app = build(config)
    try:
        request = build_request(params, app.settings)
        skip = app.policy.skip_already_retracted(request.mode, skip_flag(params))
        run = app.engine().run(request, skip_already_retracted=skip)  # admit() refuses here
        logger.info("run %s: %s %s for %d recipient(s) to %s%s", request.run_id,
                    "previewing" if request.preview else "retracting", request.message_id,
                    len(request.recipients), request.destination.value,
                    " (skipping copies already there)" if skip else "")
        limit = app.settings.limits.result_outcomes_limit
        outcomes = []
        truncated = False
        progress = Progress(logger, request.run_id, len(request.recipients))
        for outcome in run:
            if len(outcomes) < limit:
                outcomes.append(outcome.to_dict())
            else:
                truncated = True
            progress.update(run.counts.total)
        if progress.lines:
            progress.update(run.counts.total, force=True)
        counts = run.counts.to_dict()
        result = {
            "run_id": request.run_id,
            "message_id": request.message_id,
            "destination": request.destination.value,
            "mode": request.mode.value,
            "trigger": request.trigger.value,
            "disposition": request.disposition.value if request.disposition else None,
            "preview": request.preview,
            "skip_already_retracted": skip,
            "counts": counts,
            "outcomes": outcomes,
            "outcomes_truncated": truncated,
            "ledger": _ledger_state(app, counts),
        }
        logger.info("run %s: %s", request.run_id, _summary(counts))
        if counts["total"] and not counts["attempted"]:
            result["error"] = "no copy could be attempted: " + _summary(counts)
            return False, result
        return True, result
    finally:
        app.close()


def _ledger_state(app, counts):
    if not app.settings.ledger_url:
        return {"recorded": False, "error": None}
    error = app.ledger_error
    if error is None and counts["ledger_errors"]:
        error = "%d ledger write(s) failed; see the action log" % counts["ledger_errors"]
    return {"recorded": error is None, "error": error}


def _summary(counts):
    parts = ["%d %s" % (n, status) for status, n in counts["by_status"].items()]
    reasons = ", ".join("%d %s" % (n, reason) for reason, n in counts["by_reason"].items())
    text = ", ".join(parts) or "no copies"
    if reasons:
        text += " (%s)" % reasons
    if counts["skipped"]:
        text += ", %d skipped (already there)" % counts["skipped"]
    return text
