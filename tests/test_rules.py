"""The rules, rendered as StackStorm's rules engine renders them, from payloads the REAL sensors
dispatch against the sandbox's Cloudflare API.

What StackStorm does with a rule's action parameters (st2reactor datatransform +
st2common.util.jinja.render_values + action_param_utils.cast_params + parameter validation):
1. render each value with Jinja (StrictUndefined: a missing payload field fails the rule;
   `use_none` turns None into a magic string), dicts and lists through json.dumps/loads;
   a value without a template keeps its original type;
2. cast the rendered strings to each parameter's type (object/array: JSON, else a Python
   literal; the magic string becomes None);
3. validate against the action's parameters: unknown names, required ones, types (draft 4,
   `required: true` inside a property, optional ones nullable), defaults applied.
The helpers below do exactly that, so a rule that passes here is one StackStorm would run.
"""
import ast
import copy
import json
import os
import re

import jinja2
import pytest
from st2tests.base import BaseSensorTestCase

import conformance
from conftest import PACK_REF, PACK_ROOT
from submission_sensor import SubmissionSensor
from verdict_sensor import VerdictSensor

pytest_plugins = ["sandbox.pytest_plugin"]

NONE_MAGIC_VALUE = "%*****__%NONE%__*****%"
INDEX = conformance.PackIndex.load(PACK_ROOT, PACK_REF)
RULES_DIR = os.path.join(PACK_ROOT, "rules")
SENSOR_TRIGGERS = ("email_retraction.verdict", "email_retraction.verdict_changed",
                   "email_retraction.phish_submission")
TRIGGER_WORD = {"email_retraction.verdict": "disposition",
                "email_retraction.verdict_changed": "post_delivery",
                "email_retraction.phish_submission": "phish_submission"}
ABC = "<abc@evil.example>"


# --- StackStorm's rule rendering --------------------------------------------------------------

def st2_jinja_environment():
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters["use_none"] = lambda value: NONE_MAGIC_VALUE if value is None else value
    env.tests["in"] = lambda item, seq: item in seq
    return env


def render_values(mapping, context):
    """st2common.util.jinja.render_values."""
    super_context = {"__context": context}
    super_context.update(context)
    env = st2_jinja_environment()
    rendered = {}
    for key, value in (mapping or {}).items():
        reverse_json = isinstance(value, (dict, list))
        text = json.dumps(value) if reverse_json else (
            value if isinstance(value, str) else str(value))
        out = env.from_string(text).render(super_context)
        if out == text:
            rendered[key] = mapping[key]
            continue
        rendered[key] = json.loads(out) if reverse_json else out
    return rendered


def _none(value):
    return None if isinstance(value, str) and value == NONE_MAGIC_VALUE else value


def _cast_object(value):
    value = _none(value)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return ast.literal_eval(value)
    return value


def _cast_string(value):
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("Value %r must either be a string or None" % (value,))
    return _none(value)


CASTS = {
    "array": _cast_object, "object": _cast_object, "string": _cast_string,
    "boolean": lambda v: ast.literal_eval(_none(v).capitalize()) if isinstance(_none(v), str)
    else _none(v),
    "integer": lambda v: None if _none(v) is None else int(_none(v)),
    "number": lambda v: None if _none(v) is None else float(_none(v)),
}


def cast_params(params, accepted):
    """st2common.util.action_db.cast_params."""
    out = {}
    for name, value in params.items():
        type_ = (accepted.get(name) or {}).get("type")
        out[name] = CASTS[type_](value) if type_ in CASTS else value
    return out


def parameter_problems(params, accepted, ref):
    """What StackStorm refuses when it schedules `ref` with `params` (after casting)."""
    problems = ["%r is not a parameter of %s" % (k, ref) for k in params if k not in accepted]
    for name, spec in sorted(accepted.items()):
        if spec.get("required") is True and "default" not in spec and name not in params:
            problems.append("required parameter %r of %s is missing" % (name, ref))
    schema = {"type": "object", "properties": copy.deepcopy(accepted)}
    instance = dict(params)
    for name, spec in accepted.items():  # use_default=True
        if name not in instance and "default" in spec and not conformance._is_expression(
                spec["default"]):
            instance[name] = copy.deepcopy(spec["default"])
    validator = conformance.St2Validator(conformance._allow_default_none(schema))
    for error in validator.iter_errors(instance):
        where = ".".join(str(p) for p in error.path) or "(top)"
        problems.append("%s: %s" % (where, error.message))
    return problems


