"""`verdicts.per_page`: the page size the sensors ask of the verdict source, read from the pack
config (default Cloudflare's maximum, 1000), against the sandbox's Cloudflare API."""
import pytest
from st2tests.base import BaseSensorTestCase

from submission_sensor import SubmissionSensor
from verdict_sensor import VerdictSensor

pytest_plugins = ["sandbox.pytest_plugin"]


class VerdictPageSizeTest(BaseSensorTestCase):
    sensor_cls = VerdictSensor

    @pytest.fixture(autouse=True)
    def _sandbox(self, sandbox):
        self.sandbox = sandbox

    def investigate_hits(self):
        snap = self.sandbox.counters.snapshot()
        return snap["statuses"].get("cloudflare.investigate", {}).get("200", 0)

    def poll_with(self, per_page):
        config = self.sandbox.pack_config()
        if per_page is not None:
            config["verdicts"] = dict(config.get("verdicts") or {}, per_page=per_page)
        before = self.investigate_hits()
        sensor = self.get_sensor_instance(config=config, poll_interval=60)
        sensor.setup()
        sensor.poll()
        return self.investigate_hits() - before

    def test_the_configured_page_size_is_what_the_sensor_asks(self):
        for i in range(3):
            self.sandbox.add_verdict(message_id="<page%d@evil.example>" % i,
                                     final_disposition="MALICIOUS", scanned_at="-%dm" % (i + 1),
                                     to=["alice@corp.example"])
        # five rows (the basic tenant's two and three more): one page of the default 1000
        self.assertEqual(self.poll_with(None), 1)
        dispatched = [p["message_id"] for t, p in
                      ((d["trigger"], d["payload"]) for d in self.get_dispatched_triggers())
                      if t == "email_retraction.verdict"]
        self.assertEqual(len(dispatched), 5)
        # a fresh sensor (new datastore) with pages of two rows: three pages for five rows
        self.setUp()
        self.assertEqual(self.poll_with(2), 3)
        again = [d["payload"]["message_id"] for d in self.get_dispatched_triggers()
                 if d["trigger"] == "email_retraction.verdict"]
        self.assertEqual(sorted(again), sorted(dispatched))


class SubmissionPageSizeTest(BaseSensorTestCase):
    sensor_cls = SubmissionSensor

    @pytest.fixture(autouse=True)
    def _sandbox(self, sandbox):
        self.sandbox = sandbox

    def test_the_submission_poll_reads_the_same_setting(self):
        from retraction.verdicts.poll import submission_poll, verdict_poll

        config = self.sandbox.pack_config()
        config["verdicts"] = dict(config.get("verdicts") or {}, per_page=7)
        store = self.sensor_service
        made = [verdict_poll(config, store, lambda *a, **k: None),
                submission_poll(config, store, lambda *a, **k: None)]
        self.assertEqual([poll.per_page for poll in made], [7, 7])
