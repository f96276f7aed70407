"""Pack metadata checks, as StackStorm's registrar and workflow engine would make them.

StackStorm registers a pack at install time and only then says what is wrong with it; an
Orquesta workflow is not checked at all until it runs. These checks read the pack's files
and report, in plain sentences, what StackStorm would refuse or silently get wrong:
unknown keys, parameters of the wrong type, references to actions and triggers that do not
exist, rule criteria on fields the trigger never sends, workflow transitions to nowhere.

Every ``check_*`` function returns a list of findings (``"<file>: <problem>"``); an empty
list means the file conforms. ``check_pack`` runs them all over a pack directory.
"""
from __future__ import annotations

import ast
import copy
import glob
import os
import re
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

import jinja2
import jsonschema
import yaml

__all__ = [
    "PackIndex",
    "check_pack",
    "check_pack_yaml",
    "check_config_schema",
    "check_action",
    "check_workflow",
    "check_sensor",
    "check_rule",
    "check_alias",
    "check_policy",
    "validate_config",
    "payload_errors",
    "load_yaml",
    "is_expression",
    "allow_default_none",
    "schema_errors",
    "St2Validator",
]

WORD_RE = re.compile(r"^\w+$")
PACK_REF_RE = re.compile(r"^[a-z0-9_]+$")
# PACK_VERSION_REGEX of StackStorm: semver, with optional pre-release and build parts.
SEMVER_RE = re.compile(
    r"^(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)"
    r"(?:-[\da-z\-]+(?:\.[\da-z\-]+)*)?(?:\+[\da-z\-]+(?:\.[\da-z\-]+)*)?$"
)
# ST2_VERSION_REGEX of StackStorm: one or more comparisons, e.g. ">=3.8.0, <4.0.0".
ST2_VERSION_RE = re.compile(r"^((>?>|>=|=|<=|<?<)\s*[0-9]+\.[0-9]+\.[0-9]+?(\s*,)?\s*)+$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

PARAM_TYPES = ("string", "boolean", "integer", "number", "object", "array", "null")

# Keys StackStorm's action_params meta-schema allows at the top of a parameter (or of a
# config schema attribute). Anything else, "format" included, is refused at registration.
# Below the top level, ordinary JSON Schema draft 4 applies.
PARAM_KEYS = frozenset([
    "id", "$schema", "title", "description", "default", "multipleOf", "maximum",
    "exclusiveMaximum", "minimum", "exclusiveMinimum", "maxLength", "minLength", "pattern",
    "additionalItems", "items", "maxItems", "minItems", "uniqueItems", "maxProperties",
    "minProperties", "required", "secret", "additionalProperties", "definitions",
    "properties", "patternProperties", "dependencies", "enum", "type", "position",
    "immutable", "allOf", "anyOf", "oneOf", "not",
])
ST2_ONLY_PARAM_KEYS = ("required", "secret", "immutable", "position")

# A name whose last word is one of these holds a credential and must be ``secret: true``.
SECRET_WORDS = frozenset(["secret", "token", "key", "password", "passphrase"])

ACTION_KEYS = frozenset([
    "name", "runner_type", "description", "enabled", "entry_point", "pack", "parameters",
    "output_schema", "tags", "notify",
])
SENSOR_KEYS = frozenset([
    "class_name", "name", "pack", "entry_point", "description", "enabled", "poll_interval",
    "trigger_types",
])
TRIGGER_TYPE_KEYS = frozenset([
    "name", "pack", "description", "payload_schema", "parameters_schema", "tags",
])
RULE_KEYS = frozenset([
    "name", "pack", "description", "enabled", "trigger", "criteria", "action", "tags", "type",
    "context",
])
ALIAS_KEYS = frozenset([
    "name", "pack", "description", "enabled", "action_ref", "formats", "ack", "result",
    "extra", "immutable_parameters",
])
POLICY_KEYS = frozenset([
    "name", "pack", "description", "enabled", "resource_ref", "policy_type", "parameters",
])
PACK_KEYS = frozenset([
    "ref", "name", "description", "keywords", "version", "stackstorm_version",
    "python_versions", "author", "email", "contributors", "dependencies", "system", "files",
])
WORKFLOW_KEYS = frozenset(["version", "description", "input", "vars", "output", "tasks"])
TASK_KEYS = frozenset(["action", "input", "next", "with", "join", "retry", "delay"])
TRANSITION_KEYS = frozenset(["when", "publish", "do"])
ENGINE_COMMANDS = frozenset(["continue", "fail", "noop", "retry"])

CRITERIA_OPERATORS = frozenset([
    "equals", "eq", "nequals", "neq", "iequals", "lessthan", "lt", "greaterthan", "gt",
    "matchwildcard", "regex", "iregex", "matchregex", "contains", "icontains", "ncontains",
    "incontains", "startswith", "istartswith", "endswith", "iendswith", "timediff_lt",
    "timediff_gt", "timediff_nlt", "timediff_ngt", "exists", "nexists", "inside", "ninside",
    "in", "nin", "search",
])
OPERATORS_WITHOUT_PATTERN = frozenset(["exists", "nexists"])


def _param(type_, required=False, **extra):
    spec = {"type": type_}
    if required:
        spec["required"] = True
    spec.update(extra)
    return spec


# Parameters each runner adds to every action that uses it (StackStorm 3.9 runners).
_SHELL_PARAMS = {
    "cwd": _param("string"), "env": _param("object"), "kwarg_op": _param("string"),
    "sudo": _param("boolean"), "sudo_password": _param("string", secret=True),
    "timeout": _param("integer"),
}
RUNNER_PARAMS = {
    "python-script": {
        "debug": _param("boolean"), "content_version": _param("string"),
        "env": _param("object"), "log_level": _param("string"),
        "timeout": _param("integer", default=600),
    },
    "orquesta": {},
    "noop": {},
    "inquirer": {
        "schema": _param("object"), "roles": _param("array"), "users": _param("array"),
        "route": _param("string"), "ttl": _param("integer"),
    },
    "local-shell-cmd": dict(_SHELL_PARAMS, cmd=_param("string")),
    "local-shell-script": dict(_SHELL_PARAMS),
    "remote-shell-cmd": None,
    "remote-shell-script": None,
    "http-request": None,
    "action-chain": None,
    "winrm-cmd": None,
    "winrm-ps-cmd": None,
    "winrm-ps-script": None,
}
# Attributes an action may change on a runner parameter (StackStorm refuses the others).
RUNNER_PARAM_OVERRIDABLE = frozenset(["default", "description", "enum", "immutable", "required"])

# StackStorm's core pack: the actions a rule or workflow of this pack may call, with the
# parameters each accepts (runner parameters included).
CORE_ACTIONS = {
    "core.noop": ("noop", {}),
    "core.echo": ("local-shell-cmd", {"message": _param("string", required=True)}),
    "core.local": ("local-shell-cmd", {"cmd": _param("string", required=True)}),
    "core.local_sudo": ("local-shell-cmd", {"cmd": _param("string", required=True)}),
    "core.ask": ("inquirer", {}),
    "core.error": ("local-shell-cmd", {"message": _param("string")}),
    "core.pause": ("local-shell-cmd", {"max_pause": _param("integer")}),
    "core.uuid": ("python-script", {"uuid_type": _param("string")}),
    "core.inject_trigger": ("python-script", {
        "trigger": _param("string", required=True), "payload": _param("object"),
        "trace_tag": _param("string"),
    }),
    "core.http": ("http-request", dict(
        [(name, _param("string")) for name in [
            "method", "body", "auth", "username", "password", "http_proxy", "https_proxy",
            "file_name", "file_path", "file_content", "file_content_type"]]
        + [("url", _param("string", required=True)), ("headers", _param("object")),
           ("params", _param("object")), ("cookies", _param("object")),
           ("allow_redirects", _param("boolean")), ("verify_ssl_cert", _param("boolean")),
           ("timeout", _param("number")), ("url_hosts_blacklist", _param("array")),
           ("url_hosts_whitelist", _param("array"))]
    )),
    "core.sendmail": ("local-shell-script", dict(
        [(name, _param("string")) for name in [
            "from", "subject", "body", "content_type", "sendmail_binary"]]
        + [("to", _param("string", required=True)), ("attachments", _param("string")),
           ("send_empty_body", _param("boolean"))]
    )),
}
# StackStorm's system triggers: parameters they take and the top-level payload fields.
SYSTEM_TRIGGERS = {
    "core.st2.webhook": ({"url": _param("string", required=True)}, ["body", "headers"]),
    "core.st2.CronTimer": (dict((name, _param("string")) for name in [
        "timezone", "year", "month", "day", "week", "day_of_week", "hour", "minute", "second",
    ]), ["executed_at", "schedule"]),
    "core.st2.IntervalTimer": ({
        "unit": _param("string", required=True), "delta": _param("integer", required=True),
    }, ["executed_at", "schedule"]),
    "core.st2.DateTimer": ({
        "timezone": _param("string"), "date": _param("string", required=True),
    }, ["executed_at", "schedule"]),
    "core.st2.generic.actiontrigger": ({}, [
        "execution_id", "status", "start_timestamp", "action_name", "action_ref",
        "runner_ref", "parameters", "result",
    ]),
    "core.st2.generic.notifytrigger": ({}, [
        "execution_id", "status", "start_timestamp", "end_timestamp", "action_ref",
        "runner_ref", "channel", "route", "message", "data",
    ]),
    "core.st2.generic.inquiry": ({}, ["id", "route"]),
    "core.st2.action.file_written": ({}, ["ref", "file_path", "host_info"]),
    "core.st2.key_value_pair.create": ({}, ["object"]),
    "core.st2.key_value_pair.update": ({}, ["object"]),
    "core.st2.key_value_pair.value_change": ({}, ["old_object", "new_object"]),
    "core.st2.key_value_pair.delete": ({}, ["object"]),
    "core.st2.sensor.process_spawn": ({}, ["object"]),
    "core.st2.sensor.process_exit": ({}, ["object"]),
}

POLICY_TYPES = {
    "action.concurrency": {
        "threshold": _param("integer", required=True), "action": _param("string"),
    },
    "action.concurrency.attr": {
        "threshold": _param("integer", required=True), "action": _param("string"),
        "attributes": _param("array", required=True),
    },
    "action.retry": {
        "retry_on": _param("string", required=True), "max_retry_count": _param("integer"),
        "delay": _param("number"),
    },
}

_JINJA = jinja2.Environment()
_TRIGGER_REF_RE = re.compile(r"\btrigger\.(\w+)")
_CTX_RE = re.compile(r"\bctx\(\s*['\"]?(\w+)['\"]?\s*\)|\bctx\(\)\.(\w+)")
_TASK_REF_RE = re.compile(r"\btask\(\s*['\"](\w+)['\"]\s*\)")
_FORMAT_PARAM_RE = re.compile(r"{{\s*(\w+)\s*(?:=|}})")


# ---------------------------------------------------------------------------------------
# Loading and small helpers
# ---------------------------------------------------------------------------------------

def load_yaml(path: str) -> Tuple[Any, Optional[str]]:
    """(content, None) or (None, "why it does not load")."""
    try:
        with open(path, "r", encoding="utf-8") as fp:
            return yaml.safe_load(fp), None
    except OSError as e:
        return None, "cannot be read: %s" % (e.strerror or e)
    except yaml.YAMLError as e:
        return None, "does not parse as YAML: %s" % (str(e).splitlines()[0])


def is_expression(value: Any) -> bool:
    """True for a Jinja or YAQL expression (StackStorm renders it rather than taking it as
    a literal)."""
    return isinstance(value, str) and ("{{" in value or "{%" in value or "<%" in value)


def _is_secret_name(name: str) -> bool:
    return name.lower().split("_")[-1] in SECRET_WORDS


def _unknown_keys(data: dict, allowed: Iterable[str]) -> List[str]:
    return sorted(str(k) for k in data if k not in allowed)


def _jinja_errors(where: str, value: Any) -> List[str]:
    """Template syntax errors in every string under ``value`` (YAQL ``<% %>`` is skipped)."""
    errors = []
    for text in _strings(value):
        if "{{" in text or "{%" in text:
            try:
                _JINJA.parse(text)
            except jinja2.TemplateSyntaxError as e:
                errors.append("%s: Jinja syntax error in %r: %s" % (where, text, e.message))
    return errors


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            for text in _strings(item):
                yield text
    elif isinstance(value, list):
        for item in value:
            for text in _strings(item):
                yield text


def _draft3_properties_aware_validator():
    """Draft 4 with StackStorm's twist: ``required: true`` inside a property (draft 3 style),
    as StackStorm's CustomValidator validates configs and trigger payloads."""
    draft4_required = jsonschema.Draft4Validator.VALIDATORS["required"]

    def required(validator, value, instance, schema):
        if isinstance(value, list):
            for error in draft4_required(validator, value, instance, schema):
                yield error

    return jsonschema.validators.extend(
        jsonschema.Draft4Validator,
        {"properties": jsonschema.Draft3Validator.VALIDATORS["properties"], "required": required},
    )


St2Validator = _draft3_properties_aware_validator()


def allow_default_none(schema: dict) -> dict:
    """Optional properties and those defaulting to None also accept null (as StackStorm)."""
    schema = copy.deepcopy(schema)
    for name, prop in (schema.get("properties") or {}).items():
        if not isinstance(prop, dict):
            continue
        optional = not prop.get("required", False)
        if (optional or "default" in prop) and prop.get("default") is None:
            type_ = prop.get("type")
            if isinstance(type_, str) and type_ != "null":
                prop["type"] = [type_, "null"]
            elif isinstance(type_, list) and "null" not in type_:
                prop["type"] = type_ + ["null"]
        if prop.get("type") == "object" or (
                isinstance(prop.get("type"), list) and "object" in prop["type"]):
            if prop.get("properties"):
                schema["properties"][name] = allow_default_none(prop)
    return schema


def _assign_defaults(instance: Any, schema: dict) -> Any:
    """Fill in defaults, nested objects included, the way StackStorm loads a config."""
    if not isinstance(instance, dict):
        return instance
    instance = copy.deepcopy(instance)
    for name, prop in (schema.get("properties") or {}).items():
        if not isinstance(prop, dict):
            continue
        if "default" in prop and instance.get(name) is None:
            instance[name] = copy.deepcopy(prop["default"])
        if prop.get("properties") and isinstance(instance.get(name), dict):
            instance[name] = _assign_defaults(instance[name], prop)
    return instance


def schema_errors(validator_cls, schema: dict, instance: Any) -> List[str]:
    """Every error of `instance` against `schema`, as "<path>: <message>" lines."""
    errors = sorted(validator_cls(schema).iter_errors(instance), key=lambda e: list(e.path))
    found = []
    for error in errors:
        path = ".".join(str(p) for p in error.path) or "(top)"
        found.append("%s: %s" % (path, error.message))
    return found


# The names these helpers had before they were public; tests written against them still work.
_is_expression = is_expression
_allow_default_none = allow_default_none
_schema_errors = schema_errors


def validate_config(schema_attributes: dict, config: dict) -> List[str]:
    """Validate a pack config against its config schema as StackStorm does when it
    registers the config: defaults applied, optional values nullable, draft 3 ``required``."""
    schema = {"type": "object", "properties": schema_attributes, "additionalProperties": True}
    schema = allow_default_none(schema)
    return schema_errors(St2Validator, schema, _assign_defaults(config or {}, schema))


def payload_errors(schema: dict, payload: Any) -> List[str]:
    """Reasons a sensor payload would not match its trigger's ``payload_schema``: by JSON
    Schema draft 4, and by StackStorm's own validator (which drops non-matching payloads)."""
    found = schema_errors(jsonschema.Draft4Validator, schema, payload)
    for error in schema_errors(St2Validator, allow_default_none(schema), payload):
        if error not in found:
            found.append(error)
    return found


# ---------------------------------------------------------------------------------------
# The pack index: what exists, so references can be resolved
# ---------------------------------------------------------------------------------------

class PackIndex(object):
    """The actions and trigger types of one pack, by reference."""

    def __init__(self, root: str, ref: str):
        self.root = root
        self.ref = ref
        self.actions = {}  # type: Dict[str, dict]
        self.triggers = {}  # type: Dict[str, dict]

    @classmethod
    def load(cls, root: str, ref: Optional[str] = None) -> "PackIndex":
        if ref is None:
            manifest, _ = load_yaml(os.path.join(root, "pack.yaml"))
            manifest = manifest if isinstance(manifest, dict) else {}
            ref = manifest.get("ref") or manifest.get("name") or os.path.basename(root)
        index = cls(root, str(ref))
        for path in sorted(glob.glob(os.path.join(root, "actions", "*.yaml"))):
            data, _ = load_yaml(path)
            if isinstance(data, dict) and isinstance(data.get("name"), str):
                index.actions["%s.%s" % (index.ref, data["name"])] = data
        for path in sorted(glob.glob(os.path.join(root, "sensors", "*.yaml"))):
            data, _ = load_yaml(path)
            if isinstance(data, dict) and isinstance(data.get("trigger_types"), list):
                for trigger in data["trigger_types"]:
                    if isinstance(trigger, dict) and isinstance(trigger.get("name"), str):
                        index.triggers["%s.%s" % (index.ref, trigger["name"])] = trigger
        return index

    def action_parameters(self, ref: str) -> Optional[Dict[str, dict]]:
        """Every parameter the action accepts (its own and its runner's), or None if no
        such action is known."""
        if ref in self.actions:
            meta = self.actions[ref]
            params = {}  # type: Dict[str, dict]
            params.update(RUNNER_PARAMS.get(meta.get("runner_type")) or {})
            for name, spec in (meta.get("parameters") or {}).items():
                merged = dict(params.get(name) or {})
                merged.update(spec if isinstance(spec, dict) else {})
                params[name] = merged
            return params
        if ref in CORE_ACTIONS:
            runner, own = CORE_ACTIONS[ref]
            params = dict(RUNNER_PARAMS.get(runner) or {})
            params.update(own)
            return params
        return None

    def describe_unknown_action(self, ref: Any) -> str:
        if not isinstance(ref, str) or "." not in ref:
            return "action reference %r is not of the form <pack>.<action>" % (ref,)
        pack = ref.split(".", 1)[0]
        if pack == self.ref:
            return "action %r does not exist (no actions/%s.yaml)" % (ref, ref.split(".", 1)[1])
        if pack == "core":
            return "action %r is not a StackStorm core action this pack may use" % (ref,)
        return "action %r belongs to pack %r, which this pack does not depend on" % (ref, pack)

    def trigger(self, ref: str) -> Optional[Tuple[dict, Optional[Set[str]]]]:
        """(parameters schema, top-level payload fields or None if open), or None."""
        if ref in self.triggers:
            trigger = self.triggers[ref]
            payload = trigger.get("payload_schema") or {}
            fields = None
            if isinstance(payload, dict) and isinstance(payload.get("properties"), dict):
                fields = set(payload["properties"])
            params = trigger.get("parameters_schema") or {}
            if isinstance(params, dict) and "properties" in params:
                params = params["properties"] or {}
            return params, fields
        if ref in SYSTEM_TRIGGERS:
            params, fields = SYSTEM_TRIGGERS[ref]
            return params, set(fields)
        return None


# ---------------------------------------------------------------------------------------
# Parameters (actions) and attributes (config schema)
# ---------------------------------------------------------------------------------------

def _check_nested_secrets(where: str, spec: dict) -> List[str]:
    errors = []
    for name, sub in (spec.get("properties") or {}).items():
        if not isinstance(sub, dict):
            continue
        sub_where = "%s.%s" % (where, name)
        if _is_secret_name(str(name)) and sub.get("secret") is not True:
            errors.append("%s: holds a credential and must set secret: true" % (sub_where))
        errors.extend(_check_nested_secrets(sub_where, sub))
    items = spec.get("items")
    if isinstance(items, dict):
        errors.extend(_check_nested_secrets(where + "[]", items))
    return errors


def check_parameter(where: str, name: Any, spec: Any) -> List[str]:
    """One action parameter or config schema attribute, as StackStorm's action_params
    meta-schema and this pack's conventions require."""
    where = "%s %r" % (where, name)
    if not isinstance(name, str) or not WORD_RE.match(name):
        return ["%s: name must match ^\\w+$" % (where)]
    if not isinstance(spec, dict):
        return ["%s: must be a mapping, got %s" % (where, type(spec).__name__)]

    errors = []
    if "format" in spec:
        errors.append("%s: 'format' is not allowed at the top level (StackStorm refuses it)"
                      % (where))
    unknown = [k for k in _unknown_keys(spec, PARAM_KEYS) if k != "format"]
    if unknown:
        errors.append("%s: unknown keys %s" % (where, ", ".join(unknown)))

    type_ = spec.get("type")
    if type_ is None:
        errors.append("%s: has no 'type'" % (where))
    elif not isinstance(type_, str) or type_ not in PARAM_TYPES:
        errors.append("%s: type %r is not one of %s" % (where, type_, ", ".join(PARAM_TYPES)))

    for flag in ("required", "secret", "immutable"):
        if flag in spec and not isinstance(spec[flag], bool):
            errors.append("%s: '%s' must be a boolean, got %r" % (where, flag, spec[flag]))
    if "position" in spec and (isinstance(spec["position"], bool)
                               or not isinstance(spec["position"], (int, float))
                               or spec["position"] < 0):
        errors.append("%s: 'position' must be a number >= 0" % (where))

    if _is_secret_name(name) and spec.get("secret") is not True:
        errors.append("%s: holds a credential and must set secret: true" % (where))
    errors.extend(_check_nested_secrets(where, spec))

    # Below the top level it is plain JSON Schema draft 4.
    draft4_part = dict((k, v) for k, v in spec.items()
                       if k not in ST2_ONLY_PARAM_KEYS and k != "format")
    try:
        jsonschema.Draft4Validator.check_schema(draft4_part)
    except jsonschema.SchemaError as e:
        path = "/".join(str(p) for p in e.path)
        errors.append("%s: not a valid JSON Schema (draft 4) at %s: %s"
                      % (where, path or "(top)", e.message))
        return errors

    if spec.get("immutable") is True and "default" not in spec:
        errors.append("%s: immutable but has no default" % (where))

    if "default" in spec and spec["default"] is not None and not is_expression(spec["default"]):
        if not errors:
            for problem in schema_errors(St2Validator, allow_default_none(
                    {"type": "object", "properties": {name: spec}}), {name: spec["default"]}):
                errors.append("%s: default %r does not match: %s"
                              % (where, spec["default"], problem.split(": ", 1)[1]))
    return errors


def _check_parameters(where: str, parameters: Any, runner_type: Any) -> List[str]:
    if parameters is None:
        return []
    if not isinstance(parameters, dict):
        return ["%s: 'parameters' must be a mapping" % (where)]
    errors = []
    runner_params = RUNNER_PARAMS.get(runner_type) or {}
    for name, spec in parameters.items():
        if name in runner_params and isinstance(spec, dict):
            # Overriding a runner parameter: only some attributes may change.
            for attr, value in spec.items():
                if attr not in RUNNER_PARAM_OVERRIDABLE and runner_params[name].get(attr) != value:
                    errors.append("%s parameter %r: the runner parameter's '%s' cannot be "
                                  "overridden" % (where, name, attr))
            merged = dict(runner_params[name])
            merged.update(spec)
            spec = merged
        errors.extend(check_parameter(where + " parameter", name, spec))
    return errors


def _check_supplied(where: str, supplied: Any, accepted: Dict[str, dict], target: str,
                    also_supplied: Iterable[str] = ()) -> List[str]:
    """Values passed to an action (rule, workflow task, alias): every key must be a
    parameter of the action, and every required parameter without a default supplied."""
    if supplied is None:
        supplied = {}
    if not isinstance(supplied, dict):
        return ["%s: parameters for %s must be a mapping" % (where, target)]
    errors = []
    for key in supplied:
        if key not in accepted:
            errors.append("%s: %r is not a parameter of %s" % (where, key, target))
    given = set(supplied) | set(also_supplied)
    for name, spec in sorted(accepted.items()):
        if spec.get("required") is True and "default" not in spec and name not in given:
            errors.append("%s: required parameter %r of %s is not supplied"
                          % (where, name, target))
    return errors


# ---------------------------------------------------------------------------------------
# pack.yaml and config.schema.yaml
# ---------------------------------------------------------------------------------------

def check_pack_yaml(path: str, expected_ref: Optional[str] = None) -> List[str]:
    where = _rel(path)
    data, problem = load_yaml(path)
    if problem:
        return ["%s: %s" % (where, problem)]
    if not isinstance(data, dict):
        return ["%s: must be a mapping" % (where)]

    errors = []
    unknown = _unknown_keys(data, PACK_KEYS)
    if unknown:
        errors.append("%s: unknown keys %s" % (where, ", ".join(unknown)))
    for key in ("name", "description", "version", "author"):
        if key not in data:
            errors.append("%s: '%s' is required" % (where, key))
        elif not isinstance(data[key], str) or not data[key].strip():
            errors.append("%s: '%s' must be a non-empty string (quote it)" % (where, key))

    ref = data.get("ref") or data.get("name")
    if isinstance(ref, str):
        if not PACK_REF_RE.match(ref):
            errors.append("%s: ref %r may only contain a-z, 0-9 and _" % (where, ref))
        if expected_ref is not None and ref != expected_ref:
            errors.append("%s: ref %r is not %r" % (where, ref, expected_ref))

    version = data.get("version")
    if isinstance(version, str) and not SEMVER_RE.match(version):
        errors.append("%s: version %r is not semver (e.g. 0.1.0)" % (where, version))
    sv = data.get("stackstorm_version")
    if sv is not None and (not isinstance(sv, str) or not ST2_VERSION_RE.match(sv)):
        errors.append("%s: stackstorm_version %r is not like \">=3.8.0\"" % (where, sv))
    pv = data.get("python_versions")
    if pv is not None:
        if (not isinstance(pv, list) or not pv
                or any(v not in ("2", "3") for v in pv) or len(set(pv)) != len(pv)):
            errors.append("%s: python_versions must be a list of \"2\"/\"3\" strings" % (where))
        elif "3" not in pv:
            errors.append("%s: python_versions must include \"3\"" % (where))
    email = data.get("email")
    if email is not None and (not isinstance(email, str) or not EMAIL_RE.match(email)):
        errors.append("%s: email %r is not an e-mail address" % (where, email))
    for key in ("keywords", "contributors", "dependencies", "files"):
        value = data.get(key)
        if value is not None and (not isinstance(value, list)
                                  or not all(isinstance(v, str) for v in value)):
            errors.append("%s: '%s' must be a list of strings" % (where, key))
    return errors


def check_config_schema(path: str) -> List[str]:
    where = _rel(path)
    data, problem = load_yaml(path)
    if problem:
        return ["%s: %s" % (where, problem)]
    if data is None:
        return []
    if not isinstance(data, dict):
        return ["%s: must be a mapping of attribute name to schema" % (where)]
    errors = []
    for name, spec in data.items():
        errors.extend(check_parameter(where + ": attribute", name, spec))
    return errors


# ---------------------------------------------------------------------------------------
# Python entry points (read with ast: nothing is imported)
# ---------------------------------------------------------------------------------------

def _module_classes(path: str) -> Tuple[Optional[Dict[str, ast.ClassDef]], Optional[str]]:
    try:
        with open(path, "r", encoding="utf-8") as fp:
            tree = ast.parse(fp.read(), filename=path)
    except (OSError, SyntaxError, ValueError) as e:
        return None, "cannot be read as Python: %s" % (e)
    classes = dict((node.name, node) for node in tree.body if isinstance(node, ast.ClassDef))
    return classes, None


def _base_names(node: ast.ClassDef) -> List[str]:
    names = []
    for base in node.bases:
        if isinstance(base, ast.Name):
            names.append(base.id)
        elif isinstance(base, ast.Attribute):
            names.append(base.attr)
    return names


def _methods(name: str, classes: Dict[str, ast.ClassDef], seen: Optional[Set[str]] = None
             ) -> Tuple[Set[str], Set[str]]:
    """(methods defined by the class or its in-file bases, names of out-of-file bases)."""
    seen = seen or set()
    if name in seen or name not in classes:
        return set(), set()
    seen.add(name)
    node = classes[name]
    methods = set(item.name for item in node.body
                  if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)))
    outside = set()
    for base in _base_names(node):
        if base in classes:
            more, far = _methods(base, classes, seen)
            methods |= more
            outside |= far
        else:
            outside.add(base)
    return methods, outside


