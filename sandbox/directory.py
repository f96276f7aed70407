"""Admin SDK Directory API: `GET /admin/directory/v1/groups/{groupKey}/members`, for expanding a
Google group (distribution list) into its members.

Works with a plain authorised session and with googleapiclient's bundled static discovery
document (`build("admin", "directory_v1", static_discovery=True,
client_options={"api_endpoint": directory_url})`). Paging: `maxResults` (default and maximum
200), opaque `pageToken`. `includeDerivedMembership=true` adds the members of nested groups
(each once; the nested group's own entry stays, with type GROUP).

Errors: 401 as Gmail; a token without any group-member scope -> 403 insufficientPermissions; a
token without a subject (no admin impersonated) -> 403 forbidden "Not Authorized to access this
resource/api"; an address that is not a Google group (a user, unknown, another provider's
list) -> 404 notFound "Resource Not Found: groupKey". The sandbox does not model admin roles:
any user of the Google domain may be impersonated for this call.
"""
from __future__ import annotations

import hashlib
from typing import Dict, List, Set

from aiohttp import web

from sandbox.gmail import ApiRequest, ApiResponse, Router, error
from sandbox.google_oauth import (WWW_AUTHENTICATE, insufficient_scopes_body, state_of,
                                  unauthenticated_body)

MEMBER_SCOPES = frozenset({
    "https://www.googleapis.com/auth/admin.directory.group",
    "https://www.googleapis.com/auth/admin.directory.group.readonly",
    "https://www.googleapis.com/auth/admin.directory.group.member",
    "https://www.googleapis.com/auth/admin.directory.group.member.readonly",
})
MAX_RESULTS = 200


def _etag(text: str) -> str:
    return '"%s"' % hashlib.sha1(text.encode("utf-8")).hexdigest()[:27]


def _member_id(address: str) -> str:
    # Directory ids are 21-digit numbers; derive a stable one from the address
    return str(int(hashlib.sha1(address.lower().encode("utf-8")).hexdigest(), 16))[:21]


def _entries(tenant, group, derived: bool) -> List[Dict[str, str]]:
    out: List[Dict[str, str]] = []
    seen: Set[str] = set()
    visited: Set[str] = {group.address.lower()}
    pending = [group]
    while pending:
        current = pending.pop(0)
        for address in current.members:
            key = address.lower()
            nested = tenant.group(address)
            if key not in seen:
                seen.add(key)
                entry = {"kind": "admin#directory#member", "etag": _etag(address),
                         "id": _member_id(address), "email": address, "role": "MEMBER",
                         "type": "GROUP" if nested is not None else "USER"}
                if nested is None:
                    entry["status"] = "ACTIVE"
                out.append(entry)
            if derived and nested is not None and key not in visited:
                visited.add(key)
                pending.append(nested)
        if not derived:
            break
    return out


def members_list(sandbox, request: ApiRequest) -> ApiResponse:
    state = state_of(sandbox)
    grant, why = state.authenticate(request.headers.get("Authorization"))
    if grant is None:
        return ApiResponse(401, unauthenticated_body(why), WWW_AUTHENTICATE)
    if not grant.scopes & MEMBER_SCOPES:
        return ApiResponse(403, insufficient_scopes_body())
    if not grant.subject:
        return error(403, "Not Authorized to access this resource/api", "forbidden")
    try:
        max_results = int(request.query.get("maxResults", str(MAX_RESULTS)))
        offset = int(request.query.get("pageToken") or "0")
    except ValueError:
        return error(400, "Invalid Input", "invalid")
    if max_results < 1 or offset < 0:
        return error(400, "Invalid Input", "invalid")
    max_results = min(max_results, MAX_RESULTS)
    tenant = sandbox.tenant
    with tenant.lock:
        group = tenant.group(request.params["groupKey"])
        if group is None or group.provider != "google":
            return error(404, "Resource Not Found: groupKey", "notFound")
        entries = _entries(tenant, group, request.flag("includeDerivedMembership"))
    page = entries[offset:offset + max_results]
    body: dict = {"kind": "admin#directory#members",
                  "etag": _etag("%s:%d:%d" % (group.address, offset, len(entries)))}
    if page:
        body["members"] = page
    if offset + max_results < len(entries):
        body["nextPageToken"] = str(offset + max_results)
    return ApiResponse(200, body)


ROUTER = Router()
ROUTER.add("GET", "/admin/directory/v1/groups/{groupKey}/members", "directory.members.list",
           members_list)


def routes(sandbox) -> List[web.RouteDef]:
    return ROUTER.aiohttp_routes(sandbox)
