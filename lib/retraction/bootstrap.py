"""The composition root: settings, policy, ledger and providers are built here and only here.

Actions, sensors, the CLI, the demo, the benchmarks and the tests call `build(config)` and
take what they need from the `App`. Every StackStorm action runs in a fresh process, so
nothing heavy is imported up front: a provider module (and its SDK: msal, google-auth,
googleapiclient) is imported the first time a copy of that provider is in a run, and the
ledger (SQLAlchemy, alembic) when the app first needs it.

A ledger that is configured (`ledger_url`) but cannot be opened is an error, raised before
any provider is asked to touch mail: nothing is retracted without a record. An empty
`ledger_url` means no ledger at all (tests, dry setups).

Credentials are a configuration matter: a run first checks, from the config alone, the
credentials of every provider its recipients go to (`microsoft.tenant_id`, `client_id`, a
secret or certificate; `google.service_account_json` and its private key), and a problem is a
`ConfigError` naming the key (the action fails, the CLI exits 2) raised before the run is
recorded or any copy touched, not a `not_authorized` outcome per copy. A provider refusing
credentials that look right still fails its copies with the provider's answer.

`App.warm(request)` lets a cold action overlap its two slow starts: while the ledger opens
(SQLAlchemy's import is most of it), a thread builds the providers the request's first copies
go to and fetches their access tokens. A token request reads and changes no mail, and it is
only made once the request is validated and the ledger file is seen to be usable (a quick
standard-library check); the ledger proper must still open before any lookup or move.
"""
from __future__ import annotations

import functools
import importlib
import logging
import os
import threading
from typing import Any, Callable, Dict, Iterator, Mapping, Optional

from retraction.config import ConfigError, Settings, load_settings, mask_url
from retraction.engine import Engine, LedgerUnavailable
from retraction.model import Destination, Provider, Reason, RetractionRequest
from retraction.policy import Policy
from retraction.providers.base import MailProvider, ProviderUnavailable
from retraction.validation import InvalidRequest

# provider name -> (module, class, Settings attribute holding its settings)
PROVIDER_CLASSES = {
    Provider.MICROSOFT.value: ("retraction.providers.graph", "GraphProvider", "microsoft"),
    Provider.GOOGLE.value: ("retraction.providers.gmail", "GmailProvider", "google"),
}
_NOT_GIVEN: Any = object()
WARM_SCAN = 100  # recipients App.warm looks through for each provider's first copy
log = logging.getLogger(__name__)


# What getting a provider ready for a run means (App.warm). Only what the run's first
# `retract` call would do itself before touching a mailbox, so nothing is asked twice.
def _prepare_graph(request: RetractionRequest, recipient: str, provider: Any) -> None:
    provider.tokens.get()  # the app's token (msal keeps it); ProviderUnavailable if refused


def _prepare_gmail(request: RetractionRequest, recipient: str, provider: Any) -> None:
    from retraction.providers.gmail import searchable_message_id
    from retraction.providers.gmail_auth import scopes_for

    searchable_message_id(request.message_id)  # ValueError: the run refuses it, no token
    # One token per mailbox: the first copy's, fetched on the provider's token pool while
    # this thread parses the discovery document. The run takes that fetch's answer as its
    # own, a refusal too (TokenBroker.prefetch): no token request more than without it.
    provider.tokens.prefetch(recipient, scopes_for(Destination(request.destination)))
    provider.messages  # noqa: B018


_PREPARE = {Provider.MICROSOFT.value: _prepare_graph, Provider.GOOGLE.value: _prepare_gmail}
_SQLITE_PREFIX = "sqlite:///"
_VERSION_QUERY = "SELECT version_num FROM ledger_alembic_version"  # ledger.schema.VERSION_TABLE


def _ledger_looks_usable(url: str) -> bool:
    """Whether the ledger at `url` is an existing, writable SQLite ledger with a schema, by the
    standard library in a few milliseconds, so no token is asked for when the ledger will
    refuse the run. Anything else (PostgreSQL, a new file, a URL with options) says no: the
    ledger is opened first, as without App.warm."""
    if not url or not url.startswith(_SQLITE_PREFIX) or "?" in url:
        return False
    path = url[len(_SQLITE_PREFIX):]
    if not path or path == ":memory:" or path.startswith("file:"):
        return False
    path = os.path.abspath(path)
    if not (os.path.isfile(path) and os.access(path, os.R_OK | os.W_OK)
            and os.access(os.path.dirname(path), os.W_OK)):  # WAL and its index live beside it
        return False
    import sqlite3

    try:
        connection = sqlite3.connect(path, timeout=1.0)
        try:
            version = connection.execute(_VERSION_QUERY).fetchone()
        finally:
            connection.close()
    except sqlite3.Error:
        return False
    return bool(version) and isinstance(version[0], str) and version[0].isdigit()


