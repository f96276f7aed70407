"""Expression injection: attacker-chosen text from a phishing email (subject, sender, reporter,
ids, Message-ID) must not be evaluated by StackStorm on its way to a retraction.

StackStorm evaluates text it is handed as data: Orquesta evaluates a workflow's inputs and
evaluates again every string an expression returns (StackStorm/st2#4636, #5956), and every
action execution goes through render_live_params, which renders parameters holding `{{`/`{%`
(retraction.inert has the details). Each payload below goes the whole way: the sandbox's
Cloudflare API -> the real sensors -> the rule's parameters rendered as the enforcer renders them
-> auto_retract walked by tools/st2local, which models Orquesta's input and result evaluation
and StackStorm's live-parameter rendering -> plan -> core.ask -> retract_campaign -> the real
providers against the sandbox tenant -> the ledger. The campaign runs, the copies are
retracted, nothing is evaluated (a gadget that would create a directory does not), and the
approval question shows the text made inert. Each test first shows that the payload is live:
the same text, not made inert, is evaluated by the harness.
"""
import json
import os
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import pytest
import yaml

from conftest import PACK_ROOT
from retraction.automation import ENCODED_BODY, InvalidVerdict, decode_body, verdict_from_body
from retraction.config import load_settings
from retraction.inert import DELIMITERS, delimiters_in, inert_text, inert_values, measured_length
from retraction.ledger import Ledger
from retraction.validation import InvalidRequest, address, free_text, message_id, show
from tools.st2local import ExpressionError, Pack, RuleEngine, Runtime, SensorDrive, evaluate

pytest_plugins = ["sandbox.pytest_plugin"]

MID = "<inj@evil.example>"
RECIPIENTS = ["alice@corp.example", "carol@corp-mail.example"]  # Graph and Gmail
WEBHOOK = {"url": "email_retraction/verdict"}
GADGET = "{{ cycler.__init__.__globals__.os.mkdir(%r) }}"  # Python from a template: a new dir
PAYLOADS = {
    "arithmetic": "{{ 7 * 7 }}",
    "undefined": "Hi {{ x }}",
    "gadget": GADGET,
    "for": "{% for i in range(3) %}{{ i }}{% endfor %}",
    "yaql": "<% 6 * 7 %>",
    "comment": "{% if true %}{# hidden #}{% endif %} seen",
    "secret": "{{ config_context.microsoft.client_secret }}",
}


