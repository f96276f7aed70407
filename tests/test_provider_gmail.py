"""GmailProvider against the sandbox tenant: real google-auth service-account credentials,
googleapiclient discovery + multipart batches, httplib2 over HTTP on loopback.

Every situation is set up in the sandbox (mailbox kinds, labels, granted scopes, faults) and
every test checks the outcomes AND the tenant: where the copies are and what the audit says
was done (nothing outside the targets touched, nothing changed twice).
"""
from __future__ import annotations

import dataclasses
import json
import threading
import time
import types

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from retraction.config import ConfigError, load_settings
from retraction.model import Destination, Mode, RetractionRequest, Trigger
from retraction.providers.base import ProviderUnavailable, Target
from retraction.providers.gmail import GmailProvider, searchable_message_id
from retraction.providers.gmail_auth import SCOPE_FULL, SCOPE_GROUP_MEMBERS, SCOPE_MODIFY
from retraction.providers.gmail_batch import PartError, _retry_after
from retraction.providers.gmail_copy import folder_of, in_destination, next_action

pytest_plugins = ["sandbox.pytest_plugin"]

BASIC = "basic.yaml"

MID = "<abc@evil.example>"
QUOTED_MID = "<o'brien+promo@evil.example>"
ACCOUNT = "retraction@sandbox-project.iam.gserviceaccount.com"
CAROL, DAVE = "carol@corp-mail.example", "dave@corp-mail.example"
GONE, TEAM = "gone@corp-mail.example", "team@corp-mail.example"
NOBODY = "nobody@corp-mail.example"


# -- helpers ------------------------------------------------------------------------------------
def settings_of(sandbox, **google):
    settings = load_settings(sandbox.pack_config())
    return dataclasses.replace(settings.google, **google), settings.limits


def provider_for(sandbox, google=None, **limits):
    settings = load_settings(sandbox.pack_config())
    return GmailProvider(google or settings.google,
                         dataclasses.replace(settings.limits, **limits))


def request_for(recipients, destination="trash", message_id=MID, preview=False):
    return RetractionRequest(
        message_id=message_id, recipients=tuple(recipients),
        destination=Destination(destination), preview=preview, mode=Mode.MANUAL,
        trigger=Trigger.ANALYST, requested_by="analyst@corp.example", comment="ticket 42")


def retract(provider, recipients, destination="trash", message_id=MID, preview=False,
            via_group=None):
    request = request_for(recipients, destination, message_id, preview)
    outcomes = list(provider.retract(request, (Target(r, via_group) for r in recipients)))
    assert sorted(o.recipient for o in outcomes) == sorted(recipients)  # exactly one each
    return {o.recipient: o for o in outcomes}


def folders(sandbox, address, message_id=MID):
    with sandbox.tenant.lock:
        box = sandbox.tenant.mailbox(address)
        return sorted(c.folder for c in box.copies.values() if c.message_id == message_id)


def audit_since(sandbox, seq):
    return [e for e in sandbox.audit() if e["seq"] > seq]


def last_seq(sandbox):
    entries = sandbox.audit()
    return entries[-1]["seq"] if entries else 0


def status_of(outcome):
    return outcome.status if outcome.reason is None else "%s:%s" % (outcome.status,
                                                                    outcome.reason)


def routes(sandbox):
    return sandbox.counters.snapshot()["routes"]


@pytest.fixture
def gmail(sandbox):
    provider = provider_for(sandbox)
    yield provider
    provider.close()


def other_key_pem():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


# -- pure pieces --------------------------------------------------------------------------------
@pytest.mark.parametrize("labels, folder", [
    (["INBOX", "UNREAD"], "inbox"), (["SPAM"], "junk"), (["INBOX", "SPAM"], "junk"),
    (["INBOX", "TRASH"], "trash"), ([], "archive"), (["UNREAD"], "archive"),
])
def test_folder_from_labels(labels, folder):
    assert folder_of(labels) == folder


