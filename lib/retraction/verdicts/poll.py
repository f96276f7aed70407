"""One poll of each sensor: read Cloudflare, decide (watch.py), dispatch, remember.

State lives in the StackStorm datastore (any object with the sensor service's `get_value`,
`set_value`, `delete_value`, `list_values`), JSON-encoded, and is written only after the
dispatch it records succeeded: a restart resumes from it, losing no verdict and dispatching
none twice. Datastore keys (local to the sensor): `verdicts.checkpoint`, `verdicts.seen.<hour>`,
`verdicts.dispatched` (the journal) and `submissions.handled`; see watch.py. (A crash between a
dispatch and its write is the one gap no poller can close without a transaction spanning
StackStorm's message bus; it can repeat one dispatch, and the engine is idempotent.)

Verdicts, per poll at time `now`:
1. main run: every row scanned in [checkpoint - OVERLAP, now], all pages. Each row is compared
   with the seen-set: new -> `verdict`, another disposition than remembered ->
   `verdict_changed` (when the config lists the new disposition). The overlap re-reads rows
   Cloudflare indexed late; the seen-set makes re-reading harmless. The checkpoint moves to
   `now` only once the run completed.
2. lookback re-poll: rows scanned in [now - lookback, main run start] whose disposition the
   config lists (one `final_disposition` query per Cloudflare word, so clean mail is not
   re-read every poll). It catches rows whose disposition changed without their scan time
   moving (their `verdict_time` is then when the change was seen), and rows indexed later
   than the overlap.
3. the seen-set is bounded: hours older than both the window and the next run's start go.

Refused payloads: the dispatch callable raises `PayloadRefused` when the trigger would be
dropped (the sensor adapter checks each payload as StackStorm's dispatch does, because
`sensor_service.dispatch` returns None whether it published the trigger or dropped it). The
poll counts it as `dropped`, logs the reason as an error (once per row and reason), and does
not remember it: the verdict is offered again every poll while it is within the lookback
window (the re-poll reads it), the report every poll (submissions are re-read in full), so it
goes through as soon as the cause is fixed (e.g. trigger types registered again).

Errors: a poll that fails (API down, 401/429, a datastore error, a bug) is logged and the next
1, 2, 4 ... 16 polls are skipped (at least as many as a Retry-After asks); a poll that works
again logs the recovery. `poll()` never raises: StackStorm respawns a crashed sensor only twice.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from datetime import datetime, timedelta
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from retraction.config import ConfigError, load_settings
from retraction.model import utc_now
from retraction.validation import dedupe_addresses
from retraction.verdicts.cloudflare import DEFAULT_PER_PAGE, CloudflareClient, CloudflareError
from retraction.verdicts.rows import (DETECTIONS, DISPOSITIONS, MalformedRow, SubmissionRow,
                                      VerdictRow, submission_row, verdict_row, wanted)
from retraction.verdicts.watch import (CODE_OF, MALFORMED, Event, HandledSet, SeenSet,
                                       checkpoint_value, confirmed, decide, journal_value,
                                       phish_event, read_checkpoint, read_journal)

LOG = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL = 60
OVERLAP = timedelta(minutes=2)
MESSAGE_WINDOW = timedelta(days=30)  # how far before a report its message is looked up
MAX_SKIP = 16
MAX_REMEMBERED_PROBLEMS = 10000

Dispatch = Callable[[str, dict, str], Any]  # (trigger name, payload, trace tag)


class PayloadRefused(Exception):
    """Raised by a dispatch callable: the trigger would not reach the rules (StackStorm would
    drop this payload). `reason` says why, for the log."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Backoff:
    """Polls to skip after consecutive failures: 1, 2, 4, ... up to `max_skip`."""

    def __init__(self, max_skip: int = MAX_SKIP):
        self.max_skip = max_skip
        self.failures = 0
        self.skipping = 0

    def skip(self) -> bool:
        if self.skipping > 0:
            self.skipping -= 1
            return True
        return False

    def failed(self, at_least: int = 0) -> int:
        self.failures += 1
        self.skipping = max(min(self.max_skip, 2 ** (self.failures - 1)), at_least)
        return self.skipping

    def recovered(self) -> int:
        failures, self.failures = self.failures, 0
        return failures


