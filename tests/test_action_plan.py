"""The `plan` action: every disposition under every kind of disposition map, each trigger with
its switch on and off, enforce and preview, the approval threshold at, below and above, hard
delete approval, and refusals of bad input naming the field. Expected values are written out
per case (the oracle is the config, read by a person), not recomputed from the policy code."""
import json

from plan import PlanAction
from st2tests.base import BaseActionTestCase

MID = "<abc@evil.example>"
RECIPIENTS = ["alice@corp.example", "bob@corp.example", "carol@corp-mail.example"]
VERDICT_TIME = "2024-05-01T12:30:00Z"
DISPOSITIONS = ("MALICIOUS", "SUSPICIOUS", "SPOOF", "SPAM", "BULK", "NONE")

# Pack configs by name, and where each sends each disposition (None: no action by policy).
CONFIGS = {
    "defaults": {},
    "example": {"auto_retract": {"dispositions": {
        "MALICIOUS": "trash", "SUSPICIOUS": "junk", "SPOOF": "junk", "SPAM": "none",
        "BULK": "none"}}},
    "custom": {"auto_retract": {"dispositions": {
        "MALICIOUS": "soft_delete", "SUSPICIOUS": "none", "SPOOF": "trash", "SPAM": "junk",
        "BULK": "junk"}}},
    "only_malicious": {"auto_retract": {"dispositions": {"MALICIOUS": "junk"}}},
    "hard_delete": {"allow_hard_delete": True, "auto_retract": {"dispositions": {
        "MALICIOUS": "hard_delete", "SUSPICIOUS": "trash"}}},
}
EXPECTED = {
    "defaults": {"MALICIOUS": "trash", "SUSPICIOUS": "junk", "SPOOF": "junk", "SPAM": None,
                 "BULK": None, "NONE": None},
    "example": {"MALICIOUS": "trash", "SUSPICIOUS": "junk", "SPOOF": "junk", "SPAM": None,
                "BULK": None, "NONE": None},
    "custom": {"MALICIOUS": "soft_delete", "SUSPICIOUS": None, "SPOOF": "trash",
               "SPAM": "junk", "BULK": "junk", "NONE": None},
    "only_malicious": {"MALICIOUS": "junk", "SUSPICIOUS": None, "SPOOF": None, "SPAM": None,
                       "BULK": None, "NONE": None},
    "hard_delete": {"MALICIOUS": "hard_delete", "SUSPICIOUS": "trash", "SPOOF": None,
                    "SPAM": None, "BULK": None, "NONE": None},
}
TRIGGERS = ("disposition", "post_delivery", "phish_submission")
SWITCH = {"post_delivery": "post_delivery_response",
          "phish_submission": "phish_submission_response"}


def merged(base, **sections):
    """A copy of a config with some sections' keys replaced."""
    config = json.loads(json.dumps(base))
    for name, values in sections.items():
        if isinstance(values, dict):
            config[name] = dict(config.get(name) or {}, **values)
        else:
            config[name] = values
    return config


