"""Expression injection: attacker-chosen text from a phishing email (subject, sender, reporter,
ids, Message-ID) must not be evaluated by StackStorm on its way to a retraction.

StackStorm evaluates text it is handed as data: Orquesta evaluates a workflow's inputs and
evaluates again every string an expression returns (StackStorm/st2#4636, #5956), and every
action execution a rule or a workflow requests goes through `render_live_params`, which
renders parameters holding `{{`/`{%` with the pack config (`config_context`) and the datastore
in scope (retraction.inert has the details). Each payload below goes the whole way on
StackStorm's own code (tools/st2engine): the sandbox's Cloudflare API -> the real sensors in
StackStorm's SensorService -> StackStorm's trigger dispatcher and rules engine (the enforcer
renders the rule's parameters) -> auto_retract run by StackStorm's workflow engine (Orquesta)
-> plan -> core.ask, answered through StackStorm's inquiry service -> record_decision ->
retract_campaign -> the real providers against the sandbox tenant -> the ledger. The campaign
runs, the copies are retracted, nothing is evaluated, and the approval question shows the text
made inert. Each test first shows that the payload is live: the same text, not made inert, is
evaluated or refused by Orquesta's own evaluator (and the secret one is rendered by
StackStorm's render_live_params into the pack's client secret).

Found running StackStorm's code: Orquesta 1.6 evaluates Jinja in a sandbox, so the gadget
`{{ cycler.__init__.__globals__.os.mkdir(...) }}` raises SecurityError instead of running
Python (as retraction.inert's docstring says it does): still a workflow that fails, that is,
no retraction.
"""
import json
import logging
import os
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import eventlet
import pytest
import yaml
from orquesta.expressions import base as orquesta_expressions

from retraction.automation import ENCODED_BODY, InvalidVerdict, decode_body, verdict_from_body
from retraction.config import load_settings
from retraction.inert import DELIMITERS, delimiters_in, inert_text, inert_values, measured_length
from retraction.ledger import Ledger
from retraction.validation import InvalidRequest, address, free_text, message_id, show
from st2_stack import Since, folders_of, ledger_path
from submission_sensor import SubmissionSensor
from verdict_sensor import VerdictSensor

pytest_plugins = ["st2_stack"]

PACK = "email_retraction"
PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MID = "<inj@evil.example>"
RECIPIENTS = ["alice@corp.example", "carol@corp-mail.example"]  # Graph and Gmail
WEBHOOK = {"type": "core.st2.webhook", "parameters": {"url": "email_retraction/verdict"}}
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
DEADLINE = 300


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


def assert_live(text, marker, st2):
    """Orquesta's evaluator (what it does with a workflow input) evaluates or refuses the raw
    text: it is a live payload, and a test that finds it inert has something to find. Text
    that reads the pack config is rendered by StackStorm's render_live_params into the secret."""
    from orquesta.exceptions import ExpressionEvaluationException
    from st2common.util import param as param_utils
    try:
        value = orquesta_expressions.evaluate(text, {})
    except ExpressionEvaluationException:
        pass  # it breaks the workflow: a denial of retraction
    else:
        assert value != text
    assert not os.path.exists(marker)  # Orquesta's Jinja is sandboxed (SecurityError)
    if "config_context" in text:
        rendered = param_utils.render_live_params(
            {}, {"subject": {"type": "string"}}, {"subject": text},
            {"user": "stanley", "pack": PACK})
        assert rendered["subject"] == st2.current_config["microsoft"]["client_secret"]


def scenario(messages, submissions=()):
    """basic.yaml with these messages (message_id, subject, sender), each delivered to alice
    (Graph) and carol (Gmail) and scanned MALICIOUS five minutes ago."""
    with open(os.path.join(PACK_ROOT, "sandbox", "scenarios", "basic.yaml")) as handle:
        data = yaml.safe_load(handle)
    data["messages"] = [{
        "message_id": mid, "subject": subject, "from": sender, "disposition": disposition,
        "scanned_at": "-5m", "copies": [{"mailbox": a, "folder": "inbox"} for a in RECIPIENTS],
        "recipients": RECIPIENTS} for mid, subject, sender, disposition in messages]
    data["submissions"] = list(submissions)
    return data


def with_approval(st2, config):
    """Every run over one copy asks an analyst first (core.ask)."""
    config["approval"] = dict(config.get("approval") or {}, threshold=1)
    st2.reconfigure(config)


def folders(box, message_id=MID):
    return folders_of(box, message_id, RECIPIENTS)


def enforced(st2, instance):
    """The execution the rule's enforcement requested (the enforcement succeeded)."""
    (enforcement,) = [e for e in st2.enforcements() if e.trigger_instance_id == str(instance.id)]
    assert (enforcement.status, enforcement.failure_reason) == ("succeeded", None)
    return st2.execution(enforcement.execution_id)


