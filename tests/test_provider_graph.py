"""GraphProvider against the sandbox tenant: real msal + requests over TLS on loopback.

Every situation is set up in the sandbox (mailbox kinds, folders, faults, consent) and every
test checks the provider's outcomes AND the tenant: where the copies are and what the audit
says was done (nothing outside the targets touched, nothing moved twice).
"""
from __future__ import annotations

import dataclasses
import shutil
import socket
import ssl
from urllib.parse import unquote

import pytest
import requests
import trustme

from retraction.config import load_settings
from retraction.model import Destination, RetractionRequest
from retraction.providers.base import ProviderUnavailable, Target
from retraction.providers.graph import GraphProvider
from retraction.providers.graph_auth import make_session, scrub
from retraction.providers.graph_wire import (
    classify, error_of, filter_param, lookup_url, odata_literal, retry_after, user_path)

pytest_plugins = ["sandbox.pytest_plugin"]

MID = "<abc@evil.example>"
QUOTED_MID = "<o'brien+promo@evil.example>"
APP = "11111111-1111-1111-1111-111111111111"


# -- helpers ------------------------------------------------------------------------------------
def provider_for(sandbox, config=None, **limits):
    settings = load_settings(config or sandbox.pack_config())
    return GraphProvider(settings.microsoft, dataclasses.replace(settings.limits, **limits))


def retract(provider, recipients, destination="junk", message_id=MID, preview=False,
            via_group=None):
    request = RetractionRequest(message_id=message_id, recipients=tuple(recipients),
                                destination=Destination(destination), preview=preview)
    outcomes = list(provider.retract(request, (Target(r, via_group) for r in recipients)))
    assert sorted(o.recipient for o in outcomes) == sorted(recipients)  # exactly one each
    return {o.recipient: o for o in outcomes}


def folders(sandbox, address, message_id=MID):
    view = sandbox.mailbox_view(address)
    return sorted(c["folder"] for c in view["copies"] if c["message_id"] == message_id)


def last_seq(sandbox):
    entries = sandbox.audit()
    return entries[-1]["seq"] if entries else 0


@pytest.fixture
def graph(sandbox):
    provider = provider_for(sandbox)
    yield provider
    provider.close()


# -- wire details (pure) --------------------------------------------------------------------------
def test_odata_literal_doubles_quotes():
    assert odata_literal("<o'brien@x>") == "'<o''brien@x>'"


def test_filter_is_percent_encoded_whole():
    encoded = filter_param("internetMessageId", QUOTED_MID)
    assert "+" not in encoded and " " not in encoded and "'" not in encoded
    assert "%2B" in encoded
    assert unquote(encoded) == "$filter=internetMessageId eq '<o''brien+promo@evil.example>'"


def test_lookup_url_selects_and_limits():
    url = lookup_url("alice@corp.example", MID, "recoverableitemsdeletions")
    assert url.startswith("/users/alice@corp.example/mailFolders/recoverableitemsdeletions/")
    assert "$select=id,internetMessageId,isRead,parentFolderId" in url and "$top=10" in url


def test_user_path_cannot_escape_the_segment():
    assert user_path("a/b?c#d%@x") == "/users/a%2Fb%3Fc%23d%25@x"


def test_retry_after_forms():
    assert retry_after({"Retry-After": "0.25"}, 9) == 0.25
    assert retry_after({"retry-after": "3"}, 9) == 3.0
    assert retry_after({}, 9) == 9
    assert retry_after({"Retry-After": "Thu, 01 Jan 1970 00:00:00 GMT"}, 9) == 0.0
    assert retry_after({"Retry-After": "soon"}, 9) == 9


@pytest.mark.parametrize("status,code,what,kind", [
    (404, "ErrorInvalidUser", "lookup", "not_a_mailbox"),
    (404, "MailboxNotEnabledForRESTAPI", "lookup", "not_a_mailbox"),
    (404, "ResourceNotFound", "folder", "not_a_mailbox"),
    (404, "ErrorItemNotFound", "act", "gone"),
    (404, "ErrorItemNotFound", "folder", "no_folder"),
    (403, "ErrorAccessDenied", "lookup", "not_authorized"),
    (401, "InvalidAuthenticationToken", "lookup", "token"),
    (429, "ApplicationThrottled", "act", "throttled"),
    (503, "ServiceUnavailable", "act", "transient"),
    (400, "ErrorInvalidIdMalformed", "act", "fatal"),
])
def test_classify(status, code, what, kind):
    assert classify(status, code, what) == kind


