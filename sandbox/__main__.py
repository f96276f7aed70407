"""`python -m sandbox --scenario FILE --ready-file PATH`: serve until SIGINT/SIGTERM.

The ready file (JSON: urls, ca_file, pack_config_file) is written atomically once both
listeners accept connections, so a waiting process may read it as soon as it exists.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--scenario", default="basic.yaml",
                        help="scenario YAML (a path, or a name under sandbox/scenarios/)")
    parser.add_argument("--ready-file", required=True, help="where to write the ready JSON")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--tls-port", type=int, default=0)
    parser.add_argument("--http-port", type=int, default=0)
    parser.add_argument("--data-dir", default=None,
                        help="CA and pack config directory (default: a temporary directory, "
                             "removed on exit)")
    parser.add_argument("--seed", type=int, default=0, help="fault injection seed")
    args = parser.parse_args(argv)

    started = time.monotonic()
    from sandbox.faults import Faults
    from sandbox.server import Sandbox
    sandbox = Sandbox.from_scenario_file(args.scenario, faults=Faults(seed=args.seed),
                                         data_dir=args.data_dir, host=args.host,
                                         tls_port=args.tls_port, http_port=args.http_port)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    sandbox.start()
    info = sandbox.ready_info()
    info["pid"] = os.getpid()
    info["startup_s"] = round(time.monotonic() - started, 3)
    tmp = args.ready_file + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(info, handle, indent=2)
    os.replace(tmp, args.ready_file)
    print("sandbox ready: %s" % json.dumps({k: info[k] for k in ("graph_url", "control_url")}),
          file=sys.stderr, flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        sandbox.stop()
        try:
            os.unlink(args.ready_file)
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
