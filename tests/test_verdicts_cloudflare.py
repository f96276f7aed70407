"""retraction.verdicts: the Cloudflare client against the sandbox (paging, errors, retries),
row checking and the disposition mapping, the sensors' decisions and datastore encoding, and
the polls driven directly (small pages, the bounded seen-set, corrupt state)."""
import json
from datetime import datetime, timedelta, timezone
from unittest import mock

import pytest

from retraction.config import ConfigError
from retraction.model import Disposition
from retraction.verdicts import rows as rows_mod
from retraction.verdicts.cloudflare import CloudflareClient, CloudflareError
from retraction.verdicts.poll import Backoff, SubmissionPoll, VerdictPoll, verdict_poll
from retraction.verdicts.rows import (MalformedRow, is_delivered, submission_row, verdict_row,
                                      wanted)
from retraction.verdicts.watch import (HandledSet, SeenSet, bucket_name, checkpoint_value,
                                       decide, journal_value, read_checkpoint, read_journal)
from sandbox.tenant import utc_now

pytest_plugins = ["sandbox.pytest_plugin"]

UTC = timezone.utc


class KV(object):
    def __init__(self, name, value):
        self.name = name
        self.value = value


class Store(object):
    """The datastore methods a sensor service offers, with StackStorm's str() on write."""

    def __init__(self):
        self.items = {}

    def get_value(self, name, local=True):
        return self.items.get(name)

    def set_value(self, name, value, local=True):
        self.items[name] = str(value)
        return True

    def delete_value(self, name, local=True):
        return self.items.pop(name, None) is not None

    def list_values(self, local=True, prefix=None):
        return [KV("pack.Sensor:" + n, v) for n, v in sorted(self.items.items())
                if n.startswith(prefix or "")]


def client_for(sandbox, **kwargs):
    creds = sandbox.credentials()["cloudflare"]
    return CloudflareClient(creds["account_id"], kwargs.pop("token", creds["api_token"]),
                            sandbox.urls["cloudflare_url"], **kwargs)


def hits(sandbox, route="cloudflare.investigate"):
    return sandbox.counters.snapshot()["routes"].get(route, 0)


def raw_row(**over):
    row = {"id": "R1", "postfix_id": "P1", "message_id": "<m@evil.example>",
           "scanned_at": "2024-05-01T12:00:00.000Z", "from": "x@evil.example",
           "client_recipients": ["alice@corp.example"], "to": ["list@corp.example"],
           "subject": "Hi", "final_disposition": "MALICIOUS", "delivery_mode": "DIRECT",
           "delivery_status": ["delivered"]}
    row.update(over)
    return row


# -- client -----------------------------------------------------------------------------------
def test_investigate_follows_the_cursor_over_every_page(sandbox):
    for i in range(23):
        sandbox.add_verdict(message_id="<p%02d@evil.example>" % i, to=["bob@corp.example"],
                            final_disposition="NONE", scanned_at="-%dm" % (30 - i))
    client = client_for(sandbox)
    pages = list(client.investigate(start=utc_now() - timedelta(hours=1), end=utc_now(),
                                    per_page=5))
    assert [len(p) for p in pages] == [5, 5, 5, 5, 5]  # 23 + the 2 basic rows
    ids = [r["id"] for p in pages for r in p]
    assert len(ids) == len(set(ids)) == 25
    assert hits(sandbox) == 5


def test_investigate_window_and_filters(sandbox):
    now = utc_now()
    old = sandbox.add_verdict(message_id="<old@evil.example>", to=["bob@corp.example"],
                              final_disposition="MALICIOUS", scanned_at="-3h")
    client = client_for(sandbox)
    recent = [r["message_id"] for p in client.investigate(start=now - timedelta(hours=1),
                                                          end=now) for r in p]
    assert recent == ["<abc@evil.example>", "<o'brien+promo@evil.example>"]
    malicious = [r["id"] for p in client.investigate(start=now - timedelta(hours=4), end=now,
                                                     final_disposition="MALICIOUS") for r in p]
    assert old["id"] in malicious and len(malicious) == 2
    by_id = [r["id"] for p in client.investigate(message_id="<old@evil.example>") for r in p]
    assert by_id == [old["id"]]


def test_end_is_inclusive_to_the_millisecond(sandbox):
    row = sandbox.add_verdict(message_id="<edge@evil.example>", to=["bob@corp.example"],
                              final_disposition="SPAM", scanned_at="-1m")
    scanned = sandbox.tenant.verdicts[row["id"]].scanned_at
    ids = [r["id"] for p in client_for(sandbox).investigate(start=scanned, end=scanned)
           for r in p]
    assert ids == [row["id"]]


