"""The pack config becomes typed settings with the example's defaults; errors name the key and
secrets never show."""
import json
import os

import pytest

from retraction.config import (
    ConfigError,
    GoogleSettings,
    LimitsSettings,
    MicrosoftSettings,
    Settings,
    load_file,
    load_settings,
    mask_url,
)
from retraction.model import Destination, Disposition, Mode, Trigger

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(PACK_ROOT, "email_retraction.yaml.example")


class St2Config(dict):
    """Like StackStorm's pack config object: indexing a missing key raises."""

    def __getitem__(self, key):
        if key not in self:
            raise ValueError("missing config key %s" % key)
        return dict.__getitem__(self, key)


def test_example_file_loads_with_its_values():
    settings = load_file(EXAMPLE)
    assert settings.microsoft.domains == ("corp.example",)
    assert settings.google.domains == ("corp-mail.example",)
    assert settings.microsoft.tenant_id == "00000000-0000-0000-0000-000000000000"
    assert settings.google.batch_uri == "https://gmail.googleapis.com/batch/gmail/v1"
    assert settings.default_destination is Destination.JUNK
    assert settings.protected_mailboxes == ("phish-reports@corp.example", "journal@corp.example")
    assert settings.auto_retract.destination_for(Disposition.MALICIOUS) is Destination.TRASH
    assert settings.auto_retract.destination_for(Disposition.SPAM) is None
    assert settings.limits == LimitsSettings()
    assert settings.approval.threshold == 300
    assert (settings.approval.route, settings.approval.users, settings.approval.roles,
            settings.approval.ttl_minutes) == ("email_retraction", (), (), 1440)
    assert settings.verdicts.submission_dispositions == ("MALICIOUS",)
    assert settings.verdicts.per_page == 1000


def test_approval_routing_and_verdict_page_size():
    settings = load_settings(St2Config(
        approval=St2Config(route="#soc-approvals", users=["alice", "bob", "alice"],
                           roles=["soc_lead", "admin"], ttl_minutes=30),
        verdicts=St2Config(per_page=250)))
    assert settings.approval.route == "#soc-approvals"
    assert settings.approval.users == ("alice", "bob")  # repeats dropped, order kept
    assert settings.approval.roles == ("soc_lead", "admin")
    assert settings.approval.ttl_minutes == 30
    assert settings.approval.threshold == 300 and settings.approval.hard_delete is True
    assert settings.verdicts.per_page == 250
    assert load_settings({"verdicts": {"per_page": 1}}).verdicts.per_page == 1
    assert load_settings({"approval": {"route": None}}).approval.route == "email_retraction"


def test_defaults_match_the_example_for_structural_settings():
    example = load_file(EXAMPLE)
    empty = load_settings(St2Config())
    for name in ("limits", "auto_retract", "approval", "verdicts", "default_destination",
                 "allow_hard_delete", "expand_groups", "ledger_url"):
        assert getattr(empty, name) == getattr(example, name), name
    for name in ("authority_host", "graph_url"):
        assert getattr(empty.microsoft, name) == getattr(example.microsoft, name)
    for name in ("token_uri", "gmail_url", "batch_uri", "directory_url"):
        assert getattr(empty.google, name) == getattr(example.google, name)
    # site-specific values are not invented
    assert empty.microsoft.domains == () and empty.google.domains == ()
    assert empty.protected_mailboxes == () and empty.microsoft.tenant_id == ""


def test_st2_config_object_is_read_with_get_only():
    settings = load_settings(St2Config(microsoft={"domains": ["Corp.Example"]}))
    assert settings.microsoft.domains == ("corp.example",)


def test_settings_pass_through():
    settings = Settings()
    assert load_settings(settings) is settings
    assert load_settings(None) == Settings()


