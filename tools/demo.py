"""`make demo`: the pack's automatic and manual flows on a local sandbox tenant, narrated.

Starts the sandbox (`python -m sandbox`, scenario sandbox/scenarios/demo.yaml: Microsoft 365,
Gmail and Cloudflare Email Security) as a subprocess, writes a pack config from its ready file
with a temporary SQLite ledger, and runs the pack's own sensor, rule, action and workflow
files through tools/st2local (the in-process StackStorm stand-in the tests use):

1. automatic retraction: verdict_sensor picks up MALICIOUS verdicts, auto_retract_on_verdict
   renders auto_retract's parameters, plan maps the disposition to a destination, an analyst
   approves the large campaign (core.ask), retract_campaign retracts it in chunks;
2. post-delivery response: the sandbox rescans a delivered message and raises its disposition,
   the sensor sees the change, post_delivery_response retracts it;
3. phish submission response: a user's report is confirmed, submission_sensor dispatches it,
   phish_submission_response retracts every delivered copy;
4. a manual retraction (a distribution list among the recipients) and its undo (restore);
5. the Retractions card for the demo window and the first failed rows of View details.

The sandbox is stopped at the end, on errors and on Ctrl-C. Library and action logs go to
demo.log in the work directory, not to the screen.

    .venv/bin/python tools/demo.py [--copies N] [--keep DIR] [--debug]

--copies sets the campaign's size (default: demo.yaml's 2,000); --keep DIR keeps the work
directory (ledger, pack config, logs) and writes the sandbox's audit and a summary there
before the sandbox stops; --debug shows logs and tracebacks. Exit codes: 0 done, 1 failed,
130 interrupted.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from datetime import datetime, timedelta, timezone

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if PACK_ROOT not in sys.path:
    sys.path.insert(0, PACK_ROOT)

import requests  # noqa: E402
import yaml  # noqa: E402

from tools.st2local import RuleEngine, Runtime, SensorDrive  # noqa: E402

SCENARIO = os.path.join(PACK_ROOT, "sandbox", "scenarios", "demo.yaml")
CAMPAIGN = "<campaign-1@evil.example>"
RESCANNED = "<shared-doc-4410@docs-share.example>"
REPORTED = "<payroll-update-2291@hr-portal.example>"
MANUAL = "<q3-townhall@corp.example>"
DECOY = "<lunch-menu@corp.example>"
ANALYST = "dana"
READY_TIMEOUT_S = 60
WIDTH = 96  # narration lines wrap here


class DemoError(Exception):
    """Something went wrong; the message says what (no traceback on screen)."""


class Say(object):
    """Narration on stdout, whole lines, safe from the chunk threads."""

    def __init__(self, out):
        self.out = out
        self.lock = threading.Lock()

    def __call__(self, text="", indent=0):
        lines = []
        for line in text.splitlines() or [""]:
            lines.extend(textwrap.wrap(line, WIDTH, initial_indent=" " * indent,
                                       subsequent_indent=" " * (indent + 2),
                                       break_on_hyphens=False) or [""])
        with self.lock:
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


# -- the sandbox subprocess ------------------------------------------------------------------------

class SandboxProcess(object):
    def __init__(self, workdir, scenario):
        self.workdir = workdir
        self.scenario = scenario
        self.ready_file = os.path.join(workdir, "sandbox.json")
        self.log_path = os.path.join(workdir, "sandbox.log")
        self.proc = None
        self.info = None

    def start(self):
        started = time.monotonic()
        with open(self.log_path, "w") as log:
            # Its own session: Ctrl-C reaches the demo, which stops the sandbox itself.
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sandbox", "--scenario", self.scenario,
                 "--ready-file", self.ready_file,
                 "--data-dir", os.path.join(self.workdir, "sandbox")],
                cwd=PACK_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        while not os.path.exists(self.ready_file):
            if self.proc.poll() is not None:
                raise DemoError("the sandbox exited (%s) before it was ready; see %s:\n%s"
                                % (self.proc.returncode, self.log_path, self._log_tail()))
            if time.monotonic() - started > READY_TIMEOUT_S:
                raise DemoError("the sandbox was not ready after %d s; see %s"
                                % (READY_TIMEOUT_S, self.log_path))
            time.sleep(0.05)
        with open(self.ready_file) as handle:
            self.info = json.load(handle)
        self.info["ready_s"] = time.monotonic() - started
        return self.info

    def _log_tail(self):
        with open(self.log_path) as handle:
            return "".join(handle.readlines()[-5:])

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Control(object):
    """The sandbox's control API and Cloudflare front, over HTTP as any client would."""

    def __init__(self, info, config):
        self.url = info["control_url"]
        self.cloudflare = config["cloudflare"]
        self.session = requests.Session()
        self.session.trust_env = False  # loopback only; no proxy

    def _call(self, method, path, **kwargs):
        response = self.session.request(method, self.url + path, timeout=30, **kwargs)
        if response.status_code != 200:
            raise DemoError("sandbox control %s %s: %s %s" % (method, path,
                                                              response.status_code,
                                                              response.text[:200]))
        return response.json()

    def verdict_id(self, message_id):
        """The Cloudflare row of a message (investigate?message_id=...)."""
        response = self.session.get(
            "%s/accounts/%s/email-security/investigate" % (self.cloudflare["base_url"],
                                                           self.cloudflare["account_id"]),
            params={"message_id": message_id},
            headers={"Authorization": "Bearer " + self.cloudflare["api_token"]}, timeout=30)
        rows = response.json().get("result") or []
        if response.status_code != 200 or len(rows) != 1:
            raise DemoError("Cloudflare has no single row for %s" % message_id)
        return rows[0]["id"]

    def rescan(self, verdict_id, disposition):
        return self._call("POST", "/verdicts/%s/rescan" % verdict_id,
                          json={"disposition": disposition})

    def confirm(self, submission_id, disposition):
        return self._call("POST", "/submissions/%s/confirm" % submission_id,
                          json={"disposition": disposition})

    def copies(self, message_id):
        return self._call("GET", "/copies", params={"message_id": message_id})["copies"]

    def audit(self):
        return self._call("GET", "/audit", params={"since": 0})["entries"]


