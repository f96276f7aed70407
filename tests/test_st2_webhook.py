"""The webhook through StackStorm's own API: a POST to /v1/webhooks/email_retraction/verdict
served by st2api's webhook controller (the app of `st2api.app.setup_app`, driven in-process
with st2tests' TestApp, as StackStorm's own API tests drive it), with authentication ON (an API
key created in StackStorm's database). The trigger instance the controller dispatches goes
through the Stack's in-process delivery to the rules engine, the rule webhook_verdict, and on
to intake_verdict -> validate_verdict -> auto_retract -> retract_campaign, against the sandbox.

Set-up, as StackStorm's API tests do it: the database (the Stack's mongomock) is connected
before `st2api.controllers.v1.webhooks` is imported (it registers the webhook trigger types
and starts a trigger watcher when imported). The watcher's RabbitMQ consumer has no broker
here (the Stack drops trigger CUD events as StackStorm's unit tests do), so
tools/st2engine/api.py stops it and loads the hooks from the database with the watcher's own
`_load_triggers_from_db`.

What StackStorm showed: the hook is `email_retraction/verdict` (the rule's `url`), served at
/api/v1/webhooks/email_retraction/verdict; `retraction/verdict` is not registered (404).
StackStorm removes St2-Api-Key / X-Auth-Token from the headers it puts in the trigger
instance, so the key does not reach the database or the rule.
"""
import json
import os
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from retraction.automation import decode_body
from retraction.inert import delimiters_in, inert_text
from st2_stack import Since, folders_of, ledger_path
from retraction.ledger import Ledger

pytest_plugins = ["st2_stack"]

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOOK = "/v1/webhooks/email_retraction/verdict"
MID = "<abc@evil.example>"
RECIPIENTS = ["alice@corp.example", "carol@corp-mail.example"]  # Graph and Gmail
DEADLINE = 300


@pytest.fixture(scope="module")
def api(st2):
    """st2api's app over the Stack's database, auth on; (app, API key) of user stanley."""
    from oslo_config import cfg
    from st2common.models.db.auth import ApiKeyDB, UserDB
    from st2common.persistence.auth import ApiKey, User
    from st2common.util.auth import generate_api_key_and_hash

    cfg.CONF.set_override("enable", True, group="auth")
    cfg.CONF.set_override("enable", False, group="rbac")
    from st2tests.api import TestApp
    from tools.st2engine import api as st2api

    User.add_or_update(UserDB(name="stanley"))
    key, key_hash = generate_api_key_and_hash()
    ApiKey.add_or_update(ApiKeyDB(user="stanley", key_hash=key_hash, enabled=True))
    app = TestApp(st2api.app())
    try:
        yield app, key
    finally:
        cfg.CONF.clear_override("enable", group="auth")
        cfg.CONF.clear_override("enable", group="rbac")


def post(api, path, body, key=True, **kwargs):
    app, api_key = api
    headers = {"St2-Api-Key": api_key} if key else {}
    headers["X-Verdict-Source"] = "sublime"
    return app.post_json(path, body, headers=headers, expect_errors=True, **kwargs)


def verdict(**fields):
    body = {"message_id": MID, "recipients": RECIPIENTS, "disposition": "MALICIOUS",
            "verdict_time": (datetime.now(timezone.utc) - timedelta(minutes=5)).isoformat(),
            "source": "sublime", "source_id": "sb-1", "sender": "billing@evil.example",
            "subject": "Invoice {{ 6*7 }} <% $.x %>"}
    body.update(fields)
    return body


def enforced(st2, instance, rule_ref):
    (enforcement,) = [e for e in st2.enforcements() if e.trigger_instance_id == str(instance.id)]
    assert enforcement.rule.ref == rule_ref
    assert (enforcement.status, enforcement.failure_reason) == ("succeeded", None)
    return st2.execution(enforcement.execution_id)


def provider_calls(box):
    """Requests the sandbox served, per route, but its control API's (the test's own)."""
    return {route: count for route, count in box.counters()["routes"].items()
            if not route.startswith("control.")}


def folders(box, message_id=MID):
    return folders_of(box, message_id, RECIPIENTS)


def test_a_good_verdict_is_retracted(st2, st2_tenant, api):
    since = Since(st2)
    body = verdict()
    response = post(api, HOOK, body)
    assert response.status_int == 202, response.text
    assert response.json == body  # StackStorm echoes the body

    (instance,) = since.processed(1)
    assert instance.trigger.startswith("core.")  # the webhook trigger of the rule's url
    payload = dict(instance.payload)
    assert payload["body"] == body
    assert payload["headers"]["X-Verdict-Source"] == "sublime"
    _, key = api
    assert key not in json.dumps(payload) and "St2-Api-Key" not in payload["headers"]

    intake = enforced(st2, instance, "email_retraction.webhook_verdict")
    assert intake.action["ref"] == "email_retraction.intake_verdict"
    params = dict(intake.parameters)
    assert list(params) == ["body"] and list(params["body"]) == ["percent_encoded_json"]
    encoded = params["body"]["percent_encoded_json"]
    assert delimiters_in(encoded) == [] and "{" not in encoded  # nothing for Orquesta
    assert decode_body(params["body"]) == body  # lossless

    intake = st2.wait(str(intake.id), timeout=DEADLINE)
    assert intake.status == "succeeded", intake.result
    (validate,) = st2.children(str(intake.id))[:1]
    assert validate.action["ref"] == "email_retraction.validate_verdict"
    assert dict(validate.parameters) == params  # Orquesta handed the body on unevaluated
    (auto,) = st2.descendants(str(intake.id), "email_retraction.auto_retract")
    expected = {"message_id": MID, "recipients": RECIPIENTS, "disposition": "MALICIOUS",
                "retraction_trigger": "disposition", "source": "sublime", "source_id": "sb-1",
                "sender": "billing@evil.example", "subject": inert_text(body["subject"]),
                "recipients_count": 0}
    assert {k: auto.parameters.get(k) for k in expected} == expected
    assert auto.status == "succeeded", auto.result
    output = intake.result["output"]
    assert output["verdict"]["subject"] == "Invoice { { 6*7 } } < % $.x % >"
    run_id = output["auto_retract"]["run_id"]
    assert output["auto_retract"]["metric_record"]["retracted"] == 2

    assert folders(st2_tenant) == {a: ["trash"] for a in RECIPIENTS}
    with Ledger("sqlite:///%s" % ledger_path(st2.current_config)) as ledger:
        run = ledger.run(run_id)
        outcomes = ledger.outcomes_for_run(run_id)
    assert sorted((o.recipient, o.status, o.trigger, o.mode) for o in outcomes) == [
        (a, "retracted", "disposition", "auto") for a in sorted(RECIPIENTS)]
    assert run["requested_by"] == "sublime"
    assert "sublime verdict MALICIOUS (sb-1)" in run["comment"]