def _resolve_entry_point(where: str, base_dir: str, entry_point: Any, what: str
                         ) -> Tuple[Optional[str], List[str]]:
    if not isinstance(entry_point, str) or not entry_point:
        return None, ["%s: 'entry_point' is required" % (where)]
    if os.path.isabs(entry_point) or ".." in entry_point.replace("\\", "/").split("/"):
        return None, ["%s: entry_point %r must be a path inside %s/" % (where, entry_point, what)]
    path = os.path.join(base_dir, entry_point)
    if not os.path.isfile(path):
        return None, ["%s: entry_point %s/%s does not exist" % (where, what, entry_point)]
    return path, []


def _check_python_action(where: str, path: str) -> List[str]:
    classes, problem = _module_classes(path)
    if problem:
        return ["%s: %s %s" % (where, _rel(path), problem)]
    runnable = sorted(name for name in classes if "run" in _methods(name, classes)[0])
    if not runnable:
        return ["%s: %s defines no class with a run() method" % (where, _rel(path))]
    if len(runnable) > 1:
        # StackStorm would run whichever class sorts first; make it unambiguous.
        return ["%s: %s defines %d classes with run() (%s); exactly one is allowed"
                % (where, _rel(path), len(runnable), ", ".join(runnable))]
    if not classes[runnable[0]].bases:
        return ["%s: class %s does not derive from st2common's Action" % (where, runnable[0])]
    return []