def test_error_of_envelope_and_bare_status():
    body = {"error": {"code": "ErrorAccessDenied", "message": "Access is denied."}}
    assert error_of(403, body) == ("ErrorAccessDenied", "Access is denied.")
    assert error_of(502, None)[0] == "HTTP 502"


def test_scrub_removes_secrets():
    assert scrub("bad secret hunter22 given", "hunter22") == "bad secret *** given"


def test_session_with_ca_ignores_environment_bundle(monkeypatch, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/bundle.pem")
    session = make_session(str(ca), 8)
    settings = session.merge_environment_settings("https://127.0.0.1/", {}, None, None, None)
    assert settings["verify"] == str(ca)
    assert session.get_adapter("https://x/")._pool_maxsize == 8


# -- statuses and reasons from real sandbox situations -----------------------------------------
def test_junk_run_classifies_every_mailbox_kind(sandbox, graph):
    sandbox.add_mailbox("frank@corp.example")  # licensed, never got the message
    before = last_seq(sandbox)
    out = retract(graph, ["alice@corp.example", "bob@corp.example", "shared-ops@corp.example",
                          "exec@corp.example", "left@corp.example", "ghost@corp.example",
                          "all-staff@corp.example", "frank@corp.example"])
    alice, bob = out["alice@corp.example"], out["bob@corp.example"]
    assert (alice.status, alice.was_read, alice.source_folder) == ("retracted", False, "inbox")
    assert (bob.status, bob.was_read, bob.source_folder) == ("retracted", True, "trash")
    assert out["shared-ops@corp.example"].status == "retracted"
    expected_failures = {
        "exec@corp.example": ("not_authorized", "ErrorAccessDenied"),
        "left@corp.example": ("not_a_mailbox", "MailboxNotEnabledForRESTAPI"),
        "ghost@corp.example": ("not_a_mailbox", "ResourceNotFound"),
        "all-staff@corp.example": ("not_a_mailbox", "ErrorInvalidUser"),
        "frank@corp.example": ("not_found", None),
    }
    for address, (reason, code) in expected_failures.items():
        outcome = out[address]
        assert (outcome.status, outcome.reason, outcome.error_code) == ("failed", reason, code)
        assert outcome.error_message
    assert "RAOP" in out["exec@corp.example"].error_message
    for outcome in out.values():
        assert outcome.provider == "microsoft" and outcome.destination == "junk"
        assert outcome.message_id == MID and outcome.completed_at is not None
    assert folders(sandbox, "alice@corp.example") == ["junk"]
    assert folders(sandbox, "bob@corp.example") == ["junk"]
    assert folders(sandbox, "exec@corp.example") == ["inbox"]
    # Only the three target copies of this message were touched, each moved once.
    audit = sandbox.audit(before)
    assert sorted((e["mailbox"], e["action"]) for e in audit) == [
        ("alice@corp.example", "move"), ("bob@corp.example", "move"),
        ("shared-ops@corp.example", "move")]
    assert {e["message_id"] for e in audit} == {MID}
    assert folders(sandbox, "alice@corp.example", QUOTED_MID) == ["inbox"]


def test_rerun_is_already_in_destination_and_moves_nothing(sandbox, graph):
    targets = ["alice@corp.example", "bob@corp.example", "shared-ops@corp.example"]
    assert {o.status for o in retract(graph, targets).values()} == {"retracted"}
    before = last_seq(sandbox)
    fresh = provider_for(sandbox)  # a new process: no cached folder ids
    try:
        again = retract(fresh, targets)
    finally:
        fresh.close()
    assert {o.status for o in again.values()} == {"already_in_destination"}
    assert {o.source_folder for o in again.values()} == {"junk"}
    assert sandbox.audit(before) == []


def test_copy_already_in_junk(sandbox, graph):
    sandbox.add_mailbox("gina@corp.example", copies=[{"message_id": MID, "folder": "junk"}])
    before = last_seq(sandbox)
    out = retract(graph, ["gina@corp.example"])["gina@corp.example"]
    assert (out.status, out.reason, out.source_folder) == ("already_in_destination", None, "junk")
    assert sandbox.audit(before) == []


@pytest.mark.parametrize("destination,folder", [
    ("junk", "junk"), ("trash", "trash"), ("soft_delete", "soft_delete"),
    ("hard_delete", "purged")])
def test_every_destination(sandbox, graph, destination, folder):
    out = retract(graph, ["alice@corp.example"], destination)["alice@corp.example"]
    assert (out.status, out.source_folder, out.was_read) == ("retracted", "inbox", False)
    view = sandbox.copies(MID)
    assert [c["folder"] for c in view if c["mailbox"] == "alice@corp.example"] == [folder]
    before = last_seq(sandbox)
    again = retract(graph, ["alice@corp.example"], destination)["alice@corp.example"]
    if destination == "hard_delete":
        # Purged copies are out of Graph's reach: a rerun cannot see them.
        assert (again.status, again.reason) == ("failed", "not_found")
    else:
        assert again.status == "already_in_destination"
    assert sandbox.audit(before) == []


def test_restore_from_junk_trash_and_soft_delete(sandbox, graph):
    for name, folder in (("r1", "junk"), ("r2", "trash"), ("r3", "soft_delete"),
                         ("r4", "purged"), ("r5", "inbox")):
        sandbox.add_mailbox("%s@corp.example" % name,
                            copies=[{"message_id": MID, "folder": folder, "read": True}])
    targets = ["r%d@corp.example" % i for i in range(1, 6)]
    before = last_seq(sandbox)
    out = retract(graph, targets, "inbox")
    for i, source in ((1, "junk"), (2, "trash"), (3, "soft_delete")):
        outcome = out["r%d@corp.example" % i]
        assert (outcome.status, outcome.source_folder, outcome.was_read) == (
            "retracted", source, True)
        assert folders(sandbox, "r%d@corp.example" % i) == ["inbox"]
    purged = out["r4@corp.example"]
    assert (purged.status, purged.reason) == ("failed", "not_found")
    assert "hard-deleted copies cannot be restored" in purged.error_message
    assert out["r5@corp.example"].status == "already_in_destination"
    assert sorted(e["mailbox"] for e in sandbox.audit(before)) == targets[:3]


def test_preview_moves_nothing(sandbox, graph):
    sandbox.add_mailbox("gina@corp.example", copies=[{"message_id": MID, "folder": "junk"}])
    before = last_seq(sandbox)
    out = retract(graph, ["alice@corp.example", "bob@corp.example", "gina@corp.example",
                          "left@corp.example"], preview=True)
    assert (out["alice@corp.example"].status, out["alice@corp.example"].was_read) == (
        "previewed", False)
    assert (out["bob@corp.example"].status, out["bob@corp.example"].source_folder) == (
        "previewed", "trash")
    assert out["gina@corp.example"].status == "already_in_destination"
    assert out["left@corp.example"].reason == "not_a_mailbox"
    assert sandbox.audit(before) == []
    assert sandbox.counters.snapshot()["routes"].get("graph.messages.move") is None


def test_message_id_with_quote_and_plus(sandbox, graph):
    out = retract(graph, ["alice@corp.example"], message_id=QUOTED_MID)
    assert out["alice@corp.example"].status == "retracted"
    assert folders(sandbox, "alice@corp.example", QUOTED_MID) == ["junk"]
    assert folders(sandbox, "alice@corp.example", MID) == ["inbox"]  # the other message stays


def test_more_copies_in_one_mailbox_than_its_concurrency(sandbox, graph):
    sandbox.add_mailbox("heavy@corp.example",
                        copies=[{"message_id": MID, "folder": "inbox"} for _ in range(6)])
    out = retract(graph, ["heavy@corp.example"], "trash")["heavy@corp.example"]
    assert out.status == "retracted"
    assert folders(sandbox, "heavy@corp.example") == ["trash"] * 6
    statuses = sandbox.counters.snapshot()["statuses"]
    assert all("429" not in per for per in statuses.values())  # never over 4 per mailbox


# -- authorization --------------------------------------------------------------------------------
def test_rejected_secret_raises_before_any_outcome(sandbox):
    config = sandbox.pack_config()
    config["microsoft"]["client_secret"] = "wrong-secret-value-123"
    provider = provider_for(sandbox, config)
    try:
        with pytest.raises(ProviderUnavailable) as info:
            retract(provider, ["alice@corp.example"])
    finally:
        provider.close()
    assert (info.value.reason, info.value.code) == ("not_authorized", "invalid_client")
    assert "wrong-secret-value-123" not in str(info.value)
    assert folders(sandbox, "alice@corp.example") == ["inbox"]


def test_revoked_consent_fails_each_copy_not_authorized(sandbox):
    # Entra still issues a token without roles; Graph refuses every mailbox call with 403.
    sandbox.set_consent(APP, consent_granted=False)
    provider = provider_for(sandbox)
    try:
        out = retract(provider, ["alice@corp.example", "shared-ops@corp.example"])
    finally:
        provider.close()
    for outcome in out.values():
        assert (outcome.status, outcome.reason, outcome.error_code) == (
            "failed", "not_authorized", "ErrorAccessDenied")
    assert sandbox.counters.snapshot()["routes"].get("graph.messages.move") is None
    assert folders(sandbox, "alice@corp.example") == ["inbox"]


def test_ungranted_mail_permission_fails_each_copy_not_authorized(sandbox):
    sandbox.set_consent(APP, permissions=["GroupMember.Read.All"])
    provider = provider_for(sandbox)
    try:
        out = retract(provider, ["alice@corp.example", "bob@corp.example"])
    finally:
        provider.close()
    for outcome in out.values():
        assert (outcome.status, outcome.reason, outcome.error_code) == (
            "failed", "not_authorized", "ErrorAccessDenied")
    assert folders(sandbox, "alice@corp.example") == ["inbox"]


def test_certificate_credentials(sandbox):
    config = sandbox.pack_config()
    app = sandbox.credentials()["microsoft"][0]
    config["microsoft"].update(client_secret="",
                               certificate_private_key=app["certificate_private_key"],
                               certificate_thumbprint=app["certificate_thumbprint"])
    provider = provider_for(sandbox, config)
    try:
        out = retract(provider, ["alice@corp.example"], "trash")
    finally:
        provider.close()
    assert out["alice@corp.example"].status == "retracted"


def test_revoked_token_is_refreshed_once(sandbox, graph):
    assert retract(graph, ["alice@corp.example"])["alice@corp.example"].status == "retracted"
    # Every token issued so far stops working: msal's cached token is still "valid" for msal,
    # Graph now answers 401 InvalidAuthenticationToken.
    sandbox.revoke_tokens("microsoft")
    out = retract(graph, ["bob@corp.example"])["bob@corp.example"]
    assert out.status == "retracted"
    assert sandbox.counters.snapshot()["statuses"]["graph.batch"]["401"] >= 1  # refused first
    assert sandbox.counters.snapshot()["routes"]["entra.token"] == 2


# -- throttling and failures --------------------------------------------------------------------
def test_throttling_storm_that_clears(sandbox, sandbox_campaign):
    truth = sandbox_campaign(message_id="<storm@evil.example>", copies=60, microsoft_share=1.0,
                             deleted_share=0, junk_share=0, seed=3)
    sandbox.set_faults(graph={"rate_429": 0.4, "retry_after": 0.05})
    provider = provider_for(sandbox, retry_budget_s=30, max_attempts=20)
    try:
        out = retract(provider, truth.recipients, message_id="<storm@evil.example>")
    finally:
        provider.close()
    assert {o.status for o in out.values()} == {"retracted"}
    assert max(o.attempts for o in out.values()) > 1
    assert sandbox.faults.to_dict()["injected"]["graph"]["429"] > 0
    moves = [e for e in sandbox.audit() if e["message_id"] == "<storm@evil.example>"]
    assert len(moves) == 60  # each copy moved exactly once


def test_dropped_connections_never_move_twice(sandbox, sandbox_campaign):
    truth = sandbox_campaign(message_id="<drop@evil.example>", copies=40, microsoft_share=1.0,
                             deleted_share=0, junk_share=0, seed=4)
    sandbox.set_faults(graph={"rate_drop": 0.1, "rate_5xx": 0.05, "retry_after": 0.05})
    provider = provider_for(sandbox, retry_budget_s=60, max_attempts=30)
    try:
        out = retract(provider, truth.recipients, "trash", message_id="<drop@evil.example>")
    finally:
        provider.close()
    assert {o.status for o in out.values()} == {"retracted"}
    moves = [e for e in sandbox.audit() if e["message_id"] == "<drop@evil.example>"]
    assert sorted(e["mailbox"] for e in moves) == sorted(truth.recipients)


def test_attempts_are_counted_per_request_not_per_copy(sandbox, sandbox_campaign):
    """Half of all batch items fail 5xx, each request may be sent `max_attempts` (3) times.
    The copy takes several requests (lookup, folder, move), so it needs more rounds than 3 in
    all; it must still be retracted, once. (The seeded fault sequence makes the rounds
    repeatable: with the old per-copy count this copy ended provider_error.)"""
    mid = "<per-request@evil.example>"
    truth = sandbox_campaign(message_id=mid, copies=1, microsoft_share=1.0, deleted_share=0,
                             junk_share=0, seed=1)
    sandbox.set_faults(graph={"rate_5xx": 0.5, "retry_after": 0.01}, seed=26)
    provider = provider_for(sandbox, retry_budget_s=60, max_attempts=3)
    try:
        out = retract(provider, truth.recipients, message_id=mid)
    finally:
        provider.close()
    (copy,) = out.values()
    assert (copy.status, copy.reason) == ("retracted", None)
    assert copy.attempts > 3  # rounds: more than one copy-wide budget allowed
    assert sandbox.faults.to_dict()["injected"]["graph"]["5xx"] >= copy.attempts - 1
    moves = [e for e in sandbox.audit() if e["message_id"] == mid]
    assert [e["mailbox"] for e in moves] == truth.recipients  # moved exactly once


def test_fault_storm_ends_every_copy_retracted(sandbox, sandbox_campaign):
    """The faults bench's storm (10 % 5xx, 5 % 429) at the default limits: all retracted."""
    mid = "<storm5xx@evil.example>"
    truth = sandbox_campaign(message_id=mid, copies=100, microsoft_share=1.0,
                             deleted_share=0, junk_share=0, seed=5)
    sandbox.set_faults(graph={"rate_5xx": 0.1, "rate_429": 0.05, "retry_after": 0.01},
                       seed=5)
    provider = provider_for(sandbox)
    try:
        out = retract(provider, truth.recipients, message_id=mid)
    finally:
        provider.close()
    assert {o.status for o in out.values()} == {"retracted"}
    injected = sandbox.faults.to_dict()["injected"]["graph"]
    assert injected["5xx"] > 0 and injected["429"] > 0
    moves = [e for e in sandbox.audit() if e["message_id"] == mid]
    assert sorted(e["mailbox"] for e in moves) == sorted(truth.recipients)  # each once


def test_5xx_that_never_clears_is_provider_error(sandbox, graph):
    sandbox.set_faults(graph={"rate_5xx": 1.0, "status_5xx": 503, "retry_after": 0.05})
    provider = provider_for(sandbox, retry_budget_s=5, max_attempts=3)
    try:
        out = retract(provider, ["alice@corp.example"])["alice@corp.example"]
    finally:
        provider.close()
    assert (out.status, out.reason, out.error_code) == ("failed", "provider_error",
                                                        "ServiceUnavailable")
    assert out.attempts == 3 and "gave up" in out.error_message
    assert folders(sandbox, "alice@corp.example") == ["inbox"]


def test_token_outage_that_clears(sandbox):
    sandbox.set_faults(login={"token_outage": 1.5, "retry_after": 1})
    provider = provider_for(sandbox)
    try:
        out = retract(provider, ["alice@corp.example"])
    finally:
        provider.close()
    assert out["alice@corp.example"].status == "retracted"


def test_token_outage_past_the_budget(sandbox):
    sandbox.set_faults(login={"token_outage": True, "retry_after": 1})
    provider = provider_for(sandbox, retry_budget_s=3, max_attempts=3)
    try:
        with pytest.raises(ProviderUnavailable) as info:
            retract(provider, ["alice@corp.example"])
    finally:
        provider.close()
    assert info.value.reason == "provider_error"


# -- campaign against the sandbox's truth ---------------------------------------------------------
def test_campaign_matches_truth(sandbox, sandbox_campaign):
    truth = sandbox_campaign(message_id="<camp@evil.example>", copies=300, microsoft_share=1.0,
                             deleted_share=0.05, junk_share=0.05, unlicensed=2,
                             policy_blocked=2, seed=11)
    provider = provider_for(sandbox)
    try:
        out = retract(provider, truth.recipients, message_id="<camp@evil.example>")
    finally:
        provider.close()
    expected = truth.expected("junk", expand_groups=True)
    got = {a: (o.status, o.reason) for a, o in out.items()}
    assert got == {a: v for a, v in expected.items() if a in got}
    for address, outcome in out.items():
        mailbox = truth.mailboxes[address.lower()]
        if outcome.status == "retracted":
            assert outcome.was_read == mailbox.was_read
    batches = sandbox.counters.snapshot()["routes"]["graph.batch"]
    assert batches <= len(truth.recipients) * 4 / 20 + 10  # ~4 batch items per copy


# -- group expansion -------------------------------------------------------------------------
def test_expand_group(sandbox, graph):
    assert sorted(graph.expand_group("all-staff@corp.example")) == [
        "alice@corp.example", "bob@corp.example"]
    assert graph.expand_group("alice@corp.example") is None
    assert graph.expand_group("nobody@corp.example") is None


def test_expand_nested_group_pages_and_users_only(sandbox, graph):
    members = ["m%03d@corp.example" % i for i in range(150)]
    for address in members:
        sandbox.tenant.add_mailbox(address)
    sandbox.tenant.add_group("inner@corp.example", members[100:])
    sandbox.tenant.add_group("outer@corp.example", members[:100] + ["inner@corp.example"])
    got = graph.expand_group("outer@corp.example")
    assert sorted(got) == sorted(members)  # 151 directory objects: two pages, no group
    assert sandbox.counters.snapshot()["routes"]["graph.groups.transitive_members"] == 2


def test_group_expansion_refused_is_surfaced(sandbox):
    sandbox.set_consent(APP, permissions=["Mail.ReadWrite"])
    provider = provider_for(sandbox)
    try:
        assert provider.expand_group("all-staff@corp.example") is None
        out = retract(provider, ["all-staff@corp.example"])["all-staff@corp.example"]
    finally:
        provider.close()
    assert (out.status, out.reason, out.error_code) == (
        "failed", "not_authorized", "Authorization_RequestDenied")
    assert "could not expand group" in out.error_message


def test_via_group_is_carried(sandbox, graph):
    out = retract(graph, ["alice@corp.example"], via_group="all-staff@corp.example")
    assert out["alice@corp.example"].via_group == "all-staff@corp.example"


def test_wrong_ca_is_refused(sandbox, tmp_path):
    import trustme
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    config = sandbox.pack_config()
    config["microsoft"]["ca_file"] = str(other)
    provider = provider_for(sandbox, config, retry_budget_s=1, max_attempts=1)
    try:
        with pytest.raises((ProviderUnavailable, requests.exceptions.SSLError)):
            retract(provider, ["alice@corp.example"])
    finally:
        provider.close()


def test_lost_move_answer_is_looked_up_not_moved_again(sandbox, graph):
    """The move ran in Graph but its answer never came back (a gateway timeout): the run must
    look the copy up again, find it in junk and report it retracted, not move it a second time.
    The sandbox's lost-reply fault executes every write, then answers its batch item 504."""
    sandbox.set_faults(graph={"rate_lost_reply": 1.0})
    outcome = retract(graph, ["alice@corp.example"])["alice@corp.example"]
    assert sandbox.faults.to_dict()["injected"]["graph"] == {"lost_reply": 1}
    assert (outcome.status, outcome.source_folder, outcome.was_read, outcome.attempts) == (
        "retracted", "inbox", False, 2)
    moves = [e for e in sandbox.audit() if e["mailbox"] == "alice@corp.example"]
    assert [e["action"] for e in moves] == ["move"]


def test_expand_group_survives_dropped_connections(sandbox, graph):
    graph.tokens.get()
    sandbox.set_faults(graph={"rate_drop": 0.5}, seed=3)  # drop, drop, pass, pass
    members = graph.expand_group("all-staff@corp.example")
    assert sorted(members) == ["alice@corp.example", "bob@corp.example"]
    assert sandbox.faults.to_dict()["injected"]["graph"]["drop"] == 2


def test_no_secret_or_token_in_logs_or_outcomes(sandbox, caplog):
    import logging
    caplog.set_level(logging.DEBUG)
    sandbox.set_faults(login={"token_outage": 0.5, "retry_after": 1})
    config = sandbox.pack_config()
    secret = config["microsoft"]["client_secret"]
    provider = provider_for(sandbox, config)
    try:
        out = retract(provider, ["alice@corp.example", "exec@corp.example"])
        token = provider.tokens.get()
    finally:
        provider.close()
    assert out["alice@corp.example"].status == "retracted"
    assert "Entra ID token endpoint failed" in caplog.text  # the outage was logged
    dumped = caplog.text + repr([o.to_dict() for o in out.values()])
    assert secret not in dumped and token not in dumped


def test_recoverable_items_only_where_the_destination_wants_them(sandbox, graph):
    for name in ("sd1", "sd2"):
        sandbox.add_mailbox("%s@corp.example" % name,
                            copies=[{"message_id": MID, "folder": "soft_delete"}])
    before = last_seq(sandbox)
    # Junk must not pull a copy the user deleted back out of Recoverable Items.
    junk = retract(graph, ["sd1@corp.example"])["sd1@corp.example"]
    assert (junk.status, junk.reason) == ("failed", "not_found")
    assert sandbox.audit(before) == []
    # Hard delete finds it there and purges it; soft delete sees it is already there.
    purge = retract(graph, ["sd1@corp.example"], "hard_delete")["sd1@corp.example"]
    assert (purge.status, purge.source_folder) == ("retracted", "soft_delete")
    assert folders(sandbox, "sd1@corp.example") == ["purged"]
    soft = retract(graph, ["sd2@corp.example"], "soft_delete")["sd2@corp.example"]
    assert (soft.status, soft.source_folder) == ("already_in_destination", "soft_delete")
    assert [e["mailbox"] for e in sandbox.audit(before)] == ["sd1@corp.example"]


# == graph_auth's session: one TLS context per CA file ===========================================
# The session's adapter gives every connection verified against one CA file the process's one
# SSLContext for that file (the file is read once); proxy and CA-bundle environment variables
# work as with plain requests. These tests drive real connections to the
# sandbox: the sharing must be real, and trust, host names and proxies must work as before.
ENV_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE",
            "CURL_CA_BUNDLE")


