"""The ledger: outcomes and metric records in SQL (SQLAlchemy Core), and the reads the
actions, the card and the engine's skip-list need. See `episodes` for the counting rule."""
from __future__ import annotations

import secrets
from datetime import datetime
from functools import lru_cache
from operator import attrgetter
from typing import (Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Set,
                    Tuple, TypeVar, Union)

from sqlalchemy import and_, bindparam, func, select, true, tuple_
from sqlalchemy.engine import Connection, Row

from retraction.campaign import Earlier
from retraction.ledger import cursor as cursors
from retraction.ledger import facets
from retraction.ledger.bulk import BulkCache
from retraction.ledger.connect import WRITE, create_ledger_engine
from retraction.ledger.episodes import Copy, Episode, decide, supersedes
from retraction.ledger.migrate import ensure_current
from retraction.ledger.rows import OUTCOME_FIELDS, detail, outcome_row, to_outcome
from retraction.ledger.schema import copies, episodes, meta, outcomes, runs
from retraction.ledger.schema import decisions as decisions_table
from retraction.metrics.errors import InvalidParameter
from retraction.metrics.query import MAX_LIMIT
from retraction.metrics.record import (Filters, MetricRecord, TimeToRetract,
                                       interpolate_seconds, percentile_ranks, seconds)
from retraction.metrics.window import Window, parse_time, parse_window
from retraction.model import (Destination, Disposition, Mode, Outcome, Reason,
                              RetractionRequest, Status, Trigger, utc_now)

RUN_STATES = ("running", "finished", "failed")
DECISIONS = ("approved", "rejected")  # an analyst's answer to an approval inquiry
# The episode rank of the row that counts -> its status (see metrics.record.RANK).
_STATUS_OF_RANK = {3: Status.RETRACTED.value, 2: Status.ALREADY_IN_DESTINATION.value}
_IN_CHUNK = 400  # pairs per IN list: under SQLite's 999-variable limit before 3.32
_EPISODE_FIELDS = ("episode", "run_id", "rank", "placed", "preview_episode", "preview_run_id",
                   "preview_rank", "preview_moves")
_episode_values = attrgetter(*_EPISODE_FIELDS)
_ROW_FIELDS = OUTCOME_FIELDS + ("recipient_key", "preview", "counted", "episode", "facets",
                                "ttr_ms")

T = TypeVar("T")
FiltersInput = Union[Filters, Mapping[str, Any], None]


