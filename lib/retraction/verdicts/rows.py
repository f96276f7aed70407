"""Cloudflare Email Security rows -> checked records in the DESIGN words.

A row is refused (`MalformedRow`, naming the field) when it lacks what a trigger needs: an
`id`, a valid Message-ID, at least one valid recipient, a known disposition, a scan time.
One bad recipient among many is dropped (and reported), not the row: the `retract` action
refuses a whole request for one bad address, so the sensor must hand it only good ones.

Dispositions: Cloudflare's words -> the DESIGN words.
| Cloudflare | DESIGN | why |
| --- | --- | --- |
| MALICIOUS, MALICIOUS-BEC | MALICIOUS | BEC is malicious mail without a payload; same response |
| SUSPICIOUS, SPOOF, SPAM, BULK | the same word | |
| ENCRYPTED, EXTERNAL, UNKNOWN, NONE (and null) | NONE | none of them says the mail is bad |
The Cloudflare word travels along as `source_disposition`, and config lists
(`verdicts.dispositions`, `verdicts.submission_dispositions`) may name either spelling: listing
`MALICIOUS` covers MALICIOUS-BEC too, listing `MALICIOUS-BEC` alone covers only BEC.
A word Cloudflare adds later is not guessed at: the row is refused, and the log names it.

Delivered: only mail that reached mailboxes has copies to retract. Rows of a submission or
DMARC report (`delivery_mode` *_SUBMISSION, DMARC_*) never do. BCC and JOURNAL deployments
see a copy of mail the mail system delivers anyway, so their rows count as delivered whatever
Cloudflare's own `delivery_status` says; for the others (DIRECT, API, RETRO_SCAN, unknown) a
row is delivered when `delivery_status` is empty or says `delivered` or `moved`, and still
in transit when it says only `queued` / `deferred`.

Free text (sender, subject, reporter) is kept as Cloudflare gives it, except that half of a
UTF-16 surrogate pair, which JSON can carry but UTF-8 cannot, becomes U+FFFD (`scalar_text`):
StackStorm could not store the trigger instance otherwise.

Payloads are inert (retraction.inert): the sender, subject and ids go into the trigger with
their template delimiters broken (`{{` -> `{ {`), because the rules hand them to
`auto_retract`, whose workflow engine evaluates any expression in its inputs. A Message-ID
holding `<%`/`%>` is refused like any other invalid one (validation.message_id).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, List, Mapping, Optional, Tuple

from retraction.inert import inert_values
from retraction.model import Disposition
from retraction.validation import InvalidRequest, address, dedupe_addresses, message_id, show
from retraction.validation import timestamp

SOURCE = "cloudflare"

DISPOSITIONS = {
    "MALICIOUS": Disposition.MALICIOUS,
    "MALICIOUS-BEC": Disposition.MALICIOUS,
    "SUSPICIOUS": Disposition.SUSPICIOUS,
    "SPOOF": Disposition.SPOOF,
    "SPAM": Disposition.SPAM,
    "BULK": Disposition.BULK,
    "ENCRYPTED": Disposition.NONE,
    "EXTERNAL": Disposition.NONE,
    "UNKNOWN": Disposition.NONE,
    "NONE": Disposition.NONE,
}
# The words `detections_only=true` returns: the only ones worth re-polling for (see poll.py).
DETECTIONS = ("MALICIOUS", "MALICIOUS-BEC", "SUSPICIOUS", "SPOOF", "SPAM", "BULK")

NOT_DELIVERIES = frozenset(["REVIEW_SUBMISSION", "THREAT_INTEL_SUBMISSION",
                            "SIMULATION_SUBMISSION", "DMARC_UNVERIFIED", "DMARC_FAILURE_REPORT",
                            "DMARC_AGGREGATE_REPORT"])
COPY_MODES = frozenset(["BCC", "JOURNAL"])
DELIVERED_STATUSES = frozenset(["delivered", "moved"])
TRANSIT_STATUSES = frozenset(["queued", "deferred"])
MAX_TEXT = 998  # a header line; longer subjects are cut, not refused


class MalformedRow(ValueError):
    """A row a trigger cannot be built from. `row_id` is None when the row has no usable id."""

    def __init__(self, row_id: Optional[str], field: str, problem: str):
        self.row_id = row_id
        self.field = field
        self.problem = problem
        super().__init__("Cloudflare row %s: %s %s" % (row_id or "(no id)", field, problem))


def disposition_of(word: Any, field: str, row_id: Optional[str]) -> Tuple[Disposition, str]:
    """(DESIGN word, Cloudflare word); null counts as NONE (not scanned to a verdict)."""
    if word is None:
        return Disposition.NONE, "NONE"
    if not isinstance(word, str) or word.strip().upper() not in DISPOSITIONS:
        raise MalformedRow(row_id, field, "is not a known disposition (got %s)" % show(word))
    text = word.strip().upper()
    return DISPOSITIONS[text], text


def wanted(disposition: Disposition, source_disposition: str, words: Iterable[str]) -> bool:
    """Whether a config list names this verdict, in either spelling."""
    listed = set(words)
    return disposition.value in listed or source_disposition in listed


def iso(moment: datetime) -> str:
    """UTC, millisecond precision, `Z`: the form Cloudflare itself writes."""
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (moment.microsecond // 1000)


def _id(raw: Mapping[str, Any], name: str, row_id: Optional[str]) -> str:
    value = raw.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if (not isinstance(value, str) or not value.strip() or len(value) > 200
            or scalar_text(value) != value):  # an id is never rewritten: no UTF-8 form, no id
        raise MalformedRow(row_id, name, "must be a non-empty id (got %s)" % show(value))
    return value.strip()


def scalar_text(text: str) -> str:
    """`text` as Unicode scalar values. JSON lets a string carry half of a UTF-16 surrogate
    pair (`"\\ud83d"`: a subject cut inside an emoji), and Python keeps it, but such a string
    has no UTF-8 form: StackStorm's rules engine cannot store the trigger instance (its JSON
    field serializes with orjson, which refuses it; MongoDB's BSON, the ledger and log files
    would too), so the trigger would never reach a rule. A lone surrogate becomes U+FFFD (the
    replacement character); a pair written as two escapes is joined."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _text(raw: Mapping[str, Any], name: str) -> Optional[str]:
    value = raw.get(name)
    if not isinstance(value, str) or not value.strip():
        return None
    return scalar_text(value).strip()[:MAX_TEXT]


