"""The pack's rules on StackStorm's own code: the payloads the sensors dispatch, through
StackStorm's trigger dispatcher (payload validation on), its rules engine (criteria,
enforcement) and the enforcer's parameter rendering (`render_live_params`), to the parameters
of the `auto_retract` execution in StackStorm's database, and on through Orquesta to `plan`.

The sensors run as the sensor container runs them (`Stack.sensor`: StackStorm's SensorService)
against the sandbox's Cloudflare API; every payload is the pack's own (retraction.verdicts).

What StackStorm showed (each has its test here):
- A rule parameter `{{ trigger.sender | use_none }}` fails to render when the payload has no
  `sender` key (StrictUndefined): the enforcement fails and nothing runs. The trigger types
  make sender, subject and reporter optional, so the rules read them with `trigger.get(...)`.
- The enforcer renders a rule's template once and never evaluates the trigger's values, but
  Orquesta evaluates auto_retract's inputs: a raw Message-ID `<a{{''}}b@evil.example>` reached
  plan as `<ab@evil.example>` and a recipient `{{7*7}}@corp.example` as `49@corp.example`
  (other mail, another mailbox), a sender `{{ 6*7 }}` as the number 42 (the workflow failed).
  The sensors never dispatch such text (their payloads are inert, ids with delimiters are
  refused), but anyone may dispatch the trigger. The rules now make every trigger value inert
  with StackStorm's `regex_replace` (the pattern of retraction.inert), so plan refuses those
  ids naming the field, and nothing moves.
- A string parameter whose value is StackStorm's None marker `%*****__%NONE%__*****%` is cast
  to None by StackStorm (st2common.util.casts): such a subject reaches auto_retract as None.
"""
import logging
import os

import pytest
import yaml
from orquesta.expressions import base as orquesta_expressions

from retraction.inert import delimiters_in, inert_text, inert_values
from submission_sensor import SubmissionSensor
from st2_stack import Since
from verdict_sensor import VerdictSensor

pytest_plugins = ["st2_stack"]

PACK = "email_retraction"
PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RULE_OF = {"email_retraction.verdict": "email_retraction.auto_retract_on_verdict",
           "email_retraction.verdict_changed": "email_retraction.post_delivery_response",
           "email_retraction.phish_submission": "email_retraction.phish_submission_response"}
TRIGGER_WORD = {"email_retraction.verdict": "disposition",
                "email_retraction.verdict_changed": "post_delivery",
                "email_retraction.phish_submission": "phish_submission"}
RECIPIENTS = ["alice@corp.example", "carol@corp-mail.example"]  # Graph and Gmail
NONE_MARKER = "%*****__%NONE%__*****%"  # st2common.expressions.functions.data.NONE_MAGIC_VALUE
DEADLINE = 300


# -- the sandbox ---------------------------------------------------------------------------------

def basic():
    with open(os.path.join(PACK_ROOT, "sandbox", "scenarios", "basic.yaml")) as handle:
        return yaml.safe_load(handle)


def message(message_id, subject="Invoice", sender="billing@evil.example",
            disposition="MALICIOUS", to=RECIPIENTS, folder="inbox"):
    """A message delivered to `to`; with a Cloudflare verdict unless disposition is None."""
    spec = {"message_id": message_id, "subject": subject, "from": sender, "scanned_at": "-5m",
            "copies": [{"mailbox": a, "folder": folder} for a in to], "recipients": list(to)}
    if disposition:
        spec["disposition"] = disposition
    return spec


def scenario(messages, submissions=(), mailboxes=()):
    data = basic()
    data["messages"] = list(messages)
    data["submissions"] = list(submissions)
    data["mailboxes"] = data["mailboxes"] + [{"address": a} for a in mailboxes]
    return data


def load(box, data):
    """A fresh tenant from a scenario mapping, sent as YAML text (the control API reads YAML:
    the \\u escapes JSON writes for characters outside the BMP, such as an emoji, would reach
    it as surrogate pairs that the sandbox's Gmail cannot encode)."""
    response = box.session.post(box.info["control_url"] + "/scenario", timeout=300,
                                data=yaml.safe_dump(data, allow_unicode=True).encode("utf-8"))
    assert response.status_code < 400, response.text


def folders(box, message_id, mailboxes=RECIPIENTS):
    found = {a: [] for a in mailboxes}
    for copy in box.copies(message_id):
        if copy["mailbox"] in found:
            found[copy["mailbox"]].append(copy["folder"])
    return found


