"""auto_retract's approval answered through StackStorm's API, as `st2 inquiry respond` and a
ChatOps bot answer it: PUT /v1/inquiries/<id> served by st2api's inquiries controller (the app
of `st2api.app.setup_app`, driven in-process with st2tests' TestApp, auth on: an API key per
user in StackStorm's database). The controller checks, in this order, that the inquiry can
still be answered, that the requester is one the inquiry names (approval.users), and that the
response fits the inquiry's schema; then StackStorm's inquiry service resumes the workflow.
"""
import datetime

import pytest

from retraction.ledger import Ledger

pytest_plugins = ["st2_stack"]

MID = "<abc@evil.example>"
RECIPIENTS = ["alice@corp.example", "carol@corp-mail.example"]
AUTO = "email_retraction.auto_retract"


@pytest.fixture(scope="module")
def api(st2):
    """st2api's app over the Stack's database, auth on; user name -> API key."""
    from oslo_config import cfg
    from st2common.models.db.auth import ApiKeyDB, UserDB
    from st2common.persistence.auth import ApiKey, User
    from st2common.util.auth import generate_api_key_and_hash
    from st2tests.api import TestApp
    from tools.st2engine import api as st2api

    cfg.CONF.set_override("enable", True, group="auth")
    cfg.CONF.set_override("enable", False, group="rbac")
    keys = {}
    for name in ("bob", "mallory"):
        User.add_or_update(UserDB(name=name))
        key, key_hash = generate_api_key_and_hash()
        ApiKey.add_or_update(ApiKeyDB(user=name, key_hash=key_hash, enabled=True))
        keys[name] = key
    try:
        yield TestApp(st2api.app()), keys
    finally:
        cfg.CONF.clear_override("enable", group="auth")
        cfg.CONF.clear_override("enable", group="rbac")


@pytest.fixture
def config(st2, st2_tenant, st2_config, tmp_path):
    """Its own ledger; approval past one copy, answered by bob only."""
    st2_config["ledger_url"] = "sqlite:///%s" % (tmp_path / "ledger.db")
    st2_config["approval"].update(threshold=1, users=["bob"])
    st2.reconfigure(st2_config)
    return st2_config


def answer(api, user, inquiry_id, response):
    app, keys = api
    return app.put_json("/v1/inquiries/%s" % inquiry_id,
                        {"id": inquiry_id, "response": response},
                        headers={"St2-Api-Key": keys[user]}, expect_errors=True)


def paused_on_ask(st2):
    when = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    wf = st2.request(AUTO, {"message_id": MID, "recipients": RECIPIENTS,
                            "disposition": "MALICIOUS", "verdict_time": when.isoformat(),
                            "source": "cloudflare", "source_id": "row-1"})
    st2.wait(wf, statuses=["paused"], timeout=120)
    (inquiry,) = st2.descendants(wf, ref="core.ask")
    assert inquiry.status == "pending"
    return wf, str(inquiry.id)


def folders(box):
    return {c["mailbox"]: c["folder"] for c in box.copies(MID) if c["mailbox"] in RECIPIENTS}


def decisions(config):
    with Ledger(config["ledger_url"]) as ledger:
        return ledger.decisions()[0]


def test_only_a_named_user_answers_and_the_answer_must_fit(st2, st2_tenant, config, api):
    wf, inquiry_id = paused_on_ask(st2)

    refused = answer(api, "mallory", inquiry_id, {"approve": True, "analyst": "mallory"})
    assert refused.status_int == 403
    assert "mallory" in refused.json["faultstring"]
    unfit = answer(api, "bob", inquiry_id, {"approve": "yes"})
    assert unfit.status_int == 400
    assert st2.execution(inquiry_id).status == "pending"
    assert st2.execution(wf).status == "paused"
    assert decisions(config) == []
    assert folders(st2_tenant) == {a: "inbox" for a in RECIPIENTS}

    accepted = answer(api, "bob", inquiry_id,
                      {"approve": True, "analyst": "bob", "comment": "headers checked"})
    assert accepted.status_int == 200, accepted.json
    execution = st2.wait(wf)
    assert execution.status == "succeeded", execution.result
    (row,) = decisions(config)
    assert (row["decision"], row["decided_by"], row["comment"]) == (
        "approved", "bob", "headers checked")
    assert folders(st2_tenant) == {a: "trash" for a in RECIPIENTS}
    # answered once: a second answer is refused
    again = answer(api, "bob", inquiry_id, {"approve": False, "analyst": "bob"})
    assert again.status_int == 400


def test_a_rejection_through_the_api_moves_nothing(st2, st2_tenant, config, api):
    wf, inquiry_id = paused_on_ask(st2)
    response = answer(api, "bob", inquiry_id,
                      {"approve": False, "analyst": "bob", "comment": "false positive"})
    assert response.status_int == 200, response.json
    execution = st2.wait(wf)
    assert execution.status == "succeeded", execution.result
    assert execution.result["output"]["why"] == \
        "rejected by bob: false positive; nothing retracted"
    (row,) = decisions(config)
    assert (row["decision"], row["decided_by"]) == ("rejected", "bob")
    assert folders(st2_tenant) == {a: "inbox" for a in RECIPIENTS}
