"""Run a retraction: one outcome per copy, streamed as providers answer.

Shape of a run (threads, all daemon so a cancelled run never keeps the process alive):

    feeder ──(bounded lane per provider)──> provider worker ──┐
      │  dedupe, policy, ledger skip                            ├──(bounded)──> run() caller
      └── out_of_scope outcomes ─────────────────────────────────┘

- The feeder walks the recipients lazily, drops repeats (a seen-set is the only per-copy state
  the run keeps), refuses protected mailboxes and unconfigured domains with `out_of_scope`
  outcomes, answers copies the ledger already shows in the destination (when asked to skip
  them) with an `already_in_destination` outcome of 0 attempts that names the earlier run,
  and puts the rest on its provider's lane. A full lane blocks the feeder: memory stays
  bounded. Every copy asked for gets exactly one outcome in every run.
- Each provider gets one worker thread that hands the lane to `MailProvider.retract`; the
  provider batches and parallelises internally. Providers run concurrently with each other.
- The caller's thread yields outcomes, batches them to the ledger, and expands groups: a
  copy that ends `not_a_mailbox` is asked `expand_group`, and members not seen in this run
  join it as `Target(member, via_group=group)`. Members go on their lane without blocking
  (they are already in memory), so the caller's thread never waits on a lane and the
  pipeline cannot deadlock.
- `ProviderUnavailable` (or any crash) in a provider fails every copy of that provider still
  in flight, queued or yet to come, with `attempts=0`, and the rest of the run goes on.

The ledger: the run is recorded as started before any thread starts or any provider is asked,
and a ledger that cannot record it stops the run there (`LedgerUnavailable`): nothing is
retracted without a record. A write failing later in the run is logged and counted instead,
since by then mail is moving and the rest of the run matters more than the bookkeeping.
A run may be one chunk of a larger run (`finish=False`): it records its outcomes under the
shared run id and leaves finishing the run to whoever aggregates the chunks.
"""
from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from typing import (
    Any, Callable, Deque, Dict, Iterator, List, Mapping, Optional, Set, Tuple)

from retraction.campaign import Earlier
from retraction.config import ConfigError, mask_url
from retraction.model import Outcome, Reason, RetractionRequest, Status, utc_now
from retraction.policy import INVALID_MEMBER, REFUSAL_CODES, Policy, Route
from retraction.providers.base import MailProvider, ProviderUnavailable, Target
from retraction.validation import MAX_ADDRESS, InvalidRequest, address, address_key

log = logging.getLogger(__name__)

LEDGER_BATCH = 200  # outcomes per ledger write ...
LEDGER_INTERVAL_S = 0.5  # ... or at least this often while outcomes arrive
SKIP_LOOKUP_CHUNK = 500  # recipients per ledger "already retracted" query
OUT_QUEUE_SIZE = 1000
CANCEL_POLL_S = 0.2
SKIPPED_CODE = "skipped_already_retracted"  # error_code of an outcome the ledger answered


class LedgerUnavailable(ConfigError):
    """The ledger at `ledger_url` cannot be opened, or cannot record that a run started.
    Raised before any provider call; the message never shows a database password."""

    def __init__(self, problem: str):
        super().__init__("ledger_url", mask_url(problem))


class RunCounts:
    """The run's aggregate, accumulated while streaming (no outcome is kept)."""

    def __init__(self) -> None:
        self.total = 0  # outcomes yielded
        self.attempted = 0  # outcomes for which a provider was actually asked
        self.skipped = 0  # of total: copies answered from the ledger (already there)
        # of total: copies failed unasked because their provider was unavailable (credentials
        # rejected, not configured, crashed), as opposed to copies the pack's policy refused
        self.unavailable = 0
        self.by_status: Dict[str, int] = collections.Counter()
        self.by_reason: Dict[str, int] = collections.Counter()
        self.by_provider: Dict[str, int] = collections.Counter()
        self.read = 0
        self.unread = 0
        self.ledger_errors = 0

    def add(self, outcome: Outcome) -> None:
        self.total += 1
        if outcome.attempts > 0:
            self.attempted += 1
        elif outcome.status == Status.FAILED and not _refused_by_policy(outcome):
            self.unavailable += 1
        self.by_status[outcome.status] += 1
        if outcome.reason:
            self.by_reason[outcome.reason] += 1
        self.by_provider[outcome.provider or "none"] += 1
        if outcome.status == Status.RETRACTED and outcome.was_read is not None:
            if outcome.was_read:
                self.read += 1
            else:
                self.unread += 1

    @property
    def nothing_attempted(self) -> bool:
        """No provider could be asked for any copy: the run failed as a whole. Copies the
        ledger answered (already there) and copies the pack's policy refused (protected
        mailbox, unconfigured domain) have definitive outcomes without an attempt, so a run
        of only those is not a failure; copies failed by an unavailable provider are."""
        return self.unavailable > 0 and not self.attempted

    def to_dict(self) -> Dict[str, Any]:
        return {
            "total": self.total,
            "attempted": self.attempted,
            "skipped": self.skipped,
            "by_status": dict(sorted(self.by_status.items())),
            "by_reason": dict(sorted(self.by_reason.items())),
            "by_provider": dict(sorted(self.by_provider.items())),
            "read": self.read,
            "unread": self.unread,
            "ledger_errors": self.ledger_errors,
        }


