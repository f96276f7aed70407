"""`make demo`: the pack's automatic and manual flows on StackStorm's own engine, narrated.

StackStorm itself runs here (tools/st2engine.Stack: st2 from ../shared/st2, its rules engine,
workflow engine with Orquesta, python runner, inquiry service and API; MongoDB replaced by
mongomock, RabbitMQ by in-process delivery to the same consumers). The sandbox tenant
(sandbox/scenarios/demo.yaml: Microsoft 365, Gmail and Cloudflare Email Security) runs as a
subprocess (sandbox/process.py); the pack config comes from its ready file, with a SQLite
ledger in the work directory.

1. automatic retraction: the pack's VerdictSensor, started as StackStorm's sensor container
   starts it (SensorWrapper; its SensorService keeps the checkpoints in StackStorm's datastore
   through StackStorm's API), polls Cloudflare and dispatches MALICIOUS verdicts;
   StackStorm's rules engine enforces auto_retract_on_verdict; its workflow engine runs
   auto_retract; the analyst approves the large campaign through StackStorm's inquiry
   service; retract_campaign runs the chunks in python runner subprocesses, several at a time;
2. post-delivery response: the sandbox rescans a delivered message and raises its disposition,
   the sensor sees the change, post_delivery_response retracts it;
3. phish submission response: a user's report is confirmed, SubmissionSensor dispatches it,
   phish_submission_response retracts every delivered copy;
4. a manual retraction (`st2 run email_retraction.retract`, a distribution list among the
   recipients) and its undo (restore);
5. the Retractions card (retraction_metrics) for the demo window and the first failed rows of
   View details (retraction_details), both run as StackStorm actions.

The sandbox and StackStorm are stopped at the end, on errors and on Ctrl-C. StackStorm's and
the libraries' logs go to demo.log in the work directory; the screen shows the narration.

    .venv/bin/python tools/demo.py [--copies N] [--keep DIR] [--debug]

--copies sets the campaign's size (default: demo.yaml's 2,000; the campaign is split in 4
chunks either way); --keep DIR keeps the work directory (ledger, pack config, StackStorm's
work dir, demo.log) and writes the sandbox's audit and a summary there before the sandbox
stops; --debug shows the logs on screen and tracebacks. Exit codes: 0 done, 1 failed,
130 interrupted.
"""
# StackStorm's services patch first thing, before any other import (st2api, st2actionrunner,
# the sensor wrapper). eventlet's import-time deprecation notice is kept for demo.log.
import warnings

with warnings.catch_warnings(record=True) as PATCH_WARNINGS:
    warnings.simplefilter("always")
    from st2common.util.monkey_patch import monkey_patch
    monkey_patch()

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timedelta, timezone  # noqa: E402

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if PACK_ROOT not in sys.path:
    sys.path.insert(0, PACK_ROOT)

import yaml  # noqa: E402

from sandbox.process import SandboxProcess  # noqa: E402
from tools.st2engine import ST2_SHARED, Stack  # noqa: E402
from tools.st2engine import sensors as st2_sensors  # noqa: E402

SCENARIO = os.path.join(PACK_ROOT, "sandbox", "scenarios", "demo.yaml")
CAMPAIGN = "<campaign-1@evil.example>"
RESCANNED = "<shared-doc-4410@docs-share.example>"
REPORTED = "<payroll-update-2291@hr-portal.example>"
MANUAL = "<q3-townhall@corp.example>"
DECOY = "<lunch-menu@corp.example>"
ANALYST = "dana"
SENSORS = ("VerdictSensor", "SubmissionSensor")
CHUNKS = 4  # the campaign is split in this many chunks (limits.chunk_size follows --copies)
WAIT_S = 600  # the longest any one execution may take before the demo gives up
WIDTH = 96  # narration lines wrap here


class DemoError(Exception):
    """Something went wrong; the message says what (no traceback on screen)."""


class Say(object):
    """Narration on stdout, whole lines."""

    def __init__(self, out):
        self.out = out

    def __call__(self, text="", indent=0):
        lines = []
        for line in text.splitlines() or [""]:
            lines.extend(textwrap.wrap(line, WIDTH, initial_indent=" " * indent,
                                       subsequent_indent=" " * (indent + 2),
                                       break_on_hyphens=False) or [""])
        self.out.write("".join(line + "\n" for line in lines))
        self.out.flush()


