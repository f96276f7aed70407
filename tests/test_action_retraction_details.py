"""`retraction_details`: outcome rows of a window, newest first, filtered and paged, from a
ledger filled by real `retract` runs against the sandbox tenant; bad input names the parameter
and opens nothing. (The full scenario is in test_st2_campaign_ledger.py.)"""
import json
import os

import pytest

from retract import RetractAction
from retraction.metrics import InvalidParameter
from retraction_details import RetractionDetailsAction
from st2tests.base import BaseActionTestCase

pytest_plugins = ["sandbox.pytest_plugin"]

MID = "<abc@evil.example>"
RECIPIENTS = ["alice@corp.example", "bob@corp.example", "exec@corp.example",
              "left@corp.example", "carol@corp-mail.example", "dave@corp-mail.example",
              "x@elsewhere.example"]
STATUS = {"alice@corp.example": ("retracted", None), "bob@corp.example": ("retracted", None),
          "exec@corp.example": ("failed", "not_authorized"),
          "left@corp.example": ("failed", "not_a_mailbox"),
          "carol@corp-mail.example": ("retracted", None),
          "dave@corp-mail.example": ("already_in_destination", None),
          "x@elsewhere.example": ("failed", "out_of_scope")}


def newest_first(rows):
    keys = [(row["completed_at"], row["id"]) for row in rows]
    return keys == sorted(keys, reverse=True)


class RetractionDetailsActionTest(BaseActionTestCase):
    action_cls = RetractionDetailsAction

    @pytest.fixture(autouse=True)
    def _tenant(self, sandbox, tmp_path):
        self.box = sandbox
        self.db = tmp_path / "ledger.db"
        self.config = dict(sandbox.pack_config(), ledger_url="sqlite:///%s" % self.db)

    def seed(self):
        retract = RetractAction(config=self.config)
        ok, first = retract.run(message_id=MID, recipients=RECIPIENTS, destination="junk",
                                comment="INC-1")
        ok, again = retract.run(message_id=MID, recipients=RECIPIENTS[:2], destination="junk",
                                mode="auto", disposition="SUSPICIOUS")
        return first["run_id"], again["run_id"]

    def details(self, **params):
        ok, result = self.get_action_instance(self.config).run(**params)
        assert ok is True and json.loads(json.dumps(result)) == result
        assert result["count"] == len(result["rows"]) and newest_first(result["rows"])
        return result

    def test_rows_and_filters(self):
        first, again = self.seed()
        result = self.details(last="1h")
        rows = result["rows"]
        assert len(rows) == 9 and result["next_cursor"] is None
        assert [r["run_id"] for r in rows[:2]] == [again, again]  # newest first
        mine = {r["recipient"]: r for r in rows if r["run_id"] == first}
        assert {a: (r["status"], r["reason"]) for a, r in mine.items()} == STATUS
        assert all(r["counted"] for r in mine.values())
        alice = mine["alice@corp.example"]
        assert (alice["message_id"], alice["provider"], alice["destination"], alice["mode"],
                alice["trigger"], alice["was_read"], alice["source_folder"], alice["comment"],
                alice["preview"], alice["episode"]) == \
            (MID, "microsoft", "junk", "manual", "analyst", False, "inbox", "INC-1", False, 1)
        reruns = {r["recipient"]: r for r in rows if r["run_id"] == again}
        for address in ("alice@corp.example", "bob@corp.example"):
            row = reruns[address]
            assert (row["status"], row["counted"], row["mode"], row["disposition"]) == \
                ("already_in_destination", False, "auto", "SUSPICIOUS")
            assert row["error_message"].startswith("retracted earlier by run %s;" % first)

        def who(**params):
            return sorted((r["run_id"] == first, r["recipient"])
                          for r in self.details(last="1h", **params)["rows"])

        assert who(status="failed") == [(True, "exec@corp.example"), (True, "left@corp.example"),
                                        (True, "x@elsewhere.example")]
        assert who(reason="not_a_mailbox") == [(True, "left@corp.example")]
        assert who(recipient="ALICE@corp.example") == [(False, "alice@corp.example"),
                                                       (True, "alice@corp.example")]
        assert len(who(message_id="abc@evil.example")) == 9  # brackets optional
        assert who(message_id="<other@evil.example>") == []
        assert who(provider="google") == [(True, "carol@corp-mail.example"),
                                          (True, "dave@corp-mail.example")]
        assert who(mode="auto") == who(disposition="SUSPICIOUS") == who(trigger="disposition") \
            == [(False, "alice@corp.example"), (False, "bob@corp.example")]
        assert len(who(destination="junk")) == 9 and who(destination="trash") == []
        assert who(status="already_in_destination", mode="manual") == [
            (True, "dave@corp-mail.example")]

    def test_paging_with_the_cursor(self):
        self.seed()
        seen, cursor, pages = [], None, 0
        while True:
            page = self.details(last="1h", limit=4, cursor=cursor)
            seen.extend(r["id"] for r in page["rows"])
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == 3 and len(seen) == len(set(seen)) == 9
        everything = self.details(last="1h")["rows"]
        assert seen == [r["id"] for r in everything]
        first = self.details(last="1h", limit=4)
        tampered = first["next_cursor"][:-2] + ("AA" if not first["next_cursor"].endswith(
            "AA") else "BB")
        for params in ({"cursor": tampered},  # forged
                       {"cursor": first["next_cursor"], "status": "failed"}):  # other query
            with pytest.raises(InvalidParameter) as caught:
                self.get_action_instance(self.config).run(last="1h", limit=4, **params)
            assert caught.value.field == "cursor"

    def test_bad_input_names_the_parameter_and_opens_nothing(self):
        cases = [
            ({"last": "3x"}, "last"),
            ({"since": "2024-05-02", "until": "2024-05-01"}, "since"),
            ({"provider": "yahoo"}, "provider"),
            ({"status": "gone"}, "status"),
            ({"reason": "bad_luck"}, "reason"),
            ({"recipient": "not an address"}, "recipient"),
            ({"message_id": "x y"}, "message_id"),
            ({"limit": -1}, "limit"),
            ({"limit": 0}, "limit"),
            ({"limit": 1001}, "limit"),
            ({"limit": "many"}, "limit"),
            ({"cursor": "not a cursor"}, "cursor"),
            ({"cursor": 12}, "cursor"),
        ]
        for params, field in cases:
            with pytest.raises(InvalidParameter) as caught:
                self.get_action_instance(self.config).run(**params)
            assert caught.value.field == field, (params, caught.value)
        assert not os.path.exists(str(self.db))  # the ledger was never opened
