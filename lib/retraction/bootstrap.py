"""The composition root: settings, policy, ledger and providers are built here and only here.

Actions, sensors, the CLI, the demo, the benchmarks and the tests call `build(config)` and
take what they need from the `App`. Every StackStorm action runs in a fresh process, so
nothing heavy is imported up front: a provider module (and its SDK: msal, google-auth,
googleapiclient) is imported the first time a copy of that provider is in a run, and the
ledger (SQLAlchemy, alembic) when the app first needs it.

A ledger that is configured (`ledger_url`) but cannot be opened is an error, raised before
any provider is built: nothing is retracted without a record. An empty `ledger_url` means no
ledger at all (tests, dry setups).
"""
from __future__ import annotations

import importlib
import logging
import threading
from typing import Any, Dict, Iterator, Mapping, Optional

from retraction.config import ConfigError, Settings, load_settings, mask_url
from retraction.engine import Engine, LedgerUnavailable
from retraction.model import Provider, Reason
from retraction.policy import Policy
from retraction.providers.base import MailProvider, ProviderUnavailable

# provider name -> (module, class, Settings attribute holding its settings)
PROVIDER_CLASSES = {
    Provider.MICROSOFT.value: ("retraction.providers.graph", "GraphProvider", "microsoft"),
    Provider.GOOGLE.value: ("retraction.providers.gmail", "GmailProvider", "google"),
}
_NOT_GIVEN: Any = object()
log = logging.getLogger(__name__)


class Providers(Mapping):
    """name -> MailProvider, each built on first use (thread-safe: the engine's workers ask
    concurrently). A provider that cannot be built raises ProviderUnavailable, so the engine
    fails that provider's copies with the reason and carries on with the others; the same
    error is raised again on every later use instead of rebuilding."""

    def __init__(self, settings: Settings, overrides: Optional[Mapping[str, MailProvider]] = None):
        self._settings = settings
        self._built: Dict[str, MailProvider] = dict(overrides or {})
        self._failed: Dict[str, ProviderUnavailable] = {}
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> MailProvider:
        with self._lock:
            if name in self._built:
                return self._built[name]
            if name in self._failed:
                raise self._failed[name]
            if name not in PROVIDER_CLASSES:
                raise KeyError(name)
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

    def __iter__(self) -> Iterator[str]:
        return iter(PROVIDER_CLASSES)

    def __len__(self) -> int:
        return len(PROVIDER_CLASSES)

    def built(self) -> Dict[str, MailProvider]:
        with self._lock:
            return dict(self._built)

    def close(self) -> None:
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

    def engine(self) -> Engine:
        return Engine(self.providers, self.policy, ledger=self.ledger,
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


def build(config: Any, providers: Optional[Mapping[str, MailProvider]] = None,
          ledger: Any = _NOT_GIVEN) -> App:
    """Wire the app from a pack config (dict, StackStorm config object, or Settings).

    `providers` replaces the built-in providers by name (a benchmark's instrumented
    provider, say); `ledger` replaces the one at `ledger_url` (None: no ledger)."""
    settings = load_settings(config)
    return App(settings, Providers(settings, providers), ledger)
