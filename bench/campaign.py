"""Campaign throughput: the pack's way against the peer style and the provider-rule bound.

Starts the sandbox (its own process, pinned to its own CPU when there are two or more) with
latency (`--rtt-ms`, +/- 20 % jitter per request) and the provider rules on (Graph 4
concurrent requests per mailbox, Gmail per-user quota), generates a campaign of `--copies`
copies (`--ms-share` on Microsoft 365, the rest on Gmail, plus distribution lists, unlicensed
and policy-blocked mailboxes), and measures, in this one process:

- the pack's way: `retract_campaign`'s steps with the pack's own actions, in process:
  `split_recipients`, then `retract` per chunk under the run's id (`--concurrency` chunks at
  once on threads, as with-items spreads them over action runners), then `aggregate_run`;
  ledger in SQLite in a temporary directory. `wall_s` runs from split to aggregate.
- the peer style: per copy one Graph lookup then one move (Gmail: list, get, trash), one
  request after another with plain `requests` and a token fetched beforehand, over a sample
  of `--peer-sample` copies of another message, extrapolated per copy.
- the bound: the fastest the provider rules allow for these copies at this RTT with the
  pack's configured connections (see docs/performance.md for the formula).

`correct` is true only when every recipient's outcome in the ledger equals the sandbox's truth,
every copy that should have moved is in the destination, and the audit shows no change to
anything but the campaign's copies (the peer's message sits in the same mailboxes as decoys)
and no copy changed twice.

    .venv/bin/python bench/campaign.py [--copies 10000] [--rtt-ms 50] [--ms-share 0.6]
        [--chunk-size N] [--concurrency N] [--provider-concurrency N] [--peer-sample 200]

Prints one JSON object as its last line; exits 0 when it ran (targets are reported, never
enforced).
"""
import argparse
import math
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

_common.setup_paths()

# the Gmail provider's token pool, as the provider sizes it
from retraction.providers.gmail import MAX_TOKEN_WORKERS, TOKEN_WORKERS_PER_SLOT  # noqa: E402

TARGETS = {"wall_s_10000": 10.0, "speedup_vs_peer": 100.0, "bound_ratio": 0.7,
           "wall_s_100000": 90.0, "peak_rss_mb_100000": 300.0}
