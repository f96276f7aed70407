"""Control API (`/_sandbox`, plain HTTP listener) and the same operations for in-process use.

Tests and the demo use it to inspect state (mailboxes, copies, audit, counters) and to change
the world under the pack (faults, revoked consent, rescans, confirmed reports). Every function
here takes the Sandbox; `Sandbox` exposes them as methods too.
"""
from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any, Dict, List, Optional

import yaml
from aiohttp import web

from sandbox.scenario import add_verdict as _add_verdict
from sandbox.scenario import generate_campaign as _generate_campaign
from sandbox.scenario import parse_time
from sandbox.tenant import Submission, utc_now


def iso(value: Optional[dt.datetime]) -> Optional[str]:
    if value is None:
        return None
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- operations (in-process API) ---------------------------------------------------------------
def mailbox_view(sandbox, address: str) -> Optional[Dict[str, Any]]:
    tenant = sandbox.tenant
    with tenant.lock:
        box = tenant.mailbox(address)
        if box is None:
            group = tenant.group(address)
            if group is None:
                return None
            return {"address": group.address, "kind": "group", "provider": group.provider,
                    "members": list(group.members), "copies": []}
        return {"address": box.address, "kind": box.kind, "provider": box.provider,
                "copies": [{"id": c.id, "message_id": c.message_id, "folder": c.folder,
                            "is_read": c.is_read, "subject": c.subject}
                           for c in box.copies.values()]}


def copies_view(sandbox, message_id: str) -> List[Dict[str, Any]]:
    with sandbox.tenant.lock:
        return [{"mailbox": box.address, "provider": box.provider, "id": copy.id,
                 "folder": copy.folder, "is_read": copy.is_read}
                for box, copy in sandbox.tenant.copies_of(message_id)]


def audit_view(sandbox, since: int = 0) -> List[Dict[str, Any]]:
    return [{"seq": e.seq, "at": iso(e.at), "actor": e.actor, "provider": e.provider,
             "mailbox": e.mailbox, "message_id": e.message_id, "copy_id": e.copy_id,
             "action": e.action, "before": e.before, "after": e.after}
            for e in sandbox.tenant.audit_since(since)]


def set_consent(sandbox, client_id: str, consent_granted: Optional[bool] = None,
                permissions: Optional[List[str]] = None) -> Dict[str, Any]:
    """Revoke/grant admin consent or change an app's application permissions. Tokens issued
    before keep their roles until they expire (as Entra's do)."""
    with sandbox.tenant.lock:
        app = sandbox.tenant.microsoft_apps.get(client_id)
        if app is None:
            raise KeyError("no Microsoft app %r" % client_id)
        if consent_granted is not None:
            app.consent_granted = bool(consent_granted)
        if permissions is not None:
            app.permissions = set(permissions)
        return {"client_id": app.client_id, "consent_granted": app.consent_granted,
                "permissions": sorted(app.permissions)}


def set_google_scopes(sandbox, client_email: str, scopes: List[str]) -> Dict[str, Any]:
    with sandbox.tenant.lock:
        account = sandbox.tenant.google_accounts.get(client_email.lower())
        if account is None:
            raise KeyError("no Google service account %r" % client_email)
        account.scopes = set(scopes)
        return {"client_email": account.client_email, "scopes": sorted(account.scopes)}


