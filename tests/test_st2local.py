"""tools/st2local, the StackStorm stand-in the tests and the demo share, tested on its own with
a small pack written to a temporary directory: rule criteria, parameter rendering and casting
(StackStorm's live-parameter rendering, Jinja defaults cast to their types, a rule parameter
that shadows the trigger context), the action runner, workflow transitions and engine
commands, with-items failure semantics, core.ask, Orquesta's evaluation of workflow inputs
and string results, and the sensor service.
"""
import json
import os
import textwrap
import time

import jinja2
import pytest

from tools.st2local import (NONE_MAGIC_VALUE, Pack, ParameterError, ParamException,
                            PayloadDropped, RuleEngine, RuleError, Runtime, SensorDrive,
                            SensorService, UndefinedParameter, Workflow, WorkflowError,
                            cast_params, criteria_match, enforce, evaluate, load_module,
                            parameter_problems, render_final_params, render_live_params,
                            render_values)
from tools.st2local.expressions import ExpressionError
from tools.st2local.rules import ShadowedContext

REF = "st2local_test"

FILES = {
    "pack.yaml": """
        ref: st2local_test
        name: st2local_test
        description: A pack for testing the st2local harness.
        version: 0.0.1
        author: tests
        email: tests@example.com
    """,
    "actions/step.yaml": """
        name: step
        runner_type: python-script
        entry_point: step.py
        enabled: true
        parameters:
          name: {type: string, required: true}
          fail: {type: boolean, default: false}
          hold: {type: number, default: 0}
          value: {type: object}
          parts: {type: array, items: {type: string}}
    """,
    "actions/step.py": """
        import threading
        import time

        from st2common.runners.base_action import Action

        LOCK = threading.Lock()
        STATE = {"in_flight": 0, "peak": 0, "ran": []}


        class StepAction(Action):
            def run(self, name, fail=False, hold=0, value=None, parts=None):
                with LOCK:
                    STATE["in_flight"] += 1
                    STATE["peak"] = max(STATE["peak"], STATE["in_flight"])
                    STATE["ran"].append(name)
                try:
                    time.sleep(hold)
                finally:
                    with LOCK:
                        STATE["in_flight"] -= 1
                result = {"name": name, "value": value, "joined": "".join(parts or []),
                          "greeting": self.config.get("greeting")}
                return (False, result) if fail else (True, result)
    """,
    "actions/boom.yaml": """
        name: boom
        runner_type: python-script
        entry_point: boom.py
        enabled: true
        parameters: {}
    """,
    "actions/boom.py": """
        from st2common.runners.base_action import Action


        class BoomAction(Action):
            def run(self):
                raise RuntimeError("kaput")
    """,
    "actions/defaults.yaml": """
        name: defaults
        runner_type: python-script
        entry_point: defaults.py
        enabled: true
        parameters:
          count: {type: integer, default: "{{ config_context.count }}"}
          flag: {type: boolean, default: "{{ config_context.flag }}"}
          who: {type: string, default: "{{ action_context.user }}"}
          size: {type: integer, default: 5}
          note: {type: string}
    """,
    "actions/defaults.py": """
        from st2common.runners.base_action import Action


        class DefaultsAction(Action):
            def run(self, count, flag, who, size, note):
                return {"count": count, "flag": flag, "who": who, "size": size, "note": note}
    """,
    "actions/transitions.yaml": """
        name: transitions
        runner_type: orquesta
        entry_point: workflows/transitions.yaml
        enabled: true
        parameters:
          mode: {type: string, required: true}
    """,
    "actions/workflows/transitions.yaml": """
        version: 1.0
        input:
          - mode
          - label: "{{ 'wf-' ~ ctx('mode') }}"
        vars:
          - seen: []
          - note: null
        output:
          - note: "{{ ctx('note') }}"
          - label: "{{ ctx('label') }}"
          - seen: "{{ ctx('seen') }}"
          - both: "{{ ctx('label') ~ '/' ~ ctx('note') }}"
        tasks:
          first:
            action: st2local_test.step
            input:
              name: first
              fail: "{{ ctx('mode') != 'ok' }}"
            next:
              - when: "{{ succeeded() }}"
                publish:
                  - seen: "{{ ctx('seen') + [result().result.name] }}"
                  - note: "{{ 'after ' ~ ctx('seen') | length }}"
                do: second
              - when: "{{ failed() and ctx('mode') == 'continue' }}"
                publish:
                  - note: continued
              - when: "{{ failed() and ctx('mode') == 'noop' }}"
                publish:
                  - note: remediated
                do: noop
              - when: "{{ failed() and ctx('mode') == 'fail' }}"
                publish:
                  - note: failed on purpose
                do: fail
              - when: "{{ failed() and ctx('mode') == 'recover' }}"
                do: second
          second:
            action: st2local_test.step
            input:
              name: second
    """,
    "actions/items.yaml": """
        name: items
        runner_type: orquesta
        entry_point: workflows/items.yaml
        enabled: true
        parameters:
          names: {type: array, required: true}
          concurrency: {type: integer}
          failing: {type: array, default: []}
          holds: {type: object, default: {}}
    """,
    "actions/workflows/items.yaml": """
        version: 1.0
        input:
          - names
          - concurrency
          - failing
          - holds
        vars:
          - results: null
        output:
          - results: <% ctx(results) %>
        tasks:
          each:
            with:
              items: <% ctx(names) %>
              concurrency: <% ctx(concurrency) %>
            action: st2local_test.step
            input:
              name: <% item() %>
              fail: <% item() in ctx(failing) %>
              hold: <% ctx(holds).get(item(), 0) %>
            next:
              - when: <% completed() %>
                publish:
                  - results: <% result() %>
    """,
    "actions/evaluate.yaml": """
        name: evaluate
        runner_type: orquesta
        entry_point: workflows/evaluate.yaml
        enabled: true
        parameters:
          text: {type: string, required: true}
          parts: {type: array, default: []}
    """,
    "actions/workflows/evaluate.yaml": """
        version: 1.0
        input:
          - text
          - parts
        vars:
          - yaql_joined: null
          - jinja_joined: null
        output:
          - text: "{{ ctx('text') }}"
          - yaql_joined: "{{ ctx('yaql_joined') }}"
          - jinja_joined: "{{ ctx('jinja_joined') }}"
        tasks:
          join:
            action: st2local_test.step
            input:
              name: "{{ ctx('text') }}"
              parts: "{{ ctx('parts') }}"
            next:
              - when: <% succeeded() %>
                publish:
                  - yaql_joined: <% result().result.joined %>
              - when: "{{ succeeded() }}"
                publish:
                  - jinja_joined: "{{ result().result.joined }}"
    """,
    "actions/joined.yaml": """
        name: joined
        runner_type: orquesta
        entry_point: workflows/joined.yaml
        enabled: true
        parameters:
          parts: {type: array, required: true}
    """,
    "actions/workflows/joined.yaml": """
        version: 1.0
        input:
          - parts
        tasks:
          step:
            action: st2local_test.step
            input:
              name: <% ctx(parts).join('') %>
    """,
    "actions/ask.yaml": """
        name: ask
        runner_type: orquesta
        entry_point: workflows/ask.yaml
        enabled: true
        parameters: {}
    """,
    "actions/workflows/ask.yaml": """
        version: 1.0
        vars:
          - response: null
        output:
          - response: "{{ ctx('response') }}"
        tasks:
          ask:
            action: core.ask
            input:
              route: tests
              schema:
                type: object
                properties:
                  approve: {type: boolean, required: true}
                  who: {type: string, default: nobody}
            next:
              - when: "{{ succeeded() }}"
                publish:
                  - response: "{{ result().response }}"
              - when: "{{ failed() }}"
                do: fail
    """,
    "sensors/tick_sensor.yaml": """
        class_name: TickSensor
        entry_point: tick_sensor.py
        description: Dispatches the payloads its config lists, one per poll.
        enabled: true
        poll_interval: 60
        trigger_types:
          - name: tick
            description: A tick.
            payload_schema:
              type: object
              additionalProperties: false
              required: [name, level]
              properties:
                name: {type: string}
                level: {type: string, enum: [low, high]}
                tags: {type: array, items: {type: string}}
                extra: {type: [object, "null"]}
                hold: {type: [number, string]}
          - name: shadow
            description: A payload for the shadow rule.
            payload_schema:
              type: object
              properties:
                name: {type: string}
    """,
    "sensors/tick_sensor.py": """
        from st2reactor.sensor.base import PollingSensor


        class TickSensor(PollingSensor):
            def setup(self):
                self._payloads = list(self.config.get("payloads") or [])

            def poll(self):
                if self._payloads:
                    self.sensor_service.dispatch(trigger="st2local_test.tick",
                                                 payload=self._payloads.pop(0))

            def cleanup(self):
                pass

            def add_trigger(self, trigger):
                pass

            def update_trigger(self, trigger):
                pass

            def remove_trigger(self, trigger):
                pass
    """,
    "rules/on_tick.yaml": """
        name: on_tick
        pack: st2local_test
        description: Urgent high ticks run step.
        enabled: true
        trigger: {type: st2local_test.tick}
        criteria:
          trigger.level: {type: equals, pattern: high}
          trigger.tags[0]: {type: startswith, pattern: urg}
        action:
          ref: st2local_test.step
          parameters:
            name: "{{ trigger.name }}"
            value: "{{ trigger.extra | tojson }}"
            hold: "{{ trigger.hold | default(0) }}"
    """,
    "rules/shadow.yaml": """
        name: shadow
        pack: st2local_test
        description: Sets an action parameter named trigger.
        enabled: true
        trigger: {type: st2local_test.shadow}
        action:
          ref: st2local_test.labelled
          parameters:
            trigger: fixed
            name: "{{ trigger.name }}"
    """,
    "actions/labelled.yaml": """
        name: labelled
        runner_type: python-script
        entry_point: step.py
        enabled: true
        parameters:
          name: {type: string, required: true}
          trigger: {type: string}
    """,
    "rules/disabled.yaml": """
        name: disabled
        pack: st2local_test
        description: Never runs.
        enabled: false
        trigger: {type: st2local_test.tick}
        action:
          ref: st2local_test.boom
    """,
    "rules/hook.yaml": """
        name: hook
        pack: st2local_test
        description: A webhook.
        enabled: true
        trigger:
          type: core.st2.webhook
          parameters: {url: st2local/hook}
        action:
          ref: st2local_test.step
          parameters:
            name: "{{ trigger.body.name }}"
    """,
}


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    root = tmp_path_factory.mktemp("st2local_test")
    for name, text in FILES.items():
        path = os.path.join(str(root), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write(textwrap.dedent(text).lstrip())
    return Pack(str(root))


@pytest.fixture
def state(pack):
    """The step action's module state (one module per process, as one action runner)."""
    module = load_module(os.path.join(pack.root, "actions", "step.py"))
    module.STATE.update(in_flight=0, peak=0, ran=[])
    return module.STATE


def runtime(pack, **kwargs):
    return Runtime({"greeting": "hello"}, pack=pack, **kwargs)


# -- criteria ----------------------------------------------------------------------------------

PAYLOAD = {"name": "Build", "level": "high", "count": 3, "tags": ["urgent", "ops"],
           "nested": {"owner": "Ann"}, "nothing": None}


@pytest.mark.parametrize("key, operator, pattern, expected", [
    ("trigger.level", "equals", "high", True),
    ("trigger.level", "eq", "HIGH", False),
    ("trigger.level", "iequals", "HIGH", True),
    ("trigger.level", "nequals", "low", True),
    ("trigger.name", "contains", "uil", True),
    ("trigger.name", "icontains", "BUI", True),
    ("trigger.name", "ncontains", "x", True),
    ("trigger.name", "startswith", "Bu", True),
    ("trigger.name", "iendswith", "LD", True),
    ("trigger.name", "matchwildcard", "B*d", True),
    ("trigger.name", "regex", "ui", True),
    ("trigger.name", "matchregex", "ui", False),  # re.match: anchored at the start
    ("trigger.name", "iregex", "^build$", True),
    ("trigger.count", "lessthan", 4, True),
    ("trigger.count", "gt", 3, False),
    ("trigger.level", "inside", ["low", "high"], True),
    ("trigger.level", "nin", ["low"], True),
    ("trigger.tags[1]", "equals", "ops", True),
    ("trigger.nested.owner", "equals", "Ann", True),
    ("trigger.nested.missing", "exists", None, False),
    ("trigger.nested.missing", "nexists", None, True),
    ("trigger.nothing", "nexists", None, True),
    ("trigger.tags[9]", "equals", "x", False),
    ("trigger.missing", "contains", "x", False),  # the operator raises on None: no match
    ("trigger.level", "equals", None, False),
])
def test_criteria_operators(key, operator, pattern, expected):
    matched, why = criteria_match({key: {"type": operator, "pattern": pattern}}, PAYLOAD)
    assert matched is expected, why


def test_criteria_all_must_hold_and_unknown_operators_are_refused():
    both = {"trigger.level": {"type": "equals", "pattern": "high"},
            "trigger.name": {"type": "equals", "pattern": "Other"}}
    matched, why = criteria_match(both, PAYLOAD)
    assert (matched, why) == (False, "trigger.name equals 'Other': 'Build' does not match")
    assert criteria_match({"trigger.level": {"pattern": "x"}}, PAYLOAD)[0] is False
    assert criteria_match({}, {}) == (True, "matched")
    assert criteria_match({"trigger.level": {"type": "exists"}}, {})[0] is False
    with pytest.raises(RuleError, match="timediff_lt"):
        criteria_match({"trigger.at": {"type": "timediff_lt", "pattern": 60}}, PAYLOAD)
    with pytest.raises(RuleError, match="does not start with 'trigger'"):
        criteria_match({"payload.level": {"type": "equals", "pattern": "high"}}, PAYLOAD)


# -- rendering and casting ---------------------------------------------------------------------

def test_render_values_as_stackstorm_renders_rule_parameters():
    payload = {"name": "{{ 7 * 7 }}", "recipients": ["a@x.example"], "none": None, "n": 5}
    rendered = render_values({
        "name": "{{ trigger.name }}", "recipients": "{{ trigger.recipients | tojson }}",
        "none": "{{ trigger.none | use_none }}", "plain": 17, "listed": ["{{ trigger.n }}"],
        "count": "{{ trigger.n }}", "whole": "{{ __context.trigger.n }}"}, {"trigger": payload})
    assert rendered == {"name": "{{ 7 * 7 }}", "recipients": '["a@x.example"]',
                        "none": NONE_MAGIC_VALUE, "plain": 17, "listed": ["5"], "count": "5",
                        "whole": "5"}
    with pytest.raises(jinja2.UndefinedError):
        render_values({"x": "{{ trigger.missing }}"}, {"trigger": payload})


def test_cast_params_to_the_declared_types():
    accepted = {"a": {"type": "array"}, "o": {"type": "object"}, "b": {"type": "boolean"},
                "i": {"type": "integer"}, "n": {"type": "number"}, "s": {"type": "string"},
                "u": {}}
    cast = cast_params({"a": '["x"]', "o": "{'k': 1}", "b": "true", "i": "7", "n": "2.5",
                        "s": NONE_MAGIC_VALUE, "u": "kept"}, accepted)
    assert cast == {"a": ["x"], "o": {"k": 1}, "b": True, "i": 7, "n": 2.5, "s": None,
                    "u": "kept"}
    assert cast_params({"a": NONE_MAGIC_VALUE, "i": NONE_MAGIC_VALUE}, accepted) == \
        {"a": None, "i": None}
    with pytest.raises(ValueError, match="must either be a string or None"):
        cast_params({"s": 49}, accepted)


LIVE = {"s": {"type": "string"}, "i": {"type": "integer"}, "a": {"type": "array"},
        "o": {"type": "object"}, "d": {"type": "integer", "default": 7},
        "j": {"type": "integer", "default": "{{ config_context.n }}"}}


def live(params, accepted=LIVE, **kwargs):
    return render_live_params(accepted, params, {"user": "stanley", "pack": "p"},
                              {"n": "3", "secret": "s3cr3t"}, **kwargs)


def test_live_parameters_are_rendered_as_stackstorm_renders_them():
    """st2common.util.param.render_live_params: what any execution's parameters go through."""
    # a template without names is rendered (Python runs in StackStorm's Jinja), then cast
    assert live({"s": "{{ 7 * 7 }}", "i": "{{ 6 * 7 }}"}) == {"s": "49", "i": 42, "j": 3}
    assert live({"s": "{{ ''.__class__.__name__ }}"})["s"] == "str"
    # a template whose every name is unknown is text; one that mixes known and unknown is not
    assert live({"s": "Hi {{ x }} {{ y.z }}"})["s"] == "Hi {{ x }} {{ y.z }}"
    with pytest.raises(ParamException, match='Dependency unsatisfied in variable "s"'):
        live({"s": "{{ config_context.n }} {{ x }}"})
    # the contexts: the pack config, who runs it, the datastore ('' for a missing key)
    assert live({"s": "{{ config_context.secret }}/{{ action_context.user }}/"
                      "{{ st2kv.system.k }}/{{ st2kv.system.none }}"},
                datastore={"system": {"k": "kv"}})["s"] == "s3cr3t/stanley/kv/"
    # parameters see each other; lists and dicts are rendered as JSON; text that is not a
    # template is a value
    rendered = live({"s": "{{ i + 1 }}", "i": 4, "a": ["{{ 1 + 1 }}", "{{ i }}"],
                     "o": {"k": "{{ s }}!"}})
    assert rendered == {"s": "5", "i": 4, "a": ["2", "4"], "o": {"k": "5!"}, "j": 3}
    assert live({"s": "{{ oops"})["s"] == "{{ oops"
    # a None live parameter takes its default; Jinja defaults are rendered and cast
    assert live({"d": None}) == {"d": 7, "j": 3}
    with pytest.raises(ParamException, match="Cyclic dependency"):
        live({"s": "{{ i }}", "i": "{{ s }}"})
    with pytest.raises(UndefinedParameter, match='Failed to render parameter "s"'):
        live({"s": "{{ config_context.missing.deeper }}"})
    with pytest.raises(ValueError, match="must either be a string or None"):
        live({"s": 5})
    # the final parameters: every declared one, defaults rendered, live values not again
    assert render_final_params(LIVE, {"s": "{{ 1 }}"}, {}, {"n": 2}) == {
        "s": "{{ 1 }}", "i": None, "a": None, "o": None, "d": 7, "j": 2}


def test_jinja_defaults_are_cast_to_the_declared_type(pack):
    rt = Runtime({"count": "12", "flag": "true"}, pack=pack)
    status, result = rt.run_action("st2local_test.defaults", {})
    assert status == "succeeded"
    assert result["result"] == {"count": 12, "flag": True, "who": "stanley", "size": 5,
                                "note": None}
    status, result = rt.run_action("st2local_test.defaults", {"count": "3", "note": "n"})
    assert (result["result"]["count"], result["result"]["note"]) == (3, "n")
    with pytest.raises(ParameterError, match="invalid literal for int"):
        Runtime({"count": "many", "flag": "false"}, pack=pack).run_action(
            "st2local_test.defaults", {})


def test_workflow_task_parameters_are_rendered_again(pack, state):
    """YAQL's result is evaluated again as YAQL only, so Jinja it assembles reaches the task's
    action execution, whose parameters render_live_params renders."""
    for parts, ran in ((["{", "{ 6 * 7 }", "}"], "42"), (["Hi {", "{ x }", "}"], "Hi {{ x }}")):
        walk = runtime(pack).workflow("st2local_test.joined", {"parts": parts}).run()
        assert walk.status == "succeeded", walk.errors
        assert state["ran"][-1] == ran


def test_a_rule_parameter_named_like_the_trigger_context(pack):
    """StackStorm's graph has one node per name: a rule setting an action parameter `trigger`
    replaces the payload, and `{{ trigger.name }}` fails. st2local does the same by default;
    with strict=False it warns and keeps the payload."""
    payload = {"name": "n1"}
    (strict,) = RuleEngine(None, pack, strict=True).dispatch("st2local_test.shadow", payload)
    assert strict.failure_reason == (
        "UndefinedParameter: Failed to render parameter \"name\": 'str object' has no "
        "attribute 'name'")
    with pytest.warns(ShadowedContext, match="rule shadow sets trigger"):
        (kept,) = RuleEngine(None, pack, strict=False).dispatch("st2local_test.shadow", payload)
    assert (kept.failure_reason, kept.params) == (None, {"trigger": "fixed", "name": "n1"})


def test_parameter_problems(pack):
    accepted = pack.action_parameters("st2local_test.step")
    assert "timeout" in accepted  # the python-script runner's own parameter
    assert parameter_problems({"name": "x", "hold": 1.5}, accepted, "st2local_test.step") == []
    assert parameter_problems({"hold": "soon", "color": "red"}, accepted, "step") == [
        "'color' is not a parameter of step", "required parameter 'name' of step is missing",
        "name: 'name' is a required property", "hold: 'soon' is not of type 'number'"]
    assert parameter_problems({"name": None}, accepted, "step") != []  # required: not null
    assert parameter_problems({"name": "x", "value": None}, accepted, "step") == []


def test_rule_engine_matches_renders_casts_and_runs(pack, state):
    engine = RuleEngine(runtime(pack), pack)
    payload = {"name": "deploy", "level": "high", "tags": ["urgent"], "extra": {"k": [1]},
               "hold": "0"}
    (enforcement,) = engine.dispatch("st2local_test.tick", payload)
    assert (enforcement.rule["name"], enforcement.failure_reason) == ("on_tick", None)
    assert enforcement.params == {"name": "deploy", "value": {"k": [1]}, "hold": 0.0}
    assert enforcement.status == "succeeded"
    assert enforcement.result["result"]["greeting"] == "hello"  # the runtime's pack config
    assert engine.dispatch("st2local_test.tick", dict(payload, level="low")) == []
    assert engine.dispatch("st2local_test.tick", dict(payload, tags=["later"])) == []
    assert state["ran"] == ["deploy"]  # the disabled rule never ran boom

    (missing,) = engine.dispatch("st2local_test.tick", {"level": "high", "tags": ["urgent"]})
    assert missing.status is None and missing.failure_reason == (
        "UndefinedParameter: Failed to render parameter \"name\": 'dict object' has no "
        "attribute 'name'")
    (bad,) = engine.dispatch("st2local_test.tick", dict(payload, hold="soon"))
    assert bad.status is None and "could not convert string to float" in bad.failure_reason
    assert state["ran"] == ["deploy"]


def test_rule_engine_matches_trigger_parameters(pack):
    engine = RuleEngine(None, pack)  # render only
    body = {"body": {"name": "from-hook"}, "headers": {}}
    assert engine.dispatch("core.st2.webhook", body, {"url": "other/hook"}) == []
    (enforcement,) = engine.dispatch("core.st2.webhook", body, {"url": "st2local/hook"})
    assert enforcement.params == {"name": "from-hook"} and enforcement.status is None


def test_enforce_names_a_missing_action(pack):
    rule = {"name": "r", "action": {"ref": "st2local_test.nothing", "parameters": {}}}
    with pytest.raises(RuleError, match="st2local_test.nothing, which does not exist"):
        enforce(rule, {}, pack)


# -- the action runner -------------------------------------------------------------------------

def test_python_actions_results_crashes_and_hooks(pack, state):
    seen = []
    hooks = (lambda: seen.append("before"), lambda: seen.append("after"))
    rt = runtime(pack, crash=[("t", 1)], around={("t", 2): hooks})
    status, result = rt.run_action("st2local_test.step", {"name": "a", "hold": "0"})
    assert status == "succeeded"
    assert result == {"result": {"name": "a", "value": None, "joined": "", "greeting": "hello"},
                      "exit_code": 0, "stdout": "", "stderr": ""}
    # every declared parameter reaches the runner, None when it has no value
    assert rt.trail[-1] == ("st2local_test.step", {
        "name": "a", "hold": 0.0, "fail": False, "value": None, "parts": None, "timeout": 600,
        "debug": None, "content_version": None, "env": None, "log_level": None}, "succeeded")
    assert rt.run_action("st2local_test.step", {"name": "b", "fail": True})[0] == "failed"
    assert rt.run_action("st2local_test.boom", {}) == ("failed", {
        "result": None, "exit_code": 1, "stdout": "", "stderr": "RuntimeError: kaput"})
    assert rt.run_action("st2local_test.step", {"name": "c"}, ("t", 1)) == ("failed", {
        "result": None, "exit_code": -9, "stdout": "", "stderr": "the action runner died"})
    assert rt.run_action("st2local_test.step", {"name": "d"}, ("t", 2))[0] == "succeeded"
    assert seen == ["before", "after"] and state["ran"] == ["a", "b", "d"]
    with pytest.raises(ParameterError, match="'color' is not a parameter"):
        rt.run_action("st2local_test.step", {"name": "e", "color": "red"})
    with pytest.raises(ParameterError, match="does not exist"):
        rt.run_action("st2local_test.nothing", {})


# -- workflow transitions ----------------------------------------------------------------------

@pytest.mark.parametrize("mode, status, tasks, note", [
    ("ok", "succeeded", [("first", "succeeded"), ("second", "succeeded")], "after 1"),
    ("continue", "failed", [("first", "failed")], "continued"),  # no `do`: continue
    ("noop", "succeeded", [("first", "failed")], "remediated"),
    ("fail", "failed", [("first", "failed")], "failed on purpose"),
    ("recover", "succeeded", [("first", "failed"), ("second", "succeeded")], None),
    ("unhandled", "failed", [("first", "failed")], None),
])
def test_transitions_and_engine_commands(pack, state, mode, status, tasks, note):
    walk = runtime(pack).workflow("st2local_test.transitions", {"mode": mode}).run()
    assert (walk.status, walk.tasks) == (status, tasks)
    assert walk.output["note"] == note and walk.output["label"] == "wf-" + mode
    assert walk.output["both"] == "wf-%s/%s" % (mode, note)  # outputs see earlier outputs
    assert walk.output["seen"] == (["first"] if mode == "ok" else [])
    assert walk.execution()[1] == (
        {"output": walk.output} if status == "succeeded"
        else {"output": walk.output, "errors": walk.errors})
    if status == "failed":
        assert walk.errors[0]["task_id"] == "first"


def test_a_workflow_run_as_an_action_reports_its_result(pack, state):
    rt = runtime(pack)
    status, result = rt.run_action("st2local_test.transitions", {"mode": "fail"})
    assert status == "failed"
    assert result["output"]["note"] == "failed on purpose"
    assert result["errors"] == [{"type": "error", "task_id": "first",
                                 "message": "task first ran the fail command",
                                 "result": result["errors"][0]["result"]}]
    assert [ref for ref, _, _ in rt.trail] == ["st2local_test.step",
                                               "st2local_test.transitions"]
    with pytest.raises(WorkflowError, match="not inputs of the workflow"):
        Workflow(rt, "st2local_test.transitions", {"mode": "ok", "other": 1}).run()


# -- with-items --------------------------------------------------------------------------------

def items(pack, **inputs):
    rt = runtime(pack)
    return rt, rt.workflow("st2local_test.items", inputs).run()


def test_with_items_one_at_a_time_stops_at_the_first_failure(pack, state):
    rt, walk = items(pack, names=["a", "b", "c", "d"], concurrency=1, failing=["b"])
    assert walk.status == "failed" and state["ran"] == ["a", "b"]
    results = walk.output["results"]
    assert [r and r["result"]["name"] for r in results] == ["a", "b", None, None]
    assert [where for where, ref, _ in rt.calls if ref == "st2local_test.step"] == \
        [("each", 0), ("each", 1)]


def test_with_items_keeps_scheduling_while_an_item_still_runs(pack, state):
    """Orquesta schedules more items after a failure as long as another item is running; the
    task fails once none is running."""
    rt, walk = items(pack, names=["slow", "bad", "c", "d", "e"], concurrency=2,
                     failing=["bad"], holds={"slow": 0.6})
    assert walk.status == "failed"
    assert sorted(state["ran"]) == ["bad", "c", "d", "e", "slow"]
    assert [r["result"]["name"] for r in walk.output["results"]] == \
        ["slow", "bad", "c", "d", "e"]  # in item order, whatever order they finished in
    assert [where for where, ref, _ in rt.calls if ref == "st2local_test.step"] == \
        [("each", i) for i in range(5)]
    assert [p["name"] for ref, p, _ in rt.trail if ref == "st2local_test.step"] == \
        ["slow", "bad", "c", "d", "e"]


def test_with_items_concurrency_bounds_the_items_in_flight(pack, state):
    started = time.monotonic()
    rt, walk = items(pack, names=["a", "b", "c", "d", "e", "f"], concurrency=2,
                     holds={n: 0.15 for n in "abcdef"})
    elapsed = time.monotonic() - started
    assert walk.status == "succeeded" and state["peak"] == 2
    assert elapsed >= 0.45  # three rounds of two
    state.update(peak=0)
    rt, walk = items(pack, names=["a", "b", "c", "d"], holds={n: 0.15 for n in "abcd"})
    assert walk.status == "succeeded" and state["peak"] == 4  # no concurrency: all at once
    rt, walk = items(pack, names=[])
    assert (walk.status, walk.output["results"]) == ("succeeded", [])


# -- expressions -------------------------------------------------------------------------------

def test_expressions_evaluate_as_orquesta_does():
    variables = {"n": 2, "names": ["a", "b"], "d": {"k": "v"}}
    current = {"status": "succeeded", "result": {"ok": True}}
    assert evaluate("<% ctx(n) + 1 %>", variables) == 3
    assert evaluate("{{ ctx('n') + 1 }}", variables) == 3
    assert evaluate("n={{ ctx('n') }}, k={{ ctx('d').k }}", variables) == "n=2, k=v"
    assert evaluate("<% ctx(names).len() %> names", variables) == "2 names"
    assert evaluate({"<% ctx(d).k %>": ["{{ succeeded() }}", "<% result().ok %>"]}, variables,
                    current) == {"v": [True, True]}
    assert evaluate("{{ item() }}-{{ item('x') }}", {}, item={"x": 1}) == "{'x': 1}-1"
    assert evaluate("{% for x in ctx('names') %}{{ x }}{% endfor %}", variables) == "ab"
    for bad, message in [
            ("<% ctx(nope) %>", 'The variable "nope" is undefined.'),
            ("{{ ctx('nope') }}", 'The variable "nope" is undefined.'),
            ("{{ nope }}", "Unable to evaluate expression '{{ nope }}'. UndefinedError"),
            ("<% 1 + %>", "Unable to evaluate expression '<% 1 + %>'."),
            ("{{ 1 }} <% 2 %>", "multiple types")]:
        with pytest.raises(ExpressionError, match=message.replace("(", r"\(").replace(
                ")", r"\)").replace("+", r"\+")):
            evaluate(bad, variables)


def test_workflow_inputs_and_string_results_are_evaluated_again(pack, state):
    """Orquesta evaluates runtime inputs and re-evaluates string results (StackStorm/st2#4636,
    #5956): text that reaches a workflow as data is evaluated as an expression."""
    walk = runtime(pack).workflow("st2local_test.evaluate", {
        "text": "plain", "parts": ["<", "% 2 * 3 %", ">"]}).run()
    assert walk.status == "succeeded"
    assert walk.output == {"text": "plain", "yaql_joined": 6, "jinja_joined": "<% 2 * 3 %>"}
    walk = runtime(pack).workflow("st2local_test.evaluate", {
        "text": "plain", "parts": ["{", "{ 6 * 7 }", "}"]}).run()
    assert walk.ctx["jinja_joined"] == 42 and walk.ctx["yaql_joined"] == "{{ 6 * 7 }}"
    assert walk.output["yaql_joined"] == 42  # the Jinja output expression evaluates it again

    walk = runtime(pack).workflow("st2local_test.evaluate", {"text": "{{ 'a' ~ 'b' }}"}).run()
    assert (walk.status, walk.ctx["text"]) == ("succeeded", "ab")
    assert state["ran"][-1] == "ab"
    walk = runtime(pack).workflow("st2local_test.evaluate", {"text": "Hi {{ x }}"}).run()
    assert walk.status == "failed" and walk.tasks == []
    assert walk.errors[0]["message"] == \
        "Unable to evaluate expression '{{ x }}'. UndefinedError: 'x' is undefined"
    # The API renders the live parameter first (render_live_params): the workflow gets "42".
    walk = runtime(pack).workflow("st2local_test.evaluate", {"text": "{{ 6 * 7 }}"}).run()
    assert (walk.status, walk.ctx["text"], state["ran"][-1]) == ("succeeded", "42", "42")
    # As the workflow engine gets it from a rule (rendered once already), Orquesta evaluates
    # it to the number 42, which the string parameter `name` refuses.
    walk = Workflow(runtime(pack), "st2local_test.evaluate", {"text": "{{ 6 * 7 }}"}).run()
    assert walk.status == "failed" and walk.tasks == []
    assert "Unable to request action execution" in walk.errors[0]["message"]
    assert "Value 42 must either be a string or None" in walk.errors[0]["message"]


# -- core.ask ----------------------------------------------------------------------------------

def test_core_ask_answered_expired_and_refused(pack):
    rt = runtime(pack, answer=lambda schema: {"approve": True})
    walk = rt.workflow("st2local_test.ask", {}).run()
    assert walk.status == "succeeded"
    assert walk.output["response"] == {"approve": True, "who": "nobody"}  # defaults applied
    (inquiry,) = rt.inquiries
    assert inquiry["route"] == "tests" and "approve" in inquiry["schema"]["properties"]
    walk = runtime(pack, answer=lambda schema: None).workflow("st2local_test.ask", {}).run()
    assert (walk.status, walk.tasks) == ("failed", [("ask", "failed")])
    with pytest.raises(WorkflowError, match="would refuse the response"):
        runtime(pack, answer=lambda schema: {"approve": "yes"}).workflow(
            "st2local_test.ask", {}).run()


# -- sensors -----------------------------------------------------------------------------------

def test_sensor_drive_checks_every_payload(pack):
    config = {"payloads": [{"name": "one", "level": "high", "tags": ["urgent"]},
                           {"name": "two", "level": "medium"}]}
    drive = SensorDrive(config, pack=pack, sensors=["tick_sensor"])
    assert drive.poll() == [("st2local_test.tick",
                             {"name": "one", "level": "high", "tags": ["urgent"]})]
    with pytest.raises(PayloadDropped, match="'medium' is not one of"):
        drive.poll()
    assert drive.poll() == []
    drive.cleanup()


def test_sensor_service_records_drops_and_delivers(pack, state):
    engine = RuleEngine(runtime(pack), pack)
    service = SensorService("TickSensor", pack=pack, rule_engine=engine)
    service.dispatch("st2local_test.tick", {"name": "ok", "level": "high", "tags": ["urgent"],
                                            "extra": {"a": 1}})
    service.dispatch("st2local_test.tick", {"name": "bad", "level": "high", "extra": 1})
    assert len(service.dispatched_triggers) == 2
    assert [item["payload"]["name"] for item, _ in service.dropped] == ["bad"]
    (enforcement,) = service.deliver()
    assert (enforcement.status, state["ran"]) == ("succeeded", ["ok"])
    assert service.deliver() == [] and service.pending == []
    service.datastore_service.set_value("k", json.dumps({"a": 1}))
    assert json.loads(service.get_value("k")) == {"a": 1}
