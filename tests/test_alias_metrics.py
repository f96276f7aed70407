"""The `retractions` (the card) and `retraction_details` (View details) aliases: what each
format extracts, and the chat replies rendered from real executions of the real
`retraction_metrics` / `retraction_details` actions over a ledger that real `retract` and
`restore` runs against the sandbox tenant filled."""
import re
from datetime import datetime, timedelta, timezone

import pytest

from restore import RestoreAction
from retract import RetractAction
from retraction_details import RetractionDetailsAction
from retraction_metrics import RetractionMetricsAction
from st2tests.base import BaseActionAliasTestCase
from test_alias_formats import chat_parameters, execute, render_result

pytest_plugins = ["sandbox.pytest_plugin"]

MID = "<abc@evil.example>"
BASIC_RECIPIENTS = ["alice@corp.example", "bob@corp.example", "shared-ops@corp.example",
                    "exec@corp.example", "left@corp.example", "carol@corp-mail.example",
                    "dave@corp-mail.example", "gone@corp-mail.example"]
CARD = "retractions( last {{last=24h}})?"
DETAILS = "retraction details( last {{last=24h}})?( {{status}})?"


class Reports(BaseActionAliasTestCase):
    action_cls = None

    @pytest.fixture(autouse=True)
    def _tenant(self, sandbox, tmp_path):
        self.box = sandbox
        self.config = sandbox.pack_config()
        self.config["ledger_url"] = "sqlite:///%s" % (tmp_path / "ledger.db")

    def history(self):
        """A retraction 2h after the verdict, with every kind of outcome, then a preview."""
        verdict = (datetime.now(timezone.utc) - timedelta(hours=2, seconds=20)).isoformat()
        params = {"message_id": MID, "recipients": BASIC_RECIPIENTS + ["x@elsewhere.example"],
                  "destination": "junk", "disposition": "MALICIOUS", "verdict_time": verdict}
        execution = execute(RetractAction, self.config, params, "email_retraction.retract")
        assert execution["status"] == "succeeded"
        execution = execute(RetractAction, self.config, {
            "message_id": "<o'brien+promo@evil.example>", "preview": True,
            "recipients": ["alice@corp.example", "carol@corp-mail.example"]},
            "email_retraction.retract")
        assert execution["result"]["result"]["counts"]["by_status"] == {"previewed": 2}

    def chat(self, command):
        params = chat_parameters(self.action_alias_name, command)
        execution = execute(self.action_cls, self.config, params,
                            self.action_alias_db.action_ref)
        return execution, render_result(self.action_alias_name, execution)


class RetractionsAliasTest(Reports):
    action_alias_name = "retractions"
    action_cls = RetractionMetricsAction

    def test_formats(self):
        self.assertExtractedParametersMatch(CARD, "retractions", {"last": "24h"})
        self.assertExtractedParametersMatch(CARD, "retractions last 7d", {"last": "7d"})
        self.assertExtractedParametersMatch(CARD, "retractions last 1h provider=google",
                                            {"last": "1h", "provider": "google"})

    def test_card_from_a_real_ledger(self):
        self.history()
        execution, reply = self.chat("retractions")
        assert execution["status"] == "succeeded"
        lines = reply.splitlines()
        assert lines[:7] == [
            "*Retractions* · last 24h",
            "Total: 9",
            "Success: 4 (44.4%)",
            "Fail: 4 (44.4%): not_a_mailbox 2, not_authorized 1, out_of_scope 1",
            "Already in destination: 1 (11.1%)",
            "Unread / Read: 2 / 2",
            "Auto / Manual: 0 / 9",
        ]
        assert re.fullmatch(r"Time to retract: p50 2h 0[01]m · p95 2h 0[01]m · max 2h 0[01]m",
                            lines[7]), lines[7]
        assert lines[8:] == ["Previewed, not moved: 2"]

    def test_filters_and_an_empty_window(self):
        _, reply = self.chat("retractions last 15m")
        assert reply.splitlines() == [
            "*Retractions* · last 15m", "Total: 0", "Success: 0 (0.0%)", "Fail: 0 (0.0%)",
            "Already in destination: 0 (0.0%)", "Unread / Read: 0 / 0", "Auto / Manual: 0 / 0",
            "Time to retract: n/a"]
        execute(RetractAction, self.config, {"message_id": MID, "recipients": [
            "carol@corp-mail.example", "gone@corp-mail.example", "alice@corp.example"]},
            "email_retraction.retract")
        _, reply = self.chat("retractions last 1h provider=google")
        lines = reply.splitlines()
        assert lines[0] == "*Retractions* · last 1h · provider=google"
        assert lines[1:4] == ["Total: 2", "Success: 1 (50.0%)",
                              "Fail: 1 (50.0%): not_a_mailbox 1"]
        assert re.fullmatch(r"Time to retract: p50 \d+\.\ds · p95 \d+\.\ds · max \d+\.\ds",
                            lines[7]), lines[7]

    def test_reply_to_bad_input(self):
        execution, reply = self.chat("retractions last 3y")
        assert execution["status"] == "failed"
        assert reply == (":x: email_retraction.retraction_metrics failed: "
                         "retraction.metrics.errors.InvalidParameter: last: '3y' is not a "
                         "duration: use a number and a unit m, h, d or w, e.g. 15m, 24h, 7d, "
                         "4w")