@pytest.fixture
def clean_env(monkeypatch):
    """No proxy or CA-bundle variable from the machine running the tests (CI images set them)."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


@pytest.fixture
def own_ca(sandbox, tmp_path):
    """The sandbox's CA under a path of this test's own: contexts are kept per path for the whole
    process, so the session-wide sandbox CA file is never rewritten or shared across tests."""
    path = str(tmp_path / "sandbox-ca.pem")
    shutil.copyfile(sandbox.ca_file, path)
    return path


@pytest.fixture
def dead_proxy():
    """http://127.0.0.1:<port> where nothing listens (bound, never listening: refused at once,
    and no other process can take the port meanwhile)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield "http://127.0.0.1:%d" % sock.getsockname()[1]
    finally:
        sock.close()


def other_ca(tmp_path):
    path = str(tmp_path / "other-ca.pem")
    trustme.CA().cert_pem.write_to_path(path)
    return path


def config_with(sandbox, **microsoft):
    config = sandbox.pack_config()
    config["microsoft"].update(microsoft)
    return config


def tls_sockets(provider):
    """The TLS sockets of the connections the provider's session keeps open (all are back in
    their pools once a run has finished)."""
    manager = provider.session.get_adapter("https://").poolmanager
    sockets = []
    for key in list(manager.pools.keys()):
        for conn in list(manager.pools[key].pool.queue):
            if conn is not None and getattr(conn, "sock", None) is not None:
                sockets.append(conn.sock)
    return sockets


