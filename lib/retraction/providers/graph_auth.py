"""Entra ID app-only tokens for Graph (msal) and the one HTTP session both share.

msal caches the app token itself and reuses it until shortly before it expires; this module
adds a lock (so concurrent workers fetch one token, not one each), retries of an unreachable
token endpoint, and turns msal's error dicts into `ProviderUnavailable` without any secret.
"""
from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from typing import Any, Callable, Dict, Optional, Tuple
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.sessions import merge_setting
from requests.utils import DEFAULT_CA_BUNDLE_PATH, get_environ_proxies
from urllib3.util.ssl_ import create_urllib3_context

from retraction.model import Reason
from retraction.providers.base import ProviderUnavailable
from retraction.providers.graph_wire import backoff

log = logging.getLogger(__name__)

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
# Errors from a 5xx or dropped token endpoint: worth retrying. Anything msal *returns* as an
# error dict is Entra's verdict on the credentials and is final.
_TRANSIENT = (requests.ConnectionError, requests.Timeout)


_contexts: Dict[str, ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def _verifying_context(ca_bundle: str) -> ssl.SSLContext:
    """The SSLContext urllib3 would build for a connection verified against `ca_bundle`, built
    once per process: urllib3 builds one and loads the bundle for every new connection (certifi's
    takes ~40 ms of CPU), and each chunk's provider opens a connection per worker."""
    with _contexts_lock:
        context = _contexts.get(ca_bundle)
        if context is None:
            context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
            context.load_verify_locations(cafile=ca_bundle)
            _contexts[ca_bundle] = context
        return context


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
            pool_kwargs["ssl_context"] = _verifying_context(bundle)
        return host_params, pool_kwargs

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        bundle = _bundle(verify)
        shared = _contexts.get(bundle) if bundle else None
        if (shared is not None and not cert and url.lower().startswith("https")
                and getattr(conn, "conn_kw", {}).get("ssl_context") is shared):
            # What requests sets, minus the CA file: it is in the shared context already.
            conn.cert_reqs = "CERT_REQUIRED"
            conn.ca_certs = conn.ca_cert_dir = None
            return
        super().cert_verify(conn, url, verify, cert)


class _Session(requests.Session):
    """A requests Session that reads the environment (proxy variables, REQUESTS_CA_BUNDLE /
    CURL_CA_BUNDLE) once per scheme and host instead of on every call: requests scans every
    environment variable per request, ~0.2 ms of CPU. What is done with them is a copy of
    requests' Session.merge_environment_settings (the same from 2.28 to 2.34)."""

    def __init__(self) -> None:
        super().__init__()
        self._environment: Dict[Tuple[str, str], Tuple[Dict[str, str], Optional[str]]] = {}

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any,
                                   cert: Any) -> Dict[str, Any]:
        if not self.trust_env or (proxies and "no_proxy" in proxies):
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        found = self._environment.get(key)
        if found is None:
            found = (get_environ_proxies(url, no_proxy=None),
                     os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE"))
            self._environment[key] = found
        env_proxies, env_verify = found
        if proxies is not None:
            for name, value in env_proxies.items():
                proxies.setdefault(name, value)
        if verify is True or verify is None:
            verify = env_verify or verify
        return {"proxies": merge_setting(proxies, self.proxies),
                "stream": merge_setting(stream, self.stream),
                "verify": merge_setting(verify, self.verify),
                "cert": merge_setting(cert, self.cert)}


def make_session(ca_file: str, pool_size: int) -> requests.Session:
    """One pooled session for Entra ID and Graph: `pool_size` connections per host so every
    worker keeps its TLS connection alive instead of handshaking per request.

    With `ca_file` set (a private or test CA), `trust_env` is switched off: requests lets
    REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE from the environment override `session.verify` for
    every call that does not pass `verify=` itself (msal never does), so the CA would be
    silently ignored. The cost: proxy variables are ignored too for that session.
    """
    session = _Session()
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
