"""Microsoft Graph JSON batching: `POST /v1.0/$batch`.

Items run through graph.dispatch (the same rules as direct requests), at most 4 at once per
mailbox within a batch (Outlook's rule), each counted under its own route name, each with its
own fault decision (so one batch can carry 429s with their own Retry-After next to 2xx items).
A dropped item is not run and answers 504; a lost reply (writes only) is run, then answers 504.
Responses come back in a shuffled order (seeded), as Graph allows.
"""
from __future__ import annotations

import asyncio
import functools
import itertools
import json
import random
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import parse_qsl, unquote, urlsplit

from aiohttp import web

from sandbox import graph
from sandbox import graph_directory  # noqa: F401  (registers the directory operations)
from sandbox.entra import issuer
from sandbox.faults import WRITE_METHODS, fault_body
from sandbox.graph import GraphCall, GraphError, GraphResult

MAX_REQUESTS = 20
PER_MAILBOX = 4
ITEM_HEADERS = ("Content-Type", "Retry-After", "Preference-Applied", "Location")


@functools.lru_cache(maxsize=1024)
def _query_pairs(query: str) -> Tuple[Tuple[str, str], ...]:
    """parse_qsl (slow: tens of us) once per query: a campaign's items repeat a few queries."""
    return tuple(parse_qsl(query, keep_blank_values=True))


def _invalid(message: str = "Invalid batch payload format.") -> GraphError:
    return GraphError(400, "BadRequest", message)


def validate(payload: Any) -> List[Dict[str, Any]]:
    if not isinstance(payload, dict) or not isinstance(payload.get("requests"), list):
        raise _invalid()
    items = payload["requests"]
    if len(items) > MAX_REQUESTS:
        raise _invalid("Number of requests inside batch exceeds the limit.")
    seen: Dict[str, str] = {}
    for item in items:
        if not isinstance(item, dict):
            raise _invalid()
        for key in ("id", "method", "url"):
            if not isinstance(item.get(key), str) or not item[key]:
                raise _invalid("Invalid batch payload format: '%s' is required." % key)
        lowered = item["id"].lower()  # Graph compares batch ids case-insensitively
        if lowered in seen:
            raise _invalid("Request Id %s has to be unique in a batch." % item["id"])
        seen[lowered] = item["id"]
        depends = item.get("dependsOn") or []
        if not isinstance(depends, list):
            raise _invalid()
        for dep in depends:
            if not isinstance(dep, str) or dep.lower() not in seen or dep.lower() == lowered:
                raise _invalid("Depends on request Id '%s' was not found among the earlier "
                               "requests of the batch." % dep)
        if "headers" in item and not isinstance(item["headers"], dict):
            raise _invalid()
    return items


