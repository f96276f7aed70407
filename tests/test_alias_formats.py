"""The pack's ChatOps aliases as a whole, plus what the per-alias tests share.

StackStorm picks an alias by matching the chat command against EVERY registered format
string and refuses an ambiguous command, so each command must match exactly one format of
the whole pack, not just of its own alias. The helpers below follow StackStorm 3.9's path
from a chat line to a reply: extract the parameters (`action_alias_utils`), add the
immutable ones, cast them to the action's types (StackStorm's casts, with alias execution's
override that splits arrays on commas), run the action, and render the alias's `ack`
(`render_values`, StrictUndefined, over the scheduled execution) and `result` (the chatops
pack's `format_execution_result`: StackStorm's Jinja environment with undefined allowed, over
the finished execution as a dict). Casts and Jinja are StackStorm's own code."""
import glob
import json
import os
import traceback
import types

import pytest
import yaml

from st2api.controllers.v1.aliasexecution import CAST_OVERRIDES
from st2common.exceptions.content import ParseException
from st2common.models.utils.action_alias_utils import extract_parameters
from st2common.runners.utils import get_action_class_instance
from st2common.util.casts import get_cast
from st2common.util.jinja import get_jinja_environment, render_values

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACK = "email_retraction"


def load_yaml(path):
    with open(path) as handle:
        return yaml.safe_load(handle)


def aliases():
    """name -> alias metadata, for every aliases/*.yaml."""
    found = {}
    for path in sorted(glob.glob(os.path.join(PACK_ROOT, "aliases", "*.yaml"))):
        alias = load_yaml(path)
        found[alias["name"]] = alias
    return found


def format_strings(alias):
    out = []
    for item in alias["formats"]:
        out.extend(item["representation"] if isinstance(item, dict) else [item])
    return out


def matches(command):
    """(alias name, format string) of every format in the pack that accepts `command`."""
    found = []
    for name, alias in aliases().items():
        for fmt in format_strings(alias):
            try:
                extract_parameters(format_str=fmt, param_stream=command)
            except ParseException:
                continue
            found.append((name, fmt))
    return found


def action_parameters(action_ref):
    name = action_ref.split(".", 1)[1]
    return load_yaml(os.path.join(PACK_ROOT, "actions", name + ".yaml"))["parameters"]


def _cast(kind, value):
    """StackStorm's own cast for a parameter of this type, the ChatOps override first: the
    loop of `action_param_utils.cast_params` as alias execution calls it (no type, no cast)."""
    if not kind:
        return value
    cast = CAST_OVERRIDES.get(kind) or get_cast(cast_type=kind)
    return cast(value) if cast else value


def chat_parameters(alias_name, command):
    """The parameters StackStorm would pass to the action for this chat command."""
    alias = aliases()[alias_name]
    [(name, fmt)] = matches(command)
    assert name == alias_name
    params = extract_parameters(format_str=fmt, param_stream=command)
    immutable = alias.get("immutable_parameters") or {}
    assert not set(params) & set(immutable), "a command cannot override an immutable one"
    params.update(immutable)
    spec = action_parameters(alias["action_ref"])
    return {k: _cast(spec.get(k, {}).get("type"), v) for k, v in params.items()}


def execute(action_cls, config, params, action_ref):
    """Run the real action as the Python runner would; the execution as the API returns it."""
    action = get_action_class_instance(action_cls=action_cls, config=config)
    execution = {"id": "5f0c0ffee0000000000000%02d" % (len(params) % 100),
                 "action": {"ref": action_ref}, "parameters": params,
                 "context": {"user": "analyst", "action_alias_ref": {"name": "x"}}}
    try:
        returned = action.run(**params)
    except Exception as exc:  # the runner reports the traceback and no result
        execution.update(status="failed", result={
            "exit_code": 1, "result": "None", "stdout": "",
            "stderr": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))})
        return execution
    ok, result = returned if isinstance(returned, tuple) else (True, returned)
    execution.update(status="succeeded" if ok else "failed", result={
        "exit_code": 0, "result": json.loads(json.dumps(result)), "stdout": "", "stderr": ""})
    return execution


