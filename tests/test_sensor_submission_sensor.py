"""SubmissionSensor against the sandbox's Cloudflare Email Security API, through StackStorm's
sensor test base class: a confirmed user report becomes one `phish_submission` over every
delivered recipient of the reported message. Payloads are checked against the schema."""
import json

from st2tests.base import BaseSensorTestCase

from sensor_case import CloudflareSensorCase, trigger_schemas
from sandbox.tenant import Submission, utc_now
from submission_sensor import SubmissionSensor

pytest_plugins = ["sandbox.pytest_plugin"]

SCHEMAS = trigger_schemas("submission_sensor.yaml")
ABC = "<abc@evil.example>"
ABC_RECIPIENTS = ["alice@corp.example", "bob@corp.example", "shared-ops@corp.example",
                  "exec@corp.example", "left@corp.example", "carol@corp-mail.example",
                  "dave@corp-mail.example", "gone@corp-mail.example"]


class Crash(BaseException):
    """The sensor process dying (not an exception poll() may catch)."""


class SubmissionSensorTest(CloudflareSensorCase, BaseSensorTestCase):
    sensor_cls = SubmissionSensor
    schemas = SCHEMAS

    # -- helpers ------------------------------------------------------------------------------
    def start(self, **verdicts):
        return self.start_sensor(self.config(**verdicts))

    def dispatched(self):
        payloads = []
        for trigger, payload in self.checked_dispatches():
            self.assertEqual(trigger, "email_retraction.phish_submission")
            payloads.append(payload)
        return payloads

    def lines(self, level, fragment):
        return sum(1 for line in self.logged(level).splitlines()
                   if line.startswith(level + ": ") and fragment in line.split(" (", 1)[0])

    def hits(self, route):
        return self.sandbox.counters.snapshot()["routes"].get(route, 0)

    def report(self, submission_id, message_id, reporter="carol@corp-mail.example"):
        return self.sandbox.add_submission(submission_id=submission_id, message_id=message_id,
                                           requested_by=reporter, requested_ts="-3m")

    def abc_row(self):
        return next(v for v in self.tenant.verdicts.values() if v.message_id == ABC)

    # -- tests --------------------------------------------------------------------------------
    def test_confirmed_report_is_dispatched_once(self):
        sensor = self.start()
        sensor.poll()
        self.assertEqual(self.dispatched(), [])  # s-1 is still pending review
        self.sandbox.confirm_submission("s-1", "MALICIOUS")
        sensor.poll()
        payloads = self.dispatched()
        self.assertEqual(len(payloads), 1)
        payload = payloads[0]
        self.assertEqual(payload["submission_id"], "s-1")
        self.assertEqual(payload["reporter"], "alice@corp.example")
        self.assertEqual(payload["message_id"], ABC)
        self.assertEqual(payload["recipients"], ABC_RECIPIENTS)
        self.assertEqual(payload["disposition"], "MALICIOUS")
        self.assertEqual(payload["source"], "cloudflare")
        self.assertEqual(payload["source_id"], self.abc_row().id)
        self.assertEqual(payload["subject"], "Invoice")
        requested = self.tenant.submissions["s-1"].requested_ts
        self.assertEqual(payload["reported_at"][:19], requested.strftime("%Y-%m-%dT%H:%M:%S"))
        self.assertGreater(payload["verdict_time"], payload["reported_at"])
        self.assertTriggerDispatched("email_retraction.phish_submission", payload)
        sensor.poll()
        sensor.poll()
        self.assertEqual(len(self.dispatched()), 1)
        stored = json.loads(self.sensor_service.get_value("submissions.handled"))
        self.assertEqual(list(stored["ids"]), ["s-1"])

    def test_outcome_filtering(self):
        sensor = self.start()
        self.report("s-spam", ABC)
        self.report("s-bec", ABC)
        self.sandbox.confirm_submission("s-1", "NONE")  # reviewed: not phish after all
        self.sandbox.confirm_submission("s-spam", "SPAM")
        self.sandbox.confirm_submission("s-bec", "MALICIOUS-BEC")
        sensor.poll()
        payloads = self.dispatched()
        self.assertEqual([p["submission_id"] for p in payloads], ["s-bec"])
        self.assertEqual(payloads[0]["disposition"], "MALICIOUS")
        self.assertEqual(payloads[0]["source_disposition"], "MALICIOUS-BEC")
        # restarted with SPAM listed: s-spam follows, s-bec is not sent again
        self.start(submission_dispositions=["MALICIOUS", "SPAM"]).poll()
        self.assertEqual([p["submission_id"] for p in self.dispatched()], ["s-bec", "s-spam"])

    def test_every_delivered_recipient_of_the_message(self):
        """One message, three SMTP transactions (rows): the report covers all delivered
        ones, not the quarantined one."""
        other = self.sandbox.add_verdict(message_id=ABC, final_disposition="MALICIOUS",
                                         to=["dave@corp-mail.example", "newbie@corp.example"],
                                         scanned_at="-9m")
        held = self.sandbox.add_verdict(message_id=ABC, final_disposition="MALICIOUS",
                                        to=["held@corp.example"], scanned_at="-9m")
        with self.tenant.lock:
            self.tenant.verdicts[held["id"]].delivery_status = ["quarantined"]
        self.sandbox.confirm_submission("s-1", "MALICIOUS")
        self.start().poll()
        payload = self.dispatched()[0]
        self.assertEqual(payload["recipients"], ABC_RECIPIENTS + ["newbie@corp.example"])
        self.assertNotEqual(payload["source_id"], other["id"])

    def test_a_report_cloudflare_cannot_resolve_yet_is_retried(self):
        self.report("s-2", "<unscanned@evil.example>")
        self.sandbox.confirm_submission("s-2", "MALICIOUS")
        sensor = self.start()
        sensor.poll()
        sensor.poll()
        self.assertEqual(self.dispatched(), [])
        self.assertEqual(self.lines("warning", "Cloudflare report s-2 names no message"), 1)
        self.sandbox.add_verdict(message_id="<unscanned@evil.example>", to=["bob@corp.example"],
                                 final_disposition="NONE", scanned_at="-20m")
        sensor.poll()
        payloads = self.dispatched()
        self.assertEqual([(p["submission_id"], p["recipients"]) for p in payloads],
                         [("s-2", ["bob@corp.example"])])

    def test_nothing_delivered_nothing_dispatched(self):
        held = self.sandbox.add_verdict(message_id="<held@evil.example>", to=["bob@corp.example"],
                                        final_disposition="SUSPICIOUS", scanned_at="-20m")
        with self.tenant.lock:
            self.tenant.verdicts[held["id"]].delivery_status = ["quarantined"]
        self.report("s-3", "<held@evil.example>")
        self.sandbox.confirm_submission("s-3", "MALICIOUS")
        sensor = self.start()
        sensor.poll()
        self.assertEqual(self.dispatched(), [])
        self.assertIn("reached no mailbox", self.logged("info"))
        looked_up = self.hits("cloudflare.investigate.get")
        sensor.poll()  # answered: not looked up again
        self.assertEqual(self.hits("cloudflare.investigate.get"), looked_up)

    def test_restart_after_a_crash_between_dispatches(self):
        for i in range(4):
            self.report("s-w%d" % i, ABC)
            self.sandbox.confirm_submission("s-w%d" % i, "MALICIOUS")
        sensor = self.start()
        deliver = self.sensor_service.dispatch

        def dying(trigger, payload=None, trace_tag=None):
            if len(self.get_dispatched_triggers()) == 2:
                raise Crash()
            return deliver(trigger=trigger, payload=payload, trace_tag=trace_tag)

        self.sensor_service.dispatch = dying
        with self.assertRaises(Crash):
            sensor.poll()
        del self.sensor_service.dispatch
        self.assertEqual(len(self.dispatched()), 2)
        self.start().poll()
        ids = [p["submission_id"] for p in self.dispatched()]
        self.assertEqual(sorted(ids), ["s-w0", "s-w1", "s-w2", "s-w3"])

    def test_malformed_report_is_logged_once_and_skipped(self):
        now = utc_now()
        with self.tenant.lock:
            self.tenant.add_submission(Submission(
                submission_id="s-bad", requested_ts=now, requested_by="bob@corp.example",
                message_id=ABC, subject="", original_disposition="NONE",
                requested_disposition="MALICIOUS", outcome_disposition="EVIL",
                outcome="Confirmed evil", status="reviewed"))
        self.sandbox.confirm_submission("s-1", "MALICIOUS")
        sensor = self.start()
        sensor.poll()
        sensor.poll()
        self.assertEqual([p["submission_id"] for p in self.dispatched()], ["s-1"])
        self.assertEqual(self.lines("warning", "Cloudflare row s-bad: outcome_disposition"), 1)

    def test_api_outage_backs_off_and_recovers(self):
        self.sandbox.confirm_submission("s-1", "MALICIOUS")
        sensor = self.start()
        self.sandbox.set_faults(cloudflare={"rate_5xx": 1.0, "retry_after": 0})
        sensor.poll()
        failing = self.hits("cloudflare.submissions")
        self.assertGreater(failing, 1)
        sensor.poll()  # skipped
        self.assertEqual(self.hits("cloudflare.submissions"), failing)
        self.assertIn("HTTP 503", self.logged("warning"))
        self.sandbox.set_faults(clear=True)
        sensor.poll()
        self.assertEqual(len(self.dispatched()), 1)
        self.assertIn("works again after 1 failed poll(s)", self.logged("info"))
