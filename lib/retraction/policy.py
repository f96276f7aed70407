"""The pack's own guard and routing: which provider holds a mailbox, which mailboxes are never
touched, which destinations are allowed, what a disposition calls for, when to ask first.

Two kinds of refusal, on purpose:
- A request-wide refusal (`admit`) raises `InvalidRequest` naming `destination` before any
  provider call. Hard delete while `allow_hard_delete` is off is one: the analyst who typed
  `hard_delete` should hear "no" at once, in the error of the action, not discover a run of
  thousands of `out_of_scope` rows that each say the same thing.
- A per-copy refusal (`route`) becomes a `failed`/`out_of_scope` outcome: a protected mailbox
  or a domain no provider is configured for. The rest of the run goes ahead and the ledger
  shows exactly which copies were left alone and why.
"""
from __future__ import annotations

from typing import Iterable, Iterator, NamedTuple, Optional

from retraction.config import Settings
from retraction.model import Destination, Disposition, Mode, Provider, RetractionRequest, Trigger
from retraction.validation import InvalidRequest, address_key, dedupe_addresses

PROTECTED = "protected_mailbox"  # error_code of an out_of_scope outcome
DOMAIN_NOT_CONFIGURED = "domain_not_configured"
INVALID_MEMBER = "invalid_address"  # a group member whose address is not one
# error_codes of copies the pack itself refused (failed/out_of_scope with 0 attempts)
REFUSAL_CODES = frozenset([PROTECTED, DOMAIN_NOT_CONFIGURED, INVALID_MEMBER])

# How far a destination takes a copy from its reader, weakest first. A disposition with no
# action by policy leaves copies where they were: as weak as the inbox.
DESTINATION_STRENGTH = (Destination.INBOX, Destination.JUNK, Destination.TRASH,
                        Destination.SOFT_DELETE, Destination.HARD_DELETE)


def strength(destination: Optional[Destination]) -> int:
    """The rank of a destination in DESTINATION_STRENGTH; None (no action) ranks as inbox."""
    if destination is None:
        return 0
    return DESTINATION_STRENGTH.index(Destination(destination))


class Route(NamedTuple):
    """Where one recipient goes: a provider name, or a refusal (code + message)."""

    provider: Optional[str]
    refusal_code: Optional[str] = None
    refusal: Optional[str] = None

    @property
    def allowed(self) -> bool:
        return self.refusal is None


class Policy:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._domains = {}
        for provider, domains in ((Provider.MICROSOFT, settings.microsoft.domains),
                                  (Provider.GOOGLE, settings.google.domains)):
            for domain in domains:
                self._domains[domain.lower()] = provider.value
        self._protected = frozenset(address_key(a) for a in settings.protected_mailboxes)

    @property
    def expand_groups(self) -> bool:
        return self.settings.expand_groups

    # -- request-wide -----------------------------------------------------------------------

    def admit(self, request: RetractionRequest) -> None:
        """Refuse, before any provider call, what the pack config forbids for a whole run."""
        if request.destination == Destination.HARD_DELETE and not self.settings.allow_hard_delete:
            raise InvalidRequest("destination", request.destination.value,
                                 "hard delete is not enabled (allow_hard_delete is false in "
                                 "the pack config); use soft_delete or trash")

    @staticmethod
    def unique_recipients(recipients: Iterable[str]) -> Iterator[str]:
        """Duplicates collapse case-insensitively; the first spelling is kept."""
        return dedupe_addresses(recipients)

    # -- per copy ---------------------------------------------------------------------------

    def provider_for(self, recipient: str) -> Optional[str]:
        """The provider configured for the recipient's domain, case-insensitively."""
        return self._domains.get(recipient.rpartition("@")[2].lower())

    def is_protected(self, recipient: str) -> bool:
        return address_key(recipient) in self._protected

    def route(self, recipient: str, forced: Optional[Provider] = None) -> Route:
        """The provider for one copy (a forced provider overrides the domain map), or why the
        pack will not touch it. Protected mailboxes are refused whatever the provider."""
        provider = forced.value if forced is not None else self.provider_for(recipient)
        if self.is_protected(recipient):
            return Route(provider, PROTECTED,
                         "mailbox is on the protected list (protected_mailboxes)")
        if provider is None:
            domain = recipient.rpartition("@")[2]
            return Route(None, DOMAIN_NOT_CONFIGURED,
                         "domain %s is not configured for any provider "
                         "(microsoft.domains, google.domains)" % domain)
        return Route(provider)

    # -- automatic flow ---------------------------------------------------------------------

    def destination_for(self, disposition: Disposition) -> Optional[Destination]:
        """`auto_retract.dispositions`: the destination for a verdict, None for no action."""
        return self.settings.auto_retract.destination_for(disposition)

    def already_handled(self, previous: Disposition, destination: Destination) -> bool:
        """A changed verdict (post-delivery) whose new destination is not stronger than where
        the previous disposition already sent the copies: moving them would only bring them
        back towards the reader (MALICIOUS -> SUSPICIOUS must not pull copies out of the
        trash into junk), or move them to where they are."""
        return strength(destination) <= strength(self.destination_for(previous))

    def auto_enabled(self, trigger: Trigger) -> bool:
        return self.settings.auto_retract.enabled_for(trigger)

    def preview_for(self, mode: Mode, requested: bool) -> bool:
        """Preview as asked, and always for automatic runs while `auto_retract.mode` is
        `preview` (the operator is watching what policy would do before enforcing it)."""
        return requested or self.settings.auto_retract.forces_preview(mode)

    def needs_approval(self, copies: int, destination: Destination) -> bool:
        """Ask an analyst first: more copies than `approval.threshold`, or a hard delete while
        `approval.hard_delete` is on."""
        approval = self.settings.approval
        if destination == Destination.HARD_DELETE and approval.hard_delete:
            return True
        return copies > approval.threshold

    def skip_already_retracted(self, mode: Mode, requested: Optional[bool]) -> bool:
        """Skip copies the ledger already shows in the destination: as asked, else on for
        automatic runs (verdict sources repeat themselves), off for manual ones."""
        return requested if requested is not None else mode == Mode.AUTO