class BatchRun:
    def __init__(self, sandbox, claims: Dict[str, Any], base_url: str,
                 outer_headers: Dict[str, str]):
        self.sandbox = sandbox
        self.claims = claims
        self.base_url = base_url
        self.outer_headers = outer_headers
        self.done: Dict[str, asyncio.Future] = {}
        self.slots: Dict[str, asyncio.Semaphore] = {}

    async def run(self, items: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        loop = asyncio.get_running_loop()
        for item in items:
            self.done[item["id"].lower()] = loop.create_future()
        return list(await asyncio.gather(*(self.run_item(item) for item in items)))

    async def run_item(self, item: Dict[str, Any]) -> Dict[str, Any]:
        status = 500
        try:
            response = await self._execute(item)
            status = response["status"]
            return response
        finally:
            self.done[item["id"].lower()].set_result(status)

    async def _execute(self, item: Dict[str, Any]) -> Dict[str, Any]:
        headers = graph.lower_headers(item.get("headers") or {})
        split = urlsplit(item["url"])
        operation, params, problem = None, {}, None
        if split.scheme or split.netloc:
            problem = GraphError(400, "BadRequest", "The batch request URL must be relative "
                                 "to the service root (e.g. /users/{id}/messages).")
        path = "/" + unquote(split.path).lstrip("/")
        if path.lower().startswith(graph.PREFIX.lower() + "/"):
            path = path[len(graph.PREFIX):]
        if problem is None:
            try:
                operation, params = graph.resolve(item["method"], path)
            except GraphError as err:
                problem = err
        name = operation.name if operation else "graph.other"
        counters = self.sandbox.counters
        for dep in item.get("dependsOn") or []:
            if await self.done[dep.lower()] >= 400:
                problem = GraphError(424, "FailedDependency", "The request depends on request "
                                     "'%s', which failed." % dep)
                break
        counters.hit(name)
        if problem is None and "body" in item and "content-type" not in headers:
            problem = GraphError(400, "BadRequest", "A Content-Type header is required for a "
                                 "batch request with a body.")
        if problem is not None:
            result = graph.error_result(self.sandbox, headers, problem)
            counters.status(name, result.status)
            return self._item(item["id"], result)
        fault = self.sandbox.faults.decide("graph", item["method"].upper() in WRITE_METHODS)
        if fault is not None and fault.kind != "lost_reply":
            result = self._fault_result(fault, headers)
            counters.status(name, result.status)
            return self._item(item["id"], result)
        call = GraphCall(item["method"].upper(), path,
                         dict(_query_pairs(split.query)), headers,
                         item.get("body"), self.claims, self.base_url, params)
        upn = params.get("upn") if operation and operation.mailbox else None
        if upn is None:
            result = await graph.dispatch(self.sandbox, call, operation, item=True)
        else:
            slot = self.slots.setdefault(upn.lower(), asyncio.Semaphore(PER_MAILBOX))
            async with slot:
                result = await graph.dispatch(self.sandbox, call, operation, item=True)
        if fault is not None:  # lost reply: the item ran, the gateway gave up waiting for it
            result = self._fault_result(fault, headers)
        counters.status(name, result.status)
        return self._item(item["id"], result)

    def _fault_result(self, fault, headers: Dict[str, str]) -> GraphResult:
        if fault.kind in ("drop", "lost_reply"):  # an item cannot lose its connection: 504
            return graph.error_result(self.sandbox, headers, GraphError(
                504, "GatewayTimeout", "The operation timed out."))
        status, extra, body = fault_body("graph", fault,
                                         self.sandbox.error_context(headers=headers))
        extra = dict(extra)
        extra["Content-Type"] = "application/json"
        return GraphResult(status, body, extra)

    @staticmethod
    def _item(item_id: str, result: GraphResult) -> Dict[str, Any]:
        response: Dict[str, Any] = {
            "id": item_id, "status": result.status,
            "headers": {k: v for k, v in result.headers.items() if k in ITEM_HEADERS}}
        if result.body is not None:
            response["body"] = result.body
        return response


def routes(sandbox) -> List[web.RouteDef]:
    tokens = issuer(sandbox)
    sequence = itertools.count()

    async def batch(request: web.Request) -> web.Response:
        headers = graph.lower_headers(request.headers)
        claims, problem = tokens.verify(headers.get("authorization"))
        if claims is None:
            return graph.to_response(graph.unauthorized(sandbox, headers, problem))
        try:
            try:
                payload = json.loads(await request.read() or b"null")
            except ValueError:
                raise _invalid()
            items = validate(payload)
        except GraphError as err:
            return graph.to_response(graph.error_result(sandbox, headers, err))
        run = BatchRun(sandbox, claims, "https://%s%s" % (request.host, graph.PREFIX), headers)
        responses = await run.run(items)
        shuffle_seed: Optional[str] = "%s:%d" % (sandbox.faults.seed, next(sequence))
        random.Random(shuffle_seed).shuffle(responses)
        return web.json_response({"responses": responses})

    return [web.post(graph.PREFIX + "/$batch", batch, name="graph.batch")]
