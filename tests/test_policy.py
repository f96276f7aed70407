"""Policy: routing by domain, protected mailboxes, hard delete, dispositions, approval."""
import pytest

from retraction.config import load_settings
from retraction.model import Destination, Disposition, Mode, Provider, RetractionRequest, Trigger
from retraction.policy import DOMAIN_NOT_CONFIGURED, PROTECTED, Policy
from retraction.validation import InvalidRequest

CONFIG = {
    "microsoft": {"domains": ["corp.example", "Sub.Corp.Example"]},
    "google": {"domains": ["corp-mail.example"]},
    "protected_mailboxes": ["Journal@corp.example", "phish-reports@corp-mail.example"],
    "approval": {"threshold": 10, "hard_delete": True},
}


@pytest.fixture
def policy():
    return Policy(load_settings(CONFIG))


def request(**kw):
    base = dict(message_id="<a@b>", recipients=("x@corp.example",),
                destination=Destination.JUNK)
    base.update(kw)
    return RetractionRequest(**base)


def test_routes_by_domain_case_insensitively(policy):
    assert policy.route("alice@Corp.Example").provider == "microsoft"
    assert policy.route("bob@sub.corp.example").provider == "microsoft"
    assert policy.route("carol@CORP-MAIL.example").provider == "google"
    assert policy.route("alice@corp.example").allowed


def test_subdomains_are_not_implied(policy):
    route = policy.route("dave@eu.corp.example")
    assert route.provider is None and not route.allowed
    assert route.refusal_code == DOMAIN_NOT_CONFIGURED
    assert "eu.corp.example" in route.refusal


def test_unknown_domain(policy):
    route = policy.route("eve@elsewhere.example")
    assert route.refusal_code == DOMAIN_NOT_CONFIGURED and route.provider is None


def test_forced_provider_overrides_domains(policy):
    assert policy.route("alice@corp.example", Provider.GOOGLE).provider == "google"
    assert policy.route("eve@elsewhere.example", Provider.MICROSOFT).allowed


def test_protected_mailboxes_are_never_touched(policy):
    for address in ("journal@corp.example", "JOURNAL@CORP.EXAMPLE",
                    "phish-reports@corp-mail.example"):
        route = policy.route(address)
        assert not route.allowed and route.refusal_code == PROTECTED
        assert "protected" in route.refusal
        assert route.provider is not None  # the provider is known, the guard still refuses
    assert not policy.route("journal@corp.example", Provider.GOOGLE).allowed


def test_hard_delete_refused_unless_allowed(policy):
    policy.admit(request(destination=Destination.SOFT_DELETE))
    with pytest.raises(InvalidRequest) as caught:
        policy.admit(request(destination=Destination.HARD_DELETE))
    assert caught.value.field == "destination"
    assert "allow_hard_delete" in str(caught.value)
    allowed = Policy(load_settings(dict(CONFIG, allow_hard_delete=True)))
    allowed.admit(request(destination=Destination.HARD_DELETE))


def test_duplicates_collapse_keeping_first_spelling(policy):
    got = list(policy.unique_recipients(
        ["Alice@corp.example", "bob@corp.example", "alice@CORP.example", "BOB@corp.example"]))
    assert got == ["Alice@corp.example", "bob@corp.example"]


def test_unique_recipients_is_lazy(policy):
    def endless():
        n = 0
        while True:
            yield "u%d@corp.example" % (n % 3)
            n += 1
    stream = policy.unique_recipients(endless())
    assert [next(stream) for _ in range(3)] == ["u0@corp.example", "u1@corp.example",
                                                "u2@corp.example"]


def test_disposition_mapping(policy):
    assert policy.destination_for(Disposition.MALICIOUS) is Destination.TRASH
    assert policy.destination_for(Disposition.SUSPICIOUS) is Destination.JUNK
    assert policy.destination_for(Disposition.SPOOF) is Destination.JUNK
    assert policy.destination_for(Disposition.SPAM) is None
    assert policy.destination_for(Disposition.BULK) is None
    assert policy.destination_for(Disposition.NONE) is None
    custom = Policy(load_settings({"auto_retract": {"dispositions": {"SPAM": "junk"}}}))
    assert custom.destination_for(Disposition.SPAM) is Destination.JUNK
    assert custom.destination_for(Disposition.MALICIOUS) is None


def test_auto_flows_and_preview(policy):
    assert policy.auto_enabled(Trigger.POST_DELIVERY)
    assert not policy.preview_for(Mode.AUTO, False)
    assert policy.preview_for(Mode.MANUAL, True)
    watching = Policy(load_settings({"auto_retract": {"mode": "preview",
                                                      "phish_submission_response": False}}))
    assert watching.preview_for(Mode.AUTO, False)
    assert not watching.preview_for(Mode.MANUAL, False)
    assert not watching.auto_enabled(Trigger.PHISH_SUBMISSION)


def test_needs_approval(policy):
    assert not policy.needs_approval(10, Destination.JUNK)
    assert policy.needs_approval(11, Destination.JUNK)
    assert policy.needs_approval(1, Destination.HARD_DELETE)
    relaxed = Policy(load_settings({"approval": {"threshold": 10, "hard_delete": False}}))
    assert not relaxed.needs_approval(1, Destination.HARD_DELETE)


def test_skip_already_retracted_defaults(policy):
    assert policy.skip_already_retracted(Mode.AUTO, None) is True
    assert policy.skip_already_retracted(Mode.MANUAL, None) is False
    assert policy.skip_already_retracted(Mode.MANUAL, True) is True
    assert policy.skip_already_retracted(Mode.AUTO, False) is False


def test_expand_groups_from_config():
    assert Policy(load_settings({})).expand_groups is True
    assert Policy(load_settings({"expand_groups": False})).expand_groups is False
