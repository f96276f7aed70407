"""The `retract` action end to end: StackStorm's action class, the real providers (msal,
requests, google-auth, googleapiclient) against the sandbox tenant over loopback, and the
real ledger in SQLite. Each test checks the result AND the tenant (where the copies are)."""
import json
import logging

import pytest

from retract import RetractAction
from retraction.config import ConfigError
from retraction.ledger import Ledger
from retraction.validation import InvalidRequest
from retraction_action import Progress
from split_recipients import SplitRecipientsAction
from st2tests.base import BaseActionTestCase

pytest_plugins = ["sandbox.pytest_plugin"]

MID = "<abc@evil.example>"
BASIC_RECIPIENTS = ["alice@corp.example", "bob@corp.example", "shared-ops@corp.example",
                    "exec@corp.example", "left@corp.example", "carol@corp-mail.example",
                    "dave@corp-mail.example", "gone@corp-mail.example"]


def folders(box, address, message_id=MID):
    view = box.mailbox_view(address)
    return sorted(c["folder"] for c in view["copies"] if c["message_id"] == message_id)


class RetractActionTest(BaseActionTestCase):
    action_cls = RetractAction

    @pytest.fixture(autouse=True)
    def _tenant(self, sandbox, tmp_path):
        self.box = sandbox
        self.ledger_url = "sqlite:///%s" % (tmp_path / "ledger.db")
        self.config = sandbox.pack_config()
        self.config["ledger_url"] = self.ledger_url

    def run_action(self, config=None, **params):
        action = self.get_action_instance(config or self.config)
        return action.run(**params)

    def by_recipient(self, result):
        outcomes = {o["recipient"]: o for o in result["outcomes"]}
        assert len(outcomes) == len(result["outcomes"])
        return outcomes

    def test_retracts_every_copy_and_records_it(self):
        ok, result = self.run_action(message_id="abc@evil.example",
                                     recipients=BASIC_RECIPIENTS + ["x@elsewhere.example"],
                                     destination="junk", comment="INC-42")
        assert ok is True
        assert json.loads(json.dumps(result)) == result  # what StackStorm stores
        assert result["message_id"] == MID and result["destination"] == "junk"
        got = self.by_recipient(result)
        expected = {
            "alice@corp.example": ("retracted", None),
            "bob@corp.example": ("retracted", None),
            "shared-ops@corp.example": ("retracted", None),
            "exec@corp.example": ("failed", "not_authorized"),
            "left@corp.example": ("failed", "not_a_mailbox"),
            "carol@corp-mail.example": ("retracted", None),
            "dave@corp-mail.example": ("already_in_destination", None),
            "gone@corp-mail.example": ("failed", "not_a_mailbox"),
            "x@elsewhere.example": ("failed", "out_of_scope"),
        }
        assert {r: (o["status"], o["reason"]) for r, o in got.items()} == expected
        assert got["bob@corp.example"]["was_read"] is True
        assert got["bob@corp.example"]["source_folder"] == "trash"
        assert got["alice@corp.example"]["was_read"] is False
        assert got["carol@corp-mail.example"]["was_read"] is True
        for address in ("alice@corp.example", "bob@corp.example", "carol@corp-mail.example",
                        "dave@corp-mail.example"):
            assert folders(self.box, address) == ["junk"], address
        assert folders(self.box, "exec@corp.example") == ["inbox"]
        counts = result["counts"]
        assert counts["total"] == 9 and counts["attempted"] == 8
        assert counts["by_status"] == {"already_in_destination": 1, "failed": 4, "retracted": 4}
        assert result["ledger"] == {"recorded": True, "error": None}
        assert result["ok"] is True and result["chunk"] is False
        with Ledger(self.ledger_url) as ledger:
            stored = {o.recipient: o for o in ledger.outcomes_for_run(result["run_id"])}
            assert set(stored) == set(got)
            assert stored["alice@corp.example"].comment == "INC-42"
            assert ledger.run(result["run_id"])["state"] == "finished"

    def test_groups_are_expanded_and_members_not_repeated(self):
        ok, result = self.run_action(message_id=MID, recipients=["all-staff@corp.example",
                                                                 "team@corp-mail.example",
                                                                 "alice@corp.example"])
        got = self.by_recipient(result)
        assert got["all-staff@corp.example"]["reason"] == "not_a_mailbox"
        assert got["team@corp-mail.example"]["reason"] == "not_a_mailbox"
        assert got["alice@corp.example"]["via_group"] is None
        assert got["bob@corp.example"]["via_group"] == "all-staff@corp.example"
        assert got["carol@corp-mail.example"]["via_group"] == "team@corp-mail.example"
        assert got["dave@corp-mail.example"]["status"] == "already_in_destination"
        assert len(got) == 6
        assert folders(self.box, "bob@corp.example") == ["junk"]

    def test_preview_moves_nothing(self):
        before = {a: folders(self.box, a) for a in ("alice@corp.example",
                                                    "carol@corp-mail.example")}
        ok, result = self.run_action(message_id=MID, recipients=list(before), preview=True,
                                     destination="trash")
        assert ok and result["preview"] is True
        assert {o["status"] for o in result["outcomes"]} == {"previewed"}
        assert {a: folders(self.box, a) for a in before} == before

    def test_quotes_and_plus_in_message_id_reach_both_providers(self):
        mid = "<o'brien+promo@evil.example>"
        ok, result = self.run_action(message_id=mid, recipients="alice@corp.example, "
                                     "carol@corp-mail.example", destination="soft_delete")
        assert ok
        assert [o["status"] for o in result["outcomes"]] == ["retracted", "retracted"]
        assert folders(self.box, "alice@corp.example", mid) == ["soft_delete"]
        assert folders(self.box, "carol@corp-mail.example", mid) == ["trash"]
        assert folders(self.box, "alice@corp.example") == ["inbox"]  # the other message stays

    def test_bad_input_is_refused_before_any_provider_call(self):
        cases = [
            ({"message_id": "x@y OR in:anywhere", "recipients": ["alice@corp.example"]},
             "message_id"),
            ({"message_id": MID, "recipients": ["alice@corp.example/../bob"]}, "recipients"),
            ({"message_id": MID, "recipients": []}, "recipients"),
            ({"message_id": MID, "recipients": ["alice@corp.example"], "destination": "void"},
             "destination"),
            ({"message_id": MID, "recipients": ["alice@corp.example"],
              "destination": "hard_delete"}, "destination"),
            ({"message_id": MID, "recipients": ["alice@corp.example"], "verdict_time": "soon"},
             "verdict_time"),
            ({"message_id": MID, "recipients": ["alice@corp.example"],
              "skip_already_retracted": "perhaps"}, "skip_already_retracted"),
        ]
        before = self.box.counters.snapshot()
        for params, field in cases:
            with pytest.raises(InvalidRequest) as caught:
                self.run_action(**params)
            assert caught.value.field == field
            assert str(caught.value).startswith("invalid %s:" % field)
        assert self.box.counters.snapshot() == before
        assert folders(self.box, "alice@corp.example") == ["inbox"]

    def test_config_error_names_the_key(self):
        config = dict(self.config, limits={"max_recipients": 0})
        with pytest.raises(ConfigError) as caught:
            self.run_action(config, message_id=MID, recipients=["alice@corp.example"])
        assert caught.value.key == "limits.max_recipients"

    def test_copies_refused_by_policy_are_definitive_not_a_failure(self):
        """An unconfigured domain and a protected mailbox: the pack's own guard answered both
        copies (out_of_scope, 0 attempts), so the execution succeeds with failed copies."""
        before = self.box.counters.snapshot()
        ok, result = self.run_action(message_id=MID, recipients=["x@elsewhere.example",
                                                                 "journal@corp.example"])
        assert ok is True and "error" not in result
        assert result["counts"]["attempted"] == 0
        assert result["counts"]["by_reason"] == {"out_of_scope": 2}
        got = self.by_recipient(result)
        assert {a: (o["error_code"], o["attempts"]) for a, o in got.items()} == {
            "x@elsewhere.example": ("domain_not_configured", 0),
            "journal@corp.example": ("protected_mailbox", 0)}
        assert self.box.counters.snapshot()["routes"] == before["routes"]  # nobody was asked
        with Ledger(self.ledger_url) as ledger:
            rows, _ = ledger.details(recipient="journal@corp.example")
        assert [(r["reason"], r["attempts"]) for r in rows] == [("out_of_scope", 0)]

    def test_nothing_attempted_is_a_failure(self):
        """Every copy that needed a provider failed because its provider was unavailable
        (credentials rejected): that is a failure, also when policy refused the others."""
        config = dict(self.config)
        config["microsoft"] = dict(config["microsoft"], client_secret="wrong-secret")
        ok, result = self.run_action(config, message_id=MID, recipients=[
            "alice@corp.example", "bob@corp.example", "x@elsewhere.example"])
        assert ok is False
        assert result["error"].startswith("no copy could be attempted: 3 failed")
        assert "2 not_authorized" in result["error"] and "1 out_of_scope" in result["error"]
        assert result["counts"]["attempted"] == 0
        assert folders(self.box, "alice@corp.example") == ["inbox"]

    def test_rejected_credentials_fail_that_providers_copies(self):
        config = dict(self.config)
        config["microsoft"] = dict(config["microsoft"], client_secret="wrong-secret")
        ok, result = self.run_action(config, message_id=MID, recipients=[
            "alice@corp.example", "bob@corp.example", "carol@corp-mail.example"])
        assert ok is True  # Gmail still worked
        got = self.by_recipient(result)
        for address in ("alice@corp.example", "bob@corp.example"):
            assert (got[address]["reason"], got[address]["attempts"]) == ("not_authorized", 0)
            assert "wrong-secret" not in (got[address]["error_message"] or "")
        assert got["carol@corp-mail.example"]["status"] == "retracted"
        assert folders(self.box, "alice@corp.example") == ["inbox"]
        ok, result = self.run_action(config, message_id=MID, recipients=["alice@corp.example"])
        assert ok is False and "not_authorized" in result["error"]

    def test_outcomes_are_truncated_never_the_counts(self):
        config = dict(self.config, limits={"result_outcomes_limit": 2})
        ok, result = self.run_action(config, message_id=MID, recipients=BASIC_RECIPIENTS)
        assert len(result["outcomes"]) == 2 and result["outcomes_truncated"] is True
        assert result["counts"]["total"] == len(BASIC_RECIPIENTS)
        ok, result = self.run_action(message_id=MID, recipients=BASIC_RECIPIENTS)
        assert result["outcomes_truncated"] is False

    def test_campaign_matches_the_truth_and_reruns_are_idempotent(self):
        truth = self.box.generate_campaign(message_id="<wave@evil.example>", copies=300,
                                           microsoft_share=0.5, deleted_share=0.05,
                                           junk_share=0.05, distribution_lists=2,
                                           unlicensed=2, policy_blocked=2, seed=3)
        config = dict(self.config, limits={"result_outcomes_limit": 5000})
        ok, result = self.run_action(config, message_id="<wave@evil.example>",
                                     recipients=truth.recipients, destination="junk")
        assert ok
        expected = truth.expected("junk")
        got = {o["recipient"].lower(): (o["status"], o["reason"]) for o in result["outcomes"]}
        groups = {g.lower() for g in truth.groups}
        assert {a: s for a, s in got.items() if a not in groups} == \
            {a.lower(): s for a, s in expected.items()}
        # Again, as policy would (mode=auto skips what the ledger shows in junk).
        ok, again = self.run_action(config, message_id="<wave@evil.example>",
                                    recipients=truth.recipients, destination="junk",
                                    mode="auto", disposition="SUSPICIOUS")
        there = ("retracted", "already_in_destination")
        moved = sum(1 for status, _ in expected.values() if status in there)
        assert again["skip_already_retracted"] is True
        assert again["counts"]["skipped"] == moved
        assert again["counts"]["by_status"].get("retracted", 0) == 0
        # Every copy asked for has an outcome in the rerun too: the skipped ones say which
        # run put them there, and no provider was asked about them.
        rerun = {o["recipient"].lower(): o for o in again["outcomes"]}
        assert set(rerun) == set(got)
        skipped = [o for o in rerun.values() if o["attempts"] == 0
                   and o["status"] == "already_in_destination"]
        assert len(skipped) == moved
        for outcome in skipped:
            assert outcome["error_message"].split(";")[0] in (
                "retracted earlier by run %s" % result["run_id"],
                "found in junk earlier by run %s" % result["run_id"])
        with Ledger(self.ledger_url) as ledger:  # the window counts each copy once
            window = ledger.metric_record().to_dict()
            first = ledger.run(result["run_id"])["metric_record"]
            assert (window["total"], window["retracted"]) == \
                (first["total"], first["retracted"])
            rerun_record = ledger.run(again["run_id"])["metric_record"]
            assert rerun_record["total"] == len(rerun)
            assert rerun_record["already_in_destination"] == moved
        # A manual rerun looks again and finds everything already there.
        ok, manual = self.run_action(config, message_id="<wave@evil.example>",
                                     recipients=truth.recipients, destination="junk")
        assert manual["counts"]["by_status"].get("retracted", 0) == 0
        assert manual["counts"]["by_status"]["already_in_destination"] == moved