# ---------------------------------------------------------------------------------------
# Actions and Orquesta workflows
# ---------------------------------------------------------------------------------------

def check_action(path: str, index: PackIndex) -> List[str]:
    where = _rel(path)
    meta, problem = load_yaml(path)
    if problem:
        return ["%s: %s" % (where, problem)]
    if not isinstance(meta, dict):
        return ["%s: must be a mapping" % (where)]

    errors = []
    unknown = _unknown_keys(meta, ACTION_KEYS)
    if unknown:
        errors.append("%s: unknown keys %s" % (where, ", ".join(unknown)))
    name = meta.get("name")
    stem = os.path.splitext(os.path.basename(path))[0]
    if not isinstance(name, str) or not WORD_RE.match(name):
        errors.append("%s: 'name' is required and must match ^\\w+$" % (where))
    elif name != stem:
        errors.append("%s: name %r differs from the file name %r (refs resolve by name)"
                      % (where, name, stem))
    if "pack" in meta and meta["pack"] != index.ref:
        errors.append("%s: pack %r is not %r" % (where, meta["pack"], index.ref))
    if "enabled" in meta and not isinstance(meta["enabled"], bool):
        errors.append("%s: 'enabled' must be a boolean" % (where))
    if not isinstance(meta.get("description"), str) or not meta.get("description"):
        errors.append("%s: 'description' is required" % (where))
    if "tags" in meta and not isinstance(meta["tags"], list):
        errors.append("%s: 'tags' must be a list" % (where))

    runner = meta.get("runner_type")
    if runner not in RUNNER_PARAMS:
        errors.append("%s: runner_type %r is not a StackStorm runner (%s)"
                      % (where, runner, ", ".join(sorted(RUNNER_PARAMS))))
    errors.extend(_check_parameters(where + ":", meta.get("parameters"), runner))
    errors.extend(_check_output_schema(where, meta.get("output_schema")))

    actions_dir = os.path.dirname(path)
    if runner == "python-script":
        entry, problems = _resolve_entry_point(where, actions_dir, meta.get("entry_point"),
                                               "actions")
        errors.extend(problems)
        if entry:
            if not entry.endswith(".py"):
                errors.append("%s: a python-script entry_point must be a .py file" % (where))
            else:
                errors.extend(_check_python_action(where, entry))
    elif runner == "orquesta":
        entry, problems = _resolve_entry_point(where, actions_dir, meta.get("entry_point"),
                                               "actions")
        errors.extend(problems)
        if entry:
            errors.extend(check_workflow(meta, entry, index))
    return errors