class PlanActionTest(BaseActionTestCase):
    action_cls = PlanAction

    def plan(self, config, **params):
        verdict = dict(message_id=MID, recipients=RECIPIENTS, disposition="MALICIOUS",
                       trigger="disposition", verdict_time=VERDICT_TIME, source="cloudflare",
                       source_id="row-1")
        verdict.update(params)
        ok, result = self.get_action_instance(dict(config, ledger_url="")).run(**verdict)
        self.assertEqual(json.loads(json.dumps(result)), result)  # what StackStorm stores
        return ok, result

    # -- every disposition x every map x mode ---------------------------------------------
    def test_every_disposition_under_every_map_enforce_and_preview(self):
        for name, config in CONFIGS.items():
            for mode in ("enforce", "preview"):
                cfg = merged(config, auto_retract={"mode": mode})
                for disposition in DISPOSITIONS:
                    with self.subTest(config=name, mode=mode, disposition=disposition):
                        ok, result = self.plan(cfg, disposition=disposition.lower())
                        self.assertIs(ok, True)
                        expected = EXPECTED[name][disposition]
                        self.assertEqual(result["destination"], expected)
                        self.assertEqual(result["act"], expected is not None)
                        self.assertEqual(result["mode"], "auto")
                        self.assertEqual(result["disposition"], disposition)
                        self.assertEqual(result["trigger"], "disposition")
                        self.assertEqual(result["verdict_time"], "2024-05-01T12:30:00+00:00")
                        self.assertEqual(result["copies"], 3)
                        if expected is None:
                            self.assertTrue(result["why"].startswith("no action by policy"))
                            self.assertIs(result["preview"], False)
                            self.assertIs(result["needs_approval"], False)
                            if disposition == "NONE":
                                self.assertIn("clean", result["why"])
                            else:
                                self.assertIn("maps %s to none" % disposition, result["why"])
                        else:
                            self.assertIs(result["preview"], mode == "preview")
                            self.assertIn("%s -> %s" % (disposition, expected), result["why"])
                            self.assertEqual("preview only" in result["why"], mode == "preview")
                            # hard delete asks first (approval.hard_delete defaults to on),
                            # unless it is a preview, which moves nothing
                            self.assertIs(result["needs_approval"],
                                          expected == "hard_delete" and mode == "enforce")

    # -- the triggers and their switches ----------------------------------------------------
    def test_each_trigger_obeys_its_switch(self):
        for trigger in TRIGGERS:
            for switch_on in (True, False):
                cfg = {"auto_retract": {"post_delivery_response": True,
                                        "phish_submission_response": True}}
                if trigger in SWITCH:
                    cfg["auto_retract"][SWITCH[trigger]] = switch_on
                with self.subTest(trigger=trigger, switch_on=switch_on):
                    ok, result = self.plan(cfg, trigger=trigger)
                    self.assertIs(ok, True)
                    self.assertEqual(result["trigger"], trigger)
                    acts = switch_on or trigger == "disposition"  # no switch: always on
                    self.assertIs(result["act"], acts)
                    if acts:
                        self.assertEqual(result["destination"], "trash")
                    else:
                        self.assertIsNone(result["destination"])
                        self.assertEqual(result["why"], "no action by policy: %s is off "
                                         "(auto_retract.%s: false)"
                                         % ({"post_delivery": "post-delivery response",
                                             "phish_submission": "phish submission response"}
                                            [trigger], SWITCH[trigger]))

    def test_switch_off_wins_over_the_disposition_map(self):
        cfg = {"auto_retract": {"post_delivery_response": False,
                                "dispositions": {"MALICIOUS": "none"}}}
        ok, result = self.plan(cfg, trigger="post_delivery")
        self.assertIn("post_delivery_response: false", result["why"])
        ok, result = self.plan(cfg, trigger="phish_submission")
        self.assertIn("maps MALICIOUS to none", result["why"])

    def test_trigger_defaults_to_disposition(self):
        ok, result = self.plan({}, trigger=None)
        self.assertEqual((ok, result["trigger"], result["act"]), (True, "disposition", True))

    # -- approval ------------------------------------------------------------------------------
    def test_approval_threshold_at_below_and_above(self):
        # 3 copies: asked only when there are MORE copies than the threshold
        for threshold, asks in ((0, True), (2, True), (3, False), (4, False), (300, False)):
            cfg = {"approval": {"threshold": threshold, "hard_delete": True}}
            with self.subTest(threshold=threshold):
                ok, result = self.plan(cfg)
                self.assertIs(result["needs_approval"], asks)
                if result["needs_approval"]:
                    reason = "3 copies is more than approval.threshold (%d)" % threshold
                    self.assertEqual(result["approval_reason"], reason)
                    self.assertIn("waits for approval: " + reason, result["why"])
                    self.assertIn(MID, result["question"])
                    self.assertIn("to trash", result["question"])
                else:
                    self.assertIsNone(result["approval_reason"])
                    self.assertIsNone(result["question"])

    def test_recipients_count_raises_the_copy_count(self):
        cfg = {"approval": {"threshold": 10}}
        ok, result = self.plan(cfg, recipients_count=11)
        self.assertEqual((result["copies"], result["needs_approval"]), (11, True))
        ok, result = self.plan(cfg, recipients_count=2)  # fewer than listed: the list counts
        self.assertEqual((result["copies"], result["needs_approval"]), (3, False))

    def test_duplicate_recipients_count_once(self):
        cfg = {"approval": {"threshold": 3}}
        ok, result = self.plan(cfg, recipients=RECIPIENTS + ["ALICE@corp.example"])
        self.assertEqual((result["copies"], result["needs_approval"]), (3, False))

    def test_hard_delete_approval_follows_its_switch(self):
        base = CONFIGS["hard_delete"]
        for hard_delete, threshold, asks in ((True, 300, True), (False, 300, False),
                                             (False, 1, True)):
            cfg = merged(base, approval={"hard_delete": hard_delete, "threshold": threshold})
            with self.subTest(hard_delete=hard_delete, threshold=threshold):
                ok, result = self.plan(cfg)
                self.assertEqual(result["destination"], "hard_delete")
                self.assertIs(result["needs_approval"], asks)
                if hard_delete:
                    self.assertEqual(result["approval_reason"],
                                     "hard delete (approval.hard_delete)")
        cfg = merged(base, approval={"hard_delete": True, "threshold": 1})
        ok, result = self.plan(cfg)
        self.assertEqual(result["approval_reason"], "hard delete (approval.hard_delete) and "
                                                    "3 copies is more than approval.threshold "
                                                    "(1)")

    def test_a_preview_never_waits_for_approval(self):
        cfg = {"auto_retract": {"mode": "preview"}, "approval": {"threshold": 0}}
        ok, result = self.plan(cfg)
        self.assertEqual((result["act"], result["preview"], result["needs_approval"]),
                         (True, True, False))

    def test_the_question_names_the_message(self):
        ok, result = self.plan({"approval": {"threshold": 0}}, subject="Invoice\r\nBcc: x",
                               sender="billing@evil.example")
        question = result["question"]
        self.assertIn("'Invoice\\r\\nBcc: x'", question)  # escaped: no forged lines in chat
        self.assertIn("from 'billing@evil.example'", question)
        self.assertIn("cloudflare says MALICIOUS", question)

    # -- a changed verdict: every previous x new disposition ---------------------------------
    def check_changes(self, config, table):
        """`table[previous]` lists, per new disposition (DISPOSITIONS order), "act", "had"
        (already handled: the previous disposition's destination is as strong or stronger)
        or "-" (the new disposition maps to no action)."""
        destinations = {d: dest for d, dest in EXPECTED["defaults"].items()}
        destinations.update(config.pop("_destinations", {}))
        for previous, row in table.items():
            for new, expected in zip(DISPOSITIONS, row):
                with self.subTest(previous=previous, new=new):
                    ok, result = self.plan(config, trigger="post_delivery", disposition=new,
                                           previous_disposition=previous)
                    self.assertIs(ok, True)
                    self.assertEqual(result["previous_disposition"], previous)
                    self.assertEqual(result["act"], expected == "act")
                    if expected == "act":
                        self.assertEqual(result["destination"], destinations[new])
                    elif expected == "-":
                        self.assertTrue(result["why"].startswith("no action by policy"))
                    else:
                        before = destinations[previous]
                        self.assertIsNone(result["destination"])
                        self.assertEqual(result["why"], (
                            "already handled: previous disposition %s sent copies to %s, and "
                            "%s -> %s is not stronger" % (previous, before, new,
                                                          destinations[new])))

    def test_a_changed_verdict_moves_copies_only_further_default_map(self):
        # MALICIOUS -> trash, SUSPICIOUS and SPOOF -> junk, SPAM, BULK and NONE: no action.
        self.check_changes({}, {
            # new:      MALICIOUS SUSPICIOUS SPOOF  SPAM BULK NONE
            "MALICIOUS": ["had", "had", "had", "-", "-", "-"],
            "SUSPICIOUS": ["act", "had", "had", "-", "-", "-"],
            "SPOOF": ["act", "had", "had", "-", "-", "-"],
            "SPAM": ["act", "act", "act", "-", "-", "-"],
            "BULK": ["act", "act", "act", "-", "-", "-"],
            "NONE": ["act", "act", "act", "-", "-", "-"],
        })

    def test_a_changed_verdict_moves_copies_only_further_every_destination(self):
        # hard_delete > soft_delete > trash > junk > no action (inbox)
        destinations = {"MALICIOUS": "hard_delete", "SUSPICIOUS": "soft_delete",
                        "SPOOF": "trash", "SPAM": "junk", "BULK": None, "NONE": None}
        config = {"allow_hard_delete": True, "auto_retract": {"dispositions": {
            "MALICIOUS": "hard_delete", "SUSPICIOUS": "soft_delete", "SPOOF": "trash",
            "SPAM": "junk", "BULK": "none"}}, "_destinations": destinations}
        self.check_changes(config, {
            # new:      MALICIOUS SUSPICIOUS SPOOF  SPAM BULK NONE
            "MALICIOUS": ["had", "had", "had", "had", "-", "-"],
            "SUSPICIOUS": ["act", "had", "had", "had", "-", "-"],
            "SPOOF": ["act", "act", "had", "had", "-", "-"],
            "SPAM": ["act", "act", "act", "had", "-", "-"],
            "BULK": ["act", "act", "act", "act", "-", "-"],
            "NONE": ["act", "act", "act", "act", "-", "-"],
        })

    def test_previous_disposition_with_no_action_reads_left_where_they_were(self):
        # config.schema.yaml (so StackStorm, and the loader since issue 13) refuses a map that
        # sends a disposition to the inbox (release) ...
        ok, result = self.plan({"auto_retract": {"dispositions": {"MALICIOUS": "inbox"}}},
                               disposition="MALICIOUS", previous_disposition="spam")
        self.assertEqual((ok, result["field"]), (False, "auto_retract.dispositions.MALICIOUS"))
        # ... and policy still reads one as weak as no action (settings built directly)
        from retraction.automation import plan_verdict
        from retraction.config import AutoRetractSettings, Settings
        from retraction.model import Destination, Disposition
        from retraction.policy import Policy
        settings = Settings(ledger_url=None, auto_retract=AutoRetractSettings(
            dispositions={Disposition.MALICIOUS: Destination.INBOX, Disposition.NONE: None}))
        result = plan_verdict(Policy(settings), dict(
            message_id=MID, recipients=RECIPIENTS, disposition="MALICIOUS",
            trigger="disposition", verdict_time=VERDICT_TIME, source="cloudflare",
            source_id="row-1", previous_disposition="spam")).to_dict()
        self.assertEqual((result["act"], result["previous_disposition"]), (False, "SPAM"))
        self.assertEqual(result["why"], "already handled: previous disposition SPAM left "
                                        "copies where they were (no action by policy), and "
                                        "MALICIOUS -> inbox is not stronger")

    def test_without_previous_disposition_nothing_changes(self):
        for previous in (None, "", "  "):
            ok, result = self.plan({}, disposition="SUSPICIOUS", previous_disposition=previous)
            self.assertEqual((result["act"], result["destination"]), (True, "junk"))
            self.assertIsNone(result["previous_disposition"])

    def test_the_switch_still_comes_first(self):
        ok, result = self.plan({"auto_retract": {"post_delivery_response": False}},
                               trigger="post_delivery", previous_disposition="MALICIOUS")
        self.assertTrue(result["why"].startswith("no action by policy: post-delivery response "
                                                 "is off"))

    # -- the inquiry, as the config says ---------------------------------------------------
    def test_the_inquiry_settings_come_from_the_config(self):
        ok, result = self.plan({})
        self.assertEqual(result["inquiry"], {"route": "email_retraction", "users": [],
                                             "roles": [], "ttl": 1440})
        ok, result = self.plan({"approval": {"route": "#soc", "users": ["alice", "bob"],
                                             "roles": ["soc_lead"], "ttl_minutes": 30,
                                             "threshold": 0}})
        self.assertEqual(result["inquiry"], {"route": "#soc", "users": ["alice", "bob"],
                                             "roles": ["soc_lead"], "ttl": 30})
        self.assertIs(result["needs_approval"], True)

    # -- what the run records --------------------------------------------------------------
    def test_comment_and_requested_by(self):
        ok, result = self.plan({}, trigger="phish_submission", requested_by="alice@corp.example",
                               comment="user report s-1")
        self.assertEqual(result["comment"],
                         "phish_submission: cloudflare verdict MALICIOUS (row-1); user report s-1")
        self.assertEqual(result["requested_by"], "alice@corp.example")
        ok, result = self.plan({}, source_id=None)
        self.assertEqual(result["comment"], "disposition: cloudflare verdict MALICIOUS")
        self.assertEqual(result["requested_by"], "cloudflare")  # the source asked
        self.assertEqual(result["message_id"], MID)

    def test_message_id_is_canonical(self):
        ok, result = self.plan({}, message_id="abc@evil.example")
        self.assertEqual(result["message_id"], MID)

    # -- refusals ---------------------------------------------------------------------------
    def test_bad_input_is_refused_naming_the_field(self):
        cases = [
            (dict(message_id="no-at-sign"), "message_id"),
            (dict(recipients=["alice@corp.example", "bad address@x.example"]), "recipients"),
            (dict(recipients=[]), "recipients"),
            (dict(disposition="EVIL"), "disposition"),
            (dict(trigger="analyst"), "trigger"),
            (dict(trigger="weekly"), "trigger"),
            (dict(verdict_time=None), "verdict_time"),
            (dict(verdict_time="yesterday"), "verdict_time"),
            (dict(verdict_time="2999-01-01T00:00:00Z"), "verdict_time"),
            (dict(source="clou dflare"), "source"),
            (dict(source=None), "source"),
            (dict(recipients_count=-1), "recipients_count"),
            (dict(recipients_count="many"), "recipients_count"),
            (dict(requested_by="x" * 201), "requested_by"),
            (dict(colour="red"), "colour"),
            (dict(previous_disposition="EVIL"), "previous_disposition"),
            (dict(previous_disposition=3), "previous_disposition"),
        ]
        for params, field in cases:
            with self.subTest(field=field, params=params):
                ok, result = self.plan({}, **params)
                self.assertIs(ok, False)
                self.assertIs(result["act"], False)
                self.assertEqual(result["field"], field)
                self.assertIn("invalid %s" % field, result["error"])

    def test_a_bad_config_is_refused_naming_the_key(self):
        ok, result = self.plan({"approval": {"threshold": -1}})
        self.assertIs(ok, False)
        self.assertEqual(result["field"], "approval.threshold")
        ok, result = self.plan({"auto_retract": {"dispositions": {"MALICIOUS": "hard_delete"}}})
        self.assertIs(ok, False)  # hard delete needs allow_hard_delete
        self.assertEqual(result["field"], "auto_retract.dispositions.MALICIOUS")

    def test_the_log_says_why(self):
        action = self.get_action_instance({"ledger_url": ""})
        with self.assertLogs(action.logger, level="INFO") as logs:
            action.run(message_id=MID, recipients=RECIPIENTS, disposition="SPAM",
                       verdict_time=VERDICT_TIME, source="cloudflare")
        self.assertIn("no action by policy", "\n".join(logs.output))
