"""Provider throttling rules (not faults: real providers always apply them).

`MailboxThrottle` is Exchange Online's rule for Graph mail: per app and mailbox at most N
requests in flight and a request budget per sliding window. `QuotaWindow` is a per-key unit
budget per window (Gmail's per-user quota units per minute uses it).
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Callable, Deque, Dict, Optional, Tuple

CONCURRENCY_MESSAGE = "Application is over its MailboxConcurrency limit."
# The message of a budget 429 is not documented; this wording is the sandbox's choice.
BUDGET_MESSAGE = "Application is over its MailboxRequestBudget limit."


class MailboxThrottle:
    def __init__(self, settings: Callable[[str], object]):
        self._setting = settings  # Faults.setting: read live so control changes apply at once
        self._lock = threading.Lock()
        self.in_flight: Dict[Tuple[str, str], int] = {}
        self.recent: Dict[Tuple[str, str], Deque[float]] = {}
        self.peak: Dict[str, int] = {}  # mailbox -> most requests ever in flight at once
        self.throttled = 0

    def reset(self) -> None:
        with self._lock:
            self.in_flight.clear()
            self.recent.clear()
            self.peak.clear()
            self.throttled = 0

    def _enter(self, key: Tuple[str, str]) -> None:
        count = self.in_flight[key] = self.in_flight.get(key, 0) + 1
        if count > self.peak.get(key[1], 0):
            self.peak[key[1]] = count

    def try_acquire(self, app: str, mailbox: str) -> Optional[Tuple[str, float]]:
        """Take a slot for one request; None when granted, else (message, retry_after)."""
        key = (app, mailbox.lower())
        with self._lock:
            if not self._setting("throttling"):
                self._enter(key)
                return None
            if self.in_flight.get(key, 0) >= int(self._setting("graph_concurrency")):
                self.throttled += 1
                return CONCURRENCY_MESSAGE, float(self._setting("graph_throttle_retry_after"))
            now = time.monotonic()
            window = float(self._setting("graph_budget_window_s"))
            stamps = self.recent.setdefault(key, collections.deque())
            while stamps and stamps[0] <= now - window:
                stamps.popleft()
            if len(stamps) >= int(self._setting("graph_budget")):
                self.throttled += 1
                return BUDGET_MESSAGE, max(0.001, round(stamps[0] + window - now, 3))
            stamps.append(now)
            self._enter(key)
            return None

    def busy(self, mailbox: str) -> int:
        """Requests in flight on `mailbox` now, all apps together."""
        box = mailbox.lower()
        with self._lock:
            return sum(n for (_, key), n in self.in_flight.items() if key == box)

    def release(self, app: str, mailbox: str) -> None:
        key = (app, mailbox.lower())
        with self._lock:
            left = self.in_flight.get(key, 0) - 1
            if left > 0:
                self.in_flight[key] = left
            else:
                self.in_flight.pop(key, None)


class QuotaWindow:
    """Units per key per sliding window: `spend(key, units)` -> None or seconds to wait."""

    def __init__(self, limit: Callable[[], int], window_s: float = 60.0,
                 enabled: Callable[[], bool] = lambda: True):
        self._limit = limit
        self._enabled = enabled
        self.window_s = window_s
        self._lock = threading.Lock()
        self.spent: Dict[str, Deque[Tuple[float, int]]] = {}
        self.totals: Dict[str, int] = {}

    def reset(self) -> None:
        with self._lock:
            self.spent.clear()
            self.totals.clear()

    def spend(self, key: str, units: int) -> Optional[float]:
        if not self._enabled():
            return None
        now = time.monotonic()
        with self._lock:
            entries = self.spent.setdefault(key, collections.deque())
            total = self.totals.get(key, 0)
            while entries and entries[0][0] <= now - self.window_s:
                total -= entries.popleft()[1]
            if total + units > self._limit():
                self.totals[key] = total
                wait = (entries[0][0] + self.window_s - now) if entries else self.window_s
                return max(0.001, round(wait, 3))
            entries.append((now, units))
            self.totals[key] = total + units
            return None
