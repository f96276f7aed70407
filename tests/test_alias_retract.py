"""The `retract`, `retract_preview` and `restore` aliases: what each format extracts (with
StackStorm's own test base class), and the chat replies rendered from real executions of the
real actions against the sandbox tenant, from the chat line to the message."""
import pytest

from restore import RestoreAction
from retract import RetractAction
from st2tests.base import BaseActionAliasTestCase
from test_alias_formats import chat_parameters, execute, render_ack, render_result

pytest_plugins = ["sandbox.pytest_plugin"]

MID = "<abc@evil.example>"
RETRACT = "retract {{message_id}} from {{recipients}}( to {{destination}})?"
PREVIEW = "preview retract {{message_id}} from {{recipients}}( to {{destination}})?"
RESTORE = "restore {{message_id}} for {{recipients}}"


class ChatOps(BaseActionAliasTestCase):
    """A tenant and a ledger for running the aliased action for real."""

    @pytest.fixture(autouse=True)
    def _tenant(self, sandbox, tmp_path):
        self.box = sandbox
        self.config = sandbox.pack_config()
        self.config["ledger_url"] = "sqlite:///%s" % (tmp_path / "ledger.db")

    def folders(self, address):
        view = self.box.mailbox_view(address)
        return sorted(c["folder"] for c in view["copies"] if c["message_id"] == MID)

    def chat(self, command, action_cls):
        """Run a chat command end to end; returns (parameters, execution, reply)."""
        params = chat_parameters(self.action_alias_name, command)
        action_ref = self.action_alias_db.action_ref
        execution = execute(action_cls, self.config, params, action_ref)
        return params, execution, render_result(self.action_alias_name, execution)


class RetractAliasTest(ChatOps):
    action_alias_name = "retract"

    def test_formats(self):
        self.assertExtractedParametersMatch(
            RETRACT, "retract <abc@evil.example> from alice@corp.example",
            {"message_id": MID, "recipients": "alice@corp.example", "destination": None})
        self.assertExtractedParametersMatch(
            RETRACT, "retract abc@evil.example from alice@corp.example, bob@corp.example to "
                     "trash",
            {"message_id": "abc@evil.example",
             "recipients": "alice@corp.example, bob@corp.example", "destination": "trash"})
        # trailing key=value pairs reach the action's other parameters
        self.assertExtractedParametersMatch(
            RETRACT, "retract <abc@evil.example> from alice@corp.example to junk "
                     "comment=INC-42 disposition=MALICIOUS",
            {"message_id": MID, "recipients": "alice@corp.example", "destination": "junk",
             "comment": "INC-42", "disposition": "MALICIOUS"})
        # what Slack sends for <...> and for an address it turned into a link
        self.assertExtractedParametersMatch(
            RETRACT, "retract &lt;abc@evil.example&gt; from "
                     "<mailto:alice@corp.example|alice@corp.example>",
            {"message_id": "&lt;abc@evil.example&gt;",
             "recipients": "<mailto:alice@corp.example|alice@corp.example>",
             "destination": None})
        self.assertCommandMatchesExactlyOneFormatString(
            self.action_alias_db.get_format_strings(),
            "retract <abc@evil.example> from alice@corp.example to junk")

    def test_ack(self):
        params = chat_parameters("retract", "retract <abc@evil.example> from "
                                            "alice@corp.example, bob@corp.example to trash")
        assert render_ack("retract", params) == (
            "On it: retracting `<abc@evil.example>` from 2 recipient(s) to trash.")
        params = chat_parameters("retract", "retract <abc@evil.example> from a@corp.example")
        assert render_ack("retract", params).endswith("to the default destination.")

    def test_reply_from_a_real_run(self):
        params, execution, reply = self.chat(
            "retract &lt;abc@evil.example&gt; from alice@corp.example, bob@corp.example, "
            "exec@corp.example, left@corp.example, <mailto:carol@corp-mail.example|"
            "carol@corp-mail.example>, dave@corp-mail.example, x@elsewhere.example to junk",
            RetractAction)
        assert params["recipients"][-1] == "x@elsewhere.example"
        assert execution["status"] == "succeeded"
        assert self.folders("alice@corp.example") == ["junk"]
        assert self.folders("carol@corp-mail.example") == ["junk"]
        lines = reply.splitlines()
        assert lines[0] == ("Retraction of `abc@evil.example` to junk: 7 copies "
                            "(manual, analyst)")
        assert lines[1] == "• Success: 3 (42.9%), already there: 1"
        assert lines[2] == ("• Failed: 3 (42.9%): not_a_mailbox 1, not_authorized 1, "
                            "out_of_scope 1")
        assert lines[3] == "• Unread / Read: 1 / 2"
        assert sorted(lines[4:7]) == [
            "  - exec@corp.example: not_authorized (ErrorAccessDenied)",
            "  - left@corp.example: not_a_mailbox (MailboxNotEnabledForRESTAPI)",
            "  - x@elsewhere.example: out_of_scope (domain_not_configured)"]
        assert lines[7] == "run `%s`" % execution["result"]["result"]["run_id"]
        assert len(lines) == 8

    def test_reply_when_nothing_could_be_attempted(self):
        self.config["microsoft"] = dict(self.config["microsoft"], client_secret="wrong-secret")
        _, execution, reply = self.chat(
            "retract <abc@evil.example> from alice@corp.example", RetractAction)
        assert execution["status"] == "failed"
        assert ":warning: no copy could be attempted: 1 failed (1 not_authorized)" in reply
        assert reply.startswith("Retraction of `abc@evil.example` to junk: 1 copy ")

    def test_reply_when_the_action_refused_the_input(self):
        before = self.box.counters.snapshot()
        _, execution, reply = self.chat(
            "retract <abc@evil.example> from alice@corp.example to hard_delete", RetractAction)
        assert execution["status"] == "failed"
        assert reply.startswith(":x: email_retraction.retract failed: "
                                "retraction.validation.InvalidRequest: invalid destination: "
                                "hard delete is not enabled")
        assert "\n" not in reply
        assert self.box.counters.snapshot() == before