GRAPH_BATCH = 20  # Graph $batch limit
GMAIL_BATCH = 100  # Gmail batch limit (Google recommends 50; the bound takes the rule)
GRAPH_MAILBOX_CONCURRENCY = 4
GMAIL_USER_QUOTA_PER_MIN = 15000
GMAIL_UNITS = {"list": 5, "get": 5, "act": 5}
GRAPH_FOLDER = {"inbox": "inbox", "junk": "junkemail", "trash": "deleteditems",
                "soft_delete": "recoverableitemsdeletions"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=10000)
    parser.add_argument("--rtt-ms", type=float, default=50.0)
    parser.add_argument("--jitter", type=float, default=0.2)
    parser.add_argument("--ms-share", type=float, default=0.6)
    parser.add_argument("--destination", default="trash",
                        choices=("junk", "trash", "soft_delete", "inbox"))
    parser.add_argument("--chunk-size", type=int, default=None,
                        help="default: the config's limits.chunk_size")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="chunks at once; default: the config's limits.chunk_concurrency")
    parser.add_argument("--provider-concurrency", type=int, default=None,
                        help="default: the config's limits.provider_concurrency")
    parser.add_argument("--peer-sample", type=int, default=200)
    parser.add_argument("--distribution-lists", type=int, default=2)
    parser.add_argument("--unlicensed", type=int, default=3)
    parser.add_argument("--policy-blocked", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if args.copies < 1 or args.peer_sample < 1:
        parser.error("--copies and --peer-sample must be positive")
    if not 0.0 <= args.ms_share <= 1.0:
        parser.error("--ms-share must be within 0..1")
    return args


# -- the bound -----------------------------------------------------------------------------------
def bound(expected, truth, rtt_s, chunk_concurrency, provider_concurrency):
    """Seconds the provider rules allow at best for these copies, and its terms.

    Per provider, the larger of (a) the longest chain of requests that must follow one another
    and (b) the requests at minimum divided by what may be in flight, times the RTT. In flight:
    chunk_concurrency x provider_concurrency batches (and for Gmail as many token pools as the
    provider runs), each batch as large as the provider allows. Both providers run at once, so
    the bound is the slower of the two. Server time and client CPU count as zero."""
    per = {"microsoft": {"move": 0, "there": 0, "absent": 0, "refused": 0, "groups": 0},
           "google": {"move": 0, "there": 0, "absent": 0, "refused": 0, "groups": 0}}
    for address, (status, reason) in expected.items():
        if address in {g.lower() for g in truth["groups"]}:
            provider = "microsoft" if _is_ms(truth, address) else "google"
            per[provider]["groups"] += 1
            continue
        provider = truth["mailboxes"][address]["provider"]
        key = {"retracted": "move", "already_in_destination": "there"}.get(
            status, "absent" if reason == "not_found" else "refused")
        per[provider][key] += 1
    slots = chunk_concurrency * provider_concurrency
    token_slots = chunk_concurrency * min(MAX_TOKEN_WORKERS,
                                          TOKEN_WORKERS_PER_SLOT * provider_concurrency)
    terms = {}
    g = per["microsoft"]
    if sum(g.values()):
        # lookup + the folder id that says where it is + the move; a lookup alone finds
        # nothing or is refused; a group: its lookup fails, then two Directory reads.
        items = 3 * g["move"] + 2 * g["there"] + g["absent"] + g["refused"] + g["groups"]
        other = 2 + 2 * g["groups"]  # msal's discovery and token; group expansions
        chain = 2 + 2 + (3 if g["groups"] else 0)
        work = math.ceil(math.ceil(items / float(GRAPH_BATCH)) / slots) + math.ceil(
            other / float(slots))
        per_mailbox = math.ceil(2 / float(GRAPH_MAILBOX_CONCURRENCY))  # <= 2 items a round
        rtts = max(chain, work, per_mailbox)
        terms["microsoft"] = {"batch_items": items, "other_requests": other,
                              "chain_rtts": chain, "work_rtts": work, "bound_s": rtts * rtt_s}
    m = per["google"]
    if sum(m.values()):
        # one token per mailbox (no batching), then list, get (the Message-ID check), act.
        parts = 3 * m["move"] + 2 * m["there"] + m["absent"] + m["refused"]
        tokens = m["move"] + m["there"] + m["absent"] + m["refused"] + 2 * m["groups"]
        chain = 4 + (2 if m["groups"] else 0)
        work = max(math.ceil(tokens / float(token_slots)),
                   math.ceil(math.ceil(parts / float(GMAIL_BATCH)) / slots))
        # One copy per mailbox in a campaign: 15 units per user, far below the per-user
        # quota; the term counts only whole minutes a user's units would have to wait.
        units = sum(GMAIL_UNITS.values())
        quota_s = 60.0 * (units // GMAIL_USER_QUOTA_PER_MIN)
        rtts = max(chain, work)
        terms["google"] = {"batch_parts": parts, "token_requests": tokens,
                           "chain_rtts": chain, "work_rtts": work,
                           "units_per_user": units, "per_user_quota_s": quota_s,
                           "bound_s": max(rtts * rtt_s, quota_s)}
    seconds = max([t["bound_s"] for t in terms.values()] or [0.0])
    for t in terms.values():
        t["bound_s"] = round(t["bound_s"], 3)
    return round(seconds, 3), {"in_flight_batches": slots, "in_flight_tokens": token_slots,
                               "rtt_s": rtt_s, "providers": terms}


def _is_ms(truth, group):
    members = truth["groups"].get(group) or next(
        (v for k, v in truth["groups"].items() if k.lower() == group), [])
    return bool(members) and truth["mailboxes"][members[0].lower()]["provider"] == "microsoft"


# -- the peer style -------------------------------------------------------------------------
def peer(box, config, truth, destination):
    """Sequential plain requests, one copy after another, with cached tokens (fetched before
    the clock starts: the peer's best case). Returns seconds and what happened."""
    import msal
    import requests
    from google.auth.transport.requests import Request
    from google.oauth2 import service_account

    ms, gg = config["microsoft"], config["google"]
    graph = requests.Session()
    graph.verify, graph.trust_env = ms["ca_file"], False
    app = msal.ConfidentialClientApplication(
        ms["client_id"], client_credential=ms["client_secret"],
        authority="%s/%s" % (ms["authority_host"], ms["tenant_id"]),
        instance_discovery=False, http_client=graph)
    graph_token = app.acquire_token_for_client(
        scopes=["https://graph.microsoft.com/.default"])["access_token"]
    graph.headers["Authorization"] = "Bearer " + graph_token
    plain = requests.Session()
    plain.trust_env = False
    import json
    info = json.loads(gg["service_account_json"])
    info["token_uri"] = gg["token_uri"]
    base = service_account.Credentials.from_service_account_info(
        info, scopes=["https://www.googleapis.com/auth/gmail.modify"])
    mailboxes = [(a, t) for a, t in sorted(truth["mailboxes"].items())]
    tokens = {}
    for address, fields in mailboxes:
        if fields["provider"] == "google":
            creds = base.with_subject(address)
            creds.refresh(Request(plain))
            tokens[address] = creds.token
    message_id = truth["message_id"]
    done = {"moved": 0, "not_found": 0, "errors": 0}
    started = time.perf_counter()
    for address, fields in mailboxes:
        try:
            if fields["provider"] == "microsoft":
                moved = _peer_graph(graph, ms["graph_url"], address, message_id, destination)
            else:
                moved = _peer_gmail(plain, gg["gmail_url"], tokens[address], address,
                                    message_id, destination)
            done["moved" if moved else "not_found"] += 1
        except requests.RequestException:
            done["errors"] += 1
    seconds = time.perf_counter() - started
    graph.close()
    plain.close()
    return seconds, dict(done, sample=len(mailboxes))


def _peer_graph(session, graph_url, address, message_id, destination):
    base = "%s/users/%s" % (graph_url, address)
    found = session.get(base + "/messages", params={
        "$filter": "internetMessageId eq '%s'" % message_id.replace("'", "''"),
        "$select": "id,parentFolderId,isRead"}, timeout=30)
    found.raise_for_status()
    hits = found.json().get("value") or []
    for hit in hits:
        session.post("%s/messages/%s/move" % (base, hit["id"]),
                     json={"destinationId": GRAPH_FOLDER[destination]},
                     timeout=30).raise_for_status()
    return bool(hits)


def _peer_gmail(session, gmail_url, token, address, message_id, destination):
    headers = {"Authorization": "Bearer " + token}
    base = "%s/gmail/v1/users/%s/messages" % (gmail_url, address)
    found = session.get(base, params={"q": "rfc822msgid:" + message_id,
                                      "includeSpamTrash": "true"}, headers=headers,
                        timeout=30)
    found.raise_for_status()
    hits = found.json().get("messages") or []
    for hit in hits:
        session.get("%s/%s" % (base, hit["id"]), params={
            "format": "metadata", "metadataHeaders": "Message-ID"}, headers=headers,
            timeout=30).raise_for_status()
        if destination in ("trash", "soft_delete"):
            answer = session.post("%s/%s/trash" % (base, hit["id"]), headers=headers,
                                  timeout=30)
        else:
            labels = {"junk": (["SPAM"], ["INBOX"]), "inbox": (["INBOX"], ["SPAM", "TRASH"])}
            add, remove = labels[destination]
            answer = session.post("%s/%s/modify" % (base, hit["id"]), headers=headers,
                                  json={"addLabelIds": add, "removeLabelIds": remove},
                                  timeout=30)
        answer.raise_for_status()
    return bool(hits)


# -- the run ------------------------------------------------------------------------------------
def main(argv=None):
    args = parse_args(argv)
    machine = _common.machine()
    message_id = "<campaign-%d-%d@evil.example>" % (args.copies, args.seed)
    peer_message = "<peer-%d@evil.example>" % args.seed
    workdir = tempfile.TemporaryDirectory(prefix="bench-campaign-")
    ledger_url = "sqlite:///" + os.path.join(workdir.name, "ledger.db")
    _common.quiet_action_logs()
    with workdir, _common.SandboxProcess("basic.yaml", seed=args.seed) as box:
        box.faults({"rtt_ms": args.rtt_ms, "jitter": args.jitter, "throttling": True},
                   clear=True)
        _common.log("campaign: %d copies (%.0f %% Microsoft), RTT %.0f ms" % (
            args.copies, 100 * args.ms_share, args.rtt_ms))
        recipients = box.campaign(
            message_id=message_id, copies=args.copies, microsoft_share=args.ms_share,
            distribution_lists=args.distribution_lists, unlicensed=args.unlicensed,
            policy_blocked=args.policy_blocked, seed=args.seed)["recipients"]
        # The peer's message in the first mailboxes of the campaign: decoys for the pack.
        box.campaign(message_id=peer_message, copies=args.peer_sample,
                     microsoft_share=args.ms_share, seed=args.seed + 1)
        config = box.pack_config(ledger_url)
        limits = config["limits"]
        # One run of the whole campaign: the config's cap on one request (50,000 in the
        # example) is raised to the campaign's size when it is larger.
        limits["max_recipients"] = max(limits.get("max_recipients", 0), len(recipients))
        for name, value in (("chunk_size", args.chunk_size),
                            ("chunk_concurrency", args.concurrency),
                            ("provider_concurrency", args.provider_concurrency)):
            if value is not None:
                limits[name] = value
        request = {"message_id": message_id, "recipients": recipients,
                   "destination": args.destination, "mode": "manual", "trigger": "analyst",
                   "requested_by": "bench@corp.example", "comment": "bench/campaign.py"}
        box.reset_counters()
        audit_from = box.audit_seq()
        server_cpu = _common.cpu_seconds(box.proc.pid)
        client_cpu = _common.cpu_seconds()
        rss_reset = _common.reset_peak_rss()
        started = time.perf_counter()
        run = _common.run_campaign(config, request)
        wall = time.perf_counter() - started
        peak_rss = _common.peak_rss_mb()
        client_cpu = _common.cpu_seconds() - client_cpu
        server_cpu = _common.cpu_seconds(box.proc.pid) - server_cpu
        del recipients, request
        counters = box.counters()
        _common.log("pack: %.2f s; checking against the truth" % wall)

        truth = box.campaign_truth(message_id)
        expected = _common.expected_outcomes(truth, args.destination)
        got = _common.ledger_outcomes(ledger_url, run["run_id"])
        wrong, examples = _common.mismatches(expected, got)
        outcomes = _common.tally(got.values())
        audit = _common.audit_findings(box.audit(audit_from), message_id, truth["mailboxes"])
        should_move = {a for a, (s, _) in expected.items() if s == "retracted"}
        misplaced = {a: f for a, f in _common.final_folders(box.copies(message_id),
                                                            args.destination).items()
                     if a in should_move}
        unchanged = len(should_move) - audit["changed"]
        bound_s, bound_detail = bound(expected, truth, args.rtt_ms / 1000.0,
                                      run["concurrency"], limits["provider_concurrency"])
        del truth, got

        peer_truth = box.campaign_truth(peer_message)
        _common.log("peer: %d copies, one request after another" % args.peer_sample)
        peer_s, peer_done = peer(box, config, peer_truth, args.destination)

    copies_per_s = args.copies / wall
    peer_per_s = peer_done["sample"] / peer_s
    correct = (wrong == 0 and not misplaced and audit["wrong_touches"] == 0
               and audit["double_moves"] == 0 and unchanged == 0
               and run["failed_chunks"] == 0)
    _common.emit({
        "benchmark": "campaign",
        "copies": args.copies,
        "wall_s": round(wall, 3),
        "copies_per_s": round(copies_per_s, 1),
        "peer_copies_per_s": round(peer_per_s, 2),
        "speedup_vs_peer": round(copies_per_s / peer_per_s, 1),
        "bound_s": bound_s,
        "bound_ratio": round(bound_s / wall, 3),
        "requests": _common.requests_by_endpoint(counters),
        "throttled": _common.throttled_count(counters),
        "outcomes": outcomes,
        "peak_rss_mb": peak_rss,
        "correct": correct,
        "check": {"outcome_mismatches": wrong, "examples": examples,
                  "not_in_destination": len(misplaced), "moved_copies": audit["changed"],
                  "wrong_touches": audit["wrong_touches"],
                  "double_moves": audit["double_moves"], "failed_chunks": run["failed_chunks"]},
        "peak_rss_mb_before_aggregate": run["peak_rss_mb_before_aggregate"],
        "run": {"run_id": run["run_id"], "chunks": run["chunks"], "chunk_s": run["chunk_s"],
                "phase_s": run["phase_s"],
                "chunk_size": run["chunk_size"], "concurrency": run["concurrency"],
                "provider_concurrency": limits["provider_concurrency"],
                "gmail_batch_size": config["google"].get("batch_size"),
                "metric_record_total": run["aggregate"]["metric_record"]["total"],
                "state": run["aggregate"]["state"]},
        "bound_detail": bound_detail,
        "peer": dict(peer_done, seconds=round(peer_s, 2),
                     per_copy_s=round(peer_s / peer_done["sample"], 4)),
        "cpu_s": {"client": round(client_cpu, 2), "sandbox": round(server_cpu, 2),
                  "client_per_copy_ms": round(1000 * client_cpu / args.copies, 3)},
        "params": {"rtt_ms": args.rtt_ms, "jitter": args.jitter, "ms_share": args.ms_share,
                   "destination": args.destination, "seed": args.seed,
                   "sandbox_pinned": box.pinned, "peak_rss_reset": rss_reset},
        "machine": machine,
        "targets": TARGETS,
    })


if __name__ == "__main__":
    main()