@pytest.mark.parametrize("body, field", [
    (verdict(recipients=[], disposition="EVIL"), "body.disposition"),
    ({k: v for k, v in verdict().items() if k != "recipients"}, "body.recipients"),
    (verdict(message_id="<%x@evil.example%>"), "body.message_id"),
    (verdict(unexpected="x"), "body.unexpected"),
    ([verdict()], "body"),
], ids=["bad-disposition", "no-recipients", "yaql-message-id", "unknown-field", "not-object"])
def test_an_invalid_body_is_refused_naming_the_field_and_nothing_moves(
        st2, st2_tenant, api, body, field):
    since = Since(st2)
    before = provider_calls(st2_tenant)
    response = post(api, HOOK, body)
    assert response.status_int == 202, response.text  # StackStorm accepts any JSON

    (instance,) = since.processed(1)
    intake = enforced(st2, instance, "email_retraction.webhook_verdict")
    intake = st2.wait(str(intake.id), timeout=DEADLINE)
    assert intake.status == "failed"
    (validate,) = st2.children(str(intake.id))[:1]
    assert validate.action["ref"] == "email_retraction.validate_verdict"
    assert validate.status == "failed"
    refusal = st2.result(validate)
    assert refusal["field"] == field, refusal
    why = intake.result["output"]["why"]
    assert why.startswith("invalid verdict body: %s " % field), why
    assert why.endswith("Nothing was retracted.") and not delimiters_in(why)
    assert since.executions("email_retraction.auto_retract") == []
    assert since.executions("email_retraction.retract") == []
    assert folders(st2_tenant) == {a: ["inbox"] for a in RECIPIENTS}
    assert provider_calls(st2_tenant) == before  # no provider (nor Cloudflare) was called


def test_without_credentials_the_api_refuses_and_nothing_is_dispatched(st2, api):
    since = Since(st2)
    response = post(api, HOOK, verdict(), key=False)
    assert response.status_int == 401, response.text
    assert "API key" in response.json["faultstring"] or "token" in response.json["faultstring"]
    assert since.trigger_instances() == []


def test_only_the_rules_url_is_a_hook(st2, api):
    since = Since(st2)
    response = post(api, "/v1/webhooks/retraction/verdict", verdict())
    assert response.status_int == 404, response.text
    assert "retraction/verdict not registered" in response.json["faultstring"]
    assert since.trigger_instances() == []


def test_the_st2_hook_reaches_the_verdict_rule_inert(st2, st2_tenant, api):
    """/v1/webhooks/st2 dispatches any trigger with any payload the trigger type accepts: a
    caller can hand auto_retract_on_verdict what the sensor never would. A Message-ID that
    Orquesta would evaluate into `<ab@evil.example>` is handed on inert and refused by plan;
    the decoy there stays. A payload the trigger type refuses is a 400 naming the field."""
    decoy = "<ab@evil.example>"
    with open(os.path.join(PACK_ROOT, "sandbox", "scenarios", "basic.yaml")) as handle:
        data = yaml.safe_load(handle)
    data["messages"].append({"message_id": decoy, "subject": "decoy", "from": "x@evil.example",
                             "copies": [{"mailbox": "alice@corp.example", "folder": "inbox"}]})
    st2_tenant.load_scenario(data)
    payload = {"message_id": "<a{{''}}b@evil.example>", "recipients": ["alice@corp.example"],
               "disposition": "MALICIOUS", "verdict_time": "2026-12-08T00:00:00Z",
               "source": "cloudflare", "source_id": "x"}
    since = Since(st2)
    response = post(api, "/v1/webhooks/st2", {"trigger": "email_retraction.verdict",
                                              "payload": payload})
    assert response.status_int == 202, response.text
    (instance,) = since.processed(1)
    auto = enforced(st2, instance, "email_retraction.auto_retract_on_verdict")
    assert auto.parameters["message_id"] == "<a{ {''} }b@evil.example>"
    auto = st2.wait(str(auto.id), timeout=DEADLINE)
    assert auto.status == "failed"
    assert auto.result["output"]["why"].startswith("invalid message_id:")
    assert since.executions("email_retraction.retract") == []
    assert folders(st2_tenant, decoy)["alice@corp.example"] == ["inbox"]

    bad = dict(payload, recipients=[])
    response = post(api, "/v1/webhooks/st2", {"trigger": "email_retraction.verdict",
                                              "payload": bad})
    assert response.status_int == 400, response.text
    assert "recipients" in response.json["faultstring"]
    assert len(since.trigger_instances()) == 1