def approve_all(st2, workflows):
    """Answers the approval inquiry of each auto_retract (id) as analyst bob, through
    StackStorm's inquiry service; returns {auto_retract id: the question it asked}."""
    questions = {}
    for inquiry in st2.pending_inquiries(count=len(workflows)):
        assert inquiry.parent in workflows, inquiry.parent
        questions[inquiry.parent] = inquiry.parameters["schema"]["description"]
        # StackStorm resumes the workflow only if it is paused when the answer comes
        # (inquiry.respond); answered while still pausing, it stays paused for good.
        st2.wait(inquiry.parent, timeout=DEADLINE, statuses=["paused"])
        st2.respond(inquiry, {"approve": True, "analyst": "bob"})
    assert sorted(questions) == sorted(workflows)
    return questions


def tree(st2, root_id):
    return [st2.execution(root_id)] + st2.descendants(root_id)


def assert_retracted_inertly(st2, box, root_id, auto_id, question, marker, message_id=MID):
    """The campaign ran and retracted both copies; nothing was evaluated anywhere."""
    auto = st2.wait(auto_id, timeout=DEADLINE)
    output = auto.result["output"]
    assert auto.status == "succeeded", auto.result
    assert output["run_id"], output
    assert folders(box, message_id) == {a: ["trash"] for a in RECIPIENTS}
    assert not os.path.exists(marker)
    assert no_delimiters(question)
    with Ledger("sqlite:///%s" % ledger_path(st2.current_config)) as ledger:
        run, outcomes = ledger.run(output["run_id"]), ledger.outcomes_for_run(output["run_id"])
    assert sorted((o.recipient, o.status) for o in outcomes) == [
        (a, "retracted") for a in sorted(RECIPIENTS)]
    assert no_delimiters(run["comment"]) and no_delimiters(run["requested_by"])
    # every execution StackStorm requested got inert parameters
    executions = tree(st2, root_id)
    refs = [e.action["ref"] for e in executions]
    for ref in ("email_retraction.plan", "core.ask", "email_retraction.record_decision",
                "email_retraction.retract_campaign", "email_retraction.retract"):
        assert ref in refs, refs
    for execution in executions:
        params = dict(execution.parameters)
        assert no_delimiters(params), (execution.action["ref"], params)
    secret = st2.current_config["microsoft"]["client_secret"]
    trail = repr([(e.action["ref"], dict(e.parameters), e.result) for e in executions])
    assert secret not in trail and secret not in question
    return run


# -- the sensors ---------------------------------------------------------------------------------

# (subject, sender) kinds per message: every kind goes in as one or the other.
SENSOR_PAIRS = [("arithmetic", "undefined"), ("gadget", "for"), ("yaql", "comment"),
                ("secret", "arithmetic")]


def test_verdicts_whose_subjects_and_senders_carry_expressions(
        st2, st2_tenant, st2_config, marker):
    texts = {kind: payload_text(kind, marker) for kind in PAYLOADS}
    for text in texts.values():
        assert_live(text, marker, st2)
    with_approval(st2, st2_config)
    cases = {"<inj-%d@evil.example>" % n: (texts[subject], "%s <mallory@evil.example>"
                                           % texts[sender])
             for n, (subject, sender) in enumerate(SENSOR_PAIRS)}
    st2_tenant.load_scenario(scenario([(mid, subject, sender, "MALICIOUS")
                                       for mid, (subject, sender) in cases.items()]))
    since = Since(st2)
    st2.sensor(VerdictSensor).poll()
    runs = {}
    for instance in since.processed(len(cases)):
        payload = instance.payload
        subject, sender = cases[payload["message_id"]]
        assert instance.trigger == "email_retraction.verdict"
        assert (payload["subject"], payload["sender"]) == (inert_text(subject),
                                                           inert_text(sender))
        auto = enforced(st2, instance)
        assert auto.parameters["subject"] == inert_text(subject)
        assert auto.parameters["sender"] == inert_text(sender)
        runs[str(auto.id)] = payload["message_id"]

    questions = approve_all(st2, runs)
    for auto_id, mid in runs.items():
        subject, sender = cases[mid]
        run = assert_retracted_inertly(st2, st2_tenant, auto_id, auto_id, questions[auto_id],
                                       marker, mid)
        # the analyst reads what the attacker wrote, made inert
        assert "%s from %s" % (show(inert_text(subject)), show(inert_text(sender))) \
            in questions[auto_id]
        assert run["requested_by"] == "cloudflare"