def test_progress_lines():
    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger = logging.getLogger("test.progress")
    logger.addHandler(Collect())
    logger.setLevel(logging.INFO)
    progress = Progress(logger, "run1", total=200, every_s=0)
    progress.update(50)
    progress.update(200, force=True)
    assert progress.lines == 2
    assert records[0].startswith("run run1: ") and "50/200" in records[0]
    assert "copies/s" in records[0]
    assert "200/200" in records[1]
    quiet = Progress(logger, "run2", total=10, every_s=3600)
    quiet.update(5)
    assert quiet.lines == 0 and len(records) == 2


class RetractLedgerAndChunkTest(BaseActionTestCase):
    """The ledger is a precondition, and `run_id` makes an execution one chunk of a run."""

    action_cls = RetractAction

    @pytest.fixture(autouse=True)
    def _tenant(self, sandbox, tmp_path):
        self.box = sandbox
        self.tmp = tmp_path
        self.ledger_url = "sqlite:///%s" % (tmp_path / "ledger.db")
        self.config = dict(sandbox.pack_config(), ledger_url=self.ledger_url)

    def run_action(self, config=None, **params):
        return self.get_action_instance(config or self.config).run(**params)

    def test_a_ledger_that_cannot_be_opened_stops_the_action_before_any_provider_call(self):
        (self.tmp / "not-a-dir").write_text("a file where the ledger's directory should be")
        unusable = [
            "sqlite:///%s" % (self.tmp / "not-a-dir" / "sub" / "ledger.db"),
            "postgresql+psycopg://retraction:s3cret-pw@127.0.0.1:1/ledger?connect_timeout=2",
        ]
        before = self.box.counters.snapshot()
        for url in unusable:
            config = dict(self.config, ledger_url=url)
            with pytest.raises(ConfigError) as caught:
                self.run_action(config, message_id=MID, recipients=["alice@corp.example",
                                                                    "carol@corp-mail.example"])
            assert caught.value.key == "ledger_url"
            assert str(caught.value).startswith("config ledger_url: cannot open the ledger at ")
            assert "s3cret-pw" not in str(caught.value)
        assert "retraction:***@127.0.0.1:1/ledger" in str(caught.value)
        assert self.box.counters.snapshot() == before  # not even a token was asked for
        assert folders(self.box, "alice@corp.example") == ["inbox"]
        assert folders(self.box, "carol@corp-mail.example") == ["inbox"]

    def test_an_empty_ledger_url_means_no_ledger(self):
        ok, result = self.run_action(dict(self.config, ledger_url=""), message_id=MID,
                                     recipients=["alice@corp.example"])
        assert ok and result["ledger"] == {"recorded": False, "error": None}
        assert folders(self.box, "alice@corp.example") == ["junk"]

    def test_a_bad_run_id_is_refused_before_any_provider_call(self):
        before = self.box.counters.snapshot()
        for value in ("abc", "g" * 32, "1" * 31, "../" + "a" * 32, 42):
            with pytest.raises(InvalidRequest) as caught:
                self.run_action(message_id=MID, recipients=["alice@corp.example"],
                                run_id=value)
            assert caught.value.field == "run_id"
        assert self.box.counters.snapshot() == before

    def test_chunks_record_under_the_run_and_leave_it_open(self):
        ok, plan = SplitRecipientsAction(config=self.config).run(
            message_id=MID, recipients=["alice@corp.example", "bob@corp.example",
                                        "carol@corp-mail.example"], destination="trash",
            chunk_size=2, comment="INC-7")
        assert plan["chunks"] == [["alice@corp.example", "bob@corp.example"],
                                  ["carol@corp-mail.example"]]
        run_id = plan["run_id"]
        results = []
        for chunk in plan["chunks"]:
            ok, result = self.run_action(message_id=MID, recipients=chunk,
                                         destination="trash", comment="INC-7",
                                         run_id=run_id.upper())  # ids are case-blind
            assert ok and result["run_id"] == run_id and result["chunk"] is True
            results.append(result)
        assert [r["counts"]["total"] for r in results] == [2, 1]
        with Ledger(self.ledger_url) as ledger:
            run = ledger.run(run_id)
            assert run["state"] == "running"  # aggregate_run finishes it
            stored = ledger.outcomes_for_run(run_id)
            assert sorted(o.recipient for o in stored) == [
                "alice@corp.example", "bob@corp.example", "carol@corp-mail.example"]
            assert {o.requested_at.isoformat() for o in stored} == {run["requested_at"]}
            assert {o.comment for o in stored} == {"INC-7"}
        assert folders(self.box, "carol@corp-mail.example") == ["trash"]

    def test_a_chunk_must_match_its_run(self):
        ok, plan = SplitRecipientsAction(config=self.config).run(
            message_id=MID, recipients=["alice@corp.example"], destination="trash")
        before = self.box.counters.snapshot()
        for params, word in (({"destination": "junk"}, "destination"),
                             ({"message_id": "<other@evil.example>"}, "message_id"),
                             ({"mode": "auto", "disposition": "MALICIOUS"}, "mode")):
            call = dict({"message_id": MID, "recipients": ["alice@corp.example"],
                         "destination": "trash", "run_id": plan["run_id"]}, **params)
            with pytest.raises(InvalidRequest) as caught:
                self.run_action(**call)
            assert caught.value.field == "run_id"
            assert "run is for %s=" % word in str(caught.value)
        assert self.box.counters.snapshot() == before
        assert folders(self.box, "alice@corp.example") == ["inbox"]

    def test_a_chunk_of_only_refused_copies_is_ok_and_the_run_finishes(self):
        from aggregate_run import AggregateRunAction

        ok, plan = SplitRecipientsAction(config=self.config).run(
            message_id=MID, recipients=["x@elsewhere.example", "journal@corp.example",
                                        "alice@corp.example"], destination="trash",
            chunk_size=2)
        assert plan["chunks"][0] == ["x@elsewhere.example", "journal@corp.example"]
        oks = []
        for chunk in plan["chunks"]:
            ok, result = self.run_action(message_id=MID, recipients=chunk, destination="trash",
                                         run_id=plan["run_id"])
            oks.append(ok)
        assert oks == [True, True]
        # what retract_campaign does next: no chunk failed, so the run is finished
        ok, aggregated = AggregateRunAction(config=self.config).run(run_id=plan["run_id"],
                                                                    failed_chunks=0)
        assert ok and aggregated["state"] == "finished"
        record = aggregated["metric_record"]
        assert (record["total"], record["retracted"], record["failed"]) == (3, 1, 2)
        assert record["failed_by_reason"]["out_of_scope"] == 2
        assert folders(self.box, "alice@corp.example") == ["trash"]


