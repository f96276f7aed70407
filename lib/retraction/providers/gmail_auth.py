"""Google service-account tokens for domain-wide delegation: one Credentials per subject.

Gmail has no app-only token: every mailbox (subject) needs its own access token from the OAuth
token endpoint, so a run over N mailboxes makes N token requests. They are fetched on a thread
pool ahead of the batches that need them and cached per (subject, scopes) until they expire.
The pool's threads share one urllib3 connection pool and one TLS context (see `token_http`).

Token errors are classified here (`TokenFailure.kind`):
- `invalid_grant` "Invalid email or User ID": no such user -> not_a_mailbox.
- `unauthorized_client` (and the older `access_denied`): the same answer for "delegation or
  these scopes not granted" and "the subject is a group, not a user". Delegation is granted
  per service account for the whole domain, so the run (gmail_run) decides by proof: if the
  token endpoint issued a token for the same scopes to another subject during the run (its
  warm-up's prefetch included), or issues a fresh one to `google.directory_admin` (a known
  user, asked once), the refused subject is not a mailbox (not_a_mailbox); if the admin is
  refused too, or nothing proved delegation by the end of the run, it is not_authorized. No
  Directory lookup per address: when delegation is missing every subject is refused, and N
  lookups would prove nothing.
- any other `invalid_grant` (bad JWT signature, unknown or deleted key, clock skew) and
  `invalid_client` (unknown service account): the pack's credentials are rejected for every
  subject -> ProviderUnavailable.
- 5xx, 429, dropped connections: retried here with backoff, then provider_error.
"""
from __future__ import annotations

import collections
import logging
import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Dict, Optional, Tuple

from retraction.config import ConfigError
from retraction.model import Destination, Reason
from retraction.providers.tls import verifying_context

LOG = logging.getLogger(__name__)

SCOPE_MODIFY = "https://www.googleapis.com/auth/gmail.modify"
SCOPE_FULL = "https://mail.google.com/"  # only `messages.delete` needs it
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # a key file's own default
SCOPE_GROUP_MEMBERS = "https://www.googleapis.com/auth/admin.directory.group.member.readonly"

# kinds of TokenFailure
NOT_A_MAILBOX = Reason.NOT_A_MAILBOX.value
UNAUTHORIZED_CLIENT = "unauthorized_client"  # group or ungranted scopes: decided by the caller
CREDENTIALS = "credentials"  # the service account itself is refused: ProviderUnavailable
PROVIDER_ERROR = Reason.PROVIDER_ERROR.value

CACHE_SIZE = 20000  # subjects kept between runs (a Credentials object is a few hundred bytes)

Scopes = Tuple[str, ...]


def scopes_for(destination: Destination) -> Scopes:
    """Least privilege: the full-mail scope only when the run may permanently delete."""
    if destination == Destination.HARD_DELETE:
        return (SCOPE_MODIFY, SCOPE_FULL)
    return (SCOPE_MODIFY,)


def backoff_delay(tries: int, retry_after: Optional[float] = None,
                  base: float = 0.5, cap: float = 20.0) -> float:
    """Seconds before try number `tries + 1`: the server's Retry-After when given, else
    exponential backoff with jitter (half fixed, half random: spreads a throttled crowd
    without ever retrying immediately)."""
    if retry_after is not None and retry_after >= 0:
        return retry_after + random.uniform(0, 0.1 + 0.1 * retry_after)
    delay = min(cap, base * (2 ** max(0, tries - 1)))
    return delay / 2 + random.uniform(0, delay / 2)


def load_signer(info: Dict[str, Any]) -> Any:
    """A google-auth RSASigner for the service account's `private_key`, parsed once.

    cryptography's RSA consistency check costs 35-68 ms of CPU per load (more than the whole rest of
    a one-copy Gmail execution's CPU). The key comes from the operator's own pack config, not
    from an untrusted peer, so the check is skipped where cryptography allows it (>= 39); a
    key that does not match the service account is refused by the token endpoint anyway."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
    from google.auth import crypt

    field = "google.service_account_json"
    pem = str(info.get("private_key") or "").encode("utf-8")
    try:
        try:
            key = serialization.load_pem_private_key(
                pem, None, unsafe_skip_rsa_key_validation=True)
        except TypeError:  # cryptography < 39 has no such keyword
            key = serialization.load_pem_private_key(pem, None)
    except (ValueError, TypeError):  # the message never carries the key
        raise ConfigError(field, "private_key is not an unencrypted PEM private key") from None
    except Exception as exc:  # e.g. UnsupportedAlgorithm
        raise ConfigError(field, "private_key cannot be loaded (%s)"
                          % type(exc).__name__) from None
    if not isinstance(key, RSAPrivateKey):
        raise ConfigError(field, "private_key must be an RSA key")
    return crypt.RSASigner(key, key_id=info.get("private_key_id"))


class _NoAssertionLogs(logging.Filter):
    """google-auth's urllib3 transport logs request bodies at DEBUG (when the `google` logger
    is configured); a token request's body is the signed assertion, good for an hour."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "httpRequest" not in record.__dict__


