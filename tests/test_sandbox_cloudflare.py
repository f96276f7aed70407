"""The sandbox's Cloudflare Email Security API, driven with requests as the pack's sensors do:
investigate (cursor paging, filters, rescans), submissions (confirmations), auth and faults."""
import datetime as dt

import pytest

pytest_plugins = ["sandbox.pytest_plugin"]

ROW_FIELDS = {"id", "postfix_id", "message_id", "scanned_at", "ts", "sent_at", "from", "to",
              "subject", "final_disposition", "delivery_mode", "delivery_status",
              "post_delivery_operations", "is_phish_submission"}


class Client(object):
    def __init__(self, sandbox, token=None, account=None):
        creds = sandbox.credentials()["cloudflare"]
        self.base = "%s/accounts/%s/email-security/" % (
            sandbox.urls["cloudflare_url"], account or creds["account_id"])
        self.session = sandbox.requests_session()
        self.session.headers["Authorization"] = "Bearer %s" % (token or creds["api_token"])

    def get(self, path, **params):
        return self.session.get(self.base + path, params=params)

    def ok(self, path, **params):
        response = self.get(path, **params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["success"] is True and body["errors"] == [] and body["messages"] == []
        return body


def parse(text):
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def iso(moment):
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_investigate_rows_and_envelope(sandbox):
    body = Client(sandbox).ok("investigate")
    rows = body["result"]
    assert [r["message_id"] for r in rows] == ["<abc@evil.example>",
                                               "<o'brien+promo@evil.example>"]  # oldest first
    assert all(ROW_FIELDS <= set(r) for r in rows)
    first = rows[0]
    assert first["final_disposition"] == "MALICIOUS"
    assert first["from"] == "billing@evil.example"
    assert "carol@corp-mail.example" in first["to"]
    assert first["post_delivery_operations"] == ["SUBMISSION"]  # s-1 reported it
    assert first["scanned_at"].endswith("Z") and first["ts"] == first["scanned_at"]
    assert set(body["result_info"]) >= {"count", "per_page", "next", "previous"}
    assert body["result_info"]["next"] is None


def test_cursor_paging_is_stable_while_rows_arrive(sandbox):
    for i in range(45):
        sandbox.add_verdict(message_id="<bulk%02d@evil.example>" % i,
                            to=["carol@corp-mail.example"], final_disposition="SPAM",
                            scanned_at="-%dm" % (60 - i))
    client = Client(sandbox)
    first = client.ok("investigate", per_page=20)
    assert len(first["result"]) == 20 and first["result_info"]["previous"] is None
    second = client.ok("investigate", per_page=20, cursor=first["result_info"]["next"])
    # a new row arrives while the client pages: it lands after the cursor, nothing shifts
    sandbox.add_verdict(message_id="<late@evil.example>", to=["carol@corp-mail.example"],
                        final_disposition="MALICIOUS")
    back = client.ok("investigate", per_page=20, cursor=second["result_info"]["previous"])
    assert [r["id"] for r in back["result"]] == [r["id"] for r in first["result"]]
    rows = list(first["result"]) + list(second["result"])
    cursor = second["result_info"]["next"]
    while cursor:
        page = client.ok("investigate", per_page=20, cursor=cursor)
        rows.extend(page["result"])
        cursor = page["result_info"]["next"]
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == 48
    assert rows[-1]["message_id"] == "<late@evil.example>"
    stamps = [r["scanned_at"] for r in rows]
    assert stamps == sorted(stamps)


def test_filters(sandbox):
    client = Client(sandbox)

    def ids(**params):
        return [r["message_id"] for r in client.ok("investigate", **params)["result"]]

    assert ids(final_disposition="SUSPICIOUS") == ["<o'brien+promo@evil.example>"]
    assert ids(message_id="<abc@evil.example>") == ["<abc@evil.example>"]
    assert ids(message_id="abc@evil.example") == ["<abc@evil.example>"]
    assert ids(recipient="DAVE@corp-mail.example") == ["<abc@evil.example>"]
    assert ids(query="invoice billing") == ["<abc@evil.example>"]
    assert ids(sender="promo@evil.example") == ["<o'brien+promo@evil.example>"]
    now = dt.datetime.now(dt.timezone.utc)
    assert ids(start=iso(now - dt.timedelta(minutes=7))) == ["<o'brien+promo@evil.example>"]
    assert ids(end=iso(now - dt.timedelta(minutes=7))) == ["<abc@evil.example>"]
    assert ids(start=iso(now + dt.timedelta(minutes=1))) == []
    sandbox.add_verdict(message_id="<clean@corp.example>", final_disposition="NONE",
                        to=["alice@corp.example"])
    assert "<clean@corp.example>" not in ids(detections_only="true")
    assert "<clean@corp.example>" in ids()


def test_bad_parameters_are_400(sandbox):
    client = Client(sandbox)
    for params in ({"per_page": 1001}, {"per_page": 0}, {"start": "yesterday"},
                   {"cursor": "not-a-cursor"}, {"detections_only": "maybe"}):
        response = client.get("investigate", **params)
        assert response.status_code == 400, params
        body = response.json()
        assert body["success"] is False and body["result"] is None
        assert body["errors"][0]["code"] == 1001
    assert client.ok("investigate", per_page=1000)["result_info"]["per_page"] == 1000


def test_rescan_changes_disposition_and_resurfaces_the_row(sandbox):
    client = Client(sandbox)
    clean = sandbox.add_verdict(message_id="<later-bad@evil.example>", final_disposition="NONE",
                                to=["carol@corp-mail.example"], scanned_at="-30m")
    checkpoint = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    assert client.ok("investigate", start=iso(checkpoint))["result"] == []
    sandbox.rescan(clean["id"], "MALICIOUS")
    rows = client.ok("investigate", start=iso(checkpoint))["result"]
    assert [(r["id"], r["final_disposition"]) for r in rows] == [(clean["id"], "MALICIOUS")]
    assert parse(rows[0]["scanned_at"]) > checkpoint
    one = client.ok("investigate/" + clean["id"])["result"]
    assert one["final_disposition"] == "MALICIOUS"


def test_submissions_confirm_and_resolve_the_reported_message(sandbox):
    client = Client(sandbox)
    body = client.ok("submissions")
    assert body["result_info"] == {"count": 1, "page": 1, "per_page": 20, "total_count": 1}
    row = body["result"][0]
    assert row["submission_id"] == "s-1" and row["status"] == "pending"
    assert row["requested_by"] == "alice@corp.example"
    assert row["outcome_disposition"] is None
    reported = client.ok("investigate/" + row["original_postfix_id"])["result"]
    assert reported["message_id"] == "<abc@evil.example>"
    assert client.ok("submissions", status="reviewed")["result"] == []
    sandbox.confirm_submission("s-1", "MALICIOUS")
    confirmed = client.ok("submissions", status="reviewed")["result"]
    assert [(r["submission_id"], r["outcome_disposition"], r["customer_status"])
            for r in confirmed] == [("s-1", "MALICIOUS", "reviewed")]


def test_submissions_page_paging_and_type_filter(sandbox):
    for i in range(3):
        sandbox.add_submission(submission_id="u-%d" % i, message_id="<abc@evil.example>",
                               requested_by="carol@corp-mail.example", type="User",
                               requested_ts="-%dm" % (3 - i))
    client = Client(sandbox)
    pages = [client.ok("submissions", per_page=2, page=n) for n in (1, 2, 3)]
    assert [len(p["result"]) for p in pages] == [2, 2, 0]
    assert all(p["result_info"]["total_count"] == 4 for p in pages)
    users = client.ok("submissions", type="USER")["result"]
    assert [r["submission_id"] for r in users] == ["u-0", "u-1", "u-2"]


@pytest.mark.parametrize("token", ["", "wrong-token"])
def test_bad_token_is_401(sandbox, token):
    client = Client(sandbox)
    if token:
        client.session.headers["Authorization"] = "Bearer " + token
    else:
        del client.session.headers["Authorization"]
    response = client.get("investigate")
    assert response.status_code == 401
    assert response.json() == {"success": False, "messages": [], "result": None,
                               "errors": [{"code": 10000, "message": "Authentication error"}]}


def test_other_account_is_403(sandbox):
    response = Client(sandbox, account="0" * 32).get("submissions")
    assert response.status_code == 403
    assert response.json()["errors"][0]["code"] == 10000


def test_unknown_message_is_404(sandbox):
    response = Client(sandbox).get("investigate/NOPE")
    assert response.status_code == 404
    assert response.json()["success"] is False


def test_injected_faults_use_cloudflares_envelope(sandbox):
    sandbox.set_faults(cloudflare={"rate_429": 1.0, "retry_after": 5})
    response = Client(sandbox).get("investigate")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "5"
    assert response.json()["success"] is False
    assert sandbox.counters.snapshot()["statuses"]["cloudflare.investigate"] == {"429": 1}
