"""`RunCounts.nothing_attempted`: a run (or a chunk) fails as a whole only when providers were
out of reach for every copy that needed one. Copies the ledger answered and copies the pack's
own policy refused have definitive outcomes without an attempt."""
import pytest

from retraction.engine import SKIPPED_CODE, RunCounts
from retraction.model import Outcome

BASE = dict(run_id="r", message_id="<m@evil.example>", destination="junk", mode="manual",
            trigger="analyst")


def asked(recipient="a@corp.example"):
    return Outcome(recipient=recipient, provider="microsoft", status="retracted", attempts=1,
                   **BASE)


def refused(code, recipient="x@elsewhere.example"):
    return Outcome(recipient=recipient, provider=None, status="failed", reason="out_of_scope",
                   error_code=code, attempts=0, **BASE)


def skipped(recipient="s@corp.example"):
    return Outcome(recipient=recipient, provider="microsoft", status="already_in_destination",
                   error_code=SKIPPED_CODE, attempts=0, **BASE)


def unavailable(reason="not_authorized", code="invalid_client", recipient="u@corp.example"):
    return Outcome(recipient=recipient, provider="microsoft", status="failed", reason=reason,
                   error_code=code, attempts=0, **BASE)


@pytest.mark.parametrize("outcomes, nothing_attempted, unavailable_count", [
    ([refused("domain_not_configured"), refused("protected_mailbox")], False, 0),
    ([refused("invalid_address")], False, 0),
    ([skipped(), skipped()], False, 0),
    ([skipped(), refused("protected_mailbox")], False, 0),
    ([unavailable()], True, 1),
    ([unavailable(), refused("domain_not_configured"), skipped()], True, 1),
    # a provider that is not configured refuses with out_of_scope too, but it is the provider
    ([unavailable("out_of_scope", "ProviderNotConfigured")], True, 1),
    ([unavailable("provider_error", "ImportError")], True, 1),
    ([unavailable(), asked()], False, 1),
    ([asked(), refused("protected_mailbox")], False, 0),
])
def test_nothing_attempted(outcomes, nothing_attempted, unavailable_count):
    counts = RunCounts()
    for outcome in outcomes:
        counts.add(outcome)
    assert counts.nothing_attempted is nothing_attempted
    assert counts.unavailable == unavailable_count
