"""Fault injection and the switches that shape the sandbox's behaviour (latency, throttling).

`Faults.decide(service, write)` is asked once per HTTP request by the server middleware and once
per item by the batch executors, so a batch can carry per-item 429s and 5xx. Decisions come from
one seeded RNG per service: a sequential run with the same settings sees the same faults.

A "lost reply" is the fault that matters for non-idempotent writes: the request is executed
(the copy really moves) and only then is the answer lost, so a client cannot tell it from a
request that never arrived and must look the copy up again before it retries.
"""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

SERVICES = ("login", "graph", "google_token", "gmail", "directory", "cloudflare")
TOKEN_SERVICES = ("login", "google_token")
# Lost replies hit writes only: a read whose answer is lost is just a dropped connection.
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# Route-name prefix -> service (route names are "<front>.<what>", e.g. "graph.messages.move").
SERVICE_OF_PREFIX = {
    "entra": "login",
    "graph": "graph",
    "google": "google_token",
    "gmail": "gmail",
    "directory": "directory",
    "cloudflare": "cloudflare",
}


def service_of(route_name: Optional[str]) -> Optional[str]:
    if not route_name:
        return None
    return SERVICE_OF_PREFIX.get(route_name.split(".", 1)[0])


def faults_apply(route_name: str, service: str) -> bool:
    """Per-request faults hit every route of a service except batch envelopes (their items
    get faults one by one) and, for the login services, anything but the token endpoint
    (an outage answers tokens with 503; discovery documents keep being served)."""
    if route_name.endswith(".batch"):
        return False
    if service in TOKEN_SERVICES:
        return route_name.endswith(".token")
    return True


@dataclass(frozen=True)
class Fault:
    """One injected failure. kind: "429" | "5xx" | "drop" | "lost_reply" | "token_outage".
    A "lost_reply" is executed first; the caller then loses its answer."""

    kind: str
    status: int
    retry_after: Optional[float] = None

    def headers(self) -> Dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": _fmt_seconds(self.retry_after)}


def _fmt_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else ("%g" % value)


@dataclass
class ServiceFaults:
    rate_429: float = 0.0
    retry_after: float = 1.0
    rate_5xx: float = 0.0
    status_5xx: int = 503
    rate_drop: float = 0.0
    rate_lost_reply: float = 0.0
    # Token endpoints answer 503 until this monotonic time (0 = no outage, inf = until cleared).
    token_outage_until: float = 0.0
    # An outage of this many seconds waits for the next token request and starts with it, so
    # the client under test meets it however late it asks (0 = none waiting).
    token_outage_pending_s: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        remaining = max(0.0, self.token_outage_until - time.monotonic())
        return {
            "rate_429": self.rate_429, "retry_after": self.retry_after,
            "rate_5xx": self.rate_5xx, "status_5xx": self.status_5xx,
            "rate_drop": self.rate_drop, "rate_lost_reply": self.rate_lost_reply,
            "token_outage": (True if remaining == float("inf") else round(remaining, 3)),
            "token_outage_from_next_request": self.token_outage_pending_s,
        }


DEFAULT_SETTINGS = {
    "rtt_ms": 0.0,  # injected latency per HTTP request (a batch is one request)
    "jitter": 0.0,  # fraction of rtt_ms, uniform +-
    "throttling": True,  # provider rules (Graph mailbox concurrency + budget, Gmail quota)
    "graph_concurrency": 4,  # concurrent requests per app and mailbox
    "graph_budget": 10000,  # requests per app and mailbox per window
    "graph_budget_window_s": 600.0,
    "graph_throttle_retry_after": 1.0,  # Retry-After of a MailboxConcurrency 429
    "graph_op_ms": 0.0,  # server time of one mailbox operation (holds the mailbox slot)
    "gmail_user_quota": 15000,  # quota units per user per minute
    "token_lifetime_s": 3599,  # expires_in of issued access tokens (Entra and Google)
}