def test_a_user_report_whose_reporter_and_subject_carry_expressions(
        st2, st2_tenant, st2_config, marker):
    reporter = "{{ 7 * 7 }}@{% if true %}x{% endif %}"
    subject = GADGET % marker
    assert_live(subject, marker, st2)
    assert_live(reporter, marker, st2)
    with_approval(st2, st2_config)
    st2_tenant.load_scenario(scenario(
        [(MID, subject, "billing@evil.example", "MALICIOUS")],
        submissions=[{"submission_id": "s-9", "message_id": MID, "requested_by": reporter,
                      "requested_disposition": "MALICIOUS", "original_disposition": "NONE",
                      "requested_ts": "-3m"}]))
    since = Since(st2)
    sensor = st2.sensor(SubmissionSensor)
    sensor.poll()  # nothing confirmed yet
    st2_tenant.control("POST", "/submissions/s-9/confirm", {"disposition": "MALICIOUS"})
    sensor.poll()
    (instance,) = since.processed(1)
    assert instance.trigger == "email_retraction.phish_submission"
    assert instance.payload["reporter"] == inert_text(reporter)
    assert instance.payload["subject"] == inert_text(subject)
    auto = enforced(st2, instance)
    assert auto.parameters["requested_by"] == inert_text(reporter)
    questions = approve_all(st2, [str(auto.id)])
    run = assert_retracted_inertly(st2, st2_tenant, str(auto.id), str(auto.id),
                                   questions[str(auto.id)], marker)
    assert run["requested_by"] == inert_text(reporter)  # the reporter, readable
    assert "user report s-9" in run["comment"]


def test_a_message_id_holding_yaql_delimiters_is_refused_before_any_workflow(
        st2, st2_tenant, st2_config):
    """`<%x@evil.example%>` is a valid RFC 5322 msg-id and a YAQL expression: refused by
    the sensor (logged, naming the field) and by every action; nothing moves."""
    from orquesta.exceptions import ExpressionEvaluationException
    hostile = "<%x@evil.example%>"
    with pytest.raises(ExpressionEvaluationException):
        orquesta_expressions.evaluate(hostile, {})  # what Orquesta would make of it
    # a clean verdict beside it, which policy leaves alone: the one dispatch there is
    st2_config["auto_retract"] = dict(st2_config["auto_retract"], dispositions=dict(
        st2_config["auto_retract"]["dispositions"], SUSPICIOUS="none"))
    st2.reconfigure(st2_config)
    st2_tenant.load_scenario(scenario([(hostile, "Invoice", "a@evil.example", "MALICIOUS"),
                                       ("<ok@evil.example>", "ok", "b@evil.example",
                                        "SUSPICIOUS")]))
    lines = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("st2.%s.sensor" % PACK)
    logger.addHandler(handler)
    since = Since(st2)
    try:
        st2.sensor(VerdictSensor).poll()
    finally:
        logger.removeHandler(handler)
    (instance,) = since.processed(1)
    assert instance.payload["message_id"] == "<ok@evil.example>"
    assert any("message_id contains the template delimiters '< %' and '% >'" in line
               for line in lines), lines
    auto = st2.wait(str(enforced(st2, instance).id), timeout=DEADLINE)
    assert auto.status == "succeeded" and auto.result["output"]["why"].startswith(
        "no action by policy")

    before = st2_tenant.counters()["routes"]
    execution = st2.run("email_retraction.retract", {
        "message_id": hostile, "recipients": RECIPIENTS, "destination": "trash"})
    assert execution.status == "failed"  # the action raises: StackStorm shows the error, named
    last_line = execution.result["stderr"].strip().splitlines()[-1]
    assert last_line.startswith(
        "retraction.validation.InvalidRequest: invalid message_id: contains the template "
        "delimiters '< %' and '% >'"), execution.result["stderr"][-500:]
    assert no_delimiters(execution.result)
    after = st2_tenant.counters()["routes"]
    assert {k: v for k, v in after.items() if not k.startswith("control.")} == {
        k: v for k, v in before.items() if not k.startswith("control.")}  # no provider call
    assert folders(st2_tenant, hostile) == {a: ["inbox"] for a in RECIPIENTS}


# -- the webhook ---------------------------------------------------------------------------------

def webhook_body(message_id, subject, sender, source_id):
    return {"message_id": message_id, "recipients": RECIPIENTS, "disposition": "MALICIOUS",
            "verdict_time": (datetime.now(timezone.utc) - timedelta(minutes=5)).isoformat(),
            "source": "siem", "source_id": source_id, "sender": sender, "subject": subject}


def post(st2, body):
    """What st2api's webhook controller dispatches for a POST to the rule's url (the API
    itself: tests/test_st2_webhook.py); the intake_verdict execution the rule started."""
    since = Since(st2)
    st2.dispatch(WEBHOOK, {"body": body, "headers": {}, "headers_lower": {}},
                 throw_on_validation_error=True)
    (instance,) = since.processed(1)
    intake = enforced(st2, instance)
    assert intake.action["ref"] == "email_retraction.intake_verdict"
    # URL-quoted JSON: nothing Orquesta could evaluate in intake_verdict's input
    assert no_delimiters(dict(intake.parameters))
    assert decode_body(intake.parameters["body"]) == body
    return intake