def load_rule(name):
    rule, problem = conformance.load_yaml(os.path.join(RULES_DIR, name + ".yaml"))
    assert problem is None, problem
    return rule


def enforce(rule, payload):
    """The parameters StackStorm would run the rule's action with for this trigger payload,
    and the problems it would refuse them for."""
    ref = rule["action"]["ref"]
    accepted = INDEX.action_parameters(ref)
    assert accepted is not None, ref
    rendered = render_values(rule["action"].get("parameters") or {}, {"trigger": payload})
    params = cast_params(rendered, accepted)
    return params, parameter_problems(params, accepted, ref)


def rules_for(trigger_ref):
    """Every enabled rule of the pack on this trigger type."""
    found = []
    for path in conformance.metadata_files(PACK_ROOT, "rule"):
        rule, _ = conformance.load_yaml(path)
        if rule["trigger"]["type"] == trigger_ref and rule.get("enabled") is True:
            found.append(rule)
    return found


# --- payloads from the real sensors -----------------------------------------------------------

def schemas():
    found = {}
    for name in ("verdict_sensor", "submission_sensor"):
        meta, _ = conformance.load_yaml(os.path.join(PACK_ROOT, "sensors", name + ".yaml"))
        for trigger in meta["trigger_types"]:
            found["email_retraction." + trigger["name"]] = trigger["payload_schema"]
    return found


SCHEMAS = schemas()


class SensorDrive(object):
    """Polls the pack's sensors against the sandbox through StackStorm's sensor test base
    (one sensor service, one datastore, as one sensor container would give each)."""

    def __init__(self, case, sandbox, config=None):
        self.case = case
        self.sandbox = sandbox
        self.config = config or sandbox.pack_config()
        self.verdicts = VerdictSensor(sensor_service=case.sensor_service, config=self.config,
                                      poll_interval=60)
        self.submissions = SubmissionSensor(sensor_service=case.sensor_service,
                                            config=self.config, poll_interval=60)
        self.verdicts.setup()
        self.submissions.setup()
        self.seen = 0

    def poll(self):
        """Poll both sensors; the triggers dispatched by this poll, each checked against its
        trigger type's payload_schema (StackStorm silently drops a payload that fails)."""
        self.verdicts.poll()
        self.submissions.poll()
        dispatched = self.case.get_dispatched_triggers()[self.seen:]
        self.seen += len(dispatched)
        for item in dispatched:
            assert conformance.payload_errors(SCHEMAS[item["trigger"]], item["payload"]) == []
        return [(item["trigger"], item["payload"]) for item in dispatched]

    def every_trigger(self):
        """A new verdict, a disposition changed after delivery, a confirmed user report."""
        first = self.poll()  # the basic tenant's two verdicts
        clean = self.sandbox.add_verdict(message_id="<late@evil.example>",
                                         final_disposition="NONE", scanned_at="-1m",
                                         to=["alice@corp.example", "carol@corp-mail.example"],
                                         subject=None)
        self.poll()
        self.sandbox.rescan(clean["id"], "MALICIOUS")
        self.sandbox.confirm_submission("s-1", "MALICIOUS")
        return first + self.poll()