class Providers(Mapping):
    """name -> MailProvider, each built on first use (thread-safe: the engine's workers ask
    concurrently). A provider that cannot be built raises ProviderUnavailable, so the engine
    fails that provider's copies with the reason and carries on with the others; the same
    error is raised again on every later use instead of rebuilding."""

    def __init__(self, settings: Settings, overrides: Optional[Mapping[str, MailProvider]] = None):
        self._settings = settings
        self._built: Dict[str, MailProvider] = dict(overrides or {})
        self._failed: Dict[str, ProviderUnavailable] = {}
        self._warming: Dict[str, threading.Thread] = {}
        self._closed = False
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> MailProvider:
        warming = self._warming.get(name)
        if warming is not None and warming is not threading.current_thread():
            warming.join()  # its token (or its refusal) is this run's: never ask twice
        return self._get(name)

    def warm(self, name: str, prepare: Callable[[MailProvider], None]) -> None:
        """Build provider `name` and call `prepare(provider)` on a thread of its own, once;
        `self[name]` waits for it. `prepare` may only get ready (import, parse, fetch a
        token), never touch mail. A ProviderUnavailable it raises is this provider's answer
        for the run, as if building it had failed; any other error is left for the run to
        meet again and report."""
        with self._lock:
            if (self._closed or name in self._built or name in self._failed
                    or name in self._warming or name not in PROVIDER_CLASSES):
                return
            thread = threading.Thread(target=self._warm, args=(name, prepare),
                                      name="retraction-warm-" + name, daemon=True)
            self._warming[name] = thread
        thread.start()

    def _warm(self, name: str, prepare: Callable[[MailProvider], None]) -> None:
        try:
            prepare(self._get(name))
        except ProviderUnavailable as exc:
            with self._lock:
                self._failed.setdefault(name, exc)
        except Exception as exc:
            log.debug("getting %s ready failed: %s: %s", name, type(exc).__name__, exc)

    def _get(self, name: str) -> MailProvider:
        with self._lock:
            if name in self._failed:
                raise self._failed[name]
            if name in self._built:
                return self._built[name]
            if name not in PROVIDER_CLASSES:
                raise KeyError(name)
            if self._closed:
                raise ProviderUnavailable(Reason.PROVIDER_ERROR.value, "Closed",
                                          "the %s provider was closed" % name)
            try:
                provider = self._build(name)
            except ProviderUnavailable as exc:
                self._failed[name] = exc
                raise
            self._built[name] = provider
            return provider

    def _build(self, name: str) -> MailProvider:
        module_name, class_name, settings_name = PROVIDER_CLASSES[name]
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except ImportError as exc:  # an SDK missing from the pack's virtualenv
            raise ProviderUnavailable(Reason.PROVIDER_ERROR.value, "ImportError",
                                      "cannot load the %s provider: %s" % (name, exc)) from None
        try:
            return cls(getattr(self._settings, settings_name), self._settings.limits)
        except ConfigError as exc:  # names the key, never the secret
            raise ProviderUnavailable(Reason.NOT_AUTHORIZED.value, "ConfigError",
                                      str(exc)) from None

    def require(self, name: str) -> None:
        """Raise ConfigError (naming the key, never the secret) unless the config holds usable
        credentials for provider `name`; nothing for one given ready-made (`overrides`)."""
        with self._lock:
            if name in self._built or name not in PROVIDER_CLASSES:
                return
        settings = getattr(self._settings, PROVIDER_CLASSES[name][2])
        settings.require_credentials()
        if name == Provider.GOOGLE.value:
            from retraction.providers.gmail_auth import load_signer

            load_signer(settings.service_account_info())  # the private key parses

    def __iter__(self) -> Iterator[str]:
        return iter(PROVIDER_CLASSES)

    def __len__(self) -> int:
        return len(PROVIDER_CLASSES)

    def built(self) -> Dict[str, MailProvider]:
        with self._lock:
            return dict(self._built)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            warming = list(self._warming.values())
        for thread in warming:  # let it finish first: nothing it starts outlives the close
            thread.join()
        for provider in self.built().values():
            provider.close()


