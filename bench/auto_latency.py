"""How fast automatic retraction reacts: verdict visible -> its copies moved, through StackStorm.

Starts the sandbox (its own process) at `--rtt-ms`, delivers `--verdicts` messages (each to
`--copies` mailboxes on both providers, no verdict yet), then publishes their verdicts
(MALICIOUS) in the sandbox's Cloudflare API at random moments over `--span-s` seconds. The
pack's verdict sensor (sensors/verdict_sensor.py) polls every poll interval (the sensor's
configured one, from sensors/verdict_sensor.yaml, unless `--poll-interval` says otherwise),
with StackStorm's own SensorService: each `email_retraction.verdict` it dispatches goes
through StackStorm's code (tools/st2engine: trigger dispatcher with payload validation,
rules engine and the rule `auto_retract_on_verdict`, workflow engine running `auto_retract`
-> `retract_campaign`, each Python action in the python runner's own subprocess), as in a
deployment but with MongoDB as mongomock and RabbitMQ replaced by in-process delivery.

A verdict's latency runs from the moment its row is visible in the API (the POST that adds it
has returned) to the last of its copies moving (the sandbox's audit clock). It includes
StackStorm's scheduling and a fresh Python process per action; not the broker's hops (see
docs/performance.md).

    .venv/bin/python bench/auto_latency.py [--verdicts 10] [--copies 40] [--poll-interval S]

Prints one JSON object as its last line; exits 0 when it ran.
"""
# StackStorm's services patch the process first, before anything opens a socket.
from st2common.util.monkey_patch import monkey_patch

monkey_patch()

import argparse  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

_common.setup_paths()
sys.path.insert(0, os.path.join(_common.PACK_ROOT, "sensors"))

TRIGGER = "email_retraction.verdict"
WORKFLOW = "email_retraction.auto_retract"
TARGET = "p95_s <= poll_interval_s + 1"


def sensor_poll_interval():
    import yaml
    with open(os.path.join(_common.PACK_ROOT, "sensors", "verdict_sensor.yaml")) as handle:
        return float(yaml.safe_load(handle)["poll_interval"])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--verdicts", type=int, default=10)
    parser.add_argument("--copies", type=int, default=40, help="copies per message")
    parser.add_argument("--poll-interval", type=float, default=None,
                        help="default: poll_interval of sensors/verdict_sensor.yaml")
    parser.add_argument("--span-s", type=float, default=None,
                        help="verdicts appear over this many seconds (default: 3 polls)")
    parser.add_argument("--rtt-ms", type=float, default=50.0)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)
    if args.verdicts < 1 or args.copies < 1:
        parser.error("--verdicts and --copies must be positive")
    return args