def test_one_message_by_postfix_id_or_id(sandbox):
    verdict = next(iter(sandbox.tenant.verdicts.values()))
    client = client_for(sandbox)
    assert client.message(verdict.postfix_id)["id"] == verdict.id
    assert client.message(verdict.id)["message_id"] == verdict.message_id
    assert client.message("NOSUCHID") is None


def test_submissions_page_by_page(sandbox):
    for i in range(6):
        sandbox.add_submission(submission_id="s-p%d" % i, message_id="<abc@evil.example>",
                               requested_ts="-%dm" % (7 - i))
    client = client_for(sandbox)
    pages = list(client.submissions(start=utc_now() - timedelta(hours=1), end=utc_now(),
                                    per_page=3))
    assert [len(p) for p in pages] == [3, 3, 1]
    assert sorted(r["submission_id"] for p in pages for r in p) == sorted(
        ["s-1"] + ["s-p%d" % i for i in range(6)])
    assert hits(sandbox, "cloudflare.submissions") == 3


def test_refused_credentials_name_the_status_not_the_token(sandbox):
    client = client_for(sandbox, token="not-the-token-123")
    with pytest.raises(CloudflareError) as info:
        list(client.investigate())
    assert info.value.status == 401 and info.value.code == 10000
    assert "not-the-token-123" not in str(info.value)
    assert "not-the-token-123" not in repr(client)
    creds = sandbox.credentials()["cloudflare"]
    other = CloudflareClient("another-account", creds["api_token"],
                             sandbox.urls["cloudflare_url"])
    with pytest.raises(CloudflareError) as info:
        list(other.submissions())
    assert info.value.status == 403


def test_server_errors_are_retried_then_raised(sandbox):
    sandbox.set_faults(cloudflare={"rate_5xx": 1.0, "retry_after": 0})
    client = client_for(sandbox, backoff_factor=0)
    with pytest.raises(CloudflareError) as info:
        list(client.investigate())
    assert info.value.status == 503
    assert hits(sandbox) == 3  # the request and two retries


def test_a_transient_error_is_absorbed_inside_the_call(sandbox):
    # Seeded faults: with this seed some requests fail once or twice, none three times.
    sandbox.set_faults(seed=7, cloudflare={"rate_5xx": 0.3, "retry_after": 0})
    client = client_for(sandbox, backoff_factor=0)
    for i in range(9):
        sandbox.add_verdict(message_id="<t%d@evil.example>" % i, to=["bob@corp.example"],
                            final_disposition="NONE", scanned_at="-%dm" % (9 - i))
    rows = [r for p in client.investigate(per_page=1) for r in p]
    assert len(rows) == 11
    statuses = sandbox.counters.snapshot()["statuses"]["cloudflare.investigate"]
    assert statuses.get("503", 0) > 0 and statuses["200"] == 11


def test_dropped_connections_are_retried_then_raised(sandbox):
    sandbox.set_faults(cloudflare={"rate_drop": 1.0})
    with pytest.raises(CloudflareError) as info:
        list(client_for(sandbox, backoff_factor=0).investigate())
    assert info.value.status is None and "did not answer" in str(info.value)


def test_throttling_is_not_retried_inside_the_call(sandbox):
    sandbox.set_faults(cloudflare={"rate_429": 1.0, "retry_after": 42})
    with pytest.raises(CloudflareError) as info:
        list(client_for(sandbox).investigate())
    assert (info.value.status, info.value.retry_after) == (429, 42.0)
    assert hits(sandbox) == 1


def test_client_refuses_bad_arguments(sandbox):
    with pytest.raises(ValueError):
        CloudflareClient("acc", "", "http://127.0.0.1:1/client/v4")
    with pytest.raises(ValueError):
        list(client_for(sandbox).investigate(per_page=1001))


# -- rows -------------------------------------------------------------------------------------
@pytest.mark.parametrize("word,expected", [
    ("MALICIOUS", "MALICIOUS"), ("MALICIOUS-BEC", "MALICIOUS"), ("SUSPICIOUS", "SUSPICIOUS"),
    ("SPOOF", "SPOOF"), ("SPAM", "SPAM"), ("BULK", "BULK"), ("ENCRYPTED", "NONE"),
    ("EXTERNAL", "NONE"), ("UNKNOWN", "NONE"), ("NONE", "NONE"), (None, "NONE"),
    ("malicious", "MALICIOUS"),
])
def test_disposition_mapping(word, expected):
    verdict = verdict_row(raw_row(final_disposition=word))
    assert verdict.disposition == Disposition(expected)
    assert verdict.source_disposition == (word or "NONE").upper()


