"""One run over many executions: the `retract_campaign` workflow's arithmetic and decisions.

A large request is one *run* (one run id, one metric record) whose copies are retracted in
*chunks*, each chunk a separate `retract` execution that StackStorm may place on any action
runner. This module holds what the workflow must not compute itself:

- `plan_campaign`: validate the whole request exactly as `retract` does, split its recipients
  into chunks, say whether an analyst should approve it first, and record the run as started.
- `join_run`: turn a chunk's request into a part of the run (same run id, same request time),
  refusing a chunk that does not belong to that run.
- `aggregate_run`: finish the run from what the ledger holds for its run id, so the record is
  right whether chunks failed, never ran, or were retried.
- `Earlier`: what `Ledger.placed_by` answers for the engine's skip list (which earlier run put
  a copy where it is); defined here so the engine need not import the ledger to name it.

Chunk retries are safe because the ledger keeps one row per copy per run and replaces it only
with a better outcome; see `retraction.ledger.episodes`.
"""
from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from retraction.model import Destination, RetractionRequest
from retraction.validation import InvalidRequest

MAX_CONCURRENCY = 64  # chunks in flight; more only queues work on the action runners
_HEX_RUN_ID = re.compile(r"[0-9a-f]{32}")
_UUID_RUN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Earlier(NamedTuple):
    """The run whose outcome put a copy where the ledger last saw it, and that outcome."""

    run_id: str
    status: str


def run_id(value: Any, field: str = "run_id") -> str:
    """A run id as `new_run_id` makes them (32 hex digits); a UUID with dashes is accepted
    and written without them, so every action names the run the same way."""
    if not isinstance(value, str):
        raise InvalidRequest(field, value, "must be a string of 32 hex digits")
    text = value.strip().lower()
    if _UUID_RUN_ID.fullmatch(text):
        text = text.replace("-", "")
    if not _HEX_RUN_ID.fullmatch(text):
        raise InvalidRequest(field, value, "must be 32 hex digits (a run id such as "
                                           "split_recipients returns)")
    return text


def _count(value: Any, field: str, default: int, maximum: int) -> int:
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(field, value, "must be a whole number")
    if not 1 <= value <= maximum:
        raise InvalidRequest(field, value, "must be from 1 to %d" % maximum)
    return value


def chunk_size(value: Any, settings: Any) -> int:
    """The chunk size asked for, else `limits.chunk_size`."""
    return _count(value, "chunk_size", settings.limits.chunk_size,
                  settings.limits.max_recipients)


def concurrency(value: Any, settings: Any) -> int:
    """Chunks in flight at once, else `limits.chunk_concurrency`."""
    return _count(value, "concurrency", min(settings.limits.chunk_concurrency, MAX_CONCURRENCY),
                  MAX_CONCURRENCY)


def chunks(recipients: Sequence[str], size: int) -> List[List[str]]:
    """Consecutive chunks of at most `size` recipients, in the order given."""
    return [list(recipients[start:start + size]) for start in range(0, len(recipients), size)]


def approval(policy: Any, copies: int, destination: Destination) -> Tuple[bool, Optional[str]]:
    """Whether an analyst should approve the run first (`Policy.needs_approval`), and why."""
    if not policy.needs_approval(copies, destination):
        return False, None
    if destination == Destination.HARD_DELETE and policy.settings.approval.hard_delete:
        return True, "hard_delete is asked for and approval.hard_delete is on"
    return True, "%d copies is more than approval.threshold (%d)" % (
        copies, policy.settings.approval.threshold)


def plan_campaign(app: Any, request: RetractionRequest, size: int, in_flight: int
                  ) -> Dict[str, Any]:
    """The workflow's plan for a validated request: run id, chunks, approval. Records the
    run as started (the chunks join it). Needs a ledger: the run's record is aggregated from
    it, so without one nothing could say what the chunks did."""
    app.policy.admit(request)  # the request-wide refusals retract makes, before anything
    ledger = app.require_ledger("retract_campaign aggregates its chunks from the ledger")
    ledger.record_run_started(request)
    needs, why = approval(app.policy, len(request.recipients), request.destination)
    return {
        "run_id": request.run_id,
        "message_id": request.message_id,
        "destination": request.destination.value,
        "mode": request.mode.value,
        "trigger": request.trigger.value,
        "preview": request.preview,
        "copies": len(request.recipients),
        "chunk_size": size,
        "concurrency": in_flight,
        "chunks": chunks(request.recipients, size),
        "needs_approval": needs,
        "approval_reason": why,
    }


# The fields that make a chunk part of a run: a chunk asking anything else is refused.
_RUN_FIELDS = ("message_id", "destination", "mode", "trigger", "disposition", "preview")


def join_run(ledger: Any, request: RetractionRequest, run: str) -> RetractionRequest:
    """The chunk's request as part of run `run`: the run's id and request time (so time to
    retract runs from one start). Refuses a chunk that asks for something else than the run
    the ledger recorded; with no ledger the id is only a label for the outcomes."""
    found = ledger.run(run) if ledger is not None else None
    if found is None:
        return replace(request, run_id=run)
    asked = {"message_id": request.message_id, "destination": request.destination.value,
             "mode": request.mode.value, "trigger": request.trigger.value,
             "disposition": request.disposition.value if request.disposition else None,
             "preview": request.preview}
    for name in _RUN_FIELDS:
        if found[name] != asked[name]:
            raise InvalidRequest("run_id", run, "run is for %s=%r, this chunk asks %r" % (
                name, found[name], asked[name]))
    from retraction.metrics.window import parse_time  # ISO text from the ledger's row

    started = parse_time("requested_at", found["requested_at"])
    return replace(request, run_id=run, requested_at=started)


def aggregate_run(ledger: Any, run: str, failed_chunks: int) -> Dict[str, Any]:
    """Finish run `run` from its outcomes in the ledger: `failed` when any chunk failed or
    never ran (its copies may have no outcome), else `finished`. Idempotent: aggregating
    again after a chunk was rerun replaces the record."""
    from retraction.metrics import render_card

    if ledger.run(run) is None:
        raise InvalidRequest("run_id", run, "is not a run in this ledger")
    state = "failed" if failed_chunks else "finished"
    record = ledger.record_run_finished(run, state)
    return {
        "run_id": run,
        "state": state,
        "failed_chunks": failed_chunks,
        "metric_record": record.to_dict(),
        "card": render_card(record, "text", title="Retraction run %s" % run),
    }


def failed_chunk_count(value: Any) -> int:
    """The `failed_chunks` parameter: a whole number, zero or more."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRequest("failed_chunks", value, "must be a whole number, 0 or more")
    return value