# -- StackStorm's records ------------------------------------------------------------------------

def enforcement_of(st2, trigger_instance):
    """The one enforcement of the trigger instance (one rule per trigger type)."""
    found = [e for e in st2.enforcements() if e.trigger_instance_id == str(trigger_instance.id)]
    assert len(found) == 1, found
    return found[0]


def parameters(st2, execution_id):
    """The parameters StackStorm stored for the execution, as its LiveAction (what the runner
    gets) and its ActionExecution hold them (the same)."""
    from st2common.persistence.liveaction import LiveAction
    execution = st2.execution(execution_id)
    live = LiveAction.get_by_id(execution.liveaction["id"])
    assert dict(live.parameters) == dict(execution.parameters)
    return dict(live.parameters)


def fired(st2, trigger_instance):
    """(the auto_retract execution id, its parameters) of a trigger instance's rule."""
    enforcement = enforcement_of(st2, trigger_instance)
    assert enforcement.rule.ref == RULE_OF[trigger_instance.trigger]
    assert (enforcement.status, enforcement.failure_reason) == ("succeeded", None)
    execution = st2.execution(enforcement.execution_id)
    assert execution.action["ref"] == "email_retraction.auto_retract"
    return enforcement.execution_id, parameters(st2, enforcement.execution_id)


def expected_parameters(trigger, payload):
    """What each rule passes to auto_retract, from the payload as it is."""
    out = {
        "message_id": payload["message_id"],
        "recipients": payload["recipients"],
        "disposition": payload["disposition"],
        "retraction_trigger": TRIGGER_WORD[trigger],
        "verdict_time": payload["verdict_time"],
        "source": payload["source"],
        "source_id": payload["source_id"],
        "sender": payload.get("sender"),
        "subject": payload.get("subject"),
    }
    if trigger == "email_retraction.phish_submission":
        out["requested_by"] = payload.get("reporter")
        out["comment"] = "user report %s" % payload["submission_id"]
    if trigger == "email_retraction.verdict_changed":
        out["comment"] = "was %s at delivery" % payload["previous_disposition"]
        out["previous_disposition"] = payload["previous_disposition"]
    return out


def plan_only(st2, config):
    """Every disposition mapped to `none` (StackStorm's configs registrar validates it): each
    auto_retract ends at plan with "no action by policy", for the tests about what reaches it
    rather than what moves. st2_tenant restores the module's config for the next test."""
    config["auto_retract"] = dict(config["auto_retract"], dispositions={
        word: "none" for word in config["auto_retract"]["dispositions"]})
    st2.reconfigure(config)


def assert_no_action(st2, execution_id):
    execution = st2.wait(execution_id, timeout=DEADLINE)
    assert execution.status == "succeeded", execution.result
    assert execution.result["output"]["why"].startswith("no action by policy"), \
        execution.result["output"]
    assert st2.descendants(execution_id, "email_retraction.retract_campaign") == []


def plan_of(st2, workflow_id):
    (plan,) = st2.descendants(workflow_id, "email_retraction.plan")
    return plan


class LogLines(logging.Handler):
    def __init__(self):
        super(LogLines, self).__init__(level=logging.WARNING)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def sensor_log():
    handler = LogLines()
    logger = logging.getLogger("st2.%s.sensor" % PACK)  # Stack.sensor's, under st2.
    logger.addHandler(handler)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)


# -- the rules as StackStorm registered them ------------------------------------------------------

def test_every_rule_is_registered_enabled_with_its_trigger_and_action(st2):
    from st2common.persistence.rule import Rule
    rules = {r.name: r for r in Rule.query(pack=PACK)}
    assert sorted(rules) == ["auto_retract_on_verdict", "phish_submission_response",
                             "post_delivery_response", "webhook_verdict"]
    for trigger, ref in RULE_OF.items():
        rule = rules[ref.split(".", 1)[1]]
        assert rule.enabled is True
        assert rule.trigger == trigger
        assert rule.action.ref == "email_retraction.auto_retract"
        assert rule.action.parameters["retraction_trigger"] == TRIGGER_WORD[trigger]
        assert not rule.criteria  # every verdict goes to plan, which applies the config
    webhook = rules["webhook_verdict"]
    assert webhook.enabled is True and webhook.action.ref == "email_retraction.intake_verdict"


