"""One Gmail retraction run: a pipeline of per-copy steps packed into multipart batches.

Per copy: token (per subject, cached) -> `messages.list(q=rfc822msgid:<id>)` -> `messages.get
(format=metadata, Message-ID)` per hit -> act only on hits whose Message-ID header equals the
requested id exactly -> untrash / modify / trash / delete until the labels say the copy is in
the destination. Every step of every copy is a part of some batch; a batch mixes mailboxes and
steps. The run thread owns all state; pool threads only send batches and fetch tokens, a
reader thread only pulls targets, and all report back through one queue. Targets are read in
a window, so memory is bounded by what is in flight, not by the size of the run.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from collections import deque
from typing import Any, Deque, Dict, Iterable, Iterator, List, Optional, Tuple

from retraction.model import Destination, Outcome, Provider, Reason, Status, utc_now
from retraction.providers.base import ProviderUnavailable, Target
from retraction.providers.gmail_auth import (
    CREDENTIALS, NOT_A_MAILBOX, UNAUTHORIZED_CLIENT, TokenFailure, backoff_delay)
from retraction.providers.gmail_batch import PartError
from retraction.providers.gmail_copy import (
    GMAIL_ID_RE, MAX_STEPS, Call, CopyTask, folder_of, in_destination, message_id_header,
    next_action)

LOG = logging.getLogger(__name__)

# Longest a partial batch waits to fill while half the batch slots are busy: well under a
# round trip, so a part never waits longer than the answers it could share a batch with.
HOLD_S = 0.02
HARD_DELETED_NOTE = "; hard-deleted copies cannot be restored"


class Run:
    """State of one `retract()` call. Driven by `outcomes()` in the caller's thread."""

    def __init__(self, provider: Any, request: Any, scopes: Tuple[str, ...]):
        self.p = provider
        self.request = request
        self.destination = Destination(request.destination)
        self.scopes = scopes
        self.query = "rfc822msgid:" + request.message_id
        self.events: queue.Queue = queue.Queue()
        self.ready: Deque[Call] = deque()
        self.delayed: List[Tuple[float, int, Call]] = []
        self.seq = itertools.count()
        self.token_wait: Dict[str, List[Call]] = {}
        self.parked: List[Tuple[CopyTask, TokenFailure]] = []
        self.probe = None  # None | "pending" | "granted" | "denied" | "failed"
        self.inflight = 0
        self.live = 0
        self.finished: Deque[Outcome] = deque()
        self.fatal: Optional[ProviderUnavailable] = None
        self.window = max(provider.batch_size, provider.concurrency * provider.batch_size)
        self.slots = threading.Semaphore(self.window)  # copies pulled and not yet yielded
        self.stopped = threading.Event()
        self.exhausted = False
        self.started = time.monotonic()
        self.hold_until: Optional[float] = None  # partial batch held until then (_dispatch)

    # -- the loop ------------------------------------------------------------------------------
    def outcomes(self, targets: Iterable[Target]) -> Iterator[Outcome]:
        # A reader thread pulls targets (the engine's lane may block) so this thread never
        # waits on the caller while batches complete; `slots` bounds what is pulled and not
        # yet yielded to `window` copies.
        reader = threading.Thread(target=self._read, args=(iter(targets),),
                                  name="gmail-targets", daemon=True)
        reader.start()
        try:
            while True:
                while self.finished:
                    outcome = self.finished.popleft()
                    self.slots.release()
                    yield outcome
                self._release_delayed()
                self._dispatch()
                if self.finished:
                    continue
                if self.live == 0 and (self.exhausted or self.fatal is not None):
                    break
                if (self.inflight or self.token_wait or self.delayed or self.live == 0
                        or self.probe == "pending"):
                    self._wait()
                elif self.parked and (self.exhausted or self.live >= self.window):
                    self._resolve_parked(final=True)  # no copy left that could prove delegation
                elif self.parked:  # more targets may bring a proof; wait for them
                    self._wait()
                else:  # every live copy waits on a token, a batch, a retry or the probe
                    raise RuntimeError("gmail run stalled with %d copies live" % self.live)
        finally:
            self.stopped.set()
            self.slots.release()  # wake the reader if it waits for a slot
        if self.fatal is not None:
            raise self.fatal

    def _read(self, it: Iterator[Target]) -> None:
        try:
            while True:
                self.slots.acquire()
                if self.stopped.is_set():
                    return
                try:
                    target = next(it)
                except StopIteration:
                    self.events.put(("end",))
                    return
                if self.stopped.is_set():
                    return
                self.events.put(("target", target))
        except BaseException as exc:  # the caller's iterator failed: re-raised by the run
            self.events.put(("error", exc))

    def _wait(self) -> None:
        due = [self.delayed[0][0]] if self.delayed else []
        if self.hold_until is not None and self.ready:
            due.append(self.hold_until)
        timeout = max(0.0, min(due) - time.monotonic()) if due else None
        try:
            event = self.events.get(timeout=timeout)
        except queue.Empty:
            return
        while True:  # drain, so the next dispatch packs everything that arrived
            self._handle(event)
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return

    def _handle(self, event: Tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "target":
            if self.fatal is None:
                self._start(event[1])
            else:
                self.slots.release()  # not started: no outcome will free its slot
        elif kind == "end":
            self.exhausted = True
        elif kind == "error":
            raise event[1]
        elif kind == "batch":
            self.inflight -= 1
            self._batch_done(event[1], event[2])
        elif kind == "token":
            self._token_done(event[1], event[2], self.token_wait.pop(event[1], []))
        else:
            self._probe_done(event[1])

    # -- tasks -----------------------------------------------------------------------------------
    def _start(self, target: Target) -> None:
        self.live += 1
        task = CopyTask(target, time.monotonic() + self.p.limits.retry_budget_s)
        self._need_token(Call(task, "list"))

    def _finish(self, task: CopyTask, status: Status, reason: Optional[Reason] = None,
                code: Optional[str] = None, message: Optional[str] = None) -> None:
        if task.done:
            return
        task.done = True
        self.live -= 1
        r = self.request
        self.finished.append(Outcome(
            run_id=r.run_id, message_id=r.message_id, recipient=task.target.recipient,
            provider=Provider.GOOGLE.value, destination=self.destination.value,
            mode=str(r.mode), trigger=str(r.trigger), status=status.value,
            reason=reason.value if reason else None,
            disposition=str(r.disposition) if r.disposition else None,
            error_code=code, error_message=message, was_read=task.was_read,
            source_folder=task.source_folder, via_group=task.target.via_group,
            verdict_time=r.verdict_time, requested_at=r.requested_at, completed_at=utc_now(),
            attempts=task.attempts, requested_by=r.requested_by, comment=r.comment))

    def _fail(self, task: CopyTask, reason: Reason, error: Any) -> None:
        self._finish(task, Status.FAILED, reason, error.code, error.message)

    def _drop(self, task: CopyTask) -> None:
        """The pack's credentials were refused: this copy gets no outcome (ProviderUnavailable)."""
        if not task.done:
            task.done = True
            self.live -= 1
            self.slots.release()

    # -- tokens ----------------------------------------------------------------------------------
    def _need_token(self, call: Call) -> None:
        task = call.task
        if task.creds is not None and task.creds.valid:
            self.ready.append(call)
            return
        if self.fatal is not None:
            return self._drop(task)
        key = task.subject.lower()
        if key in self.token_wait:
            self.token_wait[key].append(call)
            return
        future = self.p.tokens.get(task.subject, self.scopes)
        if future.done():
            return self._token_done(key, future, [call])
        self.token_wait[key] = [call]
        future.add_done_callback(lambda f, k=key: self.events.put(("token", k, f)))

    def _token_done(self, key: str, future: Any, calls: List[Call]) -> None:
        try:
            creds = future.result()
        except TokenFailure as failure:
            for call in calls:
                self._token_failed(call.task, failure)
            return
        for call in calls:
            if not call.task.done:
                call.task.creds = creds
                self.ready.append(call)
        if self.parked:
            self._resolve_parked()

    def _token_failed(self, task: CopyTask, failure: TokenFailure) -> None:
        if task.done:
            return
        task.attempts += failure.attempts - 1
        if failure.kind == CREDENTIALS:
            if self.fatal is None:
                LOG.error("Google refused the service account: %s", failure.code)
                self.fatal = ProviderUnavailable(
                    Reason.NOT_AUTHORIZED.value, failure.code,
                    "Google refused the service account %s: %s"
                    % (self.p.tokens.service_account_email, failure.message))
            self._drop(task)
        elif failure.kind == NOT_A_MAILBOX:
            self._fail(task, Reason.NOT_A_MAILBOX, failure)
        elif failure.kind == UNAUTHORIZED_CLIENT:
            self.parked.append((task, failure))
            self._resolve_parked()
            if self.parked and self.probe is None:
                self._start_probe()
        else:
            self._fail(task, Reason.PROVIDER_ERROR, failure)

    def _start_probe(self) -> None:
        """Ask for a fresh token for a known user (the directory admin) with the same scopes:
        if granted, delegation works and a refused subject is not a mailbox."""
        admin = self.p.settings.directory_admin
        if not admin:
            self.probe = "failed"
            return
        self.probe = "pending"
        self.p.tokens.get(admin, self.scopes, fresh=True).add_done_callback(
            lambda f: self.events.put(("probe", f)))

    def _probe_done(self, future: Any) -> None:
        try:
            future.result()
            self.probe = "granted"
        except TokenFailure as failure:
            self.probe = "denied" if failure.kind == UNAUTHORIZED_CLIENT else "failed"
        self._resolve_parked()

    def _resolve_parked(self, final: bool = False) -> None:
        granted = self.probe == "granted" or self.p.tokens.granted(self.scopes, self.started)
        if not (granted or final or self.probe == "denied"):
            return
        parked, self.parked = self.parked, []
        for task, failure in parked:
            if granted:
                self._finish(task, Status.FAILED, Reason.NOT_A_MAILBOX, failure.code,
                             failure.message + " (delegation works for other mailboxes: "
                             "this address is a group or has no mailbox)")
            else:
                self._finish(task, Status.FAILED, Reason.NOT_AUTHORIZED, failure.code,
                             failure.message + " (domain-wide delegation or these scopes "
                             "are not granted: %s)" % " ".join(self.scopes))

    # -- batches ---------------------------------------------------------------------------------
    def _release_delayed(self) -> None:
        now = time.monotonic()
        while self.delayed and self.delayed[0][0] <= now:
            call = heapq.heappop(self.delayed)[2]
            if not call.task.done:
                self._need_token(call)

    def _dispatch(self) -> None:
        """Ready parts go out while a slot is free, up to batch_size parts a batch.

        A batch costs a round trip and fixed CPU on both ends whatever its size, and parts
        trickle in behind tokens and answers: sent at once, batches would carry a fifth of
        batch_size. So while half the slots are busy (answers, and the parts they bring, are
        due soon) fewer than batch_size ready parts wait, for at most HOLD_S; with fewer
        batches in flight (start, drain) they go at once, adding no latency."""
        size, concurrency = self.p.batch_size, self.p.concurrency
        half = max(1, concurrency // 2)
        while self.ready and self.inflight < concurrency:
            if self.inflight >= half and len(self.ready) < size:
                now = time.monotonic()
                if self.hold_until is None:
                    self.hold_until = now + HOLD_S
                if now < self.hold_until:
                    return
            self.hold_until = None
            calls = []
            while self.ready and len(calls) < size:
                call = self.ready.popleft()
                if call.task.done:
                    continue
                if call.task.creds is None or not call.task.creds.valid:  # expired, refused
                    self._need_token(call)
                    continue
                calls.append(call)
            if not calls:
                continue
            self.inflight += 1
            future = self.p.batch_pool.submit(self.p.send_batch, calls, self.query)
            future.add_done_callback(lambda f, c=calls: self.events.put(("batch", c, f)))

    def _batch_done(self, calls: List[Call], future: Any) -> None:
        results, error, refused = future.result()
        if refused:
            # After a part's 401 the library refreshed its token itself and that failed: forget
            # these tokens; our token step fetches them again and classifies any refusal.
            for call in calls:
                task = call.task
                if task.creds is not None:
                    self.p.tokens.invalidate(task.subject, self.scopes, task.creds)
                    task.creds = None
                self._retry(call, error)
            return
        for index, call in enumerate(calls):
            if call.task.done:
                continue
            response, part_error = results[index] if results is not None else (None, error)
            if part_error is None:
                self._succeeded(call, response)
            elif part_error.retryable:
                self._retry(call, part_error)
            else:
                self._failed(call, part_error)

    def _retry(self, call: Call, error: PartError) -> None:
        task = call.task
        delay = backoff_delay(call.tries, error.retry_after)
        if call.tries >= self.p.limits.max_attempts or time.monotonic() + delay > task.deadline:
            return self._fail(task, Reason.PROVIDER_ERROR, error)
        call.tries += 1
        task.attempts += 1
        heapq.heappush(self.delayed, (time.monotonic() + delay, next(self.seq), call))

    def _failed(self, call: Call, error: PartError) -> None:
        task, status = call.task, error.status
        if status == 404 and call.method == "get":
            return self._matched(task)  # gone between list and get: not a match
        if status == 404 and call.method == "delete" and call.tries > 1:
            return self._moved(task)  # an earlier try of this delete went through
        if status == 404 and call.method != "list":
            return self._fail(task, Reason.NOT_FOUND, error)
        if status in (401, 403):
            return self._fail(task, Reason.NOT_AUTHORIZED, error)
        if status == 404 or error.code in ("failedPrecondition", "FAILED_PRECONDITION"):
            return self._fail(task, Reason.NOT_A_MAILBOX, error)  # no such mailbox / no Gmail
        self._fail(task, Reason.PROVIDER_ERROR, error)

    # -- per-copy steps -------------------------------------------------------------------------
    def _succeeded(self, call: Call, response: dict) -> None:
        task = call.task
        if call.method == "list":
            ids: List[str] = []
            for item in response.get("messages") or []:
                gid = str(item.get("id", ""))
                if GMAIL_ID_RE.fullmatch(gid) and gid not in ids:
                    ids.append(gid)
            if not ids:
                return self._not_found(task)
            task.hits, task.pending = ids, len(ids)
            for gid in ids:
                self._need_token(Call(task, "get", gid))
        elif call.method == "get":
            # Defence against query injection: act only on an exact Message-ID match.
            if message_id_header(response) == self.request.message_id:
                task.matches.append((call.gmail_id, list(response.get("labelIds") or [])))
            self._matched(task)
        elif call.method == "delete":  # 204, no body
            self._moved(task)
        else:  # the message as it is now; no labelIds at all means no labels (archived)
            self._advance(task, call.gmail_id, list(response.get("labelIds") or []), call.steps)

    def _not_found(self, task: CopyTask) -> None:
        note = HARD_DELETED_NOTE if self.destination == Destination.INBOX else ""
        self._finish(task, Status.FAILED, Reason.NOT_FOUND, "notFound",
                     "no copy of %s in this mailbox%s" % (self.request.message_id, note))

    def _matched(self, task: CopyTask) -> None:
        task.pending -= 1
        if task.pending > 0:
            return
        # list order (newest first); move every matching copy that is not in place yet
        order = {gid: n for n, gid in enumerate(task.hits)}
        matches = sorted(task.matches, key=lambda m: order[m[0]])
        if not matches:
            return self._not_found(task)
        todo = [m for m in matches if not in_destination(m[1], self.destination)]
        first = (todo or matches)[0][1]
        task.was_read = "UNREAD" not in first
        task.source_folder = folder_of(first)
        if not todo:
            return self._finish(task, Status.ALREADY_IN_DESTINATION)
        if self.request.preview:
            return self._finish(task, Status.PREVIEWED)
        task.pending = len(todo)
        for gid, labels in todo:
            self._advance(task, gid, labels, 0)

    def _advance(self, task: CopyTask, gid: str, labels: List[str], steps: int) -> None:
        action = next_action(labels, self.destination)
        if action is None:
            return self._moved(task)
        if steps >= MAX_STEPS:
            return self._finish(
                task, Status.FAILED, Reason.PROVIDER_ERROR, "notInDestination",
                "copy %s still labelled %s after %d changes" % (gid, sorted(labels), steps))
        self._need_token(Call(task, action[0], gid, action[1], steps + 1))

    def _moved(self, task: CopyTask) -> None:
        task.pending -= 1
        if task.pending <= 0:
            self._finish(task, Status.RETRACTED)
