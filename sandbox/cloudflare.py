"""Cloudflare Email Security API (`/client/v4/accounts/{account_id}/email-security/...`): the
verdict source the pack's sensors poll.

- `GET investigate`: one row per scanned message (tenant `Verdict`), filtered by `start`/`end`
  (ISO 8601, both inclusive, on `scanned_at`; defaults now-30d and now), `final_disposition`,
  `message_id`, `recipient`, `sender`, `subject`, `domain`, `alert_id`, `delivery_status`,
  `detections_only`, `submissions`, `query` (space-delimited terms, all must match,
  case-insensitive). Cursor paging (`cursor`, `per_page` <= 1000, default 20): rows come
  **oldest first** by (`scanned_at`, `id`) and a cursor is a keyset position, so rows that arrive
  while a client pages land after it and never shift a page; a rescan moves a row's
  `scanned_at` to the rescan time, so the row shows up again at the end (that is how a
  post-delivery sensor sees changed verdicts). Cloudflare does not document its order: a
  client must not rely on it beyond "follow `next` until it is null".
- `GET investigate/{id}`: one row, by its `id` or its `postfix_id` (both spellings of the path
  parameter exist in Cloudflare's docs).
- `GET submissions`: user/team reports, page paging (`page`, `per_page`), filters `start`/`end`
  (on `requested_at`), `type`, `status`, `query`, `submission_id`, `requested_disposition`,
  `original_disposition`, `outcome_disposition`, `customer_status`. Rows carry no Message-ID
  (Cloudflare's rows do not): `original_postfix_id` names the reported message, resolved with
  `GET investigate/{postfix_id}`; null when the sandbox has no verdict row for that message.

Auth: `Authorization: Bearer <API token>`; a missing or unknown token -> 401, a valid token for
another account -> 403, both with Cloudflare's envelope and code 10000 "Authentication error".
A bad parameter -> 400 with code 1001 (Cloudflare's code for it is undocumented).
"""
from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any, List, Optional, Tuple

from aiohttp import web

from sandbox.tenant import utc_now

DETECTIONS = ("MALICIOUS", "MALICIOUS-BEC", "SUSPICIOUS", "SPOOF", "SPAM", "BULK")
MAX_PER_PAGE = 1000
DEFAULT_PER_PAGE = 20
DEFAULT_LOOKBACK = dt.timedelta(days=30)


class BadRequest(ValueError):
    pass


def envelope(result: Any, result_info: Optional[dict] = None) -> dict:
    body = {"result": result, "success": True, "errors": [], "messages": []}
    if result_info is not None:
        body["result_info"] = result_info
    return body


def failure(status: int, code: int, message: str) -> web.Response:
    return web.json_response({"success": False, "errors": [{"code": code, "message": message}],
                              "messages": [], "result": None}, status=status)