class _Poll:
    """What both polls share: the datastore, dispatch, backoff and never raising."""

    name = ""
    retried = ""  # when a refused trigger is offered again (for the log)

    def __init__(self, client: CloudflareClient, store: Any, dispatch: Dispatch,
                 log: Any = None, per_page: int = DEFAULT_PER_PAGE,
                 poll_interval: float = DEFAULT_POLL_INTERVAL,
                 clock: Callable[[], datetime] = utc_now):
        self.client = client
        self.store = store
        self._dispatch = dispatch
        self.log = log or LOG
        self.per_page = per_page
        self.poll_interval = poll_interval
        self.clock = clock
        self.backoff = Backoff()
        self.loaded = False
        self._refused: Dict[str, str] = {}  # trace tag -> reason logged, to log it once

    def poll(self) -> Optional[Dict[str, int]]:
        """One poll; counts of what happened, or None when skipped or failed."""
        if self.backoff.skip():
            self.log.debug("%s skipped (backing off)", self.name)
            return None
        try:
            if not self.loaded:
                self.load()
                self.loaded = True
            counts = self.run(self.clock())
        except CloudflareError as exc:
            wait = exc.retry_after or 0
            skip = self.backoff.failed(int(math.ceil(wait / max(self.poll_interval, 1))))
            self.log.warning("%s failed: %s; skipping the next %d poll(s)", self.name, exc, skip)
            return None
        except Exception as exc:  # a poll() that raises kills the sensor for good
            skip = self.backoff.failed()
            self.log.exception("%s failed: %s: %s; skipping the next %d poll(s)", self.name,
                               type(exc).__name__, exc, skip)
            return None
        failures = self.backoff.recovered()
        if failures:
            self.log.info("%s works again after %d failed poll(s)", self.name, failures)
        if any(counts.values()):
            log = self.log.warning if counts.get("dropped") else self.log.info
            log("%s: %s", self.name, ", ".join(
                "%s %d" % (key, value) for key, value in sorted(counts.items()) if value))
        return dict(counts)

    def dispatch(self, event: Event) -> bool:
        """Dispatch the trigger; False (logged) if it was refused: the caller does not
        remember the row, so it is offered again."""
        try:
            self._dispatch(event.trigger, event.payload, event.trace_tag)
        except PayloadRefused as exc:
            if self._refused.get(event.trace_tag) != exc.reason:
                if len(self._refused) >= MAX_REMEMBERED_PROBLEMS:
                    self._refused.clear()
                self._refused[event.trace_tag] = exc.reason
                self.log.error("NOT dispatched: the %s trigger for %s (%s, %d recipient(s), %s) "
                               "would be dropped by StackStorm: %s. It is offered again %s.",
                               event.trigger, event.payload.get("message_id"),
                               event.payload.get("disposition"),
                               len(event.payload.get("recipients") or ()), event.trace_tag,
                               exc.reason, self.retry_note(event))
            return False
        if self._refused.pop(event.trace_tag, None) is not None:
            self.log.info("the %s trigger for %s (%s) is accepted now", event.trigger,
                          event.payload["message_id"], event.trace_tag)
        self.log.info("dispatched %s for %s (%s, %d recipient(s), %s)", event.trigger,
                      event.payload["message_id"], event.payload["disposition"],
                      len(event.payload["recipients"]), event.trace_tag)
        return True

    def retry_note(self, event: Event) -> str:
        return "%s (%g h)" % (self.retried, self.lookback.total_seconds() / 3600)

    def close(self) -> None:
        self.client.close()

    def load(self) -> None:
        raise NotImplementedError

    def run(self, now: datetime) -> Counter:
        raise NotImplementedError