# -- App.warm: a cold run makes the same token requests as without the warm-up ---------------
# (appended with the warm-up's fixes) The action warms the providers when the ledger file is
# usable; Gmail needs one token request per distinct mailbox asked, plus the directory admin's
# only when nothing else proved delegation (the group vs ungranted-scope heuristic).
class WarmTokenRequestsTest(BaseActionTestCase):
    action_cls = RetractAction

    @pytest.fixture(autouse=True)
    def _tenant(self, sandbox, tmp_path):
        self.box = sandbox
        self.config = sandbox.pack_config()
        self.config["ledger_url"] = "sqlite:///%s" % (tmp_path / "ledger.db")
        self.config["expand_groups"] = False  # only the retraction's own token requests
        with Ledger(self.config["ledger_url"]):
            pass  # an existing ledger: App.warm prefetches the first Gmail token

    def retract(self, recipients):
        ok, result = self.get_action_instance(self.config).run(
            message_id=MID, recipients=recipients, destination="trash")
        assert ok
        statuses = {o["recipient"]: (o["status"], o["reason"]) for o in result["outcomes"]}
        return statuses, self.box.counters.snapshot()["routes"].get("google.token", 0)

    def test_refused_first_recipient_is_asked_once(self):
        statuses, tokens = self.retract(["nobody@corp-mail.example", "carol@corp-mail.example"])
        assert statuses == {"nobody@corp-mail.example": ("failed", "not_a_mailbox"),
                            "carol@corp-mail.example": ("retracted", None)}
        assert tokens == 2  # nobody (no such user) and carol, each once

    def test_group_first_recipient_is_asked_once_then_the_admin(self):
        statuses, tokens = self.retract(["team@corp-mail.example"])
        assert statuses == {"team@corp-mail.example": ("failed", "not_a_mailbox")}
        assert tokens == 2  # the group once, the directory admin as the proof

    def test_prefetched_token_proves_delegation_for_a_refused_group(self):
        statuses, tokens = self.retract(["carol@corp-mail.example", "team@corp-mail.example"])
        assert statuses == {"carol@corp-mail.example": ("retracted", None),
                            "team@corp-mail.example": ("failed", "not_a_mailbox")}
        assert tokens == 2  # carol's token (the warm-up's) proves delegation: no admin probe