@pytest.mark.parametrize("config,key", [
    ({"limits": {"max_recipients": 0}}, "limits.max_recipients"),
    ({"limits": {"chunk_size": "many"}}, "limits.chunk_size"),
    ({"limits": {"provider_concurrency": 2.5}}, "limits.provider_concurrency"),
    ({"limits": {"max_attempts": True}}, "limits.max_attempts"),
    ({"limits": {"retry_budget_s": -1}}, "limits.retry_budget_s"),
    ({"limits": "fast"}, "limits"),
    ({"microsoft": {"domains": ["corp example"]}}, "microsoft.domains"),
    ({"microsoft": {"domains": "bad/domain"}}, "microsoft.domains"),
    ({"microsoft": {"graph_url": "ftp://graph"}}, "microsoft.graph_url"),
    ({"microsoft": {"certificate_thumbprint": "xyz"}}, "microsoft.certificate_thumbprint"),
    ({"microsoft": {"tenant_id": 7}}, "microsoft.tenant_id"),
    ({"google": {"domains": ["a.example"]}, "microsoft": {"domains": ["A.example"]}},
     "google.domains"),
    ({"google": {"directory_admin": "admin"}}, "google.directory_admin"),
    ({"google": {"token_uri": "not a url"}}, "google.token_uri"),
    ({"default_destination": "purgatory"}, "default_destination"),
    ({"default_destination": "hard_delete"}, "default_destination"),
    ({"allow_hard_delete": "sure"}, "allow_hard_delete"),
    ({"protected_mailboxes": ["journal"]}, "protected_mailboxes"),
    ({"auto_retract": {"mode": "yolo"}}, "auto_retract.mode"),
    ({"auto_retract": {"dispositions": {"EVIL": "junk"}}}, "auto_retract.dispositions.EVIL"),
    ({"auto_retract": {"dispositions": {"MALICIOUS": "void"}}},
     "auto_retract.dispositions.MALICIOUS"),
    ({"auto_retract": {"dispositions": {"MALICIOUS": "hard_delete"}}},
     "auto_retract.dispositions.MALICIOUS"),
    ({"auto_retract": {"dispositions": ["MALICIOUS"]}}, "auto_retract.dispositions"),
    ({"approval": {"threshold": -1}}, "approval.threshold"),
    ({"approval": {"route": "two words"}}, "approval.route"),
    ({"approval": {"route": 7}}, "approval.route"),
    ({"approval": {"route": ""}}, "approval.route"),  # the schema's pattern, as StackStorm
    ({"approval": {"users": ["alice", "b ob"]}}, "approval.users"),
    ({"approval": {"users": [1]}}, "approval.users"),
    ({"approval": {"roles": {"admin": True}}}, "approval.roles"),
    ({"approval": {"ttl_minutes": 0}}, "approval.ttl_minutes"),
    ({"approval": {"ttl_minutes": "a day"}}, "approval.ttl_minutes"),
    ({"verdicts": {"per_page": 0}}, "verdicts.per_page"),
    ({"verdicts": {"per_page": 1001}}, "verdicts.per_page"),
    ({"verdicts": {"per_page": 2.5}}, "verdicts.per_page"),
    ({"verdicts": {"dispositions": ["bad word!"]}}, "verdicts.dispositions"),
    ({"verdicts": {"lookback_hours": "a day"}}, "verdicts.lookback_hours"),
    ({"ledger_url": 5}, "ledger_url"),
    # issue 13, finding 6: what the schema says is a list, a number or a boolean must be one
    ({"microsoft": {"domains": "corp.example"}}, "microsoft.domains"),
    ({"protected_mailboxes": "journal@corp.example"}, "protected_mailboxes"),
    ({"approval": {"roles": "soc_lead, admin"}}, "approval.roles"),
    ({"approval": {"ttl_minutes": "30"}}, "approval.ttl_minutes"),
    ({"limits": {"max_recipients": "10"}}, "limits.max_recipients"),
    ({"expand_groups": "false"}, "expand_groups"),
    ({"google": {"batch_size": 101}}, "google.batch_size"),
    ({"auto_retract": {"mode": "Preview"}}, "auto_retract.mode"),
    ({"auto_retract": {"dispositions": {"MALICIOUS": "Junk"}}},
     "auto_retract.dispositions.MALICIOUS"),
    # ... and unknown keys are refused, at every level (StackStorm lets a top-level one by)
    ({"microsoft": {"clientid": "x"}}, "microsoft.clientid"),
    ({"defualt_destination": "trash"}, "defualt_destination"),
    ({"auto_retract": {"dispositions": {"malicious": "junk"}}},
     "auto_retract.dispositions.malicious"),
    ({"limits": {"chunk_size": 10, "chunksize": 5}}, "limits.chunksize"),
])
def test_config_errors_name_the_key(config, key):
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert caught.value.key == key
    assert str(caught.value).startswith("config %s: " % key)