@pytest.mark.parametrize("labels, destination, action", [
    (["INBOX"], "junk", ("modify", {"addLabelIds": ["SPAM"], "removeLabelIds": ["INBOX"]})),
    (["SPAM"], "junk", None),
    (["TRASH"], "junk", ("untrash", None)),
    (["SPAM"], "inbox", ("modify", {"addLabelIds": ["INBOX"], "removeLabelIds": ["SPAM"]})),
    (["INBOX", "TRASH"], "inbox", ("untrash", None)),
    ([], "inbox", ("modify", {"addLabelIds": ["INBOX"], "removeLabelIds": ["SPAM"]})),
    (["INBOX"], "inbox", None),
    (["INBOX"], "trash", ("trash", None)),
    (["SPAM"], "soft_delete", ("trash", None)),
    (["TRASH"], "soft_delete", None),
    (["TRASH"], "hard_delete", ("delete", None)),
])
def test_destination_mapping(labels, destination, action):
    assert next_action(labels, Destination(destination)) == action
    assert in_destination(labels, Destination(destination)) is (action is None)


@pytest.mark.parametrize("bad", [
    "<a@b> OR in:anywhere", "<a b@c>", "<a(b)@c>", "<a{b}@c>", '<a"b@c>', "<a@b@c>",
    "<a@b>x", "a@b", "<é@b>", "<a@b\n>", "",
])
def test_message_id_gmail_search_cannot_widen(bad):
    with pytest.raises(ValueError, match="message_id"):
        searchable_message_id(bad)


def test_message_id_grammar_keeps_legal_ids():
    for good in (MID, QUOTED_MID, "<a.b=c?d@[10.0.0.1]>", "<x/y|z~#$%&@h-1.example>"):
        assert searchable_message_id(good) == good


def test_retry_after_header_then_quota_message():
    assert _retry_after({"retry-after": "3"}, "") == 3.0
    at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 30)) + ".000Z"
    wait = _retry_after({}, "User-rate limit exceeded.  Retry after " + at)
    assert 25 <= wait <= 31
    assert _retry_after({}, "Backend Error") is None


def test_part_error_retryable_rules():
    assert PartError(429, "rateLimitExceeded", "").retryable
    assert PartError(403, "userRateLimitExceeded", "").retryable
    assert PartError(503, "backendError", "").retryable
    assert PartError(0, "transport_error", "").retryable
    assert not PartError(403, "forbidden", "Delegation denied").retryable
    assert not PartError(400, "failedPrecondition", "").retryable


# -- statuses and reasons from real situations --------------------------------------------------
def test_trash_every_status_and_the_tenant_agrees(sandbox, gmail):
    sandbox.add_mailbox("erin@corp-mail.example")  # a mailbox the message never reached
    erin = "erin@corp-mail.example"
    seq = last_seq(sandbox)
    got = retract(gmail, [CAROL, DAVE, GONE, TEAM, NOBODY, erin])

    carol, dave = got[CAROL], got[DAVE]
    assert (carol.status, carol.was_read, carol.source_folder) == ("retracted", True, "inbox")
    assert (dave.status, dave.was_read, dave.source_folder) == ("retracted", False, "junk")
    assert carol.provider == "google" and carol.attempts == 1 and carol.reason is None
    assert (carol.mode, carol.trigger, carol.destination) == ("manual", "analyst", "trash")
    assert carol.requested_by == "analyst@corp.example" and carol.comment == "ticket 42"
    assert (status_of(got[GONE]), got[GONE].error_code) == ("failed:not_a_mailbox",
                                                            "failedPrecondition")
    assert got[GONE].error_message == "Mail service not enabled"
    assert (status_of(got[TEAM]), got[TEAM].error_code) == ("failed:not_a_mailbox",
                                                            "unauthorized_client")
    assert "group" in got[TEAM].error_message
    assert (status_of(got[NOBODY]), got[NOBODY].error_code) == ("failed:not_a_mailbox",
                                                                "invalid_grant")
    assert got[NOBODY].error_message == "Invalid email or User ID"
    assert (status_of(got[erin]), got[erin].error_code) == ("failed:not_found", "notFound")
    assert got[erin].was_read is None and got[erin].source_folder is None

    assert folders(sandbox, CAROL) == ["trash"] and folders(sandbox, DAVE) == ["trash"]
    assert folders(sandbox, CAROL, QUOTED_MID) == ["inbox"]  # another message: untouched
    entries = audit_since(sandbox, seq)
    assert sorted((e["mailbox"], e["action"], e["before"], e["after"]) for e in entries) == [
        (CAROL, "trash", "inbox,read", "trash,read"),
        (DAVE, "trash", "junk,unread", "trash,unread")]
    assert all(e["actor"] == "%s as %s" % (ACCOUNT, e["mailbox"]) for e in entries)


