"""Cold start: one `retract` execution in a fresh Python process, as StackStorm runs it.

StackStorm starts a new Python process per action execution (python_action_wrapper): the
wrapper has StackStorm's own modules loaded, puts `actions/` and `actions/lib` on sys.path
(the pack-root `lib/` only with enable_common_libs, which the pack does not rely on), imports
the entry point, builds the action class from the pack config and calls `run()`. Each run
here does the same in a new interpreter against the sandbox (its own process) at `--rtt-ms`,
retracting one fresh copy of a new message, with a SQLite ledger that already exists (as it
does after the first execution on a node). Measured inside the child:

- `import_s`: importing the action module (`retract.py` and everything it pulls in);
- `total_s`: import + building the action + the run (validation, ledger, token, lookup,
  move, record), i.e. what the execution costs on top of the wrapper's own start.

`process_s` (spawn to exit, interpreter start included) is reported too. Medians over
`--runs` runs per provider (default 5; Microsoft 365 and Gmail copies).

    .venv/bin/python bench/cold_start.py [--runs 5] [--rtt-ms 50]

Prints one JSON object as its last line; exits 0 when it ran.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

TARGETS = {"import_s": 0.2, "total_s": 0.5}
MAILBOXES = {"microsoft": "alice@corp.example", "google": "carol@corp-mail.example"}


def child(job_file):
    """Runs in the fresh interpreter. Only what the StackStorm wrapper has already done
    happens before the clock starts: sys.path and StackStorm's base action class."""
    with open(job_file) as handle:
        job = json.load(handle)
    actions_dir = os.path.join(_common.PACK_ROOT, "actions")
    sys.path[:0] = [os.path.join(actions_dir, "lib"), actions_dir]
    import st2common.runners.base_action  # noqa: F401  (the wrapper's own import)
    from st2common.runners.utils import get_action_class_instance

    started = time.perf_counter()
    import retract  # noqa: E402  (the entry point, as the wrapper loads it)
    imported = time.perf_counter()
    instance = get_action_class_instance(retract.RetractAction, config=job["config"])
    ok, result = instance.run(message_id=job["message_id"], recipients=[job["recipient"]],
                              destination="junk")
    done = time.perf_counter()
    outcome = result["outcomes"][0] if result.get("outcomes") else {}
    print(json.dumps({"import_s": imported - started, "total_s": done - started,
                      "ok": ok, "status": outcome.get("status"),
                      "reason": outcome.get("reason"),
                      "sdk_modules": sorted(m for m in ("msal", "googleapiclient", "sqlalchemy",
                                                        "alembic", "requests", "jinja2")
                                            if m in sys.modules)}))


def one_run(box, config, provider, index, workdir):
    message_id = "<cold-%s-%d@evil.example>" % (provider, index)
    recipient = MAILBOXES[provider]
    box.add_mailbox(recipient, [{"message_id": message_id, "folder": "inbox"}])
    job_file = os.path.join(workdir, "job-%s-%d.json" % (provider, index))
    with open(job_file, "w") as handle:
        json.dump({"config": config, "message_id": message_id, "recipient": recipient},
                  handle)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", job_file],
                          cwd=_common.PACK_ROOT, capture_output=True, text=True, timeout=120)
    process_s = time.perf_counter() - started
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit("cold start run failed (exit %d): %s"
                         % (proc.returncode, proc.stderr[-2000:]))
    figures = json.loads(lines[-1])
    figures["process_s"] = process_s
    copies = [c for c in box.copies(message_id) if c["mailbox"] == recipient]
    figures["moved"] = bool(copies) and all(c["folder"] == "junk" for c in copies)
    return figures


def summary(runs):
    def median(key):
        return round(statistics.median(r[key] for r in runs), 3)

    return {"import_s": median("import_s"), "total_s": median("total_s"),
            "process_s": median("process_s"),
            "import_s_max": round(max(r["import_s"] for r in runs), 3),
            "total_s_max": round(max(r["total_s"] for r in runs), 3),
            "runs": len(runs), "all_moved": all(r["moved"] and r["ok"] for r in runs),
            "statuses": sorted({r["status"] for r in runs}),
            "modules_loaded": runs[-1]["sdk_modules"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rtt-ms", type=float, default=50.0)
    parser.add_argument("--providers", default="microsoft,google")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child)
    providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    if args.runs < 1 or not providers or any(p not in MAILBOXES for p in providers):
        parser.error("--runs must be positive; --providers: microsoft and/or google")
    _common.setup_paths()
    machine = _common.machine()
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as workdir, \
            _common.SandboxProcess("basic.yaml") as box:
        box.faults({"rtt_ms": args.rtt_ms, "jitter": 0.2}, clear=True)
        ledger_url = "sqlite:///" + os.path.join(workdir, "ledger.db")
        from retraction.ledger import Ledger
        Ledger(ledger_url).close()  # created once, as on a node that has run the pack before
        config = box.pack_config(ledger_url)
        by_provider = {}
        for provider in providers:
            runs = [one_run(box, config, provider, i, workdir) for i in range(args.runs)]
            by_provider[provider] = summary(runs)
    first = by_provider[providers[0]]
    _common.emit({"benchmark": "cold_start", "provider": providers[0],
                  "import_s": first["import_s"], "total_s": first["total_s"],
                  "by_provider": by_provider, "rtt_ms": args.rtt_ms,
                  "machine": machine, "targets": TARGETS})


if __name__ == "__main__":
    main()