class VerdictPoll(_Poll):
    """New and changed verdicts of delivered mail -> `verdict` / `verdict_changed`."""

    name = "Cloudflare verdict poll"
    retried = "every poll while its row is within the lookback window"
    CHECKPOINT = "verdicts.checkpoint"
    SEEN = "verdicts.seen."
    JOURNAL = "verdicts.dispatched"

    def __init__(self, client: CloudflareClient, store: Any, dispatch: Dispatch,
                 dispositions: Iterable[str] = ("MALICIOUS", "SUSPICIOUS", "SPOOF"),
                 lookback: timedelta = timedelta(hours=24), overlap: timedelta = OVERLAP,
                 **kwargs: Any):
        super().__init__(client, store, dispatch, **kwargs)
        self.dispositions = tuple(dispositions)
        self.lookback = lookback
        self.overlap = overlap
        self.seen = SeenSet()
        self.checkpoint: Optional[datetime] = None
        self._stored: set = set()  # bucket names present in the datastore
        self._journal: Dict[str, List[str]] = {}  # dispatched since the last bucket write
        # Only detections can be asked for by disposition; a config listing NONE-class words
        # gets their changes from the main run alone.
        self.repoll_words = tuple(w for w in DETECTIONS
                                  if wanted(DISPOSITIONS[w], w, self.dispositions))

    def retry_note(self, event: Event) -> str:
        if event.payload.get("source_disposition") in self.repoll_words:
            return super().retry_note(event)
        return ("by the next poll only, while its row is within the %d s overlap (%s rows are "
                "not re-polled)" % (self.overlap.total_seconds(),
                                    event.payload.get("source_disposition")))

    def load(self) -> None:
        for item in self.store.list_values(local=True, prefix=self.SEEN) or []:
            name = item.name[item.name.rfind(self.SEEN) + len(self.SEEN):]
            try:
                self.seen.load(name, item.value)
                self._stored.add(name)
            except ValueError as exc:
                self.log.warning("%s: %s (key %s); deleting it", self.name, exc,
                                 self.SEEN + name)
                self.store.delete_value(self.SEEN + name, local=True)
        text = self.store.get_value(self.JOURNAL, local=True)
        if text is not None:
            try:
                self._journal = read_journal(text, self.JOURNAL)
            except ValueError as exc:
                self.log.warning("%s: %s; ignoring it", self.name, exc)
            for row_id, (code, bucket) in self._journal.items():
                self.seen.put(row_id, code, bucket)  # dirty: the next page write keeps them
        text = self.store.get_value(self.CHECKPOINT, local=True)
        if text is not None:
            try:
                self.checkpoint = read_checkpoint(text, self.CHECKPOINT)
            except ValueError as exc:
                self.log.warning("%s: %s; starting from the lookback window", self.name, exc)

    def run(self, now: datetime) -> Counter:
        counts: Counter = Counter()
        start = self.checkpoint - self.overlap if self.checkpoint else now - self.lookback
        for page in self.client.investigate(start=start, end=now, per_page=self.per_page):
            self._page(page, now, counts)
        self.store.set_value(self.CHECKPOINT, checkpoint_value(now), local=True)
        self.checkpoint = now
        horizon = now - self.lookback
        if start > horizon:
            for word in self.repoll_words:
                for page in self.client.investigate(start=horizon, end=start,
                                                    per_page=self.per_page,
                                                    final_disposition=word):
                    self._page(page, now, counts, repoll=True)
        for name in self.seen.prune(min(horizon, now - self.overlap)):
            if name in self._stored:
                self.store.delete_value(self.SEEN + name, local=True)
                self._stored.discard(name)
        return counts

    def _page(self, page: List[Any], now: datetime, counts: Counter,
              repoll: bool = False) -> None:
        for raw in page:
            self._row(raw, now, counts, repoll)
        self._flush()

    def _row(self, raw: Any, now: datetime, counts: Counter, repoll: bool = False) -> None:
        try:
            verdict = verdict_row(raw)
        except MalformedRow as exc:
            counts["malformed"] += 1
            if exc.row_id is None:
                self.log.warning("%s; skipped", exc)
            elif self.seen.code(exc.row_id) != MALFORMED:
                self.log.warning("%s; skipped", exc)
                self.seen.remember(exc.row_id, MALFORMED, now)  # reported once
            return
        if verdict.in_transit:
            return  # not remembered: once delivered, it is new
        known = self.seen.code(verdict.source_id)
        if verdict.refused_recipients and known is None:
            self.log.warning("Cloudflare row %s (%s): left out recipients that are not mailbox "
                             "addresses: %s", verdict.source_id, verdict.message_id,
                             ", ".join(verdict.refused_recipients[:10]))
        # A change the re-poll finds kept its old scan time: it is dated by when it was seen.
        event = decide(verdict, known, self.dispositions, changed_at=now if repoll else None)
        if event is not None:
            # If this raises or is refused, the row is not remembered: it comes again.
            if not self.dispatch(event):
                counts["dropped"] += 1
                return
            counts[event.trigger] += 1
        # Undelivered rows are remembered too: mail an administrator releases from
        # quarantine was released on purpose and is not retracted again for the same verdict.
        code = CODE_OF[verdict.disposition]
        self.seen.remember(verdict.source_id, code, verdict.verdict_time)
        if event is not None:  # written down before the next dispatch
            self._journal[verdict.source_id] = [code, self.seen.bucket_of(verdict.source_id)]
            self.store.set_value(self.JOURNAL, journal_value(self._journal), local=True)

    def _flush(self) -> None:
        """Write the changed hour buckets, then empty the journal they now contain."""
        for name in sorted(self.seen.dirty):
            text = self.seen.dump(name)
            if text is not None:
                self.store.set_value(self.SEEN + name, text, local=True)
                self._stored.add(name)
            elif name in self._stored:
                self.store.delete_value(self.SEEN + name, local=True)
                self._stored.discard(name)
            self.seen.dirty.discard(name)
        if self._journal:
            self.store.set_value(self.JOURNAL, journal_value({}), local=True)
            self._journal = {}