def test_rerun_is_already_in_destination_and_changes_nothing(sandbox, gmail):
    retract(gmail, [CAROL, DAVE])
    seq = last_seq(sandbox)
    again = retract(gmail, [CAROL, DAVE])
    assert {status_of(o) for o in again.values()} == {"already_in_destination"}
    assert again[CAROL].source_folder == "trash"
    assert audit_since(sandbox, seq) == []


def test_preview_moves_nothing(sandbox, gmail):
    got = retract(gmail, [CAROL, DAVE, GONE], destination="junk", preview=True)
    assert (got[CAROL].status, got[CAROL].was_read, got[CAROL].source_folder) == (
        "previewed", True, "inbox")
    assert got[DAVE].status == "already_in_destination"  # already in junk
    assert status_of(got[GONE]) == "failed:not_a_mailbox"
    assert sandbox.audit() == []
    assert routes(sandbox).get("gmail.messages.modify") is None


def test_junk_moves_inbox_copy_and_leaves_junk_copy(sandbox, gmail):
    got = retract(gmail, [CAROL, DAVE], destination="junk")
    assert got[CAROL].status == "retracted" and got[DAVE].status == "already_in_destination"
    assert folders(sandbox, CAROL) == ["junk"]
    with sandbox.tenant.lock:  # SPAM added, INBOX removed: not "junk and still in the inbox"
        copy = [c for c in sandbox.tenant.mailbox(CAROL).copies.values()
                if c.message_id == MID][0]
        assert "INBOX" not in copy.extra_labels
    assert [(e["mailbox"], e["action"]) for e in sandbox.audit()] == [(CAROL, "modify")]


def test_soft_delete_is_gmail_trash(sandbox, gmail):
    got = retract(gmail, [CAROL], destination="soft_delete")
    assert got[CAROL].status == "retracted" and folders(sandbox, CAROL) == ["trash"]


def test_restore_from_junk_trash_and_soft_delete(sandbox, gmail):
    erin, frank = "erin@corp-mail.example", "frank@corp-mail.example"
    sandbox.add_mailbox(erin, copies=[{"message_id": MID, "folder": "trash", "read": True}])
    sandbox.add_mailbox(frank, copies=[{"message_id": MID, "folder": "soft_delete"}])
    got = retract(gmail, [CAROL, DAVE, erin, frank], destination="inbox")
    assert got[CAROL].status == "already_in_destination"
    assert (got[DAVE].status, got[DAVE].source_folder) == ("retracted", "junk")
    assert (got[erin].status, got[erin].source_folder, got[erin].was_read) == (
        "retracted", "trash", True)
    assert (got[frank].status, got[frank].source_folder) == ("retracted", "trash")
    for address in (CAROL, DAVE, erin, frank):
        assert folders(sandbox, address) == ["inbox"]
    # out of the trash (to no label at all), then back into the inbox
    actions = {}
    for entry in sandbox.audit():
        actions.setdefault(entry["mailbox"], []).append(entry["action"])
    assert actions == {DAVE: ["modify"], erin: ["untrash", "modify"],
                       frank: ["untrash", "modify"]}


def test_undo_of_our_own_trash_is_one_untrash(sandbox, gmail):
    retract(gmail, [CAROL])
    seq = last_seq(sandbox)
    got = retract(gmail, [CAROL], destination="inbox")
    assert (got[CAROL].status, got[CAROL].source_folder) == ("retracted", "trash")
    assert [e["action"] for e in audit_since(sandbox, seq)] == ["untrash"]  # INBOX was kept
    assert folders(sandbox, CAROL) == ["inbox"]


def test_every_copy_of_the_message_in_a_mailbox_is_moved(sandbox, gmail):
    erin = "erin@corp-mail.example"
    sandbox.add_mailbox(erin, copies=[{"message_id": MID, "folder": "inbox"},
                                      {"message_id": MID, "folder": "junk", "read": True}])
    got = retract(gmail, [erin])
    assert got[erin].status == "retracted"
    assert folders(sandbox, erin) == ["trash", "trash"]
    assert len(sandbox.audit()) == 2


