"""DEBUG logging on every provider path, and not one secret in it.

The switch: `python -m retraction --debug` and the pack config's `log_level` (actions) log the
pack's and the client libraries' loggers (msal, urllib3, requests, google-auth,
googleapiclient) at DEBUG (`retraction.logs`). Each test runs a path against the sandbox with
ALL log output captured (the root logger at DEBUG with a handler that also keeps every
record's extras, the CLI's stderr, an execution's stderr) and asserts that none of these
appears: the client secret, any line of a private key (certificate, service account), a
signed assertion the sandbox received (Google JWT bearer, Entra client_assertion), an access
token the sandbox issued, the Cloudflare token, the ledger's database password. Any JWT at
all (`eyJ...`) counts too: every credential the sandbox deals in is one, except the Google
tokens (`ya29.`), which are checked by pattern as well.
"""
import io
import json
import logging
import os
import re
import sys

import pytest

from retraction import logs
from retraction.config import load_settings
from retraction.model import Destination, RetractionRequest
from retraction.providers.base import Target
from retraction.providers.gmail import GmailProvider
from retraction.providers.graph import GraphProvider
from retraction.verdicts.poll import verdict_poll

from ledger_db import POSTGRES_ENV
from st2_stack import folders_of
from test_cli import PACK_ROOT, folders, run_captured

pytest_plugins = ["sandbox.pytest_plugin", "st2_stack"]

MID = "<abc@evil.example>"
PASSWORD = "pg-S3cret-pw.7"  # the ledger password under test; trust auth ignores it
CREDENTIAL_SHAPES = [re.compile(r"eyJ[A-Za-z0-9_-]{8,}"), re.compile(r"ya29\.[A-Za-z0-9._-]{8,}")]


# -- what the sandbox saw and issued --------------------------------------------------------
@pytest.fixture
def issued(sandbox, monkeypatch):
    """Every access token the sandbox issues and every assertion it receives from now on."""
    import jwt

    from sandbox import entra, google_oauth

    seen = {"tokens": [], "assertions": []}
    google_issue = google_oauth.GoogleState.issue
    entra_issue = entra.TokenIssuer.issue
    exchange = google_oauth.exchange
    header = jwt.get_unverified_header

    def google_token(self, *args, **kwargs):
        grant = google_issue(self, *args, **kwargs)
        seen["tokens"].append(grant.token)
        return grant

    def entra_token(self, *args, **kwargs):
        token, lifetime = entra_issue(self, *args, **kwargs)
        seen["tokens"].append(token)
        return token, lifetime

    def google_exchange(state, tenant, form):
        seen["assertions"].append(form.get("assertion", ""))
        return exchange(state, tenant, form)

    def unverified_header(token, *args, **kwargs):  # Entra reads each client_assertion's
        seen["assertions"].append(token)
        return header(token, *args, **kwargs)

    monkeypatch.setattr(google_oauth.GoogleState, "issue", google_token)
    monkeypatch.setattr(entra.TokenIssuer, "issue", entra_token)
    monkeypatch.setattr(google_oauth, "exchange", google_exchange)
    monkeypatch.setattr(entra.jwt, "get_unverified_header", unverified_header)
    return seen


def secrets_of(config, cert_key=""):
    """(what, value) for every configured secret of a pack config."""
    found = [("client secret", config["microsoft"]["client_secret"])]
    key = json.loads(config["google"]["service_account_json"])["private_key"]
    for pem, what in ((key, "service account key"), (cert_key, "certificate key")):
        found += [(what, line) for line in pem.splitlines() if line and "-----" not in line]
    found.append(("Cloudflare token", (config.get("cloudflare") or {}).get("api_token", "")))
    return [(what, value) for what, value in found if value]


def assert_clean(text, secrets, seen=None):
    assert text.strip(), "nothing was logged: the test would prove nothing"
    for what, value in secrets:
        assert value not in text, "%s in the log output" % what
    if seen is not None:
        for value in seen["tokens"]:
            assert value[:40] not in text, "an issued access token in the log output"
        for value in seen["assertions"]:
            for part in value.split(".")[1:]:  # claims and signature
                if len(part) >= 16:
                    assert part not in text, "a signed assertion in the log output"
    for shape in CREDENTIAL_SHAPES:
        match = shape.search(text)
        assert match is None, "credential-shaped text in the log output: %s..." % (
            match.group(0)[:12])


