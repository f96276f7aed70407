"""How many simple requests per second the sandbox serves on one core.

Starts `python -m sandbox` as its own process (pinned to one CPU when the machine has two or
more), then drives it from this process (pinned to another CPU) with an aiohttp client over
keep-alive connections: a Graph mail-folder GET over TLS with a real msal token, a Graph
message lookup ($filter), and a plain-HTTP control GET. Also reports the server process's CPU
use during each run, so `rps / server_cpu` estimates the ceiling when the client is the
limit. Graph throttling is switched off (its 10,000 requests / 10 min budget per mailbox
would otherwise answer 429s, which is the rule working, not the server's speed).

    .venv/bin/python bench/sandbox_rps.py [--seconds 3] [--connections 32]

Prints one JSON object as its last line.
"""
import argparse
import asyncio
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def hammer(url, headers, seconds, connections, ssl_ctx):
    import aiohttp
    connector = aiohttp.TCPConnector(limit=connections, ssl=ssl_ctx)
    done = errors = 0
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        async def worker():
            nonlocal done, errors
            while time.monotonic() < deadline:
                async with session.get(url) as response:
                    await response.read()
                    if response.status == 200:
                        done += 1
                    else:
                        errors += 1
        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.monotonic() - started
    return done, errors, elapsed


def run(name, url, headers, args, ssl_ctx, server_pid):
    cpu_before = cpu_seconds(server_pid)
    done, errors, elapsed = asyncio.run(hammer(url, headers, args.seconds, args.connections,
                                               ssl_ctx))
    server_cpu = (cpu_seconds(server_pid) - cpu_before) / elapsed
    return name, {"rps": round(done / elapsed), "errors": errors,
                  "server_cpu": round(server_cpu, 2),
                  "rps_at_full_core": round(done / elapsed / max(server_cpu, 0.01))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    workdir = tempfile.mkdtemp(prefix="sandbox-rps-")
    ready = os.path.join(workdir, "ready.json")
    started = time.monotonic()
    server = subprocess.Popen([sys.executable, "-m", "sandbox", "--scenario", "basic.yaml",
                               "--ready-file", ready], cwd=PACK_ROOT,
                              stderr=subprocess.DEVNULL)
    try:
        while not os.path.exists(ready):
            if server.poll() is not None or time.monotonic() - started > 20:
                raise SystemExit("sandbox did not start")
            time.sleep(0.01)
        startup = time.monotonic() - started
        if len(cpus) >= 2:  # server on one core, this client on another
            os.sched_setaffinity(server.pid, {cpus[0]})
            os.sched_setaffinity(0, {cpus[1]})
        with open(ready) as handle:
            info = json.load(handle)
        import msal
        import requests
        import yaml
        session = requests.Session()
        session.verify, session.trust_env = info["ca_file"], False
        with open(info["pack_config_file"]) as handle:
            ms = yaml.safe_load(handle)["microsoft"]
        app = msal.ConfidentialClientApplication(
            ms["client_id"], client_credential=ms["client_secret"],
            authority="%s/%s" % (ms["authority_host"], ms["tenant_id"]),
            instance_discovery=False, http_client=session)
        token = app.acquire_token_for_client(
            scopes=["https://graph.microsoft.com/.default"])["access_token"]
        plain = requests.Session()
        plain.trust_env = False
        plain.post(info["control_url"] + "/faults", json={"throttling": False})
        ssl_ctx = ssl.create_default_context(cafile=info["ca_file"])
        bearer = {"Authorization": "Bearer " + token}
        graph = info["graph_url"] + "/users/alice@corp.example"
        results = dict([
            run("graph_folder_get_tls", graph + "/mailFolders/inbox?$select=id", bearer, args,
                ssl_ctx, server.pid),
            run("graph_message_lookup_tls", graph + "/messages?$filter=internetMessageId%20eq"
                "%20'%3Cabc%40evil.example%3E'&$select=id,isRead,parentFolderId", bearer, args,
                ssl_ctx, server.pid),
            run("control_get_http", info["control_url"] + "/health", {}, args, None,
                server.pid),
        ])
    finally:
        server.terminate()
        server.wait(10)
    print(json.dumps({"benchmark": "sandbox_rps", "seconds": args.seconds,
                      "connections": args.connections, "cpus": len(cpus),
                      "pinned": len(cpus) >= 2, "startup_s": round(startup, 3),
                      "results": results}))


if __name__ == "__main__":
    main()
