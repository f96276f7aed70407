"""Google's OAuth 2.0 token endpoint for service accounts with domain-wide delegation, and the
state the Google fronts share: issued tokens, per-user Gmail quota, Gmail history ids.

`POST /token` takes `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>`,
exactly what google-auth's `service_account.Credentials` sends. The assertion is checked with
PyJWT against the service account's public key (chosen by `kid` = private_key_id); `aud` must be
`https://oauth2.googleapis.com/token` (google-auth always sends that, even with another
token_uri). Error bodies are Google's: `{"error", "error_description"}`.

Decisions where Google's documentation is silent (kept in sandbox/README.md too):
- unknown `iss`: 400 invalid_grant "Invalid grant: account not found";
- bad audience: 400 invalid_grant "Invalid JWT: Failed audience check.";
- subject in a non-Google domain, unknown, or a mailbox of kind not_discoverable:
  400 invalid_grant "Invalid email or User ID"; a group: 401 unauthorized_client;
- an assertion without `sub` gets a token for the service account itself: Gmail answers it with
  400 failedPrecondition, the Directory with 403 forbidden;
- scopes granted later do not widen tokens already issued, revoked ones do not narrow them:
  a token keeps what it was issued with until it expires (as at Google).
"""
from __future__ import annotations

import base64
import functools
import json
import re
import secrets
import threading
import time
from typing import Any, Dict, FrozenSet, List, Optional, Tuple

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import RSAAlgorithm

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
MAX_ASSERTION_LIFETIME_S = 3600
CLOCK_SKEW_S = 300

UNAUTHORIZED_CLIENT = ("Client is unauthorized to retrieve access tokens using this method, "
                       "or client not authorized for any of the scopes requested.")
SHORT_LIVED = ("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
               "timeframe. Check your iat and exp values in the JWT claim.")


class Grant(object):
    """One issued access token: bound to a service account, a subject and scopes."""

    __slots__ = ("token", "tenant", "client_email", "subject", "scopes", "expires_at")

    def __init__(self, token: str, tenant: object, client_email: str, subject: Optional[str],
                 scopes: FrozenSet[str], expires_at: float):
        self.token = token
        self.tenant = tenant
        self.client_email = client_email
        self.subject = subject
        self.scopes = scopes
        self.expires_at = expires_at

    @property
    def actor(self) -> str:
        """The audit's actor: who acted, as whom."""
        if self.subject:
            return "%s as %s" % (self.client_email, self.subject)
        return self.client_email


class GoogleState(object):
    """Issued tokens and Gmail history ids. Lives in `sandbox.state["google"]`: the server's
    `reset()` (every scenario load) empties it, and a token of another tenant never works."""

    def __init__(self, sandbox) -> None:
        self._sandbox = sandbox
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._grants: Dict[str, Grant] = {}
            self._history: Dict[str, int] = {}
            self._history_seq = 100000

    def revoke_all(self) -> None:
        """Every token issued so far answers 401 authError from now on."""
        with self._lock:
            self._grants.clear()

    @property
    def token_lifetime_s(self) -> int:
        return int(self._sandbox.faults.setting("token_lifetime_s"))

    # -- tokens ----------------------------------------------------------------------------
    def issue(self, client_email: str, subject: Optional[str],
              scopes: FrozenSet[str]) -> Grant:
        token = "ya29.sandbox." + secrets.token_urlsafe(32)
        grant = Grant(token, self._sandbox.tenant, client_email, subject, scopes,
                      time.time() + self.token_lifetime_s)
        with self._lock:
            self._grants[token] = grant
        return grant

    def authenticate(self, authorization: Optional[str]) -> Tuple[Optional[Grant], str]:
        """(grant, "") for a live bearer token, else (None, "missing" | "invalid")."""
        if not authorization:
            return None, "missing"
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None, "invalid"
        with self._lock:
            grant = self._grants.get(token.strip())
        if (grant is None or grant.tenant is not self._sandbox.tenant
                or grant.expires_at <= time.time()):
            return None, "invalid"
        return grant, ""

    # -- Gmail per-user quota (the server's QuotaWindow: units per user per minute) -----------
    def charge(self, user: str, units: int) -> Optional[float]:
        """None when `units` were spent, else seconds until the user's window has room."""
        return self._sandbox.gmail_quota.spend(user.lower(), units)

    # -- Gmail history ids -------------------------------------------------------------------
    def history_id(self, copy_id: str) -> str:
        with self._lock:
            if copy_id not in self._history:
                self._history_seq += 1
                self._history[copy_id] = self._history_seq
            return str(self._history[copy_id])

    def touch(self, copy_id: str) -> None:
        with self._lock:
            self._history_seq += 1
            self._history[copy_id] = self._history_seq