def test_switch_rules_say_the_switch_lives_in_plan(st2):
    from st2common.persistence.rule import Rule
    for name in ("post_delivery_response", "phish_submission_response"):
        (rule,) = Rule.query(pack=PACK, name=name)
        description = " ".join(rule.description.split())
        assert "auto_retract.%s is applied by plan" % name in description


# -- the sensors' payloads through every rule -----------------------------------------------------

def test_every_sensor_trigger_fires_its_rule_with_the_payload_as_is(st2, st2_tenant):
    """A new verdict, a disposition changed after delivery, a confirmed user report: each
    payload the sensors dispatch becomes the auto_retract parameters unchanged (the rules'
    inert rendering is the identity on the sensors' inert payloads), Orquesta hands plan the
    same Message-ID and recipients, and the copies move as the config says."""
    box = st2_tenant
    data = basic()
    data["messages"].append(message("<late@evil.example>", disposition=None))
    load(box, data)
    since = Since(st2)
    verdicts = st2.sensor(VerdictSensor)
    reports = st2.sensor(SubmissionSensor)
    verdicts.poll()  # abc (MALICIOUS) and o'brien (SUSPICIOUS): new verdicts
    box.control("POST", "/verdicts", {
        "id": "late-1", "message_id": "<late@evil.example>", "to": RECIPIENTS,
        "from": "late@evil.example", "final_disposition": "NONE", "scanned_at": "-1m"})
    verdicts.poll()  # clean: remembered, not dispatched
    box.control("POST", "/verdicts/late-1/rescan", {"disposition": "MALICIOUS"})
    verdicts.poll()  # -> verdict_changed
    box.control("POST", "/submissions/s-1/confirm", {"disposition": "MALICIOUS"})
    reports.poll()  # -> phish_submission over abc's recipients

    instances = since.processed(4)
    assert sorted(t.trigger for t in instances) == sorted([
        "email_retraction.verdict", "email_retraction.verdict", "email_retraction.verdict_changed",
        "email_retraction.phish_submission"])
    runs = []
    for instance in instances:
        payload = dict(instance.payload)
        assert payload == inert_values(payload)  # the sensors dispatch inert payloads
        execution_id, params = fired(st2, instance)
        assert params == expected_parameters(instance.trigger, payload), instance.trigger
        runs.append((instance.trigger, payload, execution_id))

    by_message = {(t, p["message_id"]): p for t, p, _ in runs}
    abc = by_message[("email_retraction.verdict", "<abc@evil.example>")]
    assert abc["recipients"] == basic()["messages"][0]["recipients"]
    assert (abc["sender"], abc["subject"], abc["source"]) == (
        "billing@evil.example", "Invoice", "cloudflare")
    assert ("email_retraction.verdict", "<o'brien+promo@evil.example>") in by_message
    late = by_message[("email_retraction.verdict_changed", "<late@evil.example>")]
    assert (late["previous_disposition"], late["subject"]) == ("NONE", None)  # None stays None
    report = by_message[("email_retraction.phish_submission", "<abc@evil.example>")]
    assert (report["submission_id"], report["reporter"]) == ("s-1", "alice@corp.example")

    for trigger, payload, execution_id in runs:
        execution = st2.wait(execution_id, timeout=DEADLINE)
        assert execution.status == "succeeded", (trigger, execution.result)
        plan = plan_of(st2, execution_id)
        assert (plan.parameters["message_id"], plan.parameters["recipients"]) == (
            payload["message_id"], payload["recipients"])
        assert plan.parameters["trigger"] == TRIGGER_WORD[trigger]
    assert folders(box, "<late@evil.example>") == {a: ["trash"] for a in RECIPIENTS}
    assert folders(box, "<o'brien+promo@evil.example>") == {a: ["junk"] for a in RECIPIENTS}
    assert folders(box, "<abc@evil.example>") == {a: ["trash"] for a in RECIPIENTS}


HOSTILE_TEXT = {
    "arithmetic": "{{ 6*7 }}",
    "block": "{% for i in range(3) %}{{ i }}{% endfor %}",
    "yaql": "<% 6*7 %>",
    "comment": "{# hidden #} seen {%- if true -%}x{%- endif -%}",
    "quotes": "Tom's \"deal\" `x` \\ back\\slash 'single'",
    "unicode": "Рахунок 📧 الفاتورة Ünïcødé \u200b\u202e",
    "crlf": "Invoice\r\nBcc: all-staff@corp.example\r\n\r\n{{ x }}",
    "long": "{{ x }}" + "A" * 3000,
    "braces": "{ {} } {x} }{ %",
}


