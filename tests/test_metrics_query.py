"""`retraction.metrics.parse_query`: the one check of the metrics/details parameters that the
actions and the command line share. Values are normalised; every error names its parameter."""
from datetime import datetime, timezone

import pytest

from retraction.metrics import InvalidParameter, card_format, parse_query
from retraction.metrics.query import DEFAULT_LIMIT, MAX_LIMIT


def test_metrics_reads_only_the_window_and_the_filters():
    query = parse_query({"since": "2024-05-01", "until": "2024-05-02T06:00:00+02:00",
                         "provider": " Google ", "disposition": "malicious", "mode": "",
                         "status": "not even looked at"})
    assert query.window.since == datetime(2024, 5, 1, tzinfo=timezone.utc)
    assert query.window.until == datetime(2024, 5, 2, 4, tzinfo=timezone.utc)
    assert query.filters.to_dict() == {"provider": "google", "disposition": "MALICIOUS"}
    assert query.status is None and query.limit == DEFAULT_LIMIT


def test_details_normalises_every_row_condition():
    query = parse_query({"last": "7D", "status": " Failed ", "reason": "NOT_FOUND",
                         "recipient": "Alice@CORP.example", "message_id": "abc@evil.example",
                         "limit": " 20 ", "cursor": " abc.def "}, rows=True)
    assert query.window.last == "7d"
    assert query.details_args() == {
        "status": "failed", "reason": "not_found", "recipient": "Alice@corp.example",
        "message_id": "<abc@evil.example>", "limit": 20, "cursor": "abc.def"}
    empty = parse_query({"status": "", "recipient": "  ", "limit": None, "cursor": ""},
                        rows=True)
    assert empty.details_args() == {"status": None, "reason": None, "recipient": None,
                                    "message_id": None, "limit": DEFAULT_LIMIT, "cursor": None}
    assert parse_query({"limit": MAX_LIMIT}, rows=True).limit == MAX_LIMIT


@pytest.mark.parametrize("params, field", [
    ({"last": "3y"}, "last"),
    ({"last": "1h", "until": "2024-05-01"}, "last"),
    ({"until": "2024-05-01"}, "since"),
    ({"since": "2024-05-01", "until": "noon"}, "until"),
    ({"trigger": "whim"}, "trigger"),
    ({"destination": "void"}, "destination"),
    ({"status": "gone"}, "status"),
    ({"reason": "bad_luck"}, "reason"),
    ({"recipient": "not an address"}, "recipient"),
    ({"message_id": "x y"}, "message_id"),
    ({"limit": 0}, "limit"),
    ({"limit": MAX_LIMIT + 1}, "limit"),
    ({"limit": True}, "limit"),
    ({"limit": 2.5}, "limit"),
    ({"cursor": "forged"}, "cursor"),
    ({"cursor": 12}, "cursor"),
])
def test_errors_name_the_parameter(params, field):
    with pytest.raises(InvalidParameter) as caught:
        parse_query(params, rows=True)
    assert caught.value.field == field
    assert str(caught.value).startswith(field + ": ")


def test_card_format():
    assert card_format(None) == "text" and card_format("") == "text"
    assert card_format(" Markdown ") == "markdown" and card_format("json") == "json"
    with pytest.raises(InvalidParameter) as caught:
        card_format("pdf")
    assert caught.value.field == "format"
