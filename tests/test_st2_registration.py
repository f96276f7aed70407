"""The pack as StackStorm registers and checks it, by StackStorm's own code only.

One StackStorm (tools/st2engine: mongomock database) registers its `core` pack and this pack
with every registrar `st2ctl reload --register-all --register-fail-on-failure` runs, with
email_retraction.yaml.example as the pack config (as if copied to
/opt/stackstorm/configs/). Every test then asks StackStorm's database, validators or tools:

- every metadata file of the pack is registered under its ref, as its file says (the
  expected sets are read from the pack's directories, so a new file is covered by itself);
- pack.yaml passes StackStorm's PackAPI, and a pack.yaml without `email` (or otherwise
  broken) is refused by every registrar;
- the example config validates against config.schema.yaml by StackStorm's code (the configs
  registrar, and `st2-validate-pack-config`, which Exchange CI runs), a broken config is
  refused by the same code, and the example's datastore secrets resolve through StackStorm's
  config loader;
- each trigger type accepts a payload as its sensor sends it and refuses one missing a
  required field (StackStorm's `validate_trigger_payload`, which decides whether a sensor's
  dispatch is dropped); a `required: [..]` list is a SchemaError there;
- each Orquesta workflow inspects clean with the code behind `st2 workflow inspect`
  (registration does not look inside workflows);
- `st2-validate-pack` accepts the pack's metadata files.
"""
import copy
import glob
import os
import subprocess
import sys

import pytest
import yaml

from conftest import PACK_REF, PACK_ROOT
from tools.st2engine import Stack
from tools.st2engine.stack import ST2_SHARED

CORE_ROOT = os.path.join(ST2_SHARED, "contrib", "core")
EXAMPLE_PATH = os.path.join(PACK_ROOT, "%s.yaml.example" % PACK_REF)
SCHEMA_PATH = os.path.join(PACK_ROOT, "config.schema.yaml")
# What `st2ctl reload --register-all` registers, in its order; "configs" also registers the
# pack (pack.yaml) and its config schema.
REGISTRARS = ("triggers", "sensors", "actions", "rules", "aliases", "policies", "configs")


def _files(kind, root=PACK_ROOT):
    return sorted(glob.glob(os.path.join(root, kind, "*.yaml")))


def _meta(path):
    from st2common.content.loader import MetaLoader
    return MetaLoader().load(path)


def _ref(name):
    return "%s.%s" % (PACK_REF, name)


