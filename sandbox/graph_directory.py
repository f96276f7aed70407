"""Microsoft Graph v1.0, directory part: find a group by mail, list its transitive members.

What the engine's expand_groups needs: `GET /groups?$filter=mail eq '...'` and
`GET /groups/{id}/transitiveMembers` (users and nested groups, paged with $skiptoken). Both
need GroupMember.Read.All (or Group.Read.All / Directory.Read.All).
"""
from __future__ import annotations

import uuid
from typing import Any, Dict, List

from sandbox import graph
from sandbox.graph import GraphCall, GraphError, GraphResult

GROUP_READ = ("GroupMember.Read.All", "Group.Read.All", "Group.ReadWrite.All",
              "Directory.Read.All", "Directory.ReadWrite.All")
DENIED = ("Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
GROUP_FIELDS = ("id", "mail", "displayName", "mailEnabled", "securityEnabled", "groupTypes",
                "mailNickname")
MEMBER_FIELDS = ("id", "mail", "userPrincipalName", "displayName")


def object_id(kind: str, address: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "%s:%s" % (kind, address.lower())))


def group_json(group) -> Dict[str, Any]:
    local = group.address.split("@", 1)[0]
    return {"id": object_id("group", group.address), "mail": group.address,
            "displayName": local.replace("-", " ").title(), "mailEnabled": True,
            "securityEnabled": False, "groupTypes": [], "mailNickname": local}


def _microsoft_groups(sandbox) -> List[Any]:
    return [g for g in sandbox.tenant.groups.values() if g.provider == "microsoft"]


def _context(call: GraphCall, entity: str) -> str:
    return "%s/$metadata#%s" % (call.base_url, entity)


def op_list_groups(sandbox, call: GraphCall) -> GraphResult:
    graph.check_options(call)
    fields = graph.parse_select(call, GROUP_FIELDS, "microsoft.graph.group")
    groups = _microsoft_groups(sandbox)
    if "$filter" in call.query:
        _, wanted = graph.parse_eq_filter(call.query["$filter"], ("mail",))
        groups = [g for g in groups if g.address.lower() == wanted.lower()]
    groups.sort(key=lambda g: g.address.lower())
    chunk, next_link = graph.page(call, groups, default_top=100, max_top=999, skiptoken=True)
    body: Dict[str, Any] = {"@odata.context": _context(call, "groups"),
                            "value": [graph.project(group_json(g), fields) for g in chunk]}
    if next_link:
        body["@odata.nextLink"] = next_link
    return GraphResult(200, body)


def transitive_members(sandbox, group) -> List[Dict[str, Any]]:
    """Users and nested groups reachable from `group`, each once, in a stable order."""
    tenant = sandbox.tenant
    seen, result, queue = {group.address.lower()}, [], list(group.members)
    while queue:
        address = queue.pop(0)
        if address.lower() in seen:
            continue
        seen.add(address.lower())
        nested = tenant.group(address)
        if nested is not None:
            data = group_json(nested)
            result.append(dict({"@odata.type": "#microsoft.graph.group"}, **data))
            queue.extend(nested.members)
            continue
        box = tenant.mailbox(address)
        result.append({"@odata.type": "#microsoft.graph.user",
                       "id": object_id("user", address), "mail": address,
                       "userPrincipalName": address,
                       "displayName": (box.display_name if box and box.display_name
                                       else address.split("@", 1)[0])})
    return result


def op_transitive_members(sandbox, call: GraphCall) -> GraphResult:
    graph.check_options(call)
    fields = graph.parse_select(call, MEMBER_FIELDS, "microsoft.graph.directoryObject")
    group_id = call.params["group"]
    group = next((g for g in _microsoft_groups(sandbox)
                  if object_id("group", g.address) == group_id.lower()), None)
    if group is None:
        raise GraphError(404, "Request_ResourceNotFound", "Resource '%s' does not exist or one "
                         "of its queried reference-property objects are not present."
                         % group_id)
    members = transitive_members(sandbox, group)
    chunk, next_link = graph.page(call, members, default_top=100, max_top=999, skiptoken=True)
    keep = None if fields is None else set(fields) | {"@odata.type", "id"}
    body: Dict[str, Any] = {
        "@odata.context": _context(call, "directoryObjects"),
        "value": [m if keep is None else {k: v for k, v in m.items() if k in keep}
                  for m in chunk]}
    if next_link:
        body["@odata.nextLink"] = next_link
    return GraphResult(200, body)


OPERATIONS = [
    graph._op("GET", r"/groups", "graph.groups.list", op_list_groups, GROUP_READ, "/groups",
              mailbox=False, denied=DENIED),
    graph._op("GET", r"/groups/(?P<group>[^/]+)/transitiveMembers",
              "graph.groups.transitive_members", op_transitive_members, GROUP_READ,
              "/groups/{group}/transitiveMembers", mailbox=False, denied=DENIED),
]
for _operation in OPERATIONS:
    graph.register(_operation)


def routes(sandbox):
    return graph.route_defs(sandbox, OPERATIONS)