def iso(value: Optional[dt.datetime]) -> Optional[str]:
    if value is None:
        return None
    value = value.astimezone(dt.timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (value.microsecond // 1000)


def parse_time(value: Optional[str], name: str, default: dt.datetime) -> dt.datetime:
    if value is None or value == "":
        return default
    text = value.strip()
    if text.endswith("Z") or text.endswith("z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest("%s must be an ISO 8601 date-time, got %r" % (name, value))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed


def per_page_of(query) -> int:
    raw = query.get("per_page")
    if raw is None or raw == "":
        return DEFAULT_PER_PAGE
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest("per_page must be an integer")
    if not 1 <= value <= MAX_PER_PAGE:
        raise BadRequest("per_page must be between 1 and %d" % MAX_PER_PAGE)
    return value


def flag(query, name: str) -> Optional[bool]:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() not in ("true", "false"):
        raise BadRequest("%s must be true or false" % name)
    return raw.lower() == "true"


def _bare_id(message_id: str) -> str:
    text = message_id.strip()
    return text[1:-1] if text.startswith("<") and text.endswith(">") else text


# -- cursors: an opaque keyset position (direction, scanned_at, id) ---------------------------
def encode_cursor(direction: str, key: Tuple[dt.datetime, str]) -> str:
    raw = json.dumps({"d": direction, "t": key[0].isoformat(), "i": key[1]})
    return base64.urlsafe_b64encode(raw.encode("utf-8")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> Tuple[str, Tuple[dt.datetime, str]]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8"))
        direction = data["d"]
        if direction not in ("after", "before"):
            raise ValueError(direction)
        return direction, (dt.datetime.fromisoformat(data["t"]), str(data["i"]))
    except (ValueError, KeyError, TypeError):
        raise BadRequest("invalid cursor")


def keyset_page(rows: List[Any], key, cursor: Optional[str], per_page: int
                ) -> Tuple[List[Any], Optional[str], Optional[str]]:
    """(page, next, previous) of `rows` sorted ascending by `key`."""
    if cursor:
        direction, position = decode_cursor(cursor)
    else:
        direction, position = "after", None
    if direction == "after":
        tail = rows if position is None else [r for r in rows if key(r) > position]
        page = tail[:per_page]
        more_after = len(tail) > per_page
        more_before = bool(page) and any(key(r) < key(page[0]) for r in rows)
    else:
        head = [r for r in rows if key(r) < position]
        page = head[-per_page:]
        more_before = len(head) > per_page
        more_after = bool(page) and any(key(r) > key(page[-1]) for r in rows)
    next_cursor = encode_cursor("after", key(page[-1])) if page and more_after else None
    previous = encode_cursor("before", key(page[0])) if page and more_before else None
    return page, next_cursor, previous


# -- investigate ------------------------------------------------------------------------------
def verdict_row(tenant, verdict) -> dict:
    reported = any(s.message_id == verdict.message_id for s in tenant.submissions.values())
    return {
        "id": verdict.id,
        "postfix_id": verdict.postfix_id,
        "alert_id": verdict.id,
        "message_id": verdict.message_id,
        "scanned_at": iso(verdict.scanned_at),
        "ts": iso(verdict.scanned_at),
        "sent_at": iso(verdict.sent_at),
        "sent_date": verdict.sent_at.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
        "from": verdict.sender,
        "from_name": "",
        "envelope_from": verdict.sender,
        "to": list(verdict.recipients),
        "to_name": [""] * len(verdict.recipients),
        "envelope_to": list(verdict.recipients),
        "client_recipients": list(verdict.recipients),
        "subject": verdict.subject,
        "final_disposition": verdict.final_disposition,
        "delivery_mode": verdict.delivery_mode,
        "delivery_status": list(verdict.delivery_status),
        "post_delivery_operations": ["SUBMISSION"] if reported else [],
        "is_phish_submission": bool(verdict.is_phish_submission),
        "is_quarantined": "quarantined" in verdict.delivery_status,
        "detection_reasons": [],
        "threat_categories": [],
        "action_log": [],
        "properties": {},
    }


def _verdict_matches(verdict, query, start: dt.datetime, end: dt.datetime,
                     now: dt.datetime) -> bool:
    if not (start <= verdict.scanned_at <= end) or verdict.scanned_at > now:
        return False
    disposition = query.get("final_disposition")
    if disposition and verdict.final_disposition.upper() != disposition.upper():
        return False
    message_id = query.get("message_id")
    if message_id and _bare_id(verdict.message_id) != _bare_id(message_id):
        return False
    recipient = query.get("recipient")
    if recipient and recipient.lower() not in {r.lower() for r in verdict.recipients}:
        return False
    sender = query.get("sender")
    if sender and sender.lower() not in verdict.sender.lower():
        return False
    subject = query.get("subject")
    if subject and subject.lower() not in verdict.subject.lower():
        return False
    domain = query.get("domain")
    if domain and verdict.sender.rsplit("@", 1)[-1].lower() != domain.lower():
        return False
    alert_id = query.get("alert_id")
    if alert_id and verdict.id != alert_id:
        return False
    status = query.get("delivery_status")
    if status and status.lower() not in [s.lower() for s in verdict.delivery_status]:
        return False
    if flag(query, "detections_only") and verdict.final_disposition.upper() not in DETECTIONS:
        return False
    submissions = flag(query, "submissions")
    if submissions is not None and bool(verdict.is_phish_submission) != submissions:
        return False
    terms = (query.get("query") or "").lower().split()
    if terms:
        text = " ".join([verdict.sender, " ".join(verdict.recipients), verdict.subject,
                         verdict.message_id, verdict.final_disposition, verdict.id]).lower()
        if not all(term in text for term in terms):
            return False
    return True


def investigate(sandbox, query) -> dict:
    now = utc_now()
    start = parse_time(query.get("start"), "start", now - DEFAULT_LOOKBACK)
    end = parse_time(query.get("end"), "end", now)
    per_page = per_page_of(query)
    flag(query, "detections_only")
    flag(query, "submissions")
    tenant = sandbox.tenant
    with tenant.lock:
        rows = [v for v in tenant.verdicts.values()
                if _verdict_matches(v, query, start, end, now)]
        rows.sort(key=lambda v: (v.scanned_at, v.id))
        page, next_cursor, previous = keyset_page(rows, lambda v: (v.scanned_at, v.id),
                                                  query.get("cursor"), per_page)
        result = [verdict_row(tenant, v) for v in page]
    info = {"count": len(result), "per_page": per_page, "total_count": 0, "page": 0,
            "next": next_cursor, "previous": previous}
    return envelope(result, info)


def investigate_one(sandbox, investigate_id: str) -> Optional[dict]:
    tenant = sandbox.tenant
    now = utc_now()
    with tenant.lock:
        for verdict in tenant.verdicts.values():
            if investigate_id in (verdict.id, verdict.postfix_id) and verdict.scanned_at <= now:
                return envelope(verdict_row(tenant, verdict))
    return None


# -- submissions ------------------------------------------------------------------------------
def submission_row(tenant, sub) -> dict:
    verdicts = sorted((v for v in tenant.verdicts.values() if v.message_id == sub.message_id),
                      key=lambda v: (v.sent_at, v.id))
    reviewed = sub.status == "reviewed"
    return {
        "submission_id": sub.submission_id,
        "requested_at": iso(sub.requested_ts),
        "requested_ts": iso(sub.requested_ts),
        "requested_by": sub.requested_by,
        "original_postfix_id": verdicts[0].postfix_id if verdicts else None,
        "original_disposition": sub.original_disposition,
        "requested_disposition": sub.requested_disposition,
        "outcome_disposition": sub.outcome_disposition,
        "outcome": sub.outcome,
        "status": sub.status,
        "customer_status": "reviewed" if reviewed else "unreviewed",
        "subject": sub.subject,
        "type": sub.type,
        "escalated_as": None,
        "escalated_at": None,
        "escalated_by": None,
        "escalated_submission_id": None,
        "original_edf_hash": None,
    }


def _submission_matches(sub, row: dict, query, start: dt.datetime, end: dt.datetime) -> bool:
    if not start <= sub.requested_ts <= end:
        return False
    for name in ("type", "status", "customer_status", "requested_disposition",
                 "original_disposition", "outcome_disposition", "submission_id"):
        wanted = query.get(name)
        if wanted and str(row.get(name) or "").lower() != wanted.lower():
            return False
    terms = (query.get("query") or "").lower().split()
    if terms:
        fields = ("submission_id", "requested_by", "subject", "outcome")
        text = " ".join(str(row.get(k) or "") for k in fields).lower()
        if not all(term in text for term in terms):
            return False
    return True


def submissions(sandbox, query) -> dict:
    now = utc_now()
    start = parse_time(query.get("start"), "start", now - DEFAULT_LOOKBACK)
    end = parse_time(query.get("end"), "end", now)
    per_page = per_page_of(query)
    try:
        page = int(query.get("page") or "1")
    except ValueError:
        raise BadRequest("page must be an integer")
    if page < 1:
        raise BadRequest("page must be at least 1")
    tenant = sandbox.tenant
    with tenant.lock:
        subs = sorted(tenant.submissions.values(),
                      key=lambda s: (s.requested_ts, s.submission_id))
        rows = [row for row in (submission_row(tenant, s) for s in subs)
                if _submission_matches(tenant.submissions[row["submission_id"]], row, query,
                                       start, end)]
    chunk = rows[(page - 1) * per_page:page * per_page]
    info = {"count": len(chunk), "page": page, "per_page": per_page, "total_count": len(rows)}
    return envelope(chunk, info)


# -- HTTP -------------------------------------------------------------------------------------
def _authenticate(sandbox, request: web.Request) -> Optional[web.Response]:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    tenant = sandbox.tenant
    with tenant.lock:
        known = scheme.lower() == "bearer" and token.strip() in tenant.cloudflare_tokens
        account = tenant.cloudflare_account_id
    if not known:
        return failure(401, 10000, "Authentication error")
    if request.match_info["account_id"] != account:
        return failure(403, 10000, "Authentication error")
    return None


def routes(sandbox) -> List[web.RouteDef]:
    def guarded(fn):
        async def handler(request: web.Request) -> web.Response:
            denied = _authenticate(sandbox, request)
            if denied is not None:
                return denied
            try:
                return await fn(request)
            except BadRequest as exc:
                return failure(400, 1001, str(exc))
        return handler

    async def list_investigate(request: web.Request) -> web.Response:
        return web.json_response(investigate(sandbox, request.query))

    async def get_investigate(request: web.Request) -> web.Response:
        body = investigate_one(sandbox, request.match_info["investigate_id"])
        if body is None:
            return failure(404, 1002, "Not Found")
        return web.json_response(body)

    async def list_submissions(request: web.Request) -> web.Response:
        return web.json_response(submissions(sandbox, request.query))

    prefix = "/client/v4/accounts/{account_id}/email-security/"
    return [
        web.get(prefix + "investigate", guarded(list_investigate),
                name="cloudflare.investigate"),
        web.get(prefix + "investigate/{investigate_id}", guarded(get_investigate),
                name="cloudflare.investigate.get"),
        web.get(prefix + "submissions", guarded(list_submissions),
                name="cloudflare.submissions"),
    ]