def test_hard_delete_in_auto_policy_needs_allow_hard_delete():
    settings = load_settings({"allow_hard_delete": True,
                              "auto_retract": {"dispositions": {"MALICIOUS": "hard_delete"}}})
    assert settings.auto_retract.destination_for(Disposition.MALICIOUS) is \
        Destination.HARD_DELETE


def test_explicit_disposition_map_is_taken_as_is():
    mapping = {"MALICIOUS": "junk", "SPOOF": "none"}
    settings = load_settings({"auto_retract": {"dispositions": mapping}})
    auto = settings.auto_retract
    assert auto.destination_for(Disposition.MALICIOUS) is Destination.JUNK
    assert auto.destination_for(Disposition.SPOOF) is None
    assert auto.destination_for(Disposition.SUSPICIOUS) is None  # not named: no action
    assert auto.destination_for(Disposition.NONE) is None
    assert auto.destination_for("MALICIOUS") is Destination.JUNK


def test_auto_retract_switches():
    auto = load_settings({"auto_retract": {"post_delivery_response": False,
                                           "mode": "preview"}}).auto_retract
    assert auto.enabled_for(Trigger.DISPOSITION)
    assert not auto.enabled_for(Trigger.POST_DELIVERY)
    assert auto.enabled_for(Trigger.PHISH_SUBMISSION)
    assert not auto.enabled_for(Trigger.ANALYST)
    assert auto.forces_preview(Mode.AUTO) and not auto.forces_preview(Mode.MANUAL)


def test_values_are_normalised():
    settings = load_settings({
        "microsoft": {"graph_url": "https://graph.example/v1.0/",
                      "domains": ["A.example", "b.example"],
                      "certificate_thumbprint": "ab:" * 19 + "ab"},
        "limits": {"max_recipients": 10, "retry_budget_s": 2.5},
        "expand_groups": False,
        "ledger_url": "",
    })
    assert settings.microsoft.graph_url == "https://graph.example/v1.0"
    assert settings.microsoft.domains == ("a.example", "b.example")
    assert settings.microsoft.certificate_thumbprint == "AB" * 20
    assert settings.limits.max_recipients == 10 and settings.limits.retry_budget_s == 2.5
    assert settings.expand_groups is False
    assert settings.ledger_url is None


SECRETS = {
    "microsoft": {"client_secret": "s3cr3t-graph", "certificate_private_key": "PEM-s3cr3t"},
    "google": {"service_account_json": '{"private_key": "pk-s3cr3t"}'},
    "cloudflare": {"api_token": "cf-s3cr3t"},
    "ledger_url": "postgresql://retraction:db-s3cr3t@db.example/ledger",
}


def test_secrets_never_in_repr_or_str():
    settings = load_settings(SECRETS)
    for text in (repr(settings), str(settings), repr(settings.microsoft),
                 str(settings.google), repr(settings.cloudflare)):
        assert "s3cr3t" not in text
    assert settings.microsoft.client_secret == "s3cr3t-graph"  # still usable
    assert settings.ledger_url_display == "postgresql://retraction:***@db.example/ledger"