def _time(raw: Mapping[str, Any], names: Tuple[str, ...], row_id: Optional[str]) -> datetime:
    value = next((raw.get(n) for n in names if raw.get(n) is not None), None)
    try:
        return timestamp(value, names[0])
    except InvalidRequest as exc:
        raise MalformedRow(row_id, names[0], exc.problem)


def clean_recipients(values: Any) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """(valid addresses deduplicated, refused values shown for the log)."""
    good: List[str] = []
    bad: List[str] = []
    for value in values if isinstance(values, (list, tuple)) else []:
        try:
            good.append(address(value))
        except InvalidRequest:
            bad.append(show(value))
    return tuple(dedupe_addresses(good)), tuple(bad)


def is_delivered(delivery_mode: Optional[str], statuses: Any) -> bool:
    mode = (delivery_mode or "").upper()
    if mode in NOT_DELIVERIES:
        return False
    if mode in COPY_MODES:
        return True
    if not isinstance(statuses, (list, tuple)) or not statuses:
        return True
    return any(isinstance(s, str) and s.lower() in DELIVERED_STATUSES for s in statuses)


def is_in_transit(delivered: bool, statuses: Any) -> bool:
    """Not delivered yet, but no final decision either (it may still be delivered)."""
    if delivered or not isinstance(statuses, (list, tuple)) or not statuses:
        return False
    return all(isinstance(s, str) and s.lower() in TRANSIT_STATUSES for s in statuses)


