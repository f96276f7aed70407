"""How long `python -m sandbox` takes to start (measured here, never asserted in tests).

Runs the command `--runs` times with a scenario and reports two figures per run: `wall_s`, from
spawning the interpreter to the ready file existing, and `startup_s`, the sandbox's own figure
from the ready file (imports, RSA keys the scenario asks for, both listeners). The target is
startup_s < 1 s.

    .venv/bin/python bench/sandbox_start.py [--runs 5] [--scenario basic.yaml]

Prints one JSON object as its last line.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one_start(scenario, workdir, index):
    ready = os.path.join(workdir, "ready-%d.json" % index)
    started = time.monotonic()
    server = subprocess.Popen([sys.executable, "-m", "sandbox", "--scenario", scenario,
                               "--ready-file", ready], cwd=PACK_ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not os.path.exists(ready):
            if server.poll() is not None or time.monotonic() - started > 60:
                raise SystemExit("sandbox did not start (scenario %s)" % scenario)
            time.sleep(0.005)
        wall = time.monotonic() - started
        with open(ready) as handle:
            startup = json.load(handle)["startup_s"]
    finally:
        server.terminate()
        server.wait(30)
    return wall, startup


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scenario", default="basic.yaml")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="sandbox-start-")
    walls, startups = [], []
    try:
        for index in range(max(1, args.runs)):
            wall, startup = one_start(args.scenario, workdir, index)
            walls.append(wall)
            startups.append(startup)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps({
        "benchmark": "sandbox_start", "scenario": args.scenario, "runs": len(walls),
        "startup_s": {"median": round(statistics.median(startups), 3),
                      "max": round(max(startups), 3)},
        "wall_s": {"median": round(statistics.median(walls), 3), "max": round(max(walls), 3)},
        "target_startup_s": 1.0,
        "within_target": max(startups) < 1.0,
    }))


if __name__ == "__main__":
    main()