def plural(count, word):
    many = word[:-1] + "ies" if word.endswith("y") else word + "s"
    return "%s %s" % ("{:,}".format(count), word if count == 1 else many)


def counted(counts):
    """One line of an action's counts: how many copies ended in which status, and why."""
    reasons = ", ".join("%s %d" % (reason, n) for reason, n in sorted(
        counts["by_reason"].items()))
    return ", ".join("%d %s" % (n, status) for status, n in sorted(
        counts["by_status"].items())) + (" (%s)" % reasons if reasons else "")


def summary(record):
    """One line of a metric record: what moved, what was there, what failed and why."""
    reasons = ", ".join("%s %s" % (reason, "{:,}".format(n))
                        for reason, n in record["failed_by_reason"].items() if n)
    text = "%s retracted, %s already there, %s failed" % (
        "{:,}".format(record["retracted"]), "{:,}".format(record["already_in_destination"]),
        "{:,}".format(record["failed"]))
    return text + (" (%s)" % reasons if reasons else "")


def short(execution):
    return str(execution.id)[-8:]


def seconds(execution):
    if not execution.end_timestamp or not execution.start_timestamp:
        return 0.0
    return (execution.end_timestamp - execution.start_timestamp).total_seconds()


def failure(execution):
    """Why an execution failed, in one line: the action's error, else the runner's."""
    result = Stack.result(execution)
    if isinstance(result, dict) and result.get("error"):
        return str(result["error"])
    raw = execution.result or {}
    output = raw.get("output") if isinstance(raw.get("output"), dict) else {}
    for text in (output.get("why"), raw.get("errors"), raw.get("error"), raw.get("stderr")):
        if text:
            text = text if isinstance(text, str) else json.dumps(text, default=str)
            return text.strip().splitlines()[-1][:400]
    return "status %s" % execution.status


# -- the narrated flow ---------------------------------------------------------------------------