def _check_output_schema(where: str, output_schema: Any) -> List[str]:
    if output_schema is None:
        return []
    if not isinstance(output_schema, dict):
        return ["%s: 'output_schema' must be a mapping" % (where)]
    # A full schema ("type": "object", ...) or, in the older style, a map of properties.
    schemas = [output_schema] if "type" in output_schema else list(output_schema.values())
    for schema in schemas:
        try:
            jsonschema.Draft4Validator.check_schema(schema)
        except jsonschema.SchemaError as e:
            return ["%s: output_schema is not valid JSON Schema: %s" % (where, e.message)]
    return []


def _input_names(items: Any) -> Tuple[List[str], List[str]]:
    """Names declared by an Orquesta input/vars/output list, and problems with it."""
    names, problems = [], []
    if items is None:
        return names, problems
    if not isinstance(items, list):
        return names, ["must be a list"]
    for item in items:
        if isinstance(item, str):
            names.append(item)
        elif isinstance(item, dict) and len(item) == 1:
            names.append(str(next(iter(item))))
        else:
            problems.append("entry %r must be a name or a single-key mapping" % (item,))
    return names, problems


def _targets(do: Any) -> List[str]:
    if isinstance(do, str):
        return [part.strip() for part in do.split(",") if part.strip()]
    if isinstance(do, list):
        return [str(part).strip() for part in do]
    return []


