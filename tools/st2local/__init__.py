"""st2local: a test and demo harness that runs this pack's sensors, rules, actions and Orquesta
workflows in one Python process, modelled on StackStorm 3.9 semantics. It is NOT StackStorm:
no API, message bus, scheduler, action runners in their own processes, RBAC, policies,
datastore persistence, retries or timeouts. It exists so the tests and `make demo` can drive
the pack's real files end to end without a StackStorm installation, one implementation shared
by both.

What it models, and where:
- pack.py: sys.path as st2-run-pack-tests builds it, StackStorm's modules (or the stand-in in
  tests/st2_standin), the pack's metadata (via tests/conformance.py) and classes;
- sensors.py: the pack's sensors polled with a sensor service that records dispatches, checks
  payloads against their trigger types and hands them to a rule engine;
- rules.py: rule matching (trigger type and parameters, criteria operators) and the rule's
  parameters rendered as the enforcer renders them (live parameters, `trigger` in scope),
  then validated;
- params.py: StackStorm's parameter rendering (render_live_params: any parameter holding
  `{{`/`{%` is rendered with Jinja, with st2kv, action_context and config_context in scope;
  render_final_params: defaults) and casting to the declared types, Jinja defaults included;
- runtime.py: action executions (live parameters rendered and cast - for the API and for
  workflow tasks -, checked, defaulted; the Python runner with the pack's action class and
  config; core.noop; core.ask answered by a callback);
- workflow.py and expressions.py: an Orquesta walker (input, vars, tasks, next/when/publish/
  do, engine commands, with-items with concurrency, output; Jinja and YAQL with ctx(),
  result(), item(), succeeded(), failed(), including Orquesta's recursive evaluation of
  string values).
Each module's docstring lists what it leaves out.

    from tools.st2local import Runtime, RuleEngine, SensorDrive
    runtime = Runtime(config, answer=lambda schema: {"approve": True})
    engine = RuleEngine(runtime)
    for trigger, payload in SensorDrive(config).poll():
        for enforcement in engine.dispatch(trigger, payload):
            print(enforcement.rule["name"], enforcement.status, enforcement.result)
"""
from tools.st2local.pack import PACK_REF, PACK_ROOT, Pack, load_module, setup_paths
from tools.st2local.expressions import ExpressionError, evaluate
from tools.st2local.params import (NONE_MAGIC_VALUE, ParamException, UndefinedParameter,
                                   cast_params, render_final_params, render_live_params)
from tools.st2local.rules import (Enforcement, RuleEngine, RuleError, criteria_match, enforce,
                                  load_rule, parameter_problems, render_values, rules_for)
from tools.st2local.runtime import (ACTION_CONTEXT, Event, ParameterError, Runtime,
                                    WorkflowError)
from tools.st2local.sensors import PayloadDropped, SensorDrive, SensorService
from tools.st2local.workflow import Workflow

__all__ = ["ACTION_CONTEXT", "NONE_MAGIC_VALUE", "PACK_REF", "PACK_ROOT", "Enforcement",
           "Event", "ExpressionError", "Pack", "ParamException", "ParameterError",
           "PayloadDropped", "RuleEngine", "RuleError", "Runtime", "SensorDrive",
           "SensorService", "UndefinedParameter", "Workflow", "WorkflowError", "cast_params",
           "criteria_match", "enforce", "evaluate", "load_module", "load_rule",
           "parameter_problems", "render_final_params", "render_live_params", "render_values",
           "rules_for", "setup_paths"]