def refused(sandbox, config):
    """Run alice's retraction with `config`; the ProviderUnavailable it must raise, after
    checking that no HTTP request reached the sandbox and no mail was touched."""
    before, seq = sandbox.counters.snapshot(), last_seq(sandbox)
    where = folders(sandbox, "alice@corp.example")
    provider = provider_for(sandbox, config, retry_budget_s=1, max_attempts=1)
    try:
        with pytest.raises(ProviderUnavailable) as info:
            retract(provider, ["alice@corp.example"])
    finally:
        provider.close()
    assert sandbox.counters.snapshot() == before
    assert sandbox.audit(seq) == []
    assert folders(sandbox, "alice@corp.example") == where
    assert info.value.reason == "provider_error"
    return info.value


def retracted(sandbox, config, address="alice@corp.example"):
    provider = provider_for(sandbox, config, retry_budget_s=1, max_attempts=1)
    try:
        out = retract(provider, [address])[address]
    finally:
        provider.close()
    assert (out.status, out.reason) == ("retracted", None)
    assert folders(sandbox, address) == ["junk"]


def test_connections_and_sessions_share_one_context_per_ca_file(sandbox, sandbox_campaign,
                                                                own_ca, tmp_path):
    mid = "<shared-ctx@evil.example>"
    truth = sandbox_campaign(message_id=mid, copies=120, microsoft_share=1.0, deleted_share=0,
                             junk_share=0, seed=12)
    sandbox.set_faults(rtt_ms=30)  # batches overlap: the workers need several connections
    config = config_with(sandbox, ca_file=own_ca)
    first = provider_for(sandbox, config, provider_concurrency=8)
    try:
        out = retract(first, truth.recipients, message_id=mid)
        sockets = tls_sockets(first)
    finally:
        first.close()
    assert {o.status for o in out.values()} == {"retracted"}
    assert len(sockets) >= 2  # several connections, opened by several worker threads ...
    contexts = {id(s.context) for s in sockets}
    assert len(contexts) == 1  # ... all on one context
    shared = sockets[0].context
    assert (shared.verify_mode, shared.check_hostname) == (ssl.CERT_REQUIRED, True)
    # The CA file is read once per process: a new session's new connections use the context
    # already loaded, so replacing the file's contents now changes nothing for this process.
    shutil.copyfile(other_ca(tmp_path), own_ca)
    second = provider_for(sandbox, config, retry_budget_s=1, max_attempts=1)
    try:
        assert retract(second, ["alice@corp.example"])["alice@corp.example"].status == (
            "retracted")
        assert {id(s.context) for s in tls_sockets(second)} == contexts
    finally:
        second.close()


