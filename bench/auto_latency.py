"""How fast automatic retraction reacts: verdict visible -> its copies moved.

Starts the sandbox (its own process) at `--rtt-ms`, delivers `--verdicts` messages (each to
`--copies` mailboxes on both providers, no verdict yet), then publishes their verdicts
(MALICIOUS) in the sandbox's Cloudflare API at random moments over `--span-s` seconds. The
pack's verdict sensor (sensors/verdict_sensor.py) runs in this process as the sensor
container runs it: `setup()`, then `poll()` every poll interval (the sensor's configured one,
from sensors/verdict_sensor.yaml, unless `--poll-interval` says otherwise). Each dispatched
`email_retraction.verdict` payload goes, on a worker thread, through what StackStorm would run:

- the rule `auto_retract_on_verdict`: its action parameters rendered with Jinja from the
  payload and cast to the action's parameter types as StackStorm's rules engine does (the
  helpers of tests/test_rules.py);
- the `plan` action (policy: destination, preview, approval);
- the campaign's actions in process: `split_recipients`, `retract` per chunk, `aggregate_run`
  (as auto_retract -> retract_campaign passes them the plan).

A verdict's latency runs from the moment its row is visible in the API (the POST that adds it
has returned) to the last of its copies moving (the sandbox's audit clock). StackStorm's own
scheduling (trigger -> rules engine -> workflow engine -> action runners) is not in this
figure: see docs/performance.md.

    .venv/bin/python bench/auto_latency.py [--verdicts 10] [--copies 40] [--poll-interval S]

Prints one JSON object as its last line; exits 0 when it ran.
"""
import argparse
import math
import os
import queue
import random
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

_common.setup_paths()
TESTS_DIR = os.path.join(_common.PACK_ROOT, "tests")
sys.path.insert(0, os.path.join(_common.PACK_ROOT, "sensors"))
sys.path.insert(0, TESTS_DIR)

RULE = "auto_retract_on_verdict"
TRIGGER = "email_retraction.verdict"
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
    parser.add_argument("--workers", type=int, default=4,
                        help="payloads handled at once (workflow executions in flight)")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)
    if args.verdicts < 1 or args.copies < 1:
        parser.error("--verdicts and --copies must be positive")
    return args


class SensorService(object):
    """The sensor container's service for one sensor: the stand-in's (a datastore for the
    checkpoints, a logger), with dispatch handing each trigger to the bench at once, as the
    container publishes it to the message bus."""

    def __init__(self, on_dispatch):
        from st2tests.mocks.sensor import MockSensorService, MockSensorWrapper

        self._inner = MockSensorService(MockSensorWrapper("email_retraction", "VerdictSensor"))
        self._on_dispatch = on_dispatch

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def dispatch(self, trigger, payload=None, trace_tag=None):
        self._on_dispatch(trigger, payload, time.time())