class RuleRenderingTest(BaseSensorTestCase):
    sensor_cls = VerdictSensor

    @pytest.fixture(autouse=True)
    def _sandbox(self, sandbox):
        self.sandbox = sandbox

    def test_every_sensor_trigger_has_exactly_one_rule(self):
        for trigger in SENSOR_TRIGGERS:
            rules = rules_for(trigger)
            self.assertEqual(len(rules), 1, trigger)
            self.assertEqual(rules[0]["action"]["ref"], "email_retraction.auto_retract")
            self.assertEqual(rules[0]["action"]["parameters"]["trigger"], TRIGGER_WORD[trigger])

    def test_sensor_payloads_render_into_valid_auto_retract_parameters(self):
        dispatched = SensorDrive(self, self.sandbox).every_trigger()
        kinds = sorted(set(trigger for trigger, _ in dispatched))
        self.assertEqual(kinds, sorted(SENSOR_TRIGGERS))
        for trigger, payload in dispatched:
            (rule,) = rules_for(trigger)
            with self.subTest(rule=rule["name"], message_id=payload["message_id"]):
                params, problems = enforce(rule, payload)
                self.assertEqual(problems, [])
                self.assertEqual(params["message_id"], payload["message_id"])
                self.assertEqual(params["recipients"], payload["recipients"])
                self.assertEqual(params["disposition"], payload["disposition"])
                self.assertEqual(params["verdict_time"], payload["verdict_time"])
                self.assertEqual(params["source"], payload["source"])
                self.assertEqual(params["source_id"], payload["source_id"])
                self.assertEqual(params["sender"], payload["sender"])
                self.assertEqual(params["subject"], payload["subject"])  # None stays None
                self.assertEqual(params["trigger"], TRIGGER_WORD[trigger])
                if trigger.endswith("phish_submission"):
                    self.assertEqual(params["requested_by"], payload["reporter"])
                    self.assertEqual(params["comment"],
                                     "user report %s" % payload["submission_id"])
                if trigger.endswith("verdict_changed"):
                    self.assertEqual(params["comment"], "was %s at delivery"
                                     % payload["previous_disposition"])
        late = [p for t, p in dispatched if p["message_id"] == "<late@evil.example>"]
        self.assertEqual([p["subject"] for p in late], [None])

    def test_hostile_payload_values_arrive_unchanged(self):
        """Payload text is data, never a template: StackStorm does not render it again."""
        self.sandbox.add_verdict(message_id="<o'neil+x@evil.example>", final_disposition="SPOOF",
                                 scanned_at="-1m", subject="{{ 7 * 7 }} & \"quotes\" 'too'",
                                 to=["o'brien@corp.example"])
        dispatched = SensorDrive(self, self.sandbox).poll()
        payload = next(p for t, p in dispatched if p["message_id"] == "<o'neil+x@evil.example>")
        params, problems = enforce(load_rule("auto_retract_on_verdict"), payload)
        self.assertEqual(problems, [])
        self.assertEqual(params["subject"], "{{ 7 * 7 }} & \"quotes\" 'too'")
        self.assertEqual(params["recipients"], ["o'brien@corp.example"])

    def test_a_payload_missing_a_field_fails_rendering(self):
        """StrictUndefined, as in StackStorm: a rule does not silently pass an empty value."""
        payload = {"message_id": ABC, "recipients": ["a@corp.example"]}
        with self.assertRaises(jinja2.UndefinedError):
            enforce(load_rule("auto_retract_on_verdict"), payload)


class WebhookRuleTest(BaseSensorTestCase):
    sensor_cls = VerdictSensor  # unused; the base class wants one

    BODY = {"message_id": "<x@evil.example>", "recipients": ["alice@corp.example"],
            "disposition": "MALICIOUS", "verdict_time": "2024-05-01T12:00:00Z",
            "source": "sublime", "source_id": None, "subject": "Tom's \"deal\" {{ x }}"}

    def test_the_webhook_rule_passes_the_whole_body(self):
        rule = load_rule("webhook_verdict")
        self.assertEqual(rule["trigger"], {"type": "core.st2.webhook",
                                           "parameters": {"url": "email_retraction/verdict"}})
        payload = {"body": self.BODY, "headers": {"Content-Type": "application/json"}}
        params, problems = enforce(rule, payload)
        self.assertEqual(problems, [])
        self.assertEqual(params, {"body": self.BODY})

    def test_a_body_that_is_not_an_object_is_refused_by_stackstorm(self):
        params, problems = enforce(load_rule("webhook_verdict"), {"body": [self.BODY]})
        self.assertEqual(len(problems), 1)
        self.assertIn("is not of type 'object'", problems[0])


class RuleMetadataTest(BaseSensorTestCase):
    sensor_cls = VerdictSensor

    def test_every_rule_is_enabled_and_conforms(self):
        names = sorted(os.path.splitext(f)[0] for f in os.listdir(RULES_DIR)
                       if f.endswith(".yaml"))
        self.assertEqual(names, ["auto_retract_on_verdict", "phish_submission_response",
                                 "post_delivery_response", "webhook_verdict"])
        for name in names:
            rule = load_rule(name)
            self.assertIs(rule["enabled"], True)
            self.assertEqual(rule["name"], name)
            self.assertEqual(conformance.check_rule(os.path.join(RULES_DIR, name + ".yaml"),
                                                    INDEX), [])

    def test_switch_rules_say_the_switch_lives_in_plan(self):
        for name, switch in (("post_delivery_response", "post_delivery_response"),
                             ("phish_submission_response", "phish_submission_response")):
            description = re.sub(r"\s+", " ", load_rule(name)["description"])
            self.assertIn("auto_retract.%s is applied by plan" % switch, description)
