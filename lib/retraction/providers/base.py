"""What the engine asks of a provider (Microsoft Graph, Gmail).

A provider owns everything specific to its API: authentication, lookup, batching, its
concurrency limits, retries and the classification of its answers into DESIGN statuses and
reasons. The engine owns policy, deduplication, group expansion and the ledger.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Iterable, Iterator, List, Optional

from retraction.model import Outcome, RetractionRequest


@dataclass(frozen=True)
class Target:
    """One copy to act on: a recipient mailbox, and the group it was found through, if any."""

    recipient: str
    via_group: Optional[str] = None


class ProviderUnavailable(Exception):
    """The provider refused the pack itself (credentials rejected, consent revoked for the
    whole app): no copy could be attempted. Carries a reason word and the provider's code;
    never a secret."""

    def __init__(self, reason: str, code: Optional[str], message: str):
        super().__init__(message)
        self.reason = reason
        self.code = code
        self.message = message


class MailProvider(abc.ABC):
    name = ""  # "microsoft" | "google"

    @abc.abstractmethod
    def retract(self, request: RetractionRequest, targets: Iterable[Target]) -> Iterator[Outcome]:
        """Yield exactly one definitive Outcome per target, in completion order.

        `targets` is consumed lazily so memory stays bounded for very large runs. Per-copy
        problems become `failed` outcomes, never exceptions. `request.preview` finds copies
        and yields `previewed` without moving anything."""

    @abc.abstractmethod
    def expand_group(self, address: str) -> Optional[List[str]]:
        """Members' mailbox addresses when `address` is a distribution list / group, else None."""

    def close(self) -> None:
        """Release connections and thread pools."""