# -- the narrated flow ---------------------------------------------------------------------------

class Demo(object):
    def __init__(self, say, config, control):
        self.say = say
        self.config = config
        self.control = control
        self.runtime = Runtime(config, answer=self.answer, observer=self.observe,
                               action_context={"user": ANALYST, "api_user": None},
                               log_level="info")
        self.engine = RuleEngine(self.runtime)
        self.sensors = SensorDrive(config)
        self.runs = {}  # message_id -> run ids
        self.steps = []
        self._chunks = {}

    # what the runtime reports while it runs ----------------------------------------------
    def observe(self, event):
        name = event.ref.split(".", 1)[1]
        result = (event.result or {}).get("result") if event.phase == "end" else None
        if event.phase == "start" and name == "auto_retract":
            p = event.params
            self.say("auto_retract(trigger=%s, disposition=%s, %s, verdict %s)"
                     % (p["retraction_trigger"], p["disposition"],
                        plural(len(p["recipients"]), "recipient"),
                        p["verdict_time"][11:19] + " UTC"), 4)
        elif event.phase != "end":
            return
        elif name == "plan" and result:
            self.say("plan: %s" % (result.get("why") or result.get("error")), 4)
        elif name == "record_decision" and result and result.get("recorded"):
            decision = result["decision"]
            self.say("record_decision: %s by %s, kept in the ledger before anything moves"
                     % (decision["decision"], decision["decided_by"]), 4)
        elif name == "split_recipients" and result:
            self._chunks[result["run_id"]] = len(result["chunks"])
            self.say("retract_campaign: run %s, %s in %s of up to %s, %d at a time"
                     % (result["run_id"][:8], plural(result["copies"], "copy"),
                        plural(len(result["chunks"]), "chunk"),
                        "{:,}".format(max(len(c) for c in result["chunks"])),
                        result["concurrency"]), 4)
        elif name == "retract" and event.where[0] == "retract":
            counts = (result or {}).get("counts") or {}
            self.say("chunk %d/%d: %s in %.1f s: %s" % (
                event.where[1] + 1, self._chunks.get(event.params["run_id"], 0),
                plural(counts.get("total", 0), "copy"), event.elapsed,
                counted(counts) if counts else (event.result or {}).get("stderr", "failed")),
                6)
        elif name == "aggregate_run" and result:
            self.say("aggregate_run: run %s %s: %s" % (result["run_id"][:8], result["state"],
                                                       summary(result["metric_record"])), 4)

    def answer(self, schema):
        question = schema.get("description") or ""
        self.say("core.ask: %s" % question.split(" Answer approve=")[0], 4)
        self.say("%s answers approve=true (\"checked the sender domain\")" % ANALYST, 4)
        return {"approve": True, "analyst": ANALYST, "comment": "checked the sender domain"}

    # rules and sensors --------------------------------------------------------------------
    def poll(self, expected):
        dispatched = self.sensors.poll()
        triggers = sorted(set(t.split(".", 1)[1] for t, _ in dispatched))
        self.say("sensors polled Cloudflare Email Security: %s (%s)" % (
            plural(len(dispatched), "trigger"), ", ".join(triggers) or "nothing new"), 2)
        if not any(t.endswith("." + expected) for t, _ in dispatched):
            raise DemoError("the sensors did not dispatch %s" % expected)
        return dispatched

    def respond(self, trigger, payload):
        line = "%s: %s %s" % (trigger.split(".", 1)[1], payload["message_id"],
                              payload["disposition"])
        if payload.get("previous_disposition"):
            line += " (was %s)" % payload["previous_disposition"]
        if payload.get("reporter"):
            line += " reported by %s" % payload["reporter"]
        self.say("- " + line, 2)
        rules = self.engine.matching(trigger, payload)
        self.say("rule %s renders:" % ", ".join(r["name"] for r in rules), 4)
        for enforcement in self.engine.dispatch(trigger, payload):
            if enforcement.failure_reason:
                raise DemoError("rule %s was not enforced: %s"
                                % (enforcement.rule["name"], enforcement.failure_reason))
            output = enforcement.result.get("output") or {}
            if enforcement.status != "succeeded":
                errors = enforcement.result.get("errors") or [{}]
                raise DemoError("auto_retract failed: %s" % (output.get("why") or errors[0]))
            if output.get("run_id"):
                self.runs.setdefault(payload["message_id"], []).append(output["run_id"])
            else:
                self.say("no retraction: %s" % output.get("why"), 4)

    # the steps ----------------------------------------------------------------------------
    def step(self, number, title, func):
        self.say()
        self.say("%d. %s" % (number, title))
        started = time.monotonic()
        func()
        self.steps.append({"step": number, "title": title,
                           "seconds": round(time.monotonic() - started, 2)})

    def automatic(self):
        for trigger, payload in self.poll("verdict"):
            self.respond(trigger, payload)

    def post_delivery(self):
        row = self.control.verdict_id(RESCANNED)
        self.control.rescan(row, "MALICIOUS")
        self.say("the sandbox rescans %s (delivered as NONE): now MALICIOUS" % RESCANNED, 2)
        for trigger, payload in self.poll("verdict_changed"):
            self.respond(trigger, payload)

    def submission(self):
        self.control.confirm("s-1", "MALICIOUS")
        self.say("the SOC confirms alice's report s-1 of %s as MALICIOUS" % REPORTED, 2)
        for trigger, payload in self.poll("phish_submission"):
            self.respond(trigger, payload)

    def manual(self):
        recipients = ["all-staff@corp.example", "carol@corp-mail.example"]
        self.say("%s runs retract %s from %s (comment INC-4711)"
                 % (ANALYST, MANUAL, ", ".join(recipients)), 2)
        result = self._manual("retract", recipients, comment="INC-4711: suspected spoof")
        self.say("run %s to %s: %s" % (result["run_id"][:8], result["destination"],
                                       counted(result["counts"])), 4)
        self.say("(all-staff is a distribution list: its own row is not_a_mailbox and its "
                 "members alice and bob are expanded); %s" % self._folders(), 4)
        self.say("the sender checks out: %s runs restore %s for the same recipients"
                 % (ANALYST, MANUAL), 2)
        result = self._manual("restore", recipients, disposition="NONE",
                              comment="INC-4711: false positive, sender verified")
        self.say("run %s to %s: %s; %s" % (result["run_id"][:8], result["destination"],
                                           counted(result["counts"]), self._folders()), 4)

    def _manual(self, action, recipients, **params):
        status, result = self.runtime.run_action("email_retraction." + action, dict(
            message_id=MANUAL, recipients=recipients, **params))
        if status != "succeeded":
            raise DemoError("%s failed: %s" % (action, (result.get("result") or {}).get(
                "error") or result.get("stderr")))
        self.runs.setdefault(MANUAL, []).append(result["result"]["run_id"])
        return result["result"]

    def _folders(self):
        copies = self.control.copies(MANUAL)
        return "now " + ", ".join("%s %s" % (c["mailbox"].split("@")[0], c["folder"])
                                  for c in sorted(copies, key=lambda c: c["mailbox"]))

    def card(self, since, until):
        status, result = self.runtime.run_action("email_retraction.retraction_metrics", {
            "since": since, "until": until, "format": "text"})
        if status != "succeeded":
            raise DemoError("retraction_metrics failed: %s" % result.get("stderr"))
        self.say(result["result"]["card"], 2)
        self.record = result["result"]["record"]
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
        status, result = self.runtime.run_action("email_retraction.retraction_details", dict(
            since=since, until=until, status="failed", **filters))
        if status != "succeeded":
            raise DemoError("retraction_details failed: %s" % result.get("stderr"))
        return result["result"]

    def rows(self, rows):
        for row in rows:
            self.say("%s (%s): %s: %s" % (row["recipient"], row["provider"] or "no provider",
                                          row["reason"], row["error_message"] or "-"), 4)


