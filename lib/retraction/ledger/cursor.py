"""Opaque, tamper-evident keyset cursors for paged reads.

A cursor is base64url(JSON position) + "." + base64url(HMAC-SHA256 over it), keyed with a
random key kept in the ledger's `meta` table: only this ledger could have issued it, and it
only continues the query (kind and filters) it came from. It carries no secret; the HMAC
only stops a forged or edited cursor from steering the query.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any, Dict, List, Mapping

from retraction.metrics.errors import InvalidParameter


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def fingerprint(kind: str, query: Mapping[str, Any]) -> str:
    canonical = json.dumps([kind, query], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def encode(key: bytes, kind: str, query: Mapping[str, Any], position: List[Any]) -> str:
    body = json.dumps({"k": kind, "q": fingerprint(kind, query), "p": position},
                      separators=(",", ":")).encode("utf-8")
    mac = hmac.new(key, body, hashlib.sha256).digest()[:16]
    return "{}.{}".format(_b64(body), _b64(mac))


def decode(key: bytes, kind: str, query: Mapping[str, Any], cursor: str) -> List[Any]:
    """The position a cursor continues from; InvalidParameter('cursor') if it was not issued
    by this ledger for this same query."""
    try:
        body_text, mac_text = cursor.split(".")
        body, mac = _unb64(body_text), _unb64(mac_text)
    except (AttributeError, ValueError):
        raise InvalidParameter("cursor", "is malformed; pass back the next_cursor of the "
                                         "previous page unchanged")
    expected = hmac.new(key, body, hashlib.sha256).digest()[:16]
    if not hmac.compare_digest(mac, expected):
        raise InvalidParameter("cursor", "was not issued by this ledger or was altered")
    data: Dict[str, Any] = json.loads(body.decode("utf-8"))
    if data.get("k") != kind or data.get("q") != fingerprint(kind, query):
        raise InvalidParameter("cursor", "belongs to a different query; repeat the same "
                                         "filters when paging")
    return data["p"]