class Demo(object):
    def __init__(self, say, stack, sandbox, config):
        self.say = say
        self.stack = stack
        self.sandbox = sandbox
        self.config = config
        self.runs = {}  # message_id -> run ids
        self.steps = []
        self.record = None
        self.sensors = []
        self.dispatched = []  # (trigger, payload) as the sensors handed them to StackStorm
        self.workflows = []  # what StackStorm recorded of each auto_retract (summary.json)
        self._instances = set()

    # the sensors ------------------------------------------------------------------------------
    def start_sensors(self):
        """The pack's registered sensors, started as StackStorm's sensor container starts them
        (tools/st2engine: Stack.sensor_wrapper, st2reactor's SensorWrapper): the class loaded
        by StackStorm's loader, the pack config by its ContentPackConfigLoader, and
        StackStorm's SensorService, whose datastore calls StackStorm's API (Stack.serve_api).
        This process steps setup, poll and cleanup, as the wrapper's loop does."""
        for class_name in SENSORS:
            wrapper = self.stack.sensor_wrapper("email_retraction." + class_name)
            sensor = wrapper._sensor_instance
            # what the sensor dispatches is noted; StackStorm's SensorService dispatches it
            st2_sensors.observe(sensor.sensor_service,
                                lambda trigger, payload: self.dispatched.append(
                                    (trigger, payload)))
            sensor.setup()
            self.sensors.append(sensor)
        self.say("%s started as StackStorm's sensor container starts them (SensorWrapper: "
                 "its loader, the pack config, a SensorService that validates each payload "
                 "against its trigger type and hands it to the rules engine)"
                 % " and ".join(SENSORS), 2)

    def stop_sensors(self):
        for sensor in self.sensors:
            sensor.cleanup()
        self.sensors = []

    def poll(self, expected):
        """Poll every sensor once, as the sensor container's loop does every poll_interval;
        the trigger instances StackStorm made of what they dispatched."""
        before = len(self.dispatched)
        for sensor in self.sensors:
            sensor.poll()
        dispatched = self.dispatched[before:]
        kinds = sorted(set(t.split(".", 1)[1] for t, _ in dispatched))
        self.say("the sensors poll Cloudflare Email Security: %s (%s)" % (
            plural(len(dispatched), "trigger"), ", ".join(kinds) or "nothing new"), 2)
        if not any(t.endswith("." + expected) for t, _ in dispatched):
            raise DemoError("the sensors did not dispatch %s" % expected)
        return [(t, p, self._instance(t, p)) for t, p in dispatched]

    def _instance(self, trigger, payload):
        """The trigger instance StackStorm's rules engine made of a dispatched payload, once
        the rules engine has processed it."""
        from st2common.validators.api.reactor import validate_trigger_payload
        try:
            validate_trigger_payload(trigger, payload, throw_on_inexistent_trigger=True)
        except Exception as exc:  # StackStorm's dispatcher dropped it (validate_trigger_payload)
            raise DemoError("StackStorm dropped a %s payload the sensor dispatched: %s"
                            % (trigger, exc))
        import eventlet
        deadline = time.monotonic() + 60
        while True:
            for instance in self.stack.trigger_instances(trigger):
                if (str(instance.id) not in self._instances and instance.payload == payload
                        and instance.status in ("processed", "processing_failed")):
                    self._instances.add(str(instance.id))
                    return instance
            if time.monotonic() > deadline:
                raise DemoError("the rules engine did not process the %s of %s"
                                % (trigger, payload.get("message_id")))
            eventlet.sleep(0.05)

    # rules and workflows ---------------------------------------------------------------------
    def respond(self, trigger, payload, instance):
        line = "%s: %s %s" % (trigger.split(".", 1)[1], payload["message_id"],
                              payload["disposition"])
        if payload.get("previous_disposition"):
            line += " (was %s)" % payload["previous_disposition"]
        if payload.get("reporter"):
            line += " reported by %s" % payload["reporter"]
        self.say("- " + line, 2)
        from st2common.persistence.rule_enforcement import RuleEnforcement
        enforcements = list(RuleEnforcement.query(trigger_instance_id=str(instance.id)))
        if not enforcements:
            raise DemoError("no rule matched the %s of %s" % (trigger, payload["message_id"]))
        for enforcement in enforcements:
            name = enforcement.rule.ref.split(".", 1)[1]
            if enforcement.failure_reason or not enforcement.execution_id:
                raise DemoError("rule %s was not enforced: %s"
                                % (name, enforcement.failure_reason))
            self.say("rule %s enforced by the rules engine: auto_retract execution %s" % (
                name, enforcement.execution_id[-8:]), 4)
            self.workflows.append(dict(self.follow(enforcement.execution_id,
                                                   payload["message_id"]),
                                       rule=enforcement.rule.ref, trigger=trigger,
                                       trigger_instance=str(instance.id)))

    def follow(self, execution_id, message_id):
        """Narrate one auto_retract workflow from its executions (StackStorm's records),
        answering its inquiry when it asks one."""
        from st2common.constants import action as states
        stack = self.stack
        execution = stack.wait(execution_id, timeout=WAIT_S, statuses=list(
            states.LIVEACTION_COMPLETED_STATES) + [states.LIVEACTION_STATUS_PAUSED])
        p = execution.parameters
        self.say("auto_retract(trigger=%s, disposition=%s, %s, verdict %s)"
                 % (p["retraction_trigger"], p["disposition"],
                    plural(len(p["recipients"]), "recipient"),
                    p["verdict_time"][11:19] + " UTC"), 4)
        plan = self._one(execution_id, "email_retraction.plan")
        result = Stack.result(plan) or {}
        self.say("plan: %s" % (result.get("why") or failure(plan)), 4)
        answered = None
        if execution.status == states.LIVEACTION_STATUS_PAUSED:
            answered = self.approve(execution_id)
            execution = stack.wait(execution_id, timeout=WAIT_S)
        decision = self._one(execution_id, "email_retraction.record_decision", needed=False)
        if decision is not None and (Stack.result(decision) or {}).get("recorded"):
            d = Stack.result(decision)["decision"]
            self.say("record_decision: %s by %s, kept in the ledger before anything moves"
                     % (d["decision"], d["decided_by"]), 4)
        split = self._one(execution_id, "email_retraction.split_recipients", needed=False)
        chunks = self.chunks(execution_id, Stack.result(split)) if split is not None else []
        aggregate = self._one(execution_id, "email_retraction.aggregate_run", needed=False)
        if aggregate is not None and Stack.result(aggregate):
            r = Stack.result(aggregate)
            self.say("aggregate_run: run %s %s: %s" % (r["run_id"][:8], r["state"],
                                                       summary(r["metric_record"])), 4)
        output = (execution.result or {}).get("output") or {}
        if execution.status != states.LIVEACTION_STATUS_SUCCEEDED:
            raise DemoError("auto_retract %s: %s" % (execution.status, failure(execution)))
        if output.get("run_id"):
            self.runs.setdefault(message_id, []).append(output["run_id"])
        else:
            self.say("no retraction: %s" % output.get("why"), 4)
        self.say("auto_retract %s in %.1f s (workflow engine)"
                 % (execution.status, seconds(execution)), 4)
        return {"message_id": message_id, "execution": execution_id,
                "status": execution.status, "run_id": output.get("run_id"),
                "inquiry": answered, "chunks": chunks}

    def _one(self, execution_id, ref, needed=True):
        found = self.stack.descendants(execution_id, ref)
        if not found and needed:
            raise DemoError("auto_retract ran no %s" % ref)
        return found[-1] if found else None

    def approve(self, execution_id):
        from st2common.constants import action as states
        asks = [e for e in self.stack.descendants(execution_id, "core.ask")
                if e.status == states.LIVEACTION_STATUS_PENDING]
        if len(asks) != 1:
            raise DemoError("auto_retract paused without one pending inquiry")
        question = asks[0].parameters["schema"]["description"]
        self.say("core.ask: %s" % question.split(" Answer approve=")[0], 4)
        self.stack.respond(asks[0], {"approve": True, "analyst": ANALYST,
                                     "comment": "checked the sender domain"},
                           requester=ANALYST)
        self.say("%s answers approve=true (\"checked the sender domain\") through StackStorm's "
                 "inquiry service; the workflow resumes" % ANALYST, 4)
        answered = self.stack.execution(str(asks[0].id))
        return {"execution": str(asks[0].id), "status": answered.status,
                "result": answered.result}

    def chunks(self, execution_id, split):
        """retract_campaign's chunks: one python runner subprocess each, `concurrency` at a
        time (Orquesta with-items); times are from the executions' own timestamps."""
        total = len(split["chunks"])
        self.say("retract_campaign: run %s, %s in %s of up to %s, %d at a time (Orquesta "
                 "with-items; a python runner subprocess per chunk)" % (
                     split["run_id"][:8], plural(split["copies"], "copy"),
                     plural(total, "chunk"), "{:,}".format(max(len(c) for c in split["chunks"])),
                     split["concurrency"]), 4)
        retracts = [e for e in self.stack.descendants(execution_id, "email_retraction.retract")
                    if e.parameters.get("run_id") == split["run_id"]]
        if not retracts:
            return []
        zero = min(e.start_timestamp for e in retracts)
        for e in sorted(retracts, key=lambda e: self._item(e)):
            result = Stack.result(e) or {}
            counts = result.get("counts") if isinstance(result, dict) else None
            self.say("chunk %d/%d: %s from +%.1f s to +%.1f s: %s" % (
                self._item(e) + 1, total, plural((counts or {}).get("total", len(
                    e.parameters.get("recipients") or [])), "copy"),
                (e.start_timestamp - zero).total_seconds(),
                (e.end_timestamp - zero).total_seconds() if e.end_timestamp else 0,
                counted(counts) if counts else failure(e)), 6)
        return [{"execution": str(e.id), "item": self._item(e), "status": e.status,
                 "copies": len(e.parameters.get("recipients") or []),
                 "start": e.start_timestamp.isoformat(),
                 "end": e.end_timestamp.isoformat() if e.end_timestamp else None}
                for e in sorted(retracts, key=self._item)]

    @staticmethod
    def _item(execution):
        return int(((execution.context or {}).get("orquesta") or {}).get("item_id") or 0)

    # the steps -------------------------------------------------------------------------------
    def step(self, number, title, func):
        self.say()
        self.say("%d. %s" % (number, title))
        started = time.monotonic()
        func()
        self.steps.append({"step": number, "title": title,
                           "seconds": round(time.monotonic() - started, 2)})

    def automatic(self):
        self.start_sensors()
        for trigger, payload, instance in self.poll("verdict"):
            self.respond(trigger, payload, instance)
        self.say("the sensors keep their checkpoints in StackStorm's datastore, through its API: "
                 "%s" % ", ".join(self.datastore_keys()), 2)

    def datastore_keys(self):
        from st2common.persistence.keyvalue import KeyValuePair
        return sorted(kv.name for kv in KeyValuePair.get_all()
                      if kv.name.startswith("email_retraction."))

    def post_delivery(self):
        row = self.verdict_id(RESCANNED)
        self.sandbox.control("POST", "/verdicts/%s/rescan" % row, {"disposition": "MALICIOUS"})
        self.say("the sandbox rescans %s (delivered as NONE): now MALICIOUS" % RESCANNED, 2)
        for trigger, payload, instance in self.poll("verdict_changed"):
            self.respond(trigger, payload, instance)

    def verdict_id(self, message_id):
        """The Cloudflare row of a message (investigate?message_id=...), as a client sees it."""
        cloudflare = self.config["cloudflare"]
        response = self.sandbox.session.get(
            "%s/accounts/%s/email-security/investigate" % (cloudflare["base_url"],
                                                           cloudflare["account_id"]),
            params={"message_id": message_id},
            headers={"Authorization": "Bearer " + cloudflare["api_token"]}, timeout=30)
        rows = (response.json().get("result") or []) if response.status_code == 200 else []
        if len(rows) != 1:
            raise DemoError("Cloudflare has no single row for %s" % message_id)
        return rows[0]["id"]

    def submission(self):
        self.sandbox.control("POST", "/submissions/s-1/confirm", {"disposition": "MALICIOUS"})
        self.say("the SOC confirms alice's report s-1 of %s as MALICIOUS" % REPORTED, 2)
        for trigger, payload, instance in self.poll("phish_submission"):
            self.respond(trigger, payload, instance)

    def manual(self):
        recipients = ["all-staff@corp.example", "carol@corp-mail.example"]
        self.say("%s runs st2 run email_retraction.retract message_id=%s recipients=%s "
                 "comment=INC-4711" % (ANALYST, MANUAL, ",".join(recipients)), 2)
        result = self._manual("retract", recipients, comment="INC-4711: suspected spoof")
        self.say("run %s to %s: %s" % (result["run_id"][:8], result["destination"],
                                       counted(result["counts"])), 4)
        self.say("(all-staff is a distribution list: its own row is not_a_mailbox and its "
                 "members alice and bob are expanded); %s" % self._folders(), 4)
        self.say("the sender checks out: %s runs email_retraction.restore for the same "
                 "recipients" % ANALYST, 2)
        result = self._manual("restore", recipients, disposition="NONE",
                              comment="INC-4711: false positive, sender verified")
        self.say("run %s to %s: %s; %s" % (result["run_id"][:8], result["destination"],
                                           counted(result["counts"]), self._folders()), 4)

    def _manual(self, action, recipients, **params):
        execution = self.action(action, dict(message_id=MANUAL, recipients=recipients,
                                             **params))
        result = Stack.result(execution)
        self.say("python runner: execution %s %s in %.1f s" % (
            short(execution), execution.status, seconds(execution)), 4)
        self.runs.setdefault(MANUAL, []).append(result["run_id"])
        return result

    def action(self, name, params):
        execution = self.stack.run("email_retraction." + name, params, timeout=WAIT_S,
                                   user=ANALYST)
        if execution.status != "succeeded":
            raise DemoError("%s %s: %s" % (name, execution.status, failure(execution)))
        return execution

    def _folders(self):
        copies = self.sandbox.copies(MANUAL)
        return "now " + ", ".join("%s %s" % (c["mailbox"].split("@")[0], c["folder"])
                                  for c in sorted(copies, key=lambda c: c["mailbox"]))

    def card(self, since, until):
        self.say("%s runs email_retraction.retraction_metrics since=%s until=%s format=text, "
                 "then email_retraction.retraction_details status=failed:"
                 % (ANALYST, since, until), 2)
        self.say()
        result = Stack.result(self.action("retraction_metrics", {
            "since": since, "until": until, "format": "text"}))
        self.say(result["card"], 2)
        self.record = result["record"]
        page = self.details(since, until, limit=5)
        self.say()
        self.say("View details, status=failed: first %d of %s" % (
            len(page["rows"]), "{:,}".format(self.record["failed"])), 2)
        self.rows(page["rows"])
        shown = set(row["reason"] for row in page["rows"])
        others = [reason for reason, n in self.record["failed_by_reason"].items()
                  if n and reason not in shown]
        if others:
            self.say("and the first row of each other reason:", 2)
            for reason in others:
                self.rows(self.details(since, until, limit=1, reason=reason)["rows"])

    def details(self, since, until, **filters):
        return Stack.result(self.action("retraction_details", dict(
            since=since, until=until, status="failed", **filters)))

    def rows(self, rows):
        for row in rows:
            self.say("%s (%s): %s: %s" % (row["recipient"], row["provider"] or "no provider",
                                          row["reason"], row["error_message"] or "-"), 4)