def test_an_unknown_disposition_is_malformed():
    with pytest.raises(MalformedRow) as info:
        verdict_row(raw_row(final_disposition="THREAT"))
    assert (info.value.row_id, info.value.field) == ("R1", "final_disposition")
    assert "THREAT" in str(info.value)


def test_config_lists_name_either_spelling():
    assert wanted(Disposition.MALICIOUS, "MALICIOUS-BEC", ["MALICIOUS"])
    assert wanted(Disposition.MALICIOUS, "MALICIOUS-BEC", ["MALICIOUS-BEC"])
    assert not wanted(Disposition.MALICIOUS, "MALICIOUS", ["MALICIOUS-BEC"])
    assert wanted(Disposition.NONE, "ENCRYPTED", ["ENCRYPTED"])
    assert not wanted(Disposition.NONE, "ENCRYPTED", ["MALICIOUS", "SPAM"])


def test_recipients_come_from_client_recipients_first():
    assert verdict_row(raw_row()).recipients == ("alice@corp.example",)
    assert verdict_row(raw_row(client_recipients=[])).recipients == ("list@corp.example",)
    mixed = verdict_row(raw_row(client_recipients=["Bob@Corp.Example", "bob@corp.example",
                                                   "no way", 7]))
    assert mixed.recipients == ("Bob@corp.example",)
    assert len(mixed.refused_recipients) == 2
    with pytest.raises(MalformedRow) as info:
        verdict_row(raw_row(client_recipients=["no way"]))
    assert info.value.field == "client_recipients" and "no way" in str(info.value)
    with pytest.raises(MalformedRow) as info:
        verdict_row(raw_row(client_recipients=None, to=None))
    assert info.value.field == "to"


def test_rows_are_checked_field_by_field():
    assert verdict_row(raw_row(message_id="m@evil.example")).message_id == "<m@evil.example>"
    legacy = verdict_row(raw_row(scanned_at=None, ts="2024-05-01T12:00:00Z"))
    assert legacy.verdict_time == datetime(2024, 5, 1, 12, tzinfo=UTC)
    for field, value in (("message_id", "<a b@c>"), ("message_id", None), ("id", ""),
                         ("scanned_at", "yesterday")):
        with pytest.raises(MalformedRow) as info:
            verdict_row(raw_row(**{field: value}))
        assert info.value.field == field
    with pytest.raises(MalformedRow) as info:
        verdict_row(["not", "a", "row"])
    assert info.value.row_id is None


@pytest.mark.parametrize("mode,statuses,delivered", [
    ("DIRECT", ["delivered"], True), ("DIRECT", ["moved"], True), ("DIRECT", [], True),
    ("DIRECT", None, True), ("DIRECT", ["quarantined"], False), ("API", ["rejected"], False),
    ("BCC", ["quarantined"], True), ("JOURNAL", [], True), (None, ["delivered"], True),
    ("REVIEW_SUBMISSION", ["delivered"], False), ("DMARC_AGGREGATE_REPORT", [], False),
])
def test_delivered(mode, statuses, delivered):
    assert is_delivered(mode, statuses) is delivered


def test_in_transit_rows():
    assert verdict_row(raw_row(delivery_status=["deferred"])).in_transit
    assert verdict_row(raw_row(delivery_status=["queued", "deferred"])).in_transit
    assert not verdict_row(raw_row(delivery_status=["quarantined"])).in_transit
    assert not verdict_row(raw_row(delivery_status=["deferred", "delivered"])).in_transit
    assert not verdict_row(raw_row(delivery_status=[])).in_transit


def test_submission_rows():
    raw = {"submission_id": "s-9", "requested_ts": "2024-05-01T12:00:00Z",
           "requested_by": "alice@corp.example", "original_postfix_id": "P1",
           "outcome_disposition": None}
    pending = submission_row(raw)
    assert (pending.outcome, pending.postfix_id, pending.reporter) == (
        None, "P1", "alice@corp.example")
    done = submission_row(dict(raw, outcome_disposition="MALICIOUS-BEC"))
    assert (done.outcome, done.source_outcome) == (Disposition.MALICIOUS, "MALICIOUS-BEC")
    for field, value in (("submission_id", None), ("requested_ts", "soon"),
                         ("outcome_disposition", "EVIL")):
        with pytest.raises(MalformedRow) as info:
            submission_row(dict(raw, **{field: value}))
        assert info.value.field in (field, "requested_at")


