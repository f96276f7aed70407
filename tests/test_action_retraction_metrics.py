"""`retraction_metrics`: the record and the card over a window, from a ledger filled by a real
`retract` run against the sandbox tenant; bad input names the parameter and opens nothing.
(The full scenario, on SQLite and PostgreSQL, is in test_st2_campaign_ledger.py.)"""
import os
from datetime import datetime, timedelta, timezone

import pytest

from retract import RetractAction
from retraction.config import ConfigError
from retraction.metrics import InvalidParameter
from retraction_metrics import RetractionMetricsAction
from st2tests.base import BaseActionTestCase

pytest_plugins = ["sandbox.pytest_plugin"]

MID = "<abc@evil.example>"
RECIPIENTS = ["alice@corp.example", "bob@corp.example", "shared-ops@corp.example",
              "exec@corp.example", "left@corp.example", "carol@corp-mail.example",
              "dave@corp-mail.example", "gone@corp-mail.example", "x@elsewhere.example"]


def minute(value):
    return value.replace(second=0, microsecond=0)


class RetractionMetricsActionTest(BaseActionTestCase):
    action_cls = RetractionMetricsAction

    @pytest.fixture(autouse=True)
    def _tenant(self, sandbox, tmp_path):
        self.box = sandbox
        self.db = tmp_path / "ledger.db"
        self.config = dict(sandbox.pack_config(), ledger_url="sqlite:///%s" % self.db)
        now = datetime.now(timezone.utc)
        self.since = minute(now - timedelta(days=1))
        self.until = minute(now + timedelta(hours=1))
        self.label = "%s to %s" % (self.since.strftime("%Y-%m-%d %H:%M UTC"),
                                   self.until.strftime("%Y-%m-%d %H:%M UTC"))

    def seed(self):
        ok, result = RetractAction(config=self.config).run(
            message_id=MID, recipients=RECIPIENTS, destination="junk",
            verdict_time=(datetime.now(timezone.utc) - timedelta(hours=2)).isoformat())
        assert ok
        return result

    def metrics(self, **params):
        window = {"since": self.since.isoformat(), "until": self.until.isoformat()}
        return self.get_action_instance(self.config).run(**dict(window, **params))

    def test_record_and_text_card(self):
        self.seed()
        ok, result = self.metrics()
        assert ok is True
        assert result["window"]["label"] == self.label and result["format"] == "text"
        record = result["record"]
        ttr = record.pop("time_to_retract")
        assert record == {
            "window": result["window"], "filters": {},
            "total": 9, "retracted": 4, "retracted_pct": 44.4,
            "already_in_destination": 1, "already_in_destination_pct": 11.1,
            "failed": 4, "failed_pct": 44.4,
            "failed_by_reason": {"not_found": 0, "not_a_mailbox": 2, "not_authorized": 1,
                                 "out_of_scope": 1, "provider_error": 0},
            "failed_by_reason_pct": {"not_found": 0.0, "not_a_mailbox": 22.2,
                                     "not_authorized": 11.1, "out_of_scope": 11.1,
                                     "provider_error": 0.0},
            "previewed": 0, "preview_failed": 0,
            "read": 2, "unread": 2, "read_unknown": 0, "read_pct": 50.0, "unread_pct": 50.0,
            "auto": 0, "auto_pct": 0.0, "manual": 9, "manual_pct": 100.0,
            "by_provider": {"microsoft": 5, "google": 3, "unspecified": 1},
            "by_destination": {"junk": 9},
            "by_disposition": {"unspecified": 9},
            "by_trigger": {"analyst": 9},
        }
        assert ttr["count"] == 4
        assert 7200 <= ttr["p50_s"] <= ttr["p95_s"] <= ttr["max_s"] < 7260
        assert result["card"].splitlines() == [
            "Retractions · " + self.label,
            "Total retractions: 9",
            "Success: 4 (44.4%)",
            "Fail: 4 (44.4%): not_a_mailbox 2, not_authorized 1, out_of_scope 1",
            "Already in destination: 1 (11.1%)",
            "Unread / Read: 2 / 2",
            "Auto / Manual: 0 / 9",
            "Time to retract: p50 2h 00m · p95 2h 00m · max 2h 00m",
            "By provider: microsoft 5, google 3, unspecified 1",
            "By destination: junk 9",
            "By disposition: unspecified 9",
            "By trigger: analyst 9",
        ]

    def test_formats_and_filters(self):
        self.seed()
        ok, md = self.metrics(format="markdown", provider="google")
        assert md["filters"] == {"provider": "google"}
        assert md["card"].splitlines() == [
            "**Retractions** · " + self.label,
            "_Filters: provider=google_",
            "",
            "- **Total retractions:** 3",
            "- **Success:** 1 (33.3%)",
            "- **Fail:** 1 (33.3%): not_a_mailbox 1",
            "- **Already in destination:** 1 (33.3%)",
            "- **Unread / Read:** 0 / 1",
            "- **Auto / Manual:** 0 / 3",
            "- **Time to retract:** p50 2h 00m · p95 2h 00m · max 2h 00m",
            "- **By provider:** google 3",
            "- **By destination:** junk 3",
            "- **By disposition:** unspecified 3",
            "- **By trigger:** analyst 3",
        ]
        ok, html = self.metrics(format="HTML", mode="manual", trigger="analyst")
        assert html["format"] == "html" and html["record"]["total"] == 9
        assert "<tr><th>Total retractions</th><td>9</td></tr>" in html["card"]
        assert "<p class=\"filters\">Filters: mode=manual, trigger=analyst</p>" in html["card"]
        ok, js = self.metrics(format="json", mode="auto")
        assert js["card"] is None and js["record"]["total"] == 0
        ok, last = self.get_action_instance(self.config).run(last="1h")
        assert last["window"]["label"] == "last 1h" and last["record"]["total"] == 9
        assert last["card"].splitlines()[1].startswith("Window: ")

    def test_approval_decisions_of_the_window_are_counted(self):
        from retraction.ledger import Ledger

        self.seed()
        with Ledger(self.config["ledger_url"]) as ledger:
            for decision, trigger in (("approved", "disposition"), ("rejected", "disposition"),
                                      ("rejected", "post_delivery")):
                ledger.record_decision(MID, decision, trigger=trigger, destination="trash",
                                       disposition="MALICIOUS", copies=400)
        ok, result = self.metrics()
        assert result["decisions"] == {"approved": 1, "rejected": 2}
        ok, result = self.metrics(trigger="post_delivery", format="json")
        assert result["decisions"] == {"approved": 0, "rejected": 1}
        ok, result = self.metrics(provider="microsoft")
        assert result["decisions"] is None and result["record"]["total"] > 0

    def test_bad_input_names_the_parameter_and_opens_nothing(self):
        cases = [
            ({"last": "3x"}, "last"),
            ({"last": "0h"}, "last"),
            ({"last": "24h", "since": "2024-05-01"}, "last"),
            ({"since": "2024-05-02", "until": "2024-05-01"}, "since"),
            ({"since": "yesterday"}, "since"),
            ({"since": "2024-05-01", "until": "later"}, "until"),
            ({"provider": "yahoo"}, "provider"),
            ({"mode": "robot"}, "mode"),
            ({"trigger": "whim"}, "trigger"),
            ({"disposition": "EVIL"}, "disposition"),
            ({"destination": "void"}, "destination"),
            ({"format": "pdf"}, "format"),
        ]
        for params, field in cases:
            with pytest.raises(InvalidParameter) as caught:
                self.get_action_instance(self.config).run(**params)
            assert caught.value.field == field, (params, caught.value)
            assert str(caught.value).startswith(field + ": ")
        assert not os.path.exists(str(self.db))  # the ledger was never opened

    def test_no_ledger_is_an_error_naming_ledger_url(self):
        with pytest.raises(ConfigError) as caught:
            self.get_action_instance(dict(self.config, ledger_url="")).run(last="24h")
        assert caught.value.key == "ledger_url"
