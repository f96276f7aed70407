"""The automatic flow end to end, without StackStorm's engine but with every piece it would run:

sensor poll (the real sensors against the sandbox's Cloudflare API) -> dispatched payload ->
the rule's parameters rendered and cast as StackStorm does -> the auto_retract workflow walked
task by task, its Jinja expressions evaluated as Orquesta evaluates them -> plan -> (core.ask
answered by the test) -> retract_campaign (walked the same way: split_recipients -> retract
chunks -> aggregate_run) -> the real providers against the sandbox tenant -> the ledger
(SQLite in tmp_path).

The StackStorm parts (rule engine, action runner, Orquesta walker) are tools/st2local, the
harness the demo uses too; its docstrings say what it models and what it leaves out.
"""
import os
from datetime import datetime, timezone

import pytest
from st2tests.base import BaseSensorTestCase

from retraction.ledger import Ledger
from tools.st2local import RuleEngine, Runtime, SensorDrive
from verdict_sensor import VerdictSensor

pytest_plugins = ["sandbox.pytest_plugin"]

ABC = "<abc@evil.example>"
ABC_FOLDERS = {  # where the basic tenant's copies of ABC start
    "alice@corp.example": "inbox", "bob@corp.example": "trash",
    "shared-ops@corp.example": "inbox", "exec@corp.example": "inbox",
    "carol@corp-mail.example": "inbox", "dave@corp-mail.example": "junk",
}
WEBHOOK = {"url": "email_retraction/verdict"}  # the core.st2.webhook trigger's parameters


# --- the tests ----------------------------------------------------------------------------------

def approve(analyst="bob", comment="checked the headers"):
    return lambda schema: {"approve": True, "analyst": analyst, "comment": comment}


def reject(analyst="bob", comment="false positive"):
    return lambda schema: {"approve": False, "analyst": analyst, "comment": comment}