def auto_retract_of(st2, intake_id):
    deadline = time.monotonic() + DEADLINE
    while True:
        found = st2.descendants(intake_id, "email_retraction.auto_retract")
        if found:
            return found[0]
        assert st2.execution(intake_id).status not in ("failed", "succeeded")
        assert time.monotonic() < deadline, "intake_verdict started no auto_retract in time"
        eventlet.sleep(0.05)


# (subject, sender, source_id) kinds per verdict
WEBHOOK_TRIPLES = [("arithmetic", "undefined", "gadget"), ("for", "yaql", "comment"),
                   ("secret", "arithmetic", "yaql")]


def test_webhook_verdicts_carrying_expressions(st2, st2_tenant, st2_config, marker):
    texts = {kind: payload_text(kind, marker) for kind in PAYLOADS}
    for text in texts.values():
        assert_live(text, marker, st2)
    with_approval(st2, st2_config)
    bodies = {"<hook-%d@evil.example>" % n: webhook_body(
        "<hook-%d@evil.example>" % n, texts[subject], texts[sender], texts[source_id])
        for n, (subject, sender, source_id) in enumerate(WEBHOOK_TRIPLES)}
    st2_tenant.load_scenario(scenario([(mid, "x", "y@evil.example", None) for mid in bodies]))
    intakes = {}
    for mid, body in bodies.items():
        intake = post(st2, body)
        intakes[str(auto_retract_of(st2, str(intake.id)).id)] = (str(intake.id), mid)
    questions = approve_all(st2, intakes)
    for auto_id, (intake_id, mid) in intakes.items():
        body = bodies[mid]
        intake = st2.wait(intake_id, timeout=DEADLINE)
        assert intake.status == "succeeded", intake.result
        output = intake.result["output"]
        assert output["verdict"]["subject"] == inert_text(body["subject"])
        run = assert_retracted_inertly(st2, st2_tenant, intake_id, auto_id, questions[auto_id],
                                       marker, mid)
        assert "%s from %s" % (show(inert_text(body["subject"])),
                               show(inert_text(body["sender"]))) in questions[auto_id]
        assert run["requested_by"] == "siem"
        assert "(%s)" % inert_text(body["source_id"]) in run["comment"]  # the source's id


def test_a_webhook_verdict_with_hostile_ids_is_refused_naming_the_fields(
        st2, st2_tenant, marker):
    body = dict(webhook_body(MID, "x", "x", "x"), message_id="<%x@evil.example%>",
                recipients=["alice@corp.example", "{{7*7}}@corp.example"])
    body[GADGET % marker] = "a key the sender chose"
    st2_tenant.load_scenario(scenario([(MID, "x", "y@evil.example", None)]))
    intake = st2.wait(str(post(st2, body).id), timeout=DEADLINE)
    assert intake.status == "failed"
    why = intake.result["output"]["why"]
    assert "body.message_id contains the template delimiters '< %' and '% >'" in why
    assert "body.recipients contains the template delimiters '{ {' and '} }'" in why
    assert "is not a field of a verdict" in why
    assert no_delimiters(intake.result) and not os.path.exists(marker)
    assert [e.action["ref"] for e in st2.descendants(str(intake.id))] == [
        "email_retraction.validate_verdict"]
    assert folders(st2_tenant) == {a: ["inbox"] for a in RECIPIENTS}


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
    body = webhook_body(MID, "{{ x }}", "x", "x")
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


def test_the_plan_action_result_and_its_errors_are_inert(st2, st2_tenant):
    """plan in StackStorm's python runner (its result is published by auto_retract, and
    Orquesta evaluates every string it publishes)."""
    execution = st2.run("email_retraction.plan", {
        "message_id": MID, "recipients": RECIPIENTS, "disposition": "MALICIOUS",
        "verdict_time": "2024-05-01T12:00:00Z", "source": "cloudflare",
        "source_id": "{{ x }}", "subject": "{% y %}", "sender": "<% z %>",
        "comment": "{# c #}", "requested_by": "{{ r }}"})
    result = st2.result(execution)
    assert execution.status == "succeeded" and no_delimiters(result)
    assert result["requested_by"] == "{ { r } }"
    execution = st2.run("email_retraction.plan", {
        "message_id": MID, "recipients": ["{{ x }}@corp.example"], "disposition": "MALICIOUS",
        "verdict_time": "2024-05-01T12:00:00Z", "source": "cloudflare"})
    result = st2.result(execution)
    assert execution.status == "failed" and result["field"] == "recipients"
    assert no_delimiters(result)
