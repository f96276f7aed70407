"""The rules, rendered as StackStorm's rules engine renders them, from payloads the REAL sensors
dispatch against the sandbox's Cloudflare API.

The rendering (Jinja with StrictUndefined and `use_none`, casting to the action's parameter
types, validation against its parameters) and the sensor polling are tools/st2local's, the one
StackStorm stand-in the tests and `make demo` share; see tools/st2local/rules.py for what it
does. A rule that passes here is one StackStorm would run.
"""
import os
import re

import jinja2
import pytest
from st2tests.base import BaseSensorTestCase

import conformance
from conftest import PACK_REF, PACK_ROOT
from tools.st2local import SensorDrive, enforce, load_rule, rules_for
from verdict_sensor import VerdictSensor
from retraction.automation import InvalidVerdict, decode_body, verdict_from_body
from retraction.config import load_settings

pytest_plugins = ["sandbox.pytest_plugin"]

INDEX = conformance.PackIndex.load(PACK_ROOT, PACK_REF)
RULES_DIR = os.path.join(PACK_ROOT, "rules")
SENSOR_TRIGGERS = ("email_retraction.verdict", "email_retraction.verdict_changed",
                   "email_retraction.phish_submission")
TRIGGER_WORD = {"email_retraction.verdict": "disposition",
                "email_retraction.verdict_changed": "post_delivery",
                "email_retraction.phish_submission": "phish_submission"}
ABC = "<abc@evil.example>"


def drive(case, sandbox, config=None):
    """The pack's sensors polled with the test case's sensor service (one datastore), each
    dispatched payload checked against its trigger type's payload_schema."""
    return SensorDrive(config or sandbox.pack_config(), service=case.sensor_service)


def every_trigger(sensors, sandbox):
    """A new verdict, a disposition changed after delivery, a confirmed user report."""
    first = sensors.poll()  # the basic tenant's two verdicts
    clean = sandbox.add_verdict(message_id="<late@evil.example>", final_disposition="NONE",
                                scanned_at="-1m",
                                to=["alice@corp.example", "carol@corp-mail.example"],
                                subject=None)
    sensors.poll()
    sandbox.rescan(clean["id"], "MALICIOUS")
    sandbox.confirm_submission("s-1", "MALICIOUS")
    return first + sensors.poll()


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
            self.assertEqual(rules[0]["action"]["parameters"]["retraction_trigger"],
                             TRIGGER_WORD[trigger])

    def test_sensor_payloads_render_into_valid_auto_retract_parameters(self):
        dispatched = every_trigger(drive(self, self.sandbox), self.sandbox)
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
                self.assertEqual(params["retraction_trigger"], TRIGGER_WORD[trigger])
                if trigger.endswith("phish_submission"):
                    self.assertEqual(params["requested_by"], payload["reporter"])
                    self.assertEqual(params["comment"],
                                     "user report %s" % payload["submission_id"])
                if trigger.endswith("verdict_changed"):
                    self.assertEqual(params["comment"], "was %s at delivery"
                                     % payload["previous_disposition"])
        late = [p for t, p in dispatched if p["message_id"] == "<late@evil.example>"]
        self.assertEqual([p["subject"] for p in late], [None])

    def test_hostile_payload_text_arrives_inert(self):
        """The sensor makes payload text inert (retraction.inert), and the rule does not render
        it again: StackStorm's later renderings see no template delimiter."""
        self.sandbox.add_verdict(message_id="<o'neil+x@evil.example>", final_disposition="SPOOF",
                                 scanned_at="-1m", subject="{{ 7 * 7 }} & \"quotes\" 'too'",
                                 to=["o'brien@corp.example"])
        dispatched = drive(self, self.sandbox).poll()
        payload = next(p for t, p in dispatched if p["message_id"] == "<o'neil+x@evil.example>")
        params, problems = enforce(load_rule("auto_retract_on_verdict"), payload)
        self.assertEqual(problems, [])
        self.assertEqual(params["subject"], "{ { 7 * 7 } } & \"quotes\" 'too'")
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
        # URL-quoted so Orquesta finds no template delimiter in intake_verdict's input
        self.assertEqual(list(params), ["body"])
        self.assertEqual(list(params["body"]), ["percent_encoded_json"])
        self.assertNotIn("{", params["body"]["percent_encoded_json"])
        self.assertEqual(decode_body(params["body"]), self.BODY)

    def test_a_body_that_is_not_an_object_is_refused_before_anything_runs(self):
        params, problems = enforce(load_rule("webhook_verdict"), {"body": [self.BODY]})
        self.assertEqual(problems, [])
        with self.assertRaises(InvalidVerdict) as caught:
            verdict_from_body(params["body"], load_settings({}))
        self.assertIn("body", str(caught.exception))


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