def test_hostile_subjects_and_senders_from_the_sensor_reach_auto_retract_inert(
        st2, st2_tenant, tmp_path):
    """Attacker-chosen subjects and senders (template syntax, quotes, unicode, CR/LF, long):
    the sensor dispatches them inert, the rule passes them on as they are, Orquesta evaluates
    nothing, every run retracts.

    As they are, they are live to Orquesta: evaluated (`{{ 6*7 }}` is 42, which fails the
    string parameter of plan: no retraction), or refused, which fails the workflow just the
    same. Orquesta 1.6's Jinja is sandboxed: the gadget below raises SecurityError rather
    than creating the directory (retraction.inert's docstring says it runs Python)."""
    from orquesta.exceptions import ExpressionEvaluationException
    marker = str(tmp_path / "pwned")
    texts = dict(HOSTILE_TEXT, gadget="{{ cycler.__init__.__globals__.os.mkdir(%r) }}" % marker)
    for kind in ("arithmetic", "block", "yaql"):
        assert orquesta_expressions.evaluate(texts[kind], {}) != texts[kind], kind
    assert orquesta_expressions.evaluate(texts["arithmetic"], {}) == 42
    for kind in ("crlf", "long", "gadget"):
        with pytest.raises(ExpressionEvaluationException) as caught:
            orquesta_expressions.evaluate(texts[kind], {})
        if kind == "gadget":
            assert "SecurityError" in str(caught.value)
    assert not os.path.exists(marker)
    pairs = [("arithmetic", "block"), ("yaql", "comment"), ("quotes", "unicode"),
             ("crlf", "long"), ("braces", "gadget")]  # (subject, sender)
    assert sorted(k for pair in pairs for k in pair) == sorted(texts)
    ids = {subject: "<h-%s@evil.example>" % subject for subject, _ in pairs}
    load(st2_tenant, scenario([message(ids[subject], subject=texts[subject],
                                       sender=texts[sender]) for subject, sender in pairs]))
    since = Since(st2)
    st2.sensor(VerdictSensor).poll()
    instances = since.processed(len(pairs))
    kinds_of = {ids[subject]: (subject, sender) for subject, sender in pairs}
    runs = []
    for instance in instances:
        payload = dict(instance.payload)
        subject, sender = kinds_of[payload["message_id"]]
        # the sensor trims and cuts at a header line's length, then makes the text inert
        assert payload["subject"] == inert_text(texts[subject].strip()[:998]), subject
        assert payload["sender"] == inert_text(texts[sender].strip()[:998]), sender
        assert not delimiters_in(payload["subject"]) and not delimiters_in(payload["sender"])
        execution_id, params = fired(st2, instance)
        assert params == expected_parameters(instance.trigger, payload), subject
        assert params["recipients"] == RECIPIENTS
        runs.append((subject, payload, execution_id))
    crlf = next(p for k, p, _ in runs if k == "crlf")
    assert "\r\n" in crlf["subject"]  # carried as is; shown escaped where displayed
    for kind, payload, execution_id in runs:
        execution = st2.wait(execution_id, timeout=DEADLINE)
        assert execution.status == "succeeded", (kind, execution.result)
        plan = plan_of(st2, execution_id)
        assert plan.parameters["subject"] == payload["subject"], kind  # not evaluated
        assert plan.parameters["sender"] == payload["sender"], kind
        assert plan.parameters["message_id"] == payload["message_id"]
        assert folders(st2_tenant, payload["message_id"]) == {
            a: ["trash"] for a in RECIPIENTS}, kind
    assert not os.path.exists(marker)


