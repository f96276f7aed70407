"""Metric records with exact figures, through the real Ledger on SQLite and PostgreSQL, the
rendered card line by line, and the window and filter inputs."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import ledger_db
import pytest

from retraction.ledger import Ledger
from retraction.metrics import (Filters, InvalidParameter, MetricRecord, parse_window,
                                record_from_outcomes, render_card)
from retraction.metrics.card import duration
from retraction.metrics.record import time_to_retract
from retraction.model import Outcome, RetractionRequest

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
WINDOW = parse_window(since="2026-03-01T12:00:00Z", until="2026-03-03T12:00")
MSG = "<phish-1@evil.example>"

RUNS = {  # run -> (mode, trigger, disposition, destination, provider, verdict_time?)
    "run-A": ("auto", "disposition", "MALICIOUS", "trash", "microsoft", True),
    "run-A2": ("auto", "disposition", "MALICIOUS", "trash", "microsoft", True),
    "run-B": ("auto", "post_delivery", "SUSPICIOUS", "junk", "google", True),
    "run-M": ("manual", "analyst", None, "junk", "microsoft", False),
    "run-P": ("manual", "analyst", None, "junk", "microsoft", False),
    "run-old": ("manual", "analyst", None, "junk", "microsoft", False),
}
MIX = [  # run, recipient, status, reason, was_read, seconds to retract
    ("run-A", "a01", "retracted", None, True, 10.25),
    ("run-A", "a02", "retracted", None, False, 20),
    ("run-A", "a03", "retracted", None, False, 30),
    ("run-A", "a04", "retracted", None, True, 40),
    ("run-A", "a05", "retracted", None, False, 50),
    ("run-A", "a06", "already_in_destination", None, None, 12),
    ("run-A", "a07", "failed", "not_found", None, 13),
    ("run-A", "a08", "failed", "not_a_mailbox", None, 14),
    ("run-A", "a09", "failed", "provider_error", None, 15),
    ("run-B", "b01", "retracted", None, False, 100),
    ("run-B", "b02", "retracted", None, None, 300),
    ("run-B", "b03", "failed", "not_authorized", None, 16),
    ("run-B", "b04", "already_in_destination", None, None, 17),
    ("run-M", "m01", "retracted", None, True, 600.5),
    ("run-M", "m02", "retracted", None, False, 1200),
    ("run-M", "m03", "failed", "out_of_scope", None, 18),
    # a rerun of run-A: nothing new, except a09 which now succeeds
    ("run-A2", "a01", "already_in_destination", None, None, 1000),
    ("run-A2", "a07", "failed", "not_found", None, 1000),
    ("run-A2", "a09", "retracted", None, False, 90),
    # a preview, and an outcome before the window
    ("run-P", "p01", "previewed", None, False, 5),
    ("run-P", "p02", "previewed", None, True, 5),
    ("run-P", "p03", "failed", "not_found", None, 5),
    ("run-old", "o01", "retracted", None, True, -2 * 86400),
]


def mix_outcomes():
    result = []
    for run_id, name, status, reason, was_read, ttr in MIX:
        mode, trigger, disposition, destination, provider, verdict = RUNS[run_id]
        if reason == "out_of_scope":
            provider = None  # the guard refused it before any provider was chosen
        start = T0 + timedelta(days=-2 if ttr < 0 else 0)
        result.append(Outcome(
            run_id=run_id, message_id=MSG, recipient=name + "@corp.example",
            provider=provider, destination=destination, mode=mode, trigger=trigger,
            status=status, reason=reason, disposition=disposition, was_read=was_read,
            verdict_time=start if verdict else None, requested_at=start,
            completed_at=start + timedelta(seconds=abs(ttr) if ttr > 0 else 1)))
    return result


EXPECTED = {
    "window": {"since": "2026-03-01T12:00:00+00:00", "until": "2026-03-03T12:00:00+00:00",
               "last": None, "label": "2026-03-01 12:00 UTC to 2026-03-03 12:00 UTC"},
    "filters": {},
    "total": 16,
    "retracted": 10, "retracted_pct": 62.5,
    "already_in_destination": 2, "already_in_destination_pct": 12.5,
    "failed": 4, "failed_pct": 25.0,
    "failed_by_reason": {"not_found": 1, "not_a_mailbox": 1, "not_authorized": 1,
                         "out_of_scope": 1, "provider_error": 0},
    "failed_by_reason_pct": {"not_found": 6.3, "not_a_mailbox": 6.3, "not_authorized": 6.3,
                             "out_of_scope": 6.3, "provider_error": 0.0},
    "previewed": 2, "preview_failed": 1,
    "read": 3, "unread": 6, "read_unknown": 1, "read_pct": 30.0, "unread_pct": 60.0,
    "auto": 13, "auto_pct": 81.3, "manual": 3, "manual_pct": 18.8,
    "by_provider": {"microsoft": 11, "google": 4, "unspecified": 1},
    "by_destination": {"junk": 7, "trash": 9},
    "by_disposition": {"MALICIOUS": 9, "SUSPICIOUS": 4, "unspecified": 3},
    "by_trigger": {"disposition": 9, "post_delivery": 4, "analyst": 3},
    # sorted: 10.25 20 30 40 50 90 100 300 600.5 1200; p50 between 50 and 90,
    # p95 = 600.5 + (1200 - 600.5) * 0.55
    "time_to_retract": {"count": 10, "p50_s": 70.0, "p95_s": 930.225, "max_s": 1200.0},
}

CARD_TEXT = """\
Retractions · 2026-03-01 12:00 UTC to 2026-03-03 12:00 UTC
Total retractions: 16
Success: 10 (62.5%)
Fail: 4 (25.0%): not_found 1, not_a_mailbox 1, not_authorized 1, out_of_scope 1
Already in destination: 2 (12.5%)
Unread / Read: 6 / 3 (1 unknown)
Auto / Manual: 13 / 3
Time to retract: p50 1m 10s · p95 15m 30s · max 20m 00s
Previewed, not moved: 2 (1 would fail)
By provider: microsoft 11, google 4, unspecified 1
By destination: junk 7, trash 9
By disposition: MALICIOUS 9, SUSPICIOUS 4, unspecified 3
By trigger: disposition 9, post_delivery 4, analyst 3
"""

CARD_MARKDOWN = """\
**Retractions** · 2026-03-01 12:00 UTC to 2026-03-03 12:00 UTC

