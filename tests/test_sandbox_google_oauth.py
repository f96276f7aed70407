"""The sandbox's Google OAuth token endpoint, driven by google-auth's service-account credentials
(domain-wide delegation) exactly as the pack uses them, plus hand-made assertions for the cases
google-auth never produces (wrong audience, foreign signer)."""
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth.exceptions import RefreshError
from google.auth.transport.requests import Request
from google.oauth2 import service_account

pytest_plugins = ["sandbox.pytest_plugin"]

MODIFY = "https://www.googleapis.com/auth/gmail.modify"
MAIL = "https://mail.google.com/"
MEMBERS = "https://www.googleapis.com/auth/admin.directory.group.member.readonly"
UNAUTHORIZED_CLIENT = ("unauthorized_client: Client is unauthorized to retrieve access tokens "
                       "using this method, or client not authorized for any of the scopes "
                       "requested.")


def key_info(sandbox):
    return dict(sandbox.credentials()["google"][0]["service_account_info"])


def credentials(sandbox, subject, scopes=(MODIFY,), info=None):
    return service_account.Credentials.from_service_account_info(
        info or key_info(sandbox), scopes=list(scopes), subject=subject)


def post_assertion(sandbox, assertion, grant_type="urn:ietf:params:oauth:grant-type:jwt-bearer"):
    session = sandbox.requests_session()
    return session.post(sandbox.urls["google_token_uri"],
                        data={"grant_type": grant_type, "assertion": assertion})


def signed_assertion(sandbox, **overrides):
    info = key_info(sandbox)
    now = int(time.time())
    claims = {"iss": info["client_email"], "aud": "https://oauth2.googleapis.com/token",
              "scope": MODIFY, "sub": "carol@corp-mail.example", "iat": now, "exp": now + 3600}
    claims.update(overrides)
    return jwt.encode(claims, info["private_key"], algorithm="RS256",
                      headers={"kid": info["private_key_id"]})


def test_delegated_token_is_issued_and_bound_to_subject_and_scopes(sandbox):
    creds = credentials(sandbox, "carol@corp-mail.example", scopes=(MODIFY, MEMBERS))
    creds.refresh(Request())
    assert creds.token.startswith("ya29.")
    assert creds.valid
    grant, why = sandbox.state["google"].authenticate("Bearer " + creds.token)
    assert why == ""
    assert grant.subject == "carol@corp-mail.example"
    assert grant.scopes == frozenset({MODIFY, MEMBERS})
    assert grant.actor == "%s as carol@corp-mail.example" % key_info(sandbox)["client_email"]
    assert sandbox.counters.snapshot()["statuses"]["google.token"] == {"200": 1}


def test_expires_in_follows_the_token_lifetime_setting(sandbox):
    sandbox.set_faults(token_lifetime_s=120)
    response = post_assertion(sandbox, signed_assertion(sandbox))
    assert response.status_code == 200
    body = response.json()
    assert body["expires_in"] == 120 and body["token_type"] == "Bearer"
    assert set(body) == {"access_token", "expires_in", "token_type"}


def test_ungranted_scope_is_unauthorized_client(sandbox):
    creds = credentials(sandbox, "carol@corp-mail.example", scopes=(MAIL,))
    with pytest.raises(RefreshError) as caught:
        creds.refresh(Request())
    assert str(caught.value.args[0]) == UNAUTHORIZED_CLIENT
    assert caught.value.args[1]["error"] == "unauthorized_client"
    assert not caught.value.retryable


def test_granting_the_scope_later_makes_it_work(sandbox):
    email = key_info(sandbox)["client_email"]
    sandbox.set_google_scopes(email, [MODIFY, MAIL])
    creds = credentials(sandbox, "carol@corp-mail.example", scopes=(MAIL,))
    creds.refresh(Request())
    assert creds.valid


def test_revoked_delegation_is_unauthorized_client(sandbox):
    sandbox.set_google_scopes(key_info(sandbox)["client_email"], [])
    response = post_assertion(sandbox, signed_assertion(sandbox))
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized_client"


def test_group_subject_is_unauthorized_client(sandbox):
    creds = credentials(sandbox, "team@corp-mail.example")
    with pytest.raises(RefreshError) as caught:
        creds.refresh(Request())
    assert str(caught.value.args[0]) == UNAUTHORIZED_CLIENT


@pytest.mark.parametrize("subject", ["nobody@corp-mail.example", "alice@corp.example"])
def test_unknown_or_foreign_user_is_invalid_grant(sandbox, subject):
    creds = credentials(sandbox, subject)
    with pytest.raises(RefreshError) as caught:
        creds.refresh(Request())
    assert str(caught.value.args[0]) == "invalid_grant: Invalid email or User ID"
    assert caught.value.args[1] == {"error": "invalid_grant",
                                    "error_description": "Invalid email or User ID"}


def test_unlicensed_user_gets_a_token(sandbox):
    # the account exists; Gmail itself answers failedPrecondition (tested with Gmail)
    creds = credentials(sandbox, "gone@corp-mail.example")
    creds.refresh(Request())
    assert creds.valid


def test_signature_by_another_key_is_invalid_grant(sandbox):
    info = key_info(sandbox)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    info["private_key"] = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    creds = credentials(sandbox, "carol@corp-mail.example", info=info)
    with pytest.raises(RefreshError) as caught:
        creds.refresh(Request())
    assert str(caught.value.args[0]) == "invalid_grant: Invalid JWT Signature."


def test_wrong_audience_is_refused(sandbox):
    response = post_assertion(sandbox, signed_assertion(sandbox, aud=sandbox.urls[
        "google_token_uri"]))
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_grant",
                               "error_description": "Invalid JWT: Failed audience check."}


def test_expired_or_long_lived_assertions_are_refused(sandbox):
    now = int(time.time())
    expired = signed_assertion(sandbox, iat=now - 7200, exp=now - 3600)
    too_long = signed_assertion(sandbox, iat=now, exp=now + 7200)
    for assertion in (expired, too_long):
        response = post_assertion(sandbox, assertion)
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_grant"
        assert "short-lived token" in response.json()["error_description"]


def test_unknown_issuer_and_bad_grant_type(sandbox):
    response = post_assertion(sandbox, signed_assertion(sandbox, iss="other@x.iam.example"))
    assert response.status_code == 400
    assert response.json()["error_description"] == "Invalid grant: account not found"
    response = post_assertion(sandbox, signed_assertion(sandbox), grant_type="password")
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"
    response = post_assertion(sandbox, "not-a-jwt")
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def test_empty_scope_is_invalid_scope(sandbox):
    response = post_assertion(sandbox, signed_assertion(sandbox, scope=""))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


def test_tokens_die_with_their_tenant(sandbox):
    creds = credentials(sandbox, "carol@corp-mail.example")
    creds.refresh(Request())
    state = sandbox.state["google"]
    assert state.authenticate("Bearer " + creds.token)[0] is not None
    sandbox.load_scenario_file("basic.yaml")
    assert sandbox.state["google"].authenticate("Bearer " + creds.token) == (None, "invalid")


def test_token_outage_fault_answers_503_in_googles_format(sandbox):
    sandbox.set_faults(google_token={"token_outage": True})
    response = post_assertion(sandbox, signed_assertion(sandbox))
    assert response.status_code == 503
    assert response.json()["error"] == "internal_failure"