class AutomationEndToEndTest(BaseSensorTestCase):
    sensor_cls = VerdictSensor

    @pytest.fixture(autouse=True)
    def _tenant(self, sandbox, tmp_path):
        self.box = sandbox
        self.ledger_url = "sqlite:///%s" % (tmp_path / "ledger.db")

    def config(self, **sections):
        config = self.box.pack_config()
        config["ledger_url"] = self.ledger_url
        for name, values in sections.items():
            config[name] = (dict(config.get(name) or {}, **values) if isinstance(values, dict)
                            else values)
        return config

    def folder(self, address, message_id=ABC):
        view = self.box.mailbox_view(address)
        found = [c["folder"] for c in view["copies"] if c["message_id"] == message_id]
        return found[0] if len(found) == 1 else found

    def dispatch(self, config, trigger, message_id=ABC, setup=None):
        """Poll the sensors (after `setup`) until they dispatch `trigger` for `message_id`."""
        drive = SensorDrive(config, service=self.sensor_service)
        dispatched = drive.poll()
        if setup is not None:
            setup()
            dispatched += drive.poll()
        found = [p for t, p in dispatched
                 if t == "email_retraction." + trigger and p["message_id"] == message_id]
        self.assertEqual(len(found), 1, dispatched)
        return found[0]

    def respond(self, config, trigger_ref, payload, answer=None):
        """What the rule on `trigger_ref` does with the payload: the rule's parameters, then
        the workflow it runs. Returns (status, output, walker)."""
        walker = Runtime(config, answer=answer)
        (enforcement,) = RuleEngine(walker).dispatch(trigger_ref, payload)
        self.assertIsNone(enforcement.failure_reason)
        self.assertEqual(enforcement.problems, [])
        status, result = enforcement.status, enforcement.result
        return status, result["output"], walker

    def ledger_run(self, run_id):
        with Ledger(self.ledger_url) as ledger:
            return ledger.run(run_id), ledger.outcomes_for_run(run_id)

    def runs(self):
        with Ledger(self.ledger_url) as ledger:
            return ledger.runs()[0]

    def assert_retracted(self, output, payload, trigger, destination, walker):
        self.assertIsNotNone(output["run_id"], output)
        refs = [ref for ref, _, _ in walker.trail]
        self.assertEqual(refs[0], "email_retraction.plan")
        self.assertIn("email_retraction.retract_campaign", refs)
        run, outcomes = self.ledger_run(output["run_id"])
        self.assertEqual((run["mode"], run["trigger"], run["destination"]),
                         ("auto", trigger, destination))
        self.assertEqual(run["disposition"], payload["disposition"])
        self.assertEqual(sorted(o.recipient for o in outcomes), sorted(payload["recipients"]))
        for outcome in outcomes:
            self.assertEqual((outcome.mode, outcome.trigger), ("auto", trigger))
            self.assertEqual(outcome.verdict_time,
                             datetime.fromisoformat(payload["verdict_time"].replace(
                                 "Z", "+00:00")).astimezone(timezone.utc))
        record = output["metric_record"]
        self.assertEqual(record["total"], len(outcomes))
        self.assertEqual((record["auto"], record["manual"]), (record["total"], 0))
        self.assertEqual(list(record["by_trigger"]), [trigger])
        self.assertEqual(list(record["by_destination"]), [destination])
        return run, outcomes, record

    # -- the three sensor triggers ---------------------------------------------------------
    def test_verdict_retracts_every_delivered_copy(self):
        config = self.config()
        payload = self.dispatch(config, "verdict")
        status, output, walker = self.respond(config, "email_retraction.verdict", payload)
        self.assertEqual(status, "succeeded", output)
        run, outcomes, record = self.assert_retracted(output, payload, "disposition", "trash",
                                                      walker)
        by_recipient = {o.recipient: o for o in outcomes}
        self.assertEqual(by_recipient["alice@corp.example"].status, "retracted")
        self.assertEqual(by_recipient["bob@corp.example"].status, "already_in_destination")
        self.assertEqual(by_recipient["exec@corp.example"].reason, "not_authorized")
        for address in ("alice@corp.example", "bob@corp.example", "shared-ops@corp.example",
                        "carol@corp-mail.example", "dave@corp-mail.example"):
            self.assertEqual(self.folder(address), "trash", address)
        self.assertEqual(self.folder("exec@corp.example"), "inbox")
        # time to retract counts from the verdict (scanned ten minutes before the test)
        self.assertGreaterEqual(record["time_to_retract"]["p50_s"], 9 * 60)
        self.assertIn("disposition: cloudflare verdict MALICIOUS", run["comment"])
        self.assertEqual(run["requested_by"], "cloudflare")
        self.assertEqual(output["decision"], None)
        self.assertEqual(walker.inquiries, [])

    def test_post_delivery_response(self):
        """The basic tenant's SUSPICIOUS promo is re-scanned MALICIOUS after delivery."""
        config = self.config()
        promo = "<o'brien+promo@evil.example>"
        row = next(v for v in self.box.tenant.verdicts.values() if v.message_id == promo)
        payload = self.dispatch(config, "verdict_changed", promo,
                                setup=lambda: self.box.rescan(row.id, "MALICIOUS"))
        self.assertEqual(payload["previous_disposition"], "SUSPICIOUS")
        status, output, walker = self.respond(config, "email_retraction.verdict_changed",
                                              payload)
        self.assertEqual(status, "succeeded", output)
        run, outcomes, record = self.assert_retracted(output, payload, "post_delivery", "trash",
                                                      walker)
        self.assertEqual(sorted((o.recipient, o.status) for o in outcomes),
                         [("alice@corp.example", "retracted"),
                          ("carol@corp-mail.example", "retracted")])
        self.assertEqual(self.folder("alice@corp.example", promo), "trash")
        self.assertEqual(self.folder("carol@corp-mail.example", promo), "trash")
        self.assertIn("was SUSPICIOUS at delivery", run["comment"])

    def test_phish_submission_response(self):
        config = self.config()
        payload = self.dispatch(config, "phish_submission",
                                setup=lambda: self.box.confirm_submission("s-1", "MALICIOUS"))
        status, output, walker = self.respond(config, "email_retraction.phish_submission",
                                              payload)
        self.assertEqual(status, "succeeded", output)
        run, outcomes, record = self.assert_retracted(output, payload, "phish_submission",
                                                      "trash", walker)
        self.assertEqual(run["requested_by"], "alice@corp.example")  # the reporter
        self.assertIn("user report s-1", run["comment"])
        self.assertEqual(self.folder("alice@corp.example"), "trash")

    # -- policy says no ----------------------------------------------------------------------
    def test_switch_off_means_no_action_by_policy(self):
        config = self.config(auto_retract={"phish_submission_response": False})
        payload = self.dispatch(config, "phish_submission",
                                setup=lambda: self.box.confirm_submission("s-1", "MALICIOUS"))
        status, output, walker = self.respond(config, "email_retraction.phish_submission",
                                              payload)
        self.assertEqual(status, "succeeded")
        self.assertEqual(output["why"], "no action by policy: phish submission response is off "
                                        "(auto_retract.phish_submission_response: false)")
        self.assertEqual(output["plan"]["act"], False)
        self.assertIsNone(output["run_id"])
        self.assertEqual([ref for ref, _, _ in walker.trail],
                         ["email_retraction.plan", "email_retraction.auto_retract"])
        self.assertEqual(self.runs(), [])
        for address, folder in ABC_FOLDERS.items():
            self.assertEqual(self.folder(address), folder)

    def test_a_disposition_mapped_to_none(self):
        config = self.config(auto_retract={"dispositions": {"MALICIOUS": "none",
                                                            "SUSPICIOUS": "junk"}})
        payload = self.dispatch(config, "verdict")
        status, output, walker = self.respond(config, "email_retraction.verdict", payload)
        self.assertEqual(status, "succeeded")
        self.assertEqual(output["why"],
                         "no action by policy: auto_retract.dispositions maps MALICIOUS to none")
        self.assertEqual(self.runs(), [])
        self.assertEqual(self.folder("alice@corp.example"), "inbox")

    def test_preview_mode_moves_nothing_and_records_what_would_move(self):
        config = self.config(auto_retract={"mode": "preview"}, approval={"threshold": 0})
        payload = self.dispatch(config, "verdict")
        status, output, walker = self.respond(config, "email_retraction.verdict", payload)
        self.assertEqual(status, "succeeded", output)
        self.assertEqual(walker.inquiries, [])  # a preview never waits for an analyst
        run, outcomes = self.ledger_run(output["run_id"])
        self.assertIs(run["preview"], True)
        self.assertEqual((run["mode"], run["trigger"]), ("auto", "disposition"))
        statuses = {o.recipient: o.status for o in outcomes}
        self.assertEqual(statuses["alice@corp.example"], "previewed")
        for address, folder in ABC_FOLDERS.items():
            self.assertEqual(self.folder(address), folder)

    # -- approval ----------------------------------------------------------------------------
    def test_an_approved_run_records_who_approved(self):
        config = self.config(approval={"threshold": 3})
        payload = self.dispatch(config, "verdict")
        status, output, walker = self.respond(config, "email_retraction.verdict", payload,
                                              answer=approve())
        self.assertEqual(status, "succeeded", output)
        (inquiry,) = walker.inquiries
        self.assertEqual(inquiry["route"], "email_retraction")
        self.assertEqual((inquiry["ttl"], inquiry["users"], inquiry["roles"]), (1440, [], []))
        self.assertIn("Approve moving 8 copies of <abc@evil.example> 'Invoice'",
                      inquiry["schema"]["description"])
        self.assertIn("8 copies is more than approval.threshold (3)",
                      inquiry["schema"]["description"])
        self.assertEqual(output["decision"], {"approved": True, "analyst": "bob",
                                              "comment": "checked the headers"})
        run, outcomes = self.ledger_run(output["run_id"])
        self.assertTrue(run["comment"].endswith("; approved by bob: checked the headers"))
        self.assertTrue(all(o.comment == run["comment"] for o in outcomes))
        self.assertEqual(self.folder("alice@corp.example"), "trash")

    def test_a_rejected_run_retracts_nothing_and_says_who(self):
        config = self.config(approval={"threshold": 3})
        payload = self.dispatch(config, "verdict")
        status, output, walker = self.respond(config, "email_retraction.verdict", payload,
                                              answer=reject())
        self.assertEqual(status, "succeeded", output)
        self.assertEqual(output["why"], "rejected by bob: false positive; nothing retracted")
        self.assertEqual(output["decision"], {"approved": False, "analyst": "bob",
                                              "comment": "false positive"})
        self.assertIsNone(output["run_id"])
        self.assertNotIn("email_retraction.retract_campaign",
                         [ref for ref, _, _ in walker.trail])
        self.assertEqual(self.runs(), [])
        for address, folder in ABC_FOLDERS.items():
            self.assertEqual(self.folder(address), folder)

    def test_an_unnamed_answer_and_an_expired_inquiry(self):
        config = self.config(allow_hard_delete=True,
                             auto_retract={"dispositions": {"MALICIOUS": "hard_delete"}})
        payload = self.dispatch(config, "verdict")
        status, output, _ = self.respond(config, "email_retraction.verdict", payload,
                                         answer=lambda schema: {"approve": False})
        self.assertEqual(status, "succeeded")
        self.assertEqual(output["why"], "rejected by an unnamed analyst; nothing retracted")
        status, output, _ = self.respond(config, "email_retraction.verdict", payload,
                                         answer=None)
        self.assertEqual(status, "failed")
        self.assertEqual(output["why"], "no answer to the approval inquiry within 1440 minutes; "
                                        "nothing retracted")
        self.assertEqual(self.runs(), [])
        self.assertEqual(self.folder("alice@corp.example"), "inbox")

    # -- chunks ------------------------------------------------------------------------------
    def test_a_campaign_in_chunks_is_one_run(self):
        truth = self.box.generate_campaign(message_id="<wave@evil.example>", copies=23,
                                           seed=5, disposition="SPOOF", scanned_at="-3m")
        config = self.config(limits={"chunk_size": 5})
        payload = self.dispatch(config, "verdict", "<wave@evil.example>")
        self.assertEqual(sorted(payload["recipients"]), sorted(truth.recipients))
        status, output, walker = self.respond(config, "email_retraction.verdict", payload)
        self.assertEqual(status, "succeeded", output)
        chunks = [params for ref, params, _ in walker.trail if ref == "email_retraction.retract"]
        self.assertEqual([len(c["recipients"]) for c in chunks], [5, 5, 5, 5, 3])
        self.assertEqual({c["run_id"] for c in chunks}, {output["run_id"]})
        run, outcomes, record = self.assert_retracted(output, payload, "disposition", "junk",
                                                      walker)
        self.assertEqual(run["state"], "finished")
        self.assertEqual(record["total"], 23)

    # -- bad input -----------------------------------------------------------------------------
    def test_bad_input_fails_in_plan_naming_the_field(self):
        walker = Runtime(self.config())
        status, result = walker.run_action("email_retraction.auto_retract", {
            "message_id": "<abc@evil.example>", "recipients": ["alice@corp.example", "x y@z.io"],
            "disposition": "MALICIOUS", "verdict_time": "2024-01-01T00:00:00Z",
            "source": "cloudflare"})
        self.assertEqual(status, "failed")
        self.assertTrue(result["output"]["why"].startswith("invalid recipients: contains "
                                                           "whitespace"))
        self.assertEqual([ref for ref, _, _ in walker.trail],
                         ["email_retraction.plan", "email_retraction.auto_retract"])
        self.assertEqual(self.folder("alice@corp.example"), "inbox")

    def test_no_ledger_no_retraction(self):
        """A configured ledger that cannot be opened stops the run before any provider call;
        the workflow fails and says where to look."""
        config = self.config()
        payload = self.dispatch(config, "verdict")
        blocker = os.path.join(os.path.dirname(self.ledger_url[len("sqlite:///"):]), "a-file")
        with open(blocker, "w") as handle:
            handle.write("not a directory")
        config["ledger_url"] = "sqlite:///" + os.path.join(blocker, "ledger.db")
        status, output, walker = self.respond(config, "email_retraction.verdict", payload)
        self.assertEqual(status, "failed")
        self.assertTrue(output["why"].endswith("; retract_campaign failed (see its output and "
                                               "the ledger)"), output["why"])
        self.assertNotIn("email_retraction.retract", [ref for ref, _, _ in walker.trail])
        for address, folder in ABC_FOLDERS.items():
            self.assertEqual(self.folder(address), folder)