class SubmissionPoll(_Poll):
    """User reports confirmed in a listed disposition -> `phish_submission`, once each."""

    name = "Cloudflare submission poll"
    retried = "every poll while the report is within the lookback window"
    HANDLED = "submissions.handled"

    def __init__(self, client: CloudflareClient, store: Any, dispatch: Dispatch,
                 dispositions: Iterable[str] = ("MALICIOUS",),
                 lookback: timedelta = timedelta(hours=24), **kwargs: Any):
        super().__init__(client, store, dispatch, **kwargs)
        self.dispositions = tuple(dispositions)
        self.lookback = lookback
        self.handled = HandledSet()
        self._problems: Dict[str, str] = {}  # what was logged per report, to log it once

    def load(self) -> None:
        text = self.store.get_value(self.HANDLED, local=True)
        if text is not None:
            try:
                self.handled.load(text, self.HANDLED)
            except ValueError as exc:
                self.log.warning("%s: %s; ignoring it", self.name, exc)

    def run(self, now: datetime) -> Counter:
        counts: Counter = Counter()
        start = now - self.lookback
        for page in self.client.submissions(start=start, end=now, per_page=self.per_page):
            for raw in page:
                self._report(raw, now, counts)
        self.handled.prune(start - OVERLAP)
        self._save()
        return counts

    def _once(self, key: str, message: str) -> None:
        if self._problems.get(key) != message:
            if len(self._problems) >= MAX_REMEMBERED_PROBLEMS:
                self._problems.clear()
            self._problems[key] = message
            self.log.warning(message)

    def _save(self) -> None:
        if self.handled.dirty:
            self.store.set_value(self.HANDLED, self.handled.dump(), local=True)
            self.handled.dirty = False

    def _report(self, raw: Any, now: datetime, counts: Counter) -> None:
        try:
            sub = submission_row(raw)
        except MalformedRow as exc:
            counts["malformed"] += 1
            self._once(exc.row_id or repr(raw)[:80], "%s; skipped" % exc)
            return
        if sub.submission_id in self.handled or not confirmed(sub, self.dispositions):
            return
        found = self._message(sub, now)
        if found is None:
            counts["unresolved"] += 1
            return
        message, recipients = found
        if recipients:
            event = phish_event(sub, message, recipients, now)
            if not self.dispatch(event):
                counts["dropped"] += 1
                return  # not handled: tried again next poll
            counts[event.trigger] += 1
        else:
            self.log.info("Cloudflare report %s confirmed %s, but message %s reached no "
                          "mailbox: nothing to retract", sub.submission_id,
                          sub.source_outcome, message.message_id)
        self.handled.add(sub.submission_id, sub.requested_at)
        self._save()

    def _message(self, sub: SubmissionRow, now: datetime
                 ) -> Optional[Tuple[VerdictRow, Tuple[str, ...]]]:
        """The reported message and every delivered recipient of it (all its rows), or None
        (logged once) while Cloudflare cannot say; the report is tried again next poll."""
        if sub.postfix_id is None:
            self._once(sub.submission_id, "Cloudflare report %s names no message "
                       "(original_postfix_id is empty); retrying" % sub.submission_id)
            return None
        raw = self.client.message(sub.postfix_id)
        if raw is None:
            self._once(sub.submission_id, "Cloudflare report %s: message %s not found in "
                       "investigate; retrying" % (sub.submission_id, sub.postfix_id))
            return None
        try:
            message = verdict_row(raw)
        except MalformedRow as exc:
            self._once(sub.submission_id, "Cloudflare report %s: %s; retrying"
                       % (sub.submission_id, exc))
            return None
        recipients = list(message.recipients) if message.delivered else []
        for page in self.client.investigate(message_id=message.message_id,
                                            start=sub.requested_at - MESSAGE_WINDOW, end=now,
                                            per_page=self.per_page):
            for other in page:
                try:
                    row = verdict_row(other)
                except MalformedRow:
                    continue  # the verdict sensor reports malformed rows
                if row.delivered and row.message_id == message.message_id:
                    recipients.extend(row.recipients)
        return message, tuple(dedupe_addresses(recipients))


