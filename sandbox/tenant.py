"""The sandbox tenant: domains, mailboxes, groups, copies, app credentials, verdicts and the audit.

One model serves every protocol front (Entra ID, Graph, Google OAuth, Gmail, Cloudflare), so a
copy moved through Graph is seen moved by the control API, the audit and the benchmarks alike.
Copies live in canonical folders; each front maps them to its own names (Graph well-known
folders, Gmail system labels). All mutation goes through `Tenant` methods, which hold one lock
and append to the audit, so the audit is the complete truth of what changed.
"""
from __future__ import annotations

import itertools
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Dict, Iterator, List, Optional, Set

# Canonical folders. `purged` is where hard-deleted copies go: out of every listing, kept for
# the audit (Graph permanentDelete lands in Purges; Gmail delete is gone for the user).
FOLDERS = ("inbox", "junk", "trash", "soft_delete", "archive", "purged")
VISIBLE_FOLDERS = ("inbox", "junk", "trash", "archive")

MAILBOX_KINDS = (
    "user",  # a licensed mailbox
    "shared",  # a shared mailbox: works like a user mailbox
    "unlicensed",  # Graph MailboxNotEnabledForRESTAPI; Gmail failedPrecondition
    "policy_blocked",  # Graph application access policy (403 ErrorAccessDenied RAOP)
    "not_discoverable",  # Graph ResourceNotFound
)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def new_id(prefix: str = "") -> str:
    return prefix + uuid.uuid4().hex


@dataclass
class Copy:
    """One message in one mailbox."""

    id: str
    message_id: str  # the Internet Message-ID, with angle brackets, exactly as delivered
    folder: str
    is_read: bool
    subject: str = ""
    sender: str = ""
    received_at: datetime = field(default_factory=utc_now)
    thread_id: str = ""
    # Gmail's INBOX label is independent of SPAM/TRASH in the real API; the canonical folder is
    # what both fronts agree on, plus this flag for Gmail's "in trash but still labelled INBOX".
    extra_labels: Set[str] = field(default_factory=set)
    # Graph's immutable id (Prefer: IdType="ImmutableId"): set once, survives moves.
    immutable_id: str = ""


@dataclass
class Mailbox:
    address: str
    provider: str  # "microsoft" | "google"
    kind: str = "user"
    display_name: str = ""
    copies: Dict[str, Copy] = field(default_factory=dict)

    def find(self, message_id: str, include_purged: bool = False) -> List[Copy]:
        return [
            c for c in self.copies.values()
            if c.message_id == message_id and (include_purged or c.folder != "purged")
        ]


@dataclass
class Group:
    """A distribution list / Google group: an address with members and no mailbox."""

    address: str
    provider: str
    members: List[str] = field(default_factory=list)


@dataclass
class MicrosoftApp:
    """An Entra ID app registration with application permissions on this tenant."""

    client_id: str
    client_secret: Optional[str] = None
    certificate_pem: Optional[str] = None  # public certificate for client assertions
    private_key_pem: str = field(default="", repr=False)  # kept only to hand out credentials
    consent_granted: bool = True
    permissions: Set[str] = field(default_factory=lambda: {"Mail.ReadWrite"})


@dataclass
class GoogleServiceAccount:
    """A service account with domain-wide delegation for `scopes`."""

    client_email: str
    private_key_id: str
    public_key_pem: str
    private_key_pem: str = field(default="", repr=False)  # kept only to hand out a JSON key
    scopes: Set[str] = field(default_factory=set)


@dataclass
class Verdict:
    """A Cloudflare Email Security `investigate` row. The disposition history lets the sandbox
    simulate post-delivery rescans: a row is visible from `scanned_at` on, with the newest
    disposition whose time has come."""

    id: str
    message_id: str
    sender: str
    recipients: List[str]
    subject: str
    final_disposition: str
    scanned_at: datetime
    sent_at: datetime
    postfix_id: str = ""
    delivery_mode: str = "DIRECT"
    delivery_status: List[str] = field(default_factory=lambda: ["delivered"])
    is_phish_submission: bool = False


@dataclass
class Submission:
    """A user report (Cloudflare `submissions` row)."""

    submission_id: str
    requested_ts: datetime
    requested_by: str
    message_id: str
    subject: str
    original_disposition: str
    requested_disposition: str
    outcome_disposition: Optional[str] = None
    outcome: Optional[str] = None
    status: str = "pending"  # pending | reviewed
    type: str = "Team"


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: datetime
    actor: str  # client_id / service-account email + subject
    provider: str
    mailbox: str
    message_id: str
    copy_id: str
    action: str  # move | delete | purge | modify | trash | untrash | read
    before: str
    after: str