def test_quotes_and_plus_in_message_id(sandbox, gmail):
    got = retract(gmail, [CAROL], message_id=QUOTED_MID)
    assert got[CAROL].status == "retracted"
    assert folders(sandbox, CAROL, QUOTED_MID) == ["trash"]
    assert folders(sandbox, CAROL) == ["inbox"]


def test_only_exact_message_id_header_is_acted_on(sandbox, gmail):
    # Gmail's rfc822msgid: search is case-insensitive; the header check is exact.
    erin = "erin@corp-mail.example"
    sandbox.add_mailbox(erin, copies=[{"message_id": "<ABC@evil.example>", "folder": "inbox"}])
    got = retract(gmail, [erin, CAROL])
    assert status_of(got[erin]) == "failed:not_found"
    assert folders(sandbox, erin, "<ABC@evil.example>") == ["inbox"]
    assert [e["mailbox"] for e in sandbox.audit()] == [CAROL]
    assert routes(sandbox)["gmail.messages.get"] == 2  # the near miss was looked at, not moved


def test_crafted_message_id_refused_before_any_call(sandbox, gmail):
    request = request_for([CAROL], message_id="<abc@evil.example> OR in:anywhere")
    with pytest.raises(ValueError, match="message_id"):
        gmail.retract(request, [Target(CAROL)])
    assert "google.token" not in routes(sandbox) and sandbox.audit() == []


# -- scopes, delegation and credentials ---------------------------------------------------------
def test_hard_delete_needs_the_full_mail_scope_and_cannot_be_undone(sandbox):
    provider = provider_for(sandbox)
    got = retract(provider, [CAROL], destination="hard_delete")
    assert (status_of(got[CAROL]), got[CAROL].error_code) == ("failed:not_authorized",
                                                              "unauthorized_client")
    assert SCOPE_FULL in got[CAROL].error_message and sandbox.audit() == []

    sandbox.set_google_scopes(ACCOUNT, [SCOPE_MODIFY, SCOPE_FULL, SCOPE_GROUP_MEMBERS])
    got = retract(provider, [CAROL, DAVE], destination="hard_delete")
    assert {o.status for o in got.values()} == {"retracted"}
    assert got[DAVE].source_folder == "junk" and got[DAVE].was_read is False
    assert folders(sandbox, CAROL) == ["purged"] and folders(sandbox, DAVE) == ["purged"]
    assert sorted(e["action"] for e in sandbox.audit()) == ["delete", "delete"]

    restored = retract(provider, [CAROL], destination="inbox")
    assert status_of(restored[CAROL]) == "failed:not_found"
    assert "hard-deleted copies cannot be restored" in restored[CAROL].error_message
    assert folders(sandbox, CAROL) == ["purged"]
    provider.close()


def test_ungranted_scopes_are_not_authorized_for_users_and_groups(sandbox):
    sandbox.set_google_scopes(ACCOUNT, [SCOPE_GROUP_MEMBERS])  # Gmail scope taken away
    for admin in (None, ""):  # with the directory admin probe, and without any proof
        google, _ = settings_of(sandbox)
        if admin is not None:
            google = dataclasses.replace(google, directory_admin=admin)
        provider = provider_for(sandbox, google)
        got = retract(provider, [CAROL, DAVE, TEAM])
        provider.close()
        assert {status_of(o) for o in got.values()} == {"failed:not_authorized"}
        assert {o.error_code for o in got.values()} == {"unauthorized_client"}
        assert "not granted" in got[CAROL].error_message
    assert sandbox.audit() == [] and "gmail.batch" not in routes(sandbox)


def test_group_alone_needs_proof_of_delegation(sandbox):
    # With a directory admin the provider proves delegation works (a token for a known
    # user), so the refused group is not a mailbox; with nothing to prove it, it cannot
    # tell a group from missing delegation and says not_authorized.
    provider = provider_for(sandbox)
    got = retract(provider, [TEAM])
    provider.close()
    assert status_of(got[TEAM]) == "failed:not_a_mailbox"
    assert routes(sandbox)["google.token"] == 2  # the group, then the admin as the proof
    google, _ = settings_of(sandbox, directory_admin="")
    provider = provider_for(sandbox, google)
    got = retract(provider, [TEAM])
    provider.close()
    assert status_of(got[TEAM]) == "failed:not_authorized"