class Everything(logging.Handler):
    """Every record of every logger, formatted, with its extras and traceback."""

    STANDARD = set(vars(logging.LogRecord("n", 10, "p", 1, "m", (), None))) | {"message"}

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []
        self.names = set()
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record):
        self.names.add(record.name)
        line = self.format(record)
        extras = {k: v for k, v in vars(record).items() if k not in self.STANDARD}
        if extras:
            line += " " + repr(extras)
        self.lines.append(line)

    @property
    def text(self):
        return "\n".join(self.lines)


@pytest.fixture
def captured():
    """The root logger at DEBUG and the pack's switch on (its handler writes to a buffer
    that is checked too); restored afterwards."""
    root = logging.getLogger()
    names = logs.PACK_LOGGERS + logs.CLIENT_LOGGERS
    saved = (root.level, {n: (logging.getLogger(n).level, logging.getLogger(n).propagate)
                          for n in names})
    handler = Everything()
    root.addHandler(handler)
    stream = io.StringIO()
    pack_handler = logs.configure(logging.DEBUG, stream)
    root.setLevel(logging.DEBUG)
    try:
        yield handler, stream
    finally:
        root.removeHandler(handler)
        root.removeHandler(pack_handler)
        root.setLevel(saved[0])
        for name, (level, propagate) in saved[1].items():
            logging.getLogger(name).setLevel(level)
            logging.getLogger(name).propagate = propagate


def request(recipients, destination="junk"):
    return RetractionRequest(message_id=MID, recipients=tuple(recipients),
                             destination=Destination(destination))


def run(provider, recipients, destination="junk"):
    try:
        return {o.recipient: o.status for o in provider.retract(
            request(recipients, destination), [Target(r, None) for r in recipients])}
    finally:
        provider.close()


def certificate_config(sandbox):
    config = sandbox.pack_config()
    app = sandbox.credentials()["microsoft"][0]
    config["microsoft"].update(client_secret="",
                               certificate_private_key=app["certificate_private_key"],
                               certificate_thumbprint=app["certificate_thumbprint"])
    return config, app["certificate_private_key"]


# -- the filter itself ------------------------------------------------------------------------
def test_the_filter_redacts_credentials_and_keeps_the_line():
    filt = logs.SecretFilter()
    filt.add(["configured-secret-value", "abc"])  # too short to redact: ordinary words stay
    record = logging.LogRecord(
        "x", logging.DEBUG, "p", 1, "token %s for %s via %s; body assertion=%s&x=1; %s; %s",
        ("eyJhbGciOi.eyJzdWIiOiJh.c2lnbmF0dXJl", "abc", "postgresql://u:pw-1@db/x",
         "eyJ0eXAi.eyJpc3Mi.sig", "Authorization: Bearer opaque-token-123",
         "configured-secret-value"), None)
    assert filt.filter(record) is True
    text = record.getMessage()
    assert text == ("token [redacted] for abc via postgresql://u:[redacted]@db/x; body "
                    "assertion=[redacted]&x=1; Authorization: Bearer [redacted]; [redacted]")
    pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----"
    record = logging.LogRecord("x", logging.ERROR, "p", 1, "key: %s", (pem,), None)
    filt.filter(record)
    assert "MIIEvQ" not in record.getMessage() and record.getMessage() == "key: [redacted]"


def test_traceback_and_extras_are_redacted():
    filt = logs.SecretFilter()
    filt.add(["hunter2-secret"])
    try:
        raise RuntimeError("refused hunter2-secret")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, "p", 1, "failed", (), sys.exc_info())
    record.httpRequest = {"body": {"assertion": "eyJhbGciOi.eyJzdWIiOiJh.c2ln"}}
    filt.filter(record)
    assert "hunter2" not in record.exc_text and "RuntimeError" in record.exc_text
    assert record.httpRequest == logs.REDACTED