# -- main ---------------------------------------------------------------------------------------

def scenario_file(workdir, copies):
    if copies is None:
        return SCENARIO
    with open(SCENARIO) as handle:
        scenario = yaml.safe_load(handle)
    scenario["campaigns"][0]["copies"] = copies
    path = os.path.join(workdir, "demo-scenario.yaml")
    with open(path, "w") as handle:
        yaml.safe_dump(scenario, handle, sort_keys=False)
    return path


def pack_config(info, workdir):
    """The sandbox's pack config with a ledger of our own, written where st2 keeps it."""
    with open(info["pack_config_file"]) as handle:
        config = yaml.safe_load(handle)
    config["ledger_url"] = "sqlite:///" + os.path.join(workdir, "ledger.db")
    path = os.path.join(workdir, "email_retraction.yaml")
    with open(path, "w") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)
    with open(path) as handle:
        return path, yaml.safe_load(handle)


def run(args, say, workdir):
    started = time.monotonic()
    since = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=1)
    sandbox = SandboxProcess(workdir, scenario_file(workdir, args.copies))
    try:
        info = sandbox.start()
        _, config = pack_config(info, workdir)
        say("email_retraction demo: the pack's sensors, rules, actions and workflows, run by "
            "tools/st2local")
        say("against a local sandbox tenant (Microsoft 365, Gmail, Cloudflare Email Security).")
        say("sandbox (%s) ready in %.1f s; pack config from its ready file, SQLite ledger %s"
            % (os.path.basename(sandbox.scenario), info["ready_s"],
               "kept in " + workdir if args.keep else "(temporary)"), 2)
        demo = Demo(say, config, Control(info, config))
        try:
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
        finally:
            demo.sensors.cleanup()
        if args.keep:
            keep(args.keep, demo, sandbox, since, until)
    finally:
        sandbox.stop()
    say()
    say("done in %.1f s; the sandbox is stopped." % (time.monotonic() - started))