@pytest.mark.parametrize("change, code", [
    ({"private_key": None}, "invalid_grant"),  # key not the service account's: bad signature
    ({"client_email": "ghost@sandbox-project.iam.gserviceaccount.com"}, "invalid_grant"),
])
def test_rejected_service_account_raises_provider_unavailable(sandbox, change, code):
    google, _ = settings_of(sandbox)
    info = json.loads(google.service_account_json)
    pem = other_key_pem()
    info.update({k: (pem if v is None else v) for k, v in change.items()})
    google = dataclasses.replace(google, service_account_json=json.dumps(info))
    provider = provider_for(sandbox, google)
    outcomes = []
    with pytest.raises(ProviderUnavailable) as caught:
        for outcome in provider.retract(request_for([CAROL, DAVE]),
                                        [Target(CAROL), Target(DAVE)]):
            outcomes.append(outcome)
    provider.close()
    error = caught.value
    assert outcomes == [] and (error.reason, error.code) == ("not_authorized", code)
    text = "%s %s" % (error, error.message)
    assert "PRIVATE KEY" not in text and "eyJ" not in text and pem[40:80] not in text
    assert "gmail.batch" not in routes(sandbox) and sandbox.audit() == []


def test_bad_service_account_json_names_the_key_and_hides_it(sandbox):
    google, limits = settings_of(sandbox, service_account_json='{"private_key": "s3cr3t"')
    with pytest.raises(ConfigError, match="google.service_account_json") as caught:
        GmailProvider(google, limits)
    assert "s3cr3t" not in str(caught.value)
    good, _ = settings_of(sandbox)
    fields = dict(dataclasses.asdict(good), batch_size=101)
    with pytest.raises(ConfigError, match="google.batch_size"):
        GmailProvider(types.SimpleNamespace(service_account_info=good.service_account_info,
                                            **fields), limits)


# -- retries ------------------------------------------------------------------------------------
def test_throttling_storm_that_clears_is_retracted(sandbox):
    gmail = provider_for(sandbox, max_attempts=10)
    sandbox.set_faults(gmail={"rate_429": 1.0, "retry_after": 0.3})
    timer = threading.Timer(1.0, sandbox.set_faults, kwargs={"gmail": {"rate_429": 0.0}})
    timer.start()
    try:
        got = retract(gmail, [CAROL, DAVE])
    finally:
        timer.cancel()
        gmail.close()
    assert {o.status for o in got.values()} == {"retracted"}
    assert min(o.attempts for o in got.values()) >= 2
    assert sandbox.faults.injected["gmail"]["429"] >= 2
    assert sorted(e["mailbox"] for e in sandbox.audit()) == [CAROL, DAVE]  # once each


def test_5xx_that_never_clears_is_provider_error_with_the_code(sandbox):
    provider = provider_for(sandbox, retry_budget_s=5, max_attempts=3)
    sandbox.set_faults(gmail={"rate_5xx": 1.0, "status_5xx": 500})
    got = retract(provider, [CAROL])
    provider.close()
    outcome = got[CAROL]
    assert status_of(outcome) == "failed:provider_error"
    assert (outcome.error_code, outcome.error_message, outcome.attempts) == (
        "backendError", "Backend Error", 3)
    assert sandbox.audit() == []


def test_lost_answers_are_retried_without_moving_twice(sandbox, gmail):
    # A dropped batch part has run; its answer is lost (503). Retrying is safe: each copy is
    # changed once (the second trash is a no-op) and reported retracted.
    sandbox.set_faults(gmail={"rate_drop": 0.25}, seed=5)
    erin = "erin@corp-mail.example"
    sandbox.add_mailbox(erin, copies=[{"message_id": MID, "folder": "inbox"}])
    got = retract(gmail, [CAROL, DAVE, erin])
    assert {o.status for o in got.values()} == {"retracted"}
    assert sandbox.faults.injected["gmail"]["drop"] >= 1
    assert sorted(e["mailbox"] for e in sandbox.audit()) == sorted([CAROL, DAVE, erin])


def test_dropped_token_connections_are_retried(sandbox, gmail):
    sandbox.set_faults(google_token={"rate_drop": 0.5}, seed=3)
    got = retract(gmail, [CAROL, DAVE])
    assert {o.status for o in got.values()} == {"retracted"}
    assert sandbox.faults.injected["google_token"]["drop"] >= 1


