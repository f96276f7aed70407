"""Each benchmark under bench/ still runs: a tiny run of each, as a subprocess, exits 0 and
prints one JSON object as its last line with the figures it promises, and those figures make
sense (the run was correct, nothing was lost). Never asserts on time: these are smoke runs,
the figures themselves live in docs/performance.md."""
import json
import os
import subprocess
import sys

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_bench(script, *args, timeout=600):
    env = dict(os.environ)
    env.pop("EMAIL_RETRACTION_TEST_POSTGRES_URL", None)  # the ledger bench: SQLite only here
    proc = subprocess.run([sys.executable, os.path.join(PACK_ROOT, "bench", script)]
                          + list(args), cwd=PACK_ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines, "no output; stderr: " + proc.stderr[-2000:]
    result = json.loads(lines[-1])
    assert isinstance(result, dict)
    return result


def test_campaign_small_run_is_correct_and_reports_every_figure():
    result = run_bench("campaign.py", "--copies", "40", "--rtt-ms", "1", "--peer-sample", "6",
                       "--chunk-size", "15", "--concurrency", "2",
                       "--distribution-lists", "1", "--unlicensed", "1",
                       "--policy-blocked", "1")
    for key in ("copies", "wall_s", "copies_per_s", "peer_copies_per_s", "speedup_vs_peer",
                "bound_s", "bound_ratio", "requests", "throttled", "outcomes", "peak_rss_mb",
                "correct"):
        assert key in result, key
    assert result["copies"] == 40
    assert result["correct"] is True, result["check"]
    check = result["check"]
    assert check["outcome_mismatches"] == 0 and check["wrong_touches"] == 0
    assert check["double_moves"] == 0 and check["not_in_destination"] == 0
    # 40 copies + 1 unlicensed + 1 policy-blocked mailbox + the list's own address
    assert sum(result["outcomes"]["by_status"].values()) == 43
    assert result["outcomes"]["by_reason"]["not_authorized"] == 1
    assert result["run"]["chunks"] >= 2 and result["run"]["state"] == "finished"
    assert result["run"]["metric_record_total"] == 43
    assert result["requests"]["graph.messages.move"] > 0
    assert result["requests"]["gmail.messages.trash"] > 0
    assert result["peer"]["sample"] == 6 and result["peer"]["errors"] == 0
    assert result["wall_s"] > 0 and result["bound_s"] > 0 and result["peak_rss_mb"] > 0
    assert result["bound_ratio"] <= 1  # a lower bound the real run cannot beat
    assert isinstance(result["throttled"], int)


def test_cold_start_two_runs_move_their_copy():
    result = run_bench("cold_start.py", "--runs", "2", "--rtt-ms", "0")
    assert result["import_s"] > 0 and result["total_s"] >= result["import_s"]
    for provider in ("microsoft", "google"):
        figures = result["by_provider"][provider]
        assert figures["runs"] == 2 and figures["all_moved"] is True
        assert figures["statuses"] == ["retracted"]
    # A Microsoft copy must not load Google's SDK, and the reverse.
    assert "googleapiclient" not in result["by_provider"]["microsoft"]["modules_loaded"]
    assert "msal" not in result["by_provider"]["google"]["modules_loaded"]


def test_faults_small_run_loses_nothing_and_moves_nothing_twice():
    result = run_bench("faults.py", "--copies", "60", "--rtt-ms", "0", "--outage-s", "1",
                       "--chunk-size", "20", "--concurrency", "2")
    assert result["copies"] == 60
    detail = result["detail"]
    # What the design guarantees whatever the dice: every copy ends with one outcome that is
    # either the truth or an honest provider_error after its bounded retries (at these fault
    # rates a request now and then fails all of its max_attempts sends; seen in about 1 run of
    # 10). Whether all 5,000 copies end definitive is the bench's figure, not this smoke run's.
    gave_up = detail["provider_errors"]
    assert detail["disagreeing"] == []
    assert result["definitive_outcomes"] + len(gave_up) == 60, gave_up
    assert all("gave up after" in e["error_message"] for e in gave_up), gave_up
    assert result["lost"] == 0
    assert result["wrong_touches"] == 0 and result["double_moves"] == 0
    assert result["metric_total"] == 60
    assert result["ledger_rows"] >= 60
    assert detail["runs"] == 2 and detail["not_in_destination"] <= len(gave_up)
    injected = detail["injected"]
    assert injected["graph"] and injected["gmail"]  # the faults really happened
    # The outage starts at each endpoint's first token request, so both providers meet it.
    assert injected["login"].get("token_outage") and injected["google_token"].get("token_outage")


def test_ledger_bench_tiny():
    result = run_bench("ledger.py", "--rows", "2000")
    assert result["rows"] == 2000 and result["sqlite"]["rows"] == 2000
    for key in ("record_24h", "record_30d", "details_page"):
        assert "best_s" in result["sqlite"][key]
    assert result["sqlite"]["record_30d"]["total"] > 0


def test_sandbox_start_bench_tiny():
    result = run_bench("sandbox_start.py", "--runs", "1")
    assert result["runs"] == 1 and result["startup_s"]["median"] > 0


def test_sandbox_rps_bench_tiny():
    result = run_bench("sandbox_rps.py", "--seconds", "0.3", "--connections", "4")
    assert set(result["results"]) == {"graph_folder_get_tls", "graph_message_lookup_tls",
                                      "control_get_http"}
    for figures in result["results"].values():
        assert figures["errors"] == 0 and figures["rps"] > 0


def test_auto_latency_tiny_every_verdict_is_acted_on():
    result = run_bench("auto_latency.py", "--poll-interval", "1", "--verdicts", "2",
                       "--copies", "6", "--span-s", "1", "--rtt-ms", "0")
    assert result["poll_interval_s"] == 1 and result["verdicts"] == 2
    assert result["reacted"] == 2 and result["all_moved"] is True
    for row in result["per_verdict"]:
        # each verdict went through StackStorm's rules and workflow engines: auto_retract
        # succeeded, its plan acted (a destination), and every copy due to move moved
        assert row["status"] == "succeeded", row.get("error")
        assert row["destination"] in ("junk", "trash", "soft_delete", "hard_delete"), row
        assert row["state"] == "finished" and row["total"] == 6
        assert row["moved"] == row["expected_moves"] > 0
    assert result["p50_s"] <= result["p95_s"] <= result["max_s"]
