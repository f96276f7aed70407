"""Entra ID app-only tokens for Graph (msal) and the one HTTP session both share.

msal caches the app token itself and reuses it until shortly before it expires; this module
adds a lock (so concurrent workers fetch one token, not one each), retries of an unreachable
token endpoint, and turns msal's error dicts into `ProviderUnavailable` without any secret.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable, Optional

import requests
from requests.adapters import HTTPAdapter
from requests.utils import DEFAULT_CA_BUNDLE_PATH

from retraction.model import Reason
from retraction.providers.base import ProviderUnavailable
from retraction.providers.graph_wire import backoff
from retraction.providers.tls import shared_context, verifying_context

log = logging.getLogger(__name__)

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
# Errors from a 5xx or dropped token endpoint: worth retrying. Anything msal *returns* as an
# error dict is Entra's verdict on the credentials and is final.
_TRANSIENT = (requests.ConnectionError, requests.Timeout)


def _bundle(verify: Any) -> Optional[str]:
    """The CA file requests verifies against for this `verify`; None when it is not a file."""
    bundle = DEFAULT_CA_BUNDLE_PATH if verify is True else verify
    return bundle if isinstance(bundle, str) and bundle and os.path.isfile(bundle) else None


class _SharedContextAdapter(HTTPAdapter):
    """requests' adapter, except that a connection verified against a CA file gets the
    process's one context for that file instead of a new one with the file loaded again: same
    trust, same TLS settings. Anything else (verify=False, a CA directory, a client
    certificate) and requests before 2.32.2 (no pool-key hook) keep requests' own handling."""

    def build_connection_pool_key_attributes(self, request: Any, verify: Any,
                                             cert: Any = None) -> Any:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert)
        bundle = _bundle(verify)
        if host_params.get("scheme") == "https" and not cert and bundle:
            pool_kwargs.pop("ca_certs", None)
            pool_kwargs["ssl_context"] = verifying_context(bundle)
        return host_params, pool_kwargs

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        bundle = _bundle(verify)
        shared = shared_context(bundle)
        if (shared is not None and not cert and url.lower().startswith("https")
                and getattr(conn, "conn_kw", {}).get("ssl_context") is shared):
            # What requests sets, minus the CA file: it is in the shared context already.
            conn.cert_reqs = "CERT_REQUIRED"
            conn.ca_certs = conn.ca_cert_dir = None
            return
        super().cert_verify(conn, url, verify, cert)


def make_session(ca_file: str, pool_size: int) -> requests.Session:
    """One pooled session for Entra ID and Graph: `pool_size` connections per host so every
    worker keeps its TLS connection alive instead of handshaking per request.

    With `ca_file` set (a private or test CA), `trust_env` is switched off: requests lets
    REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE from the environment override `session.verify` for
    every call that does not pass `verify=` itself (msal never does), so the CA would be
    silently ignored. The cost: proxy variables are ignored too for that session.
    """
    session = requests.Session()
    adapter = _SharedContextAdapter(pool_connections=4, pool_maxsize=max(1, pool_size))
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    if ca_file:
        session.verify = ca_file
        session.trust_env = False
    return session


def scrub(text: Any, *secrets: str) -> str:
    """Text safe to keep: every secret value cut out (defence in depth: Entra's descriptions
    do not echo secrets, a misbehaving proxy might)."""
    out = str(text or "")
    for secret in secrets:
        if secret and len(secret) >= 4:
            out = out.replace(secret, "***")
    return out


class TokenSource:
    """App token for Graph: one msal ConfidentialClientApplication, built on first use (its
    constructor already calls the authority's discovery document)."""

    def __init__(self, settings: Any, session: requests.Session, budget_s: float,
                 max_attempts: int, sleep: Callable[[float], None] = time.sleep):
        self._settings = settings
        self._session = session
        self._budget_s = budget_s
        self._max_attempts = max(1, max_attempts)
        self._sleep = sleep
        self._lock = threading.Lock()
        self._app: Any = None
        self._secrets = (settings.client_secret, settings.certificate_private_key)

    def _credential(self) -> Any:
        s = self._settings
        if s.certificate_private_key:
            return {"private_key": s.certificate_private_key,
                    "thumbprint": s.certificate_thumbprint}
        return s.client_secret

    def _build_app(self) -> Any:
        import msal  # only when Graph is used: keeps a Gmail-only action's import time small

        s = self._settings
        return msal.ConfidentialClientApplication(
            s.client_id,
            client_credential=self._credential(),
            authority="%s/%s" % (s.authority_host.rstrip("/"), s.tenant_id),
            http_client=self._session,
            # Without this msal asks login.microsoftonline.com to validate any authority.
            instance_discovery=False,
        )

    def get(self) -> str:
        """A valid access token (msal's cache, else Entra). Raises ProviderUnavailable:
        not_authorized when Entra rejects the app, provider_error when it stays unreachable."""
        with self._lock:
            deadline = time.monotonic() + self._budget_s
            attempt = 0
            while True:
                attempt += 1
                try:
                    if self._app is None:
                        self._app = self._build_app()
                    result = self._app.acquire_token_for_client(scopes=[GRAPH_SCOPE])
                except Exception as exc:  # msal raises for 5xx, requests for drops/timeouts
                    error = self._unavailable(exc)
                    # msal answers a token-endpoint 5xx from its own cache for Retry-After
                    # (5 s when absent): a retry sooner than that only replays the error, so
                    # wait at least a second and let the backoff reach past 5 s.
                    delay = 1.0 + backoff(attempt, base=0.5)
                    if (attempt >= self._max_attempts or not self._transient(exc)
                            or time.monotonic() + delay > deadline):
                        raise error from None
                    log.warning("Entra ID token endpoint failed (%s); retrying in %.1fs",
                                error.code, delay)
                    self._sleep(delay)
                    continue
                if "access_token" in result:
                    return result["access_token"]
                code = str(result.get("error") or "token_error")
                message = scrub(result.get("error_description") or code, *self._secrets)
                raise ProviderUnavailable(Reason.NOT_AUTHORIZED.value, code, message)

    @staticmethod
    def _transient(exc: Exception) -> bool:
        if isinstance(exc, _TRANSIENT):
            return True
        response = getattr(exc, "response", None)  # older msal: requests' HTTPError on a 5xx
        if response is not None and getattr(response, "status_code", 0) >= 500:
            return True
        # newer msal's own error for a token-endpoint 5xx, and a failed discovery document
        return "HTTP Error: 5" in str(exc) or "Unable to get authority configuration" in str(exc)

    def _unavailable(self, exc: Exception) -> ProviderUnavailable:
        message = "Entra ID token endpoint unavailable: %s: %s" % (
            type(exc).__name__, scrub(exc, *self._secrets))
        return ProviderUnavailable(Reason.PROVIDER_ERROR.value, type(exc).__name__, message[:500])

    def invalidate(self, token: Optional[str]) -> None:
        """Graph refused `token` (401): drop msal's cached app token so the next `get` fetches
        a fresh one; a no-op when another worker already replaced it."""
        with self._lock:
            if self._app is None or not token:
                return
            cache = self._app.token_cache
            # Newer msal has search() (find() is deprecated there); msal 1.24 has only find().
            search = getattr(cache, "search", None) or cache.find
            for entry in list(search(cache.CredentialType.ACCESS_TOKEN)):
                if entry.get("secret") == token:
                    cache.remove_at(entry)