def _refused_by_policy(outcome: Outcome) -> bool:
    return outcome.reason == Reason.OUT_OF_SCOPE and outcome.error_code in REFUSAL_CODES


class LedgerHook:
    """The engine's only contact with the ledger, kept in one place so names can be aligned.

    Ledger API used (`retraction.ledger.Ledger`): `record_run_started(request)`,
    `record_outcomes(outcomes)`, `record_run_finished(run_id, state)` with state `finished`
    or `failed` (the ledger computes the metric record from the outcomes), and for the skip
    list `placed_by(message_id, destination, recipients)` (which run put a copy where it is).
    Calls are serialised (the feeder and the caller's thread both use it). Recording the
    start is a precondition (`LedgerUnavailable`); any later failure is logged and counted,
    never fatal: taking the mail back out matters more than the bookkeeping, and the action
    reports the error."""

    def __init__(self, ledger: Any, counts: RunCounts, batch: int = LEDGER_BATCH,
                 interval_s: float = LEDGER_INTERVAL_S):
        self._ledger = ledger
        self._counts = counts
        self._batch = batch
        self._interval = interval_s
        self._lock = threading.Lock()
        self._pending: List[Outcome] = []
        self._last_flush = time.monotonic()

    def _call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        if self._ledger is None:
            return None
        with self._lock:
            try:
                return fn(*args)
            except Exception as exc:  # a ledger problem must not stop a retraction
                self._counts.ledger_errors += 1
                log.error("ledger %s failed: %s: %s", what, type(exc).__name__, exc)
                return None

    def started(self, request: RetractionRequest) -> None:
        """Record the run as started, or raise LedgerUnavailable: no provider is asked yet."""
        if self._ledger is None:
            return
        with self._lock:
            try:
                self._ledger.record_run_started(request)
            except Exception as exc:
                raise LedgerUnavailable("cannot record run %s as started: %s: %s" % (
                    request.run_id, type(exc).__name__, str(exc)[:300])) from None

    def already_retracted(self, request: RetractionRequest, recipients: List[str]
                          ) -> Dict[str, Earlier]:
        """address key -> the earlier run that put the copy in this destination."""
        if self._ledger is None or not recipients:
            return {}
        ledger = self._ledger
        found = self._call("placed_by", lambda: ledger.placed_by(
            request.message_id, request.destination.value, recipients))
        return {address_key(a): earlier for a, earlier in (found or {}).items()}

    def add(self, outcome: Outcome) -> None:
        if self._ledger is None:
            return
        self._pending.append(outcome)
        self.tick()

    def tick(self) -> None:
        due = time.monotonic() - self._last_flush >= self._interval
        if self._pending and (len(self._pending) >= self._batch or due):
            self.flush()

    def flush(self) -> None:
        if self._ledger is None or not self._pending:
            return
        batch, self._pending = self._pending, []
        self._last_flush = time.monotonic()
        self._call("record_outcomes", self._ledger.record_outcomes, batch)

    def finished(self, run_id: str, completed: bool, finish: bool = True) -> None:
        """Flush; then close the run, unless it is a chunk (`finish=False`)."""
        self.flush()
        if self._ledger is not None and finish:
            self._call("record_run_finished", self._ledger.record_run_finished, run_id,
                       "finished" if completed else "failed")