- **Total retractions:** 16
- **Success:** 10 (62.5%)
- **Fail:** 4 (25.0%): not_found 1, not_a_mailbox 1, not_authorized 1, out_of_scope 1
- **Already in destination:** 2 (12.5%)
- **Unread / Read:** 6 / 3 (1 unknown)
- **Auto / Manual:** 13 / 3
- **Time to retract:** p50 1m 10s · p95 15m 30s · max 20m 00s
- **Previewed, not moved:** 2 (1 would fail)
- **By provider:** microsoft 11, google 4, unspecified 1
- **By destination:** junk 7, trash 9
- **By disposition:** MALICIOUS 9, SUSPICIOUS 4, unspecified 3
- **By trigger:** disposition 9, post_delivery 4, analyst 3
"""

CARD_HTML = """\
<div class="retractions-card">
<h3>Retractions <small>2026-03-01 12:00 UTC to 2026-03-03 12:00 UTC</small></h3>
<table>
<tr><th>Total retractions</th><td>16</td></tr>
<tr><th>Success</th><td>10 (62.5%)</td></tr>
<tr><th>Fail</th><td>4 (25.0%): not_found 1, not_a_mailbox 1, not_authorized 1, \
out_of_scope 1</td></tr>
<tr><th>Already in destination</th><td>2 (12.5%)</td></tr>
<tr><th>Unread / Read</th><td>6 / 3 (1 unknown)</td></tr>
<tr><th>Auto / Manual</th><td>13 / 3</td></tr>
<tr><th>Time to retract</th><td>p50 1m 10s · p95 15m 30s · max 20m 00s</td></tr>
<tr><th>Previewed, not moved</th><td>2 (1 would fail)</td></tr>
<tr><th>By provider</th><td>microsoft 11, google 4, unspecified 1</td></tr>
<tr><th>By destination</th><td>junk 7, trash 9</td></tr>
<tr><th>By disposition</th><td>MALICIOUS 9, SUSPICIOUS 4, unspecified 3</td></tr>
<tr><th>By trigger</th><td>disposition 9, post_delivery 4, analyst 3</td></tr>
</table>
</div>
"""


@pytest.fixture(params=ledger_db.BACKENDS)
def ledger(request, tmp_path):
    with ledger_db.database_url(request.param, tmp_path) as url:
        with Ledger(url) as opened:
            for run_id, (mode, trigger, disposition, destination, _, _) in RUNS.items():
                opened.record_run_started(RetractionRequest(
                    message_id=MSG, recipients=("x@corp.example",), destination=destination,
                    mode=mode, trigger=trigger, disposition=disposition, run_id=run_id,
                    preview=run_id == "run-P", requested_at=T0))
            outcomes = mix_outcomes()
            opened.record_outcomes(outcomes[:10])  # as a provider reports them, in pieces
            opened.record_outcomes(outcomes[10:17])
            opened.record_outcomes(outcomes[17:])
            yield opened


# ------------------------------------------------------------------------ exact figures

def test_window_record_exact_figures(ledger):
    record = ledger.metric_record(WINDOW)
    assert record.to_dict() == EXPECTED
    json.dumps(record.to_dict())  # JSON-safe as it is


def test_card_every_line(ledger):
    record = ledger.metric_record(WINDOW)
    assert render_card(record) == CARD_TEXT
    assert render_card(record, "markdown") == CARD_MARKDOWN
    assert render_card(record, "html") == CARD_HTML
    assert render_card(record.to_dict()) == CARD_TEXT  # e.g. a run's stored record


@pytest.mark.parametrize("filters, expected", [
    ({"provider": "google"}, {
        "total": 4, "retracted": 2, "already_in_destination": 1, "failed": 1,
        "retracted_pct": 50.0, "failed_by_reason": {"not_authorized": 1},
        "auto": 4, "manual": 0, "read": 0, "unread": 1, "read_unknown": 1,
        "previewed": 0, "preview_failed": 0,
        "time_to_retract": {"count": 2, "p50_s": 200.0, "p95_s": 290.0, "max_s": 300.0}}),
    ({"mode": "manual"}, {
        "total": 3, "retracted": 2, "already_in_destination": 0, "failed": 1,
        "retracted_pct": 66.7, "failed_by_reason": {"out_of_scope": 1},
        "auto": 0, "manual": 3, "read": 1, "unread": 1, "read_unknown": 0,
        "previewed": 2, "preview_failed": 1,
        "time_to_retract": {"count": 2, "p50_s": 900.25, "p95_s": 1170.025,
                            "max_s": 1200.0}}),
    ({"destination": "trash", "trigger": "disposition", "disposition": "malicious"}, {
        "total": 9, "retracted": 6, "already_in_destination": 1, "failed": 2,
        "retracted_pct": 66.7, "failed_by_reason": {"not_found": 1, "not_a_mailbox": 1},
        "auto": 9, "manual": 0, "read": 2, "unread": 4, "read_unknown": 0,
        "previewed": 0, "preview_failed": 0,
        "time_to_retract": {"count": 6, "p50_s": 35.0, "p95_s": 80.0, "max_s": 90.0}}),
    ({"provider": "microsoft", "trigger": "post_delivery"}, {
        "total": 0, "retracted": 0, "already_in_destination": 0, "failed": 0,
        "retracted_pct": 0.0, "failed_by_reason": {}, "auto": 0, "manual": 0, "read": 0,
        "unread": 0, "read_unknown": 0, "previewed": 0, "preview_failed": 0,
        "time_to_retract": {"count": 0, "p50_s": None, "p95_s": None, "max_s": None}}),
])
def test_filtered_record_exact_figures(ledger, filters, expected):
    expected = dict(expected)  # the parameters are shared by both backends
    record = ledger.metric_record(WINDOW, filters).to_dict()
    reasons = {k: v for k, v in record.pop("failed_by_reason").items() if v}
    assert reasons == expected.pop("failed_by_reason")
    assert {k: record[k] for k in expected} == expected
    assert record["filters"] == Filters.of(filters).to_dict()


def test_windows_select_by_completion_time(ledger):
    old = ledger.metric_record(parse_window(last="1d", now=T0 - timedelta(days=1)))
    assert (old.total, old.retracted, old.read) == (1, 1, 1)
    recent = ledger.metric_record(parse_window(since=T0, until=T0 + timedelta(seconds=60)))
    # completed in the first minute: a01-a05, a06, b04, and the failures a07, a08, b03, m03;
    # a09 failed then too, but its later retraction (at 90 s) is what counts
    assert (recent.total, recent.retracted, recent.already_in_destination, recent.failed) == \
        (11, 5, 2, 4)


def test_run_record_from_outcomes_has_the_same_figures(ledger):
    real = [o for o in mix_outcomes() if o.run_id not in ("run-P", "run-old")]
    expected = dict(EXPECTED, window=None, previewed=0, preview_failed=0)
    assert record_from_outcomes(real).to_dict() == expected
    preview = record_from_outcomes(ledger.outcomes_for_run("run-P"), preview=True)
    assert (preview.total, preview.previewed, preview.preview_failed) == (0, 2, 1)
    stored = ledger.record_run_finished("run-A")
    assert (stored.total, stored.retracted, stored.failed) == (9, 5, 3)
    assert ledger.run("run-A")["metric_record"]["failed_by_reason"]["provider_error"] == 1


def test_record_round_trips_through_its_dict(ledger):
    record = ledger.metric_record(WINDOW, {"provider": "google"})
    assert MetricRecord.from_dict(record.to_dict()) == record
    assert MetricRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record


# --------------------------------------------------------------------------------- card

def test_card_title_is_escaped_in_html_only():
    record = record_from_outcomes([])
    assert render_card(record, "html", title="<b>SOC & CERT</b>").splitlines()[1] == \
        "<h3>&lt;b&gt;SOC &amp; CERT&lt;/b&gt; <small>one run</small></h3>"
    assert render_card(record, "text", title="<b>SOC & CERT</b>").splitlines()[0] == \
        "<b>SOC & CERT</b> · one run"


def test_card_of_an_empty_last_window():
    now = datetime(2026, 3, 2, 9, 30, tzinfo=timezone.utc)
    record = record_from_outcomes([], window=parse_window(last="24h", now=now),
                                  filters={"provider": "google", "mode": "auto"})
    assert render_card(record) == (
        "Retractions · last 24h\n"
        "Window: 2026-03-01 09:30 UTC to 2026-03-02 09:30 UTC\n"
        "Filters: provider=google, mode=auto\n"
        "Total retractions: 0\n"
        "Success: 0 (0.0%)\n"
        "Fail: 0 (0.0%)\n"
        "Already in destination: 0 (0.0%)\n"
        "Unread / Read: 0 / 0\n"
        "Auto / Manual: 0 / 0\n"
        "Time to retract: n/a\n")


def test_card_format_must_be_known():
    with pytest.raises(InvalidParameter) as error:
        render_card(record_from_outcomes([]), "pdf")
    assert error.value.field == "format"


@pytest.mark.parametrize("seconds, text", [
    (None, "n/a"), (0.0, "0.0s"), (4.25, "4.3s"), (9.94, "9.9s"), (12.5, "13s"),
    (59.4, "59s"), (59.5, "1m 00s"), (70.0, "1m 10s"), (3599.4, "59m 59s"),
    (3600, "1h 00m"), (7384, "2h 03m"), (90061, "1d 01h"),
])
def test_duration_reads_like_a_person_writes_it(seconds, text):
    assert duration(seconds) == text


# ---------------------------------------------------------------------- percentiles

def test_time_to_retract_interpolates_like_percentile_cont():
    assert time_to_retract([]).to_dict() == {"count": 0, "p50_s": None, "p95_s": None,
                                             "max_s": None}
    assert time_to_retract([7000]).to_dict() == {"count": 1, "p50_s": 7.0, "p95_s": 7.0,
                                                 "max_s": 7.0}
    ms = [s * 1000 for s in range(10, 0, -1)]  # 1..10 s, unsorted
    assert time_to_retract(ms).to_dict() == {"count": 10, "p50_s": 5.5, "p95_s": 9.55,
                                             "max_s": 10.0}
    assert time_to_retract([1, 2]).p50_s == 0.002  # 1.5 ms rounds half up


def test_negative_clock_skew_counts_as_zero():
    outcome = Outcome(run_id="r", message_id=MSG, recipient="a@corp.example",
                      provider="google", destination="junk", mode="auto",
                      trigger="disposition", status="retracted",
                      verdict_time=T0 + timedelta(seconds=3), completed_at=T0)
    assert record_from_outcomes([outcome]).time_to_retract.max_s == 0.0


# -------------------------------------------------------------------------------- window

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("last, span", [
    ("15m", timedelta(minutes=15)), ("24h", timedelta(hours=24)), ("7d", timedelta(days=7)),
    ("4w", timedelta(weeks=4)), (" 36H ", timedelta(hours=36)),
])
def test_last(last, span):
    window = parse_window(last=last, now=NOW)
    assert (window.since, window.until) == (NOW - span, NOW)
    assert window.label == "last " + last.strip().lower()


def test_default_window_is_the_last_24_hours():
    window = parse_window(now=NOW)
    assert (window.since, window.until, window.last) == (NOW - timedelta(hours=24), NOW, "24h")
    real = parse_window()
    assert real.until.tzinfo is not None and real.until - real.since == timedelta(hours=24)


@pytest.mark.parametrize("since, until, expected_since, expected_until", [
    ("2026-03-01T10:00", "2026-03-01T11:00:00Z",  # naive is UTC
     datetime(2026, 3, 1, 10, tzinfo=timezone.utc),
     datetime(2026, 3, 1, 11, tzinfo=timezone.utc)),
    ("2026-03-01T12:00:00+02:00", "2026-03-01 12:00:00.5-0100",
     datetime(2026, 3, 1, 10, tzinfo=timezone.utc),
     datetime(2026, 3, 1, 13, 0, 0, 500000, tzinfo=timezone.utc)),
    ("2026-03-01", None, datetime(2026, 3, 1, tzinfo=timezone.utc), NOW),
    (datetime(2026, 3, 1, 8), datetime(2026, 3, 1, 10, tzinfo=timezone(timedelta(hours=1))),
     datetime(2026, 3, 1, 8, tzinfo=timezone.utc), datetime(2026, 3, 1, 9, tzinfo=timezone.utc)),
])
def test_since_until(since, until, expected_since, expected_until):
    window = parse_window(since=since, until=until, now=NOW)
    assert (window.since, window.until) == (expected_since, expected_until)
    assert window.since.tzinfo == timezone.utc and window.last is None


@pytest.mark.parametrize("kwargs, field, words", [
    ({"last": "3x"}, "last", "'3x'"),
    ({"last": "0h"}, "last", "positive"),
    ({"last": "-1h"}, "last", "'-1h'"),
    ({"last": "h"}, "last", "duration"),
    ({"last": "200w"}, "last", "longer"),
    ({"last": "24h", "since": "2026-03-01"}, "last", "not both"),
    ({"since": "2026-03-02T10:00Z", "until": "2026-03-02T09:00Z"}, "since", "not before"),
    ({"since": "2026-03-02T10:00Z", "until": "2026-03-02T10:00Z"}, "since", "not before"),
    ({"since": "2026-03-03T00:00Z"}, "since", "not before"),  # until defaults to now
    ({"until": "2026-03-02T10:00Z"}, "since", "required"),
    ({"since": "yesterday"}, "since", "ISO 8601"),
    ({"since": "2026-02-30"}, "since", "not a valid time"),
    ({"since": "2026-03-01", "until": "2026-13-01"}, "until", "not a valid time"),
    ({"since": 1700000000}, "since", "ISO 8601"),
    ({"since": "2020-01-01"}, "since", "longer"),
])
def test_bad_window_input_names_the_parameter(kwargs, field, words):
    with pytest.raises(InvalidParameter) as error:
        parse_window(now=NOW, **kwargs)
    assert error.value.field == field and words in str(error.value)
    assert str(error.value).startswith(field + ": ")


# ------------------------------------------------------------------------------- filters

def test_filters_normalise_words():
    assert Filters.of({"disposition": "malicious", "provider": "Google", "mode": None,
                       "trigger": ""}).to_dict() == {"provider": "google",
                                                     "disposition": "MALICIOUS"}


@pytest.mark.parametrize("mapping, field", [
    ({"colour": "red"}, "colour"), ({"provider": "yahoo"}, "provider"),
    ({"destination": "archive"}, "destination"), ({"mode": "semi"}, "mode"),
    ({"trigger": "gut"}, "trigger"), ({"disposition": "EVIL"}, "disposition"),
])
def test_bad_filters_name_the_filter(mapping, field):
    with pytest.raises(InvalidParameter) as error:
        Filters.of(mapping)
    assert error.value.field == field