def render_result(alias_name, execution):
    """The chatops pack's `format_execution_result`: StackStorm's Jinja environment with
    undefined allowed, over the finished execution as a dict."""
    template = aliases()[alias_name]["result"]["format"]
    return get_jinja_environment(allow_undefined=True).from_string(template).render(
        {"execution": execution}).strip()


def render_ack(alias_name, params):
    """The ack is rendered when the execution is scheduled: an API object, no result yet."""
    execution = types.SimpleNamespace(id="5f0c0ffee000000000000001", status="requested",
                                      parameters=params, result={})
    template = aliases()[alias_name]["ack"]["format"]
    # what alias execution does with `ack.format`: render_values, undefined not allowed
    return render_values({"alias": template}, {
        "execution": execution, "actionalias": aliases()[alias_name]})["alias"].strip()


# --- the pack as a whole --------------------------------------------------------------------

MID = "<abc@evil.example>"
COMMANDS = [
    ("retract <abc@evil.example> from alice@corp.example", "retract",
     {"message_id": MID, "recipients": "alice@corp.example", "destination": None}),
    ("retract abc@evil.example from alice@corp.example, bob@corp.example to trash", "retract",
     {"message_id": "abc@evil.example", "recipients": "alice@corp.example, bob@corp.example",
      "destination": "trash"}),
    ("preview retract <abc@evil.example> from alice@corp.example to soft_delete",
     "retract_preview", {"message_id": MID, "recipients": "alice@corp.example",
                         "destination": "soft_delete"}),
    ("restore <abc@evil.example> for alice@corp.example,carol@corp-mail.example", "restore",
     {"message_id": MID, "recipients": "alice@corp.example,carol@corp-mail.example"}),
]
OPTIONAL = {  # aliases of actions being written in parallel: checked once they exist
    "retractions": [
        ("retractions", {"last": "24h"}),
        ("retractions last 7d", {"last": "7d"}),
    ],
    "retraction_details": [
        ("retraction details", {"last": "24h", "status": None}),
        ("retraction details last 1h failed", {"last": "1h", "status": "failed"}),
        ("retraction details failed", {"last": "24h", "status": "failed"}),
        ("retraction details last 7d", {"last": "7d", "status": None}),
    ],
}


def all_commands():
    out = list(COMMANDS)
    present = aliases()
    for name, cases in OPTIONAL.items():
        if name in present:
            out += [(command, name, params) for command, params in cases]
    return out


def test_every_alias_is_exercised():
    exercised = {name for _, name, _ in all_commands()}
    assert exercised == set(aliases())


@pytest.mark.parametrize("command,alias_name,params", all_commands(),
                         ids=[c for c, _, _ in all_commands()])
def test_each_command_matches_exactly_one_format_of_the_pack(command, alias_name, params):
    [(name, fmt)] = matches(command)
    assert name == alias_name
    assert extract_parameters(format_str=fmt, param_stream=command) == params


@pytest.mark.parametrize("command", [
    "retract <abc@evil.example>",  # no recipients
    "retract from alice@corp.example",
    "preview <abc@evil.example> from alice@corp.example",
    "restore <abc@evil.example>",
    "retraction",
])
def test_incomplete_commands_match_nothing(command):
    assert matches(command) == []


def test_aliases_are_enabled_and_name_their_pack():
    for name, alias in aliases().items():
        assert alias["pack"] == PACK and alias["enabled"] is True, name
        assert alias["action_ref"].startswith(PACK + "."), name
        assert alias["result"]["format"].strip(), name
        for item in alias["formats"]:
            assert isinstance(item, dict) and item["display"], name


@pytest.mark.parametrize("alias_name", sorted(aliases()))
def test_reply_to_a_timed_out_execution_names_the_cause(alias_name):
    # The Python runner's output for an action killed at its timeout: no result, the action's
    # log lines on stderr, and the runner's own error.
    ref = aliases()[alias_name]["action_ref"]
    execution = {"id": "5f0c0ffee000000000000009", "status": "timeout",
                 "action": {"ref": ref}, "parameters": {},
                 "result": {"exit_code": -9, "result": "None", "stdout": "",
                            "stderr": "st2.actions.python.X: INFO run 1: 10/500 copies\n",
                            "error": "Action failed to complete in 600 seconds"}}
    assert render_result(alias_name, execution) == (
        ":x: %s failed: Action failed to complete in 600 seconds" % ref)
