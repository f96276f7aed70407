"""The sandbox server: two loopback listeners, one tenant, every protocol front.

TLS listener (test CA from trustme): Entra ID login + Microsoft Graph (msal refuses http).
Plain HTTP listener: Google OAuth token, Gmail, Admin SDK Directory, Cloudflare, control API.
Each front is a module with `routes(sandbox) -> [RouteDef]`; route names key the counters and
pick the fault service ("graph.messages.move" -> graph). Fronts read `sandbox.tenant` on every
request, so loading a new scenario swaps the whole tenant at once.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import socket
import ssl
import tempfile
import threading
import uuid
from typing import Any, Dict, List, Optional

import trustme
import yaml
from aiohttp import web

from sandbox import (cloudflare, control, directory, entra, gmail, gmail_batch, google_oauth,
                     graph, graph_batch, graph_directory)
from sandbox.faults import WRITE_METHODS, Faults, fault_body, faults_apply, service_of
from sandbox.tenant import Tenant
from sandbox.throttle import MailboxThrottle, QuotaWindow

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE_CONFIG = os.path.join(PACK_ROOT, "email_retraction.yaml.example")

# Front modules per listener, in mounting order (graph last: it ends with a catch-all).
TLS_FRONTS = (entra, graph_batch, graph_directory, graph)
HTTP_FRONTS = (control, google_oauth, gmail_batch, gmail, directory, cloudflare)
# Whose access tokens `revoke_tokens` can invalidate (the pack's Provider words).
TOKEN_PROVIDERS = ("microsoft", "google")


class Counters:
    """Hits and response statuses per route name. Batch executors add one hit per item."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.hits: Dict[str, int] = {}
        self.statuses: Dict[str, Dict[str, int]] = {}

    def hit(self, name: str, status: Optional[int] = None) -> None:
        with self._lock:
            self.hits[name] = self.hits.get(name, 0) + 1
        if status is not None:
            self.status(name, status)

    def status(self, name: str, status: int) -> None:
        with self._lock:
            per = self.statuses.setdefault(name, {})
            per[str(status)] = per.get(str(status), 0) + 1

    def reset(self) -> None:
        with self._lock:
            self.hits.clear()
            self.statuses.clear()

    def snapshot(self) -> Dict[str, Any]:
        with self._lock:
            return {"routes": dict(self.hits),
                    "statuses": {k: dict(v) for k, v in self.statuses.items()}}


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class Sandbox:
    """One running sandbox tenant. `start()`/`stop()` or use it as a context manager."""

    def __init__(self, tenant: Tenant, faults: Optional[Faults] = None,
                 data_dir: Optional[str] = None, host: str = "127.0.0.1",
                 tls_port: int = 0, http_port: int = 0):
        self.tenant = tenant
        self.faults = faults or Faults()
        self.host = host
        self._ports = (tls_port, http_port)
        self._own_data_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="sandbox-")
        os.makedirs(self.data_dir, exist_ok=True)
        self.counters = Counters()
        self.graph_throttle = MailboxThrottle(self.faults.setting)
        self.gmail_quota = QuotaWindow(
            limit=lambda: int(self.faults.setting("gmail_user_quota")),
            enabled=lambda: bool(self.faults.setting("throttling")))
        # Per-front state that must survive tenant swaps but not `reset()` lives here.
        self.state: Dict[str, Any] = {}
        self.token_secret = os.urandom(32)  # signs the sandbox's access tokens (HS256)
        self.urls: Dict[str, str] = {}
        self.ca = trustme.CA()
        self._server_cert = self.ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = os.path.join(self.data_dir, "ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._runners: List[web.AppRunner] = []
        self._start_error: Optional[BaseException] = None
        self._graph_holds: Dict[str, asyncio.Event] = {}  # see hold_graph_operations()
        self.tls_app = self._make_app(TLS_FRONTS)
        self.http_app = self._make_app(HTTP_FRONTS)

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_scenario_file(cls, path: str, **kwargs: Any) -> "Sandbox":
        from sandbox.scenario import load_scenario_file
        return cls(load_scenario_file(path), **kwargs)

    def _make_app(self, fronts) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        for module in fronts:
            app.add_routes(module.routes(self))
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler):
        name = request.match_info.route.name or "unrouted"
        self.counters.hit(name)
        service = service_of(name)
        fault = None
        if service is not None:
            delay = self.faults.latency_s(service)
            if delay:
                await asyncio.sleep(delay)
            if faults_apply(name, service):
                fault = self.faults.decide(service, request.method in WRITE_METHODS)
                if fault is not None and fault.kind == "drop":
                    self._abort(request, name, "dropped")
                if fault is not None and fault.kind != "lost_reply":
                    status, headers, body = fault_body(service, fault,
                                                       self.error_context(request))
                    self.counters.status(name, status)
                    return web.json_response(body, status=status, headers=headers)
        response = await handler(request)
        if fault is not None:  # lost reply: the request has run, its answer never leaves
            self._abort(request, name, "reply lost")
        self.counters.status(name, response.status)
        return response

    def _abort(self, request: web.Request, name: str, why: str) -> None:
        """Close the connection without an answer (status 0 in the counters)."""
        self.counters.status(name, 0)
        if request.transport is not None:
            request.transport.abort()
        raise ConnectionResetError("sandbox: %s by fault injection" % why)

    @staticmethod
    def error_context(request: Optional[web.Request] = None,
                      headers: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        """Graph's innerError: date, request-id, client-request-id."""
        from sandbox.tenant import utc_now
        source = headers if headers is not None else (request.headers if request else {})
        request_id = str(uuid.uuid4())
        client_id = source.get("client-request-id") or request_id
        return {"date": utc_now().strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": request_id, "client-request-id": client_id}

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> "Sandbox":
        if self._thread is not None:
            return self
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="sandbox",
                                        daemon=True)
        self._thread.start()
        ready.wait(30)
        if self._start_error is not None:
            self._thread.join(5)
            self._thread = None
            raise RuntimeError("sandbox failed to start: %s" % self._start_error)
        return self

    def _run(self, ready: threading.Event) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._astart())
        except BaseException as exc:  # reported to start()
            self._start_error = exc
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._astop())
            loop.close()

    async def _astart(self) -> None:
        ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server_cert.configure_cert(ssl_ctx)
        tls_sock = _bind(self.host, self._ports[0])
        http_sock = _bind(self.host, self._ports[1])
        for app, sock, ctx in ((self.tls_app, tls_sock, ssl_ctx), (self.http_app, http_sock, None)):
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            await web.SockSite(runner, sock, ssl_context=ctx).start()
            self._runners.append(runner)
        self.tls_port = tls_sock.getsockname()[1]
        self.http_port = http_sock.getsockname()[1]
        self.urls = self._make_urls()

    async def _astop(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners = []

    def stop(self) -> None:
        if self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._thread = None
        if self._own_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> "Sandbox":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def call(self, coro_fn, *args: Any) -> Any:
        """Run a coroutine function on the server loop from another thread (tests)."""
        return asyncio.run_coroutine_threadsafe(coro_fn(*args), self._loop).result(30)

    # -- addresses ---------------------------------------------------------------------------
    def _make_urls(self) -> Dict[str, str]:
        tls = "https://%s:%d" % (self.host, self.tls_port)
        http = "http://%s:%d" % (self.host, self.http_port)
        return {
            "graph_url": tls + "/v1.0",
            "login_authority": "%s/%s" % (tls, self.tenant.tenant_id),
            "authority_host": tls,
            "ca_file": self.ca_file,
            "google_token_uri": http + "/token",
            "gmail_url": http,
            "gmail_batch_uri": http + "/batch/gmail/v1",
            "directory_url": http,
            "cloudflare_url": http + "/client/v4",
            "control_url": http + "/_sandbox",
        }

    # -- tenant swaps and resets ---------------------------------------------------------------
    def reset(self) -> None:
        """Faults cleared, counters zeroed, throttle windows emptied (the tenant is kept)."""
        self.faults.clear()
        self.counters.reset()
        self.graph_throttle.reset()
        self.gmail_quota.reset()
        for value in self.state.values():
            reset = getattr(value, "reset", None)
            if callable(reset):
                reset()

    def load(self, tenant: Tenant) -> Tenant:
        """Replace the tenant and reset (the urls and the login authority follow the tenant)."""
        self.tenant = tenant
        self.reset()
        if self.urls:
            self.urls = self._make_urls()
        return tenant

    def load_scenario(self, data: Any) -> Tenant:
        from sandbox.scenario import load_scenario
        return self.load(load_scenario(data))

    def load_scenario_file(self, path: str) -> Tenant:
        from sandbox.scenario import load_scenario_file
        return self.load(load_scenario_file(path))

    # -- control operations (the same as the /_sandbox API) ---------------------------------------
    def mailbox_view(self, address: str) -> Optional[Dict[str, Any]]:
        from sandbox import control
        return control.mailbox_view(self, address)

    def copies(self, message_id: str) -> List[Dict[str, Any]]:
        from sandbox import control
        return control.copies_view(self, message_id)

    def audit(self, since: int = 0) -> List[Dict[str, Any]]:
        from sandbox import control
        return control.audit_view(self, since)

    def set_faults(self, spec: Optional[Dict[str, Any]] = None, clear: bool = False,
                   **kwargs: Any) -> Dict[str, Any]:
        """e.g. set_faults(graph={"rate_429": 0.5}, rtt_ms=20)."""
        if clear:
            self.faults.clear()
        merged = dict(spec or {})
        merged.update(kwargs)
        self.faults.set(merged)
        return self.faults.to_dict()

    def revoke_tokens(self, service: Optional[str] = None) -> Dict[str, Any]:
        """Invalidate every access token issued so far: "microsoft" (Graph answers 401
        InvalidAuthenticationToken), "google" (Gmail and Directory answer 401 authError) or
        None for both. New tokens work at once, so a client's refresh path can be tested."""
        if service is not None and service not in TOKEN_PROVIDERS:
            raise ValueError("service must be one of %s, not %r" % (TOKEN_PROVIDERS, service))
        revoked = [service] if service else list(TOKEN_PROVIDERS)
        if "microsoft" in revoked:
            entra.issuer(self).revoke_all()
        if "google" in revoked:
            google_oauth.state_of(self).revoke_all()
        return {"revoked": revoked}

    @contextlib.contextmanager
    def hold_graph_operations(self, mailbox: Optional[str] = None):
        """While inside, Graph operations on `mailbox` (None: every mailbox) that got their
        throttle slot wait, keeping the slot, until the block ends. In-flight limits can then
        be observed without racing a clock. Batch items wait too; other mailboxes run."""
        async def new_event() -> asyncio.Event:
            return asyncio.Event()
        key = mailbox.lower() if mailbox else "*"
        if key in self._graph_holds:
            raise RuntimeError("Graph operations on %s are already held" % key)
        hold = self.call(new_event)  # created on the server loop, which waits on it
        self._graph_holds[key] = hold
        try:
            yield self
        finally:
            del self._graph_holds[key]
            self._loop.call_soon_threadsafe(hold.set)

    async def graph_gate(self, mailbox: str) -> None:
        """Awaited by a Graph mailbox operation while it holds its slot."""
        for key in ("*", mailbox.lower()):
            hold = self._graph_holds.get(key)
            if hold is not None:
                await hold.wait()

    def set_consent(self, client_id: str, consent_granted: Optional[bool] = None,
                    permissions: Optional[List[str]] = None) -> Dict[str, Any]:
        from sandbox import control
        return control.set_consent(self, client_id, consent_granted, permissions)

    def set_google_scopes(self, client_email: str, scopes: List[str]) -> Dict[str, Any]:
        from sandbox import control
        return control.set_google_scopes(self, client_email, scopes)

    def add_mailbox(self, address: str, kind: str = "user", provider: Optional[str] = None,
                    copies: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
        from sandbox import control
        return control.add_mailbox(self, address, kind, provider, copies)

    def add_verdict(self, **spec: Any) -> Dict[str, Any]:
        from sandbox import control
        return control.add_verdict(self, spec)

    def rescan(self, verdict_id: str, disposition: str) -> Dict[str, Any]:
        from sandbox import control
        return control.rescan(self, verdict_id, disposition)

    def add_submission(self, **spec: Any) -> Dict[str, Any]:
        from sandbox import control
        return control.add_submission(self, spec)

    def confirm_submission(self, submission_id: str, disposition: str) -> Dict[str, Any]:
        from sandbox import control
        return control.confirm_submission(self, submission_id, disposition)

    def generate_campaign(self, **spec: Any):
        """Deliver a generated campaign into the current tenant; returns its CampaignTruth."""
        from sandbox import control
        return control.generate_campaign(self, **spec)

    # -- credentials and the pack config ---------------------------------------------------------
    def credentials(self) -> Dict[str, Any]:
        """Working credentials of every app, service account and API token of the tenant."""
        with self.tenant.lock:
            apps = list(self.tenant.microsoft_apps.values())
            accounts = list(self.tenant.google_accounts.values())
            tokens = sorted(self.tenant.cloudflare_tokens)
        microsoft = []
        for app in apps:
            entry = {"client_id": app.client_id, "client_secret": app.client_secret,
                     "certificate_pem": app.certificate_pem,
                     "certificate_private_key": getattr(app, "private_key_pem", "") or None,
                     "certificate_thumbprint": (certificate_thumbprint(app.certificate_pem)
                                                if app.certificate_pem else None)}
            microsoft.append(entry)
        google = [{"client_email": acc.client_email,
                   "service_account_info": self.service_account_info(acc)}
                  for acc in accounts]
        return {"tenant_id": self.tenant.tenant_id, "microsoft": microsoft, "google": google,
                "cloudflare": {"account_id": self.tenant.cloudflare_account_id,
                               "api_token": tokens[0] if tokens else None}}

    def service_account_info(self, account) -> Dict[str, str]:
        """The JSON key file Google hands out for a service account, pointing at the sandbox."""
        token_uri = self.urls.get("google_token_uri", "https://oauth2.googleapis.com/token")
        project = account.client_email.split("@", 1)[-1].split(".", 1)[0]
        return {
            "type": "service_account",
            "project_id": project,
            "private_key_id": account.private_key_id,
            "private_key": account.private_key_pem,
            "client_email": account.client_email,
            "client_id": str(int(hashlib.sha1(account.client_email.encode()).hexdigest()[:20],
                                 16)),
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": "",
            "universe_domain": "googleapis.com",
        }

    def pack_config(self) -> Dict[str, Any]:
        """A complete pack config (the example's shape) pointing at this sandbox; ledger_url and
        log_level are left to the caller."""
        config: Dict[str, Any] = {}
        if os.path.exists(EXAMPLE_CONFIG):
            with open(EXAMPLE_CONFIG) as handle:
                config = yaml.safe_load(handle) or {}
        config.pop("ledger_url", None)
        config.pop("log_level", None)  # the example's; a test or the demo sets its own
        creds = self.credentials()
        with self.tenant.lock:
            domains = dict(self.tenant.domains)
            google_users = [b.address for b in self.tenant.mailboxes.values()
                            if b.provider == "google" and b.kind == "user"]
        urls = self.urls
        ms = creds["microsoft"][0] if creds["microsoft"] else {}
        use_secret = bool(ms.get("client_secret"))
        config["microsoft"] = {
            "tenant_id": self.tenant.tenant_id,
            "client_id": ms.get("client_id", ""),
            "client_secret": ms.get("client_secret") or "",
            "certificate_private_key": "" if use_secret else (ms.get("certificate_private_key")
                                                              or ""),
            "certificate_thumbprint": "" if use_secret else (ms.get("certificate_thumbprint")
                                                             or ""),
            "authority_host": urls.get("authority_host", ""),
            "graph_url": urls.get("graph_url", ""),
            "ca_file": self.ca_file,
            "domains": sorted(d for d, p in domains.items() if p == "microsoft"),
        }
        google = dict(config.get("google") or {})
        google.update({
            "service_account_json": (json.dumps(creds["google"][0]["service_account_info"])
                                     if creds["google"] else ""),
            "token_uri": urls.get("google_token_uri", ""),
            "gmail_url": urls.get("gmail_url", ""),
            "batch_uri": urls.get("gmail_batch_uri", ""),
            "directory_url": urls.get("directory_url", ""),
            "directory_admin": google_users[0] if google_users else "",
            "domains": sorted(d for d, p in domains.items() if p == "google"),
        })
        config["google"] = google
        config["cloudflare"] = {"account_id": creds["cloudflare"]["account_id"],
                                "api_token": creds["cloudflare"]["api_token"] or "",
                                "base_url": urls.get("cloudflare_url", "")}
        return config

    def write_pack_config(self) -> str:
        path = os.path.join(self.data_dir, "email_retraction.yaml")
        with open(path + ".tmp", "w") as handle:
            yaml.safe_dump(self.pack_config(), handle, sort_keys=False)
        os.replace(path + ".tmp", path)
        return path

    def ready_info(self) -> Dict[str, str]:
        info = dict(self.urls)
        info["pack_config_file"] = self.write_pack_config()
        return info

    def msal_app(self, client_id: Optional[str] = None, credential: Any = "secret"):
        """A fresh msal ConfidentialClientApplication against this sandbox (msal caches token
        errors per app object, so error tests want a new one each time). `credential`:
        "secret", "certificate" (sha1 thumbprint, RS256), "certificate_sha256" (PS256), or a
        value passed to msal as is."""
        import msal
        creds = self.credentials()
        app = next((a for a in creds["microsoft"]
                    if client_id is None or a["client_id"] == client_id), None)
        if app is None:
            raise KeyError("no Microsoft app %r" % client_id)
        if credential == "secret":
            credential = app["client_secret"]
        elif credential == "certificate":
            credential = {"private_key": app["certificate_private_key"],
                          "thumbprint": app["certificate_thumbprint"]}
        elif credential == "certificate_sha256":
            credential = {"private_key": app["certificate_private_key"],
                          "public_certificate": app["certificate_pem"]}
        return msal.ConfidentialClientApplication(
            app["client_id"], client_credential=credential,
            authority=self.urls["login_authority"], instance_discovery=False,
            http_client=self.requests_session())

    def graph_token(self, client_id: Optional[str] = None) -> str:
        """An app-only Graph access token obtained through msal (raises on an error)."""
        result = self.msal_app(client_id).acquire_token_for_client(
            scopes=["https://graph.microsoft.com/.default"])
        if "access_token" not in result:
            raise RuntimeError("token request failed: %s" % result.get("error"))
        return result["access_token"]

    def requests_session(self):
        """A requests.Session that trusts the sandbox CA and ignores REQUESTS_CA_BUNDLE."""
        import requests
        session = requests.Session()
        session.verify = self.ca_file
        session.trust_env = False
        return session


def certificate_thumbprint(certificate_pem: str) -> str:
    """SHA-1 thumbprint (hex, upper case) of a PEM certificate, as msal's `thumbprint` wants."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    cert = x509.load_pem_x509_certificate(certificate_pem.encode())
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
