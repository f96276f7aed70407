"""The pack's actions between StackStorm and the core: parameters in, `(ok, result)` out.

No business logic here: validation, policy, runs, the ledger and the metrics live in
`lib/retraction`; this parses parameters, calls the core and shapes the result.

- `execute`: `retract` and `restore`. Streams the run with progress lines. With `run_id` the
  execution is one chunk of that run (`retract_campaign`): its outcomes are recorded under
  the run id and the run is left open for `aggregate_run` to finish.
- `split` and `aggregate`: the first and last steps of `retract_campaign`.
- `record_decision`: an analyst's answer to an approval inquiry, kept in the ledger.
- `metrics` and `details`: the "Retractions" card and "View details", read from the ledger.
  Every parameter is checked (`retraction.metrics.parse_query`, which the CLI uses too)
  before the ledger is opened, so bad input reads and writes nothing; errors name the
  parameter (`InvalidParameter.field`).
"""
import time

# Only what `retract` needs is imported here (every action is a fresh process); the other
# actions import their own modules (metrics, decisions) when they run.
import pack_lib  # noqa: F401  (puts the pack's lib/ on sys.path; must come first)
from retraction import campaign
from retraction.bootstrap import build
from retraction.config import ConfigError
from retraction.results import ledger_state, request_fields
from retraction.validation import InvalidRequest, build_request, skip_flag

PROGRESS_EVERY_S = 10.0  # a progress line at most this often on long runs


def _build(config):
    """`build(config)` with the pack config's `log_level` applied: unset, nothing changes
    (the action's own logger only); DEBUG, INFO, ... logs the pack's and its client
    libraries' loggers at that level to the execution's stderr, secrets redacted (see
    `retraction.logs`). A bad value is a ConfigError naming `log_level`."""
    from retraction import logs

    level = logs.level_of(config.get("log_level") if config is not None else None)
    app = build(config)
    if level is not None:
        logs.remember(app.settings)
        logs.configure(level)
    return app


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
    app = _build(config)
    try:
        request = build_request(params, app.settings)
        skip = app.policy.skip_already_retracted(request.mode, skip_flag(params))
        # Providers' tokens on other threads while the ledger opens; not for a chunk (the
        # ledger may refuse it as not of its run) nor when skipping (the ledger may answer a
        # copy, whose token is then never needed).
        if chunk_of is None and not skip:
            app.warm(request)
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
        # Failed only when providers were out of reach for every copy that needed one:
        # copies answered from the ledger or refused by policy have definitive outcomes.
        ok = not run.counts.nothing_attempted
        result = dict(request_fields(request, skip), **{
            "ok": ok,
            "chunk": chunk_of is not None,
            "counts": counts,
            "outcomes": outcomes,
            "outcomes_truncated": truncated,
            "ledger": ledger_state(app.settings.ledger_url, counts, "see the action log"),
        })
        logger.info("run %s: %s", request.run_id, _summary(counts))
        if not ok:
            result["error"] = "no copy could be attempted: " + _summary(counts)
        return ok, result
    finally:
        app.close()


def _summary(counts):
    parts = ["%d %s" % (n, status) for status, n in counts["by_status"].items()]
    reasons = ", ".join("%d %s" % (n, reason) for reason, n in counts["by_reason"].items())
    text = ", ".join(parts) or "no copies"
    if reasons:
        text += " (%s)" % reasons
    if counts["skipped"]:
        text += "; %d answered from the ledger (already there)" % counts["skipped"]
    return text


# -- retract_campaign ------------------------------------------------------------------------

CAMPAIGN_OPTIONS = ("chunk_size", "concurrency")


def split(config, params, logger):
    """`split_recipients`: validate the request as `retract` would, plan the chunks, and
    record the run as started."""
    params = dict(params)
    options = {name: params.pop(name, None) for name in CAMPAIGN_OPTIONS}
    app = _build(config)
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
    app = _build(config)
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


# -- approval decisions -----------------------------------------------------------------------

def record_decision(config, params, logger):
    """`record_decision`: keep an analyst's answer in the ledger. A failure returns
    `(False, {recorded: false, error, field})`, so a workflow can say what went wrong."""
    from retraction.automation import decision_from_params  # this action's alone

    try:
        values = decision_from_params(params)
        app = _build(config)
    except InvalidRequest as exc:
        return False, {"recorded": False, "error": str(exc), "field": exc.field}
    except ConfigError as exc:
        return False, {"recorded": False, "error": str(exc), "field": exc.key}
    try:
        ledger = app.require_ledger("record_decision keeps the decision in the ledger")
        row = ledger.record_decision(**values)
    except ConfigError as exc:  # LedgerUnavailable: names ledger_url, password masked
        return False, {"recorded": False, "error": str(exc), "field": exc.key}
    finally:
        app.close()
    logger.info("decision %s on %s: %s by %s%s", row["id"], row["message_id"], row["decision"],
                row["decided_by"] or "an unnamed analyst",
                " (run %s)" % row["run_id"] if row["run_id"] else "")
    return True, {"recorded": True, "decision": row}


# -- the card and the details ----------------------------------------------------------------

def metrics(config, params, logger):
    """`retraction_metrics`: the metric record over a window (and filters), and its card."""
    from retraction.metrics import card_format, parse_query, render_card

    query = parse_query(params)
    fmt = card_format(params.get("format"))
    app = _build(config)
    try:
        ledger = app.require_ledger("retraction_metrics reads the ledger")
        record = ledger.metric_record(query.window, query.filters)
        logger.info("metric record %s%s: %d copies", query.window.label,
                    "".join(" {}={}".format(k, v) for k, v in query.filters.items()),
                    record.total)
        return True, {
            "window": query.window.to_dict(),
            "filters": query.filters.to_dict(),
            "format": fmt,
            "record": record.to_dict(),
            # analysts' answers to approval inquiries in the window (None with a provider
            # filter: a decision concerns a whole run)
            "decisions": ledger.decision_counts(query.window, query.filters),
            "card": None if fmt == "json" else render_card(record, fmt),
        }
    finally:
        app.close()


def details(config, params, logger):
    """`retraction_details`: the outcome rows of a window, newest first, a page at a time."""
    from retraction.metrics import parse_query

    query = parse_query(params, rows=True)
    app = _build(config)
    try:
        ledger = app.require_ledger("retraction_details reads the ledger")
        rows, next_cursor = ledger.details(query.window, query.filters, **query.details_args())
        logger.info("details %s: %d row(s)%s", query.window.label, len(rows),
                    ", more to come" if next_cursor else "")
        return True, {
            "window": query.window.to_dict(),
            "filters": query.filters.to_dict(),
            "rows": rows,
            "count": len(rows),
            "next_cursor": next_cursor,
        }
    finally:
        app.close()