class Tenant:
    """The whole sandbox state. Thread-safe: the server's loop and test threads share it."""

    def __init__(self, tenant_id: str = "sandbox-tenant"):
        self.tenant_id = tenant_id
        self.lock = threading.RLock()
        self.domains: Dict[str, str] = {}  # domain -> provider
        self.mailboxes: Dict[str, Mailbox] = {}  # lower address -> mailbox
        self.groups: Dict[str, Group] = {}  # lower address -> group
        self.microsoft_apps: Dict[str, MicrosoftApp] = {}
        self.google_accounts: Dict[str, GoogleServiceAccount] = {}
        self.cloudflare_account_id = "sandbox-account"
        self.cloudflare_tokens: Set[str] = set()
        self.verdicts: Dict[str, Verdict] = {}
        self.submissions: Dict[str, Submission] = {}
        self.audit: List[AuditEntry] = []
        self.campaigns: Dict[str, object] = {}  # message_id -> scenario.CampaignTruth
        self._seq = itertools.count(1)

    # -- directory ---------------------------------------------------------------------------
    def add_domain(self, domain: str, provider: str) -> None:
        self.domains[domain.lower()] = provider

    def add_mailbox(self, address: str, provider: Optional[str] = None, kind: str = "user",
                    display_name: str = "") -> Mailbox:
        if kind not in MAILBOX_KINDS:
            raise ValueError("unknown mailbox kind %r" % kind)
        provider = provider or self.provider_of(address)
        box = Mailbox(address=address, provider=provider, kind=kind, display_name=display_name)
        self.mailboxes[address.lower()] = box
        return box

    def add_group(self, address: str, members: List[str], provider: Optional[str] = None) -> Group:
        group = Group(address=address, provider=provider or self.provider_of(address),
                      members=list(members))
        self.groups[address.lower()] = group
        return group

    def provider_of(self, address: str) -> str:
        domain = address.rsplit("@", 1)[-1].lower()
        if domain not in self.domains:
            raise ValueError("domain of %r is not in the tenant" % address)
        return self.domains[domain]

    def mailbox(self, address: str) -> Optional[Mailbox]:
        return self.mailboxes.get(address.lower())

    def group(self, address: str) -> Optional[Group]:
        return self.groups.get(address.lower())

    # -- mail --------------------------------------------------------------------------------
    def deliver(self, mailbox: Mailbox, message_id: str, folder: str = "inbox",
                is_read: bool = False, subject: str = "", sender: str = "",
                received_at: Optional[datetime] = None) -> Copy:
        if folder not in FOLDERS:
            raise ValueError("unknown folder %r" % folder)
        copy = Copy(id=new_id(), message_id=message_id, folder=folder, is_read=is_read,
                    subject=subject, sender=sender, received_at=received_at or utc_now(),
                    thread_id=new_id("t"))
        if mailbox.provider == "google":
            copy.id = uuid.uuid4().hex[:16]  # Gmail ids are 16 hex digits
            copy.thread_id = copy.id
        with self.lock:
            mailbox.copies[copy.id] = copy
        return copy

    def change(self, actor: str, mailbox: Mailbox, copy: Copy, action: str,
               folder: Optional[str] = None, is_read: Optional[bool] = None,
               new_copy_id: Optional[str] = None) -> Copy:
        """Apply one change to a copy and audit it. `new_copy_id` re-keys the copy (Graph move
        without immutable ids)."""
        with self.lock:
            before = self.describe(copy)
            if folder is not None:
                if folder not in FOLDERS:
                    raise ValueError("unknown folder %r" % folder)
                copy.folder = folder
            if is_read is not None:
                copy.is_read = is_read
            if new_copy_id and new_copy_id != copy.id:
                del mailbox.copies[copy.id]
                copy.id = new_copy_id
                mailbox.copies[copy.id] = copy
            self.audit.append(AuditEntry(
                seq=next(self._seq), at=utc_now(), actor=actor, provider=mailbox.provider,
                mailbox=mailbox.address, message_id=copy.message_id, copy_id=copy.id,
                action=action, before=before, after=self.describe(copy)))
            return copy

    @staticmethod
    def describe(copy: Copy) -> str:
        return "%s,%s" % (copy.folder, "read" if copy.is_read else "unread")

    def copies_of(self, message_id: str) -> Iterator[tuple]:
        """(mailbox, copy) for every copy of a message, purged ones included."""
        with self.lock:
            boxes = list(self.mailboxes.values())
        for box in boxes:
            for copy in box.find(message_id, include_purged=True):
                yield box, copy

    def audit_since(self, seq: int = 0) -> List[AuditEntry]:
        with self.lock:
            return [entry for entry in self.audit if entry.seq > seq]

    # -- verdicts ----------------------------------------------------------------------------
    def add_verdict(self, verdict: Verdict) -> Verdict:
        with self.lock:
            self.verdicts[verdict.id] = verdict
        return verdict

    def rescan(self, verdict_id: str, disposition: str,
               at: Optional[datetime] = None) -> Verdict:
        """A post-delivery rescan: the disposition changes and `scanned_at` moves to now."""
        with self.lock:
            verdict = self.verdicts[verdict_id]
            verdict.final_disposition = disposition
            verdict.scanned_at = at or utc_now()
            return verdict

    def add_submission(self, submission: Submission) -> Submission:
        with self.lock:
            self.submissions[submission.submission_id] = submission
        return submission

    def confirm_submission(self, submission_id: str, disposition: str) -> Submission:
        with self.lock:
            sub = self.submissions[submission_id]
            sub.outcome_disposition = disposition
            sub.outcome = "Confirmed %s" % disposition.lower()
            sub.status = "reviewed"
            return sub