def _chunks(items: Sequence[T], size: int = _IN_CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _select_pairs(conn: Connection, query, keys: Sequence[Tuple[str, str]]) -> Iterator[Row]:
    """Rows of a `_pairs_query` whose first two columns are one of `keys`. Written as
    `first IN (..) AND second IN (..)` and filtered here: SQLite seeks a two-column index for
    that, but scans the whole table for a row-value `(first, second) IN (VALUES ..)`."""
    for chunk in _chunks(sorted(keys)):
        wanted = set(chunk)
        params = {"firsts": sorted({a for a, _ in chunk}),
                  "seconds": sorted({b for _, b in chunk})}
        for row in conn.execute(query, params).all():
            if (row[0], row[1]) in wanted:
                yield row


@lru_cache(maxsize=None)
def _pairs_query(table: str) -> Any:
    """The write path's read of `table` by pairs of its first two columns, built once: its
    IN lists are expanding parameters, so a batch neither rebuilds the statement (nor its
    cache key) nor coerces each value into a bind of its own."""
    joined = None
    if table == "copies":  # each copy with its episodes (if any), in one query
        columns = [copies.c.message_id, copies.c.recipient_key, copies.c.location,
                   copies.c.moves, episodes.c.destination]
        columns += [episodes.c[name] for name in _EPISODE_FIELDS]
        joined = copies.outerjoin(episodes, and_(
            episodes.c.message_id == copies.c.message_id,
            episodes.c.recipient_key == copies.c.recipient_key))
    else:
        o = outcomes.c
        columns = [o.run_id, o.recipient_key, o.status, o.counted]
    query = select(*columns)
    if joined is not None:
        query = query.select_from(joined)
    return query.where(columns[0].in_(bindparam("firsts", expanding=True)),
                       columns[1].in_(bindparam("seconds", expanding=True)))


def _word(field: str, value: Optional[str], words: Sequence[str]) -> Optional[str]:
    if value in (None, ""):
        return None
    if str(value) not in words:
        raise InvalidParameter(field, "{!r} is not one of {}".format(value, ", ".join(words)))
    return str(value)


def _limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidParameter("limit", "must be an integer from 1 to {}, got {!r}".format(
            MAX_LIMIT, limit))
    return limit


class Ledger:
    """Open (and if needed create or upgrade) the ledger at `url`:
    `sqlite:////path/ledger.db` or `postgresql+psycopg://user@host/db`."""

    def __init__(self, url: str, upgrade: bool = True):
        self.engine = create_ledger_engine(url)
        ensure_current(self.engine, upgrade=upgrade)
        # The dialect's own INSERT (for ON CONFLICT), imported for the backend in use only:
        # the PostgreSQL package pulls in asyncpg support and asyncio (~20 ms of cold start).
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        self._insert = insert
        self._cursor_key = None  # type: Optional[bytes]
        self._preview_runs = {}  # type: Dict[str, bool]
        self._bulk = BulkCache()

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _write(self) -> Connection:
        return self.engine.connect().execution_options(**WRITE)

    # ----------------------------------------------------------------------------- writes

    def record_run_started(self, request: RetractionRequest) -> None:
        """Record a run as running; a retried run (same run_id) goes back to running."""
        values = {
            "run_id": request.run_id, "message_id": request.message_id,
            "destination": str(request.destination), "mode": str(request.mode),
            "trigger": str(request.trigger),
            "disposition": str(request.disposition) if request.disposition else None,
            "provider": str(request.provider) if request.provider else None,
            "preview": bool(request.preview), "requested_by": request.requested_by,
            "comment": request.comment, "verdict_time": request.verdict_time,
            "requested_at": request.requested_at, "state": "running",
        }
        stmt = self._insert(runs).values(**values)
        stmt = stmt.on_conflict_do_update(index_elements=[runs.c.run_id],
                                          set_={"state": "running", "finished_at": None})
        with self._write() as conn, conn.begin():
            conn.execute(stmt)
        self._preview_runs[request.run_id] = bool(request.preview)

    def record_outcomes(self, outcomes_: Iterable[Outcome], batch_size: int = 500) -> int:
        """Write outcomes, `batch_size` per transaction, as they come (a crash loses only the
        unwritten batch). Returns how many outcomes were taken."""
        if not 1 <= batch_size <= 5000:
            raise InvalidParameter("batch_size", "must be from 1 to 5000")
        taken, batch = 0, []  # type: Tuple[int, List[Outcome]]
        for outcome in outcomes_:
            batch.append(outcome)
            if len(batch) >= batch_size:
                taken += self._write_batch(batch)
                batch = []
        if batch:
            taken += self._write_batch(batch)
        return taken

    def record_run_finished(self, run_id: str, state: str = "finished",
                            metric_record: Union[MetricRecord, Mapping[str, Any], None] = None
                            ) -> MetricRecord:
        """Close a run with its metric record (computed from its outcomes when not given)."""
        _word("state", state, RUN_STATES[1:])
        found = self.run(run_id)
        if found is None:
            raise InvalidParameter("run_id", "{!r} is not a run in this ledger".format(run_id))
        if metric_record is None:
            record = self.run_record(run_id)
        elif isinstance(metric_record, MetricRecord):
            record = metric_record
        else:
            record = MetricRecord.from_dict(metric_record)
        with self._write() as conn, conn.begin():
            conn.execute(runs.update().where(runs.c.run_id == run_id).values(
                state=state, finished_at=utc_now(), metric_record=record.to_dict()))
        return record

    def record_decision(self, message_id: str, decision: str,
                        decided_by: Optional[str] = None, comment: Optional[str] = None,
                        copies: Optional[int] = None, destination: Optional[str] = None,
                        trigger: Optional[str] = None, disposition: Optional[str] = None,
                        run_id: Optional[str] = None, decided_at: Optional[datetime] = None
                        ) -> Dict[str, Any]:
        """Keep an analyst's answer to an approval inquiry (`approved` or `rejected`) with
        what was asked: the message, how many copies, where to, and why (trigger,
        disposition). `run_id` when the decision concerns a known run. Returns the stored
        row (with its `id`)."""
        decision = _word("decision", decision, DECISIONS)
        if decision is None:
            raise InvalidParameter("decision", "is required (one of {})".format(
                ", ".join(DECISIONS)))
        if not isinstance(message_id, str) or not message_id.strip():
            raise InvalidParameter("message_id", "is required")
        if copies is not None and (isinstance(copies, bool) or not isinstance(copies, int)
                                   or copies < 0):
            raise InvalidParameter("copies", "must be a whole number, 0 or more, got "
                                             "{!r}".format(copies))
        if run_id is not None and (not isinstance(run_id, str) or len(run_id) > 64):
            raise InvalidParameter("run_id", "must be a run id (at most 64 characters)")
        values = {
            "decided_at": parse_time("decided_at", decided_at) or utc_now(),
            "decision": decision, "message_id": message_id.strip(), "run_id": run_id or None,
            "decided_by": decided_by or None, "comment": comment or None, "copies": copies,
            "destination": _word("destination", destination, Destination.values()),
            "trigger": _word("trigger", trigger, Trigger.values()),
            "disposition": _word("disposition", disposition, Disposition.values()),
        }
        with self._write() as conn, conn.begin():
            inserted = conn.execute(decisions_table.insert().values(**values))
            new_id = inserted.inserted_primary_key[0]
        return _decision(dict(values, id=new_id))

    def _preview_flags(self, run_ids: Set[str]) -> Dict[str, bool]:
        unknown = sorted(run_ids - set(self._preview_runs))
        if unknown:
            with self.engine.connect() as conn:
                for chunk in _chunks(unknown):
                    for run_id, preview in conn.execute(
                            select(runs.c.run_id, runs.c.preview).where(
                                runs.c.run_id.in_(chunk))):
                        self._preview_runs[run_id] = bool(preview)
        return {run_id: self._preview_runs.get(run_id, False) for run_id in run_ids}

    def _write_batch(self, batch: List[Outcome]) -> int:
        preview = self._preview_flags({outcome.run_id for outcome in batch})
        chosen = {}  # type: Dict[Tuple[str, str], Dict[str, Any]]
        for outcome in batch:  # a chunk may repeat a copy: keep the run's best outcome
            row = outcome_row(outcome, preview[outcome.run_id])
            key = (row["run_id"], row["recipient_key"])
            if key not in chosen or supersedes(row["status"], chosen[key]["status"]):
                chosen[key] = row
        copy_keys = sorted({(row["message_id"], row["recipient_key"])
                            for row in chosen.values()})
        with self._write() as conn, conn.begin():
            self._lock_copies(conn, copy_keys)
            state = self._load_copies(conn, copy_keys)
            existing = self._load_rows(conn, list(chosen))
            inserts, replaces, uncount = [], [], set()
            pending = {}  # type: Dict[Tuple[str, str], Dict[str, Any]]
            for key, row in chosen.items():
                old = existing.get(key)
                if old is not None and not supersedes(row["status"], old.status):
                    continue  # the run already holds a better outcome for this copy
                copy = state[(row["message_id"], row["recipient_key"])]
                decision = decide(copy, row["run_id"], row["destination"], row["status"],
                                  row["preview"], replacing=old is not None)
                row["counted"], row["episode"] = decision.counted, decision.episode
                if decision.uncount_run_id is not None:
                    loser = (decision.uncount_run_id, row["recipient_key"])
                    if loser in pending:
                        pending[loser]["counted"] = False
                    else:
                        uncount.add(loser)
                if old is None:
                    inserts.append(row)
                else:
                    if old.counted:
                        uncount.add(key)  # cleared first, so the unique index never trips
                    replaces.append(row)
                pending[key] = row
            self._apply(conn, sorted(uncount), replaces, inserts, state)
        return len(batch)

    def _lock_copies(self, conn: Connection, keys: List[Tuple[str, str]]) -> None:
        """Create missing copy rows and lock all of them, in key order (no deadlocks)."""
        def build():
            stmt = self._insert(copies)
            return stmt.on_conflict_do_update(
                index_elements=[copies.c.message_id, copies.c.recipient_key],
                set_={"moves": copies.c.moves})  # no change: the point is the row lock
        self._bulk.run(conn, "lock_copies", build, [(m, r, 0) for m, r in keys],
                       keys=("message_id", "recipient_key", "moves"))

    def _load_copies(self, conn: Connection, keys: List[Tuple[str, str]]
                     ) -> Dict[Tuple[str, str], Copy]:
        state = {}  # type: Dict[Tuple[str, str], Copy]
        for row in _select_pairs(conn, _pairs_query("copies"), keys):
            key = (row[0], row[1])
            copy = state.get(key)
            if copy is None:
                copy = state[key] = Copy(location=row[2], moves=row[3])
            if row[4] is not None:  # an episode of the copy (outer join: None if none)
                copy.episodes[row[4]] = Episode(**dict(zip(_EPISODE_FIELDS, row[5:])))
        return state

    def _load_rows(self, conn: Connection, keys: List[Tuple[str, str]]
                   ) -> Dict[Tuple[str, str], Row]:
        """(run_id, recipient_key) -> (run_id, recipient_key, status, counted)."""
        return {(row[0], row[1]): row
                for row in _select_pairs(conn, _pairs_query("outcomes"), keys)}

    def _apply(self, conn: Connection, uncount: List[Tuple[str, str]],
               replaces: List[Dict[str, Any]], inserts: List[Dict[str, Any]],
               state: Dict[Tuple[str, str], Copy]) -> None:
        o = outcomes.c
        by_row = and_(o.run_id == bindparam("b_run_id"),
                      o.recipient_key == bindparam("b_recipient_key"))
        bulk = self._bulk
        # Rows go to `Bulk` as tuples in the order of the keys given with them.
        bulk.run(conn, "uncount", lambda: outcomes.update().where(by_row).values(
            counted=False), uncount, keys=("b_run_id", "b_recipient_key"))
        fields = [f for f in _ROW_FIELDS if f not in ("run_id", "recipient_key")]
        replace_keys = ["v_" + f for f in fields] + ["b_run_id", "b_recipient_key"]
        bulk.run(conn, "replace", lambda: outcomes.update().where(by_row).values(
            {f: bindparam("v_" + f) for f in fields}),
            [tuple(row[f] for f in fields + ["run_id", "recipient_key"]) for row in replaces],
            keys=replace_keys)
        bulk.run(conn, "insert", outcomes.insert, inserts, keys=_ROW_FIELDS)
        episode_rows = [(m, r, d) + _episode_values(ep)
                        for (m, r), copy in sorted(state.items())
                        for d, ep in sorted(copy.episodes.items()) if d in copy.touched]

        def upsert_episodes():
            stmt = self._insert(episodes)
            return stmt.on_conflict_do_update(
                index_elements=[episodes.c.message_id, episodes.c.recipient_key,
                                episodes.c.destination],
                set_={f: getattr(stmt.excluded, f) for f in _EPISODE_FIELDS})
        bulk.run(conn, "episodes", upsert_episodes, episode_rows,
                 keys=("message_id", "recipient_key", "destination") + _EPISODE_FIELDS)
        copy_rows = [(m, r, copy.location, copy.moves)
                     for (m, r), copy in sorted(state.items()) if copy.touched]
        bulk.run(conn, "copies", lambda: copies.update().where(and_(
            copies.c.message_id == bindparam("b_m"),
            copies.c.recipient_key == bindparam("b_r"))), copy_rows,
            keys=("b_m", "b_r", "location", "moves"))

    # ------------------------------------------------------------------------------ reads

    def retracted_recipients(self, message_id: str, destination: str,
                             recipients: Iterable[str]) -> Set[str]:
        """The given recipients whose copy of `message_id` the ledger last saw in
        `destination` (retracted or already there): the engine can skip them."""
        destination = _word("destination", str(destination), Destination.values())
        wanted = {}  # type: Dict[str, List[str]]
        for recipient in recipients:
            wanted.setdefault(recipient.strip().lower(), []).append(recipient)
        found = set()  # type: Set[str]
        with self.engine.connect() as conn:
            for chunk in _chunks(sorted(wanted)):
                query = select(copies.c.recipient_key).where(
                    copies.c.message_id == message_id, copies.c.location == destination,
                    copies.c.recipient_key.in_(chunk))
                for key in conn.execute(query).scalars():
                    found.update(wanted[key])
        return found

    def placed_by(self, message_id: str, destination: str, recipients: Iterable[str]
                  ) -> Dict[str, Earlier]:
        """The given recipients whose copy of `message_id` the ledger last saw in
        `destination`, each with the run whose outcome counts in that episode (it retracted
        the copy, or found it there): the engine's skip list. The same test as
        `retracted_recipients`, plus the run id."""
        destination = _word("destination", str(destination), Destination.values())
        wanted = {}  # type: Dict[str, List[str]]
        for recipient in recipients:
            wanted.setdefault(recipient.strip().lower(), []).append(recipient)
        on = and_(episodes.c.message_id == copies.c.message_id,
                  episodes.c.recipient_key == copies.c.recipient_key,
                  episodes.c.destination == copies.c.location)
        found = {}  # type: Dict[str, Earlier]
        with self.engine.connect() as conn:
            for chunk in _chunks(sorted(wanted)):
                query = select(copies.c.recipient_key, episodes.c.run_id, episodes.c.rank) \
                    .select_from(copies.join(episodes, on)) \
                    .where(copies.c.message_id == message_id,
                           copies.c.location == destination,
                           copies.c.recipient_key.in_(chunk))
                for key, earlier_run, rank in conn.execute(query):
                    status = _STATUS_OF_RANK.get(rank, Status.ALREADY_IN_DESTINATION.value)
                    for recipient in wanted[key]:
                        found[recipient] = Earlier(earlier_run or "unknown", status)
        return found

    def metric_record(self, window: Optional[Window] = None,
                      filters: FiltersInput = None) -> MetricRecord:
        """The metric record of the counted copies completed in `window` (default: the last
        24 hours): one grouped scan of a covering index, plus two ranked reads of the
        retracted durations for p50/p95."""
        window = window or parse_window()
        flt = Filters.of(filters)
        o = outcomes.c
        return self._record([o.counted == true(), o.completed_at >= window.since,
                             o.completed_at < window.until], window, flt)

    def run_record(self, run_id: str) -> MetricRecord:
        """One run's metric record: each of its copies once (the ledger keeps one row per
        copy and run, the best its retries reported), counted or not. The same figures as
        `record_from_outcomes(outcomes_for_run(run_id))`, grouped in SQL so memory stays flat
        however many copies the run has."""
        return self._record([outcomes.c.run_id == run_id], None, Filters())

    def _record(self, where: List[Any], window: Optional[Window],
                flt: Filters) -> MetricRecord:
        wanted = flt.to_dict()
        o = outcomes.c
        # Filters are applied to the groups, not in SQL: every filter is a facet, and the
        # unfiltered grouped scan has one good plan everywhere, while a `facets & mask`
        # predicate makes PostgreSQL misjudge its selectivity (a seq scan and a disk sort).
        query = select(o.facets, func.count(), func.count(o.ttr_ms), func.max(o.ttr_ms)) \
            .where(*where).group_by(o.facets)
        groups, timed, longest = [], 0, None
        with self.engine.connect() as conn:
            for packed, count, with_ttr, max_ttr in conn.execute(query):
                values = facets.unpack(packed)
                if any(values[name] != value for name, value in wanted.items()):
                    continue
                groups.append((values, count))
                if (values["status"] == Status.RETRACTED and not values["preview"]
                        and with_ttr):
                    timed += with_ttr
                    longest = max_ttr if longest is None else max(longest, max_ttr)
            ttr = TimeToRetract()
            if timed:
                ranked = select(o.ttr_ms).where(
                    *where, o.status == Status.RETRACTED.value, o.ttr_ms.isnot(None))
                if wanted:
                    bits, value = facets.mask(wanted)
                    ranked = ranked.where(o.facets.op("&")(bits) == value)
                found = {}
                for name, q in (("p50_s", "0.5"), ("p95_s", "0.95")):
                    low, high, weight = percentile_ranks(timed, q)
                    # walk the index from the nearer end: p95 skips 5% of it, not 95%
                    if low < timed // 2:
                        page = ranked.order_by(o.ttr_ms).offset(low)
                    else:
                        page = ranked.order_by(o.ttr_ms.desc()).offset(timed - 1 - high)
                    values = sorted(conn.execute(page.limit(high - low + 1)).scalars())
                    found[name] = interpolate_seconds(values[0], values[-1], weight)
                ttr = TimeToRetract(count=timed, max_s=seconds(longest), **found)
        return MetricRecord.from_groups(groups, ttr, window=window, filters=flt)

    def details(self, window: Optional[Window] = None, filters: FiltersInput = None,
                status: Optional[str] = None, reason: Optional[str] = None,
                recipient: Optional[str] = None, message_id: Optional[str] = None,
                limit: int = 50, cursor: Optional[str] = None
                ) -> Tuple[List[Dict[str, Any]], Optional[str]]:
        """Outcome rows completed in `window`, newest first, `limit` per page. Every row is
        returned (also ones the metrics do not count; see each row's `counted`). Pass the
        returned cursor back, with the same filters, for the next page; None: last page."""
        window = window or parse_window()
        flt = Filters.of(filters)
        limit = _limit(limit)
        status = _word("status", status, Status.values())
        reason = _word("reason", reason, Reason.values())
        recipient_key = recipient.strip().lower() if recipient else None
        query_id = {"filters": flt.to_dict(), "status": status, "reason": reason,
                    "recipient": recipient_key, "message_id": message_id or None}
        o = outcomes.c
        where = [o.completed_at >= window.since, o.completed_at < window.until]
        for name, value in flt.items():
            where.append(getattr(o, name) == value)
        if status:
            where.append(o.status == status)
        if reason:
            where.append(o.reason == reason)
        if recipient_key:
            where.append(o.recipient_key == recipient_key)
        if message_id:
            where.append(o.message_id == message_id)
        rows, next_cursor = self._newest_first("details", outcomes, o.completed_at, o.id, where,
                                               query_id, limit, cursor)
        return [detail(row) for row in rows], next_cursor

    def _newest_first(self, kind: str, table: Any, time_col: Any, id_col: Any, where: list,
                      query_id: Dict[str, Any], limit: int, cursor: Optional[str]
                      ) -> Tuple[List[Mapping[str, Any]], Optional[str]]:
        """One page of `table` rows matching `where`, newest first by (time, id), and the
        signed keyset cursor of the next page (None: last page). The cursor is bound to `kind`
        and `query_id`, so it cannot be replayed against other filters."""
        if cursor:
            at, row_id = cursors.decode(self._key(), kind, query_id, cursor)
            where = where + [tuple_(time_col, id_col) < tuple_(parse_time("cursor", at), row_id)]
        query = select(table).where(*where).order_by(time_col.desc(), id_col.desc()) \
            .limit(limit + 1)
        with self.engine.connect() as conn:
            rows = list(conn.execute(query).mappings())
        if len(rows) <= limit:
            return rows, None
        rows = rows[:limit]
        last = rows[-1]
        return rows, cursors.encode(self._key(), kind, query_id,
                                    [last[time_col.name].isoformat(), last[id_col.name]])

    def runs(self, window: Optional[Window] = None, state: Optional[str] = None,
             message_id: Optional[str] = None, limit: int = 50, cursor: Optional[str] = None
             ) -> Tuple[List[Dict[str, Any]], Optional[str]]:
        """Runs requested in `window` (default: all), newest first, paged like details."""
        state = _word("state", state, RUN_STATES)
        limit = _limit(limit)
        query_id = {"state": state, "message_id": message_id or None}
        r = runs.c
        where = []
        if window is not None:
            where += [r.requested_at >= window.since, r.requested_at < window.until]
        if state:
            where.append(r.state == state)
        if message_id:
            where.append(r.message_id == message_id)
        rows, next_cursor = self._newest_first("runs", runs, r.requested_at, r.run_id, where,
                                               query_id, limit, cursor)
        return [_run(row) for row in rows], next_cursor

    def decisions(self, window: Optional[Window] = None, decision: Optional[str] = None,
                  message_id: Optional[str] = None, limit: int = 50,
                  cursor: Optional[str] = None) -> Tuple[List[Dict[str, Any]], Optional[str]]:
        """Approval decisions made in `window` (default: all), newest first, paged like
        details."""
        decision = _word("decision", decision, DECISIONS)
        limit = _limit(limit)
        query_id = {"decision": decision, "message_id": message_id or None}
        d = decisions_table.c
        where = []
        if window is not None:
            where += [d.decided_at >= window.since, d.decided_at < window.until]
        if decision:
            where.append(d.decision == decision)
        if message_id:
            where.append(d.message_id == message_id)
        rows, next_cursor = self._newest_first("decisions", decisions_table, d.decided_at, d.id,
                                               where, query_id, limit, cursor)
        return [_decision(row) for row in rows], next_cursor

    def decision_counts(self, window: Optional[Window] = None, filters: FiltersInput = None
                        ) -> Optional[Dict[str, int]]:
        """{"approved": n, "rejected": n} over the decisions made in `window` (default: the
        last 24 hours), narrowed by the trigger, disposition, destination and mode filters
        (an analyst-triggered decision is manual, any other automatic). None with a provider
        filter: a decision concerns a whole run, not one provider's copies."""
        window = window or parse_window()
        flt = Filters.of(filters)
        if flt.provider is not None:
            return None
        d = decisions_table.c
        where = [d.decided_at >= window.since, d.decided_at < window.until]
        for name in ("trigger", "disposition", "destination"):
            if getattr(flt, name) is not None:
                where.append(getattr(d, name) == getattr(flt, name))
        if flt.mode == Mode.MANUAL.value:
            where.append(d.trigger == Trigger.ANALYST.value)
        elif flt.mode == Mode.AUTO.value:
            where.append(d.trigger != Trigger.ANALYST.value)
        counts = dict.fromkeys(DECISIONS, 0)
        query = select(d.decision, func.count()).where(*where).group_by(d.decision)
        with self.engine.connect() as conn:
            for word, count in conn.execute(query):
                counts[word] = count
        return counts

    def run(self, run_id: str) -> Optional[Dict[str, Any]]:
        with self.engine.connect() as conn:
            row = conn.execute(select(runs).where(runs.c.run_id == run_id)).mappings().first()
        return _run(row) if row is not None else None

    def outcomes_for_run(self, run_id: str) -> List[Outcome]:
        """The run's outcomes (one per copy: the best its retries reported), in write order."""
        query = select(outcomes).where(outcomes.c.run_id == run_id).order_by(outcomes.c.id)
        with self.engine.connect() as conn:
            return [to_outcome(row) for row in conn.execute(query).mappings()]

    def _key(self) -> bytes:
        """The cursor signing key: made once per ledger, kept in `meta`."""
        if self._cursor_key is None:
            query = select(meta.c.value).where(meta.c.key == "cursor_key")
            with self.engine.connect() as conn:
                value = conn.execute(query).scalar()
            if value is None:
                stmt = self._insert(meta).values(key="cursor_key", value=secrets.token_hex(32))
                with self._write() as conn, conn.begin():
                    conn.execute(stmt.on_conflict_do_nothing(index_elements=[meta.c.key]))
                    value = conn.execute(query).scalar()
            self._cursor_key = bytes.fromhex(value)
        return self._cursor_key


def _run(row: Mapping[str, Any]) -> Dict[str, Any]:
    data = dict(row)
    for name in ("verdict_time", "requested_at", "finished_at"):
        if isinstance(data[name], datetime):
            data[name] = data[name].isoformat()
    data["preview"] = bool(data["preview"])
    return data


def _decision(row: Mapping[str, Any]) -> Dict[str, Any]:
    data = {name: row[name] for name in ("id", "decided_at", "decision", "message_id",
                                         "run_id", "decided_by", "comment", "copies",
                                         "destination", "trigger", "disposition")}
    if isinstance(data["decided_at"], datetime):
        data["decided_at"] = data["decided_at"].isoformat()
    return data
