"""The `validate_verdict` action: what a verdict source may POST to the webhook. A good body
becomes the auto_retract parameters; a bad one is refused with every problem named by its
field (body.<name>), and the documented schema is the one enforced."""
import json
import os

import yaml

from conftest import PACK_ROOT
from retraction.automation import VERDICT_BODY_SCHEMA
from st2tests.base import BaseActionTestCase
from validate_verdict import ValidateVerdictAction

GOOD = {
    "message_id": "abc@evil.example",
    "recipients": ["Alice@Corp.Example", "carol@corp-mail.example", "alice@corp.example"],
    "disposition": "MALICIOUS",
    "verdict_time": "2024-05-01T14:30:00+02:00",
    "source": "defender",
    "source_id": "da6375-1",
    "sender": "billing@evil.example",
    "subject": "Invoice",
}


class ValidateVerdictActionTest(BaseActionTestCase):
    action_cls = ValidateVerdictAction

    def validate(self, body, config=None):
        ok, result = self.get_action_instance(config or {"ledger_url": ""}).run(body=body)
        self.assertEqual(json.loads(json.dumps(result)), result)
        return ok, result

    def refused(self, body, config=None):
        ok, result = self.validate(body, config)
        self.assertIs(ok, False, result)
        self.assertTrue(result["error"].startswith("invalid verdict body: "))
        self.assertTrue(result["error"].endswith("Nothing was retracted."))
        self.assertEqual(result["field"], result["problems"][0]["field"])
        return {p["field"]: p["problem"] for p in result["problems"]}

    def test_a_good_body_becomes_auto_retract_parameters(self):
        ok, result = self.validate(GOOD)
        self.assertIs(ok, True)
        self.assertEqual(result, {
            "message_id": "<abc@evil.example>",
            "recipients": ["Alice@corp.example", "carol@corp-mail.example"],
            "disposition": "MALICIOUS",
            "verdict_time": "2024-05-01T12:30:00+00:00",
            "source": "defender",
            "source_id": "da6375-1",
            "sender": "billing@evil.example",
            "subject": "Invoice",
            "retraction_trigger": "disposition",
            "recipients_count": 0,
        })
        # every key is a parameter of auto_retract, which the workflow passes on
        meta = yaml.safe_load(open(os.path.join(PACK_ROOT, "actions", "auto_retract.yaml")))
        self.assertLessEqual(set(result), set(meta["parameters"]))

    def test_the_minimal_body(self):
        body = {k: GOOD[k] for k in ("message_id", "recipients", "disposition", "verdict_time")}
        ok, result = self.validate(body)
        self.assertIs(ok, True)
        self.assertEqual((result["source"], result["retraction_trigger"], result["source_id"],
                          result["sender"], result["subject"]),
                         ("webhook", "disposition", None, None, None))

    def test_optional_fields(self):
        ok, result = self.validate(dict(GOOD, trigger="post_delivery", recipients_count=40,
                                        sender=None, subject=None, source_id=None))
        self.assertIs(ok, True)
        self.assertEqual((result["retraction_trigger"], result["recipients_count"],
                          result["sender"]),
                         ("post_delivery", 40, None))

    def test_missing_fields_are_each_named(self):
        problems = self.refused({"message_id": "<a@b.example>"})
        self.assertEqual(problems, {"body.recipients": "is required",
                                    "body.disposition": "is required",
                                    "body.verdict_time": "is required"})

    def test_structural_problems(self):
        cases = [
            (dict(GOOD, recipients="alice@corp.example"), "body.recipients",
             "must be array (got 'alice@corp.example')"),
            (dict(GOOD, recipients=[]), "body.recipients", "must hold at least 1 item(s)"),
            (dict(GOOD, recipients=["alice@corp.example", 7]), "body.recipients[1]",
             "must be string (got 7)"),
            (dict(GOOD, disposition="malicious"), "body.disposition",
             "must be one of MALICIOUS, SUSPICIOUS, SPOOF, SPAM, BULK, NONE (got 'malicious')"),
            (dict(GOOD, trigger="analyst"), "body.trigger",
             "must be one of disposition, post_delivery, phish_submission (got 'analyst')"),
            (dict(GOOD, source="my siem"), "body.source",
             "must match ^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"),
            (dict(GOOD, recipients_count=-2), "body.recipients_count", "must be at least 0"),
            (dict(GOOD, subject="x" * 999), "body.subject",
             "must be at most 998 characters long"),
            (dict(GOOD, recipients_count="3"), "body.recipients_count",
             "must be integer (got '3')"),
            (dict(GOOD, verdict_time=1714566600), "body.verdict_time",
             "must be string (got 1714566600)"),
        ]
        for body, field, problem in cases:
            with self.subTest(field=field, body=body):
                problems = self.refused(body)
                self.assertEqual(list(problems), [field])
                self.assertEqual(problems[field], problem)

    def test_unknown_fields_are_refused(self):
        problems = self.refused(dict(GOOD, recipient="x@corp.example", colour="red"))
        self.assertEqual(sorted(problems), ["body.colour", "body.recipient"])
        self.assertIn("is not a field of a verdict (fields: disposition, message_id",
                      problems["body.recipient"])

    def test_grammar_problems_name_the_field(self):
        cases = [
            (dict(GOOD, message_id="no-at-sign"), "body.message_id", "has no '@'"),
            (dict(GOOD, message_id="<a{b}@evil.example>"), "body.message_id", "brace"),
            (dict(GOOD, recipients=["alice@corp.example", "bob/../x@corp.example"]),
             "body.recipients", "contains a slash"),
            (dict(GOOD, verdict_time="yesterday"), "body.verdict_time", "must be ISO 8601"),
            (dict(GOOD, verdict_time="2999-01-01T00:00:00Z"), "body.verdict_time",
             "more than a day in the future"),
            (dict(GOOD, subject="a\x00b"), "body.subject", "control character"),
        ]
        for body, field, words in cases:
            with self.subTest(field=field):
                problems = self.refused(body)
                self.assertEqual(list(problems), [field])
                self.assertIn(words, problems[field])

    def test_several_problems_are_all_reported(self):
        body = dict(GOOD, message_id="nope", recipients=["a b@corp.example"],
                    verdict_time="soon")
        problems = self.refused(body)
        self.assertEqual(sorted(problems),
                         ["body.message_id", "body.recipients", "body.verdict_time"])

    def test_not_an_object(self):
        for body in ([GOOD], "message_id=x", None, 42):
            with self.subTest(body=body):
                problems = self.refused(body)
                self.assertEqual(list(problems), ["body"])
                self.assertIn("must be a JSON object", problems["body"])

    def test_the_recipient_limit_applies(self):
        config = {"ledger_url": "", "limits": {"max_recipients": 2}}
        problems = self.refused(dict(GOOD, recipients=["a@corp.example", "b@corp.example",
                                                       "c@corp.example"]), config)
        self.assertIn("limits.max_recipients", problems["body.recipients"])

    def test_long_hostile_values_are_shortened_in_the_error(self):
        ok, result = self.validate(dict(GOOD, message_id="<" + "x" * 5000 + ">"))
        self.assertIs(ok, False)
        self.assertLess(len(result["error"]), 600)

    def test_the_schema_is_valid_draft4_and_documented(self):
        import jsonschema
        jsonschema.Draft4Validator.check_schema(VERDICT_BODY_SCHEMA)
        with open(os.path.join(PACK_ROOT, "actions", "validate_verdict.yaml"),
                  encoding="utf-8") as handle:
            meta = yaml.safe_load(handle)  # raises when it does not load
        self.assertIsInstance(meta, dict)
        for name in VERDICT_BODY_SCHEMA["properties"]:
            self.assertIn(name, meta["description"])