def test_token_outage_that_never_clears_is_provider_error(sandbox):
    provider = provider_for(sandbox, retry_budget_s=1, max_attempts=2)
    sandbox.set_faults(google_token={"token_outage": True, "retry_after": 0})
    got = retract(provider, [CAROL])
    provider.close()
    assert status_of(got[CAROL]) == "failed:provider_error"
    assert got[CAROL].error_code == "internal_failure"
    assert sandbox.audit() == []


def test_user_quota_wait_beyond_the_budget_fails_at_once(sandbox):
    # 10 units: list + get pass, trash gets 429 userRateLimitExceeded with the retry time in
    # the message only (no Retry-After), a minute away: beyond a 5 s budget, no waiting.
    provider = provider_for(sandbox, retry_budget_s=5)
    sandbox.set_faults(gmail_user_quota=10)
    started = time.monotonic()
    got = retract(provider, [CAROL])
    provider.close()
    assert time.monotonic() - started < 30  # hang guard (the quota asks for 60 s), not a bound
    assert (status_of(got[CAROL]), got[CAROL].error_code) == ("failed:provider_error",
                                                              "userRateLimitExceeded")
    assert "Retry after" in got[CAROL].error_message and got[CAROL].attempts == 1


# -- groups -------------------------------------------------------------------------------------
def test_expand_group(sandbox, gmail):
    assert sorted(gmail.expand_group(TEAM)) == [CAROL, DAVE]
    assert gmail.expand_group(CAROL) is None
    assert routes(sandbox)["directory.members.list"] == 2


def test_expand_group_errors(sandbox):
    google, _ = settings_of(sandbox, directory_admin="")
    with pytest.raises(ConfigError, match="google.directory_admin"):
        provider_for(sandbox, google).expand_group(TEAM)
    sandbox.set_google_scopes(ACCOUNT, [SCOPE_MODIFY])
    with pytest.raises(ProviderUnavailable) as caught:
        provider_for(sandbox).expand_group(TEAM)
    assert (caught.value.reason, caught.value.code) == ("not_authorized", "unauthorized_client")


def test_members_found_through_a_group_carry_it(sandbox, gmail):
    got = retract(gmail, gmail.expand_group(TEAM), via_group=TEAM)
    assert {o.via_group for o in got.values()} == {TEAM}
    assert {o.status for o in got.values()} == {"retracted"}


# -- scale: batching, token reuse, bounded memory -----------------------------------------------
def test_campaign_matches_the_truth_with_mixed_batches(sandbox, sandbox_campaign, gmail):
    truth = sandbox_campaign(message_id="<camp@evil.example>", copies=300,
                             microsoft_share=0.0, read_share=0.3, deleted_share=0.05,
                             junk_share=0.05, unlicensed=2, seed=11)
    recipients = [r for r in truth.recipients if r.endswith("@corp-mail.example")]
    got = retract(gmail, recipients, message_id=truth.message_id)
    expected = {a: s for a, s in truth.expected("trash").items() if a in recipients}
    assert {a: (o.status, o.reason) for a, o in got.items()} == expected
    for address, outcome in got.items():
        mailbox = truth.mailboxes[address.lower()]
        if outcome.status == "retracted":
            assert outcome.was_read == mailbox.was_read
            assert outcome.source_folder == mailbox.folder
    counters = routes(sandbox)
    assert counters["google.token"] == len(recipients)  # one token per subject
    # every batch mixes subjects: far fewer batches than mailboxes
    assert counters["gmail.batch"] < len(recipients) / 3
    retracted = sum(1 for o in got.values() if o.status == "retracted")
    assert len(sandbox.audit()) == retracted

    seq = last_seq(sandbox)
    again = retract(gmail, recipients, message_id=truth.message_id)
    assert sum(1 for o in again.values() if o.status == "already_in_destination") == (
        retracted + sum(1 for s in expected.values() if s[0] == "already_in_destination"))
    assert audit_since(sandbox, seq) == []
    assert routes(sandbox)["google.token"] == counters["google.token"]  # tokens reused


