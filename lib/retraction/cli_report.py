"""`metrics` and `details` for the command line: the Retractions card and the outcome rows
behind it, read from the ledger. The JSON shapes are the actions' (`retraction_metrics`:
{window, filters, format, record, decisions, card}; `retraction_details`: {window, filters,
rows, count, next_cursor})."""
from __future__ import annotations

import argparse
from typing import Any, Dict, List, Optional, TextIO

from retraction.cli import EXIT_OK, Unavailable, emit, ledger_of, open_app
from retraction.metrics import Filters, parse_query, render_card
from retraction.metrics.query import FILTERS

# details columns: (heading, row key); the error column is built from code and message
COLUMNS = (("completed (UTC)", "completed_at"), ("status", "status"), ("reason", "reason"),
           ("recipient", "recipient"), ("provider", "provider"),
           ("destination", "destination"), ("message_id", "message_id"), ("error", None))
ERROR_WIDTH = 60


def report_command(args: argparse.Namespace, stdout: TextIO) -> int:
    # Everything the user typed is checked before the config or the ledger is opened, by the
    # same code as the actions' parameters.
    params: Dict[str, Any] = {name: getattr(args, name) for name in
                              ("last", "since", "until") + FILTERS}
    if args.command == "details":
        params.update({name: getattr(args, name) for name in
                       ("status", "reason", "recipient", "message_id", "limit", "cursor")})
    query = parse_query(params, rows=args.command == "details")
    window, filters = query.window, query.filters
    as_json = args.json or args.format == "json"
    app = open_app(args)
    try:
        ledger = ledger_of(app, required=True)
        try:
            if args.command == "metrics":
                record = ledger.metric_record(window, filters)
                decisions = ledger.decision_counts(window, filters)
            else:
                rows, next_cursor = ledger.details(window, filters, **query.details_args())
        except Exception as exc:
            _reraise_unavailable(exc)
            raise
    finally:
        app.close()
    if args.command == "metrics":
        if as_json:
            fmt = "json" if args.format == "json" else args.format
            emit(stdout, {"window": window.to_dict(), "filters": filters.to_dict(),
                          "format": fmt, "record": record.to_dict(), "decisions": decisions,
                          "card": None if fmt == "json" else render_card(record, fmt)})
        else:
            stdout.write(render_card(record, args.format))
        return EXIT_OK
    if as_json:
        emit(stdout, {"window": window.to_dict(), "filters": filters.to_dict(), "rows": rows,
                      "count": len(rows), "next_cursor": next_cursor})
    else:
        stdout.write(details_text(window.label, filters, rows, next_cursor,
                                  markdown=args.format == "markdown"))
    return EXIT_OK


def _reraise_unavailable(exc: Exception) -> None:
    """A database that stops answering is 'unavailable' (exit 3), not a bug."""
    try:
        from sqlalchemy.exc import OperationalError
    except ImportError:  # pragma: no cover - SQLAlchemy is a requirement
        return
    if isinstance(exc, OperationalError):
        from retraction.config import mask_url

        raise Unavailable("the ledger stopped answering: %s" % mask_url(str(exc.orig))[:300]) \
            from None


def _cell(row: Dict[str, Any], key: Optional[str]) -> str:
    if key is None:
        code, text = row.get("error_code"), " ".join((row.get("error_message") or "").split())
        value = "%s: %s" % (code, text) if code and text else (code or text or "")
        return value if len(value) <= ERROR_WIDTH else value[:ERROR_WIDTH - 3] + "..."
    value = row.get(key)
    if key == "completed_at" and value:
        return str(value)[:19].replace("T", " ")
    if key == "status" and row.get("preview") and value != "previewed":
        return "%s (preview)" % value
    return "" if value is None else str(value)


def details_text(label: str, filters: Filters, rows: List[Dict[str, Any]],
                 next_cursor: Optional[str], markdown: bool = False) -> str:
    head = "Retraction details · %s" % label
    if filters.items():
        head += " · " + ", ".join("%s=%s" % item for item in filters.items())
    head += " · %d row%s" % (len(rows), "" if len(rows) == 1 else "s")
    cells = [[_cell(row, key) for _, key in COLUMNS] for row in rows]
    headings = [name for name, _ in COLUMNS]
    if markdown:
        lines = ["**%s**" % head, ""]
        if cells:
            lines.append("| " + " | ".join(headings) + " |")
            lines.append("|" + "|".join("---" for _ in headings) + "|")
            # a bare <id@host> would be read as an autolink or an HTML tag
            code = {i for i, (_, key) in enumerate(COLUMNS) if key == "message_id"}
            lines += ["| " + " | ".join(("`%s`" % c if i in code and c else c)
                                        .replace("|", "\\|") for i, c in enumerate(line))
                      + " |" for line in cells]
    else:
        lines = [head]
        if cells:
            widths = [max(len(h), *(len(line[i]) for line in cells))
                      for i, h in enumerate(headings)]
            lines.append("  ".join(h.ljust(w) for h, w in zip(headings, widths)).rstrip())
            lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()
                      for line in cells]
    if not rows:
        lines.append("No outcomes in this window.")
    if next_cursor:
        lines += ["", "More rows: repeat the command with --cursor %s" % next_cursor]
    return "\n".join(lines) + "\n"