def test_hostile_message_ids_from_the_sensor(st2, st2_tenant, sensor_log):
    """`%` and `'` are Message-ID text, and a Message-ID may be long: carried exactly,
    retracted. `{`/`}` (Gmail search syntax), `<%`...`%>` (YAQL to Orquesta) and more than a
    header line (998) are refused by the sensor, which logs the row naming message_id: no
    trigger instance, nothing moves."""
    carried = ["<a%b.c@evil.example>", "<o'neil+50%25=x@[192.0.2.1]>",
               "<%s@evil.example>" % ("l" * 900)]
    refused = ["<a{b}c@evil.example>", "<{{6*7}}@evil.example>", "<%x@evil.example%>",
               "<x@evil.example%>", "<%s@evil.example>" % ("l" * 990)]
    load(st2_tenant, scenario([message(m) for m in carried + refused]))
    since = Since(st2)
    st2.sensor(VerdictSensor).poll()
    instances = since.processed(len(carried))
    assert sorted(t.payload["message_id"] for t in instances) == sorted(carried)
    runs = [fired(st2, t) for t in instances]
    for (execution_id, params), instance in zip(runs, instances):
        assert params["message_id"] == instance.payload["message_id"]
        assert params["recipients"] == RECIPIENTS
    for execution_id, params in runs:
        execution = st2.wait(execution_id, timeout=DEADLINE)
        assert execution.status == "succeeded", execution.result
        assert plan_of(st2, execution_id).parameters["message_id"] == params["message_id"]
        assert folders(st2_tenant, params["message_id"]) == {a: ["trash"] for a in RECIPIENTS}
    for mid in refused:
        assert folders(st2_tenant, mid) == {a: ["inbox"] for a in RECIPIENTS}
    warnings = [line for line in sensor_log if "message_id" in line and "skipped" in line]
    assert len(warnings) == len(refused), sensor_log
    assert sum("template delimiters '< %'" in line for line in warnings) == 1
    assert sum("brace" in line for line in warnings) == 2
    assert sum("998" in line for line in warnings) == 1
    assert not any(delimiters_in(line) for line in warnings)


def test_a_hostile_user_report_fires_phish_submission_response_inert(st2, st2_tenant):
    reporter = "{{ 7 * 7 }}@{% if true %}x{% endif %} \"Ünï\""
    subject = "<% $.x %> {{ config_context.microsoft.client_secret }}"
    mid = "<rep@evil.example>"
    load(st2_tenant, scenario(
        [message(mid, subject=subject, disposition="NONE")],
        submissions=[{"submission_id": "s-{{x}}", "message_id": mid, "requested_by": reporter,
                      "requested_disposition": "MALICIOUS", "outcome_disposition": "MALICIOUS",
                      "status": "reviewed", "requested_ts": "-3m"}]))
    since = Since(st2)
    st2.sensor(SubmissionSensor).poll()
    (instance,) = since.processed(1)
    payload = dict(instance.payload)
    assert instance.trigger == "email_retraction.phish_submission"
    assert (payload["reporter"], payload["subject"], payload["submission_id"]) == (
        inert_text(reporter), inert_text(subject), "s-{ {x} }")
    execution_id, params = fired(st2, instance)
    assert params == expected_parameters(instance.trigger, payload)
    assert params["requested_by"] == inert_text(reporter)
    assert params["comment"] == "user report s-{ {x} }"
    execution = st2.wait(execution_id, timeout=DEADLINE)
    assert execution.status == "succeeded", execution.result
    plan = plan_of(st2, execution_id)
    assert plan.parameters["requested_by"] == inert_text(reporter)
    assert st2.result(plan)["requested_by"] == inert_text(reporter)
    secret = st2.current_config["microsoft"]["client_secret"]
    assert secret not in repr(execution.result) and secret not in repr(plan.parameters)
    assert folders(st2_tenant, mid) == {a: ["trash"] for a in RECIPIENTS}


def test_a_hostile_rescan_fires_post_delivery_response_inert(st2, st2_tenant):
    mid = "<re'scan%1@evil.example>"
    subject = "{{ range(10**9) | list }} ok"
    data = scenario([message(mid, disposition=None)])
    load(st2_tenant, data)
    box = st2_tenant
    since = Since(st2)
    sensor = st2.sensor(VerdictSensor)
    box.control("POST", "/verdicts", {
        "id": "rs-1", "message_id": mid, "to": RECIPIENTS, "subject": subject,
        "from": "{% raw %}x", "final_disposition": "SUSPICIOUS", "scanned_at": "-4m"})
    instances = []
    for expected_folder in ("junk", "trash"):  # SUSPICIOUS, then the rescan's MALICIOUS
        sensor.poll()
        instance = since.processed(len(instances) + 1)[-1]
        instances.append(instance)
        payload = dict(instance.payload)
        assert (payload["subject"], payload["sender"]) == (inert_text(subject), "{ % raw % }x")
        execution_id, params = fired(st2, instance)
        assert params == expected_parameters(instance.trigger, payload)
        assert params["message_id"] == mid
        execution = st2.wait(execution_id, timeout=DEADLINE)
        assert execution.status == "succeeded", execution.result
        assert folders(box, mid) == {a: [expected_folder] for a in RECIPIENTS}
        box.control("POST", "/verdicts/rs-1/rescan", {"disposition": "MALICIOUS"})
    assert [t.trigger for t in instances] == ["email_retraction.verdict",
                                              "email_retraction.verdict_changed"]
    assert instances[1].payload["previous_disposition"] == "SUSPICIOUS"