def state_of(sandbox) -> GoogleState:
    state = sandbox.state.get("google")
    if state is None:
        state = sandbox.state.setdefault("google", GoogleState(sandbox))
    return state


# -- Google API error envelope (Gmail, Directory) ----------------------------------------------
STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
                503: "UNAVAILABLE"}


def api_error_body(code: int, message: str, reason: str, status: Optional[str] = None,
                   domain: str = "global", **extra: str) -> dict:
    item = {"message": extra.pop("item_message", message), "domain": domain, "reason": reason}
    item.update(extra)
    return {"error": {"code": code, "message": message, "errors": [item],
                      "status": status or STATUS_NAMES.get(code, "UNKNOWN")}}


_SEE = "See https://developers.google.com/identity/sign-in/web/devconsole-project."


def unauthenticated_body(why: str) -> dict:
    """401 for a missing or a bad/expired bearer token, worded as Google words them."""
    if why == "missing":
        return api_error_body(
            401, "Request is missing required authentication credential. Expected OAuth 2 "
            "access token, login cookie or other valid authentication credential. " + _SEE,
            "required", item_message="Login Required.", location="Authorization",
            locationType="header")
    return api_error_body(
        401, "Request had invalid authentication credentials. Expected OAuth 2 access token, "
        "login cookie or other valid authentication credential. " + _SEE,
        "authError", item_message="Invalid Credentials", location="Authorization",
        locationType="header")


def insufficient_scopes_body() -> dict:
    return api_error_body(403, "Request had insufficient authentication scopes.",
                          "insufficientPermissions", item_message="Insufficient Permission")


