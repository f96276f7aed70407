"""The pack's actions between StackStorm and the core: parameters in, `(ok, result)` out.

No business logic here: validation, policy, runs, the ledger and the metrics live in
`lib/retraction`; this parses parameters, calls the core and shapes the result.

- `execute`: `retract` and `restore`. Streams the run with progress lines. With `run_id` the
  execution is one chunk of that run (`retract_campaign`): its outcomes are recorded under
  the run id and the run is left open for `aggregate_run` to finish.
- `split` and `aggregate`: the first and last steps of `retract_campaign`.
- `metrics` and `details`: the "Retractions" card and "View details", read from the ledger.
  Every parameter is checked before the ledger is opened, so bad input reads and writes
  nothing; errors name the parameter (`InvalidParameter.field`).
"""
import re
import time

import pack_lib  # noqa: F401  (puts the pack's lib/ on sys.path; must come first)
from retraction import campaign
from retraction.bootstrap import build
from retraction.metrics import Filters, InvalidParameter, parse_window, render_card
from retraction.model import Reason, Status
from retraction.validation import InvalidRequest, address, build_request, message_id, skip_flag

FORMATS = ("json", "text", "markdown", "html")
FILTERS = ("provider", "mode", "trigger", "disposition", "destination")
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000  # retraction.ledger.MAX_LIMIT; not imported, to keep SQLAlchemy out of here
_CURSOR_RE = re.compile(r"[A-Za-z0-9_-]{1,2000}\.[A-Za-z0-9_-]{1,100}")

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
    raw_run_id = params.pop("run_id", None)
    chunk_of = None if raw_run_id in (None, "") else campaign.run_id(raw_run_id)
    app = build(config)
    try:
        request = build_request(params, app.settings)
        skip = app.policy.skip_already_retracted(request.mode, skip_flag(params))
        engine = app.engine()  # opens the ledger: a configured one that cannot open raises
        if chunk_of is not None:
            request = campaign.join_run(engine.ledger, request, chunk_of)
        # admit() refuses request-wide, then the run is recorded as started, before any
        # provider call
        run = engine.run(request, skip_already_retracted=skip, finish=chunk_of is None)
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
        # Copies answered from the ledger need no attempt; the rest must have had one.
        ok = not (counts["total"] > counts["skipped"] and not counts["attempted"])
        result = {
            "ok": ok,
            "run_id": request.run_id,
            "chunk": chunk_of is not None,
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
        if not ok:
            result["error"] = "no copy could be attempted: " + _summary(counts)
        return ok, result
    finally:
        app.close()


def _ledger_state(app, counts):
    if not app.settings.ledger_url:
        return {"recorded": False, "error": None}
    error = None
    if counts["ledger_errors"]:
        error = "%d ledger write(s) failed; see the action log" % counts["ledger_errors"]
    return {"recorded": error is None, "error": error}


def _summary(counts):
    parts = ["%d %s" % (n, status) for status, n in counts["by_status"].items()]
    reasons = ", ".join("%d %s" % (n, reason) for reason, n in counts["by_reason"].items())
    text = ", ".join(parts) or "no copies"
    if reasons:
        text += " (%s)" % reasons
    if counts["skipped"]:
        text += " (%d of them answered from the ledger)" % counts["skipped"]
    return text


# -- retract_campaign ------------------------------------------------------------------------

CAMPAIGN_OPTIONS = ("chunk_size", "concurrency")


def split(config, params, logger):
    """`split_recipients`: validate the request as `retract` would, plan the chunks, and
    record the run as started."""
    params = dict(params)
    options = {name: params.pop(name, None) for name in CAMPAIGN_OPTIONS}
    app = build(config)
    try:
        request = build_request(params, app.settings)
        size = campaign.chunk_size(options["chunk_size"], app.settings)
        in_flight = campaign.concurrency(options["concurrency"], app.settings)
        plan = campaign.plan_campaign(app, request, size, in_flight)
        logger.info("run %s: %d copies of %s to %s in %d chunk(s) of up to %d%s",
                    plan["run_id"], plan["copies"], plan["message_id"], plan["destination"],
                    len(plan["chunks"]), size,
                    "; needs approval: " + plan["approval_reason"] if plan["needs_approval"]
                    else "")
        return True, plan
    finally:
        app.close()


def aggregate(config, params, logger):
    """`aggregate_run`: finish the run from the ledger. Succeeds when the record is written,
    whatever the run's state; the workflow reads `state` to end failed after recording."""
    run = campaign.run_id(params.get("run_id"))
    failed_chunks = campaign.failed_chunk_count(params.get("failed_chunks"))
    app = build(config)
    try:
        ledger = app.require_ledger("aggregate_run reads the run's outcomes from the ledger")
        result = campaign.aggregate_run(ledger, run, failed_chunks)
        record = result["metric_record"]
        logger.info("run %s %s: %d copies, %d retracted, %d already there, %d failed",
                    run, result["state"], record["total"], record["retracted"],
                    record["already_in_destination"], record["failed"])
        return True, result
    finally:
        app.close()


# -- the card and the details ----------------------------------------------------------------

def _window_and_filters(params):
    window = parse_window(last=params.get("last"), since=params.get("since"),
                          until=params.get("until"))
    filters = Filters.of({name: params.get(name) for name in FILTERS})
    return window, filters


def _word(name, value, words):
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    text = str(value).strip().lower()
    if text not in words:
        raise InvalidParameter(name, "{!r} is not one of {}".format(value, ", ".join(words)))
    return text


def _checked(name, check, value):
    """A value from a `retraction.validation` check, its error as an InvalidParameter."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return check(value, name)
    except InvalidRequest as exc:
        raise InvalidParameter(name, exc.problem) from None


def _limit(value):
    if value is None:
        return DEFAULT_LIMIT
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise InvalidParameter("limit", "must be a whole number from 1 to {}, got {!r}".format(
            MAX_LIMIT, value))
    return value


def _cursor(value):
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str) or not _CURSOR_RE.fullmatch(value.strip()):
        raise InvalidParameter("cursor", "is malformed; pass back the next_cursor of the "
                                         "previous page unchanged")
    return value.strip()


def metrics(config, params, logger):
    """`retraction_metrics`: the metric record over a window (and filters), and its card."""
    window, filters = _window_and_filters(params)
    fmt = _word("format", params.get("format") or "text", FORMATS)
    app = build(config)
    try:
        ledger = app.require_ledger("retraction_metrics reads the ledger")
        record = ledger.metric_record(window, filters)
        logger.info("metric record %s%s: %d copies", window.label,
                    "".join(" {}={}".format(k, v) for k, v in filters.items()), record.total)
        return True, {
            "window": window.to_dict(),
            "filters": filters.to_dict(),
            "format": fmt,
            "record": record.to_dict(),
            "card": None if fmt == "json" else render_card(record, fmt),
        }
    finally:
        app.close()


def details(config, params, logger):
    """`retraction_details`: the outcome rows of a window, newest first, a page at a time."""
    window, filters = _window_and_filters(params)
    status = _word("status", params.get("status"), Status.values())
    reason = _word("reason", params.get("reason"), Reason.values())
    recipient = _checked("recipient", address, params.get("recipient"))
    msgid = _checked("message_id", message_id, params.get("message_id"))
    limit = _limit(params.get("limit"))
    cursor = _cursor(params.get("cursor"))
    app = build(config)
    try:
        ledger = app.require_ledger("retraction_details reads the ledger")
        rows, next_cursor = ledger.details(window, filters, status=status, reason=reason,
                                           recipient=recipient, message_id=msgid,
                                           limit=limit, cursor=cursor)
        logger.info("details %s: %d row(s)%s", window.label, len(rows),
                    ", more to come" if next_cursor else "")
        return True, {
            "window": window.to_dict(),
            "filters": filters.to_dict(),
            "rows": rows,
            "count": len(rows),
            "next_cursor": next_cursor,
        }
    finally:
        app.close()