class WebhookEndToEndTest(BaseSensorTestCase):
    sensor_cls = VerdictSensor  # unused; the base class wants one

    @pytest.fixture(autouse=True)
    def _tenant(self, sandbox, tmp_path):
        self.box = sandbox
        self.ledger_url = "sqlite:///%s" % (tmp_path / "ledger.db")
        self.config = dict(sandbox.pack_config(), ledger_url=self.ledger_url)

    def post(self, body):
        """POST /api/v1/webhooks/email_retraction/verdict, as the rule hands it on."""
        walker = Runtime(self.config)
        (enforcement,) = RuleEngine(walker).dispatch("core.st2.webhook",
                                                     {"body": body, "headers": {}}, WEBHOOK)
        self.assertIsNone(enforcement.failure_reason)
        self.assertEqual(enforcement.problems, [])
        status, result = enforcement.status, enforcement.result
        return status, result["output"], walker

    def test_a_verdict_from_another_source(self):
        status, output, walker = self.post({
            "message_id": "abc@evil.example", "recipients": ["alice@corp.example",
                                                             "carol@corp-mail.example"],
            "disposition": "SUSPICIOUS", "verdict_time": "2024-05-01T12:00:00Z",
            "source": "sublime", "source_id": "alert-9"})
        self.assertEqual(status, "succeeded", output)
        self.assertEqual(output["verdict"]["message_id"], ABC)
        run_id = output["auto_retract"]["run_id"]
        with Ledger(self.ledger_url) as ledger:
            run = ledger.run(run_id)
            outcomes = ledger.outcomes_for_run(run_id)
        self.assertEqual((run["mode"], run["trigger"], run["destination"], run["requested_by"]),
                         ("auto", "disposition", "junk", "sublime"))
        self.assertEqual(run["comment"], "disposition: sublime verdict SUSPICIOUS (alert-9)")
        self.assertEqual(sorted(o.status for o in outcomes), ["retracted", "retracted"])
        self.assertEqual(run["verdict_time"], "2024-05-01T12:00:00+00:00")

    def test_an_invalid_body_is_refused_naming_the_field_and_nothing_moves(self):
        status, output, walker = self.post({
            "message_id": "abc@evil.example", "recipients": ["alice@corp.example"],
            "disposition": "MALICIOUS", "verdict_time": "tomorrow", "severity": "high"})
        self.assertEqual(status, "failed")
        self.assertIn("body.verdict_time must be ISO 8601", output["why"])
        self.assertIn("body.severity is not a field of a verdict", output["why"])
        self.assertEqual([ref for ref, _, _ in walker.trail],
                         ["email_retraction.validate_verdict", "email_retraction.intake_verdict"])
        with Ledger(self.ledger_url) as ledger:
            self.assertEqual(ledger.runs()[0], [])
        view = self.box.mailbox_view("alice@corp.example")
        self.assertEqual([c["folder"] for c in view["copies"] if c["message_id"] == ABC],
                         ["inbox"])