def handle(config, rule, payload):
    """What StackStorm runs for one dispatched payload, in process. Returns what happened."""
    from plan import PlanAction
    from test_rules import INDEX, enforce

    params, problems = enforce(rule, payload)
    if problems:
        return {"error": "rule parameters refused: %s" % problems}
    accepted = INDEX.action_parameters("email_retraction.plan")
    # auto_retract maps its retraction_trigger to plan's trigger, as its workflow does
    params = dict(params, trigger=params.get("retraction_trigger", "disposition"))
    ok, plan = _common.action(PlanAction, config).run(
        **{k: v for k, v in params.items() if k in accepted})
    if not ok or not plan.get("act") or plan.get("needs_approval"):
        return {"error": "plan did not act: %s" % plan.get("why")}
    request = {"message_id": plan["message_id"], "recipients": params["recipients"],
               "destination": plan["destination"], "mode": "auto",
               "trigger": plan["trigger"], "disposition": plan["disposition"],
               "verdict_time": plan["verdict_time"], "comment": plan.get("comment"),
               "preview": plan["preview"], "requested_by": plan.get("requested_by")}
    run = _common.run_campaign(config, request)
    return {"run_id": run["run_id"], "state": run["aggregate"]["state"],
            "destination": plan["destination"],
            "total": run["aggregate"]["metric_record"]["total"]}


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
    from test_rules import load_rule
    from verdict_sensor import VerdictSensor

    machine = _common.machine()
    poll_interval = args.poll_interval or sensor_poll_interval()
    span = args.span_s if args.span_s is not None else 3 * poll_interval
    rng = random.Random(args.seed)
    rule = load_rule(RULE)
    _common.quiet_action_logs()
    messages = ["<auto-%d-%d@evil.example>" % (args.seed, i) for i in range(args.verdicts)]
    wanted = set(messages)
    visible, dispatched, results = {}, {}, {}
    jobs = queue.Queue()

    def on_dispatch(trigger, payload, at):
        if trigger == TRIGGER and payload["message_id"] in wanted:
            dispatched.setdefault(payload["message_id"], at)
            jobs.put(payload)

    with tempfile.TemporaryDirectory(prefix="bench-auto-") as workdir, \
            _common.SandboxProcess("basic.yaml", seed=args.seed) as box:
        box.faults({"rtt_ms": args.rtt_ms, "jitter": 0.2, "throttling": True}, clear=True)
        truths = {}
        for index, message_id in enumerate(messages):
            truths[message_id] = box.campaign(
                message_id=message_id, copies=args.copies, microsoft_share=0.6,
                seed=args.seed * 1000 + index, subject="Invoice %d" % index)
        config = box.pack_config("sqlite:///" + os.path.join(workdir, "ledger.db"))
        audit_from = box.audit_seq()
        sensor = VerdictSensor(sensor_service=SensorService(on_dispatch), config=config,
                               poll_interval=poll_interval)
        sensor.setup()
        sensor.poll()  # the sensor's first poll: the scenario's own verdicts, seen and kept
        stop = threading.Event()

        def sensor_loop():  # PollingSensor.run(), stoppable
            while not stop.wait(poll_interval):
                sensor.poll()

        def worker_loop(pool):
            while not stop.is_set() or not jobs.empty():
                try:
                    payload = jobs.get(timeout=0.2)
                except queue.Empty:
                    continue
                pool.submit(lambda p=payload: results.__setitem__(
                    p["message_id"], handle(config, rule, p)))

        pool = ThreadPoolExecutor(max_workers=args.workers, thread_name_prefix="execution")
        threads = [threading.Thread(target=sensor_loop, name="sensor", daemon=True),
                   threading.Thread(target=worker_loop, args=(pool,), name="rules",
                                    daemon=True)]
        for thread in threads:
            thread.start()
        started = time.monotonic()
        moments = sorted(rng.uniform(0, span) for _ in messages)
        _common.log("auto latency: %d verdicts over %.0f s, polling every %.0f s"
                    % (len(messages), span, poll_interval))
        for moment, message_id in zip(moments, messages):
            time.sleep(max(0.0, started + moment - time.monotonic()))
            box.control("POST", "/verdicts", {
                "message_id": message_id, "to": truths[message_id]["recipients"],
                "from": "attacker@evil.example", "subject": "Invoice",
                "final_disposition": "MALICIOUS"})
            visible[message_id] = time.time()
        deadline = time.monotonic() + 2 * poll_interval + 120
        while len(results) < len(messages) and time.monotonic() < deadline:
            time.sleep(0.2)
        stop.set()
        pool.shutdown(wait=True)
        sensor.cleanup()
        moved_at, moved_count = {}, {}
        for entry in box.audit(audit_from):
            at = datetime.strptime(entry["at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                tzinfo=timezone.utc).timestamp()
            mid = entry["message_id"]
            moved_at[mid] = max(moved_at.get(mid, 0.0), at)
            moved_count[mid] = moved_count.get(mid, 0) + 1
        expected_moves = {}
        for message_id in messages:
            destination = (results.get(message_id) or {}).get("destination", "trash")
            expected = _common.expected_outcomes(truths[message_id], destination)
            expected_moves[message_id] = sum(1 for status, _ in expected.values()
                                             if status == "retracted")

    latencies, detect, rows = [], [], []
    for message_id in messages:
        result = results.get(message_id) or {"error": "no dispatch seen"}
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
                   "workers": args.workers, "seed": args.seed},
        "machine": machine,
        "target": TARGET,
    })


if __name__ == "__main__":
    main()