def quiet_stackstorm(workdir):
    """StackStorm logs every registration and execution; a benchmark keeps stderr for its
    own lines, so they go to a file in the work directory."""
    handler = logging.FileHandler(os.path.join(workdir, "st2.log"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def workflow_outcome(stack, execution):
    """What auto_retract did for one verdict: its status, the plan's destination, and the
    state and copy count of the run its retract_campaign recorded."""
    output = (execution.result or {}).get("output") or {}
    plan = output.get("plan") or {}
    outcome = {"status": execution.status, "destination": plan.get("destination"),
               "total": (output.get("metric_record") or {}).get("total")}
    for campaign in stack.descendants(str(execution.id), "email_retraction.retract_campaign"):
        outcome["state"] = ((campaign.result or {}).get("output") or {}).get("state")
    if execution.status != "succeeded":
        outcome["error"] = str((execution.result or {}).get("errors"))[:300]
    return outcome


def percentile(values, q):
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return None
    position = (len(ordered) - 1) * q
    low, high = int(math.floor(position)), int(math.ceil(position))
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def main(argv=None):
    args = parse_args(argv)
    import eventlet
    from tools.st2engine import Stack, sensors
    from verdict_sensor import VerdictSensor

    machine = _common.machine()
    poll_interval = args.poll_interval or sensor_poll_interval()
    span = args.span_s if args.span_s is not None else 3 * poll_interval
    rng = random.Random(args.seed)
    messages = ["<auto-%d-%d@evil.example>" % (args.seed, i) for i in range(args.verdicts)]
    wanted = set(messages)
    visible, dispatched, results = {}, {}, {}

    with tempfile.TemporaryDirectory(prefix="bench-auto-") as workdir, \
            _common.SandboxProcess("basic.yaml", seed=args.seed) as box:
        quiet_stackstorm(workdir)
        box.faults({"rtt_ms": args.rtt_ms, "jitter": 0.2, "throttling": True}, clear=True)
        truths = {}
        for index, message_id in enumerate(messages):
            truths[message_id] = box.campaign(
                message_id=message_id, copies=args.copies, microsoft_share=0.6,
                seed=args.seed * 1000 + index, subject="Invoice %d" % index)
        config = box.pack_config("sqlite:///" + os.path.join(workdir, "ledger.db"))
        stack = Stack.boot(config, os.path.join(workdir, "st2"))
        try:
            audit_from = box.audit_seq()
            sensor = stack.sensor(VerdictSensor, poll_interval=poll_interval)

            def seen(trigger, payload):  # as the sensor hands it to StackStorm
                if trigger == TRIGGER and (payload or {}).get("message_id") in wanted:
                    dispatched.setdefault(payload["message_id"], time.time())

            sensors.observe(sensor.sensor_service, seen)
            sensor.poll()  # the sensor's first poll: the scenario's own verdicts
            before = {str(e.id) for e in stack.executions_of(WORKFLOW)}
            polling = [True]

            def sensor_loop():  # PollingSensor.run(), stoppable
                while polling[0]:
                    eventlet.sleep(poll_interval)
                    if polling[0]:
                        sensor.poll()

            loop = eventlet.spawn(sensor_loop)
            started = time.monotonic()
            moments = sorted(rng.uniform(0, span) for _ in messages)
            _common.log("auto latency: %d verdicts over %.0f s, polling every %.0f s"
                        % (len(messages), span, poll_interval))
            for moment, message_id in zip(moments, messages):
                eventlet.sleep(max(0.0, started + moment - time.monotonic()))
                box.control("POST", "/verdicts", {
                    "message_id": message_id, "to": truths[message_id]["recipients"],
                    "from": "attacker@evil.example", "subject": "Invoice",
                    "final_disposition": "MALICIOUS"})
                visible[message_id] = time.time()
            deadline = time.monotonic() + 2 * poll_interval + 300
            while len(results) < len(messages) and time.monotonic() < deadline:
                for execution in stack.executions_of(WORKFLOW):
                    message_id = (execution.parameters or {}).get("message_id")
                    if (str(execution.id) not in before and message_id in wanted
                            and execution.status in ("succeeded", "failed", "timeout",
                                                     "canceled", "abandoned")):
                        results[message_id] = workflow_outcome(stack, execution)
                eventlet.sleep(0.2)
            polling[0] = False
            loop.kill()
            sensor.cleanup()
        finally:
            stack.shutdown()
        moved_at, moved_count = {}, {}
        for entry in box.audit(audit_from):
            at = datetime.strptime(entry["at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                tzinfo=timezone.utc).timestamp()
            mid = entry["message_id"]
            moved_at[mid] = max(moved_at.get(mid, 0.0), at)
            moved_count[mid] = moved_count.get(mid, 0) + 1
        expected_moves = {}
        for message_id in messages:
            destination = (results.get(message_id) or {}).get("destination") or "trash"
            expected = _common.expected_outcomes(truths[message_id], destination)
            expected_moves[message_id] = sum(1 for status, _ in expected.values()
                                             if status == "retracted")

    latencies, detect, rows = [], [], []
    for message_id in messages:
        result = results.get(message_id) or {"error": "no auto_retract execution finished"}
        row = {"message_id": message_id, "visible_s": round(visible[message_id] - (
            visible[messages[0]]), 2)}
        if message_id in dispatched:
            row["detect_s"] = round(dispatched[message_id] - visible[message_id], 3)
            detect.append(dispatched[message_id] - visible[message_id])
        if message_id in moved_at and "error" not in result:
            latency = moved_at[message_id] - visible[message_id]
            latencies.append(latency)
            row["latency_s"] = round(latency, 3)
        row.update(moved=moved_count.get(message_id, 0), expected_moves=expected_moves[
            message_id], **{k: v for k, v in result.items() if k != "run_id"})
        rows.append(row)
    all_moved = all(r["moved"] == r["expected_moves"] for r in rows)

    def rounded(value):
        return None if value is None else round(value, 3)

    p95 = percentile(latencies, 0.95)
    _common.emit({
        "benchmark": "auto_latency",
        "poll_interval_s": poll_interval,
        "verdicts": len(messages),
        "p50_s": rounded(percentile(latencies, 0.5)),
        "p95_s": rounded(p95),
        "max_s": rounded(max(latencies) if latencies else None),
        "reacted": len(latencies),
        "all_moved": all_moved,
        "within_target": p95 is not None and p95 <= poll_interval + 1,
        "detect_p50_s": rounded(percentile(detect, 0.5)),
        "detect_max_s": rounded(max(detect) if detect else None),
        "per_verdict": rows,
        "params": {"copies_per_message": args.copies, "span_s": span, "rtt_ms": args.rtt_ms,
                   "seed": args.seed},
        "machine": machine,
        "target": TARGET,
    })


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # eventlet's hub and StackStorm's threads: no interpreter-exit noise