def test_stackstorms_none_marker_as_a_subject_arrives_as_none(st2, st2_tenant, st2_config):
    """StackStorm casts a string parameter equal to its None marker to None
    (st2common.util.casts._cast_none): a subject that is exactly the marker is lost on the
    way to auto_retract. Display text only; the retraction is unaffected."""
    plan_only(st2, st2_config)
    mid = "<marker@evil.example>"
    load(st2_tenant, scenario([message(mid, subject=NONE_MARKER, sender=NONE_MARKER)]))
    since = Since(st2)
    st2.sensor(VerdictSensor).poll()
    (instance,) = since.processed(1)
    assert instance.payload["subject"] == NONE_MARKER
    execution_id, params = fired(st2, instance)
    assert (params["subject"], params["sender"]) == (None, None)
    assert params["message_id"] == mid and params["recipients"] == RECIPIENTS
    assert_no_action(st2, execution_id)
    plan = plan_of(st2, execution_id)
    assert (plan.parameters["subject"], plan.parameters["sender"]) == (None, None)


# -- what other dispatchers can send ------------------------------------------------------------

def raw_payload(trigger, **fields):
    payload = {"message_id": "<abc@evil.example>", "recipients": ["alice@corp.example"],
               "disposition": "MALICIOUS", "verdict_time": "2026-12-08T00:00:00Z",
               "source": "cloudflare", "source_id": "r-1", "sender": "a@evil.example",
               "subject": "Invoice"}
    if trigger == "email_retraction.verdict_changed":
        payload["previous_disposition"] = "NONE"
    if trigger == "email_retraction.phish_submission":
        payload.update(submission_id="s-9", reporter="alice@corp.example")
    payload.update(fields)
    return payload


WIDENING = [
    # (field, raw value, what Orquesta makes of it, another message/mailbox it would match)
    ("message_id", "<a{{''}}b@evil.example>", "<ab@evil.example>"),
    ("message_id", "<a{%if 0%}x{%endif%}b@evil.example>", "<ab@evil.example>"),
    ("recipients", "{{7*7}}@corp.example", "49@corp.example"),
]


@pytest.mark.parametrize("trigger", sorted(RULE_OF))
def test_raw_payloads_that_orquesta_would_turn_into_other_mail_move_nothing(
        st2, st2_tenant, trigger):
    """A payload not from the sensors (the `st2` webhook, a re-emitted trigger instance,
    another pack) with template syntax in its Message-ID or recipients. Orquesta would
    evaluate auto_retract's inputs into another message / another mailbox, and the decoys
    there would move. The rule hands them on inert; plan refuses them naming the field."""
    decoy = "<ab@evil.example>"
    load(st2_tenant, scenario(
        [message(decoy, disposition=None, to=["alice@corp.example", "49@corp.example"]),
         message("<abc@evil.example>", disposition=None, to=["49@corp.example"])],
        mailboxes=["49@corp.example"]))
    since = Since(st2)
    sent = []
    for field, raw, evaluated in WIDENING:
        value = [raw] if field == "recipients" else raw
        # live: this is what Orquesta does with the value as it is
        assert orquesta_expressions.evaluate(value, {}) == (
            [evaluated] if field == "recipients" else evaluated)
        payload = raw_payload(trigger, **{field: value, "subject": "{{ 6*7 }}",
                                          "sender": "<% 6*7 %>"})
        st2.dispatch(trigger, payload)
        sent.append((field, payload))
    instances = since.processed(len(sent))
    for instance in instances:
        payload = dict(instance.payload)
        (field,) = [f for f, p in sent if p == payload]
        execution_id, params = fired(st2, instance)
        assert params == inert_values(expected_parameters(trigger, payload))
        assert params[field] != payload[field] and not delimiters_in(repr(params))
        execution = st2.wait(execution_id, timeout=DEADLINE)
        assert execution.status == "failed"
        why = execution.result["output"]["why"]
        assert why.startswith("invalid %s:" % field), why
        assert not delimiters_in(why)
        plan = plan_of(st2, execution_id)
        assert plan.parameters[field] == params[field]  # Orquesta left the inert value alone
        assert st2.descendants(execution_id, "email_retraction.retract") == []
    assert folders(st2_tenant, decoy, ["alice@corp.example", "49@corp.example"]) == {
        "alice@corp.example": ["inbox"], "49@corp.example": ["inbox"]}
    assert folders(st2_tenant, "<abc@evil.example>", ["49@corp.example"]) == {
        "49@corp.example": ["inbox"]}