@pytest.mark.parametrize("value, level", [("DEBUG", logging.DEBUG), ("info", logging.INFO),
                                          (None, None), ("", None)])
def test_log_level_values(value, level):
    assert logs.level_of(value) == level


def test_a_bad_log_level_names_the_key():
    from retraction.config import ConfigError

    with pytest.raises(ConfigError) as err:
        logs.level_of("LOUD")
    assert err.value.key == "log_level"


# -- every provider path, in process, root logger at DEBUG -------------------------------------
def test_graph_with_client_secret(sandbox, issued, captured):
    handler, stream = captured
    config = sandbox.pack_config()
    settings = load_settings(config)
    logs.remember(settings)
    assert run(GraphProvider(settings.microsoft, settings.limits),
               ["alice@corp.example", "bob@corp.example"]) == {
        "alice@corp.example": "retracted", "bob@corp.example": "retracted"}
    assert issued["tokens"], "the sandbox issued no token: nothing was exercised"
    assert {"msal.token_cache", "urllib3.connectionpool"} <= handler.names
    assert_clean(handler.text, secrets_of(config), issued)
    assert_clean(stream.getvalue(), secrets_of(config), issued)


def test_graph_with_certificate(sandbox, issued, captured):
    handler, stream = captured
    config, cert_key = certificate_config(sandbox)
    settings = load_settings(config)
    logs.remember(settings)
    assert run(GraphProvider(settings.microsoft, settings.limits), ["alice@corp.example"]) == {
        "alice@corp.example": "retracted"}
    assert issued["assertions"] and issued["tokens"]
    assert "msal.oauth2cli.assertion" in handler.names
    for text in (handler.text, stream.getvalue()):
        assert_clean(text, secrets_of(config, cert_key), issued)


def test_gmail_tokens_and_batches(sandbox, issued, captured):
    handler, stream = captured
    config = sandbox.pack_config()
    settings = load_settings(config)
    logs.remember(settings)
    out = run(GmailProvider(settings.google, settings.limits),
              ["carol@corp-mail.example", "dave@corp-mail.example", "gone@corp-mail.example"],
              "trash")
    assert out["carol@corp-mail.example"] == "retracted"
    assert len(issued["assertions"]) >= 2 and len(issued["tokens"]) >= 2
    # google-auth's own request logging ran (its body is the signed assertion)
    assert "google.auth.transport.urllib3" in handler.names
    assert any(name.startswith("googleapiclient") for name in handler.names)
    for text in (handler.text, stream.getvalue()):
        assert_clean(text, secrets_of(config), issued)


def test_cloudflare_verdict_polling(sandbox, captured):
    handler, stream = captured
    config = sandbox.pack_config()
    token = config["cloudflare"]["api_token"]
    assert token
    logs.remember(load_settings(config))
    sandbox.add_verdict(message_id="<cf1@evil.example>", to=["bob@corp.example"],
                        final_disposition="MALICIOUS", scanned_at="-5m")

    from st2tests.mocks.datastore import MockDatastoreService

    events = []
    store = MockDatastoreService(logger=logging.getLogger("st2tests"),
                                 pack_name="email_retraction", class_name="VerdictSensor")
    poll = verdict_poll(config, store, lambda *a, **k: events.append(a),
                        log=logging.getLogger("retraction.sensor.verdicts"))
    poll.poll()
    assert events, "no verdict was dispatched: the poll did not run"
    assert "urllib3.connectionpool" in handler.names
    for text in (handler.text, stream.getvalue()):
        assert_clean(text, secrets_of(config))
        assert token not in text


def _other_key():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.mark.parametrize("refused", ["client_secret", "certificate", "service_account",
                                     "cloudflare_token"])
