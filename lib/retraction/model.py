"""The DESIGN words as types: what a retraction request is and what an outcome records.

Outcomes are the contract between the engine, the ledger, the metrics and the actions:
plain frozen records that serialise to JSON-safe dicts and back without loss.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field, fields
from operator import attrgetter
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Dict, Optional, Tuple


class Word(str, Enum):
    """An enum whose members compare equal to, and print as, their DESIGN word."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def values(cls) -> Tuple[str, ...]:
        return tuple(member.value for member in cls)


class Provider(Word):
    MICROSOFT = "microsoft"
    GOOGLE = "google"


class Destination(Word):
    INBOX = "inbox"
    JUNK = "junk"
    TRASH = "trash"
    SOFT_DELETE = "soft_delete"
    HARD_DELETE = "hard_delete"


class Mode(Word):
    AUTO = "auto"
    MANUAL = "manual"


class Trigger(Word):
    DISPOSITION = "disposition"
    POST_DELIVERY = "post_delivery"
    PHISH_SUBMISSION = "phish_submission"
    ANALYST = "analyst"


class Disposition(Word):
    MALICIOUS = "MALICIOUS"
    SUSPICIOUS = "SUSPICIOUS"
    SPOOF = "SPOOF"
    SPAM = "SPAM"
    BULK = "BULK"
    NONE = "NONE"


class Status(Word):
    RETRACTED = "retracted"
    ALREADY_IN_DESTINATION = "already_in_destination"
    PREVIEWED = "previewed"
    FAILED = "failed"


class Reason(Word):
    NOT_FOUND = "not_found"
    NOT_A_MAILBOX = "not_a_mailbox"
    NOT_AUTHORIZED = "not_authorized"
    OUT_OF_SCOPE = "out_of_scope"
    PROVIDER_ERROR = "provider_error"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def new_run_id() -> str:
    return uuid.uuid4().hex


def _iso(value: Optional[datetime]) -> Optional[str]:
    return value.isoformat() if value is not None else None


def _parse_iso(value: Any) -> Optional[datetime]:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


@dataclass(frozen=True)
class RetractionRequest:
    """One run: one message, many recipients, one destination. Built only from validated input
    (see `retraction.validation`), so every field here is already safe to send to a provider."""

    message_id: str
    recipients: Tuple[str, ...]
    destination: Destination
    mode: Mode = Mode.MANUAL
    trigger: Trigger = Trigger.ANALYST
    disposition: Optional[Disposition] = None
    verdict_time: Optional[datetime] = None
    comment: Optional[str] = None
    preview: bool = False
    provider: Optional[Provider] = None  # None: chosen per recipient domain by config
    requested_by: Optional[str] = None
    run_id: str = field(default_factory=new_run_id)
    requested_at: datetime = field(default_factory=utc_now)


@dataclass(frozen=True)
class Outcome:
    """The definitive result for one copy in one run."""

    run_id: str
    message_id: str
    recipient: str
    provider: Optional[str]  # None only when no provider could be chosen (out_of_scope)
    destination: str
    mode: str
    trigger: str
    status: str
    reason: Optional[str] = None  # set iff status == failed
    disposition: Optional[str] = None
    error_code: Optional[str] = None  # the provider's own code, e.g. ErrorInvalidUser
    error_message: Optional[str] = None
    was_read: Optional[bool] = None  # read state before the move (retracted/previewed copies)
    source_folder: Optional[str] = None  # where the copy was before: inbox, junk, trash, ...
    via_group: Optional[str] = None  # the distribution list this member's copy was found through
    verdict_time: Optional[datetime] = None
    requested_at: Optional[datetime] = None
    completed_at: datetime = field(default_factory=utc_now)
    attempts: int = 1
    requested_by: Optional[str] = None
    comment: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        # A shallow copy: every field is a str, bool, int, enum or datetime, so this is what
        # `dataclasses.asdict` gave (it deep-copies each value) at a fraction of its cost.
        data = dict(zip(_OUTCOME_FIELDS, _outcome_values(self)))
        for key in ("verdict_time", "requested_at", "completed_at"):
            data[key] = _iso(data[key])
        return data

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Outcome":
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        for key in ("verdict_time", "requested_at", "completed_at"):
            if key in values:
                values[key] = _parse_iso(values[key])
        return cls(**values)

    @property
    def succeeded(self) -> bool:
        return self.status == Status.RETRACTED


_OUTCOME_FIELDS = tuple(f.name for f in fields(Outcome))
_outcome_values = attrgetter(*_OUTCOME_FIELDS)
