"""The `record_decision` action: an analyst's answer kept in the real ledger (SQLite, and
PostgreSQL when EMAIL_RETRACTION_TEST_POSTGRES_URL is set); bad input refused naming the field
before the ledger is opened; no ledger, or one that cannot be opened, fails naming ledger_url."""
import json
import os

import ledger_db
import pytest

from record_decision import RecordDecisionAction
from retraction.ledger import Ledger

MID = "<abc@evil.example>"
RUN_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture(params=ledger_db.BACKENDS)
def url(request, tmp_path):
    with ledger_db.database_url(request.param, tmp_path) as value:
        yield value


def run(config, **params):
    ok, result = RecordDecisionAction(config=config).run(**params)
    assert json.loads(json.dumps(result)) == result  # what StackStorm stores
    return ok, result


def test_a_rejection_and_an_approval_are_kept(url):
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


@pytest.mark.parametrize("params, field", [
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
])
def test_bad_input_is_refused_naming_the_field_before_the_ledger_opens(tmp_path, params, field):
    db = tmp_path / "ledger.db"
    call = dict({"message_id": MID, "decision": "approved"}, **params)
    ok, result = run({"ledger_url": "sqlite:///%s" % db}, **call)
    assert ok is False and result["recorded"] is False
    assert result["field"] == field and ("invalid %s" % field) in result["error"]
    assert not os.path.exists(str(db))


def test_without_a_ledger_nothing_can_be_recorded(tmp_path):
    ok, result = run({"ledger_url": ""}, message_id=MID, decision="rejected")
    assert (ok, result["field"]) == (False, "ledger_url")
    assert "record_decision keeps the decision in the ledger" in result["error"]
    (tmp_path / "a-file").write_text("not a directory")
    secret_url = "postgresql+psycopg://retraction:s3cret-pw@127.0.0.1:1/ledger?connect_timeout=2"
    for unusable in ("sqlite:///%s" % (tmp_path / "a-file" / "ledger.db"), secret_url):
        ok, result = run({"ledger_url": unusable}, message_id=MID, decision="rejected")
        assert (ok, result["field"]) == (False, "ledger_url")
        assert result["error"].startswith("config ledger_url: cannot open the ledger at ")
        assert "s3cret-pw" not in result["error"]
