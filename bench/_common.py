"""What the benchmarks share: the pack's import paths, the sandbox as a subprocess, its control
API, peak RSS, and the one JSON line a benchmark prints.

The sandbox stands in for Microsoft's and Google's servers, so it runs in its own process
(never sharing this process's GIL) and, on a machine with two or more CPUs, on its own core:
what a benchmark measures is then the pack's client side, not the fake server's.
"""
import json
import os
import sys
import time

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if PACK_ROOT not in sys.path:
    sys.path.insert(0, PACK_ROOT)

from sandbox.process import SandboxProcess as _SandboxProcess  # noqa: E402
from sandbox.process import pin_apart  # noqa: E402,F401  (the benchmarks' own use)


def setup_paths():
    """sys.path as StackStorm gives an action (actions/, actions/lib) plus the pack-root lib/
    and the pack root (for `import sandbox`)."""
    for path in reversed([os.path.join(PACK_ROOT, "lib"),
                          os.path.join(PACK_ROOT, "actions", "lib"),
                          os.path.join(PACK_ROOT, "actions"), PACK_ROOT]):
        if path not in sys.path:
            sys.path.insert(0, path)


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


def emit(result):
    """The benchmark's figures: one JSON object on the last line of stdout."""
    sys.stdout.flush()
    print(json.dumps(result, sort_keys=False), flush=True)


# -- memory ------------------------------------------------------------------------------------
def reset_peak_rss():
    """Start a new high-water mark (Linux >= 4.0: write 5 to clear_refs), so the peak measured
    next is the pack's run, not the benchmark's set-up. False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb():
    """Peak resident set size of this process since start or the last reset_peak_rss()."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    import resource
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


# -- the sandbox process ---------------------------------------------------------------------
class SandboxProcess(_SandboxProcess):
    """sandbox/process.py's, pinned to its own CPU by default: a benchmark measures the pack's
    client side, not the fake server's."""

    def __init__(self, scenario="basic.yaml", seed=0, pin=True, timeout_s=60.0):
        super().__init__(scenario, seed=seed, pin=pin, timeout_s=timeout_s)


# -- summaries ---------------------------------------------------------------------------------
def requests_by_endpoint(counters):
    """Route name -> hits (batch items counted under their own routes), control API left out."""
    return {name: hits for name, hits in sorted(counters["routes"].items())
            if not name.startswith("control.")}


def throttled_count(counters):
    """429 answers the sandbox sent (injected or by the provider rules), over every route."""
    return sum(per.get("429", 0) for name, per in counters["statuses"].items()
               if not name.startswith("control."))


def mismatches(expected, got, limit=5):
    """(number of addresses whose outcome differs from the truth, a few examples)."""
    wrong = []
    for address, want in expected.items():
        have = got.get(address.lower())
        if have != want:
            wrong.append((address, want, have))
    known = {k.lower() for k in expected}
    extra = [a for a in got if a not in known]
    examples = [{"recipient": a, "expected": w, "got": h} for a, w, h in wrong[:limit]]
    examples += [{"recipient": a, "expected": None, "got": got[a]} for a in extra[:limit]]
    return len(wrong) + len(extra), examples


# -- the pack's way: retract_campaign's steps, in process ------------------------------------
ACTION_LOG_LEVEL = None  # e.g. "WARNING": see quiet_action_logs()


def action(cls, config):
    """An action instance built the way StackStorm's Python runner builds one."""
    from st2common.runners.utils import get_action_class_instance
    instance = get_action_class_instance(cls, config=config)
    if ACTION_LOG_LEVEL:
        instance.logger.setLevel(ACTION_LOG_LEVEL)
    return instance


def quiet_action_logs(level="WARNING"):
    """The actions log a few lines per chunk at INFO; a benchmark keeps stderr for itself."""
    global ACTION_LOG_LEVEL
    ACTION_LOG_LEVEL = level


