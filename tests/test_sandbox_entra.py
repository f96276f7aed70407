"""Entra ID front of the sandbox, driven by the real msal (and PyJWT for crafted assertions)."""
import time
import uuid

import jwt
import msal
import pytest

pytest_plugins = ["sandbox.pytest_plugin"]

GRAPH_SCOPE = ["https://graph.microsoft.com/.default"]
CLIENT_ID = "11111111-1111-1111-1111-111111111111"


def claims_of(token):
    return jwt.decode(token, options={"verify_signature": False})


def token_url(sandbox):
    return sandbox.urls["login_authority"] + "/oauth2/v2.0/token"


def test_discovery_document_points_at_the_sandbox(sandbox):
    session = sandbox.requests_session()
    url = sandbox.urls["login_authority"] + "/v2.0/.well-known/openid-configuration"
    doc = session.get(url).json()
    assert doc["token_endpoint"] == token_url(sandbox)
    assert doc["authorization_endpoint"].startswith(sandbox.urls["login_authority"])
    assert doc["issuer"].endswith("/%s/v2.0" % sandbox.tenant.tenant_id)
    assert session.get(doc["jwks_uri"]).json() == {"keys": []}


def test_unknown_tenant_fails_discovery(sandbox):
    with pytest.raises(ValueError, match="Unable to get authority configuration") as info:
        msal.ConfidentialClientApplication(
            CLIENT_ID, client_credential="x", instance_discovery=False,
            authority=sandbox.urls["authority_host"] + "/no-such-tenant",
            http_client=sandbox.requests_session())
    assert "AADSTS90002" in str(info.value.__context__)  # msal wraps the 400 it got


def test_client_secret_gets_a_token_with_the_app_roles(sandbox):
    result = sandbox.msal_app().acquire_token_for_client(scopes=GRAPH_SCOPE)
    assert result["token_type"] == "Bearer"
    assert result["expires_in"] == 3599
    claims = claims_of(result["access_token"])
    assert claims["appid"] == CLIENT_ID
    assert claims["tid"] == sandbox.tenant.tenant_id
    assert claims["aud"] == "https://graph.microsoft.com"
    assert claims["roles"] == ["GroupMember.Read.All", "Mail.ReadWrite"]
    assert sandbox.counters.snapshot()["routes"]["entra.token"] == 1


@pytest.mark.parametrize("credential", ["certificate", "certificate_sha256"])
def test_certificate_assertion_is_verified(sandbox, credential):
    # sha1 thumbprint -> RS256 + x5t; public_certificate -> PS256 + x5t#S256 (msal 1.39)
    result = sandbox.msal_app(credential=credential).acquire_token_for_client(
        scopes=GRAPH_SCOPE)
    assert "access_token" in result, result
    assert claims_of(result["access_token"])["appidacr"] in ("1", "2")


def test_assertion_signed_by_another_key_is_refused(sandbox):
    from sandbox.scenario import generated_certificate
    other_key, _ = generated_certificate("some-other-app")
    thumbprint = sandbox.credentials()["microsoft"][0]["certificate_thumbprint"]
    app = sandbox.msal_app(credential={"private_key": other_key, "thumbprint": thumbprint})
    result = app.acquire_token_for_client(scopes=GRAPH_SCOPE)
    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [700027]
    assert "signature validation" in result["error_description"]


def test_unregistered_certificate_thumbprint_is_refused(sandbox):
    key = sandbox.credentials()["microsoft"][0]["certificate_private_key"]
    app = sandbox.msal_app(credential={"private_key": key, "thumbprint": "AB" * 20})
    result = app.acquire_token_for_client(scopes=GRAPH_SCOPE)
    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [700027]
    assert "not registered" in result["error_description"]


def test_invalid_secret_is_an_invalid_client_dict(sandbox):
    result = sandbox.msal_app(credential="wrong-secret").acquire_token_for_client(
        scopes=GRAPH_SCOPE)
    assert result["error"] == "invalid_client"
    assert result["error_description"].startswith("AADSTS7000215: Invalid client secret "
                                                  "provided.")
    assert result["error_codes"] == [7000215]
    for key in ("timestamp", "trace_id", "correlation_id"):
        assert result[key]
    assert "wrong-secret" not in str(result)


