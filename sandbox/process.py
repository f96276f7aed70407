"""The sandbox tenant as a child process (`python -m sandbox`) and a client of its control API.

For code that must not share a process with the sandbox: the benchmarks (the client's CPU, not
the fake server's, is what they measure), and StackStorm-driven tests and the demo (StackStorm
patches the process with eventlet, and its python runner starts actions as subprocesses).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class SandboxProcess:
    """`python -m sandbox` in a child process; `info` is its ready file, `control` its
    control API (plain HTTP on loopback). `pin`: the sandbox on its own CPU (benchmarks)."""

    def __init__(self, scenario="basic.yaml", seed=0, pin=False, timeout_s=60.0):
        self.scenario = scenario
        self.seed = seed
        self.workdir = tempfile.mkdtemp(prefix="sandbox-process-")
        self.ready_file = os.path.join(self.workdir, "ready.json")
        self.proc = None
        self.info = None
        self.pin = pin
        self.timeout_s = timeout_s
        self.pinned = False
        self._session = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def start(self):
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sandbox", "--scenario", self.scenario, "--ready-file",
             self.ready_file, "--data-dir", os.path.join(self.workdir, "data"),
             "--seed", str(self.seed)],
            cwd=PACK_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not os.path.exists(self.ready_file):
            if self.proc.poll() is not None:
                raise RuntimeError("the sandbox exited with %s before it was ready"
                                   % self.proc.returncode)
            if time.monotonic() - started > self.timeout_s:
                self.stop()
                raise RuntimeError("the sandbox was not ready within %.0f s"
                                   % self.timeout_s)
            time.sleep(0.01)
        with open(self.ready_file) as handle:
            self.info = json.load(handle)
        if self.pin:
            self.pinned = pin_apart(self.proc.pid)
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._session is not None:
            self._session.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- control API -------------------------------------------------------------------------
    @property
    def session(self):
        if self._session is None:
            import requests
            self._session = requests.Session()
            self._session.trust_env = False  # loopback: no proxy, no CA bundle override
        return self._session

    def control(self, method, path, body=None, **params):
        url = self.info["control_url"] + path
        response = self.session.request(method, url, json=body, params=params or None,
                                        timeout=300)
        if response.status_code >= 400:
            raise RuntimeError("sandbox %s %s: %s %s" % (method, path, response.status_code,
                                                         response.text[:300]))
        return response.json()

    def load_scenario(self, scenario):
        """A fresh tenant: a scenario mapping, or a file name under sandbox/scenarios/."""
        if isinstance(scenario, dict):
            return self.control("POST", "/scenario", scenario)
        path = scenario if os.path.isabs(scenario) else os.path.join(
            PACK_ROOT, "sandbox", "scenarios", scenario)
        with open(path, "rb") as handle:  # as written: the control API reads YAML
            response = self.session.post(self.info["control_url"] + "/scenario",
                                         data=handle.read(), timeout=300)
        if response.status_code >= 400:
            raise RuntimeError("sandbox POST /scenario: %s %s"
                               % (response.status_code, response.text[:300]))
        return response.json()

    def faults(self, spec, clear=False):
        body = dict(spec)
        if clear:
            body["clear"] = True
        return self.control("POST", "/faults", body)

    def campaign(self, **spec):
        """Generate a campaign; returns its truth (control API `campaign_view`)."""
        return self.control("POST", "/campaigns", spec)

    def campaign_truth(self, message_id):
        return self.control("GET", "/campaigns", message_id=message_id)

    def counters(self):
        return self.control("GET", "/counters")

    def reset_counters(self):
        return self.control("POST", "/counters/reset")

    def audit(self, since=0):
        return self.control("GET", "/audit", since=since)["entries"]

    def audit_seq(self):
        entries = self.audit()
        return entries[-1]["seq"] if entries else 0

    def copies(self, message_id):
        return self.control("GET", "/copies", message_id=message_id)["copies"]

    def add_mailbox(self, address, copies, kind="user"):
        return self.control("POST", "/mailboxes", {"address": address, "kind": kind,
                                                   "copies": copies})

    def pack_config(self, ledger_url="", **limits):
        """The sandbox's pack config with this ledger and these limits."""
        import yaml
        with open(self.info["pack_config_file"]) as handle:
            config = yaml.safe_load(handle)
        config["ledger_url"] = ledger_url
        config.setdefault("limits", {}).update(limits)
        return config


def pin_apart(server_pid):
    """Server on the first CPU, this process on the others (two or more CPUs)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return False
    os.sched_setaffinity(server_pid, {cpus[0]})
    os.sched_setaffinity(0, set(cpus[1:]))
    return True
