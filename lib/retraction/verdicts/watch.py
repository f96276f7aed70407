"""What the sensors decide, without I/O: which rows are new, which changed disposition, which
reports are newly confirmed, and how that memory is written to the StackStorm datastore.

The seen-set remembers, per Cloudflare row id (`source_id`), the last disposition the sensor
saw. Keyed by row, not by Message-ID: one message sent in several SMTP transactions has one
row per transaction, each with its own recipients, and every one of them must be retracted.
It holds every delivered row of the lookback window, clean ones included: a message first seen
clean (NONE) and re-scanned MALICIOUS is a post-delivery change, not a new verdict.

Encoding: one datastore value per hour of the rows' last scan time (`<prefix><YYYYMMDDHH>`),
`{"v": 1, "rows": {"<row id>": "<code>"}}` with a one-letter code per DESIGN disposition
(`!` marks a malformed row, so it is reported once): about 26 bytes a row. Hour buckets make
the bound trivial (a bucket goes once its hour is older than the window) and are written once
per page. A dispatch is written at once to a small journal, `{"v": 1, "rows": {"<row id>":
["<code>", "<hour>"]}}` (the dispatches since the last page write), which the next page write
folds into the buckets and empties: a dispatch costs a write the size of a page's
dispatches, not of an hour of mail.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Dict, Iterable, List, Optional, Set

from retraction.inert import inert_values
from retraction.model import Disposition
from retraction.verdicts.rows import SOURCE, SubmissionRow, VerdictRow, iso, wanted

VERDICT = "verdict"
VERDICT_CHANGED = "verdict_changed"
PHISH_SUBMISSION = "phish_submission"

FORMAT = 1
CODE_OF = {
    Disposition.MALICIOUS: "M",
    Disposition.SUSPICIOUS: "S",
    Disposition.SPOOF: "P",
    Disposition.SPAM: "A",
    Disposition.BULK: "B",
    Disposition.NONE: "N",
}
WORD_OF = {code: word for word, code in CODE_OF.items()}
MALFORMED = "!"
HOUR = timedelta(hours=1)


def bucket_name(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y%m%d%H")


def bucket_end(name: str) -> datetime:
    return datetime.strptime(name, "%Y%m%d%H").replace(tzinfo=timezone.utc) + HOUR


def _decode(text: Optional[str], key: str) -> dict:
    """A JSON object written by this module, or ValueError naming the key."""
    try:
        data = json.loads(text or "")
    except ValueError:
        raise ValueError("datastore value %s is not JSON" % key)
    if not isinstance(data, dict) or data.get("v") != FORMAT:
        raise ValueError("datastore value %s is not format %d" % (key, FORMAT))
    return data


class SeenSet:
    """Last disposition code per row id, in hour buckets. `dirty` names the buckets to write;
    a bucket left empty is to be deleted."""

    def __init__(self) -> None:
        self._buckets: Dict[str, Dict[str, str]] = {}
        self._where: Dict[str, str] = {}
        self.dirty: Set[str] = set()

    def __len__(self) -> int:
        return len(self._where)

    def code(self, row_id: str) -> Optional[str]:
        bucket = self._where.get(row_id)
        return None if bucket is None else self._buckets[bucket][row_id]

    def bucket_of(self, row_id: str) -> Optional[str]:
        return self._where.get(row_id)

    def remember(self, row_id: str, code: str, scanned_at: datetime) -> None:
        """Record a code under the hour of the row's latest scan (a re-scan moves it, so the
        entry lives as long as the row can still show up in the window)."""
        self.put(row_id, code, bucket_name(scanned_at))

    def put(self, row_id: str, code: str, target: str) -> None:
        old = self._where.get(row_id)
        if old == target and self._buckets[old][row_id] == code:
            return
        if old is not None and old != target:
            del self._buckets[old][row_id]
            self.dirty.add(old)
        self._buckets.setdefault(target, {})[row_id] = code
        self._where[row_id] = target
        self.dirty.add(target)

    def prune(self, horizon: datetime) -> List[str]:
        """Forget buckets whose hour ended before `horizon`; returns their names (to delete)."""
        gone = [name for name in self._buckets if bucket_end(name) <= horizon]
        for name in gone:
            for row_id in self._buckets.pop(name):
                del self._where[row_id]
            self.dirty.discard(name)
        return gone

    def buckets(self) -> List[str]:
        return sorted(self._buckets)

    def dump(self, name: str) -> Optional[str]:
        """The datastore value of a bucket; None when it is empty (delete it)."""
        rows = self._buckets.get(name)
        if not rows:
            return None
        return json.dumps({"v": FORMAT, "rows": rows}, separators=(",", ":"), sort_keys=True)

    def load(self, name: str, text: Optional[str]) -> None:
        """Merge a stored bucket; ValueError if it is not one of ours (the caller logs it)."""
        bucket_end(name)  # ValueError for a name that is not an hour
        data = _decode(text, name)
        rows = data.get("rows")
        if not isinstance(rows, dict):
            raise ValueError("datastore value %s has no rows" % name)
        for row_id, code in rows.items():
            if code in WORD_OF or code == MALFORMED:
                self._buckets.setdefault(name, {})[row_id] = code
                self._where[row_id] = name


@dataclass(frozen=True)
class Event:
    """A trigger to dispatch: its name (without the pack), payload and trace tag."""

    trigger: str
    payload: dict
    trace_tag: str


def decide(verdict: VerdictRow, seen_code: Optional[str], dispositions: Iterable[str],
           changed_at: Optional[datetime] = None) -> Optional[Event]:
    """The trigger this row calls for, given what the seen-set holds for it (None: nothing).

    Unknown (or remembered only as malformed) -> `verdict`; known with another disposition ->
    `verdict_changed`; the same disposition -> nothing. Only dispositions the config lists are
    dispatched, and only for delivered mail. `changed_at`: when the row's scan time does not
    date the change (it did not move), the time the change was seen is the verdict time."""
    if not verdict.delivered:
        return None
    code = CODE_OF[verdict.disposition]
    if seen_code == code:
        return None
    if not wanted(verdict.disposition, verdict.source_disposition, dispositions):
        return None
    payload = verdict.payload()
    tag = "%s:%s:%s" % (SOURCE, verdict.source_id, verdict.disposition.value)
    if seen_code is None or seen_code == MALFORMED:
        return Event(VERDICT, payload, tag)
    payload["previous_disposition"] = WORD_OF[seen_code].value
    if changed_at is not None:
        payload["verdict_time"] = iso(changed_at)
    return Event(VERDICT_CHANGED, payload, tag)


class HandledSet:
    """Submission ids already answered (dispatched, or nothing to retract), with the report
    time so the set stays within the window. Stored as one value: reports are few."""

    def __init__(self) -> None:
        self._ids: Dict[str, int] = {}
        self.dirty = False

    def __contains__(self, submission_id: str) -> bool:
        return submission_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, submission_id: str, requested_at: datetime) -> None:
        self._ids[submission_id] = int(requested_at.timestamp())
        self.dirty = True

    def prune(self, horizon: datetime) -> None:
        cut = horizon.timestamp()
        old = [key for key, stamp in self._ids.items() if stamp < cut]
        for key in old:
            del self._ids[key]
        self.dirty = self.dirty or bool(old)

    def dump(self) -> str:
        return json.dumps({"v": FORMAT, "ids": self._ids}, separators=(",", ":"),
                          sort_keys=True)

    def load(self, text: Optional[str], key: str) -> None:
        data = _decode(text, key)
        ids = data.get("ids")
        if not isinstance(ids, dict):
            raise ValueError("datastore value %s has no ids" % key)
        self._ids.update({k: int(v) for k, v in ids.items() if isinstance(v, (int, float))})


def confirmed(sub: SubmissionRow, dispositions: Iterable[str]) -> bool:
    """A report is confirmed once its reviewed outcome is a disposition the config lists."""
    return (sub.outcome is not None and sub.source_outcome is not None
            and wanted(sub.outcome, sub.source_outcome, dispositions))


def phish_event(sub: SubmissionRow, message: VerdictRow, recipients: Iterable[str],
                observed_at: datetime) -> Event:
    """`phish_submission` over every delivered recipient of the reported message.

    Cloudflare's row has no review time, so `verdict_time` is when the sensor first saw the
    confirmation (time to retract then measures the pack, not the reviewers) and
    `reported_at` is when the user reported it. Inert, as every payload (verdicts.rows)."""
    if sub.outcome is None:
        raise ValueError("submission %s has no outcome yet" % sub.submission_id)
    payload = {
        "submission_id": sub.submission_id,
        "reporter": sub.reporter,
        "message_id": message.message_id,
        "recipients": list(recipients),
        "sender": message.sender,
        "subject": message.subject or sub.subject,
        "disposition": sub.outcome.value,
        "source_disposition": sub.source_outcome,
        "verdict_time": iso(observed_at),
        "reported_at": iso(sub.requested_at),
        "source": SOURCE,
        "source_id": message.source_id,
    }
    return Event(PHISH_SUBMISSION, inert_values(payload),
                 "%s-submission:%s" % (SOURCE, sub.submission_id))


def journal_value(entries: Dict[str, List[str]]) -> str:
    return json.dumps({"v": FORMAT, "rows": entries}, separators=(",", ":"), sort_keys=True)


def read_journal(text: Optional[str], key: str) -> Dict[str, List[str]]:
    """{row id: [code, hour]} of a journal; ValueError if it is not one of ours."""
    rows = _decode(text, key).get("rows")
    if not isinstance(rows, dict):
        raise ValueError("datastore value %s has no rows" % key)
    entries = {}
    for row_id, entry in rows.items():
        if (isinstance(entry, list) and len(entry) == 2
                and (entry[0] in WORD_OF or entry[0] == MALFORMED)):
            bucket_end(str(entry[1]))  # ValueError for a name that is not an hour
            entries[row_id] = [entry[0], str(entry[1])]
    return entries


def checkpoint_value(moment: datetime) -> str:
    return json.dumps({"v": FORMAT, "scanned_at": iso(moment)})


def read_checkpoint(text: Optional[str], key: str) -> datetime:
    data = _decode(text, key)
    value = data.get("scanned_at")
    try:
        return datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=timezone.utc)
    except ValueError:
        raise ValueError("datastore value %s holds no time" % key)