def test_refused_credentials(sandbox, issued, captured, refused):
    """The error paths: a credential the sandbox refuses is in no log line, traceback or
    exception message either."""
    import traceback

    handler, stream = captured
    config, cert_key = sandbox.pack_config(), ""
    if refused == "client_secret":
        config["microsoft"]["client_secret"] = "wrong-Secret~value.12345"
    elif refused == "certificate":
        config, _ = certificate_config(sandbox)
        cert_key = config["microsoft"]["certificate_private_key"] = _other_key()
    elif refused == "service_account":
        info = json.loads(config["google"]["service_account_json"])
        cert_key = info["private_key"] = _other_key()
        config["google"]["service_account_json"] = json.dumps(info)
    else:
        config["cloudflare"]["api_token"] = "wrong-cloudflare-token-0123456789"
    settings = load_settings(config)
    logs.remember(settings)
    errors = []
    try:
        if refused == "cloudflare_token":
            from retraction.verdicts.cloudflare import CloudflareClient

            creds = config["cloudflare"]
            client = CloudflareClient(creds["account_id"], creds["api_token"],
                                      sandbox.urls["cloudflare_url"])
            list(client.investigate(datetime_ago(1), datetime_ago(0)))
        elif refused == "service_account":
            run(GmailProvider(settings.google, settings.limits), ["carol@corp-mail.example"],
                "trash")
        else:
            run(GraphProvider(settings.microsoft, settings.limits), ["alice@corp.example"])
    except Exception as exc:  # refused: its message and traceback are output as well
        errors.append("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    secrets = secrets_of(config, cert_key)
    assert_clean("\n".join([handler.text] + errors), secrets, issued)
    assert_clean(stream.getvalue() or "-", secrets, issued)


def datetime_ago(hours):
    from datetime import datetime, timedelta, timezone

    return datetime.now(timezone.utc) - timedelta(hours=hours)


# -- the CLI: --debug on stderr -----------------------------------------------------------------
class DebugCli(object):
    def __init__(self, sandbox, tmp_path, config):
        import yaml

        self.dir = tmp_path
        self.config_file = tmp_path / "email_retraction.yaml"
        with open(str(self.config_file), "w") as handle:
            yaml.safe_dump(config, handle)

    def __call__(self, *args):
        env = {k: v for k, v in os.environ.items()
               if k not in ("EMAIL_RETRACTION_CONFIG", "PYTHONPATH")}
        env["PYTHONPATH"] = os.path.join(PACK_ROOT, "lib")
        return run_captured([sys.executable, "-m", "retraction"] + list(args) + [
            "--config", str(self.config_file), "--debug"], cwd=str(self.dir), env=env,
            timeout=120)


def assert_debug_lines(stderr, *loggers):
    for name in loggers:
        assert re.search(r" DEBUG %s[.:]" % re.escape(name), stderr), (
            "no DEBUG line of %s:\n%s" % (name, stderr[-3000:]))


def test_cli_debug_both_providers(sandbox, issued, tmp_path):
    config = sandbox.pack_config()
    config["ledger_url"] = "sqlite:///%s" % (tmp_path / "ledger.db")
    proc = DebugCli(sandbox, tmp_path, config)(
        "retract", MID, "alice@corp.example", "carol@corp-mail.example", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert folders(sandbox, "alice@corp.example") == ["junk"]
    assert_debug_lines(proc.stderr, "msal", "urllib3", "googleapiclient", "google.auth")
    assert_clean(proc.stderr + proc.stdout, secrets_of(config), issued)


def test_cli_debug_certificate(sandbox, issued, tmp_path):
    config, cert_key = certificate_config(sandbox)
    config["ledger_url"] = "sqlite:///%s" % (tmp_path / "ledger.db")
    proc = DebugCli(sandbox, tmp_path, config)("retract", MID, "bob@corp.example", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert issued["assertions"]
    assert_debug_lines(proc.stderr, "msal", "urllib3")
    assert_clean(proc.stderr + proc.stdout, secrets_of(config, cert_key), issued)


def test_cli_without_debug_stays_quiet(sandbox, tmp_path):
    config = sandbox.pack_config()
    config["ledger_url"] = "sqlite:///%s" % (tmp_path / "ledger.db")
    DebugCli(sandbox, tmp_path, config)  # writes the file
    env = {k: v for k, v in os.environ.items() if k not in ("EMAIL_RETRACTION_CONFIG",)}
    env["PYTHONPATH"] = os.path.join(PACK_ROOT, "lib")
    proc = run_captured([sys.executable, "-m", "retraction", "retract", MID,
                         "alice@corp.example", "--config", str(tmp_path / "email_retraction.yaml")],
                        cwd=str(tmp_path), env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


# -- the ledger on PostgreSQL, a password in its URL ----------------------------------------------
def _postgres_url_with_password(url):
    from sqlalchemy.engine import make_url

    return make_url(url).set(password=PASSWORD).render_as_string(hide_password=False)


@pytest.mark.skipif(not os.environ.get(POSTGRES_ENV), reason="set %s" % POSTGRES_ENV)
def test_cli_debug_postgres_ledger_password(sandbox, tmp_path):
    from ledger_db import postgres_schema_url

    with postgres_schema_url() as url:
        config = sandbox.pack_config()
        config["ledger_url"] = _postgres_url_with_password(url)
        proc = DebugCli(sandbox, tmp_path, config)("retract", MID, "alice@corp.example",
                                                   "--json")
    secrets = secrets_of(config) + [("database password", PASSWORD)]
    if proc.returncode == 0:
        assert json.loads(proc.stdout)["ledger"]["recorded"] is True
    else:  # a server that checks passwords refused it: the error path, checked below too
        assert proc.returncode == 3, proc.stderr[-3000:]
    assert_clean(proc.stderr + proc.stdout, secrets)


@pytest.mark.skipif(not os.environ.get(POSTGRES_ENV), reason="set %s" % POSTGRES_ENV)
def test_cli_debug_postgres_unreachable_masks_the_password(sandbox, tmp_path):
    from sqlalchemy.engine import make_url

    url = make_url(_postgres_url_with_password(os.environ[POSTGRES_ENV])).set(
        port=1, database="nowhere").render_as_string(hide_password=False)
    assert PASSWORD in url
    config = sandbox.pack_config()
    config["ledger_url"] = url
    proc = DebugCli(sandbox, tmp_path, config)("retract", MID, "alice@corp.example", "--json")
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["field"] == "ledger_url"
    assert_clean(proc.stderr + proc.stdout,
                 secrets_of(config) + [("database password", PASSWORD)])
    assert folders(sandbox, "alice@corp.example") == ["inbox"]  # nothing moved unrecorded


# -- StackStorm actions: the pack config's log_level ---------------------------------------------
RETRACT = "email_retraction.retract"


def _retract(st2):
    from st2common.constants import action as action_constants

    execution = st2.run(RETRACT, {"message_id": MID, "destination": "junk",
                                  "recipients": ["alice@corp.example",
                                                 "carol@corp-mail.example"]})
    return execution, action_constants


def test_action_log_level_debug(st2, st2_tenant, st2_config):
    st2_config["log_level"] = "DEBUG"
    st2.reconfigure(st2_config)
    execution, constants = _retract(st2)
    assert execution.status == constants.LIVEACTION_STATUS_SUCCEEDED, execution.result
    assert st2.result(execution)["counts"]["by_status"] == {"retracted": 2}
    stderr = execution.result["stderr"]
    assert_debug_lines(stderr, "msal", "urllib3", "googleapiclient", "google.auth")
    assert_clean(stderr + json.dumps(execution.result, default=str), secrets_of(st2_config))


def test_action_without_log_level_is_as_before(st2, st2_tenant):
    execution, constants = _retract(st2)
    assert execution.status == constants.LIVEACTION_STATUS_SUCCEEDED, execution.result
    assert " DEBUG " not in execution.result["stderr"]


def test_action_bad_log_level_is_refused_naming_the_key(st2, st2_tenant, st2_config):
    st2_config["log_level"] = "LOUD"
    try:
        st2.reconfigure(st2_config)
    except Exception as exc:  # StackStorm's registrar, when the schema enumerates the levels
        assert "log_level" in str(exc)
        return
    execution, constants = _retract(st2)  # else the action's own check refuses it
    assert execution.status == constants.LIVEACTION_STATUS_FAILED
    assert "log_level" in json.dumps(execution.result)
    assert folders_of(st2_tenant, MID, ["alice@corp.example"]) == {
        "alice@corp.example": ["inbox"]}