class _Lane:
    """The targets handed to one `MailProvider.retract` call, as a thread-safe iterator (a
    provider may pull from several threads). The feeder's lane is bounded (`put` blocks while
    it is full); a group's lane is filled at once and closed. A lane remembers what the
    provider took but has not answered yet, so those copies can be failed if it stops."""

    def __init__(self, slot: "_Slot", capacity: Optional[int]):
        self._slot = slot
        self._capacity = capacity
        # A full lane takes targets again once it is down to this many, so the feeder and the
        # provider trade places once per quarter lane rather than once per copy.
        self._resume_at = None if capacity is None else min(capacity - 1, capacity * 3 // 4)
        self._cond = threading.Condition()
        self._items: Deque[Target] = collections.deque()
        self._closed = False
        self._killed = False
        self._in_flight: Dict[str, Target] = {}
        self._feeder_waits = False  # put() waits for room (both flags under _cond)
        self._takers_waiting = 0  # __next__ calls waiting for a target

    def _stopped(self) -> bool:
        return self._killed or self._slot.dead is not None or self._slot.cancelled.is_set()

    def put(self, target: Target) -> bool:
        """Queue a target; False when the provider is already known to be unavailable."""
        with self._cond:
            if self._capacity is not None and len(self._items) >= self._capacity:
                self._feeder_waits = True
                while len(self._items) > self._resume_at and not self._stopped():
                    self._cond.wait(CANCEL_POLL_S)
                self._feeder_waits = False
            if self._stopped():
                return False
            self._items.append(target)
            if self._takers_waiting:
                self._cond.notify_all()
            return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def kill(self) -> List[Target]:
        """Stop the lane; return every target it still owed an outcome for (once)."""
        with self._cond:
            self._killed = True
            owed = list(self._in_flight.values()) + list(self._items)
            self._in_flight.clear()
            self._items.clear()
            self._cond.notify_all()
            return owed

    def answered(self, recipient: str) -> bool:
        with self._cond:
            return self._in_flight.pop(address_key(recipient), None) is not None

    def __iter__(self) -> "_Lane":
        return self

    def __next__(self) -> Target:
        with self._cond:
            while not self._items and not self._closed and not self._stopped():
                self._takers_waiting += 1
                try:
                    self._cond.wait(CANCEL_POLL_S)
                finally:
                    self._takers_waiting -= 1
            if not self._items or self._stopped():
                raise StopIteration
            target = self._items.popleft()
            self._in_flight[address_key(target.recipient)] = target
            if self._feeder_waits and len(self._items) <= self._resume_at:
                self._cond.notify_all()
            return target


class _Slot:
    """One provider within one run: the feeder's lane, the lanes of expanded groups (run one
    after another by a second worker, so a provider never sees more than two `retract` calls
    of a run at once), and whether the provider is still available."""

    def __init__(self, name: str, cancelled: threading.Event):
        self.name = name
        self.cancelled = cancelled
        self.dead: Optional[ProviderUnavailable] = None
        self.main: Optional[_Lane] = None
        self.groups: "queue.Queue[Optional[_Lane]]" = queue.Queue()
        self.members_worker = False
        self._lock = threading.Lock()
        self._lanes: List[_Lane] = []

    def new_lane(self, capacity: Optional[int]) -> _Lane:
        lane = _Lane(self, capacity)
        with self._lock:
            self._lanes.append(lane)
        return lane

    def drop(self, lane: _Lane) -> None:
        with self._lock:
            if lane in self._lanes:
                self._lanes.remove(lane)

    def kill(self, error: ProviderUnavailable) -> List[Target]:
        """The provider is unavailable for the rest of the run: every copy it still owes
        (taken, queued, or in a group's lane) is returned to be failed."""
        with self._lock:
            if self.dead is None:
                self.dead = error
            lanes = list(self._lanes)
        owed: List[Target] = []
        for lane in lanes:
            owed.extend(lane.kill())
        return owed


def _no_outcome() -> ProviderUnavailable:
    return ProviderUnavailable(Reason.PROVIDER_ERROR.value, "NoOutcome",
                               "the provider ended without an outcome for this copy")


class _FeederDone:
    def __init__(self, dispatched: int, skipped: int):
        self.dispatched = dispatched
        self.skipped = skipped


class _WorkerDone:
    def __init__(self, worker: str):
        self.worker = worker


class _Crash:
    def __init__(self, error: BaseException):
        self.error = error


class Run:
    """The stream of one run's outcomes. Iterate it; `counts` fills as outcomes arrive.
    Closing it early (or breaking out of a loop over it) cancels the run's threads."""

    def __init__(self, engine: "Engine", request: RetractionRequest, skip: bool,
                 finish: bool = True):
        self.request = request
        self.run_id = request.run_id
        self.counts = RunCounts()
        self.finished = False
        self._engine = engine
        self._skip = skip
        self._cancelled = threading.Event()
        self._out: "queue.Queue[Any]" = queue.Queue(OUT_QUEUE_SIZE)
        self._slots: Dict[str, _Slot] = {}
        self._workers: Set[str] = set()
        self._lock = threading.Lock()
        self._seen: Set[str] = set()
        self._finish = finish
        self._ledger = LedgerHook(engine.ledger, self.counts)
        self._ledger.started(request)  # raises before any thread or provider is touched
        self._gen = self._stream()

    def __iter__(self) -> "Run":
        return self

    def __next__(self) -> Outcome:
        return next(self._gen)

    def close(self) -> None:
        self._gen.close()

    # -- the caller's thread ------------------------------------------------------------------

    def _stream(self) -> Iterator[Outcome]:
        ledger = self._ledger
        threading.Thread(target=self._feed, name="retraction-feeder", daemon=True).start()
        fed: Optional[int] = None  # copies the feeder put in flight, once it is done
        extra = 0  # group members put on lanes by this thread
        received = 0  # outcomes that came back through the out queue
        done: Set[str] = set()
        closed = False
        try:
            while True:
                try:
                    item = self._out.get(timeout=LEDGER_INTERVAL_S)
                except queue.Empty:
                    ledger.tick()
                    continue
                if isinstance(item, _Crash):
                    raise RuntimeError("retraction engine failed") from item.error
                if isinstance(item, _FeederDone):
                    fed = item.dispatched
                    self.counts.skipped += item.skipped
                elif isinstance(item, _WorkerDone):
                    done.add(item.worker)
                else:
                    received += 1
                    self._account(item)
                    yield item
                    if self._expandable(item):
                        added, direct = self._expand(item)
                        extra += added
                        for outcome in direct:
                            self._account(outcome)
                            yield outcome
                if not closed and fed is not None and received >= fed + extra:
                    closed = True  # every copy is answered: let the group workers go
                    with self._lock:
                        for slot in self._slots.values():
                            slot.groups.put(None)
                if closed:
                    with self._lock:
                        if done >= self._workers:
                            break
            self.finished = True
        finally:
            self._cancelled.set()
            ledger.finished(self.request.run_id, self.finished, self._finish)

    def _account(self, outcome: Outcome) -> None:
        self.counts.add(outcome)
        self._ledger.add(outcome)

    def _expandable(self, outcome: Outcome) -> bool:
        return (self._engine.policy.expand_groups and outcome.status == Status.FAILED
                and outcome.reason == Reason.NOT_A_MAILBOX and outcome.provider is not None)

    def _expand(self, outcome: Outcome) -> Tuple[int, List[Outcome]]:
        """Members of a group join the run. Returns (targets put on lanes, direct outcomes)."""
        group = outcome.recipient
        try:
            members = self._engine.providers[outcome.provider].expand_group(group)
        except Exception as exc:  # the group keeps its not_a_mailbox outcome
            log.warning("expanding group %s failed: %s: %s", group, type(exc).__name__, exc)
            return 0, []
        fresh: List[str] = []
        direct: List[Outcome] = []
        for member in members or ():
            try:
                member = address(member, "group member")
            except InvalidRequest as exc:
                direct.append(self._failed(Target(str(member)[:MAX_ADDRESS], group), None,
                                           Reason.OUT_OF_SCOPE, INVALID_MEMBER, str(exc)))
                continue
            if self._claim(member):
                fresh.append(member)
        request = self.request
        skip = self._ledger.already_retracted(request, fresh) if self._skip else {}
        lanes: Dict[str, _Lane] = {}
        added = 0
        for member in fresh:
            target = Target(member, via_group=group)
            route = self._engine.policy.route(member, request.provider)
            earlier = skip.get(address_key(member))
            if earlier is not None:
                self.counts.skipped += 1
                direct.append(self._skipped(target, route, earlier))
                continue
            if not route.allowed:
                direct.append(self._refused(target, route))
                continue
            slot = self._slot(route.provider)
            if route.provider not in lanes:
                lanes[route.provider] = slot.new_lane(None)
            if lanes[route.provider].put(target):
                added += 1
            else:
                direct.append(self._unavailable(target, slot))
        for name, lane in lanes.items():
            lane.close()
            self._start_members_worker(self._slot(name))
            self._slot(name).groups.put(lane)
        return added, direct

    # -- the feeder thread --------------------------------------------------------------------

    def _claim(self, recipient: str) -> bool:
        """True the first time an address is seen in this run (recipients and members)."""
        key = address_key(recipient)
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
            return True

    def _feed(self) -> None:
        dispatched = skipped = 0
        try:
            chunk: List[str] = []
            for recipient in self.request.recipients:  # _claim drops repeats, first spelling
                chunk.append(recipient)
                if len(chunk) >= SKIP_LOOKUP_CHUNK:
                    n, s = self._feed_chunk(chunk)
                    dispatched, skipped, chunk = dispatched + n, skipped + s, []
            if chunk:
                n, s = self._feed_chunk(chunk)
                dispatched, skipped = dispatched + n, skipped + s
        except BaseException as exc:  # a bug: surface it in the caller's thread
            self._put(_Crash(exc))
        finally:
            # Closing the lanes lets batching providers send their last, partial batch.
            with self._lock:
                for slot in self._slots.values():
                    if slot.main is not None:
                        slot.main.close()
            self._put(_FeederDone(dispatched, skipped))

    def _feed_chunk(self, chunk: List[str]) -> Tuple[int, int]:
        request = self.request
        done = self._ledger.already_retracted(request, chunk) if self._skip else {}
        slots: Dict[str, _Slot] = {}  # this chunk's, without the run's lock for every copy
        dispatched = skipped = 0
        for recipient in chunk:
            if self._cancelled.is_set():
                break
            if not self._claim(recipient):
                continue  # a repeat, or already joined as a group member
            target = Target(recipient)
            route = self._engine.policy.route(recipient, request.provider)
            dispatched += 1
            earlier = done.get(address_key(recipient)) if done else None
            if earlier is not None:  # answered from the ledger: no provider call
                skipped += 1
                self._put(self._skipped(target, route, earlier))
                continue
            if not route.allowed:
                self._put(self._refused(target, route))
                continue
            slot = slots.get(route.provider)
            if slot is None:
                slot = slots[route.provider] = self._slot(route.provider)
            if slot.main is None:
                slot.main = slot.new_lane(self._engine.lane_capacity)
                self._start_worker(slot.name, self._work_main, slot)
            if not slot.main.put(target):  # the provider died or stopped taking copies
                self._put(self._unavailable(target, slot, _no_outcome()))
        return dispatched, skipped

    def _put(self, item: Any) -> None:
        while not self._cancelled.is_set():
            try:
                self._out.put(item, timeout=CANCEL_POLL_S)
                return
            except queue.Full:
                continue

    # -- provider workers ---------------------------------------------------------------------

    def _slot(self, name: str) -> _Slot:
        with self._lock:
            slot = self._slots.get(name)
            if slot is None:
                slot = self._slots[name] = _Slot(name, self._cancelled)
            return slot

    def _start_worker(self, worker: str, fn: Callable[[_Slot], None], slot: _Slot) -> None:
        with self._lock:
            self._workers.add(worker)
        thread = threading.Thread(target=self._worker, args=(worker, fn, slot),
                                  name="retraction-" + worker, daemon=True)
        thread.start()

    def _start_members_worker(self, slot: _Slot) -> None:
        if not slot.members_worker:
            slot.members_worker = True
            self._start_worker(slot.name + "-groups", self._work_groups, slot)

    def _worker(self, worker: str, fn: Callable[[_Slot], None], slot: _Slot) -> None:
        try:
            fn(slot)
        except BaseException as exc:
            self._put(_Crash(exc))
        finally:
            self._put(_WorkerDone(worker))

    def _work_main(self, slot: _Slot) -> None:
        assert slot.main is not None
        self._drive(slot, slot.main)

    def _work_groups(self, slot: _Slot) -> None:
        while not self._cancelled.is_set():
            try:
                lane = slot.groups.get(timeout=CANCEL_POLL_S)
            except queue.Empty:
                continue
            if lane is None:
                return
            self._drive(slot, lane)

    def _drive(self, slot: _Slot, lane: _Lane) -> None:
        """One `retract` call over one lane; every target taken gets exactly one outcome."""
        error: Optional[ProviderUnavailable] = None
        if slot.dead is None:
            try:
                try:
                    provider = self._engine.providers[slot.name]
                except KeyError:
                    raise ProviderUnavailable(
                        Reason.OUT_OF_SCOPE.value, "ProviderNotConfigured",
                        "no %s provider is configured" % slot.name) from None
                for outcome in provider.retract(self.request, lane):
                    if lane.answered(outcome.recipient):
                        self._put(outcome)
                    else:  # one outcome per target taken: keep the counts honest
                        log.warning("%s answered for %s, which it was not given (or "
                                    "twice); dropped", slot.name, outcome.recipient)
            except ProviderUnavailable as exc:
                error = exc
            except Exception as exc:
                log.exception("%s provider failed", slot.name)
                error = ProviderUnavailable(Reason.PROVIDER_ERROR.value, type(exc).__name__,
                                            str(exc)[:500])
        if error is not None:
            for target in slot.kill(error):
                self._put(self._unavailable(target, slot))
        for target in lane.kill():  # taken but unanswered, or queued after the provider died
            self._put(self._unavailable(target, slot, _no_outcome()))
        slot.drop(lane)

    # -- outcomes the engine writes itself ----------------------------------------------------

    def _failed(self, target: Target, provider: Optional[str], reason: Reason,
                code: Optional[str], message: str) -> Outcome:
        request = self.request
        return Outcome(
            run_id=request.run_id, message_id=request.message_id, recipient=target.recipient,
            provider=provider, destination=request.destination.value, mode=request.mode.value,
            trigger=request.trigger.value, status=Status.FAILED.value, reason=reason.value,
            disposition=request.disposition.value if request.disposition else None,
            error_code=code, error_message=message, via_group=target.via_group,
            verdict_time=request.verdict_time, requested_at=request.requested_at,
            completed_at=utc_now(), attempts=0, requested_by=request.requested_by,
            comment=request.comment)

    def _skipped(self, target: Target, route: Route, earlier: Earlier) -> Outcome:
        """The copy's outcome in this run when the ledger already shows it in the
        destination: already there, nothing asked (0 attempts), and which run put it there."""
        request = self.request
        destination = request.destination.value
        if earlier.status == Status.RETRACTED:
            why = "retracted earlier by run %s" % earlier.run_id
        else:
            why = "found in %s earlier by run %s" % (destination, earlier.run_id)
        return Outcome(
            run_id=request.run_id, message_id=request.message_id, recipient=target.recipient,
            provider=route.provider, destination=destination, mode=request.mode.value,
            trigger=request.trigger.value, status=Status.ALREADY_IN_DESTINATION.value,
            disposition=request.disposition.value if request.disposition else None,
            error_code=SKIPPED_CODE,
            error_message="%s; the ledger shows the copy in %s, so it was not looked up "
                          "again" % (why, destination),
            via_group=target.via_group, verdict_time=request.verdict_time,
            requested_at=request.requested_at, completed_at=utc_now(), attempts=0,
            requested_by=request.requested_by, comment=request.comment)

    def _refused(self, target: Target, route: Route) -> Outcome:
        return self._failed(target, route.provider, Reason.OUT_OF_SCOPE, route.refusal_code,
                            route.refusal or "refused by policy")

    def _unavailable(self, target: Target, slot: _Slot,
                     error: Optional[ProviderUnavailable] = None) -> Outcome:
        error = slot.dead or error or ProviderUnavailable(
            Reason.PROVIDER_ERROR.value, "Cancelled", "the run was cancelled")
        try:
            reason = Reason(error.reason)
        except ValueError:
            reason = Reason.PROVIDER_ERROR
        return self._failed(target, slot.name, reason, error.code, error.message)


class Engine:
    """Runs retractions over lazily built providers, under one policy, into an optional
    ledger. `providers` maps a provider name to its MailProvider; it may build on first
    access (see `retraction.bootstrap`) and may raise ProviderUnavailable or KeyError."""

    def __init__(self, providers: Mapping[str, MailProvider], policy: Policy,
                 ledger: Any = None, limits: Any = None):
        self.providers = providers
        self.policy = policy
        self.ledger = ledger
        concurrency = int(getattr(limits, "provider_concurrency", 16) or 16)
        # Enough queued targets to keep a provider's batches full (Gmail batches 100).
        self.lane_capacity = max(200, 4 * concurrency)

    def run(self, request: RetractionRequest, skip_already_retracted: bool = False,
            finish: bool = True) -> Run:
        """Stream one Outcome per copy. Request-wide refusals (hard delete not allowed) raise
        InvalidRequest here, and a ledger that cannot record the start LedgerUnavailable,
        before any thread starts or any provider is built. `finish=False`: this run is one
        chunk of `request.run_id`; its outcomes are recorded but the run is left open."""
        self.policy.admit(request)
        return Run(self, request, skip_already_retracted, finish)