_NO_ASSERTION_LOGS = _NoAssertionLogs()


def token_http(token_uri: str, template: Any, pool_size: int) -> Any:
    """google-auth's urllib3 transport for the token endpoint, shared by the pool's threads.

    `template` is one of the provider's httplib2.Http objects: the same CA file (or
    httplib2's bundle) and timeout as the batches. Measured per token against httplib2 (one
    Http per thread): ~0.3 ms more CPU per request on plain HTTP, but one TLS context per
    process instead of one per thread (~40 ms each with certifi's bundle). TCP_NODELAY is
    urllib3's default; environment proxies are ignored, as httplib2 cannot use them here
    either (no PySocks). A dropped kept-alive connection is retried once at once, as httplib2
    does; everything else is the broker's to retry."""
    import httplib2
    import urllib3
    from google.auth.transport.urllib3 import Request

    logging.getLogger("google.auth.transport.urllib3").addFilter(_NO_ASSERTION_LOGS)
    tls = {}
    if token_uri.lower().startswith("https:"):
        ca_file = getattr(template, "ca_certs", None) or httplib2.CA_CERTS
        tls["ssl_context"] = verifying_context(ca_file)
    timeout = getattr(template, "timeout", None)
    pool = urllib3.PoolManager(
        num_pools=2, maxsize=max(1, pool_size), timeout=urllib3.Timeout(timeout),
        retries=urllib3.Retry(total=1, allowed_methods=None, redirect=False), **tls)
    return Request(pool)


class TokenFailure(Exception):
    """Why no token could be had for one subject. Never carries the assertion or a key."""

    def __init__(self, kind: str, code: str, message: str, attempts: int = 1):
        super().__init__("%s: %s" % (code, message))
        self.kind = kind
        self.code = code
        self.message = message
        self.attempts = attempts


def _error_fields(exc: Exception) -> Tuple[str, str]:
    """(error, error_description) of a RefreshError: google-auth puts the decoded token
    endpoint answer in args[1] and "error: description" in args[0]."""
    data = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
    code = str(data.get("error") or "")
    desc = str(data.get("error_description") or "")
    if not code:
        text = str(exc.args[0]) if exc.args else str(exc)
        code, _, rest = text.partition(": ")
        if not rest or " " in code:
            code, rest = "token_error", text
        desc = desc or rest
    return code, desc[:500]


def classify_refresh_error(exc: Exception) -> TokenFailure:
    """A RefreshError as a TokenFailure (see the module docstring for the rules)."""
    code, desc = _error_fields(exc)
    if getattr(exc, "retryable", False):
        return TokenFailure(PROVIDER_ERROR, code, desc)
    if code == "invalid_grant" and "email or user id" in desc.lower():
        return TokenFailure(NOT_A_MAILBOX, code, desc)
    if code in ("unauthorized_client", "access_denied"):
        return TokenFailure(UNAUTHORIZED_CLIENT, code, desc)
    if code in ("invalid_grant", "invalid_client"):
        return TokenFailure(CREDENTIALS, code, desc)
    return TokenFailure(PROVIDER_ERROR, code, desc)


def _is_transient(failure: TokenFailure, exc: Exception) -> bool:
    from google.auth import exceptions

    if isinstance(exc, exceptions.RefreshError):
        return bool(getattr(exc, "retryable", False))
    return True  # TransportError, socket errors, timeouts


