"""Outcomes to ledger rows and back."""
from __future__ import annotations

from datetime import timezone
from functools import lru_cache
from operator import attrgetter, itemgetter
from typing import Any, Dict, Mapping, Tuple

from retraction.ledger import facets
from retraction.metrics.errors import InvalidParameter
from retraction.metrics.record import FACETS, duration_ms, seconds
from retraction.model import Outcome, Status

# Outcome fields stored as they are.
OUTCOME_FIELDS = ("run_id", "message_id", "recipient", "provider", "destination", "mode",
                  "trigger", "disposition", "status", "reason", "error_code", "error_message",
                  "was_read", "source_folder", "via_group", "verdict_time", "requested_at",
                  "completed_at", "attempts", "requested_by", "comment")
_WORDS = ("provider", "destination", "mode", "trigger", "disposition", "status", "reason")


# The facet words as `outcome_facets` gives them, read from the row (whose words are already
# text), and the key `_pack` is cached under.
_FACET_WORDS = tuple(name for name in FACETS if name != "preview")
_PACK_KEY = _FACET_WORDS + ("preview",)
_facet_words = itemgetter(*_FACET_WORDS)
_outcome_values = attrgetter(*OUTCOME_FIELDS)
_REQUIRED = ("run_id", "message_id", "recipient", "destination", "completed_at")
_required = attrgetter(*_REQUIRED)
_TIMES = ("verdict_time", "requested_at", "completed_at")
_PREVIEWED = Status.PREVIEWED.value


@lru_cache(maxsize=4096)
def _pack(values: Tuple[Any, ...]) -> int:
    """`facets.pack` once per distinct combination (a run repeats a handful of them)."""
    return facets.pack(dict(zip(_PACK_KEY, values)))


def outcome_row(outcome: Outcome, preview: bool) -> Dict[str, Any]:
    """The row for one outcome (without `counted`/`episode`, which the counting rule sets).
    Refuses an outcome the metrics could not count, naming the field."""
    for name, value in zip(_REQUIRED, _required(outcome)):
        if not value:
            raise InvalidParameter("outcome.{}".format(name), "is required")
    if (outcome.status == Status.FAILED) != (outcome.reason is not None):
        raise InvalidParameter("outcome.reason", "is set when, and only when, status is "
                                                 "failed (status={!r}, reason={!r})".format(
                                                     str(outcome.status), outcome.reason))
    if preview and outcome.status == Status.RETRACTED:
        raise InvalidParameter("outcome.status", "run {} is a preview: nothing may be "
                                                 "retracted in it".format(outcome.run_id))
    row = dict(zip(OUTCOME_FIELDS, _outcome_values(outcome)))
    for name in _WORDS:
        value = row[name]
        if value is not None and type(value) is not str:  # an enum: its word
            row[name] = str(value)
    for name in _TIMES:
        value = row[name]
        if value is not None and value.tzinfo is None:
            row[name] = value.replace(tzinfo=timezone.utc)
    row["recipient_key"] = outcome.recipient.strip().lower()
    # 0 is meaningful: the copy was answered without asking a provider (skipped, refused by
    # policy, its provider unavailable).
    attempts = 1 if outcome.attempts is None else outcome.attempts
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 0:
        raise InvalidParameter("outcome.attempts", "must be a whole number, 0 or more "
                                                   "(got {!r})".format(outcome.attempts))
    row["attempts"] = attempts
    # `outcome_facets(outcome, preview)`, without building it: the row already holds its words
    row["preview"] = is_preview = bool(preview or outcome.status == _PREVIEWED)
    # validates every word; was_read's type is in the key so 1 is not taken for True
    row["facets"] = _pack(_facet_words(row) + (is_preview, type(row["was_read"])))
    row["ttr_ms"] = duration_ms(outcome)
    return row


def detail(row: Mapping[str, Any]) -> Dict[str, Any]:
    """A JSON-safe outcome row for `details`: the Outcome's fields plus the ledger's view."""
    data = {name: row[name] for name in OUTCOME_FIELDS}
    for name in ("verdict_time", "requested_at", "completed_at"):
        data[name] = data[name].isoformat() if data[name] is not None else None
    data["id"] = row["id"]
    data["preview"] = bool(row["preview"])
    data["counted"] = bool(row["counted"])
    data["episode"] = row["episode"]
    data["time_to_retract_s"] = seconds(row["ttr_ms"]) if row["ttr_ms"] is not None else None
    return data


def to_outcome(row: Mapping[str, Any]) -> Outcome:
    return Outcome(**{name: row[name] for name in OUTCOME_FIELDS})
