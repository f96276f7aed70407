"""Many rows through one statement, compiled once, straight to the driver's executemany.

Why: `Connection.execute(stmt, rows)` rebuilds every row's parameters through the compiler
(`construct_params`) and the column types one value at a time; for the ledger's 26-column
outcome rows that was most of `record_outcomes`' CPU. Here the statement is compiled once per
ledger and each row becomes a tuple (or dict, for psycopg's named style) in one pass, with
the column types' own bind processors applied only where a type has one (datetimes,
booleans on SQLite): the driver receives exactly what SQLAlchemy would have sent it.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from sqlalchemy.engine import Connection, Dialect


class Bulk:
    """A statement compiled for `dialect` with the row keys `keys`; `run` sends rows."""

    def __init__(self, stmt: Any, keys: Sequence[str], dialect: Dialect):
        compiled = stmt.compile(dialect=dialect, column_keys=list(keys))
        self.sql = compiled.string
        names = list(compiled.positiontup) if compiled.positional else list(compiled.binds)
        constants = compiled.params  # binds not taken from the rows (e.g. `counted=False`)
        wanted = set(keys)
        self.names = names
        self.positional = bool(compiled.positional)
        # (name, key in the row or None, processor or None, constant)
        self.slots: List[Tuple[str, Optional[str], Optional[Callable], Any]] = []
        for name in names:
            bind_type = compiled.binds[name].type  # its dialect impl: what Core applies
            process = bind_type.dialect_impl(dialect).bind_processor(dialect)
            key = name if name in wanted else None
            constant = None if key else constants.get(name)
            if key is None and process is not None:
                constant, process = process(constant), None
            self.slots.append((name, key, process, constant))

    def run(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        params: List[Any] = []
        # A run's rows repeat most converted values (its request and verdict times, the
        # booleans): convert each distinct value once per call.
        memo: List[Dict[Any, Any]] = [{} for _ in self.slots]
        for row in rows:
            values = []
            for (_, key, process, constant), seen in zip(self.slots, memo):
                if key is None:
                    values.append(constant)
                    continue
                value = row[key]
                if process is not None:
                    try:
                        value = seen[value]
                    except KeyError:
                        value = seen[value] = process(value)
                    except TypeError:  # unhashable (JSON): convert as it is
                        value = process(value)
                values.append(value)
            params.append(tuple(values) if self.positional else dict(zip(self.names, values)))
        conn.exec_driver_sql(self.sql, params)


class BulkCache:
    """One compiled `Bulk` per statement name and row keys, for the life of a ledger."""

    def __init__(self) -> None:
        self._built: Dict[Tuple[str, Tuple[str, ...]], Bulk] = {}

    def run(self, conn: Connection, name: str, build: Callable[[], Any],
            rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        keys = tuple(rows[0])
        bulk = self._built.get((name, keys))
        if bulk is None:
            bulk = self._built[(name, keys)] = Bulk(build(), keys, conn.dialect)
        bulk.run(conn, rows)