def no_delimiters(value):
    """No string anywhere in `value` holds a template delimiter."""
    if isinstance(value, str):
        return not delimiters_in(value)
    if isinstance(value, dict):
        return all(no_delimiters(k) and no_delimiters(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(no_delimiters(v) for v in value)
    return True


@pytest.fixture
def marker(tmp_path):
    return str(tmp_path / "pwned")


def payload_text(kind, marker):
    return PAYLOADS[kind] % marker if kind == "gadget" else PAYLOADS[kind]


def assert_live(text, marker):
    """The harness evaluates the raw text (Orquesta's evaluation of a workflow input): it is a
    live payload, and a test that finds it inert has something to find."""
    try:
        value = evaluate(text, {})
    except ExpressionError:
        return  # it breaks the workflow: a denial of retraction
    assert value != text
    if os.path.isdir(marker):
        os.rmdir(marker)  # the gadget ran; the pack must not let it run again


def scenario(message_id=MID, subject="Invoice", sender="billing@evil.example",
             reporter=None):
    """basic.yaml with one message, delivered to alice (Graph) and carol (Gmail) and scanned
    MALICIOUS five minutes ago; with a user report of it when `reporter` is given."""
    with open(os.path.join(PACK_ROOT, "sandbox", "scenarios", "basic.yaml")) as handle:
        data = yaml.safe_load(handle)
    data["messages"] = [{
        "message_id": message_id, "subject": subject, "from": sender,
        "disposition": "MALICIOUS", "scanned_at": "-5m",
        "copies": [{"mailbox": a, "folder": "inbox"} for a in RECIPIENTS],
        "recipients": RECIPIENTS}]
    data["submissions"] = []
    if reporter is not None:
        data["submissions"] = [{
            "submission_id": "s-9", "message_id": message_id, "requested_by": reporter,
            "requested_disposition": "MALICIOUS", "original_disposition": "NONE",
            "requested_ts": "-3m"}]
    return data


@pytest.fixture
def tenant(sandbox, sandbox_load, tmp_path):
    def load(**spec):
        sandbox_load(scenario(**spec))
        config = dict(sandbox.pack_config(), ledger_url="sqlite:///%s" % (tmp_path / "l.db"))
        config["approval"] = dict(config.get("approval") or {}, threshold=1)
        return config
    load.box = sandbox
    load.ledger_url = "sqlite:///%s" % (tmp_path / "l.db")
    return load


def folders(box, message_id=MID):
    out = {}
    for address_ in RECIPIENTS:
        view = box.mailbox_view(address_)
        out[address_] = [c["folder"] for c in view["copies"] if c["message_id"] == message_id]
    return out


class Analyst(object):
    """Answers every approval inquiry with approve=true and keeps what it was asked."""

    def __init__(self):
        self.questions = []

    def __call__(self, schema):
        self.questions.append(schema["description"])
        return {"approve": True, "analyst": "bob"}


def the_run(url, run_id):
    with Ledger(url) as ledger:
        return ledger.run(run_id), ledger.outcomes_for_run(run_id)


def assert_retracted_inertly(test_tenant, runtime, status, output, analyst, marker):
    """The campaign ran and retracted both copies; nothing was evaluated anywhere."""
    assert status == "succeeded", output
    assert output["run_id"], output
    assert folders(test_tenant.box) == {a: ["trash"] for a in RECIPIENTS}
    assert not os.path.exists(marker)
    (question,) = analyst.questions
    assert no_delimiters(question)
    run, outcomes = the_run(test_tenant.ledger_url, output["run_id"])
    assert sorted((o.recipient, o.status) for o in outcomes) == [
        (a, "retracted") for a in sorted(RECIPIENTS)]
    assert no_delimiters(run["comment"]) and no_delimiters(run["requested_by"])
    # every execution StackStorm would have requested got inert parameters
    for ref, params, _ in runtime.trail:
        assert no_delimiters(params), (ref, params)
    secret = test_tenant.box.pack_config()["microsoft"]["client_secret"]
    assert secret not in repr(runtime.trail) and secret not in question
    return question, run


# -- the sensors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_a_verdict_whose_subject_and_sender_carry_an_expression(tenant, marker, kind):
    text = payload_text(kind, marker)
    assert_live(text, marker)
    sender = "%s <mallory@evil.example>" % text
    config = tenant(subject=text, sender=sender)
    dispatched = SensorDrive(config).poll()
    ((trigger, payload),) = [(t, p) for t, p in dispatched if p["message_id"] == MID]
    assert trigger == "email_retraction.verdict"
    assert (payload["subject"], payload["sender"]) == (inert_text(text), inert_text(sender))

    analyst = Analyst()
    runtime = Runtime(config, answer=analyst)
    (enforcement,) = RuleEngine(runtime).dispatch(trigger, payload)
    assert enforcement.failure_reason is None and enforcement.problems == []
    assert enforcement.params["subject"] == inert_text(text)
    question, run = assert_retracted_inertly(tenant, runtime, enforcement.status,
                                             enforcement.result["output"], analyst, marker)
    # the analyst reads what the attacker wrote, made inert
    assert "%s from %s" % (show(inert_text(text)), show(inert_text(sender))) in question
    assert run["requested_by"] == "cloudflare"


def test_a_user_report_whose_reporter_and_subject_carry_expressions(tenant, marker):
    reporter = "{{ 7 * 7 }}@{% if true %}x{% endif %}"
    subject = GADGET % marker
    assert_live(subject, marker)
    config = tenant(subject=subject, reporter=reporter)
    drive = SensorDrive(config)
    drive.poll()  # the verdict (handled by another rule) and nothing confirmed yet
    tenant.box.confirm_submission("s-9", "MALICIOUS")
    found = [(t, p) for t, p in drive.poll() if t == "email_retraction.phish_submission"]
    ((trigger, payload),) = found
    assert payload["reporter"] == inert_text(reporter)
    assert payload["subject"] == inert_text(subject)
    analyst = Analyst()
    runtime = Runtime(config, answer=analyst)
    (enforcement,) = RuleEngine(runtime).dispatch(trigger, payload)
    assert enforcement.failure_reason is None, enforcement.failure_reason
    question, run = assert_retracted_inertly(tenant, runtime, enforcement.status,
                                             enforcement.result["output"], analyst, marker)
    assert run["requested_by"] == inert_text(reporter)  # the reporter, readable
    assert "user report s-9" in run["comment"]


def test_a_message_id_holding_yaql_delimiters_is_refused_before_any_workflow(tenant):
    """`<%x@evil.example%>` is a valid RFC 5322 msg-id and a YAQL expression: refused by
    the sensor (logged, naming the field) and by every action; nothing moves."""
    hostile = "<%x@evil.example%>"
    with pytest.raises(ExpressionError):
        evaluate(hostile, {})  # what Orquesta would make of it
    config = tenant(message_id=hostile)
    drive = SensorDrive(config)
    assert [p for t, p in drive.poll() if p["message_id"] == hostile] == []
    (_, _, service) = drive.sensors[0]
    warnings = [call.args[0] % call.args[1:] for call in
                service.get_logger("VerdictSensor").warning.call_args_list]
    assert any("message_id contains the template delimiters '< %' and '% >'" in w
               for w in warnings), warnings
    before = tenant.box.counters.snapshot()
    status, result = Runtime(config).run_action("email_retraction.retract", {
        "message_id": hostile, "recipients": RECIPIENTS, "destination": "trash"})
    assert status == "failed"  # the action raises: StackStorm shows the error, named
    assert result["stderr"].startswith(
        "InvalidRequest: invalid message_id: contains the template delimiters '< %' and '% >'")
    assert no_delimiters(result)
    assert tenant.box.counters.snapshot() == before  # no provider was called
    assert folders(tenant.box, hostile) == {a: ["inbox"] for a in RECIPIENTS}


# -- the webhook ---------------------------------------------------------------------------------

class PackWithEncodedWebhookBody(Pack):
    """This pack with the webhook rule passing the body percent-encoded
    (`{"percent_encoded_json": "{{ trigger.body | tojson | urlencode }}"}`), the change
    rules/webhook_verdict.yaml needs: as an object, the body is intake_verdict's input, and
    Orquesta evaluates it before validate_verdict can check it."""

    BODY = '{"%s": "{{ trigger.body | tojson | urlencode }}"}' % ENCODED_BODY

    def rules(self):
        found = super(PackWithEncodedWebhookBody, self).rules()
        for rule in found:
            if rule["name"] == "webhook_verdict":
                rule["action"]["parameters"]["body"] = self.BODY
        return found


def webhook_body(text):
    return {"message_id": MID, "recipients": RECIPIENTS, "disposition": "MALICIOUS",
            "verdict_time": (datetime.now(timezone.utc) - timedelta(minutes=5)).isoformat(),
            "source": "siem", "source_id": text, "sender": text, "subject": text}


def post(config, body, pack, analyst=None):
    runtime = Runtime(config, pack=pack, answer=analyst)
    (enforcement,) = RuleEngine(runtime).dispatch("core.st2.webhook",
                                                  {"body": body, "headers": {}}, WEBHOOK)
    assert enforcement.failure_reason is None and enforcement.problems == []
    return runtime, enforcement


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_a_webhook_verdict_carrying_an_expression(tenant, marker, kind):
    text = payload_text(kind, marker)
    assert_live(text, marker)
    config = tenant()
    analyst = Analyst()
    runtime, enforcement = post(config, webhook_body(text), PackWithEncodedWebhookBody(),
                                analyst)
    output = enforcement.result["output"]
    assert output["verdict"]["subject"] == inert_text(text)
    question, run = assert_retracted_inertly(tenant, runtime, enforcement.status,
                                             output["auto_retract"], analyst, marker)
    assert "%s from %s" % (show(inert_text(text)), show(inert_text(text))) in question
    assert run["requested_by"] == "siem"
    assert "(%s)" % inert_text(text) in run["comment"]  # the source's id, inert


def test_a_webhook_verdict_with_hostile_ids_is_refused_naming_the_fields(tenant, marker):
    config = tenant()
    body = dict(webhook_body("x"), message_id="<%x@evil.example%>",
                recipients=["alice@corp.example", "{{7*7}}@corp.example"])
    body[GADGET % marker] = "a key the sender chose"
    runtime, enforcement = post(config, body, PackWithEncodedWebhookBody())
    assert enforcement.status == "failed"
    why = enforcement.result["output"]["why"]
    assert "body.message_id contains the template delimiters '< %' and '% >'" in why
    assert "body.recipients contains the template delimiters '{ {' and '} }'" in why
    assert "is not a field of a verdict" in why
    assert no_delimiters(enforcement.result) and not os.path.exists(marker)
    assert [ref for ref, _, _ in runtime.trail] == [
        "email_retraction.validate_verdict", "email_retraction.intake_verdict"]
    assert folders(tenant.box) == {a: ["inbox"] for a in RECIPIENTS}


def test_the_webhook_rule_keeps_the_body_from_orquesta(tenant, marker):
    config = tenant()
    runtime, enforcement = post(config, webhook_body(GADGET % marker), Pack.default(),
                                Analyst())
    assert not os.path.exists(marker)
    assert enforcement.status == "succeeded", enforcement.result


# -- the pieces ----------------------------------------------------------------------------------

def test_inert_text_breaks_every_delimiter_keeps_the_text_and_is_idempotent():
    for raw, inert in [
            ("{{ 7 * 7 }}", "{ { 7 * 7 } }"), ("{%- if x -%}", "{ %- if x -% }"),
            ("{#c#}", "{ #c# }"), ("<%x@evil.example%>", "< %x@evil.example% >"),
            ("{{{x}}}", "{ { {x} } }"), ("<%>", "< % >"),
            ("50% > 10 {a} <b>", "50% > 10 {a} <b>"), ("{ {", "{ {")]:
        assert inert_text(raw) == inert and inert_text(inert) == inert
        assert delimiters_in(inert) == [] and measured_length(inert) == measured_length(raw)
    everything = "".join(DELIMITERS) + " ".join(DELIMITERS)
    assert delimiters_in(inert_text(everything)) == []
    assert inert_values({"{{k}}": ["<%v%>", 1, None]}) == {"{ {k} }": ["< %v% >", 1, None]}
    assert inert_text(None) is None and inert_text(7) == 7


def test_ids_and_addresses_refuse_delimiters_free_text_is_made_inert():
    for value in ("<%x@evil.example%>", "%x@evil.example%", "&lt;%x@evil.example%&gt;"):
        with pytest.raises(InvalidRequest) as caught:
            message_id(value)
        assert caught.value.field == "message_id"
        assert "template delimiters '< %' and '% >'" in caught.value.problem
    assert message_id("<a%b@evil.example>") == "<a%b@evil.example>"  # `%` alone is atext
    for value, why in (("a{{b@corp.example", "template delimiter '{ {'"),
                       ("a#}@corp.example", "template delimiter '# }'"),
                       ("a%b@corp.example", "contains a '%'")):
        with pytest.raises(InvalidRequest, match=why) as caught:
            address(value)
        assert caught.value.field == "recipients" and no_delimiters(str(caught.value))
    # free text: inert, its limit not counting the spaces that made it inert
    assert free_text(" Re: {{invoice}} ", "comment", 15) == "Re: { {invoice} }"
    assert free_text("{{invoice}}", "comment", 11) == "{ {invoice} }"
    with pytest.raises(InvalidRequest, match="longer than 10"):
        free_text("{{invoice}}", "comment", 10)
    once = free_text("{{x}}" * 40, "c", 200)  # 200 characters, more once inert
    assert len(once) > 200 and free_text(once, "c", 200) == once
    # an error message never carries a live expression
    with pytest.raises(InvalidRequest) as caught:
        message_id("{{ 7 * 7 }}")
    assert no_delimiters(str(caught.value))


def test_the_webhook_body_decodes_and_refuses_what_is_not_encoded_json():
    settings = load_settings({"ledger_url": ""})
    body = webhook_body("{{ x }}")
    encoded = {ENCODED_BODY: quote(json.dumps(body))}
    assert delimiters_in(encoded[ENCODED_BODY]) == []
    assert decode_body(encoded) == body and decode_body(body) is body
    assert verdict_from_body(encoded, settings) == verdict_from_body(body, settings)
    assert verdict_from_body(encoded, settings)["subject"] == "{ { x } }"
    for bad, problem in (({ENCODED_BODY: 5}, "must be a string"),
                         ({ENCODED_BODY: "%7Bnot json"}, "is not URL-quoted JSON"),
                         ({ENCODED_BODY: "%FF"}, "is not URL-quoted JSON")):
        with pytest.raises(InvalidVerdict, match=problem):
            verdict_from_body(bad, settings)


def test_the_plan_action_result_and_its_errors_are_inert(tenant):
    config = tenant()
    runtime = Runtime(config)
    status, result = runtime.run_action("email_retraction.plan", {
        "message_id": MID, "recipients": RECIPIENTS, "disposition": "MALICIOUS",
        "verdict_time": "2024-05-01T12:00:00Z", "source": "cloudflare",
        "source_id": "{{ x }}", "subject": "{% y %}", "sender": "<% z %>",
        "comment": "{# c #}", "requested_by": "{{ r }}"})
    assert status == "succeeded" and no_delimiters(result["result"])
    assert result["result"]["requested_by"] == "{ { r } }"
    status, result = runtime.run_action("email_retraction.plan", {
        "message_id": MID, "recipients": ["{{ x }}@corp.example"], "disposition": "MALICIOUS",
        "verdict_time": "2024-05-01T12:00:00Z", "source": "cloudflare"})
    assert status == "failed" and result["result"]["field"] == "recipients"
    assert no_delimiters(result["result"])