def test_unknown_client_is_unauthorized_client(sandbox):
    app = msal.ConfidentialClientApplication(
        str(uuid.uuid4()), client_credential="x", authority=sandbox.urls["login_authority"],
        instance_discovery=False, http_client=sandbox.requests_session())
    result = app.acquire_token_for_client(scopes=GRAPH_SCOPE)
    assert result["error"] == "unauthorized_client"
    assert result["error_codes"] == [700016]


def test_scope_without_default_is_invalid_scope(sandbox):
    result = sandbox.msal_app().acquire_token_for_client(
        scopes=["https://graph.microsoft.com/Mail.ReadWrite"])
    assert result["error"] == "invalid_scope"
    assert result["error_codes"] == [1002012]


def test_scope_of_another_resource_is_invalid_resource(sandbox):
    result = sandbox.msal_app().acquire_token_for_client(
        scopes=["https://outlook.office365.com/.default"])
    assert result["error"] == "invalid_resource"
    assert result["error_codes"] == [500011]


def _assertion(sandbox, **overrides):
    creds = sandbox.credentials()["microsoft"][0]
    now = int(time.time())
    claims = {"aud": token_url(sandbox), "iss": CLIENT_ID, "sub": CLIENT_ID, "iat": now,
              "exp": now + 600, "jti": str(uuid.uuid4())}
    claims.update(overrides)
    import base64
    x5t = base64.urlsafe_b64encode(bytes.fromhex(creds["certificate_thumbprint"])).rstrip(
        b"=").decode()
    return jwt.encode(claims, creds["certificate_private_key"], algorithm="RS256",
                      headers={"x5t": x5t})


