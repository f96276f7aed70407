"""Outcomes -> metric record, and the "Retractions" card drawn from it.

    from retraction.metrics import parse_window, Filters, record_from_outcomes, render_card

The window record itself is computed in SQL by `Ledger.metric_record(window, filters)`.
`parse_query` checks the parameters of a metrics or details read (actions and CLI alike).
"""
from __future__ import annotations

from retraction.metrics.card import render_card
from retraction.metrics.errors import InvalidParameter
from retraction.metrics.query import Query, card_format, parse_query
from retraction.metrics.record import (Filters, MetricRecord, TimeToRetract,
                                       record_from_outcomes)
from retraction.metrics.window import Window, parse_window

__all__ = ["Filters", "InvalidParameter", "MetricRecord", "Query", "TimeToRetract", "Window",
           "card_format", "parse_query", "parse_window", "record_from_outcomes", "render_card"]