def keep(directory, demo, sandbox, since, until):
    """What tests/test_demo.py checks, written while the sandbox still runs."""
    with open(os.path.join(directory, "audit.json"), "w") as handle:
        json.dump(demo.control.audit(), handle)
    copies = {m: demo.control.copies(m) for m in (CAMPAIGN, RESCANNED, REPORTED, MANUAL, DECOY)}
    with open(os.path.join(directory, "summary.json"), "w") as handle:
        json.dump({"since": since.isoformat(), "until": until.isoformat(),
                   "ledger_url": demo.config["ledger_url"], "runs": demo.runs,
                   "steps": demo.steps, "card_record": demo.record, "copies": copies,
                   "sandbox_pid": sandbox.proc.pid}, handle, indent=1)


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
    log = open(os.path.join(workdir, "demo.log"), "w")
    if not args.debug:
        sys.stderr = log  # action and library logs (their handlers write to sys.stderr)
    try:
        run(args, say, workdir)
        return 0
    except KeyboardInterrupt:
        screen_err.write("\ninterrupted: the sandbox is stopped.\n")
        return 130
    except Exception as exc:
        if args.debug:
            raise
        kind = "" if isinstance(exc, DemoError) else type(exc).__name__ + ": "
        screen_err.write("\ndemo failed: %s%s\n(logs: %s; --debug shows the traceback)\n"
                         % (kind, exc, os.path.join(workdir, "demo.log")))
        args.keep = args.keep or workdir  # keep the logs it points to
        return 1
    finally:
        sys.stderr = screen_err
        log.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