INVALID = [
    ("recipients", {"recipients": None}),
    ("recipients", {"recipients": []}),
    ("disposition", {"disposition": "EVIL"}),
    ("message_id", {"message_id": 42}),
    ("source", {"source": "siem"}),
    ("unexpected", {"unexpected": "x"}),
]


@pytest.mark.parametrize("trigger", sorted(RULE_OF))
def test_a_payload_invalid_against_the_trigger_type_is_dropped(st2, st2_tenant, st2_config,
                                                               trigger):
    """StackStorm validates the payload against the trigger type's payload_schema and drops
    it when invalid (validate_trigger_payload on, as in production): no trigger instance, no
    enforcement, no execution. With throw_on_validation_error the reason names the field.
    A valid payload dispatched after them is the only one the rules engine ever sees."""
    plan_only(st2, st2_config)
    since = Since(st2)
    for field, change in INVALID:
        payload = raw_payload(trigger, **change)
        if change.get(field, "") is None:
            del payload[field]
        st2.dispatch(trigger, payload)
        with pytest.raises(ValueError) as caught:
            st2.dispatch(trigger, payload, throw_on_validation_error=True)
        assert "Trigger payload validation failed" in str(caught.value)
        assert "'%s'" % field in str(caught.value) or repr(change[field]) in str(caught.value)
    st2.dispatch(trigger, raw_payload(trigger, source_id="the-valid-one"))
    (instance,) = since.processed(1)
    assert instance.payload["source_id"] == "the-valid-one"
    execution_id, _ = fired(st2, instance)
    assert [str(e.id) for e in since.executions() if not e.parent] == [execution_id]
    assert_no_action(st2, execution_id)


REQUIRED = {
    "email_retraction.verdict": ("message_id", "recipients", "disposition", "verdict_time",
                                 "source", "source_id"),
    "email_retraction.verdict_changed": ("message_id", "recipients", "disposition",
                                         "previous_disposition", "verdict_time", "source",
                                         "source_id"),
    "email_retraction.phish_submission": ("submission_id", "message_id", "recipients",
                                          "disposition", "verdict_time", "source",
                                          "source_id"),
}


def test_optional_keys_missing_still_fire_every_rule(st2, st2_tenant, st2_config):
    """sender, subject (and reporter) are optional in every trigger type. StackStorm renders
    `{{ trigger.sender | use_none }}` with StrictUndefined: on a payload without the key the
    enforcement failed and nothing ran. The rules read them with trigger.get()."""
    from st2common.exceptions.param import ParamException
    from st2common.util import param as param_utils

    plan_only(st2, st2_config)
    since = Since(st2)
    for trigger, required in sorted(REQUIRED.items()):
        st2.dispatch(trigger, {k: v for k, v in raw_payload(trigger).items() if k in required})
    instances = since.processed(len(REQUIRED))
    for instance in instances:
        execution_id, params = fired(st2, instance)
        assert params == expected_parameters(instance.trigger, dict(instance.payload))
        assert (params["sender"], params["subject"]) == (None, None)
        if instance.trigger == "email_retraction.phish_submission":
            assert params["requested_by"] is None
        assert_no_action(st2, execution_id)

    # The form the rules had, through the enforcer's own rendering: refused.
    with pytest.raises(ParamException) as caught:
        param_utils.render_live_params(
            {}, {"sender": {"type": "string"}}, {"sender": "{{ trigger.sender | use_none }}"},
            {"user": "stanley", "pack": PACK},
            additional_contexts={"trigger": {"message_id": "<abc@evil.example>"}})
    assert 'Failed to render parameter "sender"' in str(caught.value)
    assert "has no attribute 'sender'" in str(caught.value)
