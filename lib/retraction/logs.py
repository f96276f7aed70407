"""The pack's logging switch and the filter that keeps secrets out of log output.

`configure(level, stream)` is what `python -m retraction --debug` and the actions (the pack
config's `log_level`) call: one handler on the root logger, at `level` for the pack's own
loggers (`retraction.*`) and the client libraries' (msal, urllib3, requests, google-auth,
googleapiclient, httplib2); everything else (SQLAlchemy, asyncio, ...) stays at WARNING.

Every record that reaches that handler goes through `SecretFilter` first: the configured
secrets (`remember(settings)`: client secret, certificate and service-account key lines,
Cloudflare token, ledger password) and anything shaped like a credential (a JWT, a bearer
token, a Google access token, a PEM body, `assertion=`/`client_secret=` form fields, the
password of a URL) are replaced by `[redacted]`, in the message, its arguments and a
traceback. The filter works on text only: the log line stays, minus the secret.
"""
from __future__ import annotations

import logging
import re
import sys
import threading
from typing import Any, Iterable, List, Optional, TextIO

REDACTED = "[redacted]"
PACK_LOGGERS = ("retraction",)
# The client libraries whose DEBUG logging is worth seeing when a provider misbehaves.
CLIENT_LOGGERS = ("msal", "urllib3", "requests", "google", "google.auth",
                  "google_auth_httplib2", "googleapiclient", "httplib2")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_PATTERNS = [
    # A JWT: a signed assertion (Google, Entra certificate) or an Entra access token.
    re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),
    # Google OAuth access tokens (`ya29.` and the sandbox's `ya29.sandbox.`).
    re.compile(r"ya29\.[A-Za-z0-9._~+/=-]+"),
    # A PEM block, whole or cut short.
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----"
               r"|$)"),
]
# `Authorization: Bearer x`, `"Bearer x"`, form and JSON fields that carry a credential: the
# name is kept, the value goes.
_NAMED = re.compile(
    r"((?:bearer)\s+|(?:assertion|client_assertion|client_secret|access_token|"
    r"refresh_token|id_token|api_token|password|private_key|x-auth-key)"
    r"(?:['\"]?\s*[:=]\s*['\"]?))([^\s'\",&;}]+)", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(//[^/:@\s]*:)[^@/\s]*@")
_MIN_SECRET = 6  # shorter configured values would redact ordinary words


def _named(match: "re.Match[str]") -> str:
    if not match.group(2).strip("*"):  # already masked (msal writes "********")
        return match.group(0)
    return match.group(1) + REDACTED


class SecretFilter(logging.Filter):
    """Redacts secrets from every record that passes (never drops one)."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._secrets: List[str] = []

    def add(self, values: Iterable[str]) -> None:
        with self._lock:
            found = set(self._secrets)
            for value in values:
                value = (value or "").strip()
                if len(value) >= _MIN_SECRET:
                    found.add(value)
            # longest first: a key line is not left half-redacted by a shorter secret
            self._secrets = sorted(found, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        for pattern in _PATTERNS:
            text = pattern.sub(REDACTED, text)
        text = _NAMED.sub(_named, text)
        return _URL_PASSWORD.sub(r"\1%s@" % REDACTED, text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format: leave it to logging to report
            return True
        clean = self.redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        # google-auth puts request and response bodies in extras (`httpRequest`): a
        # structured formatter would print them; drop them (the message stays).
        for extra in ("httpRequest", "httpResponse"):
            if extra in record.__dict__:
                record.__dict__[extra] = REDACTED
        return True


SECRETS = SecretFilter()


def secrets_of(settings: Any) -> List[str]:
    """Every configured secret value of a Settings, key files split into their lines."""
    import json

    values: List[str] = []
    microsoft = getattr(settings, "microsoft", None)
    if microsoft is not None:
        values.append(microsoft.client_secret)
        values.extend(_pem_lines(microsoft.certificate_private_key))
    google = getattr(settings, "google", None)
    if google is not None and google.service_account_json:
        try:
            info = json.loads(google.service_account_json)
        except ValueError:
            info = {}
        key = info.get("private_key") if isinstance(info, dict) else None
        values.extend(_pem_lines(key if isinstance(key, str) else ""))
        values.extend(_pem_lines(google.service_account_json.replace("\\n", "\n")))
    cloudflare = getattr(settings, "cloudflare", None)
    if cloudflare is not None:
        values.append(cloudflare.api_token)
    url = getattr(settings, "ledger_url", None) or ""
    password = _url_password(url)
    if password:
        values.append(password)
        from urllib.parse import quote, unquote

        values.extend({unquote(password), quote(unquote(password), safe="")})
    return [v for v in values if v]


def _pem_lines(pem: str) -> List[str]:
    return [line.strip() for line in (pem or "").splitlines()
            if line.strip() and not line.strip().startswith("-----")]


def _url_password(url: str) -> str:
    match = re.match(r"^[A-Za-z0-9+.-]+://[^/@:]*:([^@/]*)@", url)
    return match.group(1) if match else ""


def remember(settings: Any) -> None:
    """Teach the filter this config's secrets (no harm in calling it again)."""
    SECRETS.add(secrets_of(settings))


def level_of(value: Any, key: str = "log_level") -> Optional[int]:
    """A logging level from a config value (a name, any case); None when unset. Raises
    ConfigError naming `key` for anything else."""
    if value is None or value == "":
        return None
    name = str(value).strip().upper()
    if name not in LEVELS:
        from retraction.config import ConfigError

        raise ConfigError(key, "must be one of %s" % ", ".join(LEVELS))
    return getattr(logging, name)


_HANDLER: Optional[logging.Handler] = None


def configure(level: int, stream: Optional[TextIO] = None) -> logging.Handler:
    """Log the pack's and the client libraries' records at `level` and above to `stream`
    (stderr), through the secret filter. Calling it again replaces the handler."""
    global _HANDLER
    root = logging.getLogger()
    if _HANDLER is not None:
        root.removeHandler(_HANDLER)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(SECRETS)
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.WARNING:
        root.setLevel(logging.WARNING)
    for name in PACK_LOGGERS + CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(level)
    # google-auth stops its loggers from propagating unless the `google` logger has been
    # configured (a level or a handler) before its first request: it has, just above.
    logging.getLogger("google").propagate = True
    _HANDLER = handler
    return handler