class RetractPreviewAliasTest(ChatOps):
    action_alias_name = "retract_preview"

    def test_formats(self):
        self.assertExtractedParametersMatch(
            PREVIEW, "preview retract <abc@evil.example> from alice@corp.example to trash",
            {"message_id": MID, "recipients": "alice@corp.example", "destination": "trash"})
        assert chat_parameters("retract_preview", "preview retract <abc@evil.example> from "
                                                  "alice@corp.example")["preview"] is True

    def test_ack(self):
        params = chat_parameters("retract_preview", "preview retract <abc@evil.example> from "
                                                    "alice@corp.example")
        assert render_ack("retract_preview", params) == (
            "Previewing: looking for `<abc@evil.example>` in 1 mailbox(es); nothing will be "
            "moved.")

    def test_reply_from_a_real_preview(self):
        _, execution, reply = self.chat(
            "preview retract <abc@evil.example> from alice@corp.example, gone@corp-mail.example "
            "to trash", RetractAction)
        assert execution["result"]["result"]["preview"] is True
        assert self.folders("alice@corp.example") == ["inbox"]
        lines = reply.splitlines()
        assert lines[:3] == [
            "Preview of `abc@evil.example` to trash: 2 copies (manual, analyst)",
            "• Would move: 1 (nothing was moved)",
            "• Failed: 1 (50.0%): not_a_mailbox 1"]
        assert lines[3] == "  - gone@corp-mail.example: not_a_mailbox (failedPrecondition)"
        assert lines[4].startswith("run `") and len(lines) == 5


class RestoreAliasTest(ChatOps):
    action_alias_name = "restore"

    def test_formats(self):
        self.assertExtractedParametersMatch(
            RESTORE, "restore <abc@evil.example> for alice@corp.example,bob@corp.example",
            {"message_id": MID, "recipients": "alice@corp.example,bob@corp.example"})
        self.assertExtractedParametersMatch(
            RESTORE, "restore <abc@evil.example> for alice@corp.example comment=INC-42",
            {"message_id": MID, "recipients": "alice@corp.example", "comment": "INC-42"})

    def test_ack(self):
        params = chat_parameters("restore", "restore <abc@evil.example> for alice@corp.example")
        assert render_ack("restore", params) == (
            "On it: restoring `<abc@evil.example>` to the inbox of 1 recipient(s).")

    def test_reply_from_a_real_restore(self):
        _, execution, _ = self.chat("restore <abc@evil.example> for bob@corp.example",
                                    RestoreAction)
        assert execution["status"] == "succeeded"  # bob's copy was in trash
        assert self.folders("bob@corp.example") == ["inbox"]
        _, execution, reply = self.chat(
            "restore <abc@evil.example> for alice@corp.example, bob@corp.example, "
            "left@corp.example", RestoreAction)
        assert reply.splitlines() == [
            "Restore of `abc@evil.example`: 3 copies (manual, analyst)",
            "• Restored: 0 (0.0%), already in the inbox: 2",
            "• Failed: 1 (33.3%): not_a_mailbox 1",
            "  - left@corp.example: not_a_mailbox (MailboxNotEnabledForRESTAPI)",
            "run `%s`" % execution["result"]["result"]["run_id"]]
