"""The `restore` action: copies go back to the inbox, in both providers, and the ledger
records the undo. Against the sandbox tenant with the real providers."""
import os

import pytest
import yaml

from restore import RestoreAction
from retract import RetractAction
from retraction.ledger import Ledger
from st2tests.base import BaseActionTestCase

pytest_plugins = ["sandbox.pytest_plugin"]

MID = "<abc@evil.example>"
ACTIONS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "actions")


def folders(box, address, message_id=MID):
    view = box.mailbox_view(address)
    return sorted(c["folder"] for c in view["copies"] if c["message_id"] == message_id)


class RestoreActionTest(BaseActionTestCase):
    action_cls = RestoreAction

    @pytest.fixture(autouse=True)
    def _tenant(self, sandbox, tmp_path):
        self.box = sandbox
        self.ledger_url = "sqlite:///%s" % (tmp_path / "ledger.db")
        self.config = sandbox.pack_config()
        self.config["ledger_url"] = self.ledger_url

    def test_undo_of_a_retraction(self):
        recipients = ["alice@corp.example", "carol@corp-mail.example"]
        ok, retracted = RetractAction(config=self.config).run(
            message_id=MID, recipients=recipients, destination="trash")
        assert ok and {o["status"] for o in retracted["outcomes"]} == {"retracted"}
        assert folders(self.box, "alice@corp.example") == ["trash"]
        assert folders(self.box, "carol@corp-mail.example") == ["trash"]

        ok, result = self.get_action_instance(self.config).run(
            message_id=MID, recipients=recipients, comment="false positive")
        assert ok is True
        assert result["destination"] == "inbox"
        got = {o["recipient"]: o for o in result["outcomes"]}
        for address in recipients:
            assert got[address]["status"] == "retracted"
            assert got[address]["destination"] == "inbox"
            assert got[address]["source_folder"] == "trash"
            assert folders(self.box, address) == ["inbox"]
        with Ledger(self.ledger_url) as ledger:
            assert {o.destination for o in ledger.outcomes_for_run(result["run_id"])} == \
                {"inbox"}
            # the ledger now shows the copies in the inbox, not in trash
            assert ledger.retracted_recipients(MID, "trash", recipients) == set()
            assert ledger.retracted_recipients(MID, "inbox", recipients) == set(recipients)

    def test_restore_from_junk_and_trash_in_gmail(self):
        ok, result = self.get_action_instance(self.config).run(
            message_id=MID, recipients=["dave@corp-mail.example", "bob@corp.example",
                                        "alice@corp.example"])
        got = {o["recipient"]: (o["status"], o["source_folder"]) for o in result["outcomes"]}
        assert got == {"dave@corp-mail.example": ("retracted", "junk"),
                       "bob@corp.example": ("retracted", "trash"),
                       "alice@corp.example": ("already_in_destination", "inbox")}
        for address in got:
            assert folders(self.box, address) == ["inbox"]

    def test_restore_ignores_any_destination_and_has_no_such_parameter(self):
        with open(os.path.join(ACTIONS, "restore.yaml")) as handle:
            meta = yaml.safe_load(handle)
        assert "destination" not in meta["parameters"]
        ok, result = self.get_action_instance(self.config).run(
            message_id=MID, recipients=["bob@corp.example"], destination="hard_delete")
        assert result["destination"] == "inbox"
        assert folders(self.box, "bob@corp.example") == ["inbox"]

    def test_preview(self):
        ok, result = self.get_action_instance(self.config).run(
            message_id=MID, recipients=["bob@corp.example"], preview=True)
        assert [o["status"] for o in result["outcomes"]] == ["previewed"]
        assert folders(self.box, "bob@corp.example") == ["trash"]

    def test_restore_as_chunks_of_one_run(self):
        from aggregate_run import AggregateRunAction
        from retraction.validation import InvalidRequest
        from split_recipients import SplitRecipientsAction

        ok, plan = SplitRecipientsAction(config=self.config).run(
            message_id=MID, recipients=["bob@corp.example", "dave@corp-mail.example"],
            destination="inbox", chunk_size=1)
        with pytest.raises(InvalidRequest) as caught:  # 31 hex digits: not a run id
            self.get_action_instance(self.config).run(
                message_id=MID, recipients=["bob@corp.example"], run_id=plan["run_id"][:-1])
        assert caught.value.field == "run_id"
        for chunk in plan["chunks"]:
            ok, result = self.get_action_instance(self.config).run(
                message_id=MID, recipients=chunk, run_id=plan["run_id"])
            assert ok and result["chunk"] is True and result["run_id"] == plan["run_id"]
        ok, done = AggregateRunAction(config=self.config).run(run_id=plan["run_id"])
        assert done["state"] == "finished"
        record = done["metric_record"]
        assert (record["total"], record["retracted"], record["by_destination"]) == \
            (2, 2, {"inbox": 2})
        assert folders(self.box, "bob@corp.example") == ["inbox"]
        assert folders(self.box, "dave@corp-mail.example") == ["inbox"]
