"""Entra ID (v2.0 endpoints) for app-only tokens: OIDC discovery and the token endpoint.

Client credentials with a client secret or a certificate-signed client assertion (RS256 with
`x5t`, or PS256 with `x5t#S256`, as msal sends them). Access tokens are JWTs signed by the
sandbox (HS256, key never leaves the process) carrying `roles` = the app's application
permissions, or no `roles` at all when admin consent is revoked (Entra still issues a token
then; Graph refuses it with 403). Graph validates them with `verify_access_token`.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import math
import os
import time
import uuid
from typing import Any, Dict, Optional, Tuple

import jwt
from aiohttp import web

from sandbox.tenant import utc_now

GRAPH_RESOURCE = "https://graph.microsoft.com"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
GRAPH_SCOPES = (GRAPH_RESOURCE + "/.default", GRAPH_APP_ID + "/.default",
                GRAPH_RESOURCE + "//.default")
RESERVED_SCOPES = ("openid", "profile", "offline_access")
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_CACHE_LIMIT = 20000


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _thumbprints(certificate_pem: str) -> Tuple[str, str, Any]:
    """(x5t, x5t#S256, public key) of a registered certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    cert = x509.load_pem_x509_certificate(certificate_pem.encode())
    der = cert.public_bytes(serialization.Encoding.DER)
    return (_b64url(hashlib.sha1(der).digest()), _b64url(hashlib.sha256(der).digest()),
            cert.public_key())


class EntraError(Exception):
    def __init__(self, status: int, error: str, code: int, description: str):
        super().__init__(description)
        self.status, self.error, self.code, self.description = status, error, code, description


def error_response(err: EntraError) -> web.Response:
    trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
    now = utc_now()
    stamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
    description = "AADSTS%d: %s Trace ID: %s Correlation ID: %s Timestamp: %s" % (
        err.code, err.description, trace_id, correlation_id,
        now.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z")
    return web.json_response({
        "error": err.error, "error_description": description, "error_codes": [err.code],
        "timestamp": stamp, "trace_id": trace_id, "correlation_id": correlation_id,
        "error_uri": "https://login.microsoftonline.com/error?code=%d" % err.code,
    }, status=err.status)


def _unknown_tenant(tenant_id: str) -> EntraError:
    return EntraError(400, "invalid_tenant", 90002,
                      "Tenant '%s' not found. Check to make sure you have the correct tenant "
                      "ID and are signing into the correct cloud." % tenant_id)


class TokenIssuer:
    """Issues and validates the sandbox's access tokens; survives tenant swaps."""

    def __init__(self, sandbox):
        self.sandbox = sandbox
        self._claims: Dict[str, Dict[str, Any]] = {}
        self._cert_cache: Dict[str, Tuple[str, str, Any]] = {}

    def reset(self) -> None:
        self._cert_cache.clear()

    def revoke_all(self) -> None:
        """Every token issued so far stops validating: the signing key is replaced (tokens
        outlive scenario loads, so this is the only way to retire them early)."""
        self.sandbox.token_secret = os.urandom(32)
        self._claims.clear()

    def certificate(self, pem: str) -> Tuple[str, str, Any]:
        cached = self._cert_cache.get(pem)
        if cached is None:
            cached = self._cert_cache[pem] = _thumbprints(pem)
        return cached

    def issue(self, app, tenant_id: str) -> Tuple[str, int]:
        lifetime = int(self.sandbox.faults.setting("token_lifetime_s"))
        issued = time.time()
        now = int(issued)
        # exp rounded up: a token lives at least its expires_in (truncating would let one with
        # expires_in=1 die within milliseconds of being issued).
        expires = int(math.ceil(issued + lifetime))
        oid = str(uuid.uuid5(uuid.NAMESPACE_URL, "sp:" + app.client_id))
        claims: Dict[str, Any] = {
            "aud": GRAPH_RESOURCE, "iss": "https://sts.windows.net/%s/" % tenant_id,
            "iat": now, "nbf": now, "exp": expires, "appid": app.client_id,
            "appidacr": "1" if app.client_secret else "2", "idtyp": "app", "oid": oid,
            "sub": oid, "tid": tenant_id, "uti": uuid.uuid4().hex[:22], "ver": "1.0",
        }
        if app.consent_granted and app.permissions:
            claims["roles"] = sorted(app.permissions)
        secret = self.sandbox.token_secret
        token = jwt.encode(claims, secret, algorithm="HS256", headers={"kid": "sandbox"})
        if len(self._claims) >= TOKEN_CACHE_LIMIT:
            self._claims.clear()
        if secret is self.sandbox.token_secret:  # not revoked meanwhile
            self._claims[token] = claims
        return token, lifetime

    def verify(self, authorization: Optional[str]) -> Tuple[Optional[Dict[str, Any]], str]:
        """(claims, "") for a valid bearer token, else (None, Graph's 401 message)."""
        if not authorization:
            return None, "Access token is empty."
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None, "Access token is empty."
        claims = self._claims.get(token)
        if claims is None:
            secret = self.sandbox.token_secret
            try:
                claims = jwt.decode(token, secret, algorithms=["HS256"],
                                    audience=GRAPH_RESOURCE, options={"verify_exp": False})
            except jwt.InvalidAudienceError:
                return None, "Access token validation failure. Invalid audience."
            except jwt.PyJWTError:
                return None, ("IDX14100: JWT is not well formed, there are no dots (.)."
                              if token.count(".") != 2 else
                              "Access token validation failure. Invalid signature.")
            if secret is self.sandbox.token_secret:  # not revoked while we decoded
                self._claims[token] = claims
        if claims["exp"] <= time.time():
            return None, "Lifetime validation failed, the token is expired."
        return claims, ""


def issuer(sandbox) -> TokenIssuer:
    found = sandbox.state.get("entra.tokens")
    if found is None:
        found = sandbox.state["entra.tokens"] = TokenIssuer(sandbox)
    return found


def _base(request: web.Request) -> str:
    return "https://%s" % request.host


def routes(sandbox):
    tokens = issuer(sandbox)

    def known_tenant(tenant_id: str) -> bool:
        tenant = sandbox.tenant
        return tenant_id.lower() == tenant.tenant_id.lower() or (
            tenant.domains.get(tenant_id.lower()) == "microsoft")

    async def openid_configuration(request: web.Request) -> web.Response:
        tenant_id = request.match_info["tenant"]
        if not known_tenant(tenant_id):
            return error_response(_unknown_tenant(tenant_id))
        tid = sandbox.tenant.tenant_id
        base = "%s/%s" % (_base(request), tid)
        return web.json_response({
            "token_endpoint": base + "/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                      "client_secret_basic"],
            "jwks_uri": base + "/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": "https://login.microsoftonline.com/%s/v2.0" % tid,
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": base + "/oauth2/v2.0/authorize",
            "device_authorization_endpoint": base + "/oauth2/v2.0/devicecode",
            "http_logout_supported": True, "frontchannel_logout_supported": True,
            "end_session_endpoint": base + "/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "ver"],
            "kerberos_endpoint": base + "/kerberos",
            "tenant_region_scope": "EU", "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com", "rbac_url": "https://pas.windows.net",
        })

    async def keys(request: web.Request) -> web.Response:
        # Tokens are HS256-signed by the sandbox: no public keys to publish.
        return web.json_response({"keys": []})

    async def token(request: web.Request) -> web.Response:
        try:
            form = await request.post()
            tenant_id = request.match_info["tenant"]
            if not known_tenant(tenant_id):
                raise _unknown_tenant(tenant_id)
            app = _authenticate(request, form, tenant_id)
            _check_scope(form.get("scope", ""), sandbox.tenant.tenant_id)
        except EntraError as err:
            return error_response(err)
        access_token, lifetime = tokens.issue(app, sandbox.tenant.tenant_id)
        return web.json_response({"token_type": "Bearer", "expires_in": lifetime,
                                  "ext_expires_in": lifetime, "access_token": access_token},
                                 headers={"Cache-Control": "no-store, no-cache",
                                          "Pragma": "no-cache"})

    def _authenticate(request: web.Request, form, tenant_id: str):
        grant = form.get("grant_type")
        if not grant:
            raise EntraError(400, "invalid_request", 900144, "The request body must contain "
                             "the following parameter: 'grant_type'.")
        if grant != "client_credentials":
            raise EntraError(400, "unsupported_grant_type", 70003, "The app requested an "
                             "unsupported grant type '%s'." % grant)
        client_id = form.get("client_id", "")
        if not client_id:
            raise EntraError(400, "invalid_request", 900144, "The request body must contain "
                             "the following parameter: 'client_id'.")
        with sandbox.tenant.lock:
            app = sandbox.tenant.microsoft_apps.get(client_id)
        if app is None:
            raise EntraError(400, "unauthorized_client", 700016, (
                "Application with identifier '%s' was not found in the directory '%s'. This "
                "can happen if the application has not been installed by the administrator "
                "of the tenant or consented to by any user in the tenant. You may have sent "
                "your authentication request to the wrong tenant.") % (client_id, tenant_id))
        secret = form.get("client_secret")
        assertion = form.get("client_assertion")
        if secret is not None:
            if not app.client_secret or not hmac.compare_digest(
                    secret.encode(), app.client_secret.encode()):
                raise EntraError(401, "invalid_client", 7000215, (
                    "Invalid client secret provided. Ensure the secret being sent in the "
                    "request is the client secret value, not the client secret ID, for a "
                    "secret added to app '%s'.") % client_id)
            return app
        if assertion is not None:
            if form.get("client_assertion_type") != ASSERTION_TYPE:
                raise EntraError(400, "invalid_request", 50027, "JWT token is invalid or "
                                 "malformed: client_assertion_type must be '%s'."
                                 % ASSERTION_TYPE)
            _verify_assertion(request, app, assertion)
            return app
        raise EntraError(401, "invalid_client", 7000218, "The request body must contain the "
                         "following parameter: 'client_assertion' or 'client_secret'.")

    def _verify_assertion(request: web.Request, app, assertion: str) -> None:
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            raise EntraError(401, "invalid_client", 50027, "JWT token is invalid or malformed.")
        if not app.certificate_pem:
            raise EntraError(401, "invalid_client", 700027, "Client assertion contains an "
                             "invalid signature. [Reason - The key was not found.]")
        x5t, x5t_s256, public_key = tokens.certificate(app.certificate_pem)
        sent = str(header.get("x5t#S256") or header.get("x5t") or "")
        expected = x5t_s256 if "x5t#S256" in header else x5t
        if sent.rstrip("=") != expected:  # msal keeps the base64 padding, RFC 7515 drops it
            raise EntraError(401, "invalid_client", 700027, (
                "The certificate with identifier used to sign the client assertion is not "
                "registered on application. [Reason - The key was not found., Thumbprint of "
                "key used by client: '%s']") % (sent or ""))
        if header.get("alg") not in ("RS256", "PS256"):
            raise EntraError(401, "invalid_client", 700027, "Client assertion contains an "
                             "invalid signature. [Reason - unsupported algorithm.]")
        endpoint = "https://%s/%s/oauth2/v2.0/token"
        audiences = [endpoint % (request.host, request.match_info["tenant"]),
                     endpoint % (request.host, sandbox.tenant.tenant_id)]
        try:
            claims = jwt.decode(assertion, public_key, algorithms=[header["alg"]],
                                audience=audiences,
                                options={"require": ["exp", "aud", "iss", "sub", "jti"]},
                                leeway=300)
        except jwt.InvalidSignatureError:
            raise EntraError(401, "invalid_client", 700027, "Client assertion failed "
                             "signature validation.")
        except (jwt.ExpiredSignatureError, jwt.ImmatureSignatureError):
            raise EntraError(401, "invalid_client", 700024, "Client assertion is not within "
                             "its valid time range.")
        except jwt.InvalidAudienceError:
            raise EntraError(401, "invalid_client", 50027, "JWT token is invalid or "
                             "malformed: the audience is not the token endpoint.")
        except jwt.PyJWTError as exc:
            raise EntraError(401, "invalid_client", 50027, "JWT token is invalid or "
                             "malformed: %s" % exc.__class__.__name__)
        if claims.get("iss") != app.client_id or claims.get("sub") != app.client_id:
            raise EntraError(401, "invalid_client", 700021, "Client assertion application "
                             "identifier doesn't match 'client_id' parameter.")

    def _check_scope(scope: str, tenant_id: str) -> None:
        asked = [s for s in scope.split() if s not in RESERVED_SCOPES]
        if not asked:
            raise EntraError(400, "invalid_request", 900144, "The request body must contain "
                             "the following parameter: 'scope'.")
        for value in asked:
            if not value.endswith("/.default"):
                raise EntraError(400, "invalid_scope", 1002012, (
                    "The provided value for scope %s is not valid. Client credential flows "
                    "must have a scope value with /.default suffixed to the resource "
                    "identifier (application ID URI).") % value)
            if value not in GRAPH_SCOPES:
                raise EntraError(400, "invalid_resource", 500011, (
                    "The resource principal named %s was not found in the tenant named %s. "
                    "This can happen if the application has not been installed by the "
                    "administrator of the tenant or consented to by any user in the tenant.")
                    % (value[:-len("/.default")], tenant_id))

    return [
        web.get("/{tenant}/v2.0/.well-known/openid-configuration", openid_configuration,
                name="entra.openid_configuration"),
        web.get("/{tenant}/discovery/v2.0/keys", keys, name="entra.keys"),
        web.post("/{tenant}/oauth2/v2.0/token", token, name="entra.token"),
    ]