def _published_names(publish: Any) -> List[str]:
    if isinstance(publish, dict):
        return [str(k) for k in publish]
    if isinstance(publish, list):
        names = []
        for item in publish:
            if isinstance(item, dict):
                names.extend(str(k) for k in item)
        return names
    if isinstance(publish, str):
        return re.findall(r"(\w+)=", publish)
    return []


def check_workflow(meta: dict, wf_path: str, index: PackIndex) -> List[str]:
    """An Orquesta workflow against the conventions the engine enforces when it runs it."""
    where = _rel(wf_path)
    wf, problem = load_yaml(wf_path)
    if problem:
        return ["%s: %s" % (where, problem)]
    if not isinstance(wf, dict):
        return ["%s: must be a mapping" % (where)]

    errors = []
    unknown = _unknown_keys(wf, WORKFLOW_KEYS)
    if unknown:
        errors.append("%s: unknown keys %s" % (where, ", ".join(unknown)))
    if str(wf.get("version")) != "1.0":
        errors.append("%s: version must be 1.0, got %r" % (where, wf.get("version")))

    # StackStorm puts its own context (user, execution id, ...) under ctx().st2.
    defined = set(["st2", "parent"])  # type: Set[str]
    inputs, problems = _input_names(wf.get("input"))
    errors.extend("%s: input %s" % (where, p) for p in problems)
    defined.update(inputs)
    for section in ("vars", "output"):
        names, problems = _input_names(wf.get(section))
        errors.extend("%s: %s %s" % (where, section, p) for p in problems)
        if section == "vars":
            defined.update(names)

    params = meta.get("parameters") or {}
    if isinstance(params, dict):
        for name in inputs:
            if name not in params:
                errors.append("%s: input %r is not a parameter in the action metadata"
                              % (where, name))
        for name in params:
            if name not in inputs:
                errors.append("%s: parameter %r of the action metadata is not a workflow input"
                              % (where, name))

    tasks = wf.get("tasks")
    if not isinstance(tasks, dict) or not tasks:
        errors.append("%s: 'tasks' must be a non-empty mapping" % (where))
        return errors

    for task in tasks.values():
        transitions = task.get("next") if isinstance(task, dict) else None
        for transition in transitions if isinstance(transitions, list) else []:
            if isinstance(transition, dict):
                defined.update(_published_names(transition.get("publish")))

    for task_name, task in tasks.items():
        errors.extend(_check_task(where, str(task_name), task, tasks, index))

    for name in sorted(_referenced_ctx(wf) - defined):
        errors.append("%s: ctx(%s) is used but never defined (input, vars or publish)"
                      % (where, name))
    for name in sorted(_referenced_tasks(wf) - set(str(t) for t in tasks)):
        errors.append("%s: task(%r) refers to a task that does not exist" % (where, name))
    errors.extend(_jinja_errors(where, wf))
    return errors