def _example():
    with open(EXAMPLE_PATH, "r", encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _schema():
    with open(SCHEMA_PATH, "r", encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = Stack.boot(_example(), str(tmp_path_factory.mktemp("st2")))
    try:
        yield stack
    finally:
        stack.shutdown()


# --- registration: everything the pack ships is in StackStorm's database ---------------------

def _count(registered):
    # Most registrars return (registered, overridden); policies and configs a number.
    return registered[0] if isinstance(registered, tuple) else registered


def test_every_registrar_registered_every_file(stack):
    trigger_types = sum(len(_meta(p).get("trigger_types", [])) for p in _files("sensors"))
    expected = {
        "triggers": len(_files("triggers")),
        "sensors": len(_files("sensors")),
        "actions": len(_files("actions")),
        "rules": len(_files("rules")),
        "aliases": len(_files("aliases")),
        "policies": len(_files("policies")),
        "configs": 1,  # /opt/stackstorm/configs/email_retraction.yaml: the example
    }
    got = {name: _count(stack.registered[(PACK_REF, name)]) for name in REGISTRARS}
    assert got == expected
    assert trigger_types >= 1 and expected["actions"] >= 1 and expected["rules"] >= 1
    # StackStorm's core pack too: the workflows use core.ask and core.noop.
    assert _count(stack.registered[("core", "actions")]) == len(_files("actions", CORE_ROOT))


def test_every_action_is_registered_as_its_file_says(stack):
    from st2common.persistence.action import Action
    files = {_ref(_meta(p)["name"]): (p, _meta(p)) for p in _files("actions")}
    assert sorted(a.ref for a in Action.query(pack=PACK_REF)) == sorted(files)
    for ref, (path, meta) in files.items():
        action = Action.get_by_ref(ref)
        assert action.metadata_file == os.path.relpath(path, PACK_ROOT)
        assert action.runner_type["name"] == meta["runner_type"], ref
        assert action.entry_point == meta["entry_point"], ref
        assert action.enabled is True, ref
        assert sorted(action.parameters) == sorted(meta.get("parameters") or {}), ref


def test_every_workflow_file_is_the_entry_point_of_an_orquesta_action(stack):
    from st2common.content.utils import get_entry_point_abs_path
    from st2common.persistence.action import Action
    used = set()
    for action in Action.query(pack=PACK_REF, runner_type__name="orquesta"):
        path = get_entry_point_abs_path(pack=PACK_REF, entry_point=action.entry_point)
        assert os.path.isfile(path), (action.ref, path)
        used.add(os.path.realpath(path))
    shipped = set(os.path.realpath(p) for p in _files(os.path.join("actions", "workflows")))
    assert shipped and used == shipped


def test_every_python_action_loads_as_the_python_runner_loads_it(stack):
    """The python runner's wrapper runs the first Action class StackStorm's loader finds in
    the entry point (registration does not look); one per file, so it is the right one."""
    from st2common.content.utils import get_entry_point_abs_path
    from st2common.persistence.action import Action
    from st2common.runners.base_action import Action as ActionBase
    from st2common.util import loader
    actions = list(Action.query(pack=PACK_REF, runner_type__name="python-script"))
    assert actions
    for action in actions:
        path = get_entry_point_abs_path(pack=PACK_REF, entry_point=action.entry_point)
        classes = loader.register_plugin(ActionBase, path)
        assert classes and len(classes) == 1, (action.ref, classes)


def test_every_sensor_class_loads_as_the_sensor_container_loads_it(stack):
    from st2common.persistence.sensor import SensorType
    from st2common.util import loader
    from st2reactor.sensor.base import PollingSensor, Sensor
    sensors = list(SensorType.query(pack=PACK_REF))
    assert sensors
    for sensor in sensors:
        # The file and class the container gives the sensor wrapper
        # (st2reactor.container.manager: _to_sensor_object), loaded as the wrapper loads it.
        path = sensor.artifact_uri.replace("file://", "")
        class_name = sensor.entry_point.split(".")[-1]
        cls = loader.register_plugin_class(base_class=Sensor, file_path=path,
                                           class_name=class_name)
        assert cls.__name__ == class_name == sensor.name
        assert issubclass(cls, PollingSensor) == bool(sensor.poll_interval), sensor.ref


def test_every_rule_is_registered_enabled_on_its_trigger(stack):
    from st2common.persistence.action import Action
    from st2common.persistence.rule import Rule
    from st2common.persistence.trigger import Trigger
    files = {_ref(_meta(p)["name"]): _meta(p) for p in _files("rules")}
    assert sorted(r.ref for r in Rule.query(pack=PACK_REF)) == sorted(files)
    for ref, meta in files.items():
        rule = Rule.get_by_ref(ref)
        # StackStorm's default is disabled: each rule must say enabled: true.
        assert rule.enabled is True, ref
        trigger = Trigger.get_by_ref(rule.trigger)
        assert trigger.type == meta["trigger"]["type"], ref
        assert trigger.parameters == (meta["trigger"].get("parameters") or {}), ref
        assert rule.criteria == (meta.get("criteria") or {}), ref
        assert rule.action.ref == meta["action"]["ref"], ref
        assert rule.action.parameters == (meta["action"].get("parameters") or {}), ref
        # The registrar does not check that the action exists; StackStorm runs nothing then.
        assert Action.get_by_ref(rule.action.ref) is not None, ref


def test_every_alias_is_registered_for_a_registered_action(stack):
    from st2common.persistence.action import Action, ActionAlias
    files = {_ref(_meta(p)["name"]): _meta(p) for p in _files("aliases")}
    assert sorted(a.ref for a in ActionAlias.query(pack=PACK_REF)) == sorted(files)
    for ref, meta in files.items():
        alias = ActionAlias.get_by_ref(ref)
        assert alias.enabled is True, ref
        assert alias.action_ref == meta["action_ref"], ref
        assert Action.get_by_ref(alias.action_ref) is not None, ref
        assert alias.formats == meta["formats"], ref


def test_every_sensor_and_trigger_type_is_registered_with_its_payload_schema(stack):
    from st2common.persistence.sensor import SensorType
    from st2common.persistence.trigger import TriggerType
    sensors, trigger_types = {}, {}
    for path in _files("sensors"):
        meta = _meta(path)
        sensors[_ref(meta["class_name"])] = meta
        for trigger_type in meta.get("trigger_types", []):
            trigger_types[_ref(trigger_type["name"])] = trigger_type
    assert sorted(s.ref for s in SensorType.query(pack=PACK_REF)) == sorted(sensors)
    assert sorted(t.ref for t in TriggerType.query(pack=PACK_REF)) == sorted(trigger_types)
    for ref, meta in sensors.items():
        sensor = SensorType.get_by_ref(ref)
        assert sensor.enabled is True, ref
        assert sensor.poll_interval == meta["poll_interval"], ref
        assert sensor.trigger_types == [_ref(t["name"]) for t in meta["trigger_types"]], ref
    for ref, meta in trigger_types.items():
        assert TriggerType.get_by_ref(ref).payload_schema == meta["payload_schema"], ref


def test_every_policy_is_registered_on_a_registered_action(stack):
    from st2common.persistence.action import Action
    from st2common.persistence.policy import Policy
    files = {_ref(_meta(p)["name"]): _meta(p) for p in _files("policies")}
    assert sorted(p.ref for p in Policy.query(pack=PACK_REF)) == sorted(files)
    for ref, meta in files.items():
        policy = Policy.get_by_ref(ref)
        assert policy.enabled is True, ref
        assert policy.resource_ref == meta["resource_ref"], ref
        assert Action.get_by_ref(policy.resource_ref) is not None, ref
        assert policy.policy_type == meta["policy_type"], ref
        assert policy.parameters == meta["parameters"], ref


def test_the_pack_its_config_schema_and_config_are_registered(stack):
    from st2common.persistence.pack import Config, ConfigSchema, Pack
    pack_yaml = _meta(os.path.join(PACK_ROOT, "pack.yaml"))
    pack = Pack.get_by_ref(PACK_REF)
    assert (pack.name, pack.version, pack.email, pack.author) == (
        pack_yaml["name"], pack_yaml["version"], pack_yaml["email"], pack_yaml["author"])
    assert ConfigSchema.get_by_pack(PACK_REF).attributes == _schema()
    assert Config.get_by_pack(PACK_REF).values == _example()


# --- pack.yaml: StackStorm's PackAPI ----------------------------------------------------------

def test_pack_yaml_passes_packapi():
    from st2common.models.api.pack import PackAPI
    from st2common.util.pack import get_pack_metadata, get_pack_ref_from_metadata
    content = get_pack_metadata(pack_dir=PACK_ROOT)
    content["ref"] = get_pack_ref_from_metadata(metadata=content, pack_directory_name=PACK_REF)
    api = PackAPI(**content)
    api.validate()
    model = PackAPI.to_model(api)
    assert (model.ref, model.email) == (PACK_REF, content["email"])


BROKEN_PACK_YAML = [
    # PackAPI's schema does not require `email`, but PackAPI.to_model reads pack.email: the
    # pack (and so every resource of it) is not registered. pack.yaml lacked it until 0.1.1.
    ("no_email", lambda m: m.pop("email"), "'PackAPI' object has no attribute 'email'"),
    ("version_not_semver", lambda m: m.update(version="0.1"), "doesn't follow a valid semver"),
    ("no_author", lambda m: m.pop("author"), "'author' is a required property"),
    ("dashed_ref", lambda m: m.update(ref="email-retraction"), "dashes are not allowed"),
]


@pytest.mark.parametrize("change,expected", [b[1:] for b in BROKEN_PACK_YAML],
                         ids=[b[0] for b in BROKEN_PACK_YAML])
def test_a_broken_pack_yaml_is_refused_by_every_registrar(stack, tmp_path, change, expected):
    from st2common.bootstrap import (actionsregistrar, aliasesregistrar, configsregistrar,
                                     policiesregistrar, rulesregistrar, sensorsregistrar,
                                     triggersregistrar)
    pack_yaml = _meta(os.path.join(PACK_ROOT, "pack.yaml"))
    change(pack_yaml)
    pack_dir = tmp_path / PACK_REF
    pack_dir.mkdir()
    (pack_dir / "pack.yaml").write_text(yaml.safe_dump(pack_yaml))
    for registrar in (triggersregistrar.TriggersRegistrar, sensorsregistrar.SensorsRegistrar,
                      actionsregistrar.ActionsRegistrar, rulesregistrar.RulesRegistrar,
                      aliasesregistrar.AliasesRegistrar, policiesregistrar.PolicyRegistrar,
                      configsregistrar.ConfigsRegistrar):
        with pytest.raises(ValueError) as refused:
            registrar(use_pack_cache=False, fail_on_failure=True).register_from_pack(
                str(pack_dir))
        assert 'Failed to register pack "%s"' % PACK_REF in str(refused.value), registrar
        assert expected in str(refused.value), (registrar, str(refused.value))
    # The pack registered at boot is untouched.
    from st2common.persistence.pack import Pack
    assert Pack.get_by_ref(PACK_REF).path == os.path.join(stack.packs_dir, PACK_REF)


# --- the pack config: StackStorm's config validation ------------------------------------------

def _validate_config_command(config_path):
    """`st2-validate-pack-config`, the command Exchange CI runs on the example config
    (st2-check-validate-pack-example-config): the st2common script, run as its bin does."""
    return subprocess.run(
        [sys.executable, "-c",
         "import sys; from st2common.cmd.validate_config import main; sys.exit(main())",
         "--schema-path", SCHEMA_PATH, "--config-path", str(config_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
        timeout=120, check=False)


def test_the_example_config_passes_exchange_ci_validation():
    done = _validate_config_command(EXAMPLE_PATH)
    assert done.returncode == 0, done.stdout
    assert "successfully validated" in done.stdout


def test_a_broken_config_fails_exchange_ci_validation(tmp_path):
    broken = _example()
    broken["limits"]["chunk_size"] = "500"
    path = tmp_path / "email_retraction.yaml"
    path.write_text(yaml.safe_dump(broken))
    done = _validate_config_command(path)
    assert done.returncode == 1, done.stdout
    assert "'500' is not of type 'integer'" in done.stdout


def test_the_example_validates_with_the_schema_defaults_applied():
    from st2common.util.pack import validate_config_against_schema
    cleaned = validate_config_against_schema(
        config_schema=_schema(), config_object=_example(), config_path=EXAMPLE_PATH,
        pack_name=PACK_REF)
    # Sections the example gives keep its values; defaults fill only what it leaves out.
    assert cleaned["limits"] == _example()["limits"]
    assert cleaned["microsoft"]["domains"] == ["corp.example"]


BROKEN_CONFIGS = [
    ("wrong_type", ("limits", "chunk_size"), "500", "'500' is not of type 'integer'"),
    ("boolean_as_text", ("allow_hard_delete",), "yes", "'yes' is not of type 'boolean'"),
    ("unknown_enum", ("default_destination",), "hard_delete",
     "'hard_delete' is not one of ['inbox', 'junk', 'trash', 'soft_delete']"),
    ("unknown_nested_enum", ("auto_retract", "dispositions", "MALICIOUS"), "delete",
     "'delete' is not one of"),
    ("clean_verdict_moves", ("auto_retract", "dispositions", "NONE"), "junk",
     "'junk' is not one of ['none']"),
    ("misspelt_key", ("microsoft", "tenantid"), "x",
     "Additional properties are not allowed ('tenantid' was unexpected)"),
    ("over_maximum", ("google", "batch_size"), 101, "101 is greater than the maximum of 100"),
    ("under_minimum", ("limits", "max_attempts"), 0, "0 is less than the minimum of 1"),
    ("pattern", ("approval", "route"), "two words", "does not match"),
    ("item_pattern", ("verdicts", "dispositions"), ["malicious"], "does not match"),
    ("section_not_object", ("microsoft",), "x", "'x' is not of type 'object'"),
    # StackStorm decrypts `secret: true` values itself; it refuses decrypt_kv on top-level
    # secrets (nested ones: see test_a_nested_decrypt_kv_... below).
    ("decrypt_kv_on_secret", ("ledger_url",), "{{ st2kv.system.ledger_url | decrypt_kv }}",
     'Use of "decrypt_kv" jinja filter is not allowed'),
]


def _set(config, path, value):
    config = copy.deepcopy(config)
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return config


@pytest.mark.parametrize("path,value,expected", [b[1:] for b in BROKEN_CONFIGS],
                         ids=[b[0] for b in BROKEN_CONFIGS])
def test_a_broken_config_is_refused(stack, path, value, expected):
    from st2common.persistence.pack import Config
    from st2common.util.pack import validate_config_against_schema
    broken = _set(_example(), path, value)
    # What st2-validate-pack-config and the configs registrar call.
    with pytest.raises(Exception) as refused:
        validate_config_against_schema(config_schema=_schema(), config_object=broken,
                                       config_path="x", pack_name=PACK_REF)
    assert expected in str(refused.value)
    # `st2ctl reload --register-configs` with it: refused, the registered config unchanged.
    try:
        with pytest.raises(Exception) as refused:
            stack.reconfigure(broken)
        assert expected in str(refused.value)
        assert Config.get_by_pack(PACK_REF).values == _example()
    finally:
        stack.write_config(_example())


def test_stackstorm_accepts_unknown_top_level_settings():
    """Why tools/lint/check_config_example.py also compares the example's settings with the
    schema's: StackStorm lets a misspelt top-level setting through (and uses its default)."""
    from st2common.util.pack import validate_config_against_schema
    config = dict(_example(), alow_hard_delete=True)
    cleaned = validate_config_against_schema(config_schema=_schema(), config_object=config,
                                             config_path="x", pack_name=PACK_REF)
    assert cleaned["alow_hard_delete"] is True
    assert sorted(_example()) == sorted(_schema())


SECRETS = {"graph_client_secret": "graph-s3cret", "gmail_service_account": '{"type": "sa"}',
           "cloudflare_api_token": "cf-t0ken"}


@pytest.fixture(scope="module")
def secrets(stack):
    """The example's datastore secrets, stored as `st2 key set <name> <value> --encrypt` does.
    The key: st2tests points StackStorm at <venv>/lib/python3.x/st2tests/conf, which only
    `make venv` fills (../shared/st2/README.md); else the wheelhouse's copy of that key."""
    from oslo_config import cfg
    from st2common.models.api.keyvalue import KeyValuePairAPI
    from st2common.persistence.keyvalue import KeyValuePair
    configured = cfg.CONF.keyvalue.encryption_key_path
    if not os.path.isfile(configured):
        cfg.CONF.set_override("encryption_key_path", os.path.join(
            ST2_SHARED, "st2tests-conf", "st2_kvstore_tests.crypto.key.json"), group="keyvalue")
    try:
        for name, value in SECRETS.items():
            KeyValuePair.add_or_update(KeyValuePairAPI.to_model(
                KeyValuePairAPI(name=name, value=value, secret=True, scope="st2kv.system")))
        yield SECRETS
    finally:
        cfg.CONF.set_override("encryption_key_path", configured, group="keyvalue")


def test_the_example_secrets_resolve_from_the_datastore(stack, secrets):
    from st2common.util.config_loader import ContentPackConfigLoader
    # What the action runner gives a python action as self.config (st2actions.container.base).
    config = ContentPackConfigLoader(pack_name=PACK_REF).get_config()
    assert config["microsoft"]["client_secret"] == secrets["graph_client_secret"]
    assert config["google"]["service_account_json"] == secrets["gmail_service_account"]
    assert config["cloudflare"]["api_token"] == secrets["cloudflare_api_token"]


def test_a_nested_decrypt_kv_registers_but_fails_every_load(stack, secrets):
    """The known failure: `| decrypt_kv` on a nested secret passes registration, then
    StackStorm decrypts twice when it loads the config for an action."""
    from st2common.util.config_loader import ContentPackConfigLoader
    twice = _set(_example(), ("microsoft", "client_secret"),
                 "{{ st2kv.system.graph_client_secret | decrypt_kv }}")
    try:
        stack.reconfigure(twice)
        with pytest.raises(Exception) as failed:
            ContentPackConfigLoader(pack_name=PACK_REF).get_config()
        assert "hexadecimal" in str(failed.value) or "Odd-length" in str(failed.value)
    finally:
        stack.reconfigure(_example())


# --- trigger payloads: StackStorm's validate_trigger_payload ----------------------------------

# A payload of each trigger type as its sensor dispatches it (every field set). A new trigger
# type fails test_every_trigger_type_has_a_sample until it gets one here.
_VERDICT = {
    "message_id": "<abc@evil.example>",
    "recipients": ["alice@corp.example", "bob@corp-mail.example"],
    "sender": "billing@evil.example",
    "subject": "Invoice",
    "disposition": "MALICIOUS",
    "source_disposition": "MALICIOUS-BEC",
    "verdict_time": "2026-12-08T00:00:00Z",
    "source": "cloudflare",
    "source_id": "4Yb1WmH6vKz",
    "delivery_mode": "DIRECT",
}
SAMPLES = {
    _ref("verdict"): _VERDICT,
    _ref("verdict_changed"): dict(_VERDICT, previous_disposition="NONE"),
    _ref("phish_submission"): {
        "submission_id": "sub-1",
        "reporter": "carol@corp.example",
        "message_id": "<abc@evil.example>",
        "recipients": ["alice@corp.example"],
        "sender": None,
        "subject": None,
        "disposition": "MALICIOUS",
        "source_disposition": "MALICIOUS",
        "verdict_time": "2026-12-08T00:00:00Z",
        "reported_at": "2026-12-07T23:50:00Z",
        "source": "cloudflare",
        "source_id": "4Yb1WmH6vKz",
    },
}


def _trigger_types():
    from st2common.persistence.trigger import TriggerType
    return {t.ref: t for t in TriggerType.query(pack=PACK_REF)}


def _validate_payload(ref, payload):
    from st2common.validators.api.reactor import validate_trigger_payload
    return validate_trigger_payload(trigger_type_ref=ref, payload=payload,
                                    throw_on_inexistent_trigger=True)


def test_every_trigger_type_has_a_sample(stack):
    assert sorted(_trigger_types()) == sorted(SAMPLES)


@pytest.mark.parametrize("ref", sorted(SAMPLES))
def test_a_sensor_payload_is_accepted(stack, ref):
    # validate_trigger_payload checks the schema itself first: a `required: [..]` list would
    # raise SchemaError here, for every payload.
    assert _validate_payload(ref, SAMPLES[ref]) == SAMPLES[ref]


@pytest.mark.parametrize("ref", sorted(SAMPLES))
def test_a_payload_missing_a_required_field_is_refused_and_dropped(stack, ref):
    import jsonschema
    properties = _trigger_types()[ref].payload_schema["properties"]
    required = sorted(name for name, spec in properties.items() if spec.get("required"))
    optional = sorted(set(properties) - set(required))
    assert required, ref
    before = len(stack.trigger_instances(ref))
    for name in required:
        payload = dict(SAMPLES[ref])
        del payload[name]
        with pytest.raises(jsonschema.ValidationError) as refused:
            _validate_payload(ref, payload)
        assert "'%s' is a required property" % name in str(refused.value)
        # What sensor_service.dispatch does with it: not dispatched.
        with pytest.raises(ValueError):
            stack.dispatch(ref, payload, throw_on_validation_error=True)
    assert len(stack.trigger_instances(ref)) == before
    for name in optional:
        payload = dict(SAMPLES[ref])
        del payload[name]
        assert _validate_payload(ref, payload) == payload, name


@pytest.mark.parametrize("ref", sorted(SAMPLES))
def test_a_payload_with_a_wrong_value_or_an_unknown_field_is_refused(stack, ref):
    import jsonschema
    for bad in (dict(SAMPLES[ref], disposition="malicious"),
                dict(SAMPLES[ref], recipients=[]),
                dict(SAMPLES[ref], source="defender"),
                dict(SAMPLES[ref], unexpected="x")):
        with pytest.raises(jsonschema.ValidationError):
            _validate_payload(ref, bad)


def test_a_required_list_is_a_schema_error_in_stackstorms_validator(stack):
    """The payload schemas used `required: [a, b]` (JSON Schema draft 4) until 0.1.1.
    StackStorm's validator is draft 3 style: the list is a SchemaError, every payload is
    dropped, and registration does not notice."""
    import jsonschema
    from st2common.models.api.trigger import TriggerTypeAPI
    from st2common.services import triggers as trigger_service
    from st2common.util import schema as util_schema
    listed = copy.deepcopy(_trigger_types()[_ref("verdict")].payload_schema)
    listed["required"] = sorted(name for name, spec in listed["properties"].items()
                                if spec.pop("required", False))
    with pytest.raises(jsonschema.SchemaError) as bad_schema:
        util_schema.validate(instance=SAMPLES[_ref("verdict")], schema=listed,
                             cls=util_schema.CustomValidator, use_default=True,
                             allow_default_none=True)
    assert "is not of type 'boolean'" in str(bad_schema.value)
    # Registered as a sensor's trigger type would be: accepted...
    spec = {"pack": "regression_check", "name": "verdict", "payload_schema": listed}
    TriggerTypeAPI(**copy.deepcopy(spec)).validate()
    trigger_type = trigger_service.create_trigger_type_db(spec)
    try:
        # ...then a perfectly good payload is dropped.
        with pytest.raises(ValueError) as dropped:
            stack.dispatch(trigger_type.ref, SAMPLES[_ref("verdict")],
                           throw_on_validation_error=True)
        assert "is not of type 'boolean'" in str(dropped.value)
        assert stack.trigger_instances(trigger_type.ref) == []
    finally:
        from st2common.persistence.trigger import TriggerType
        TriggerType.delete(trigger_type)


# --- Orquesta workflows: `st2 workflow inspect` -----------------------------------------------

def _inspect(definition):
    """POST /api/v1/workflows/inspect, which `st2 workflow inspect --file` calls: orquesta's
    spec inspection plus StackStorm's check of each task's action and input."""
    from st2api.controllers.v1.workflow_inspection import WorkflowInspectionController
    response = WorkflowInspectionController().post(definition)
    assert response.status_code == 200
    return response.json


WORKFLOWS = _files(os.path.join("actions", "workflows"))


@pytest.mark.parametrize("path", WORKFLOWS, ids=[os.path.basename(p) for p in WORKFLOWS])
def test_the_workflow_inspects_clean(stack, path):
    with open(path, "r", encoding="utf-8") as handle:
        assert _inspect(handle.read()) == []


def test_inspection_reports_what_would_break_a_run(stack):
    errors = _inspect("""
version: 1.0
input:
  - message_id
tasks:
  first:
    action: email_retraction.no_such_action
    next:
      - when: <% succeeded() %>
        do: missing_task
  second:
    action: email_retraction.retract
    input:
      message_id: <% ctx(undefined_var) %>
      bogus: 1
""")
    messages = sorted(e["message"] for e in errors)
    assert messages == sorted([
        'The action "email_retraction.no_such_action" is not registered in the database.',
        'Action "email_retraction.retract" is missing required input "recipients".',
        'Action "email_retraction.retract" has unexpected input "bogus".',
        'Variable "undefined_var" is referenced before assignment.',
        'The task "missing_task" is not defined.',
    ])


# --- st2-validate-pack: each metadata file against StackStorm's API schemas -------------------

def _validate_pack_command(pack_dir):
    script = os.path.join(os.path.dirname(sys.executable), "st2-validate-pack")
    assert os.path.isfile(script), "st2common's st2-validate-pack is not beside %s" % (
        sys.executable)
    return subprocess.run([sys.executable, script, "-p", str(pack_dir)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=120, check=False)


def test_st2_validate_pack_accepts_the_pack():
    done = _validate_pack_command(PACK_ROOT)
    assert done.returncode == 0, done.stdout
    assert "ERROR" not in done.stdout


def test_st2_validate_pack_refuses_a_broken_action(tmp_path):
    pack_dir = tmp_path / PACK_REF
    (pack_dir / "actions").mkdir(parents=True)
    with open(os.path.join(PACK_ROOT, "pack.yaml"), "r", encoding="utf-8") as handle:
        (pack_dir / "pack.yaml").write_text(handle.read())
    (pack_dir / "actions" / "broken.yaml").write_text(
        "name: broken\npack: email_retraction\nrunner_type: python-script\n"
        "entry_point: broken.py\ndescripton: misspelt\n"
        "parameters:\n  a:\n    type: string\n    required: [a]\n")
    done = _validate_pack_command(pack_dir)
    assert done.returncode == 1, done.stdout
    assert '"descripton" was unexpected' in done.stdout
    assert 'is not of type "boolean"' in done.stdout