class App:
    """Everything wired from one pack config."""

    def __init__(self, settings: Settings, providers: Providers, ledger: Any = _NOT_GIVEN):
        self.settings = settings
        self.policy = Policy(settings)
        self.providers = providers
        self._ledger = ledger
        self._ledger_failure: Optional[LedgerUnavailable] = None
        self._lock = threading.Lock()

    @property
    def ledger(self) -> Any:
        """The ledger at `ledger_url` (opened, and created or upgraded, on first use), or None
        when `ledger_url` is empty. Raises LedgerUnavailable (naming `ledger_url`, password
        masked) when it is set but cannot be opened, every time it is asked for."""
        with self._lock:
            if self._ledger_failure is not None:
                raise self._ledger_failure
            if self._ledger is _NOT_GIVEN:
                url = self.settings.ledger_url
                if not url:
                    self._ledger = None
                    return None
                try:
                    from retraction.ledger import Ledger

                    self._ledger = Ledger(url)
                except Exception as exc:
                    text = str(exc).replace(url, mask_url(url))
                    self._ledger_failure = LedgerUnavailable(
                        "cannot open the ledger at %s: %s: %s" % (
                            mask_url(url), type(exc).__name__, text[:300]))
                    log.error("%s", self._ledger_failure)
                    raise self._ledger_failure from None
            return self._ledger

    def require_ledger(self, why: str) -> Any:
        """The ledger, for work that means nothing without one; LedgerUnavailable if
        `ledger_url` is empty."""
        ledger = self.ledger
        if ledger is None:
            raise LedgerUnavailable("is empty, but %s" % why)
        return ledger

    def warm(self, request: RetractionRequest) -> None:
        """Start getting ready, on other threads, the providers the request's first copies go
        to: build each (SDK import, key parsing) and fetch its access token, while this thread
        opens the ledger. Call it after the request is validated, for a run that will ask the
        providers (a copy the ledger answers needs no token). Nothing if the config refuses
        the request as a whole (the run raises that)."""
        try:
            self.policy.admit(request)
        except InvalidRequest:
            return
        if not _ledger_looks_usable(self.settings.ledger_url):
            return
        first: Dict[str, str] = {}  # provider -> the first recipient routed to it
        for recipient in request.recipients[:WARM_SCAN]:
            route = self.policy.route(recipient, request.provider)
            if route.allowed and route.provider is not None:
                first.setdefault(route.provider, recipient)
                if len(first) == len(PROVIDER_CLASSES):
                    break
        for name, recipient in first.items():
            prepare = _PREPARE.get(name)
            if prepare is not None:
                self.providers.warm(name, functools.partial(prepare, request, recipient))

    def require_credentials(self, request: RetractionRequest) -> None:
        """ConfigError unless every provider the request's recipients go to has usable
        credentials in the config (checked without asking the provider)."""
        names = set()
        if request.provider is not None:
            names.add(Provider(request.provider).value)
        else:
            for recipient in request.recipients:
                route = self.policy.route(recipient)
                if route.allowed and route.provider is not None:
                    names.add(route.provider)
                    if len(names) == len(PROVIDER_CLASSES):
                        break
        for name in sorted(names):
            self.providers.require(name)

    def engine(self) -> Engine:
        return _CheckedEngine(self, self.providers, self.policy, ledger=self.ledger,
                              limits=self.settings.limits)

    def close(self) -> None:
        self.providers.close()
        with self._lock:
            ledger = self._ledger
        if ledger is not None and ledger is not _NOT_GIVEN and hasattr(ledger, "close"):
            ledger.close()

    def __enter__(self) -> "App":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class _CheckedEngine(Engine):
    """The Engine, with the providers' credentials checked before a run starts."""

    def __init__(self, app: App, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._app = app

    def run(self, request: RetractionRequest, skip_already_retracted: bool = False,
            finish: bool = True) -> Any:
        self.policy.admit(request)  # request-wide refusals first, as Engine.run
        self._app.require_credentials(request)
        return super().run(request, skip_already_retracted, finish)


def build(config: Any, providers: Optional[Mapping[str, MailProvider]] = None,
          ledger: Any = _NOT_GIVEN) -> App:
    """Wire the app from a pack config (dict, StackStorm config object, or Settings).

    `providers` replaces the built-in providers by name (a benchmark's instrumented
    provider, say); `ledger` replaces the one at `ledger_url` (None: no ledger)."""
    settings = load_settings(config)
    return App(settings, Providers(settings, providers), ledger)