def add_mailbox(sandbox, address: str, kind: str = "user", provider: Optional[str] = None,
                copies: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
    """Add a mailbox (or reuse one) and deliver copies: [{message_id, folder, read, ...}]."""
    tenant = sandbox.tenant
    with tenant.lock:
        box = tenant.mailbox(address) or tenant.add_mailbox(address, provider=provider,
                                                            kind=kind)
        for spec in copies or []:
            tenant.deliver(box, spec["message_id"], folder=spec.get("folder", "inbox"),
                           is_read=bool(spec.get("read", spec.get("is_read", False))),
                           subject=spec.get("subject", ""), sender=spec.get("from", ""))
    return mailbox_view(sandbox, address)


def verdict_view(verdict) -> Dict[str, Any]:
    return {"id": verdict.id, "message_id": verdict.message_id, "from": verdict.sender,
            "to": list(verdict.recipients), "subject": verdict.subject,
            "final_disposition": verdict.final_disposition,
            "scanned_at": iso(verdict.scanned_at), "sent_at": iso(verdict.sent_at),
            "postfix_id": verdict.postfix_id}


def add_verdict(sandbox, spec: Dict[str, Any]) -> Dict[str, Any]:
    now = utc_now()
    message_id = spec.get("message_id")
    if not message_id:
        raise ValueError("message_id is required")
    recipients = spec.get("to") or spec.get("recipients")
    if recipients is None:
        recipients = sorted({box.address for box, _ in sandbox.tenant.copies_of(message_id)})
    verdict = _add_verdict(
        sandbox.tenant, message_id, spec.get("from", ""), recipients, spec.get("subject", ""),
        spec.get("final_disposition") or spec.get("disposition") or "MALICIOUS",
        parse_time(spec.get("scanned_at"), now, "scanned_at"),
        parse_time(spec["sent_at"], now, "sent_at") if spec.get("sent_at") else None,
        is_phish_submission=bool(spec.get("is_phish_submission", False)),
        verdict_id=spec.get("id"))
    return verdict_view(verdict)


def rescan(sandbox, verdict_id: str, disposition: str) -> Dict[str, Any]:
    return verdict_view(sandbox.tenant.rescan(verdict_id, disposition))


def submission_view(sub) -> Dict[str, Any]:
    return {"submission_id": sub.submission_id, "requested_ts": iso(sub.requested_ts),
            "requested_by": sub.requested_by, "message_id": sub.message_id,
            "subject": sub.subject, "original_disposition": sub.original_disposition,
            "requested_disposition": sub.requested_disposition,
            "outcome_disposition": sub.outcome_disposition, "outcome": sub.outcome,
            "status": sub.status, "type": sub.type}


def add_submission(sandbox, spec: Dict[str, Any]) -> Dict[str, Any]:
    if not spec.get("message_id"):
        raise ValueError("message_id is required")
    sub = sandbox.tenant.add_submission(Submission(
        submission_id=str(spec.get("submission_id") or uuid.uuid4()),
        requested_ts=parse_time(spec.get("requested_ts"), utc_now(), "requested_ts"),
        requested_by=spec.get("requested_by", ""), message_id=spec["message_id"],
        subject=spec.get("subject", ""),
        original_disposition=spec.get("original_disposition", "NONE"),
        requested_disposition=spec.get("requested_disposition", "MALICIOUS"),
        type=spec.get("type", "Team")))
    return submission_view(sub)


def confirm_submission(sandbox, submission_id: str, disposition: str) -> Dict[str, Any]:
    return submission_view(sandbox.tenant.confirm_submission(submission_id, disposition))


def campaign_view(truth) -> Dict[str, Any]:
    return {"message_id": truth.message_id, "recipients": list(truth.recipients),
            "groups": {k: list(v) for k, v in truth.groups.items()},
            "mailboxes": {a: {"provider": t.provider, "kind": t.kind, "present": t.present,
                              "folder": t.folder, "was_read": t.was_read,
                              "via_group": t.via_group}
                          for a, t in truth.mailboxes.items()}}


def generate_campaign(sandbox, **spec: Any):
    if "scanned_at" in spec:
        spec["scanned_at"] = parse_time(spec["scanned_at"], utc_now(), "scanned_at")
    with sandbox.tenant.lock:
        return _generate_campaign(sandbox.tenant, **spec)


# -- HTTP ----------------------------------------------------------------------------------------
def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda v: json.dumps(v, default=str))


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status=status)


async def _body(request: web.Request) -> Dict[str, Any]:
    text = await request.text()
    if not text.strip():
        return {}
    data = yaml.safe_load(text)  # YAML is a superset of JSON: one parser for both
    if not isinstance(data, dict):
        raise ValueError("expected a JSON/YAML object")
    return data