def _check_task(where: str, name: str, task: Any, tasks: dict, index: PackIndex) -> List[str]:
    here = "%s: task %r" % (where, name)
    if not WORD_RE.match(name):
        return ["%s: task name must match ^\\w+$" % (here)]
    if task is None:
        task = {}
    if not isinstance(task, dict):
        return ["%s: must be a mapping" % (here)]
    errors = []
    unknown = _unknown_keys(task, TASK_KEYS)
    if unknown:
        errors.append("%s: unknown keys %s" % (here, ", ".join(unknown)))

    action = task.get("action")
    if action is not None and not is_expression(action):
        ref = (str(action).split() or [""])[0]
        accepted = index.action_parameters(ref)
        if accepted is None:
            errors.append("%s: %s" % (here, index.describe_unknown_action(ref)))
        else:
            errors.extend(_check_supplied(here + " input", task.get("input"), accepted, ref))
    elif action is None and task.get("input"):
        errors.append("%s: has input but no action" % (here))

    with_ = task.get("with")
    if with_ is not None and not isinstance(with_, str):
        if not isinstance(with_, dict) or "items" not in with_:
            errors.append("%s: 'with' must have 'items'" % (here))
        elif _unknown_keys(with_, ("items", "concurrency")):
            errors.append("%s: 'with' takes only items and concurrency" % (here))
    join = task.get("join")
    if join is not None and join != "all" and (isinstance(join, bool) or not isinstance(join, int)):
        errors.append("%s: join must be 'all' or a number" % (here))

    transitions = task.get("next") or []
    if not isinstance(transitions, list):
        return errors + ["%s: 'next' must be a list" % (here)]
    for i, transition in enumerate(transitions):
        there = "%s next[%d]" % (here, i)
        if not isinstance(transition, dict):
            errors.append("%s: must be a mapping" % (there))
            continue
        unknown = _unknown_keys(transition, TRANSITION_KEYS)
        if unknown:
            errors.append("%s: unknown keys %s" % (there, ", ".join(unknown)))
        for target in _targets(transition.get("do")):
            if target not in tasks and target not in ENGINE_COMMANDS:
                errors.append("%s: do %r is neither a task nor one of %s"
                              % (there, target, ", ".join(sorted(ENGINE_COMMANDS))))
    return errors


def _referenced_ctx(value: Any) -> Set[str]:
    names = set()
    for text in _strings(value):
        for a, b in _CTX_RE.findall(text):
            names.add(a or b)
    return names


def _referenced_tasks(value: Any) -> Set[str]:
    names = set()
    for text in _strings(value):
        names.update(_TASK_REF_RE.findall(text))
    return names


# ---------------------------------------------------------------------------------------
# Sensors and trigger types
# ---------------------------------------------------------------------------------------

SENSOR_METHODS = {
    "PollingSensor": ("setup", "poll", "cleanup", "add_trigger", "update_trigger",
                      "remove_trigger"),
    "Sensor": ("setup", "run", "cleanup", "add_trigger", "update_trigger", "remove_trigger"),
}


def check_sensor(path: str, index: PackIndex) -> List[str]:
    where = _rel(path)
    meta, problem = load_yaml(path)
    if problem:
        return ["%s: %s" % (where, problem)]
    if not isinstance(meta, dict):
        return ["%s: must be a mapping" % (where)]

    errors = []
    unknown = _unknown_keys(meta, SENSOR_KEYS)
    if unknown:
        errors.append("%s: unknown keys %s" % (where, ", ".join(unknown)))
    if "pack" in meta and meta["pack"] != index.ref:
        errors.append("%s: pack %r is not %r" % (where, meta["pack"], index.ref))
    if "enabled" in meta and not isinstance(meta["enabled"], bool):
        errors.append("%s: 'enabled' must be a boolean" % (where))
    interval = meta.get("poll_interval")
    if interval is not None and (isinstance(interval, bool) or not isinstance(interval, int)
                                 or interval < 1):
        errors.append("%s: poll_interval must be a whole number of seconds >= 1" % (where))

    class_name = meta.get("class_name")
    if not isinstance(class_name, str) or not class_name:
        errors.append("%s: 'class_name' is required" % (where))
    entry, problems = _resolve_entry_point(where, os.path.dirname(path),
                                           meta.get("entry_point"), "sensors")
    errors.extend(problems)
    if entry and isinstance(class_name, str):
        errors.extend(_check_sensor_class(where, entry, class_name, interval))

    triggers = meta.get("trigger_types")
    if not isinstance(triggers, list) or not triggers:
        errors.append("%s: 'trigger_types' must be a non-empty list" % (where))
    else:
        for trigger in triggers:
            errors.extend(_check_trigger_type(where, trigger, index))
    return errors


def _check_sensor_class(where: str, path: str, class_name: str, interval: Any) -> List[str]:
    classes, problem = _module_classes(path)
    if problem:
        return ["%s: %s %s" % (where, _rel(path), problem)]
    if class_name not in classes:
        return ["%s: class %s is not defined in %s" % (where, class_name, _rel(path))]
    methods, outside = _methods(class_name, classes)
    kind = next((k for k in ("PollingSensor", "Sensor") if k in outside), None)
    if kind is None:
        if not outside:
            return ["%s: class %s does not derive from Sensor or PollingSensor"
                    % (where, class_name)]
        return []  # its base lives elsewhere: nothing more can be said without importing
    missing = [m for m in SENSOR_METHODS[kind] if m not in methods]
    errors = []
    if missing:
        errors.append("%s: class %s lacks %s (StackStorm cannot instantiate it)"
                      % (where, class_name, ", ".join(missing)))
    if kind == "PollingSensor" and interval is None:
        errors.append("%s: a PollingSensor must set poll_interval (StackStorm would poll every "
                      "5 seconds)" % (where))
    return errors