WWW_AUTHENTICATE = {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'}


# -- the token endpoint ----------------------------------------------------------------------
class TokenError(Exception):
    def __init__(self, status: int, error: str, description: str):
        Exception.__init__(self, description)
        self.status = status
        self.error = error
        self.description = description


def exchange(state: GoogleState, tenant, form: Dict[str, str]) -> Grant:
    """Check a JWT-bearer grant and issue a token, or raise TokenError as Google would."""
    grant_type = form.get("grant_type", "")
    if grant_type != JWT_BEARER:
        raise TokenError(400, "unsupported_grant_type", "Invalid grant_type: %s" % grant_type)
    assertion = form.get("assertion", "")
    if not assertion:
        raise TokenError(400, "invalid_request", "Missing required parameter: assertion")
    plain = _plain_jws(assertion)
    if plain is not None:
        header, unverified = plain[0], plain[1]
    else:
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise TokenError(400, "invalid_grant",
                             "Invalid JWT: could not decode the assertion.")
    with tenant.lock:
        account = tenant.google_accounts.get(str(unverified.get("iss", "")).lower())
    if account is None:
        raise TokenError(400, "invalid_grant", "Invalid grant: account not found")
    if header.get("kid") not in (None, account.private_key_id):
        raise TokenError(400, "invalid_grant", "Invalid JWT Signature.")
    claims = _verify(assertion, account.public_key_pem, plain)
    scopes = frozenset(str(claims.get("scope", "")).split())
    if not scopes:
        raise TokenError(400, "invalid_scope", "Empty or missing scope not allowed.")
    subject = claims.get("sub") or None
    if subject is not None:
        _check_subject(tenant, str(subject))
        with tenant.lock:
            granted = set(account.scopes)
        if not scopes <= granted:
            raise TokenError(401, "unauthorized_client", UNAUTHORIZED_CLIENT)
    return state.issue(account.client_email, subject, scopes)


# A compact JWS whose segments are plain unpadded base64url (what google-auth sends).
_PLAIN_SEGMENTS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_RS256 = RSAAlgorithm(RSAAlgorithm.SHA256)
PlainJws = Tuple[Dict[str, Any], Dict[str, Any], bytes, bytes]


def _b64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _plain_jws(assertion: str) -> Optional[PlainJws]:
    """(header, claims, signing input, signature) of an RS256 assertion in the plain form
    google-auth writes, else None. PyJWT 2.15 checks base64 one character at a time and a
    token request used to decode its assertion three times (most of its CPU); the plain form
    is decoded here once. Anything else still goes through PyJWT, as does every rejection,
    so each error keeps PyJWT's judgement."""
    if not _PLAIN_SEGMENTS.fullmatch(assertion):
        return None
    segments = assertion.split(".")
    if any(len(part) % 4 == 1 for part in segments):
        return None
    try:
        header = json.loads(_b64url(segments[0]))
        claims = json.loads(_b64url(segments[1]))
    except (ValueError, RecursionError):
        return None
    if (not isinstance(header, dict) or not isinstance(claims, dict)
            or header.get("alg") != "RS256" or not set(header) <= {"alg", "typ", "kid"}
            or not all(isinstance(value, str) for value in header.values())):
        return None
    signing_input = (segments[0] + "." + segments[1]).encode("ascii")
    return header, claims, signing_input, _b64url(segments[2])


@functools.lru_cache(maxsize=64)
def _rsa_key(public_key_pem: str) -> Any:
    """The key PyJWT prepares from this PEM, prepared once instead of per request; None
    when PyJWT cannot use it (it then gets the PEM and fails as it always did)."""
    try:
        return _RS256.prepare_key(public_key_pem)
    except (jwt.PyJWTError, TypeError):
        return None


def _plainly_valid(plain: PlainJws, key: Any) -> bool:
    """True when the signature and every check `_verify` asks PyJWT for pass beyond doubt:
    a public key of 2048 bits or more, integer iat/exp within the leeway, no nbf, a string
    iss, exactly our audience, string sub/jti (where present)."""
    _, claims, signing_input, signature = plain
    if not isinstance(key, RSAPublicKey) or key.key_size < 2048:
        return False
    iat, exp, now = claims.get("iat"), claims.get("exp"), time.time()
    return (type(iat) is int and type(exp) is int and "nbf" not in claims
            and iat <= now + CLOCK_SKEW_S and exp > now - CLOCK_SKEW_S
            and isinstance(claims.get("iss"), str) and claims.get("aud") == TOKEN_AUDIENCE
            and isinstance(claims.get("sub", ""), str)
            and isinstance(claims.get("jti", ""), str)
            and _RS256.verify(signing_input, key, signature))


def _verify(assertion: str, public_key_pem: str, plain: Optional[PlainJws] = None) -> dict:
    key = _rsa_key(public_key_pem)
    if plain is not None and _plainly_valid(plain, key):
        claims = plain[1]
    else:
        claims = _decode(assertion, public_key_pem if key is None else key)
    if int(claims["exp"]) - int(claims["iat"]) > MAX_ASSERTION_LIFETIME_S:
        raise TokenError(400, "invalid_grant", SHORT_LIVED)
    return claims


def _decode(assertion: str, key: Any) -> dict:
    """PyJWT's verdict on an assertion, as Google words each refusal."""
    try:
        return jwt.decode(
            assertion, key, algorithms=["RS256"], audience=TOKEN_AUDIENCE,
            leeway=CLOCK_SKEW_S, options={"require": ["iss", "aud", "iat", "exp"]})
    except jwt.InvalidSignatureError:
        raise TokenError(400, "invalid_grant", "Invalid JWT Signature.")
    except jwt.InvalidAlgorithmError:
        raise TokenError(400, "invalid_grant", "Invalid JWT Signature.")
    except jwt.InvalidAudienceError:
        raise TokenError(400, "invalid_grant", "Invalid JWT: Failed audience check.")
    except (jwt.ExpiredSignatureError, jwt.ImmatureSignatureError, jwt.InvalidIssuedAtError):
        raise TokenError(400, "invalid_grant", SHORT_LIVED)
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError(400, "invalid_grant", "Invalid JWT: missing claim %s." % exc.claim)
    except jwt.PyJWTError:
        raise TokenError(400, "invalid_grant", "Invalid JWT Signature.")


def _check_subject(tenant, subject: str) -> None:
    with tenant.lock:
        group = tenant.group(subject)
        mailbox = tenant.mailbox(subject)
    if group is not None and group.provider == "google":
        raise TokenError(401, "unauthorized_client", UNAUTHORIZED_CLIENT)
    if (mailbox is None or mailbox.provider != "google"
            or mailbox.kind == "not_discoverable"):
        raise TokenError(400, "invalid_grant", "Invalid email or User ID")


def routes(sandbox) -> List[web.RouteDef]:
    async def token(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        state = state_of(sandbox)
        try:
            grant = exchange(state, sandbox.tenant, form)
        except TokenError as exc:
            return web.json_response({"error": exc.error, "error_description": exc.description},
                                     status=exc.status)
        return web.json_response({
            "access_token": grant.token,
            "expires_in": state.token_lifetime_s,
            "token_type": "Bearer",
        })

    return [web.post("/token", token, name="google.token")]