@dataclass(frozen=True)
class VerdictRow:
    """One `investigate` row: a message, who received it, and what Cloudflare thinks of it."""

    source_id: str
    message_id: str
    recipients: Tuple[str, ...]
    disposition: Disposition
    source_disposition: str
    verdict_time: datetime  # scanned_at: the time of this (possibly re-scanned) verdict
    delivered: bool
    sender: Optional[str] = None
    subject: Optional[str] = None
    delivery_mode: Optional[str] = None
    postfix_id: Optional[str] = None
    refused_recipients: Tuple[str, ...] = ()
    in_transit: bool = False

    def payload(self) -> dict:
        """The `email_retraction.verdict` payload, inert (see the module docstring)."""
        return inert_values({
            "message_id": self.message_id,
            "recipients": list(self.recipients),
            "sender": self.sender,
            "subject": self.subject,
            "disposition": self.disposition.value,
            "source_disposition": self.source_disposition,
            "verdict_time": iso(self.verdict_time),
            "source": SOURCE,
            "source_id": self.source_id,
            "delivery_mode": self.delivery_mode,
        })


def row_id_of(raw: Any) -> Optional[str]:
    """The row's id if it has a usable one (to remember a malformed row), else None."""
    if not isinstance(raw, Mapping):
        return None
    try:
        return _id(raw, "id", None)
    except MalformedRow:
        return None


def verdict_row(raw: Any) -> VerdictRow:
    """A checked row, or MalformedRow naming the first field that is wrong."""
    if not isinstance(raw, Mapping):
        raise MalformedRow(None, "row", "is not a JSON object")
    row_id = _id(raw, "id", None)
    try:
        mid = message_id(raw.get("message_id"))
    except InvalidRequest as exc:
        raise MalformedRow(row_id, "message_id", exc.problem)
    disposition, word = disposition_of(raw.get("final_disposition"), "final_disposition",
                                       row_id)
    scanned = _time(raw, ("scanned_at", "ts"), row_id)
    # client_recipients are the customer's own mailboxes; `to` is the header, which may name
    # outsiders and misses Bcc recipients, so it is the last resort.
    field, listed = next(((name, raw.get(name)) for name in ("client_recipients", "envelope_to",
                                                             "to") if raw.get(name)), ("to", []))
    recipients, refused = clean_recipients(listed)
    if not recipients:
        problem = "has no valid address"
        if refused:
            problem += " (refused %s)" % ", ".join(refused[:3])
        raise MalformedRow(row_id, field, problem)
    mode = _text(raw, "delivery_mode")
    sender = _text(raw, "from") or _text(raw, "envelope_from")
    postfix = raw.get("postfix_id")
    delivered = is_delivered(mode, raw.get("delivery_status"))
    return VerdictRow(
        source_id=row_id, message_id=mid, recipients=recipients, disposition=disposition,
        source_disposition=word, verdict_time=scanned, delivered=delivered, sender=sender,
        subject=_text(raw, "subject"), delivery_mode=mode,
        postfix_id=postfix if isinstance(postfix, str) and postfix else None,
        refused_recipients=refused,
        in_transit=is_in_transit(delivered, raw.get("delivery_status")))


@dataclass(frozen=True)
class SubmissionRow:
    """One `submissions` row: a user's (or the team's) report and, once reviewed, its outcome."""

    submission_id: str
    requested_at: datetime
    reporter: Optional[str]
    postfix_id: Optional[str]  # names the reported message (resolved with investigate/{id})
    outcome: Optional[Disposition]  # None until reviewed
    source_outcome: Optional[str]
    subject: Optional[str] = None


def submission_row(raw: Any) -> SubmissionRow:
    if not isinstance(raw, Mapping):
        raise MalformedRow(None, "row", "is not a JSON object")
    sub_id = _id(raw, "submission_id", None)
    requested = _time(raw, ("requested_at", "requested_ts"), sub_id)
    outcome, word = None, None
    if raw.get("outcome_disposition") is not None:
        outcome, word = disposition_of(raw.get("outcome_disposition"), "outcome_disposition",
                                       sub_id)
    postfix = raw.get("original_postfix_id")
    return SubmissionRow(
        submission_id=sub_id, requested_at=requested, reporter=_text(raw, "requested_by"),
        postfix_id=postfix.strip() if isinstance(postfix, str) and postfix.strip() else None,
        outcome=outcome, source_outcome=word, subject=_text(raw, "subject"))
