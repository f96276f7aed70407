"""The "Retractions" card: a metric record rendered with the Jinja2 templates shipped in
`templates/` (text for chat and logs, markdown for ChatOps, html autoescaped for mail/web).

Jinja2 is imported on first render only: most actions never draw a card.
"""
from __future__ import annotations

import os
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Mapping, Optional, Union

from retraction.metrics.errors import InvalidParameter
from retraction.metrics.record import MetricRecord
from retraction.metrics.window import format_utc

FORMATS = {"text": "card.txt.j2", "markdown": "card.md.j2", "html": "card.html.j2"}
TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")

_environment = None


def duration(value: Optional[float]) -> str:
    """Seconds as a person reads them: 4.2s, 42s, 4m 05s, 2h 03m, 1d 02h."""
    if value is None:
        return "n/a"
    if value < 10:
        return "{}s".format(Decimal(str(value)).quantize(Decimal("0.1"), ROUND_HALF_UP))
    whole = int(Decimal(str(value)).quantize(Decimal("1"), ROUND_HALF_UP))
    if whole < 60:
        return "{}s".format(whole)
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60),
                                      ("m", 60, "s", 1)):
        if whole >= size:
            return "{}{} {:02d}{}".format(whole // size, unit, (whole % size) // sub_size, sub)
    return "{}s".format(whole)  # unreachable: whole >= 60 matched "m" above


def counts(mapping: Mapping[str, int]) -> str:
    """`{"junk": 3, "trash": 1}` -> `junk 3, trash 1`; only non-zero entries."""
    return ", ".join("{} {}".format(k, n) for k, n in mapping.items() if n) or "none"


def _env():
    global _environment
    if _environment is None:
        import jinja2

        _environment = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",),
                                                default_for_string=False, default=False),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
        )
        _environment.filters["duration"] = duration
        _environment.filters["counts"] = counts
    return _environment


def render_card(record: Union[MetricRecord, Mapping[str, Any]], format: str = "text",
                title: str = "Retractions") -> str:
    """The card for `record` (a MetricRecord or its `to_dict()`) in text, markdown or html."""
    if format not in FORMATS:
        raise InvalidParameter("format", "{!r} is not one of {}".format(
            format, ", ".join(FORMATS)))
    if not isinstance(record, MetricRecord):
        record = MetricRecord.from_dict(record)
    data = record.to_dict()
    window = record.window
    ttr = record.time_to_retract
    context = {
        "r": data,
        "title": title,
        "window_label": window.label if window else "one run",
        # `last 24h` does not say which 24 hours; an explicit since/until label already does
        "window_times": "{} to {}".format(format_utc(window.since), format_utc(window.until))
        if window and window.last else "",
        "filters": ", ".join("{}={}".format(k, v) for k, v in record.filters.items()),
        "ttr": "p50 {} · p95 {} · max {}".format(duration(ttr.p50_s), duration(ttr.p95_s),
                                                 duration(ttr.max_s)) if ttr.count else "n/a",
    }
    return _env().get_template(FORMATS[format]).render(**context).strip() + "\n"
