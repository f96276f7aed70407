"""The `record_decision` action: an analyst's answer kept in the real ledger (SQLite, and
PostgreSQL when EMAIL_RETRACTION_TEST_POSTGRES_URL is set); bad input refused naming the field
before the ledger is opened; no ledger, or one that cannot be opened, fails naming ledger_url.
The action is built by StackStorm's own BaseActionTestCase (get_action_instance)."""
import json
import os

import ledger_db
import pytest

from record_decision import RecordDecisionAction
from retraction.ledger import Ledger
from st2tests.base import BaseActionTestCase

MID = "<abc@evil.example>"
RUN_ID = "0123456789abcdef0123456789abcdef"

BAD_INPUT = [
    ({"decision": "maybe"}, "decision"),
    ({"decision": None}, "decision"),
    ({"message_id": "x y"}, "message_id"),
    ({"message_id": None}, "message_id"),
    ({"copies": -3}, "copies"),
    ({"copies": "many"}, "copies"),
    ({"destination": "void"}, "destination"),
    ({"trigger": "whim"}, "trigger"),
    ({"disposition": "EVIL"}, "disposition"),
    ({"run_id": "not-a-run"}, "run_id"),
    ({"decided_by": "x" * 201}, "decided_by"),
    ({"comment": "bad\x00byte"}, "comment"),
    ({"colour": "red"}, "colour"),
]


class RecordDecisionCase(BaseActionTestCase):
    action_cls = RecordDecisionAction

    @pytest.fixture(autouse=True)
    def _dirs(self, tmp_path):
        self.tmp_path = tmp_path

    def run_action(self, config, **params):
        ok, result = self.get_action_instance(config=config).run(**params)
        assert json.loads(json.dumps(result)) == result  # what StackStorm stores
        return ok, result


class RecordDecisionActionTest(RecordDecisionCase):
    def test_bad_input_is_refused_naming_the_field_before_the_ledger_opens(self):
        for index, (params, field) in enumerate(BAD_INPUT):
            with self.subTest(field=field, params=params):
                db = self.tmp_path / ("ledger-%d.db" % index)
                call = dict({"message_id": MID, "decision": "approved"}, **params)
                ok, result = self.run_action({"ledger_url": "sqlite:///%s" % db}, **call)
                assert ok is False and result["recorded"] is False
                assert result["field"] == field and ("invalid %s" % field) in result["error"]
                assert not os.path.exists(str(db))

    def test_without_a_ledger_nothing_can_be_recorded(self):
        ok, result = self.run_action({"ledger_url": ""}, message_id=MID, decision="rejected")
        assert (ok, result["field"]) == (False, "ledger_url")
        assert "record_decision keeps the decision in the ledger" in result["error"]
        (self.tmp_path / "a-file").write_text("not a directory")
        secret_url = ("postgresql+psycopg://retraction:s3cret-pw@127.0.0.1:1/ledger"
                      "?connect_timeout=2")
        for unusable in ("sqlite:///%s" % (self.tmp_path / "a-file" / "ledger.db"),
                         secret_url):
            ok, result = self.run_action({"ledger_url": unusable}, message_id=MID,
                                         decision="rejected")
            assert (ok, result["field"]) == (False, "ledger_url")
            assert result["error"].startswith("config ledger_url: cannot open the ledger at ")
            assert "s3cret-pw" not in result["error"]


class KeptInTheLedger(object):
    """The same test on each ledger backend (ledger_db.BACKENDS)."""
    backend = None

    @pytest.fixture(autouse=True)
    def _ledger(self, tmp_path):
        with ledger_db.database_url(self.backend, tmp_path) as value:
            self.url = value
            yield

    def test_a_rejection_and_an_approval_are_kept(self):
        run, url = self.run_action, self.url
        config = {"ledger_url": url}
        ok, result = run(config, message_id="abc@evil.example", decision="rejected",
                         decided_by="bob", comment="false positive", copies=812,
                         destination="trash", trigger="disposition", disposition="malicious")
        assert ok is True and result["recorded"] is True
        rejected = result["decision"]
        assert {k: rejected[k] for k in ("message_id", "decision", "decided_by", "comment",
                                         "copies", "destination", "trigger", "disposition",
                                         "run_id")} == {
            "message_id": MID, "decision": "rejected", "decided_by": "bob",
            "comment": "false positive", "copies": 812, "destination": "trash",
            "trigger": "disposition", "disposition": "MALICIOUS", "run_id": None}
        # what an unnamed answer sends from the workflow: empty strings mean "not given"
        ok, result = run(config, message_id=MID, decision="Approved", decided_by="", comment="",
                         copies="40", destination="junk", trigger="post_delivery",
                         disposition="SUSPICIOUS", run_id=RUN_ID.upper())
        assert ok is True
        approved = result["decision"]
        assert (approved["decision"], approved["decided_by"], approved["comment"],
                approved["copies"], approved["run_id"]) == ("approved", None, None, 40, RUN_ID)
        with Ledger(url) as ledger:
            rows, _ = ledger.decisions()
            assert [r["id"] for r in rows] == [approved["id"], rejected["id"]]
            assert rows[1] == rejected
            assert ledger.decision_counts() == {"approved": 1, "rejected": 1}
            assert ledger.runs()[0] == []  # a decision is not a run


class RecordDecisionSQLiteTest(KeptInTheLedger, RecordDecisionCase):
    backend = "sqlite"


@pytest.mark.skipif(not os.environ.get(ledger_db.POSTGRES_ENV), reason=ledger_db.POSTGRES_SKIP)
class RecordDecisionPostgreSQLTest(KeptInTheLedger, RecordDecisionCase):
    backend = "postgresql"