def test_secret_type_errors_do_not_show_the_value():
    with pytest.raises(ConfigError) as caught:
        load_settings({"microsoft": {"client_secret": ["s3cr3t"]}})
    assert caught.value.key == "microsoft.client_secret"
    assert "s3cr3t" not in str(caught.value)


def test_mask_url():
    assert mask_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    assert mask_url("postgresql://u:p@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert mask_url("postgresql://u@h/d") == "postgresql://u@h/d"


def test_microsoft_credentials():
    MicrosoftSettings(tenant_id="t", client_id="c", client_secret="s").require_credentials()
    MicrosoftSettings(tenant_id="t", client_id="c", certificate_private_key="k",
                      certificate_thumbprint="A" * 40).require_credentials()
    cases = [
        (MicrosoftSettings(client_id="c", client_secret="s"), "microsoft.tenant_id"),
        (MicrosoftSettings(tenant_id="t", client_secret="s"), "microsoft.client_id"),
        (MicrosoftSettings(tenant_id="t", client_id="c"), "microsoft.client_secret"),
        (MicrosoftSettings(tenant_id="t", client_id="c",
                           client_secret="{{ st2kv.system.graph_client_secret }}"),
         "microsoft.client_secret"),
        (MicrosoftSettings(tenant_id="t", client_id="c", certificate_private_key="k"),
         "microsoft.certificate_thumbprint"),
    ]
    for settings, key in cases:
        with pytest.raises(ConfigError) as caught:
            settings.require_credentials()
        assert caught.value.key == key


def test_google_service_account_info():
    key = {"client_email": "sa@p.iam.example", "private_key": "pk-s3cr3t",
           "private_key_id": "kid", "token_uri": "https://oauth2.example/token"}
    assert GoogleSettings(service_account_json=json.dumps(key)).service_account_info() == key
    # a YAML mapping is accepted too
    settings = load_settings({"google": {"service_account_json": key}})
    assert settings.google.service_account_info() == key
    for text in ("", "{not json s3cr3t", "[1]", '{"private_key": "pk-s3cr3t"}',
                 "{{ st2kv.system.gmail_service_account }}"):
        with pytest.raises(ConfigError) as caught:
            GoogleSettings(service_account_json=text).service_account_info()
        assert caught.value.key == "google.service_account_json"
        assert "s3cr3t" not in str(caught.value)


def test_cloudflare_credentials():
    settings = load_settings({"cloudflare": {"account_id": "a", "api_token": "t"}})
    settings.cloudflare.require_credentials()
    with pytest.raises(ConfigError) as caught:
        load_file(EXAMPLE).cloudflare.require_credentials()
    assert caught.value.key == "cloudflare.api_token"


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_file(str(tmp_path / "absent.yaml"))
    assert caught.value.key == "(file)"
    bad = tmp_path / "bad.yaml"
    bad.write_text("limits: [unclosed\n")
    with pytest.raises(ConfigError):
        load_file(str(bad))
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError) as caught:
        load_file(str(listy))
    assert caught.value.key == "(root)"


# -- issue 13, finding 6: the config is checked against config.schema.yaml --------------------

def test_every_schema_problem_is_reported_at_once_naming_its_key_path():
    with pytest.raises(ConfigError) as caught:
        load_settings({"microsoft": {"clientid": "x", "domains": "corp.example"},
                       "defualt_destination": "trash",
                       "protected_mailboxes": "journal@corp.example",
                       "limits": {"chunk_size": 0}})
    assert dict(caught.value.problems) == {
        "defualt_destination": "unknown key (did you mean default_destination?)",
        "limits.chunk_size": "must be at least 1",
        "microsoft.clientid": "unknown key (did you mean client_id?)",
        "microsoft.domains": "must be a list",
        "protected_mailboxes": "must be a list",
    }
    text = str(caught.value)
    assert text.startswith("config defualt_destination: unknown key")
    assert "microsoft.clientid: unknown key" in text
    assert "microsoft.domains: must be a list" in text
    assert "protected_mailboxes: must be a list" in text


