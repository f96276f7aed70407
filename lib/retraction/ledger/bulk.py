"""Many rows through one statement, compiled once, straight to the driver's executemany.

Why: `Connection.execute(stmt, rows)` rebuilds every row's parameters through the compiler
(`construct_params`) and the column types one value at a time; for the ledger's 26-column
outcome rows that was most of `record_outcomes`' CPU. Here the statement is compiled once per
ledger and each row becomes a tuple (or dict, for psycopg's named style) in one pass, with
the column types' own bind processors applied only where a type has one (datetimes,
booleans on SQLite): the driver receives exactly what SQLAlchemy would have sent it.
"""
from __future__ import annotations

from operator import itemgetter
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from sqlalchemy.engine import Connection, Dialect

Row = Union[Mapping[str, Any], Sequence[Any]]
_MISSING = object()


def _getter(items: Sequence[Any]) -> Callable[[Any], Tuple[Any, ...]]:
    """`itemgetter(*items)`, returning a tuple even for one item."""
    if len(items) == 1:
        only = items[0]
        return lambda row: (row[only],)
    return itemgetter(*items)


class Bulk:
    """A statement compiled for `dialect` with the row keys `keys`; `run` sends rows."""

    def __init__(self, stmt: Any, keys: Sequence[str], dialect: Dialect):
        compiled = stmt.compile(dialect=dialect, column_keys=list(keys))
        self.sql = compiled.string
        names = list(compiled.positiontup) if compiled.positional else list(compiled.binds)
        constants = compiled.params  # binds not taken from the rows (e.g. `counted=False`)
        wanted = list(keys)
        self.names = names
        self.positional = bool(compiled.positional)
        taken: List[str] = []  # row keys, in statement order
        # (index among the taken values, processor): the column types' bind processors
        self.converters: List[Tuple[int, Callable]] = []
        # (index in the parameters, value), ascending: binds that are not row keys
        self.constants: List[Tuple[int, Any]] = []
        for index, name in enumerate(names):
            bind_type = compiled.binds[name].type  # its dialect impl: what Core applies
            process = bind_type.dialect_impl(dialect).bind_processor(dialect)
            if name in wanted:
                if process is not None:
                    self.converters.append((len(taken), process))
                taken.append(name)
            else:
                constant = constants.get(name)
                self.constants.append((index, process(constant) if process else constant))
        self.keys = tuple(wanted)
        self._by_name = _getter(taken) if taken else None
        self._by_position = _getter([wanted.index(name) for name in taken]) if taken else None

    def run(self, conn: Connection, rows: Sequence[Row]) -> None:
        """Send `rows`: mappings with (at least) this statement's keys, or tuples of the
        values in `keys` order."""
        if not rows:
            return
        take = self._by_position if isinstance(rows[0], tuple) else self._by_name
        converters, constants = self.converters, self.constants
        if take is None:
            take = lambda row: ()  # noqa: E731  # every bind is a constant
        if not converters and not constants and self.positional:
            params: List[Any] = [take(row) for row in rows]
        else:
            params = []
            # A run's rows repeat most converted values (its request and verdict times, the
            # booleans): convert each distinct value once per call.
            memo: List[Tuple[int, Callable, Dict[Any, Any]]] = [
                (index, process, {}) for index, process in converters]
            for row in rows:
                values = list(take(row))
                for index, process, seen in memo:
                    value = values[index]
                    try:
                        converted = seen.get(value, _MISSING)  # a miss is common: no KeyError
                    except TypeError:  # unhashable (JSON): convert as it is
                        converted = process(value)
                    else:
                        if converted is _MISSING:
                            converted = seen[value] = process(value)
                    values[index] = converted
                for index, constant in constants:
                    values.insert(index, constant)
                params.append(tuple(values) if self.positional
                              else dict(zip(self.names, values)))
        conn.exec_driver_sql(self.sql, params)


class BulkCache:
    """One compiled `Bulk` per statement name and row keys, for the life of a ledger."""

    def __init__(self) -> None:
        self._built: Dict[Tuple[str, Tuple[str, ...]], Bulk] = {}

    def run(self, conn: Connection, name: str, build: Callable[[], Any],
            rows: Sequence[Row], keys: Optional[Sequence[str]] = None) -> None:
        """`keys`: the row keys the statement takes (default: the first row's keys); then
        rows may also be tuples in `keys` order, or mappings with more keys."""
        if not rows:
            return
        keys = tuple(rows[0]) if keys is None else tuple(keys)
        bulk = self._built.get((name, keys))
        if bulk is None:
            bulk = self._built[(name, keys)] = Bulk(build(), keys, conn.dialect)
        bulk.run(conn, rows)