def routes(sandbox) -> List[web.RouteDef]:
    def guarded(fn):
        async def handler(request: web.Request) -> web.Response:
            try:
                return await fn(request)
            except KeyError as exc:
                return _error(404, str(exc.args[0]) if exc.args else "not found")
            except (ValueError, TypeError) as exc:
                return _error(400, str(exc))
        return handler

    async def health(request):
        return _json({"ok": True})

    async def scenario(request):
        tenant = sandbox.load_scenario(await _body(request))
        return _json({"tenant_id": tenant.tenant_id, "mailboxes": len(tenant.mailboxes),
                      "urls": sandbox.urls})

    async def get_mailbox(request):
        view = mailbox_view(sandbox, request.match_info["address"])
        return _json(view) if view else _error(404, "no mailbox or group %r"
                                               % request.match_info["address"])

    async def post_mailbox(request):
        body = await _body(request)
        if not body.get("address"):
            raise ValueError("address is required")
        return _json(add_mailbox(sandbox, body["address"], kind=body.get("kind", "user"),
                                 provider=body.get("provider"), copies=body.get("copies")),
                     status=201)

    async def copies(request):
        message_id = request.query.get("message_id")
        if not message_id:
            raise ValueError("message_id is required")
        return _json({"message_id": message_id, "copies": copies_view(sandbox, message_id)})

    async def audit(request):
        return _json({"entries": audit_view(sandbox, int(request.query.get("since", 0)))})

    async def counters(request):
        data = sandbox.counters.snapshot()
        faults = sandbox.faults.to_dict()
        data["faults"], data["delayed"] = faults["injected"], faults["delayed"]
        data["graph_throttled"] = sandbox.graph_throttle.throttled
        return _json(data)

    async def counters_reset(request):
        sandbox.counters.reset()
        return _json({"ok": True})

    async def get_faults(request):
        return _json(sandbox.faults.to_dict())

    async def post_faults(request):
        body = await _body(request)
        if body.pop("clear", False):
            sandbox.faults.clear()
        sandbox.faults.set(body)
        return _json(sandbox.faults.to_dict())

    async def post_verdict(request):
        return _json(add_verdict(sandbox, await _body(request)), status=201)

    async def post_rescan(request):
        body = await _body(request)
        if not body.get("disposition"):
            raise ValueError("disposition is required")
        return _json(rescan(sandbox, request.match_info["verdict_id"], body["disposition"]))

    async def post_submission(request):
        return _json(add_submission(sandbox, await _body(request)), status=201)

    async def post_confirm(request):
        body = await _body(request)
        if not body.get("disposition"):
            raise ValueError("disposition is required")
        return _json(confirm_submission(sandbox, request.match_info["submission_id"],
                                        body["disposition"]))

    async def post_app(request):
        body = await _body(request)
        return _json(set_consent(sandbox, request.match_info["client_id"],
                                 body.get("consent_granted"), body.get("permissions")))

    async def post_account(request):
        body = await _body(request)
        if not isinstance(body.get("scopes"), list):
            raise ValueError("scopes must be a list")
        return _json(set_google_scopes(sandbox, request.match_info["email"], body["scopes"]))

    async def post_revoke(request):
        body = await _body(request)
        return _json(sandbox.revoke_tokens(body.get("service")))

    async def post_campaign(request):
        body = await _body(request)
        if not body.get("message_id"):
            raise ValueError("message_id is required")
        return _json(campaign_view(generate_campaign(sandbox, **body)), status=201)

    async def get_campaign(request):
        truth = sandbox.tenant.campaigns.get(request.query.get("message_id", ""))
        return _json(campaign_view(truth)) if truth else _error(404, "no such campaign")

    table = [
        ("GET", "/health", health, "health"),
        ("POST", "/scenario", scenario, "scenario"),
        ("GET", "/mailboxes/{address}", get_mailbox, "mailbox"),
        ("POST", "/mailboxes", post_mailbox, "mailbox.add"),
        ("GET", "/copies", copies, "copies"),
        ("GET", "/audit", audit, "audit"),
        ("GET", "/counters", counters, "counters"),
        ("POST", "/counters/reset", counters_reset, "counters.reset"),
        ("GET", "/faults", get_faults, "faults"),
        ("POST", "/faults", post_faults, "faults.set"),
        ("POST", "/verdicts", post_verdict, "verdicts.add"),
        ("POST", "/verdicts/{verdict_id}/rescan", post_rescan, "verdicts.rescan"),
        ("POST", "/submissions", post_submission, "submissions.add"),
        ("POST", "/submissions/{submission_id}/confirm", post_confirm, "submissions.confirm"),
        ("POST", "/microsoft/apps/{client_id}", post_app, "microsoft.app"),
        ("POST", "/google/accounts/{email}", post_account, "google.account"),
        ("POST", "/tokens/revoke", post_revoke, "tokens.revoke"),
        ("POST", "/campaigns", post_campaign, "campaigns.add"),
        ("GET", "/campaigns", get_campaign, "campaigns.get"),
    ]
    return [web.route(method, "/_sandbox" + path, guarded(fn), name="control." + name)
            for method, path, fn, name in table]
