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
                           roles="soc_lead, admin", ttl_minutes="30"),
        verdicts=St2Config(per_page=250)))
    assert settings.approval.route == "#soc-approvals"
    assert settings.approval.users == ("alice", "bob")  # repeats dropped, order kept
    assert settings.approval.roles == ("soc_lead", "admin")  # a comma list, as elsewhere
    assert settings.approval.ttl_minutes == 30
    assert settings.approval.threshold == 300 and settings.approval.hard_delete is True
    assert settings.verdicts.per_page == 250
    assert load_settings({"verdicts": {"per_page": 1}}).verdicts.per_page == 1
    assert load_settings({"approval": {"route": ""}}).approval.route == "email_retraction"


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
    mapping = {"malicious": "Junk", "SPOOF": "none"}
    settings = load_settings({"auto_retract": {"dispositions": mapping}})
    auto = settings.auto_retract
    assert auto.destination_for(Disposition.MALICIOUS) is Destination.JUNK
    assert auto.destination_for(Disposition.SPOOF) is None
    assert auto.destination_for(Disposition.SUSPICIOUS) is None  # not named: no action
    assert auto.destination_for(Disposition.NONE) is None
    assert auto.destination_for("MALICIOUS") is Destination.JUNK


def test_auto_retract_switches():
    auto = load_settings({"auto_retract": {"post_delivery_response": False,
                                           "mode": "Preview"}}).auto_retract
    assert auto.enabled_for(Trigger.DISPOSITION)
    assert not auto.enabled_for(Trigger.POST_DELIVERY)
    assert auto.enabled_for(Trigger.PHISH_SUBMISSION)
    assert not auto.enabled_for(Trigger.ANALYST)
    assert auto.forces_preview(Mode.AUTO) and not auto.forces_preview(Mode.MANUAL)


def test_values_are_normalised():
    settings = load_settings({
        "microsoft": {"graph_url": "https://graph.example/v1.0/", "domains": "A.example, b.example",
                      "certificate_thumbprint": "ab:" * 19 + "ab"},
        "limits": {"max_recipients": "10", "retry_budget_s": "2.5"},
        "expand_groups": "false",
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