# -- decisions and encoding -------------------------------------------------------------------
def test_decide():
    verdict = verdict_row(raw_row())
    assert decide(verdict, None, ["MALICIOUS"]).trigger == "verdict"
    assert decide(verdict, "!", ["MALICIOUS"]).trigger == "verdict"  # malformed before
    assert decide(verdict, "M", ["MALICIOUS"]) is None
    changed = decide(verdict, "N", ["MALICIOUS"])
    assert changed.trigger == "verdict_changed"
    assert changed.payload["previous_disposition"] == "NONE"
    assert changed.trace_tag == "cloudflare:R1:MALICIOUS"
    seen = datetime(2024, 5, 2, 8, tzinfo=UTC)
    assert decide(verdict, "S", ["MALICIOUS"], changed_at=seen).payload["verdict_time"] == \
        "2024-05-02T08:00:00.000Z"
    assert decide(verdict, None, ["MALICIOUS"], changed_at=seen).payload["verdict_time"] == \
        "2024-05-01T12:00:00.000Z"  # a new verdict keeps its scan time
    assert decide(verdict, None, ["SPAM"]) is None
    assert decide(verdict, "N", ["SPAM"]) is None
    held = verdict_row(raw_row(delivery_status=["quarantined"]))
    assert decide(held, None, ["MALICIOUS"]) is None


def test_seen_set_buckets_roundtrip_and_prune():
    seen = SeenSet()
    t0 = datetime(2024, 5, 1, 10, 30, tzinfo=UTC)
    seen.remember("a", "N", t0)
    seen.remember("b", "M", t0 + timedelta(minutes=10))
    assert seen.dirty == {"2024050110"}
    seen.dirty.clear()
    seen.remember("a", "M", t0 + timedelta(hours=12))  # re-scanned: moves to its new hour
    assert seen.dirty == {"2024050110", "2024050122"}
    assert seen.code("a") == "M" and len(seen) == 2
    copy = SeenSet()
    for name in seen.buckets():
        copy.load(name, seen.dump(name))
    assert copy.code("a") == "M" and copy.code("b") == "M" and copy.code("c") is None
    assert json.loads(seen.dump("2024050110")) == {"v": 1, "rows": {"b": "M"}}
    assert seen.prune(datetime(2024, 5, 1, 11, tzinfo=UTC)) == ["2024050110"]
    assert seen.code("b") is None and seen.code("a") == "M"
    seen.remember("a", "S", t0)
    assert seen.dump("2024050122") is None  # emptied: to be deleted
    for name, text in (("2024050110", "not json"), ("2024050110", '{"v": 2}'),
                       ("latest", '{"v": 1, "rows": {}}')):
        with pytest.raises(ValueError):
            SeenSet().load(name, text)
    assert bucket_name(datetime(2024, 5, 1, 23, 59, tzinfo=timezone(timedelta(hours=2)))) \
        == "2024050121"


def test_journal_encoding():
    entries = {"R1": ["M", "2024050110"], "R2": ["!", "2024050111"]}
    assert read_journal(journal_value(entries), "k") == entries
    assert read_journal('{"v": 1, "rows": {"R3": ["Q", "2024050110"]}}', "k") == {}
    for text in ('{"v": 1}', '{"v": 1, "rows": {"R": ["M", "noon"]}}'):
        with pytest.raises(ValueError):
            read_journal(text, "k")


def test_handled_set_and_checkpoint_encoding():
    handled = HandledSet()
    t0 = datetime(2024, 5, 1, 10, tzinfo=UTC)
    handled.add("s-1", t0)
    handled.add("s-2", t0 + timedelta(hours=5))
    copy = HandledSet()
    copy.load(handled.dump(), "k")
    assert "s-1" in copy and "s-2" in copy and "s-3" not in copy
    copy.prune(t0 + timedelta(hours=1))
    assert "s-1" not in copy and "s-2" in copy and copy.dirty
    with pytest.raises(ValueError):
        copy.load('{"v": 1}', "k")
    moment = datetime(2024, 5, 1, 10, 11, 12, 345678, tzinfo=UTC)
    assert read_checkpoint(checkpoint_value(moment), "k") == moment.replace(microsecond=345000)
    for text in (None, "[]", '{"v": 1, "scanned_at": "noon"}'):
        with pytest.raises(ValueError):
            read_checkpoint(text, "k")


