"""The reliability run: a campaign under faults, killed part-way, then run again.

Starts the sandbox (its own process) and generates a campaign of `--copies` copies (both
providers; 5 % of the recipients no longer have theirs, 2 % sit in junk). Every Graph and Gmail
request (batch items and parts each decided on their own) then meets 10 % 5xx, 5 % 429 with
Retry-After, dropped connections and lost replies (the request ran, its answer is lost); the
Entra ID and Google token endpoints drop connections too and are down (503) for `--outage-s`
seconds from the first token request each gets (so the run meets the outage however slowly the
child starts).

The retraction runs as `retract_campaign` does (split_recipients, retract per chunk under
the run's id, aggregate_run) in a child process, with `mode=auto` (what a verdict starts) and
a SQLite ledger. Once `--kill-at` of the copies have moved, the child gets SIGKILL. The same
request then runs again to the end in a new child process, under the same faults.

Every figure comes from the ledger and the sandbox's audit:
- `definitive_outcomes`: copies whose outcome in the second run is final (not provider_error)
  and agrees with the sandbox's truth (`already_in_destination` counts for a copy the killed
  run had moved);
- `wrong_touches`: audit entries changing anything but the campaign's copies;
- `double_moves`: copies our app changed more than once (a retry after a lost reply that
  moved again, or the rerun moving what the killed run had moved);
- `ledger_rows`: outcome rows of the message (both runs); `metric_total`: the metric record's
  total over the window of both runs (the ledger counts each copy once); `lost`: copies
  without an outcome in the second run.

    .venv/bin/python bench/faults.py [--copies 5000] [--rtt-ms 20] [--kill-at 0.4]

Prints one JSON object as its last line; exits 0 when it ran (targets are reported, never
enforced).
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

_common.setup_paths()

TARGETS = {"definitive_outcomes": "= copies", "wrong_touches": 0, "double_moves": 0,
           "lost": 0, "metric_total": "= copies"}
DATA_FAULTS = {"rate_5xx": 0.10, "rate_429": 0.05, "retry_after": 1, "rate_drop": 0.02,
               "rate_lost_reply": 0.02}
TOKEN_FAULTS = {"rate_drop": 0.02}
MOVES = ("graph.messages.move", "gmail.messages.trash", "gmail.messages.modify",
         "gmail.messages.untrash", "graph.messages.permanent_delete")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=5000)
    parser.add_argument("--rtt-ms", type=float, default=20.0)
    parser.add_argument("--ms-share", type=float, default=0.6)
    parser.add_argument("--destination", default="trash", choices=("junk", "trash"))
    parser.add_argument("--kill-at", type=float, default=0.4,
                        help="share of the copies moved when the first run is killed")
    parser.add_argument("--outage-s", type=float, default=5.0)
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--timeout-s", type=float, default=900.0)
    parser.add_argument("--child", nargs=2, metavar=("CONFIG_JSON", "REQUEST_JSON"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.copies < 1 or not 0.0 < args.kill_at < 1.0:
        parser.error("--copies must be positive and --kill-at within (0, 1)")
    return args


def child(config_file, request_file):
    """The retraction as one StackStorm workflow would run it; prints the run's summary."""
    with open(config_file) as handle:
        config = json.load(handle)
    with open(request_file) as handle:
        job = json.load(handle)
    _common.quiet_action_logs()
    run = _common.run_campaign(config, job["request"], job.get("chunk_size"),
                               job.get("concurrency"))
    _common.emit({"run_id": run["run_id"], "failed_chunks": run["failed_chunks"],
                  "counts": run["counts"], "state": run["aggregate"]["state"],
                  "record_total": run["aggregate"]["metric_record"]["total"]})


def spawn(workdir, config, job, name):
    config_file = os.path.join(workdir, "config.json")
    with open(config_file, "w") as handle:
        json.dump(config, handle)
    job_file = os.path.join(workdir, name + ".json")
    with open(job_file, "w") as handle:
        json.dump(job, handle)
    out = open(os.path.join(workdir, name + ".out"), "w+")
    err = open(os.path.join(workdir, name + ".err"), "w+")
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child",
                             config_file, job_file], cwd=_common.PACK_ROOT,
                            stdout=out, stderr=err)
    return proc, out, err


def moved(box):
    routes = box.counters()["routes"]
    return sum(routes.get(name, 0) for name in MOVES)


def run_ids(ledger_url, message_id):
    """Run ids of the message in the ledger, oldest first."""
    from sqlalchemy import create_engine, select

    from retraction.ledger.schema import runs

    engine = create_engine(ledger_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(runs.c.run_id).where(
                runs.c.message_id == message_id).order_by(runs.c.requested_at)).scalars())
    finally:
        engine.dispose()


def ledger_rows(ledger_url, message_id):
    from sqlalchemy import create_engine, func, select

    from retraction.ledger.schema import outcomes

    engine = create_engine(ledger_url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(outcomes).where(
                outcomes.c.message_id == message_id)).scalar()
    finally:
        engine.dispose()


def provider_errors(ledger_url, run_id, limit=10):
    """The rerun's copies still failing with provider_error: who, what the provider said."""
    from sqlalchemy import create_engine, select

    from retraction.ledger.schema import outcomes

    o = outcomes.c
    engine = create_engine(ledger_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(o.recipient, o.provider, o.error_code, o.error_message,
                                       o.attempts).where(o.run_id == run_id,
                                                         o.reason == "provider_error")
                                .limit(limit)).mappings().all()
        return [dict(row) for row in rows]
    finally:
        engine.dispose()


