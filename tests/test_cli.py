"""`python -m retraction` end to end: the CLI runs as a subprocess (lib/ on PYTHONPATH) with a
pack config file pointing at the sandbox tenant and a SQLite ledger, driving the real
providers over loopback. Each test checks the exit code, what was printed AND the tenant or
the ledger."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest
import yaml

from retraction.ledger import Ledger

pytest_plugins = ["sandbox.pytest_plugin"]

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MID = "<abc@evil.example>"
BASIC_RECIPIENTS = ["alice@corp.example", "bob@corp.example", "shared-ops@corp.example",
                    "exec@corp.example", "left@corp.example", "carol@corp-mail.example",
                    "dave@corp-mail.example", "gone@corp-mail.example"]
EXPECTED = {
    "alice@corp.example": ("retracted", None),
    "bob@corp.example": ("retracted", None),
    "shared-ops@corp.example": ("retracted", None),
    "exec@corp.example": ("failed", "not_authorized"),
    "left@corp.example": ("failed", "not_a_mailbox"),
    "carol@corp-mail.example": ("retracted", None),
    "dave@corp-mail.example": ("already_in_destination", None),
    "gone@corp-mail.example": ("failed", "not_a_mailbox"),
    "x@elsewhere.example": ("failed", "out_of_scope"),
}


def folders(box, address, message_id=MID):
    view = box.mailbox_view(address)
    return sorted(c["folder"] for c in view["copies"] if c["message_id"] == message_id)


class Started(subprocess.Popen):
    """A subprocess whose stdout and stderr go to temporary files, waited for by polling.

    The sandbox tenant is served from a thread of this process. Under StackStorm's eventlet
    monkey patching (st2tests.base applies it; tests/conftest.py applies it first) that thread
    is a green thread, and `Popen.communicate()` waits on the blocking poll selector that
    `subprocess` took at import, before the patch: the server would never run while the CLI
    waits for it.
    `Popen.wait(timeout)` polls with `time.sleep`, which yields to it (and is an ordinary wait
    where nothing is patched). Files, not pipes, so a large output cannot block the child."""

    def __init__(self, argv, stdin=None, **kwargs):
        self._out = tempfile.TemporaryFile()
        self._err = tempfile.TemporaryFile()
        stdin_file = None
        if stdin is not None:
            stdin_file = tempfile.TemporaryFile()
            stdin_file.write(stdin.encode("utf-8"))
            stdin_file.seek(0)
        try:
            super().__init__(argv, stdin=stdin_file, stdout=self._out, stderr=self._err,
                             **kwargs)
        finally:
            if stdin_file is not None:
                stdin_file.close()

    def finish(self, timeout):
        """Wait for the exit (killing the child after `timeout` s); returns (stdout, stderr)
        decoded as `text=True` would, with universal newlines."""
        try:
            self.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.wait()
            raise
        finally:
            outputs = []
            for handle in (self._out, self._err):
                handle.seek(0)
                outputs.append(handle.read().decode("utf-8").replace("\r\n", "\n")
                               .replace("\r", "\n"))
                handle.close()
        return outputs


def run_captured(argv, stdin=None, timeout=None, **kwargs):
    """subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout),
    waited for cooperatively (see Started)."""
    proc = Started(argv, stdin=stdin, **kwargs)
    out, err = proc.finish(timeout)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


class Cli:
    """Runs the CLI in a subprocess from a working directory holding the config file."""

    def __init__(self, box, tmp_path):
        self.box = box
        self.dir = tmp_path
        self.ledger_url = "sqlite:///%s" % (tmp_path / "ledger.db")
        self.config = box.pack_config()
        self.config["ledger_url"] = self.ledger_url
        self.config_file = tmp_path / "email_retraction.yaml"
        self.write_config(self.config)
        secret = self.config["microsoft"]["client_secret"]
        key = json.loads(self.config["google"]["service_account_json"])["private_key"]
        self.secrets = [secret, key.splitlines()[1], key.splitlines()[-2]]

    def write_config(self, config, path=None):
        with open(str(path or self.config_file), "w") as handle:
            yaml.safe_dump(config, handle)

    def env(self, **extra):
        env = {k: v for k, v in os.environ.items()
               if k not in ("EMAIL_RETRACTION_CONFIG", "PYTHONPATH")}
        env["PYTHONPATH"] = os.path.join(PACK_ROOT, "lib")
        env.update(extra)
        return env

    def __call__(self, *args, stdin=None, env=None):
        proc = run_captured([sys.executable, "-m", "retraction"] + list(args), stdin=stdin,
                            cwd=str(self.dir), env=env or self.env(), timeout=120)
        for secret in self.secrets:
            assert secret not in proc.stdout and secret not in proc.stderr
        return proc

    def json(self, *args, **kwargs):
        proc = self(*(args + ("--json",)), **kwargs)
        return proc, json.loads(proc.stdout)  # the whole of stdout is one JSON object

    def ledger(self):
        return Ledger(self.ledger_url)


@pytest.fixture
def cli(sandbox, tmp_path):
    return Cli(sandbox, tmp_path)


def by_recipient(result):
    return {o["recipient"]: (o["status"], o["reason"]) for o in result["outcomes"]}


# --- retract, restore, preview ----------------------------------------------------------------

def test_retract_prints_the_card_and_exits_1_when_some_copies_failed(cli):
    proc = cli("retract", "abc@evil.example", *BASIC_RECIPIENTS, "x@elsewhere.example",
               "--destination", "junk", "--comment", "INC-42")
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout
    assert "Total retractions: 9" in out
    assert "Success: 4 (44.4%)" in out
    assert "Fail: 4 (44.4%): not_a_mailbox 2, not_authorized 1, out_of_scope 1" in out
    assert "Already in destination: 1 (11.1%)" in out
    assert "Unread / Read: 2 / 2" in out and "Auto / Manual: 0 / 9" in out
    assert "Failed copies (4):" in out
    failed_lines = [line for line in out.splitlines() if line.startswith("  ")]
    assert any("exec@corp.example" in line and "not_authorized" in line for line in failed_lines)
    assert "Recorded in the ledger." in out
    assert proc.stderr == ""  # no progress bar: stderr is not a terminal
    for address in ("alice@corp.example", "bob@corp.example", "carol@corp-mail.example"):
        assert folders(cli.box, address) == ["junk"]
    assert folders(cli.box, "exec@corp.example") == ["inbox"]
    run_id = [line.split()[-1] for line in out.splitlines() if line.startswith("run_id:")][0]
    with cli.ledger() as ledger:
        assert ledger.run(run_id)["state"] == "finished"
        stored = {o.recipient: (o.status, o.reason) for o in ledger.outcomes_for_run(run_id)}
        assert stored == EXPECTED
        assert {o.comment for o in ledger.outcomes_for_run(run_id)} == {"INC-42"}


def test_json_is_one_object_and_exit_0_when_nothing_failed(cli):
    proc, result = cli.json("retract", MID, "alice@corp.example", "carol@corp-mail.example",
                            "--destination", "trash", "--requested-by", "analyst7")
    assert proc.returncode == 0, proc.stderr
    assert result["exit_code"] == 0 and result["error"] is None
    assert result["destination"] == "trash" and result["message_id"] == MID
    assert by_recipient(result) == {"alice@corp.example": ("retracted", None),
                                    "carol@corp-mail.example": ("retracted", None)}
    assert result["counts"]["total"] == 2 and result["counts"]["attempted"] == 2
    assert result["metric_record"]["retracted"] == 2
    assert result["metric_record"]["retracted_pct"] == 100.0
    assert "Success: 2 (100.0%)" in result["card"]
    assert result["ledger"] == {"recorded": True, "error": None}
    assert {o["requested_by"] for o in result["outcomes"]} == {"analyst7"}
    assert folders(cli.box, "alice@corp.example") == ["trash"]


def test_preview_moves_nothing(cli):
    before = {a: folders(cli.box, a) for a in ("alice@corp.example", "carol@corp-mail.example")}
    proc, result = cli.json("retract", MID, *before, "--destination", "soft_delete",
                            "--preview")
    assert proc.returncode == 0, proc.stderr
    assert result["preview"] is True
    assert set(by_recipient(result).values()) == {("previewed", None)}
    assert result["metric_record"]["previewed"] == 2 and result["metric_record"]["total"] == 0
    assert {a: folders(cli.box, a) for a in before} == before
    text = cli("retract", MID, *before, "--preview")
    assert text.returncode == 0 and "Previewed, not moved: 2" in text.stdout
    assert text.stdout.startswith("Previewed <abc@evil.example>")


def test_rerun_counts_nothing_twice_and_auto_mode_skips(cli):
    recipients = ("alice@corp.example", "bob@corp.example", "carol@corp-mail.example")
    first = cli("retract", MID, *recipients, "--destination", "junk")
    assert first.returncode == 0, first.stderr
    proc, again = cli.json("retract", MID, *recipients, "--destination", "junk")
    assert proc.returncode == 0
    assert set(by_recipient(again).values()) == {("already_in_destination", None)}
    proc, auto = cli.json("retract", MID, *recipients, "--destination", "junk", "--mode",
                          "auto", "--disposition", "SUSPICIOUS")
    assert proc.returncode == 0
    assert auto["skip_already_retracted"] is True and auto["counts"]["skipped"] == 3
    assert auto["trigger"] == "disposition" and auto["counts"]["attempted"] == 0
    assert {(o["status"], o["error_code"], o["attempts"]) for o in auto["outcomes"]} == {
        ("already_in_destination", "skipped_already_retracted", 0)}
    proc, metrics = cli.json("metrics", "--last", "1h")
    assert metrics["record"]["total"] == 3 and metrics["record"]["retracted"] == 3


def test_restore_undoes_a_retraction(cli):
    assert cli("retract", MID, "alice@corp.example", "carol@corp-mail.example",
               "--destination", "junk").returncode == 0
    proc, result = cli.json("restore", MID, "alice@corp.example", "carol@corp-mail.example",
                            "--comment", "false positive", "--disposition", "NONE")
    assert proc.returncode == 0, proc.stderr
    assert result["destination"] == "inbox"
    assert set(by_recipient(result).values()) == {("retracted", None)}
    assert folders(cli.box, "alice@corp.example") == ["inbox"]
    assert folders(cli.box, "carol@corp-mail.example") == ["inbox"]
    text = cli("restore", MID, "alice@corp.example")
    assert text.returncode == 0 and "Restore · one run" in text.stdout
    assert "Already in destination: 1 (100.0%)" in text.stdout
    # restore has no --destination: it always goes to the inbox
    bad = cli("restore", MID, "alice@corp.example", "--destination", "junk")
    assert bad.returncode == 2 and "unrecognized arguments: --destination" in bad.stderr


def test_recipients_from_a_file_and_stdin(cli):
    listing = cli.dir / "recipients.txt"
    listing.write_text("# campaign INC-7\nalice@corp.example\n\n  bob@corp.example  \r\n")
    proc, result = cli.json("retract", MID, "shared-ops@corp.example", "-",
                            "--recipients-file", str(listing), "--destination", "junk",
                            stdin="carol@corp-mail.example\n")
    assert proc.returncode == 0, proc.stderr
    assert set(by_recipient(result)) == {"shared-ops@corp.example", "alice@corp.example",
                                         "bob@corp.example", "carol@corp-mail.example"}
    proc, result = cli.json("retract", MID, "--recipients-file", "-", "--destination",
                            "trash", stdin="alice@corp.example\ndave@corp-mail.example\n")
    assert proc.returncode == 0 and set(by_recipient(result)) == {"alice@corp.example",
                                                                  "dave@corp-mail.example"}
    missing = cli("retract", MID, "--recipients-file", str(cli.dir / "nope.txt"))
    assert missing.returncode == 2 and "invalid recipients_file: cannot read" in missing.stderr


def test_progress_bar_on_request_and_only_on_stderr(cli):
    proc = cli("retract", MID, *BASIC_RECIPIENTS, "--progress", "--json")
    assert proc.returncode == 1
    assert "copy/s" in proc.stderr and "8/8" in proc.stderr  # tqdm's meter
    assert json.loads(proc.stdout)["counts"]["total"] == 8  # stdout stays pure JSON


# --- metrics and details ----------------------------------------------------------------------

@pytest.fixture
def history(cli):
    """One retraction with every kind of outcome, in the ledger."""
    proc = cli("retract", MID, *BASIC_RECIPIENTS, "x@elsewhere.example", "--destination",
               "junk", "--disposition", "MALICIOUS")
    assert proc.returncode == 1, proc.stderr
    return cli


def test_metrics_in_every_format(history):
    cli = history
    text = cli("metrics", "--last", "1h")
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("Retractions · last 1h\n")
    assert "Total retractions: 9" in text.stdout and "Success: 4 (44.4%)" in text.stdout
    markdown = cli("metrics", "--format", "markdown")
    assert markdown.returncode == 0
    assert "- **Fail:** 4 (44.4%): not_a_mailbox 2, not_authorized 1, out_of_scope 1" \
        in markdown.stdout
    html = cli("metrics", "--format", "html")
    assert html.returncode == 0 and "<" in html.stdout and "44.4%" in html.stdout
    proc, data = cli.json("metrics", "--last", "2h", "--provider", "google")
    assert proc.returncode == 0
    assert data["window"]["last"] == "2h" and data["record"]["filters"] == {"provider": "google"}
    assert data["record"]["total"] == 3  # carol retracted, dave already there, gone failed
    assert data["record"]["failed_by_reason"]["not_a_mailbox"] == 1
    assert "Filters: provider=google" in data["card"] and data["format"] == "text"
    as_format = json.loads(cli("metrics", "--format", "json", "--disposition",
                               "malicious").stdout)
    assert as_format["record"]["total"] == 9 and as_format["card"] is None
    assert as_format["filters"] == {"disposition": "MALICIOUS"}
    # approval decisions of the window, as retraction_metrics returns them
    assert as_format["decisions"] == {"approved": 0, "rejected": 0}
    assert data["decisions"] is None  # a provider filter: decisions concern whole runs
    with cli.ledger() as ledger:
        ledger.record_decision(MID, "rejected", decided_by="bob", trigger="disposition",
                               disposition="MALICIOUS", destination="trash")
    decided = cli.json("metrics", "--last", "1h")[1]["decisions"]
    assert decided == {"approved": 0, "rejected": 1}
    since = cli.json("metrics", "--since", "2000-01-01T00:00:00Z", "--until",
                     "2000-01-02T00:00:00Z")[1]
    assert since["record"]["total"] == 0 and since["window"]["last"] is None


def test_details_with_filters_and_paging(history):
    cli = history
    proc, failed = cli.json("details", "--status", "failed")
    assert proc.returncode == 0, proc.stderr
    assert failed["count"] == 4 and len(failed["rows"]) == 4
    assert {r["recipient"]: r["reason"] for r in failed["rows"]} == {
        a: reason for a, (status, reason) in EXPECTED.items() if status == "failed"}
    assert failed["next_cursor"] is None
    only = cli.json("details", "--reason", "not_a_mailbox", "--provider", "microsoft")[1]
    assert [r["recipient"] for r in only["rows"]] == ["left@corp.example"]
    mine = cli.json("details", "--recipient", "ALICE@corp.example", "--message-id",
                    "abc@evil.example")[1]
    assert [(r["recipient"], r["status"]) for r in mine["rows"]] == [
        ("alice@corp.example", "retracted")]
    first = cli.json("details", "--limit", "5")[1]
    assert first["count"] == 5 and first["next_cursor"]
    rest = cli.json("details", "--limit", "5", "--cursor", first["next_cursor"])[1]
    assert rest["count"] == 4 and rest["next_cursor"] is None
    seen = [r["id"] for r in first["rows"] + rest["rows"]]
    assert len(set(seen)) == 9
    text = cli("details", "--status", "failed", "--last", "1h")
    assert text.returncode == 0
    lines = text.stdout.splitlines()
    assert lines[0] == "Retraction details · last 1h · 4 rows"
    assert lines[1].split()[:3] == ["completed", "(UTC)", "status"]
    assert any("exec@corp.example" in line and "not_authorized" in line for line in lines)
    paged = cli("details", "--limit", "2")
    assert "More rows: repeat the command with --cursor " in paged.stdout
    markdown = cli("details", "--format", "markdown", "--status", "retracted")
    assert "| completed (UTC) | status |" in markdown.stdout
    assert markdown.stdout.count("| retracted |") == 4


# --- exit codes 2 and 3 -----------------------------------------------------------------------

BAD_INPUT = [
    (["retract", "x@y OR in:anywhere", "alice@corp.example"], "message_id"),
    (["retract", MID, "alice@corp.example/../bob"], "recipients"),
    (["retract", MID], "recipients"),
    (["retract", MID, "alice@corp.example", "--destination", "void"], "destination"),
    (["retract", MID, "alice@corp.example", "--destination", "hard_delete"], "destination"),
    (["retract", MID, "alice@corp.example", "--verdict-time", "soon"], "verdict_time"),
    (["retract", MID, "alice@corp.example", "--mode", "sometimes"], "mode"),
    (["restore", MID, "alice@corp.example", "--provider", "yahoo"], "provider"),
    (["metrics", "--last", "3y"], "last"),
    (["metrics", "--last", "1h", "--since", "2024-01-01"], "last"),
    (["metrics", "--provider", "yahoo"], "provider"),
    (["details", "--status", "gone"], "status"),
    (["details", "--limit", "0"], "limit"),
    (["details", "--cursor", "forged"], "cursor"),
    (["details", "--recipient", "not an address"], "recipient"),
]


@pytest.mark.parametrize("args,field", BAD_INPUT, ids=[f + "-" + a[0] for a, f in BAD_INPUT])
def test_bad_input_exits_2_naming_the_field_before_any_request(cli, args, field):
    before = cli.box.counters.snapshot()
    proc, error = cli.json(*args)
    assert proc.returncode == 2
    assert error["exit_code"] == 2 and error["field"] == field
    assert error["error"].startswith("invalid %s:" % field)
    assert ("error: invalid %s:" % field) in proc.stderr
    assert cli.box.counters.snapshot() == before
    assert folders(cli.box, "alice@corp.example") == ["inbox"]


def test_usage_errors_exit_2_with_nothing_on_stdout(cli):
    for args in (["retract"], ["retract", MID, "--frobnicate"], ["metrics", "--format", "pdf"],
                 ["explode"], []):
        proc = cli(*args)
        assert proc.returncode == 2, args
        assert proc.stdout == "" and "usage: python -m retraction" in proc.stderr


def test_help_documents_the_exit_codes(cli):
    proc = cli("--help")
    assert proc.returncode == 0
    for line in ("0    done", "1    the run finished, but some copies failed", "2    bad input",
                 "3    nothing could be attempted", "130  interrupted"):
        assert line in proc.stdout
    assert "exit codes:" in cli("retract", "--help").stdout


def test_config_is_found_by_flag_env_and_working_directory(cli, tmp_path):
    elsewhere = tmp_path / "other" / "pack.yaml"
    elsewhere.parent.mkdir()
    cli.write_config(dict(cli.config, default_destination="trash"), elsewhere)
    first = cli.json("retract", MID, "alice@corp.example")[1]
    assert first.get("destination") == "junk", first
    assert cli.json("retract", MID, "bob@corp.example", "--config",
                    str(elsewhere))[1]["destination"] == "trash"
    proc, result = cli.json("retract", MID, "carol@corp-mail.example",
                            env=cli.env(EMAIL_RETRACTION_CONFIG=str(elsewhere)))
    assert result.get("destination") == "trash", result
    os.remove(str(cli.config_file))
    proc, error = cli.json("metrics")
    assert proc.returncode == 2 and error["field"] == "(file)"
    assert "cannot read email_retraction.yaml" in error["error"]


def test_config_errors_name_the_key_and_never_the_secret(cli):
    before = cli.box.counters.snapshot()
    cli.write_config(dict(cli.config, limits={"max_recipients": 0}))
    proc, error = cli.json("retract", MID, "alice@corp.example")
    assert proc.returncode == 2 and error["field"] == "limits.max_recipients"
    cli.write_config(dict(cli.config, microsoft=dict(cli.config["microsoft"],
                                                     client_secret=["not", "a", "string"])))
    proc, error = cli.json("retract", MID, "alice@corp.example")
    assert proc.returncode == 2 and error["field"] == "microsoft.client_secret"
    cli.write_config(dict(cli.config, ledger_url=""))
    proc, error = cli.json("details")
    assert proc.returncode == 2 and error["field"] == "ledger_url"
    assert cli.box.counters.snapshot() == before


def test_no_copy_attempted_exits_3(cli):
    config = dict(cli.config)
    config["microsoft"] = dict(config["microsoft"], client_secret="wrong-secret-value")
    cli.write_config(config)
    cli.secrets.append("wrong-secret-value")
    proc, result = cli.json("retract", MID, "alice@corp.example", "bob@corp.example")
    assert proc.returncode == 3
    assert result["exit_code"] == 3 and result["counts"]["attempted"] == 0
    assert "no copy could be attempted: 2 failed (2 not_authorized)" in result["error"]
    assert "error: no copy could be attempted" in proc.stderr
    assert folders(cli.box, "alice@corp.example") == ["inbox"]
    # Gmail still works: some copies were attempted, so this is "some failed" (1), not 3
    proc, result = cli.json("retract", MID, "alice@corp.example", "carol@corp-mail.example")
    assert proc.returncode == 1 and by_recipient(result)["carol@corp-mail.example"] == (
        "retracted", None)


def test_unavailable_ledger_exits_3_before_any_provider_call(cli):
    blocker = cli.dir / "not-a-directory"
    blocker.write_text("")
    cli.write_config(dict(cli.config, ledger_url="sqlite:///%s/ledger.db" % blocker))
    before = cli.box.counters.snapshot()
    for args in (["retract", MID, "alice@corp.example"], ["metrics"], ["details"]):
        proc, error = cli.json(*args)
        assert proc.returncode == 3, (args, proc.stderr)
        assert "ledger" in error["error"]
    assert cli.box.counters.snapshot() == before
    assert folders(cli.box, "alice@corp.example") == ["inbox"]


def test_interrupt_exits_130_and_the_run_is_recorded_as_failed(cli):
    truth = cli.box.generate_campaign(message_id="<stall@evil.example>", copies=60,
                                      microsoft_share=1.0, seed=5)
    listing = cli.dir / "campaign.txt"
    listing.write_text("\n".join(truth.recipients) + "\n")

    def held():
        return any(cli.box.graph_throttle.busy(a) for a in truth.recipients)
    with cli.box.hold_graph_operations():
        proc = Started(
            [sys.executable, "-m", "retraction", "retract", "<stall@evil.example>",
             "--recipients-file", str(listing), "--json"],
            cwd=str(cli.dir), env=cli.env())
        interrupted = False
        try:
            deadline = time.monotonic() + 30
            while not held() and time.monotonic() < deadline:
                time.sleep(0.05)  # the run is under way: Graph holds its first operations
            assert held()
            proc.send_signal(signal.SIGINT)
            interrupted = True
        finally:
            if not interrupted:  # the assertion failed: stop the child
                proc.kill()
            out, err = proc.finish(timeout=30)
    assert proc.returncode == 130, err
    result = json.loads(out)
    assert result["exit_code"] == 130 and result["error"] == "interrupted"
    assert "interrupted after" in err
    with cli.ledger() as ledger:
        assert ledger.run(result["run_id"])["state"] == "failed"