class Faults:
    """Thread-safe: the control API (loop thread) and tests (their thread) both set it."""

    def __init__(self, seed: int = 0, **settings: Any):
        self._lock = threading.Lock()
        self.seed = seed
        self.services: Dict[str, ServiceFaults] = {}
        self.settings: Dict[str, Any] = {}
        self.injected: Dict[str, Dict[str, int]] = {}
        self.delayed: Dict[str, int] = {}  # HTTP requests delayed by rtt_ms, per service
        self._rngs: Dict[str, random.Random] = {}
        self.clear()
        if settings:
            self.set({"settings": settings})

    # -- configuration -----------------------------------------------------------------------
    def clear(self) -> None:
        """No faults, default settings, counters zeroed, RNGs reseeded."""
        with self._lock:
            self.services = {name: ServiceFaults() for name in SERVICES}
            self.settings = dict(DEFAULT_SETTINGS)
            self.injected = {name: {} for name in SERVICES}
            self.delayed = {}
            self._rngs = {name: random.Random("%s:%s" % (self.seed, name)) for name in SERVICES}
            self._latency_rng = random.Random("%s:latency" % self.seed)

    def set(self, spec: Dict[str, Any]) -> None:
        """Merge a spec: {"seed": n, "settings": {...}, "<service>": {"rate_429": .., ...}}.
        Also accepts settings keys at the top level (e.g. {"rtt_ms": 50})."""
        spec = dict(spec or {})
        with self._lock:
            if "seed" in spec:
                self.seed = int(spec.pop("seed"))
                self._rngs = {n: random.Random("%s:%s" % (self.seed, n)) for n in SERVICES}
                self._latency_rng = random.Random("%s:latency" % self.seed)
            settings = dict(spec.pop("settings", None) or {})
            for key in list(spec):
                if key in DEFAULT_SETTINGS:
                    settings[key] = spec.pop(key)
            for key, value in settings.items():
                if key not in DEFAULT_SETTINGS:
                    raise ValueError("unknown sandbox setting %r" % key)
                kind = type(DEFAULT_SETTINGS[key])
                self.settings[key] = bool(value) if kind is bool else kind(value)
            for service, conf in spec.items():
                if service not in SERVICES:
                    raise ValueError("unknown service %r (one of %s)" % (service, SERVICES))
                self._configure(self.services[service], service, dict(conf or {}))

    @staticmethod
    def _configure(target: ServiceFaults, service: str, conf: Dict[str, Any]) -> None:
        for key, value in conf.items():
            if key in ("token_outage", "token_outage_from_next_request"):
                if service not in TOKEN_SERVICES:
                    raise ValueError("%s applies to %s only" % (key, TOKEN_SERVICES))
                waiting = key == "token_outage_from_next_request"
                seconds = -1.0 if value is True else float(value or 0)
                if waiting and seconds < 0:
                    raise ValueError("%s.%s must be seconds (>= 0)" % (service, key))
                # One outage at a time: either option replaces whatever the other set.
                target.token_outage_pending_s = seconds if waiting else 0.0
                target.token_outage_until = 0.0
                if not waiting and value is True:
                    target.token_outage_until = float("inf")
                elif not waiting and value:
                    target.token_outage_until = time.monotonic() + seconds
            elif key in ("rate_429", "rate_5xx", "rate_drop", "rate_lost_reply", "retry_after"):
                number = float(value)
                if key.startswith("rate_") and not 0.0 <= number <= 1.0:
                    raise ValueError("%s.%s must be within 0..1" % (service, key))
                setattr(target, key, number)
            elif key == "status_5xx":
                status = int(value)
                if not 500 <= status <= 599:
                    raise ValueError("%s.status_5xx must be a 5xx status" % service)
                target.status_5xx = status
            else:
                raise ValueError("unknown fault %r for %s" % (key, service))

    def setting(self, key: str) -> Any:
        return self.settings[key]

    def to_dict(self) -> Dict[str, Any]:
        with self._lock:
            return {
                "seed": self.seed,
                "settings": dict(self.settings),
                "services": {name: conf.to_dict() for name, conf in self.services.items()},
                "injected": {name: dict(c) for name, c in self.injected.items()},
                "delayed": dict(self.delayed),
            }

    # -- decisions ---------------------------------------------------------------------------
    def decide(self, service: str, write: bool = False) -> Optional[Fault]:
        """Whether to fail this request (or batch item) of `service`, and how. `write`: the
        request changes state (WRITE_METHODS), so its reply may be lost after it ran."""
        with self._lock:
            conf = self.services[service]
            if service in TOKEN_SERVICES and conf.token_outage_pending_s:
                # This request starts the waiting outage and is always its first answer.
                conf.token_outage_until = time.monotonic() + conf.token_outage_pending_s
                conf.token_outage_pending_s = 0.0
                return self._count(service, Fault("token_outage", 503, conf.retry_after))
            if service in TOKEN_SERVICES and conf.token_outage_until > time.monotonic():
                return self._count(service, Fault("token_outage", 503, conf.retry_after))
            lost = conf.rate_lost_reply if write else 0.0
            if not (conf.rate_429 or conf.rate_5xx or conf.rate_drop or lost):
                return None
            roll = self._rngs[service].random()
            if roll < conf.rate_drop:
                return self._count(service, Fault("drop", 0))
            roll -= conf.rate_drop
            if roll < lost:
                return self._count(service, Fault("lost_reply", 0))
            roll -= lost
            if roll < conf.rate_429:
                return self._count(service, Fault("429", 429, conf.retry_after))
            roll -= conf.rate_429
            if roll < conf.rate_5xx:
                retry = conf.retry_after if conf.status_5xx in (503, 504) else None
                return self._count(service, Fault("5xx", conf.status_5xx, retry))
            return None

    def _count(self, service: str, fault: Fault) -> Fault:
        counts = self.injected[service]
        counts[fault.kind] = counts.get(fault.kind, 0) + 1
        return fault

    def latency_s(self, service: Optional[str] = None) -> float:
        """Seconds to delay one HTTP request (0 when no latency is configured); a delay for
        `service` is counted in `delayed` (evidence that a batch is delayed once)."""
        rtt = self.settings["rtt_ms"]
        if rtt <= 0:
            return 0.0
        jitter = self.settings["jitter"]
        with self._lock:
            factor = 1.0 + self._latency_rng.uniform(-jitter, jitter) if jitter else 1.0
            if service is not None:
                self.delayed[service] = self.delayed.get(service, 0) + 1
        return max(0.0, rtt * factor / 1000.0)


