"""VerdictSensor against the sandbox's Cloudflare Email Security API, through StackStorm's
sensor test base class: new verdicts, post-delivery changes, paging, restarts, malformed rows,
outages, disposition filtering. Every dispatched payload is checked against the trigger's
payload_schema (StackStorm drops a payload that does not match, with only a warning)."""
import json
from datetime import timedelta

from st2tests.base import BaseSensorTestCase

from sensor_case import CloudflareSensorCase, trigger_schemas
from sandbox.tenant import Verdict, utc_now
from verdict_sensor import VerdictSensor

pytest_plugins = ["sandbox.pytest_plugin"]

SCHEMAS = trigger_schemas("verdict_sensor.yaml")
BASIC_IDS = ("<abc@evil.example>", "<o'brien+promo@evil.example>")


class Crash(BaseException):
    """The sensor process dying (not an exception poll() may catch)."""


class VerdictSensorTest(CloudflareSensorCase, BaseSensorTestCase):
    sensor_cls = VerdictSensor
    schemas = SCHEMAS

    # -- helpers ------------------------------------------------------------------------------
    def start(self, config=None):
        return self.start_sensor(config or self.config())

    def dispatched(self, trigger=None):
        """Payloads dispatched so far (of one trigger), each valid against its schema."""
        return [payload for name, payload in self.checked_dispatches()
                if trigger is None or name == "email_retraction." + trigger]

    def reports(self, row_prefix):
        """How many warnings reported a row whose id starts with `row_prefix`."""
        return sum(1 for line in self.logged("warning").splitlines()
                   if line.startswith("warning: Cloudflare row " + row_prefix))

    def hits(self, status=None):
        snap = self.sandbox.counters.snapshot()
        if status is None:
            return snap["routes"].get("cloudflare.investigate", 0)
        return snap["statuses"].get("cloudflare.investigate", {}).get(str(status), 0)

    def add_row(self, message_id, disposition, scanned_at="-1m", **spec):
        spec.setdefault("to", ["alice@corp.example", "carol@corp-mail.example"])
        return self.sandbox.add_verdict(message_id=message_id, final_disposition=disposition,
                                        scanned_at=scanned_at, **spec)

    # -- tests --------------------------------------------------------------------------------
    def test_new_verdicts_are_dispatched_once(self):
        sensor = self.start()
        sensor.poll()
        payloads = self.dispatched("verdict")
        self.assertEqual(sorted(p["message_id"] for p in payloads), sorted(BASIC_IDS))
        abc = next(p for p in payloads if p["message_id"] == "<abc@evil.example>")
        row = next(v for v in self.tenant.verdicts.values() if v.message_id == abc["message_id"])
        self.assertEqual(abc["recipients"], row.recipients)
        self.assertEqual(abc["disposition"], "MALICIOUS")
        self.assertEqual(abc["source"], "cloudflare")
        self.assertEqual(abc["source_id"], row.id)
        self.assertEqual(abc["sender"], "billing@evil.example")
        self.assertEqual(abc["subject"], "Invoice")
        self.assertEqual(abc["delivery_mode"], "DIRECT")
        self.assertEqual(abc["verdict_time"][:19],
                         row.scanned_at.strftime("%Y-%m-%dT%H:%M:%S"))
        self.assertTriggerDispatched("email_retraction.verdict", abc)

        sensor.poll()
        sensor.poll()
        self.assertEqual(len(self.dispatched()), 2)  # nothing twice
        new = self.add_row("<fresh@evil.example>", "SPOOF")
        sensor.poll()
        self.assertEqual([p["source_id"] for p in self.dispatched()][2:], [new["id"]])

    def test_state_lives_in_the_datastore_as_json(self):
        self.start().poll()
        keys = {k.name.split(":", 1)[1]: k.value for k in self.sensor_service.list_values()}
        self.assertIn("verdicts.checkpoint", keys)
        buckets = [k for k in keys if k.startswith("verdicts.seen.")]
        self.assertTrue(buckets)
        rows = {}
        for name in buckets:
            rows.update(json.loads(keys[name])["rows"])
        self.assertEqual(sorted(rows.values()), ["M", "S"])

    def test_disposition_changed_after_delivery(self):
        sensor = self.start()
        clean = self.add_row("<later-bad@evil.example>", "NONE")
        sensor.poll()
        self.assertEqual(len(self.dispatched()), 2)  # the clean message dispatched nothing
        self.sandbox.rescan(clean["id"], "MALICIOUS")  # Post Delivery Response re-scan
        abc = next(v for v in self.tenant.verdicts.values()
                   if v.message_id == "<abc@evil.example>")
        self.sandbox.rescan(abc.id, "SPOOF")
        sensor.poll()
        changed = {p["message_id"]: p for p in self.dispatched("verdict_changed")}
        self.assertEqual(set(changed), {"<later-bad@evil.example>", "<abc@evil.example>"})
        self.assertEqual(changed["<later-bad@evil.example>"]["previous_disposition"], "NONE")
        self.assertEqual(changed["<later-bad@evil.example>"]["disposition"], "MALICIOUS")
        self.assertEqual(changed["<abc@evil.example>"]["previous_disposition"], "MALICIOUS")
        self.assertEqual(changed["<abc@evil.example>"]["disposition"], "SPOOF")
        self.assertEqual(len(self.dispatched("verdict")), 2)
        sensor.poll()
        self.assertEqual(len(self.dispatched()), 4)

    def test_lookback_repoll_sees_changes_that_keep_the_scan_time(self):
        """Cloudflare may change a row's disposition without moving its scan time; the
        re-poll of the lookback window still sees it. It also sees rows indexed late."""
        sensor = self.start()
        quiet = self.add_row("<quiet@evil.example>", "SUSPICIOUS", scanned_at="-3h")
        sensor.poll()
        with self.tenant.lock:
            self.tenant.verdicts[quiet["id"]].final_disposition = "MALICIOUS"
        late = self.add_row("<late@evil.example>", "MALICIOUS", scanned_at="-2h")
        seen_at = utc_now()
        sensor.poll()
        changed = self.dispatched("verdict_changed")
        self.assertEqual([(p["source_id"], p["previous_disposition"]) for p in changed],
                         [(quiet["id"], "SUSPICIOUS")])
        # the scan time (3 h ago) does not date the change; the poll that saw it does
        self.assertGreaterEqual(changed[0]["verdict_time"],
                                seen_at.strftime("%Y-%m-%dT%H:%M:%S"))
        self.assertIn(late["id"], [p["source_id"] for p in self.dispatched("verdict")])
        sensor.poll()
        self.assertEqual(len(self.dispatched()), 5)

    def test_rows_indexed_late_within_the_overlap_are_remembered(self):
        """A clean row that shows up a little after the window it belongs to was read is
        still known, so its later re-scan is a post-delivery change, not a new verdict."""
        sensor = self.start()
        sensor.poll()
        late = self.add_row("<late-clean@evil.example>", "NONE", scanned_at="-30s")
        sensor.poll()
        self.sandbox.rescan(late["id"], "MALICIOUS")
        sensor.poll()
        self.assertEqual([(p["source_id"], p["previous_disposition"])
                          for p in self.dispatched("verdict_changed")], [(late["id"], "NONE")])
        self.assertEqual(len(self.dispatched("verdict")), 2)

    def test_disposition_filtering(self):
        sensor = self.start(self.config(dispositions=["MALICIOUS"]))
        bec = self.add_row("<bec@evil.example>", "MALICIOUS-BEC")
        for word in ("SPAM", "BULK", "ENCRYPTED", "EXTERNAL", "UNKNOWN", "NONE"):
            self.add_row("<%s@evil.example>" % word.lower(), word)
        sensor.poll()
        payloads = {p["message_id"]: p for p in self.dispatched("verdict")}
        self.assertEqual(set(payloads), {"<abc@evil.example>", "<bec@evil.example>"})
        self.assertEqual(payloads["<bec@evil.example>"]["disposition"], "MALICIOUS")
        self.assertEqual(payloads["<bec@evil.example>"]["source_disposition"], "MALICIOUS-BEC")
        self.assertEqual(payloads["<bec@evil.example>"]["source_id"], bec["id"])
        # a row seen but not listed is still known: its change is a post-delivery change
        promo = next(v for v in self.tenant.verdicts.values()
                     if v.message_id == BASIC_IDS[1])
        self.sandbox.rescan(promo.id, "MALICIOUS")
        sensor.poll()
        self.assertEqual([(p["message_id"], p["previous_disposition"])
                          for p in self.dispatched("verdict_changed")],
                         [(BASIC_IDS[1], "SUSPICIOUS")])

    def test_the_other_spelling_narrows_the_filter(self):
        sensor = self.start(self.config(dispositions=["MALICIOUS-BEC", "ENCRYPTED"]))
        self.add_row("<bec@evil.example>", "MALICIOUS-BEC")
        self.add_row("<sealed@evil.example>", "ENCRYPTED")
        sensor.poll()
        got = sorted((p["message_id"], p["disposition"], p["source_disposition"])
                     for p in self.dispatched())
        self.assertEqual(got, [("<bec@evil.example>", "MALICIOUS", "MALICIOUS-BEC"),
                               ("<sealed@evil.example>", "NONE", "ENCRYPTED")])

    def test_only_delivered_mail(self):
        sensor = self.start()
        held = self.add_row("<held@evil.example>", "MALICIOUS")
        bcc = self.add_row("<bcc@evil.example>", "MALICIOUS")
        report = self.add_row("<report@evil.example>", "MALICIOUS")
        with self.tenant.lock:
            self.tenant.verdicts[held["id"]].delivery_status = ["quarantined"]
            self.tenant.verdicts[bcc["id"]].delivery_status = ["quarantined"]
            self.tenant.verdicts[bcc["id"]].delivery_mode = "BCC"  # delivered by the mail system
            self.tenant.verdicts[report["id"]].delivery_mode = "REVIEW_SUBMISSION"
        queued = self.add_row("<queued@evil.example>", "SUSPICIOUS", scanned_at="-30m")
        with self.tenant.lock:
            self.tenant.verdicts[queued["id"]].delivery_status = ["deferred"]
        sensor.poll()
        ids = [p["source_id"] for p in self.dispatched()]
        self.assertIn(bcc["id"], ids)
        self.assertNotIn(held["id"], ids)
        self.assertNotIn(report["id"], ids)
        self.assertNotIn(queued["id"], ids)
        # An administrator releases the held message: a human decision, not retracted again.
        # The deferred one is delivered at last: now it is a verdict.
        with self.tenant.lock:
            self.tenant.verdicts[held["id"]].delivery_status = ["delivered"]
            self.tenant.verdicts[queued["id"]].delivery_status = ["delivered"]
        sensor.poll()
        ids = [p["source_id"] for p in self.dispatched()]
        self.assertNotIn(held["id"], ids)
        self.assertEqual(ids.count(queued["id"]), 1)
        self.assertEqual(len(ids), 4)
        # ...but a re-scan of the released message to another verdict is news
        self.sandbox.rescan(held["id"], "SPOOF")
        sensor.poll()
        self.assertEqual([(p["source_id"], p["previous_disposition"])
                          for p in self.dispatched("verdict_changed")],
                         [(held["id"], "MALICIOUS")])

    def test_paging_across_pages(self):
        """Cloudflare's per_page maximum (1000) is what the sensor asks for: 1,200 rows take
        two pages, and the verdicts on the second page are dispatched like the first."""
        now = utc_now()
        with self.tenant.lock:
            for i in range(1200):
                disposition = "MALICIOUS" if i in (3, 999, 1000, 1199) else "NONE"
                self.tenant.add_verdict(Verdict(
                    id="bulk-%04d" % i, message_id="<bulk%04d@evil.example>" % i,
                    sender="x@evil.example", recipients=["dave@corp-mail.example"], subject="",
                    final_disposition=disposition, scanned_at=now - timedelta(seconds=1200 - i),
                    sent_at=now - timedelta(seconds=1200 - i)))
        sensor = self.start()
        sensor.poll()
        self.assertEqual(self.hits(200), 2)  # 1,200 rows + 2 basic: two pages of 1000
        ids = sorted(p["source_id"] for p in self.dispatched("verdict"))
        self.assertEqual([i for i in ids if i.startswith("bulk-")],
                         ["bulk-0003", "bulk-0999", "bulk-1000", "bulk-1199"])
        self.assertEqual(len(ids), 6)

    def test_restart_after_a_crash_between_dispatches(self):
        """The process dies while dispatching: a new instance with the same datastore
        dispatches what was left, and nothing it had already dispatched."""
        for i in range(30):
            self.add_row("<wave%02d@evil.example>" % i, "MALICIOUS", scanned_at="-%ds" % (90 - i))
        sensor = self.start()
        deliver = self.sensor_service.dispatch

        def dying(trigger, payload=None, trace_tag=None):
            if len(self.get_dispatched_triggers()) == 12:
                raise Crash()
            return deliver(trigger=trigger, payload=payload, trace_tag=trace_tag)

        self.sensor_service.dispatch = dying
        with self.assertRaises(Crash):
            sensor.poll()
        del self.sensor_service.dispatch  # the next process dispatches normally
        self.assertEqual(len(self.dispatched()), 12)
        # the page never finished: the twelve dispatches are in the journal, not the buckets
        journal = json.loads(self.sensor_service.get_value("verdicts.dispatched"))["rows"]
        self.assertEqual(sorted(journal), sorted(p["source_id"] for p in self.dispatched()))
        self.start().poll()
        journal = json.loads(self.sensor_service.get_value("verdicts.dispatched"))["rows"]
        self.assertEqual(journal, {})  # folded into the hour buckets
        ids = [p["source_id"] for p in self.dispatched()]
        self.assertEqual(len(ids), 32)
        self.assertEqual(len(set(ids)), 32)

    def test_a_failed_dispatch_is_retried_not_lost(self):
        sensor = self.start()
        deliver = self.sensor_service.dispatch
        failures = []

        def flaky(trigger, payload=None, trace_tag=None):
            if not failures:
                failures.append(payload["source_id"])
                raise RuntimeError("message bus unavailable")
            return deliver(trigger=trigger, payload=payload, trace_tag=trace_tag)

        self.sensor_service.dispatch = flaky
        sensor.poll()  # the first dispatch fails: the poll stops, logged, backs off one poll
        self.assertEqual(self.dispatched(), [])
        self.assertIn("RuntimeError: message bus unavailable", self.logged("exception"))
        sensor.poll()  # skipped
        sensor.poll()
        ids = [p["source_id"] for p in self.dispatched()]
        self.assertEqual(len(ids), 2)
        self.assertIn(failures[0], ids)

    def test_restart_after_an_outage_in_the_middle_of_paging(self):
        now = utc_now()
        with self.tenant.lock:
            for i in range(1100):
                disposition = "MALICIOUS" if i in (10, 500, 1050, 1099) else "NONE"
                self.tenant.add_verdict(Verdict(
                    id="page-%04d" % i, message_id="<page%04d@evil.example>" % i,
                    sender="x@evil.example", recipients=["bob@corp.example"], subject="",
                    final_disposition=disposition, scanned_at=now - timedelta(seconds=3000 - i),
                    sent_at=now - timedelta(seconds=3000 - i)))
        sensor = self.start()
        deliver = self.sensor_service.dispatch

        def dispatch_then_fail(trigger, payload=None, trace_tag=None):
            result = deliver(trigger=trigger, payload=payload, trace_tag=trace_tag)
            if payload["source_id"] == "page-0500":  # the API fails before the next page
                self.sandbox.set_faults(cloudflare={"rate_5xx": 1.0, "retry_after": 0})
            return result

        self.sensor_service.dispatch = dispatch_then_fail
        sensor.poll()
        self.assertIn("HTTP 503", self.logged("warning"))
        self.assertIsNone(self.sensor_service.get_value("verdicts.checkpoint"))
        first = [p["source_id"] for p in self.dispatched()]
        self.assertEqual(sorted(i for i in first if i.startswith("page-")),
                         ["page-0010", "page-0500"])
        del self.sensor_service.dispatch
        self.sandbox.set_faults(clear=True)
        self.start().poll()  # a new process
        ids = [p["source_id"] for p in self.dispatched()]
        self.assertEqual(len(ids), len(set(ids)))
        self.assertEqual(sorted(i for i in ids if i.startswith("page-")),
                         ["page-0010", "page-0500", "page-1050", "page-1099"])
        self.assertEqual(len(ids), 6)

    def test_malformed_rows_are_logged_once_and_skipped(self):
        now = utc_now()
        bad = [
            Verdict(id="bad-msgid", message_id="not a message id", sender="x@evil.example",
                    recipients=["alice@corp.example"], subject="", final_disposition="MALICIOUS",
                    scanned_at=now, sent_at=now),
            Verdict(id="bad-rcpt", message_id="<r@evil.example>", sender="x@evil.example",
                    recipients=["not an address", "bob@@corp"], subject="",
                    final_disposition="MALICIOUS", scanned_at=now, sent_at=now),
            Verdict(id="bad-word", message_id="<w@evil.example>", sender="x@evil.example",
                    recipients=["alice@corp.example"], subject="", final_disposition="EVIL",
                    scanned_at=now, sent_at=now),
        ]
        with self.tenant.lock:
            for verdict in bad:
                self.tenant.add_verdict(verdict)
        partly = self.add_row("<partly@evil.example>", "MALICIOUS",
                              to=["alice@corp.example", "x y@corp.example"])
        sensor = self.start()
        sensor.poll()
        ids = [p["source_id"] for p in self.dispatched()]
        self.assertEqual(len(ids), 3)  # the two basic rows and the partly good one
        self.assertIn(partly["id"], ids)
        payload = next(p for p in self.dispatched() if p["source_id"] == partly["id"])
        self.assertEqual(payload["recipients"], ["alice@corp.example"])
        warnings = self.logged("warning")
        for row_id, field in (("bad-msgid", "message_id"), ("bad-rcpt", "client_recipients"),
                              ("bad-word", "final_disposition")):
            self.assertIn("Cloudflare row %s: %s" % (row_id, field), warnings)
        self.assertIn("left out recipients", warnings)
        self.assertEqual(self.reports("bad-"), 3)
        sensor.poll()  # the rows are read again (overlap): not reported again
        self.assertEqual(self.reports("bad-"), 3)
        self.assertEqual(len(self.dispatched()), 3)

    def test_api_outage_backs_off_and_recovers(self):
        sensor = self.start()
        self.sandbox.set_faults(cloudflare={"rate_5xx": 1.0, "retry_after": 0})
        sensor.poll()  # fails: skips 1
        failed_hits = self.hits()
        self.assertEqual(self.hits(503), failed_hits)
        self.assertGreater(failed_hits, 1)  # urllib3 retried within the poll
        sensor.poll()  # skipped
        self.assertEqual(self.hits(), failed_hits)
        sensor.poll()  # fails again: skips 2
        sensor.poll()
        sensor.poll()
        self.assertEqual(self.hits(), 2 * failed_hits)
        self.assertEqual(self.dispatched(), [])
        self.assertIn("skipping the next 2 poll(s)", self.logged("warning"))
        self.sandbox.set_faults(clear=True)
        sensor.poll()
        self.assertEqual(len(self.dispatched("verdict")), 2)
        self.assertIn("works again after 2 failed poll(s)", self.logged("info"))
        sensor.poll()  # no backoff left
        self.assertEqual(self.hits(200), self.hits() - 2 * failed_hits)
        self.assertGreater(self.hits(200), 1)

    def test_throttling_honours_retry_after(self):
        sensor = self.start()
        self.sandbox.set_faults(cloudflare={"rate_429": 1.0, "retry_after": 150})
        sensor.poll()
        self.assertEqual(self.hits(429), 1)  # a 429 is not retried inside the poll
        for _ in range(3):  # Retry-After 150 s at a 60 s interval: three polls skipped
            sensor.poll()
        self.assertEqual(self.hits(), 1)
        self.sandbox.set_faults(clear=True)
        sensor.poll()
        self.assertEqual(len(self.dispatched()), 2)

    def test_refused_token_is_reported_not_logged(self):
        config = self.config()
        config["cloudflare"]["api_token"] = "wrong-token-4711"
        sensor = self.start(config)
        sensor.poll()
        warnings = self.logged("warning")
        self.assertIn("HTTP 401", warnings)
        self.assertNotIn("wrong-token-4711", self.logged())
        self.assertNotIn("wrong-token-4711", repr(sensor._poll.client))
        self.assertEqual(self.dispatched(), [])

    def test_unconfigured_cloudflare_leaves_the_sensor_idle(self):
        config = self.config()
        config["cloudflare"]["api_token"] = ""
        sensor = self.start(config)
        sensor.poll()
        self.assertIn("cloudflare.api_token", self.logged("error"))
        self.assertEqual(self.hits(), 0)
        self.assertEqual(self.dispatched(), [])
        sensor.cleanup()