def run_campaign(config, request, chunk_size=None, concurrency=None, on_chunk=None):
    """What `retract_campaign` does, with its own actions: `split_recipients`, then `retract`
    over the chunks under the run's id (`concurrency` chunks at once, each on a thread, as
    with-items spreads them over action runners), then `aggregate_run`.

    `request`: the workflow's input (message_id, recipients, destination, mode, ...).
    Returns {run_id, chunks, failed_chunks, counts (summed over chunks), aggregate}."""
    from concurrent.futures import ThreadPoolExecutor

    from aggregate_run import AggregateRunAction
    from retract import RetractAction
    from split_recipients import SplitRecipientsAction

    split_started = time.perf_counter()
    ok, plan = action(SplitRecipientsAction, config).run(
        chunk_size=chunk_size, concurrency=concurrency, **request)
    if not ok:
        raise RuntimeError("split_recipients refused the request: %s" % plan)
    chunk_request = dict(request)
    chunk_request.pop("recipients", None)

    started = time.perf_counter()
    spans = []  # (start, end) of each chunk, seconds from the split's end

    def one(chunk):
        begun = time.perf_counter()
        try:
            ok, result = action(RetractAction, config).run(
                run_id=plan["run_id"], recipients=chunk, **chunk_request)
        except Exception as exc:  # an execution that fails counts as a failed chunk
            log("chunk failed: %s: %s" % (type(exc).__name__, exc))
            return False, {}
        finally:
            spans.append((begun - started, time.perf_counter() - started))
        counts = result.get("counts", {})
        if on_chunk is not None:
            on_chunk(result)
        return bool(ok), counts

    totals = {"total": 0, "attempted": 0, "skipped": 0, "ledger_errors": 0}
    failed = 0
    with ThreadPoolExecutor(max_workers=plan["concurrency"],
                            thread_name_prefix="chunk") as pool:
        for ok, counts in pool.map(one, plan["chunks"]):
            failed += 0 if ok else 1
            for key in totals:
                totals[key] += counts.get(key, 0)
    peak_before_aggregate = peak_rss_mb()
    chunks_ended = time.perf_counter()
    ok, aggregate = action(AggregateRunAction, config).run(run_id=plan["run_id"],
                                                           failed_chunks=failed)
    phase_s = {"split": round(started - split_started, 3),
               "chunks": round(chunks_ended - started, 3),
               "aggregate": round(time.perf_counter() - chunks_ended, 3)}
    durations = sorted(end - begin for begin, end in spans)
    return {"run_id": plan["run_id"], "chunks": len(plan["chunks"]),
            "chunk_s": {"min": round(durations[0], 2) if durations else None,
                        "median": round(durations[len(durations) // 2], 2)
                        if durations else None,
                        "max": round(durations[-1], 2) if durations else None,
                        "last_end": round(max(e for _, e in spans), 2) if spans else None},
            "chunk_size": plan["chunk_size"], "concurrency": plan["concurrency"],
            "failed_chunks": failed, "counts": totals, "aggregate": aggregate,
            "peak_rss_mb_before_aggregate": peak_before_aggregate, "phase_s": phase_s}


# -- checking against the sandbox's truth ------------------------------------------------------
def expected_outcomes(truth, destination):
    """address (lower case) -> (status, reason) a correct run reports, from the campaign's
    truth as the control API returns it: the sandbox's own rule (`MailboxTruth.expected`),
    and each distribution list's own address failing as not_a_mailbox (its members stand in
    for it)."""
    from sandbox.scenario import MailboxTruth

    expected = {}
    for address, fields in truth["mailboxes"].items():
        mailbox = MailboxTruth(address=address, **fields)
        expected[address.lower()] = mailbox.expected(destination)
    for group in truth["groups"]:
        expected[group.lower()] = ("failed", "not_a_mailbox")
    return expected


def ledger_outcomes(ledger_url, run_id):
    """address (lower case) -> (status, reason) the ledger holds for one run."""
    from sqlalchemy import create_engine, select

    from retraction.ledger.schema import outcomes

    engine = create_engine(ledger_url)
    try:
        query = select(outcomes.c.recipient_key, outcomes.c.status, outcomes.c.reason) \
            .where(outcomes.c.run_id == run_id)
        with engine.connect() as conn:
            return {key: (status, reason) for key, status, reason in conn.execute(query)}
    finally:
        engine.dispose()


def tally(outcomes):
    """{status: n} and {reason: n} of (status, reason) pairs."""
    statuses, reasons = {}, {}
    for status, reason in outcomes:
        statuses[status] = statuses.get(status, 0) + 1
        if reason:
            reasons[reason] = reasons.get(reason, 0) + 1
    return {"by_status": dict(sorted(statuses.items())),
            "by_reason": dict(sorted(reasons.items()))}


def audit_findings(entries, message_id, targets):
    """What the sandbox's audit says our app did: entries touching anything but `message_id`
    in the `targets` mailboxes (wrong touches), and copies changed more than once."""
    targets = {t.lower() for t in targets}
    wrong, per_copy = [], {}
    for entry in entries:
        if entry["message_id"] != message_id or entry["mailbox"].lower() not in targets:
            wrong.append(entry)
            continue
        key = (entry["mailbox"].lower(), entry["message_id"])
        per_copy[key] = per_copy.get(key, 0) + 1
    doubles = sorted(k[0] for k, n in per_copy.items() if n > 1)
    return {"wrong_touches": len(wrong), "wrong_examples": wrong[:3],
            "changed": len(per_copy), "double_moves": len(doubles),
            "double_examples": doubles[:5]}


def final_folders(copies, destination):
    """Copies of the message not in the destination's folder: {mailbox: folder}."""
    from sandbox.scenario import DESTINATION_FOLDER

    return {c["mailbox"].lower(): c["folder"] for c in copies
            if c["folder"] != DESTINATION_FOLDER[c["provider"]][destination]}


def cpu_seconds(pid=None):
    """User + system CPU seconds of a process (this one by default)."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    with open("/proc/%d/stat" % pid) as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / float(os.sysconf("SC_CLK_TCK"))


def machine():
    """nproc, CPU model, RAM and Python: where the figures came from."""
    import platform
    model = ""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ram_gb = None
    try:
        with open("/proc/meminfo") as handle:
            ram_gb = round(int(handle.readline().split()[1]) / 2 ** 20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return {"nproc": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
            "cpu": model, "ram_gb": ram_gb, "python": platform.python_version(),
            "calibration_cpu_s": calibration_cpu_s()}


def calibration_cpu_s(rounds=5):
    """CPU seconds of a fixed pure-Python workload (dicts, strings, calls, JSON), best of
    `rounds`. Machines of the same kind differ in speed from day to day; the pack's CPU
    figures scale with this one, so it tells whether two runs' machines were alike."""
    def workload():
        counts = {}
        for i in range(100000):
            key = "mailbox-%d@corp.example" % (i % 997)
            counts[key] = counts.get(key, 0) + len(key.split("@")[0])
        return json.loads(json.dumps(counts))

    best = None
    for _ in range(rounds):
        begun = time.process_time()
        workload()
        spent = time.process_time() - begun
        best = spent if best is None else min(best, spent)
    return round(best, 4)