def test_targets_are_read_in_a_bounded_window(sandbox):
    google, limits = settings_of(sandbox)
    google = types.SimpleNamespace(service_account_info=google.service_account_info,
                                   **dict(dataclasses.asdict(google), batch_size=2))
    provider = GmailProvider(google, dataclasses.replace(limits, provider_concurrency=1))
    addresses = ["user%02d@corp-mail.example" % i for i in range(12)]
    for address in addresses:
        sandbox.add_mailbox(address, copies=[{"message_id": MID}])
    pulled = []

    def targets():
        for address in addresses:
            pulled.append(address)
            yield Target(address)

    ahead = []
    for count, outcome in enumerate(provider.retract(request_for(addresses), targets())):
        assert outcome.status == "retracted"
        ahead.append(len(pulled) - count)
    provider.close()
    assert len(ahead) == 12 and max(ahead) <= 2  # window = concurrency * batch_size


def test_connections_are_kept_alive_with_nodelay(sandbox):
    # Small POSTs (tokens, batches) must not wait for delayed ACKs (Nagle), and a worker
    # thread reuses its connection from request to request.
    import socket

    from retraction.providers.gmail_batch import ThreadLocalHttp

    pool = ThreadLocalHttp()
    http = pool.get()
    assert pool.get() is http  # one per thread
    for _ in range(3):
        response, _ = http.request(sandbox.urls["control_url"] + "/counters")
        assert response.status == 200
    (conn,) = http.connections.values()
    assert conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    other = []
    worker = threading.Thread(target=lambda: other.append(pool.get()))
    worker.start()
    worker.join()
    assert other[0] is not http
    pool.close()


def test_cached_tokens_google_no_longer_honours_are_refreshed(sandbox, gmail):
    retract(gmail, [CAROL])  # carol's token is cached now
    sandbox.load_scenario_file(BASIC)  # a new tenant: every issued token is void
    got = retract(gmail, [CAROL, DAVE])
    assert {o.status for o in got.values()} == {"retracted"}
    assert sandbox.counters.snapshot()["statuses"]["gmail.messages.list"].get("401") == 1


def test_cached_token_void_and_scope_revoked_is_not_authorized(sandbox, gmail):
    retract(gmail, [CAROL])
    sandbox.load_scenario_file(BASIC)
    sandbox.set_google_scopes(ACCOUNT, [SCOPE_GROUP_MEMBERS])
    got = retract(gmail, [CAROL])
    assert (status_of(got[CAROL]), got[CAROL].error_code) == ("failed:not_authorized",
                                                              "unauthorized_client")
    assert sandbox.audit() == [] and folders(sandbox, CAROL) == ["inbox"]


def test_directory_throttling_clears_and_outage_is_provider_error(sandbox):
    provider = provider_for(sandbox, retry_budget_s=3, max_attempts=8)
    sandbox.set_faults(directory={"rate_429": 0.5, "retry_after": 0}, seed=2)
    assert sorted(provider.expand_group(TEAM)) == [CAROL, DAVE]
    assert sandbox.faults.injected["directory"]["429"] >= 1
    sandbox.set_faults(directory={"rate_429": 0.0, "rate_5xx": 1.0, "status_5xx": 500})
    with pytest.raises(ProviderUnavailable) as caught:
        provider.expand_group(TEAM)
    provider.close()
    assert (caught.value.reason, caught.value.code) == ("provider_error", "backendError")


def test_refused_groups_filling_the_window_do_not_stall_the_run(sandbox):
    # Window of 2, no directory admin: two refused groups fill it and nothing in it can prove
    # delegation, so they are decided (not_authorized) to make room for the next copy.
    sandbox.tenant.add_group("team2@corp-mail.example", [CAROL])
    google, limits = settings_of(sandbox, directory_admin="")
    google = types.SimpleNamespace(service_account_info=google.service_account_info,
                                   **dict(dataclasses.asdict(google), batch_size=2))
    provider = GmailProvider(google, dataclasses.replace(limits, provider_concurrency=1))
    recipients = [TEAM, "team2@corp-mail.example", CAROL]
    got = {}
    worker = threading.Thread(target=lambda: got.update(retract(provider, recipients)))
    worker.start()
    worker.join(30)
    provider.close()
    assert not worker.is_alive(), "the run stalled"
    assert [status_of(got[r]) for r in recipients] == [
        "failed:not_authorized", "failed:not_authorized", "retracted"]


