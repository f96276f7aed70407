"""`aggregate_run`: a run's chunks, retracted against the sandbox tenant, are read back from
the ledger by run id; the run is finished (or failed) with its metric record and card."""
import json

import pytest

from aggregate_run import AggregateRunAction
from retract import RetractAction
from retraction.config import ConfigError
from retraction.ledger import Ledger
from retraction.model import new_run_id
from retraction.validation import InvalidRequest
from split_recipients import SplitRecipientsAction
from st2tests.base import BaseActionTestCase

pytest_plugins = ["sandbox.pytest_plugin"]

MID = "<abc@evil.example>"


class AggregateRunActionTest(BaseActionTestCase):
    action_cls = AggregateRunAction

    @pytest.fixture(autouse=True)
    def _tenant(self, sandbox, tmp_path):
        self.box = sandbox
        self.ledger_url = "sqlite:///%s" % (tmp_path / "ledger.db")
        self.config = dict(sandbox.pack_config(), ledger_url=self.ledger_url)

    def start(self, recipients, chunk_size):
        ok, plan = SplitRecipientsAction(config=self.config).run(
            message_id=MID, recipients=recipients, destination="junk", chunk_size=chunk_size)
        return plan

    def chunk(self, plan, index):
        return RetractAction(config=self.config).run(
            message_id=MID, recipients=plan["chunks"][index], destination="junk",
            run_id=plan["run_id"])

    def test_a_failed_chunk_then_its_rerun(self):
        plan = self.start(["alice@corp.example", "bob@corp.example", "exec@corp.example",
                           "dave@corp-mail.example"], chunk_size=2)
        self.chunk(plan, 0)  # the second chunk "crashed": it never ran
        ok, result = self.get_action_instance(self.config).run(run_id=plan["run_id"],
                                                               failed_chunks=1)
        assert ok is True and json.loads(json.dumps(result)) == result
        assert (result["run_id"], result["state"], result["failed_chunks"]) == \
            (plan["run_id"], "failed", 1)
        record = result["metric_record"]
        assert (record["total"], record["retracted"], record["already_in_destination"],
                record["failed"], record["read"], record["unread"], record["manual"]) == \
            (2, 2, 0, 0, 1, 1, 2)
        assert result["card"].splitlines()[:4] == [
            "Retraction run %s · one run" % plan["run_id"],
            "Total retractions: 2",
            "Success: 2 (100.0%)",
            "Fail: 0 (0.0%)",
        ]
        with Ledger(self.ledger_url) as ledger:
            assert ledger.run(plan["run_id"])["state"] == "failed"
        self.chunk(plan, 1)  # rerun of the missing chunk, same run id
        ok, result = self.get_action_instance(self.config).run(run_id=plan["run_id"])
        assert result["state"] == "finished"
        record = result["metric_record"]
        assert (record["total"], record["retracted"], record["already_in_destination"],
                record["failed"], record["failed_by_reason"]["not_authorized"]) == \
            (4, 2, 1, 1, 1)
        with Ledger(self.ledger_url) as ledger:
            stored = ledger.run(plan["run_id"])
            assert stored["state"] == "finished" and stored["metric_record"] == record

    def test_bad_input_names_the_parameter(self):
        for params, field in (({"run_id": "nope"}, "run_id"),
                              ({"run_id": new_run_id(), "failed_chunks": -1}, "failed_chunks"),
                              ({"run_id": new_run_id()}, "run_id")):  # not in this ledger
            with pytest.raises(InvalidRequest) as caught:
                self.get_action_instance(self.config).run(**params)
            assert caught.value.field == field
        with pytest.raises(ConfigError) as caught:
            self.get_action_instance(dict(self.config, ledger_url="")).run(run_id=new_run_id())
        assert caught.value.key == "ledger_url"