class RetractionDetailsAliasTest(Reports):
    action_alias_name = "retraction_details"
    action_cls = RetractionDetailsAction

    def test_formats(self):
        self.assertExtractedParametersMatch(DETAILS, "retraction details",
                                            {"last": "24h", "status": None})
        self.assertExtractedParametersMatch(DETAILS, "retraction details last 1h failed",
                                            {"last": "1h", "status": "failed"})
        self.assertExtractedParametersMatch(DETAILS, "retraction details failed",
                                            {"last": "24h", "status": "failed"})
        self.assertExtractedParametersMatch(
            DETAILS, "retraction details last 7d failed reason=not_found cursor=a1.b2",
            {"last": "7d", "status": "failed", "reason": "not_found", "cursor": "a1.b2"})
        assert chat_parameters("retraction_details", "retraction details")["limit"] == 10

    def test_failed_rows_from_a_real_ledger(self):
        self.history()
        execution, reply = self.chat("retraction details last 1h failed")
        assert execution["status"] == "succeeded"
        lines = reply.splitlines()
        assert lines[:2] == ["*Retraction details* · last 1h · failed", "4 rows (times in UTC):"]
        rows = sorted(re.sub(r"^• \d{4}-\d\d-\d\d \d\d:\d\d ", "", line) for line in lines[2:])
        assert rows == [
            "exec@corp.example: failed (not_authorized) → junk, `abc@evil.example` "
            "(ErrorAccessDenied)",
            "gone@corp-mail.example: failed (not_a_mailbox) → junk, `abc@evil.example` "
            "(failedPrecondition)",
            "left@corp.example: failed (not_a_mailbox) → junk, `abc@evil.example` "
            "(MailboxNotEnabledForRESTAPI)",
            "x@elsewhere.example: failed (out_of_scope) → junk, `abc@evil.example` "
            "(domain_not_configured)"]
        _, reply = self.chat("retraction details failed reason=not_authorized")
        assert reply.splitlines()[1:] == ["1 row (times in UTC):"] + [
            line for line in reply.splitlines() if "exec@corp.example" in line]

    def test_paging_hint_is_a_working_command(self):
        self.history()  # 9 + 2 preview rows
        restore = execute(RestoreAction, self.config, {
            "message_id": MID, "recipients": ["alice@corp.example", "bob@corp.example"]},
            "email_retraction.restore")
        assert restore["status"] == "succeeded"
        _, reply = self.chat("retraction details")
        lines = reply.splitlines()
        assert lines[:2] == ["*Retraction details* · last 24h", "Newest 10 rows (times in UTC):"]
        assert len([line for line in lines if line.startswith("• ")]) == 10
        assert "alice@corp.example: retracted → inbox" in lines[2] + lines[3]
        hint = re.fullmatch(r"More: `(retraction details last 24h cursor=\S+)`", lines[-1])
        assert hint, lines[-1]
        _, rest = self.chat(hint.group(1))
        rest_lines = rest.splitlines()
        assert rest_lines[1] == "3 rows (times in UTC):"
        assert not rest_lines[-1].startswith("More:")
        seen = [line[19:] for line in lines[2:12] + rest_lines[2:]]
        assert len(seen) == 13 and any("previewed → junk" in line for line in seen)

    def test_empty_window_and_bad_input(self):
        _, reply = self.chat("retraction details last 15m")
        assert reply.splitlines() == ["*Retraction details* · last 15m",
                                      "No outcomes in this window."]
        execution, reply = self.chat("retraction details last 1h gone")
        assert execution["status"] == "failed"
        assert reply.startswith(":x: email_retraction.retraction_details failed: "
                                "retraction.metrics.errors.InvalidParameter: status: 'gone' "
                                "is not one of retracted")