# -- how each service spells an injected failure ---------------------------------------------
_REASONS = {429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
            503: "Service Unavailable", 504: "Gateway Timeout"}


def fault_body(service: str, fault: Fault, context: Optional[Dict[str, str]] = None
               ) -> Tuple[int, Dict[str, str], Dict[str, Any]]:
    """(status, headers, JSON body) of an injected fault, in the service's own error format.
    `context` carries envelope details a front may add (Graph innerError)."""
    status = fault.status
    headers = fault.headers()
    reason = _REASONS.get(status, "Server Error")
    if service == "graph":
        code = {429: "TooManyRequests", 503: "ServiceUnavailable", 504: "GatewayTimeout",
                502: "BadGateway"}.get(status, "UnknownError")
        message = ("Too many requests. Please retry after some time." if status == 429
                   else "The service is temporarily unavailable. Please retry.")
        error = {"code": code, "message": message}
        if context:
            error["innerError"] = dict(context)
        return status, headers, {"error": error}
    if service in TOKEN_SERVICES:
        if service == "login":
            return status, headers, {
                "error": "temporarily_unavailable",
                "error_description": "AADSTS90033: A transient error has occurred. "
                                     "Please try again.",
                "error_codes": [90033],
            }
        return status, headers, {"error": "internal_failure",
                                 "error_description": "Backend Error"}
    if service in ("gmail", "directory"):
        if status == 429:
            reason_code, message, state = ("rateLimitExceeded", "Rate Limit Exceeded",
                                           "RESOURCE_EXHAUSTED")
            domain = "usageLimits"
        else:
            reason_code, message, state = ("backendError", "Backend Error", "UNAVAILABLE")
            domain = "global"
        return status, headers, {"error": {
            "code": status, "message": message, "status": state,
            "errors": [{"message": message, "domain": domain, "reason": reason_code}]}}
    if service == "cloudflare":
        code, message = ((971, "Please wait and consider throttling your request speed")
                         if status == 429 else (10000 + status, reason))
        errors = [{"code": code, "message": message}]
        return status, headers, {"success": False, "errors": errors, "messages": [],
                                 "result": None}
    return status, headers, {"error": reason}