def test_backoff_doubles_to_a_cap_and_honours_at_least():
    backoff = Backoff(max_skip=16)
    assert [backoff.failed() for _ in range(7)] == [1, 2, 4, 8, 16, 16, 16]
    assert backoff.recovered() == 7 and backoff.failed() == 1
    assert backoff.skip() and not backoff.skip()
    assert backoff.failed(at_least=5) == 5


# -- polls driven directly --------------------------------------------------------------------
def recorder():
    events = []
    return events, lambda trigger, payload, tag: events.append((trigger, payload, tag))


def test_verdict_poll_with_small_pages(sandbox):
    for i in range(10):
        sandbox.add_verdict(message_id="<s%d@evil.example>" % i, to=["bob@corp.example"],
                            final_disposition="SPOOF" if i % 2 else "NONE",
                            scanned_at="-%dm" % (20 - i))
    events, dispatch = recorder()
    poll = VerdictPoll(client_for(sandbox), Store(), dispatch, per_page=3)
    assert poll.poll() == {"verdict": 7}
    assert hits(sandbox) == 4  # 12 rows in pages of 3
    assert poll.poll() == {}


def test_seen_set_stays_within_the_window(sandbox):
    store = Store()
    events, dispatch = recorder()
    clock = [utc_now()]
    poll = VerdictPoll(client_for(sandbox), store, dispatch, clock=lambda: clock[0],
                       lookback=timedelta(hours=24))
    poll.poll()
    assert len(events) == 2
    assert any(k.startswith("verdicts.seen.") for k in store.items)
    clock[0] += timedelta(hours=30)
    assert poll.poll() == {}
    assert sorted(store.items) == ["verdicts.checkpoint", "verdicts.dispatched"]
    assert json.loads(store.items["verdicts.dispatched"])["rows"] == {}
    assert len(poll.seen) == 0
    assert read_checkpoint(store.items["verdicts.checkpoint"], "k") <= clock[0]


def test_corrupt_state_is_reported_and_replaced(sandbox):
    store = Store()
    store.items["verdicts.checkpoint"] = "garbage"
    store.items["verdicts.seen.2024050110"] = '{"v": 99}'
    log = mock.Mock()
    events, dispatch = recorder()
    VerdictPoll(client_for(sandbox), store, dispatch, log=log).poll()
    warnings = [c[1][0] % c[1][1:] for c in log.warning.mock_calls]
    assert any("verdicts.checkpoint is not JSON" in w and "lookback window" in w
               for w in warnings)
    assert any("key verdicts.seen.2024050110" in w and "deleting it" in w for w in warnings)
    assert "verdicts.seen.2024050110" not in store.items
    assert len(events) == 2
    assert json.loads(store.items["verdicts.checkpoint"])["v"] == 1


def test_submission_poll_with_small_pages(sandbox):
    for i in range(5):
        sandbox.add_submission(submission_id="s-q%d" % i, message_id="<abc@evil.example>",
                               requested_ts="-%dm" % (6 - i))
        sandbox.confirm_submission("s-q%d" % i, "MALICIOUS")
    events, dispatch = recorder()
    store = Store()
    poll = SubmissionPoll(client_for(sandbox), store, dispatch, per_page=2)
    assert poll.poll() == {"phish_submission": 5}
    assert hits(sandbox, "cloudflare.submissions") == 3  # 6 reports in pages of 2
    assert sorted(json.loads(store.items["submissions.handled"])["ids"]) == [
        "s-q%d" % i for i in range(5)]
    assert poll.poll() == {}


def test_building_from_the_pack_config(sandbox):
    log = mock.Mock()
    config = sandbox.pack_config()
    config["verdicts"] = {"lookback_hours": -1}
    with pytest.raises(ConfigError) as info:
        verdict_poll(config, Store(), recorder()[1], log=log)
    assert info.value.key == "verdicts.lookback_hours"
    config = sandbox.pack_config()
    config["cloudflare"]["account_id"] = ""
    assert verdict_poll(config, Store(), recorder()[1], log=log) is None
    assert "cloudflare.account_id" in str(log.error.mock_calls)
    poll = verdict_poll(sandbox.pack_config(), Store(), recorder()[1], log=log)
    assert poll.dispositions == ("MALICIOUS", "SUSPICIOUS", "SPOOF")
    assert poll.repoll_words == ("MALICIOUS", "MALICIOUS-BEC", "SUSPICIOUS", "SPOOF")
    assert poll.lookback == timedelta(hours=24) and poll.per_page == 1000
    assert rows_mod.SOURCE == "cloudflare"