def test_schema_errors_never_show_a_secret():
    for config in ({"microsoft": {"client_secret": ["s3cr3t"]}},
                   {"microsoft": {"clientsecret": "s3cr3t"}},
                   {"cloudflare": {"api_token": {"token": "s3cr3t"}}},
                   {"ledger_url": ["postgresql://u:s3cr3t@h/d"]},
                   {"google": {"service_account_json": ["s3cr3t"]}}):
        with pytest.raises(ConfigError) as caught:
            load_settings(config)
        assert "s3cr3t" not in str(caught.value), config
        assert "s3cr3t" not in repr(caught.value.problems), config


def test_a_null_value_is_not_set_and_the_example_passes_the_schema():
    # StackStorm's config loader gives None for a datastore value that renders empty.
    settings = load_settings({"microsoft": {"client_secret": None, "domains": None},
                              "limits": {"chunk_size": None}})
    assert settings.microsoft.client_secret == "" and settings.microsoft.domains == ()
    assert settings.limits.chunk_size == LimitsSettings().chunk_size
    assert load_file(EXAMPLE).google.batch_size == 50


def test_google_batch_size_is_read():
    # config.schema.yaml had it, the loader dropped it: Gmail batches were always 50 parts.
    assert load_settings({"google": {"batch_size": 20}}).google.batch_size == 20


# -- credentials: a configuration error before any copy is touched ----------------------------

class _Untouched:
    """A provider given ready-made: the run must never reach it."""

    def __init__(self):
        self.calls = 0

    def retract(self, request, targets):
        self.calls += 1
        return iter(())

    def close(self):
        pass


def _run(config, providers=None):
    from retraction.bootstrap import build
    from retraction.validation import build_request

    app = build(config, providers=providers, ledger=None)
    params = {"message_id": "<abc@evil.example>",
              "recipients": ["alice@corp.example", "bob@corp-mail.example"]}
    request = build_request(params, app.settings)
    try:
        return list(app.engine().run(request))
    finally:
        app.close()


@pytest.mark.parametrize("google,key", [
    ({"service_account_json": "{not json s3cr3t"}, "google.service_account_json"),
    ({"service_account_json": json.dumps({"client_email": "sa@p.example",
                                          "private_key": "-----s3cr3t-----",
                                          "private_key_id": "k"})},
     "google.service_account_json"),
    ({}, "google.service_account_json"),
])
def test_unusable_google_credentials_are_a_config_error_not_outcomes(google, key):
    microsoft = _Untouched()
    config = {"microsoft": {"domains": ["corp.example"]},
              "google": dict(google, domains=["corp-mail.example"])}
    with pytest.raises(ConfigError) as caught:
        _run(config, providers={"microsoft": microsoft})
    assert caught.value.key == key
    assert "s3cr3t" not in str(caught.value)
    assert microsoft.calls == 0


def test_a_missing_tenant_id_is_a_config_error_not_outcomes():
    google = _Untouched()
    config = {"microsoft": {"client_id": "c", "client_secret": "s3cr3t",
                            "domains": ["corp.example"]},
              "google": {"domains": ["corp-mail.example"]}}
    with pytest.raises(ConfigError) as caught:
        _run(config, providers={"google": google})
    assert caught.value.key == "microsoft.tenant_id"
    assert "s3cr3t" not in str(caught.value)
    assert google.calls == 0
    # A provider no recipient goes to is not asked about.
    outcomes = _run(dict(config, microsoft={"domains": ["other.example"]}),
                    providers={"google": google})
    assert [o.recipient for o in outcomes if o.provider == "google"] == ["bob@corp-mail.example"]