# -- main ---------------------------------------------------------------------------------------

def scenario_file(workdir, copies):
    """demo.yaml, or a copy with the campaign's size changed; and that size."""
    with open(SCENARIO) as handle:
        scenario = yaml.safe_load(handle)
    if copies is None:
        return SCENARIO, scenario["campaigns"][0]["copies"]
    scenario["campaigns"][0]["copies"] = copies
    path = os.path.join(workdir, "demo-scenario.yaml")
    with open(path, "w") as handle:
        yaml.safe_dump(scenario, handle, sort_keys=False)
    return path, copies


def pack_config(sandbox, workdir, copies):
    """The sandbox's pack config with a ledger of our own and the campaign in CHUNKS chunks
    (500 copies each for demo.yaml's 2,000: the config's default)."""
    config = sandbox.pack_config(ledger_url="sqlite:///" + os.path.join(workdir, "ledger.db"))
    chunk_size = -(-copies // CHUNKS)
    if chunk_size != 500:
        config.setdefault("limits", {})["chunk_size"] = chunk_size
    return config


def engine_line():
    from importlib.metadata import version
    where = os.path.relpath(ST2_SHARED, PACK_ROOT)
    return ("StackStorm's own engine runs it: st2 %s from %s (rules engine, workflow engine with "
            "Orquesta %s, python runner, inquiry service, API); MongoDB is replaced by mongomock "
            "and RabbitMQ by in-process delivery to the same consumers."
            % (version("st2common"), where, version("orquesta")))


def run(args, say, workdir):
    started = time.monotonic()
    since = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=1)
    scenario, copies = scenario_file(workdir, args.copies)
    sandbox = SandboxProcess(scenario)
    stack = demo = None
    try:
        say("email_retraction demo: the pack's sensors, rules, actions and workflows against a "
            "local sandbox tenant (Microsoft 365, Gmail, Cloudflare Email Security).")
        say(engine_line())
        sandbox.start()
        say("sandbox (%s) ready in %.1f s, in its own process; pack config from its ready "
            "file, SQLite ledger %s" % (os.path.basename(scenario), time.monotonic() - started,
                                        "kept in " + workdir if args.keep else "(temporary)"),
            2)
        booted = time.monotonic()
        config = pack_config(sandbox, workdir, copies)
        stack = Stack.boot(config, os.path.join(workdir, "st2"))
        stack.serve_api()  # the sensors' datastore: StackStorm's API (st2api) in this process
        n = {key: count[0] if isinstance(count, tuple) else count  # (registered, overridden)
             for key, count in stack.registered.items()}
        say("StackStorm booted in %.1f s: packs core and email_retraction registered by its "
            "registrars (%d actions, %d rules, %d sensors, %d aliases); the pack config "
            "validated against config.schema.yaml" % (
                time.monotonic() - booted,
                n[("core", "actions")] + n[("email_retraction", "actions")],
                n[("email_retraction", "rules")], n[("email_retraction", "sensors")],
                n[("email_retraction", "aliases")]), 2)
        demo = Demo(say, stack, sandbox, config)
        demo.step(1, "Automatic retraction: verdict_sensor sees MALICIOUS verdicts",
                  demo.automatic)
        demo.step(2, "Post-delivery response: a delivered message is rescanned",
                  demo.post_delivery)
        demo.step(3, "Phish submission response: a user's report is confirmed",
                  demo.submission)
        demo.step(4, "Manual retraction and undo (retract, then restore)", demo.manual)
        until = (datetime.now(timezone.utc) + timedelta(minutes=1)).replace(microsecond=0)
        demo.step(5, "The Retractions card for the demo window, and View details",
                  lambda: demo.card(since.isoformat(), until.isoformat()))
        if args.keep:
            keep(args.keep, demo, sandbox, since, until)
    finally:
        if demo is not None:
            demo.stop_sensors()
        if stack is not None:
            stack.stop_api()
            stack.shutdown()
        sandbox.stop()
    say()
    say("done in %.1f s; StackStorm and the sandbox are stopped." % (time.monotonic() - started))