@pytest.mark.parametrize("overrides, code", [
    ({"aud": "https://login.microsoftonline.com/other/oauth2/v2.0/token"}, 50027),
    ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 4200}, 700024),
    ({"iss": "22222222-2222-2222-2222-222222222222"}, 700021),
])
def test_crafted_assertions_are_refused(sandbox, overrides, code):
    response = sandbox.requests_session().post(token_url(sandbox), data={
        "client_id": CLIENT_ID, "grant_type": "client_credentials",
        "scope": GRAPH_SCOPE[0],
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": _assertion(sandbox, **overrides)})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.json()["error_codes"] == [code]


def test_missing_credential_and_wrong_grant(sandbox):
    session = sandbox.requests_session()
    body = {"client_id": CLIENT_ID, "grant_type": "client_credentials",
            "scope": GRAPH_SCOPE[0]}
    missing = session.post(token_url(sandbox), data=body)
    assert (missing.status_code, missing.json()["error_codes"]) == (401, [7000218])
    wrong = session.post(token_url(sandbox), data=dict(body, grant_type="password"))
    assert wrong.json()["error"] == "unsupported_grant_type"


def test_revoked_consent_issues_a_token_without_roles_and_graph_refuses(sandbox):
    sandbox.set_consent(CLIENT_ID, consent_granted=False)
    token = sandbox.graph_token()
    assert "roles" not in claims_of(token)
    response = sandbox.requests_session().get(
        sandbox.urls["graph_url"] + "/users/alice@corp.example/messages",
        headers={"Authorization": "Bearer " + token})
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "ErrorAccessDenied"
    assert error["message"] == "Access is denied. Check credentials and try again."


def test_expired_token_gets_401_lifetime_validation_failed(sandbox):
    sandbox.set_faults(token_lifetime_s=1)
    result = sandbox.msal_app().acquire_token_for_client(scopes=GRAPH_SCOPE)
    assert result["expires_in"] == 1
    url = sandbox.urls["graph_url"] + "/users/alice@corp.example/mailFolders/inbox"
    session = sandbox.requests_session()
    headers = {"Authorization": "Bearer " + result["access_token"]}
    assert session.get(url, headers=headers).status_code == 200
    claims = claims_of(result["access_token"])
    assert claims["exp"] - claims["iat"] >= 1  # lives at least its expires_in
    time.sleep(max(0.0, claims["exp"] - time.time()) + 0.05)  # until past `exp`, no less
    response = session.get(url, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert response.json()["error"]["message"] == ("Lifetime validation failed, the token is "
                                                   "expired.")
    assert "WWW-Authenticate" in response.headers


def test_token_outage_answers_503_then_recovers(sandbox):
    # An open-ended outage (no race with a clock); a timed one ends on its own (next test).
    sandbox.set_faults(login={"token_outage": True, "retry_after": 2})
    with pytest.raises(msal.exceptions.MsalServiceError, match="503"):
        sandbox.msal_app().acquire_token_for_client(scopes=GRAPH_SCOPE)
    raw = sandbox.requests_session().post(token_url(sandbox), data={
        "client_id": CLIENT_ID, "grant_type": "client_credentials",
        "scope": GRAPH_SCOPE[0], "client_secret": "sandbox-secret-1"})
    assert raw.status_code == 503
    assert raw.json()["error"] == "temporarily_unavailable"
    assert raw.headers["Retry-After"] == "2"
    discovery = sandbox.requests_session().get(
        sandbox.urls["login_authority"] + "/v2.0/.well-known/openid-configuration")
    assert discovery.status_code == 200  # only the token endpoint is out
    sandbox.set_faults(login={"token_outage": False})
    assert "access_token" in sandbox.msal_app().acquire_token_for_client(scopes=GRAPH_SCOPE)
    assert sandbox.faults.to_dict()["injected"]["login"] == {"token_outage": 2}


def test_a_timed_token_outage_ends_on_its_own(sandbox):
    sandbox.set_faults(login={"token_outage": 1.0})
    assert sandbox.faults.to_dict()["services"]["login"]["token_outage"] > 0  # set just now
    time.sleep(1.05)  # at least the outage: a lower bound, never racing an upper one
    assert sandbox.faults.to_dict()["services"]["login"]["token_outage"] == 0
    assert "access_token" in sandbox.msal_app().acquire_token_for_client(scopes=GRAPH_SCOPE)
    assert sandbox.faults.to_dict()["injected"]["login"] == {}


def test_revoked_tokens_get_401_and_a_new_token_works(sandbox):
    app = sandbox.msal_app()
    first = app.acquire_token_for_client(scopes=GRAPH_SCOPE)["access_token"]
    session = sandbox.requests_session()
    url = sandbox.urls["graph_url"] + "/users/alice@corp.example/mailFolders/inbox"
    batch_url = sandbox.urls["graph_url"] + "/$batch"
    item = {"requests": [{"id": "1", "method": "GET",
                          "url": "/users/alice@corp.example/mailFolders/inbox"}]}

    def call(token):
        return session.get(url, headers={"Authorization": "Bearer " + token})
    assert call(first).status_code == 200
    assert sandbox.revoke_tokens("microsoft") == {"revoked": ["microsoft"]}
    refused = call(first)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert "WWW-Authenticate" in refused.headers
    assert session.post(batch_url, json=item,
                        headers={"Authorization": "Bearer " + first}).status_code == 401
    # msal still hands out its cached token; a client must drop it and fetch a new one.
    assert app.acquire_token_for_client(scopes=GRAPH_SCOPE)["access_token"] == first
    fresh = sandbox.msal_app().acquire_token_for_client(scopes=GRAPH_SCOPE)["access_token"]
    assert fresh != first and call(fresh).status_code == 200
    with pytest.raises(ValueError, match="service must be one of"):
        sandbox.revoke_tokens("graph")


def test_login_429_is_an_error_dict(sandbox):
    sandbox.set_faults(login={"rate_429": 1.0, "retry_after": 3})
    result = sandbox.msal_app().acquire_token_for_client(scopes=GRAPH_SCOPE)
    assert "access_token" not in result
    assert result["error"] == "temporarily_unavailable"