def _check_trigger_type(where: str, trigger: Any, index: PackIndex) -> List[str]:
    if not isinstance(trigger, dict):
        return ["%s: each trigger type must be a mapping" % (where)]
    name = trigger.get("name")
    here = "%s: trigger type %r" % (where, name)
    errors = []
    if not isinstance(name, str) or not WORD_RE.match(name):
        errors.append("%s: name is required and must match ^\\w+$" % (here))
    unknown = _unknown_keys(trigger, TRIGGER_TYPE_KEYS)
    if unknown:
        errors.append("%s: unknown keys %s" % (here, ", ".join(unknown)))
    if "pack" in trigger and trigger["pack"] != index.ref:
        errors.append("%s: pack %r is not %r" % (here, trigger["pack"], index.ref))
    if not trigger.get("description"):
        errors.append("%s: 'description' is required" % (here))
    for key in ("payload_schema", "parameters_schema"):
        schema = trigger.get(key)
        if schema is None:
            if key == "payload_schema":
                errors.append("%s: 'payload_schema' is required (payloads are checked "
                              "against it)" % (here))
            continue
        if not isinstance(schema, dict):
            errors.append("%s: %s must be a mapping" % (here, key))
            continue
        try:
            jsonschema.Draft4Validator.check_schema(schema)
        except jsonschema.SchemaError as e:
            path = "/".join(str(p) for p in e.path)
            errors.append("%s: %s is not valid JSON Schema (draft 4) at %s: %s"
                          % (here, key, path or "(top)", e.message))
    return errors


# ---------------------------------------------------------------------------------------
# Rules
# ---------------------------------------------------------------------------------------

def _payload_field_errors(here: str, value: Any, fields: Optional[Set[str]], trigger: str,
                          what: str) -> List[str]:
    if fields is None:
        return []
    errors = []
    for text in _strings(value):
        for field in _TRIGGER_REF_RE.findall(text):
            if field not in fields:
                errors.append("%s: %s uses trigger.%s, which %s does not send (it sends %s)"
                              % (here, what, field, trigger, ", ".join(sorted(fields))))
    return errors


def check_rule(path: str, index: PackIndex) -> List[str]:
    where = _rel(path)
    rule, problem = load_yaml(path)
    if problem:
        return ["%s: %s" % (where, problem)]
    if not isinstance(rule, dict):
        return ["%s: must be a mapping" % (where)]

    errors = []
    unknown = _unknown_keys(rule, RULE_KEYS)
    if unknown:
        errors.append("%s: unknown keys %s" % (where, ", ".join(unknown)))
    if not isinstance(rule.get("name"), str) or not rule.get("name"):
        errors.append("%s: 'name' is required" % (where))
    if "pack" in rule and rule["pack"] != index.ref:
        errors.append("%s: pack %r is not %r" % (where, rule["pack"], index.ref))
    if "enabled" not in rule:
        errors.append("%s: 'enabled' must be set explicitly (StackStorm defaults it to false)"
                      % (where))
    elif not isinstance(rule["enabled"], bool):
        errors.append("%s: 'enabled' must be a boolean" % (where))
    rule_type = rule.get("type")
    if rule_type is not None and (not isinstance(rule_type, dict)
                                  or rule_type.get("ref") not in ("standard", "backstop")):
        errors.append("%s: type.ref must be 'standard' or 'backstop'" % (where))

    fields = None  # type: Optional[Set[str]]
    trigger = rule.get("trigger")
    trigger_ref = trigger.get("type") if isinstance(trigger, dict) else None
    if not isinstance(trigger, dict) or not isinstance(trigger_ref, str):
        errors.append("%s: 'trigger' with a 'type' is required" % (where))
    else:
        known = index.trigger(trigger_ref)
        if known is None:
            errors.append("%s: trigger %r is neither a trigger type of this pack's sensors nor "
                          "a StackStorm system trigger" % (where, trigger_ref))
        else:
            params, fields = known
            unknown = _unknown_keys(trigger, ("type", "parameters", "ref"))
            if unknown:
                errors.append("%s: trigger has unknown keys %s" % (where, ", ".join(unknown)))
            errors.extend(_check_supplied(where + ": trigger", trigger.get("parameters"),
                                          params, trigger_ref))

    errors.extend(_check_criteria(where, rule.get("criteria"), fields, trigger_ref))

    action = rule.get("action")
    if not isinstance(action, dict) or not isinstance(action.get("ref"), str):
        errors.append("%s: 'action' with a 'ref' is required" % (where))
    else:
        unknown = _unknown_keys(action, ("ref", "parameters"))
        if unknown:
            errors.append("%s: action has unknown keys %s" % (where, ", ".join(unknown)))
        accepted = index.action_parameters(action["ref"])
        if accepted is None:
            errors.append("%s: %s" % (where, index.describe_unknown_action(action["ref"])))
        else:
            errors.extend(_check_supplied(where + ": action", action.get("parameters"),
                                          accepted, action["ref"]))
        errors.extend(_payload_field_errors(where, action.get("parameters"), fields,
                                            trigger_ref, "action parameters"))
        errors.extend(_jinja_errors(where + ": action parameters", action.get("parameters")))
    return errors


def _check_criteria(where: str, criteria: Any, fields: Optional[Set[str]], trigger: Any
                    ) -> List[str]:
    if criteria is None:
        return []
    if not isinstance(criteria, dict):
        return ["%s: 'criteria' must be a mapping" % (where)]
    errors = []
    for key, criterion in criteria.items():
        here = "%s: criteria %r" % (where, key)
        if not isinstance(key, str) or not key.startswith("trigger."):
            errors.append("%s: the key must start with 'trigger.'" % (here))
            continue
        errors.extend(_payload_field_errors(here, key, fields, trigger, "the key"))
        if not isinstance(criterion, dict):
            errors.append("%s: must be a mapping with 'type' and 'pattern'" % (here))
            continue
        unknown = _unknown_keys(criterion, ("type", "pattern"))
        if unknown:
            errors.append("%s: unknown keys %s" % (here, ", ".join(unknown)))
        operator = criterion.get("type")
        if operator not in CRITERIA_OPERATORS:
            errors.append("%s: operator %r is not a StackStorm operator" % (here, operator))
        elif operator not in OPERATORS_WITHOUT_PATTERN and "pattern" not in criterion:
            errors.append("%s: operator %r needs a 'pattern'" % (here, operator))
    return errors


# ---------------------------------------------------------------------------------------
# Action aliases
# ---------------------------------------------------------------------------------------

def _alias_format_strings(formats: Any) -> Tuple[List[str], List[str]]:
    strings, problems = [], []
    if not isinstance(formats, list) or not formats:
        return strings, ["'formats' must be a non-empty list"]
    for item in formats:
        if isinstance(item, str) and item.strip():
            strings.append(item)
        elif isinstance(item, dict):
            unknown = _unknown_keys(item, ("display", "representation"))
            representation = item.get("representation")
            if unknown:
                problems.append("format %r has unknown keys %s" % (item, ", ".join(unknown)))
            if (not isinstance(representation, list) or not representation
                    or not all(isinstance(r, str) and r.strip() for r in representation)):
                problems.append("format %r needs a non-empty 'representation' list" % (item,))
            else:
                strings.extend(representation)
        else:
            problems.append("format %r must be a non-empty string or a display/representation "
                            "mapping" % (item,))
    return strings, problems