def metric_total(ledger_url, since):
    from retraction.ledger import Ledger
    from retraction.metrics import parse_window

    window = parse_window(since=since, until=datetime.now(timezone.utc))
    with Ledger(ledger_url) as ledger:
        return ledger.metric_record(window).total


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        return child(*args.child)
    machine = _common.machine()
    message_id = "<faults-%d-%d@evil.example>" % (args.copies, args.seed)
    workdir = tempfile.TemporaryDirectory(prefix="bench-faults-")
    ledger_url = "sqlite:///" + os.path.join(workdir.name, "ledger.db")
    with workdir, _common.SandboxProcess("basic.yaml", seed=args.seed) as box:
        box.faults({"rtt_ms": args.rtt_ms, "jitter": 0.2, "throttling": True}, clear=True)
        recipients = box.campaign(message_id=message_id, copies=args.copies,
                                  microsoft_share=args.ms_share, deleted_share=0.05,
                                  junk_share=0.02, seed=args.seed)["recipients"]
        # Another message in the same mailboxes: must stay where it is.
        box.campaign(message_id="<decoy-%d@evil.example>" % args.seed,
                     copies=min(args.copies, 200), microsoft_share=args.ms_share,
                     seed=args.seed + 1)
        config = box.pack_config(ledger_url)
        job = {"request": {"message_id": message_id, "recipients": recipients,
                           "destination": args.destination, "mode": "auto",
                           "trigger": "disposition", "disposition": "MALICIOUS",
                           "requested_by": "bench@corp.example", "comment": "bench/faults.py"},
               "chunk_size": args.chunk_size, "concurrency": args.concurrency}
        since = datetime.now(timezone.utc) - timedelta(seconds=1)
        audit_from = box.audit_seq()
        box.reset_counters()
        box.faults({"graph": DATA_FAULTS, "gmail": DATA_FAULTS, "login": TOKEN_FAULTS,
                    "google_token": TOKEN_FAULTS})
        outage = {"token_outage_from_next_request": args.outage_s}
        box.faults({"login": outage, "google_token": outage})
        started = time.perf_counter()
        first, out, err = spawn(workdir.name, config, job, "first")
        target = int(args.kill_at * args.copies)
        killed_after = None
        while first.poll() is None:
            if moved(box) >= target:
                first.send_signal(signal.SIGKILL)
                first.wait()
                killed_after = time.perf_counter() - started
                break
            if time.perf_counter() - started > args.timeout_s:
                first.kill()
                raise SystemExit("the first run did not reach %d moves" % target)
            time.sleep(0.05)
        moved_at_kill = moved(box)
        first_rows = ledger_rows(ledger_url, message_id)
        if killed_after is None:
            _common.log("the first run ended before the kill (exit %s)" % first.returncode)

        second, out2, err2 = spawn(workdir.name, config, job, "second")
        try:
            second.wait(args.timeout_s)
        except subprocess.TimeoutExpired:
            second.kill()
            raise SystemExit("the second run did not finish in %.0f s" % args.timeout_s)
        total_s = time.perf_counter() - started
        out2.seek(0)
        lines = [line for line in out2.read().splitlines() if line.startswith("{")]
        if second.returncode != 0 or not lines:
            err2.seek(0)
            raise SystemExit("the second run failed (exit %s): %s" % (
                second.returncode, err2.read()[-2000:]))
        rerun = json.loads(lines[-1])
        counters = box.counters()

        truth = box.campaign_truth(message_id)
        expected = _common.expected_outcomes(truth, args.destination)
        got = _common.ledger_outcomes(ledger_url, rerun["run_id"])
        audit = _common.audit_findings(box.audit(audit_from), message_id, truth["mailboxes"])
        misplaced = _common.final_folders(box.copies(message_id), args.destination)
        definitive = 0
        disagree = []
        for address, want in expected.items():
            have = got.get(address)
            if have is None or have[1] == "provider_error":
                continue
            if have == want or (want[0] == "retracted"
                                and have[0] == "already_in_destination"):
                definitive += 1
            else:
                disagree.append({"recipient": address, "expected": want, "got": have})
        runs = run_ids(ledger_url, message_id)
        still_failing = provider_errors(ledger_url, rerun["run_id"])
        rows = ledger_rows(ledger_url, message_id)
        total = metric_total(ledger_url, since)

    _common.emit({
        "benchmark": "faults",
        "copies": len(expected),
        "definitive_outcomes": definitive,
        "wrong_touches": audit["wrong_touches"],
        "double_moves": audit["double_moves"],
        "ledger_rows": rows,
        "metric_total": total,
        "lost": len([a for a in expected if a not in got]),
        "detail": {
            "killed_after_s": None if killed_after is None else round(killed_after, 2),
            "moves_at_kill": moved_at_kill, "ledger_rows_at_kill": first_rows,
            "runs": len(runs), "rerun": rerun, "total_s": round(total_s, 2),
            "outcomes": _common.tally(got.values()), "disagreeing": disagree[:5],
            "provider_errors": still_failing,
            "not_in_destination": len(misplaced), "copies_changed": audit["changed"],
            "double_examples": audit["double_examples"],
            "wrong_examples": audit["wrong_examples"],
            "injected": counters.get("faults"),
            "statuses": {name: per for name, per in counters["statuses"].items()
                         if not name.startswith("control.")},
        },
        "params": {"rtt_ms": args.rtt_ms, "ms_share": args.ms_share,
                   "destination": args.destination, "kill_at": args.kill_at,
                   "outage_s": args.outage_s, "data_faults": DATA_FAULTS,
                   "token_faults": TOKEN_FAULTS, "seed": args.seed},
        "machine": machine,
        "targets": TARGETS,
    })


if __name__ == "__main__":
    main()