def keep(directory, demo, sandbox, since, until):
    """What tests/test_demo.py checks, written while the sandbox still runs."""
    with open(os.path.join(directory, "audit.json"), "w") as handle:
        json.dump(sandbox.audit(), handle)
    copies = {m: sandbox.copies(m) for m in (CAMPAIGN, RESCANNED, REPORTED, MANUAL, DECOY)}
    with open(os.path.join(directory, "summary.json"), "w") as handle:
        json.dump({"since": since.isoformat(), "until": until.isoformat(),
                   "ledger_url": demo.config["ledger_url"], "runs": demo.runs,
                   "steps": demo.steps, "card_record": demo.record, "copies": copies,
                   "campaign": sandbox.campaign_truth(CAMPAIGN),
                   "datastore_keys": demo.datastore_keys(), "workflows": demo.workflows,
                   "sandbox_pid": sandbox.proc.pid}, handle, indent=1)


def logs(path, debug):
    """StackStorm's and the libraries' logs (and stray stderr) to demo.log; also to the
    screen with --debug. Returns the log file."""
    log = open(path, "w")
    handlers = [logging.StreamHandler(log)]
    if debug:
        handlers.append(logging.StreamHandler(sys.stderr))
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: "
                                               "%(message)s"))
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, handlers=handlers,
                        force=True)
    logging.captureWarnings(True)
    for warning in PATCH_WARNINGS:
        logging.getLogger("py.warnings").warning(
            "%s: %s", warning.category.__name__, str(warning.message).strip())
    return log


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=None,
                        help="campaign size (default: demo.yaml's)")
    parser.add_argument("--keep", default=None, help="keep the work directory here")
    parser.add_argument("--debug", action="store_true", help="logs and tracebacks on screen")
    args = parser.parse_args(argv)
    if args.copies is not None and args.copies < 10:
        parser.error("--copies must be at least 10")
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
    workdir = os.path.abspath(args.keep) if args.keep else tempfile.mkdtemp(prefix="demo-")
    say = Say(sys.stdout)
    screen_err = sys.stderr
    log = logs(os.path.join(workdir, "demo.log"), args.debug)
    if not args.debug:
        sys.stderr = log  # what writes to stderr directly, not through logging
    code = 1
    try:
        run(args, say, workdir)
        code = 0
    except KeyboardInterrupt:
        screen_err.write("\ninterrupted: StackStorm and the sandbox are stopped.\n")
        code = 130
    except Exception as exc:
        logging.getLogger("demo").exception("demo failed")
        if args.debug:
            import traceback
            traceback.print_exc(file=screen_err)
        kind = "" if isinstance(exc, DemoError) else type(exc).__name__ + ": "
        screen_err.write("\ndemo failed: %s%s\n(logs: %s; --debug shows the traceback)\n"
                         % (kind, exc, os.path.join(workdir, "demo.log")))
        args.keep = args.keep or workdir  # keep the logs it points to
    finally:
        logging.shutdown()
        sys.stderr = screen_err
        log.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return code


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # StackStorm's green threads are stopped; exiting without the interpreter's finalization
    # spares the screen eventlet's "greenlet is being finalized" notices from logging's
    # handler-removal hooks.
    os._exit(code)