def _format_compiles(format_string: str) -> Optional[str]:
    try:
        from st2common.models.utils.action_alias_utils import ActionAliasFormatParser
    except ImportError:  # neither StackStorm nor the stand-in on sys.path
        return None
    try:
        ActionAliasFormatParser(alias_format=format_string, param_stream="")
    except re.error as e:
        return str(e)
    return None


def check_alias(path: str, index: PackIndex) -> List[str]:
    where = _rel(path)
    alias, problem = load_yaml(path)
    if problem:
        return ["%s: %s" % (where, problem)]
    if not isinstance(alias, dict):
        return ["%s: must be a mapping" % (where)]

    errors = []
    unknown = _unknown_keys(alias, ALIAS_KEYS)
    if unknown:
        errors.append("%s: unknown keys %s" % (where, ", ".join(unknown)))
    if not isinstance(alias.get("name"), str) or not alias.get("name"):
        errors.append("%s: 'name' is required" % (where))
    if "pack" in alias and alias["pack"] != index.ref:
        errors.append("%s: pack %r is not %r" % (where, alias["pack"], index.ref))
    if "enabled" in alias and not isinstance(alias["enabled"], bool):
        errors.append("%s: 'enabled' must be a boolean" % (where))

    strings, problems = _alias_format_strings(alias.get("formats"))
    errors.extend("%s: %s" % (where, p) for p in problems)
    for format_string in strings:
        bad = _format_compiles(format_string)
        if bad:
            errors.append("%s: format %r is not a valid pattern: %s" % (where, format_string, bad))

    for section, keys in (("ack", ("enabled", "format", "append_url", "extra")),
                          ("result", ("enabled", "format", "extra"))):
        value = alias.get(section)
        if value is None:
            continue
        if not isinstance(value, dict):
            errors.append("%s: '%s' must be a mapping" % (where, section))
            continue
        unknown = _unknown_keys(value, keys)
        if unknown:
            errors.append("%s: %s has unknown keys %s" % (where, section, ", ".join(unknown)))
        errors.extend(_jinja_errors("%s: %s.format" % (where, section), value.get("format")))

    action_ref = alias.get("action_ref")
    if not isinstance(action_ref, str):
        errors.append("%s: 'action_ref' is required" % (where))
        return errors
    accepted = index.action_parameters(action_ref)
    if accepted is None:
        errors.append("%s: %s" % (where, index.describe_unknown_action(action_ref)))
        return errors
    immutable = alias.get("immutable_parameters") or {}
    if not isinstance(immutable, dict):
        errors.append("%s: 'immutable_parameters' must be a mapping" % (where))
        immutable = {}
    for key in immutable:
        if key not in accepted:
            errors.append("%s: immutable parameter %r is not a parameter of %s"
                          % (where, key, action_ref))
    for format_string in strings:
        named = _FORMAT_PARAM_RE.findall(format_string)
        for param in named:
            if param not in accepted:
                errors.append("%s: format %r uses {{%s}}, which is not a parameter of %s"
                              % (where, format_string, param, action_ref))
        for name, spec in sorted(accepted.items()):
            if (spec.get("required") is True and "default" not in spec
                    and name not in named and name not in immutable):
                errors.append("%s: format %r does not supply required parameter %r of %s"
                              % (where, format_string, name, action_ref))
    return errors


# ---------------------------------------------------------------------------------------
# Policies
# ---------------------------------------------------------------------------------------

def check_policy(path: str, index: PackIndex) -> List[str]:
    where = _rel(path)
    policy, problem = load_yaml(path)
    if problem:
        return ["%s: %s" % (where, problem)]
    if not isinstance(policy, dict):
        return ["%s: must be a mapping" % (where)]
    errors = []
    unknown = _unknown_keys(policy, POLICY_KEYS)
    if unknown:
        errors.append("%s: unknown keys %s" % (where, ", ".join(unknown)))
    for key in ("name", "resource_ref", "policy_type"):
        if not isinstance(policy.get(key), str):
            errors.append("%s: '%s' is required" % (where, key))
    if "pack" in policy and policy["pack"] != index.ref:
        errors.append("%s: pack %r is not %r" % (where, policy["pack"], index.ref))
    if "enabled" in policy and not isinstance(policy["enabled"], bool):
        errors.append("%s: 'enabled' must be a boolean" % (where))
    ref = policy.get("resource_ref")
    if isinstance(ref, str) and ref not in index.actions:
        errors.append("%s: resource_ref %r is not an action of this pack" % (where, ref))
    policy_type = policy.get("policy_type")
    if isinstance(policy_type, str):
        if policy_type not in POLICY_TYPES:
            errors.append("%s: policy_type %r is not one of %s"
                          % (where, policy_type, ", ".join(sorted(POLICY_TYPES))))
        else:
            errors.extend(_check_supplied(where, policy.get("parameters"),
                                          POLICY_TYPES[policy_type], policy_type))
    return errors


# ---------------------------------------------------------------------------------------
# The whole pack
# ---------------------------------------------------------------------------------------

# kind -> (glob under the pack root, checker taking (path, index))
KINDS = {
    "action": ("actions/*.yaml", check_action),
    "sensor": ("sensors/*.yaml", check_sensor),
    "rule": ("rules/*.yaml", check_rule),
    "alias": ("aliases/*.yaml", check_alias),
    "policy": ("policies/*.yaml", check_policy),
}

_ROOT_FOR_MESSAGES = [None]  # type: List[Optional[str]]


def _rel(path: str) -> str:
    root = _ROOT_FOR_MESSAGES[0]
    if root and os.path.abspath(path).startswith(root + os.sep):
        return os.path.relpath(path, root)
    return path


def set_message_root(root: Optional[str]) -> None:
    """Report paths relative to ``root`` (the repository) instead of absolute."""
    _ROOT_FOR_MESSAGES[0] = os.path.abspath(root) if root else None


def metadata_files(root: str, kind: str) -> List[str]:
    pattern = KINDS[kind][0]
    files = glob.glob(os.path.join(root, pattern)) + glob.glob(
        os.path.join(root, pattern.replace(".yaml", ".yml")))
    return sorted(files)


def check_pack(root: str, expected_ref: Optional[str] = None) -> List[str]:
    """Every check over a pack directory; files that do not exist yet are simply absent."""
    errors = []
    manifest = os.path.join(root, "pack.yaml")
    if os.path.isfile(manifest):
        errors.extend(check_pack_yaml(manifest, expected_ref))
    else:
        errors.append("%s: pack.yaml is missing" % (root))
    schema = os.path.join(root, "config.schema.yaml")
    if os.path.isfile(schema):
        errors.extend(check_config_schema(schema))
    index = PackIndex.load(root, expected_ref)
    for kind, (_, checker) in KINDS.items():
        for path in metadata_files(root, kind):
            errors.extend(checker(path, index))
    workflows = os.path.join(root, "actions", "workflows")
    referenced = set(os.path.normpath(os.path.join(root, "actions", str(m.get("entry_point"))))
                     for m in index.actions.values() if m.get("runner_type") == "orquesta")
    for path in sorted(glob.glob(os.path.join(workflows, "*.yaml"))):
        if os.path.normpath(path) not in referenced:
            errors.append("%s: no action metadata (runner_type: orquesta) uses this workflow"
                          % (_rel(path)))
    return errors