# -- construction from the pack config (what the sensors call) --------------------------------
def _common(config: Any, log: Any) -> Tuple[Any, Optional[CloudflareClient]]:
    settings = load_settings(config)  # ConfigError (naming the key) for a bad config
    try:
        client = CloudflareClient.from_settings(settings.cloudflare)
    except ConfigError as exc:
        (log or LOG).error("%s: the sensor stays idle until Cloudflare is configured and the "
                           "sensor container restarted", exc)
        return settings, None
    return settings, client


def verdict_poll(config: Any, store: Any, dispatch: Dispatch, log: Any = None,
                 poll_interval: float = DEFAULT_POLL_INTERVAL) -> Optional[VerdictPoll]:
    """The verdict sensor's poll from the pack config; None (logged) if Cloudflare is not
    configured."""
    settings, client = _common(config, log)
    if client is None:
        return None
    return VerdictPoll(client, store, dispatch, dispositions=settings.verdicts.dispositions,
                       lookback=timedelta(hours=settings.verdicts.lookback_hours), log=log,
                       per_page=settings.verdicts.per_page, poll_interval=poll_interval)


def submission_poll(config: Any, store: Any, dispatch: Dispatch, log: Any = None,
                    poll_interval: float = DEFAULT_POLL_INTERVAL) -> Optional[SubmissionPoll]:
    settings, client = _common(config, log)
    if client is None:
        return None
    return SubmissionPoll(client, store, dispatch,
                          dispositions=settings.verdicts.submission_dispositions,
                          lookback=timedelta(hours=settings.verdicts.lookback_hours), log=log,
                          per_page=settings.verdicts.per_page, poll_interval=poll_interval)