@pytest.mark.parametrize("trust", ["ca_file", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
                                   "default_bundle"])
def test_untrusted_server_certificate_is_refused(sandbox, clean_env, own_ca, tmp_path, trust):
    # A trusted run first: the sandbox CA's shared context exists and has pooled connections.
    retracted(sandbox, config_with(sandbox, ca_file=own_ca), "bob@corp.example")
    wrong = other_ca(tmp_path)
    if trust == "ca_file":
        config = config_with(sandbox, ca_file=wrong)
    else:  # no ca_file: the environment's bundle, else requests' default (certifi)
        config = config_with(sandbox, ca_file="")
        if trust != "default_bundle":
            clean_env.setenv(trust, wrong)
    error = refused(sandbox, config)
    assert error.code == "SSLError"
    assert "CERTIFICATE_VERIFY_FAILED" in error.message


@pytest.mark.parametrize("leg", ["authority_host", "graph_url"])
def test_certificate_for_another_host_is_refused(sandbox, own_ca, leg):
    """The sandbox's certificate names 127.0.0.1 and localhost. "[::ffff:127.0.0.1]" (the
    IPv4-mapped IPv6 form) reaches the same listener but is neither that IP address nor a
    name in the certificate, so only the host-name check can refuse it. (Not "127.1":
    eventlet's resolver, which StackStorm patches in, does not take inet_aton's short form.)"""
    retracted(sandbox, config_with(sandbox, ca_file=own_ca), "bob@corp.example")
    config = config_with(sandbox, ca_file=own_ca)
    assert "://127.0.0.1:" in config["microsoft"][leg]
    config["microsoft"][leg] = config["microsoft"][leg].replace(
        "://127.0.0.1:", "://[::ffff:127.0.0.1]:")
    if leg == "authority_host":
        error = refused(sandbox, config)
        assert error.code == "SSLError" and "IP address mismatch" in error.message
        return
    # Entra answers over the correct name; every Graph call is refused by the TLS check.
    seq, batches = last_seq(sandbox), sandbox.counters.snapshot()["routes"]["graph.batch"]
    provider = provider_for(sandbox, config, retry_budget_s=1, max_attempts=1)
    try:
        out = retract(provider, ["alice@corp.example"])["alice@corp.example"]
    finally:
        provider.close()
    assert (out.status, out.reason) == ("failed", "provider_error")
    assert "IP address mismatch" in out.error_message
    assert sandbox.counters.snapshot()["routes"]["graph.batch"] == batches
    assert sandbox.audit(seq) == []
    assert folders(sandbox, "alice@corp.example") == ["inbox"]


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_environment_ca_bundle_is_used_without_ca_file(sandbox, clean_env, own_ca, variable):
    clean_env.setenv(variable, own_ca)
    retracted(sandbox, config_with(sandbox, ca_file=""))


