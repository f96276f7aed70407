"""`split_recipients`: the whole request is validated exactly as `retract` validates it, the
recipients are split into chunks, the run is recorded as started, and nothing reaches a
provider. Against the sandbox tenant's config and a real ledger."""
import json

import pytest

from retraction.config import ConfigError
from retraction.ledger import Ledger
from retraction.validation import InvalidRequest
from split_recipients import SplitRecipientsAction
from st2tests.base import BaseActionTestCase

pytest_plugins = ["sandbox.pytest_plugin"]

MID = "<abc@evil.example>"


class SplitRecipientsActionTest(BaseActionTestCase):
    action_cls = SplitRecipientsAction

    @pytest.fixture(autouse=True)
    def _tenant(self, sandbox, tmp_path):
        self.box = sandbox
        self.ledger_url = "sqlite:///%s" % (tmp_path / "ledger.db")
        self.config = dict(sandbox.pack_config(), ledger_url=self.ledger_url)

    def run_action(self, config=None, **params):
        return self.get_action_instance(config or self.config).run(**params)

    def test_plan_and_started_run(self):
        recipients = ["alice@corp.example", "ALICE@corp.example", "bob@corp.example",
                      "carol@corp-mail.example", "dave@corp-mail.example", "x@elsewhere.example"]
        before = self.box.counters.snapshot()
        ok, plan = self.run_action(message_id="abc@evil.example", recipients=recipients,
                                   mode="auto", disposition="SUSPICIOUS", chunk_size=2,
                                   concurrency=3, verdict_time="2024-05-01T08:00:00Z",
                                   comment="INC-9", requested_by="soc-bot")
        assert ok is True
        assert json.loads(json.dumps(plan)) == plan
        assert self.box.counters.snapshot() == before  # no provider was asked anything
        assert plan["message_id"] == MID
        assert (plan["destination"], plan["mode"], plan["trigger"], plan["preview"]) == \
            ("junk", "auto", "disposition", False)  # SUSPICIOUS -> junk by auto_retract
        assert plan["copies"] == 5  # ALICE is alice
        assert plan["chunks"] == [["alice@corp.example", "bob@corp.example"],
                                  ["carol@corp-mail.example", "dave@corp-mail.example"],
                                  ["x@elsewhere.example"]]
        assert (plan["chunk_size"], plan["concurrency"]) == (2, 3)
        assert (plan["needs_approval"], plan["approval_reason"]) == (False, None)
        with Ledger(self.ledger_url) as ledger:
            run = ledger.run(plan["run_id"])
        assert run["state"] == "running"
        assert (run["message_id"], run["destination"], run["mode"], run["trigger"],
                run["disposition"], run["comment"], run["requested_by"]) == \
            (MID, "junk", "auto", "disposition", "SUSPICIOUS", "INC-9", "soc-bot")
        assert run["verdict_time"].startswith("2024-05-01T08:00:00")

    def test_defaults_come_from_the_config(self):
        config = dict(self.config, limits={"chunk_size": 3, "chunk_concurrency": 2},
                      approval={"threshold": 4})
        ok, plan = self.run_action(config, message_id=MID, recipients=[
            "u%d@corp.example" % i for i in range(7)])
        assert [len(c) for c in plan["chunks"]] == [3, 3, 1]
        assert (plan["concurrency"], plan["destination"], plan["mode"]) == (2, "junk", "manual")
        assert plan["needs_approval"] is True
        assert plan["approval_reason"] == "7 copies is more than approval.threshold (4)"

    def test_hard_delete_needs_approval_when_allowed(self):
        config = dict(self.config, allow_hard_delete=True)
        ok, plan = self.run_action(config, message_id=MID, recipients=["alice@corp.example"],
                                   destination="hard_delete")
        assert (plan["needs_approval"], plan["approval_reason"]) == (
            True, "hard_delete is asked for and approval.hard_delete is on")

    def test_bad_input_is_refused_and_nothing_is_recorded(self):
        cases = [
            ({"message_id": "x@y OR in:anywhere"}, "message_id"),
            ({"recipients": ["alice@corp.example/../bob"]}, "recipients"),
            ({"recipients": []}, "recipients"),
            ({"destination": "void"}, "destination"),
            ({"destination": "hard_delete"}, "destination"),  # allow_hard_delete is off
            ({"mode": "auto", "disposition": "SPAM"}, "disposition"),  # maps to none
            ({"verdict_time": "soon"}, "verdict_time"),
            ({"chunk_size": 0}, "chunk_size"),
            ({"concurrency": 65}, "concurrency"),
            ({"skip": True}, "skip"),
        ]
        before = self.box.counters.snapshot()
        for change, field in cases:
            params = dict({"message_id": MID, "recipients": ["alice@corp.example"]}, **change)
            with pytest.raises(InvalidRequest) as caught:
                self.run_action(**params)
            assert caught.value.field == field, (change, caught.value)
        assert self.box.counters.snapshot() == before
        with Ledger(self.ledger_url) as ledger:
            assert ledger.runs()[0] == []

    def test_a_campaign_needs_a_ledger(self):
        with pytest.raises(ConfigError) as caught:
            self.run_action(dict(self.config, ledger_url=""), message_id=MID,
                            recipients=["alice@corp.example"])
        assert caught.value.key == "ledger_url"
        assert "retract_campaign aggregates its chunks from the ledger" in str(caught.value)
