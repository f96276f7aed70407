"""The metric record: what the "Retractions" card shows for a window or for one run.

Counting rule (the ledger applies it across runs; `record_from_outcomes` within one list):
- A copy is one (message_id, recipient compared case-insensitively, destination). Each copy
  counts at most once per *episode* with its best status: retracted > already_in_destination
  > failed. A rerun (already_in_destination) or a retried failure adds nothing; a failure
  later superseded by a success counts as one retraction, at the time of the success.
- An episode of a copy in a destination ends when the ledger records that the copy was there
  (retracted or already_in_destination) and then moved by us elsewhere (a `retracted` outcome
  to another destination, e.g. a restore to the inbox). A later retraction back to that
  destination opens a new episode, so it counts again as a new retraction.
- total = retracted + already_in_destination + failed. Percentages are of the total,
  rounded half-up to one decimal.
- Previews are not retractions: copies of preview runs (`previewed`, and their failures as
  `preview_failed`) are counted apart, once per copy until the copy is next moved, and never
  enter the total or any breakdown.
- Read/unread is over retracted copies (the read state before the move); auto/manual and the
  by-provider/destination/disposition/trigger breakdowns are over the total.
- Time to retract is over retracted copies: from the verdict time, else the request time,
  to the completion of the move; p50/p95 interpolate linearly between closest ranks (as
  PostgreSQL's percentile_cont), in seconds with millisecond precision.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from retraction.metrics.errors import InvalidParameter
from retraction.metrics.window import Window, parse_time
from retraction.model import (Destination, Disposition, Mode, Outcome, Provider, Reason,
                              Status, Trigger)

UNSPECIFIED = "unspecified"  # the key for a breakdown value the outcome did not carry

# What the ledger groups by. Values are DESIGN words (None when absent; was_read a bool).
FACETS = ("status", "reason", "was_read", "mode", "provider", "destination", "disposition",
          "trigger", "preview")

# Within one episode, the status that wins. Previews have their own track (previewed > failed).
RANK = {Status.FAILED.value: 1, Status.ALREADY_IN_DESTINATION.value: 2,
        Status.PREVIEWED.value: 2, Status.RETRACTED.value: 3}

_FILTER_WORDS = {
    "provider": Provider, "mode": Mode, "trigger": Trigger, "disposition": Disposition,
    "destination": Destination,
}
_PCT = Decimal("0.1")
_MS = Decimal("0.001")


def percent(part: int, whole: int) -> float:
    if not whole:
        return 0.0
    return float((Decimal(part) * 100 / Decimal(whole)).quantize(_PCT, rounding=ROUND_HALF_UP))


@dataclass(frozen=True)
class Filters:
    """Optional narrowing of a record or a search to one provider, mode, trigger,
    disposition and/or destination."""

    provider: Optional[str] = None
    mode: Optional[str] = None
    trigger: Optional[str] = None
    disposition: Optional[str] = None
    destination: Optional[str] = None

    @classmethod
    def of(cls, value: Union["Filters", Mapping[str, Any], None] = None) -> "Filters":
        if isinstance(value, Filters):
            return value
        values = {}
        for key, raw in (value or {}).items():
            if key not in _FILTER_WORDS:
                raise InvalidParameter(key, "is not a filter; use one of {}".format(
                    ", ".join(_FILTER_WORDS)))
            if raw in (None, ""):
                continue
            words = _FILTER_WORDS[key]
            text = str(raw).strip()
            text = text.upper() if words is Disposition else text.lower()
            if text not in words.values():
                raise InvalidParameter(key, "{!r} is not one of {}".format(
                    raw, ", ".join(words.values())))
            values[key] = text
        return cls(**values)

    def items(self) -> List[Tuple[str, str]]:
        return [(key, getattr(self, key)) for key in _FILTER_WORDS
                if getattr(self, key) is not None]

    def to_dict(self) -> Dict[str, str]:
        return dict(self.items())

    def matches(self, outcome: Outcome) -> bool:
        return all(getattr(outcome, key) == value for key, value in self.items())


@dataclass(frozen=True)
class TimeToRetract:
    count: int = 0
    p50_s: Optional[float] = None
    p95_s: Optional[float] = None
    max_s: Optional[float] = None

    def to_dict(self) -> Dict[str, Any]:
        return {"count": self.count, "p50_s": self.p50_s, "p95_s": self.p95_s,
                "max_s": self.max_s}


def percentile_ranks(count: int, q: str) -> Tuple[int, int, Decimal]:
    """0-based ranks around quantile `q` of `count` sorted values and the weight of the upper
    one (percentile_cont)."""
    position = Decimal(q) * (count - 1)
    low = int(position)
    return low, min(low + 1, count - 1), position - low


def interpolate_seconds(low_ms: float, high_ms: float, weight: Decimal) -> float:
    return seconds(Decimal(low_ms) + (Decimal(high_ms) - Decimal(low_ms)) * weight)


def seconds(ms: Union[int, float, Decimal]) -> float:
    return float((Decimal(ms) / 1000).quantize(_MS, rounding=ROUND_HALF_UP))


def time_to_retract(durations_ms: Sequence[int]) -> TimeToRetract:
    values = sorted(durations_ms)
    if not values:
        return TimeToRetract()
    result = {}
    for name, q in (("p50_s", "0.5"), ("p95_s", "0.95")):
        low, high, weight = percentile_ranks(len(values), q)
        result[name] = interpolate_seconds(values[low], values[high], weight)
    return TimeToRetract(count=len(values), max_s=seconds(values[-1]),
                         **result)


def _key(value: Any) -> str:
    return UNSPECIFIED if value is None else str(value)


def _ordered(counter: Counter, words: Iterable[str]) -> Dict[str, int]:
    """Non-zero entries in DESIGN order, then anything else (unspecified) alphabetically."""
    order = list(words)
    keys = sorted((k for k, n in counter.items() if n),
                  key=lambda k: (order.index(k) if k in order else len(order), k))
    return {k: counter[k] for k in keys}


@dataclass(frozen=True)
class MetricRecord:
    window: Optional[Window] = None
    filters: Filters = field(default_factory=Filters)
    total: int = 0
    retracted: int = 0
    already_in_destination: int = 0
    failed: int = 0
    failed_by_reason: Dict[str, int] = field(default_factory=dict)
    previewed: int = 0
    preview_failed: int = 0
    read: int = 0
    unread: int = 0
    read_unknown: int = 0
    auto: int = 0
    manual: int = 0
    by_provider: Dict[str, int] = field(default_factory=dict)
    by_destination: Dict[str, int] = field(default_factory=dict)
    by_disposition: Dict[str, int] = field(default_factory=dict)
    by_trigger: Dict[str, int] = field(default_factory=dict)
    time_to_retract: TimeToRetract = field(default_factory=TimeToRetract)

    @classmethod
    def from_groups(cls, groups: Iterable[Tuple[Mapping[str, Any], int]],
                    durations: TimeToRetract, window: Optional[Window] = None,
                    filters: Optional[Filters] = None) -> "MetricRecord":
        """Fold counted copies, grouped by FACETS, into a record."""
        status = Counter()  # type: Counter
        reasons = Counter()  # type: Counter
        reading = Counter()  # type: Counter
        modes = Counter()  # type: Counter
        breakdown = {name: Counter() for name in
                     ("provider", "destination", "disposition", "trigger")}
        previewed = preview_failed = 0
        for facets, count in groups:
            if facets["preview"]:
                if facets["status"] == Status.FAILED:
                    preview_failed += count
                else:
                    previewed += count
                continue
            status[facets["status"]] += count
            if facets["status"] == Status.FAILED:
                reasons[_key(facets["reason"])] += count
            if facets["status"] == Status.RETRACTED:
                reading[facets["was_read"]] += count
            modes[facets["mode"]] += count
            for name, counter in breakdown.items():
                counter[_key(facets[name])] += count
        failed_by_reason = {reason: reasons[reason] for reason in Reason.values()}
        for other, count in reasons.items():  # a failure recorded without a known reason
            failed_by_reason.setdefault(other, count)
        return cls(
            window=window, filters=filters or Filters(),
            total=sum(status[s.value] for s in (Status.RETRACTED, Status.ALREADY_IN_DESTINATION,
                                                Status.FAILED)),
            retracted=status[Status.RETRACTED.value],
            already_in_destination=status[Status.ALREADY_IN_DESTINATION.value],
            failed=status[Status.FAILED.value], failed_by_reason=failed_by_reason,
            previewed=previewed, preview_failed=preview_failed,
            read=reading[True], unread=reading[False], read_unknown=reading[None],
            auto=modes[Mode.AUTO.value], manual=modes[Mode.MANUAL.value],
            by_provider=_ordered(breakdown["provider"], Provider.values()),
            by_destination=_ordered(breakdown["destination"], Destination.values()),
            by_disposition=_ordered(breakdown["disposition"], Disposition.values()),
            by_trigger=_ordered(breakdown["trigger"], Trigger.values()),
            time_to_retract=durations,
        )

    def pct(self, count: int) -> float:
        return percent(count, self.total)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "window": self.window.to_dict() if self.window else None,
            "filters": self.filters.to_dict(),
            "total": self.total,
            "retracted": self.retracted,
            "retracted_pct": self.pct(self.retracted),
            "already_in_destination": self.already_in_destination,
            "already_in_destination_pct": self.pct(self.already_in_destination),
            "failed": self.failed,
            "failed_pct": self.pct(self.failed),
            "failed_by_reason": dict(self.failed_by_reason),
            "failed_by_reason_pct": {k: self.pct(n) for k, n in self.failed_by_reason.items()},
            "previewed": self.previewed,
            "preview_failed": self.preview_failed,
            "read": self.read,
            "unread": self.unread,
            "read_unknown": self.read_unknown,
            "read_pct": percent(self.read, self.retracted),
            "unread_pct": percent(self.unread, self.retracted),
            "auto": self.auto,
            "auto_pct": self.pct(self.auto),
            "manual": self.manual,
            "manual_pct": self.pct(self.manual),
            "by_provider": dict(self.by_provider),
            "by_destination": dict(self.by_destination),
            "by_disposition": dict(self.by_disposition),
            "by_trigger": dict(self.by_trigger),
            "time_to_retract": self.time_to_retract.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MetricRecord":
        """Back from `to_dict` (e.g. a run's stored record); derived percentages are dropped."""
        window = data.get("window")
        if window:
            window = Window(since=parse_time("since", window["since"]),
                            until=parse_time("until", window["until"]),
                            last=window.get("last"))
        plain = ("total", "retracted", "already_in_destination", "failed", "previewed",
                 "preview_failed", "read", "unread", "read_unknown", "auto", "manual")
        mappings = ("failed_by_reason", "by_provider", "by_destination", "by_disposition",
                    "by_trigger")
        return cls(window=window or None, filters=Filters.of(data.get("filters")),
                   time_to_retract=TimeToRetract(**data.get("time_to_retract") or {}),
                   **{name: int(data.get(name) or 0) for name in plain},
                   **{name: dict(data.get(name) or {}) for name in mappings})


def outcome_facets(outcome: Outcome, preview: bool) -> Dict[str, Any]:
    values = {name: getattr(outcome, name) for name in FACETS if name != "preview"}
    values = {k: (str(v) if v is not None and k != "was_read" else v) for k, v in values.items()}
    values["preview"] = bool(preview or outcome.status == Status.PREVIEWED)
    return values


def duration_ms(outcome: Outcome) -> Optional[int]:
    """Verdict time (else request time) to completion, in ms; clock skew between the verdict
    source and this node can make it negative, which we read as zero."""
    start = outcome.verdict_time or outcome.requested_at
    if start is None or outcome.completed_at is None:
        return None
    end = _aware(outcome.completed_at)
    return max(0, int(round((end - _aware(start)).total_seconds() * 1000)))


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def record_from_outcomes(outcomes: Iterable[Outcome], preview: bool = False,
                         window: Optional[Window] = None,
                         filters: Union[Filters, Mapping[str, Any], None] = None
                         ) -> MetricRecord:
    """One run's record, in memory, by the same rule: each copy once, with its best status.
    `preview=True` for a preview run, whose failures are then counted apart too."""
    chosen = {}  # type: Dict[Tuple[str, str, str, bool], Tuple[Outcome, Dict[str, Any]]]
    flt = Filters.of(filters)
    for outcome in outcomes:
        if not flt.matches(outcome):
            continue
        facets = outcome_facets(outcome, preview)
        key = (outcome.message_id, outcome.recipient.lower(), str(outcome.destination),
               facets["preview"])
        best = chosen.get(key)
        if best is None or RANK[facets["status"]] > RANK[best[1]["status"]]:
            chosen[key] = (outcome, facets)
    groups = Counter()  # type: Counter
    durations = []
    for outcome, facets in chosen.values():
        groups[tuple(facets[name] for name in FACETS)] += 1
        if facets["status"] == Status.RETRACTED and not facets["preview"]:
            ms = duration_ms(outcome)
            if ms is not None:
                durations.append(ms)
    return MetricRecord.from_groups(
        ((dict(zip(FACETS, values)), count) for values, count in groups.items()),
        time_to_retract(durations), window=window, filters=flt)