def test_environment_is_ignored_with_ca_file(sandbox, clean_env, own_ca, tmp_path, dead_proxy):
    # As before: a configured ca_file switches the environment off, bundle and proxies alike.
    clean_env.setenv("REQUESTS_CA_BUNDLE", other_ca(tmp_path))
    clean_env.setenv("HTTPS_PROXY", dead_proxy)
    retracted(sandbox, config_with(sandbox, ca_file=own_ca))


@pytest.mark.parametrize("proxy_variable", ["HTTPS_PROXY", "https_proxy", "ALL_PROXY"])
@pytest.mark.parametrize("no_proxy", [None, "NO_PROXY=127.0.0.1", "no_proxy=localhost,127.0.0.1"])
def test_proxy_variables_apply_without_ca_file(sandbox, clean_env, own_ca, dead_proxy,
                                               proxy_variable, no_proxy):
    clean_env.setenv("REQUESTS_CA_BUNDLE", own_ca)
    clean_env.setenv(proxy_variable, dead_proxy)
    config = config_with(sandbox, ca_file="")
    if no_proxy is None:  # every call goes to the dead proxy
        assert refused(sandbox, config).code == "ProxyError"
    else:
        clean_env.setenv(*no_proxy.split("=", 1))
        retracted(sandbox, config)