class TokenBroker:
    """Fetches and caches one delegated Credentials per (subject, scopes), concurrently.

    `get()` returns a Future of a valid Credentials (or raising TokenFailure); concurrent asks
    for the same subject share one fetch. Thread-safe. `http_factory` gives the provider's
    httplib2.Http: the token pool takes its CA file and timeout (see `token_http`)."""

    def __init__(self, info: Dict[str, Any], token_uri: str,
                 http_factory: Callable[[], Any], workers: int,
                 retry_budget_s: float, max_attempts: int):
        # One signer for every subject: each subject's Credentials shares the parsed key.
        self._signer = load_signer(info)
        self.service_account_email = str(info["client_email"])
        self._token_uri = token_uri or str(info.get("token_uri") or GOOGLE_TOKEN_URI)
        self._project_id = info.get("project_id")
        self._request = token_http(self._token_uri, http_factory(), workers)
        self._budget = retry_budget_s
        self._max_attempts = max_attempts
        self._lock = threading.RLock()
        self._cache = collections.OrderedDict()  # (subject, scopes) -> Credentials
        self._inflight = {}  # (subject, scopes) -> Future
        self._prefetched: Dict[Tuple[str, Scopes], Future] = {}  # see prefetch()
        self._granted_at: Dict[Scopes, float] = {}  # last token issued for these scopes
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers),
                                        thread_name_prefix="gmail-token")
        self._closed = threading.Event()

    def granted(self, scopes: Scopes, since: float) -> bool:
        """True if the token endpoint issued a token for these scopes to some subject since
        `since` (time.monotonic()): delegation of these scopes works. Cached tokens are no
        proof: they may predate a revocation."""
        return self._granted_at.get(scopes, float("-inf")) >= since

    def get(self, subject: str, scopes: Scopes, fresh: bool = False) -> "Future":
        """A Future of valid Credentials for `subject`; `fresh` skips the cache."""
        key = (subject.lower(), scopes)
        with self._lock:
            prefetched = None if fresh else self._prefetched.pop(key, None)
            if prefetched is not None and not prefetched.cancelled():
                if not prefetched.done() or prefetched.exception() is not None:
                    return prefetched  # a refusal is not cached: no second request for it
                self._granted_at[scopes] = time.monotonic()  # issued for this very run
            creds = self._cache.get(key)
            if creds is not None and creds.valid and not fresh:
                self._cache.move_to_end(key)
                done: Future = Future()
                done.set_result(creds)
                return done
            future = self._inflight.get(key)
            if future is None:
                future = self._pool.submit(self._fetch, key)
                self._inflight[key] = future
            return future

    def prefetch(self, subject: str, scopes: Scopes) -> None:
        """Start fetching the token a run is about to ask for first (App.warm). That run's
        first get() of it takes this fetch's answer as its own: a refusal (never cached) is
        not asked again, and a token counts as issued during the run (granted()), so the
        run makes the same token requests as without the prefetch."""
        key = (subject.lower(), scopes)
        with self._lock:  # re-entered by get()
            creds = self._cache.get(key)
            if creds is None or not creds.valid:  # a cached token is no proof (see granted)
                self._prefetched[key] = self.get(subject, scopes)

    def invalidate(self, subject: str, scopes: Scopes, creds: Any) -> None:
        """Forget a token the API refused, so the next get() asks the token endpoint again."""
        key = (subject.lower(), scopes)
        with self._lock:
            if self._cache.get(key) is creds:
                del self._cache[key]

    def _fetch(self, key: Tuple[str, Scopes]) -> Any:
        try:
            creds = self._refresh(key)
        finally:
            with self._lock:
                self._inflight.pop(key, None)
        with self._lock:
            self._cache[key] = creds
            self._cache.move_to_end(key)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
            self._granted_at[key[1]] = time.monotonic()
        return creds

    def _refresh(self, key: Tuple[str, Scopes]) -> Any:
        from google.auth import exceptions
        from google.oauth2 import service_account

        subject, scopes = key
        creds = service_account.Credentials(
            self._signer, self.service_account_email, self._token_uri, scopes=list(scopes),
            subject=subject, project_id=self._project_id)
        deadline = time.monotonic() + self._budget
        tries = 0
        while True:
            tries += 1
            try:
                creds.refresh(self._request)
                return creds
            except exceptions.RefreshError as exc:
                failure, error = classify_refresh_error(exc), exc
            except Exception as exc:  # TransportError, socket errors, timeouts
                failure = TokenFailure(PROVIDER_ERROR, "transport_error",
                                       "%s: %s" % (type(exc).__name__, str(exc)[:200]))
                error = exc
            failure.attempts = tries
            delay = backoff_delay(tries)
            if (not _is_transient(failure, error) or tries >= self._max_attempts
                    or time.monotonic() + delay > deadline or self._closed.is_set()):
                raise failure
            LOG.info("token for %s: %s, retrying in %.1fs", subject, failure.code, delay)
            self._closed.wait(delay)

    def close(self) -> None:
        # Fetches still queued are never needed; running ones stop retrying and are waited
        # for, so no token request of this provider outlives it (or lands in a later run).
        self._closed.set()
        with self._lock:
            pending = list(self._inflight.values())
        for future in pending:
            future.cancel()
        self._pool.shutdown(wait=True)
        self._request.http.clear()  # closes the token pool's connections