def test_a_failing_target_iterator_surfaces_in_the_caller(sandbox, gmail):
    def targets():
        yield Target(CAROL)
        raise LookupError("the caller's recipients broke")

    with pytest.raises(LookupError, match="recipients broke"):
        list(gmail.retract(request_for([CAROL]), targets()))


def test_no_targets_no_calls(sandbox, gmail):
    assert list(gmail.retract(request_for([]), iter(()))) == []
    assert "google.token" not in routes(sandbox) and "gmail.batch" not in routes(sandbox)


def test_unusable_private_key_names_the_field_before_any_call(sandbox):
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    for pem, why in (("-----BEGIN PRIVATE KEY-----\ns3cr3t\n-----END PRIVATE KEY-----\n",
                      "not an unencrypted PEM"), (ec_pem, "must be an RSA key")):
        google, _ = settings_of(sandbox)
        info = dict(json.loads(google.service_account_json), private_key=pem)
        google = dataclasses.replace(google, service_account_json=json.dumps(info))
        provider = provider_for(sandbox, google)
        with pytest.raises(ConfigError, match="google.service_account_json") as caught:
            list(provider.retract(request_for([CAROL]), [Target(CAROL)]))
        provider.close()
        assert why in str(caught.value) and "s3cr3t" not in str(caught.value)
        assert ec_pem[40:80] not in str(caught.value)
    assert "google.token" not in routes(sandbox) and sandbox.audit() == []


def test_batches_fill_while_half_the_slots_are_busy(sandbox):
    # Parts trickle in behind per-mailbox tokens; sent as soon as a slot frees, batches
    # carried a fifth of batch_size. With a round trip to wait on, they must fill up.
    sandbox.set_faults(rtt_ms=30)
    google, limits = settings_of(sandbox)
    google = types.SimpleNamespace(service_account_info=google.service_account_info,
                                   **dict(dataclasses.asdict(google), batch_size=25))
    provider = GmailProvider(google, dataclasses.replace(limits, provider_concurrency=8))
    addresses = ["fill%03d@corp-mail.example" % i for i in range(400)]
    for address in addresses:
        sandbox.add_mailbox(address, copies=[{"message_id": MID}])
    # Tokens first: this is about batches filling behind the list -> get -> trash chain, not
    # about how fast a loaded machine signs 400 tokens (which made it flaky).
    for future in [provider.tokens.get(a, (SCOPE_MODIFY,)) for a in addresses]:
        future.result()
    got = retract(provider, addresses)
    provider.close()
    assert {status_of(o) for o in got.values()} == {"retracted"}
    counters = routes(sandbox)
    parts = sum(counters["gmail.messages." + m] for m in ("list", "get", "trash"))
    assert parts == 3 * len(addresses)
    assert parts / counters["gmail.batch"] >= 0.7 * 25, counters["gmail.batch"]  # was 0.6


# -- secrets never in the logs, even with google-auth's DEBUG request logging on (appended) ----
JWT = r"eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+"  # a signed JWT, e.g. a token request's assertion


def test_debug_logs_carry_no_assertion_token_or_key(sandbox, caplog, monkeypatch):
    # google-auth logs each token request's body (the signed assertion, good for an hour) in
    # the record's `httpRequest` extra when the `google` logger is configured; formatters and
    # JSON log shippers write such extras out, so every record's attributes are searched too.
    import logging
    import re

    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="google")
    monkeypatch.setattr(logging.getLogger("google"), "propagate", True)
    provider = provider_for(sandbox)
    try:
        got = retract(provider, [CAROL, DAVE, NOBODY])
        creds = provider.tokens.get(CAROL, (SCOPE_MODIFY,)).result()
    finally:
        provider.close()
    assert status_of(got[CAROL]) == "retracted"
    logged = caplog.text + "".join(repr(vars(r)) for r in caplog.records)
    assert any(r.name.startswith("google.auth") for r in caplog.records)  # logging was on
    info = json.loads(load_settings(sandbox.pack_config()).google.service_account_json)
    key_lines = [line for line in info["private_key"].splitlines() if "-----" not in line]
    # counts, not the strings: a failure's message must not print a secret either
    assert creds.token
    leaks = (logged.count(creds.token), logged.count("ya29."),  # no access token at all
             len(re.findall(JWT, logged)), sum(line in logged for line in key_lines))
    assert leaks == (0, 0, 0, 0)  # (token, any token, signed JWTs, private key lines)
