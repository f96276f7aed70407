"""The rules engine's part: match a trigger instance against the pack's rules (trigger type,
trigger parameters, criteria) and render the action parameters as StackStorm does.

Rendering (st2reactor.rules.enforcer, StackStorm 3.9): the rule's parameters are the live
parameters of the execution it requests, rendered by render_live_params (tools.st2local.params)
with the trigger payload as `trigger`, the pack config as `config_context` and the
enforcement's `action_context` (user stanley, the action's pack), then cast to the action's
parameter types; the payload's text is data and is not rendered again. A rendering StackStorm
refuses (a missing payload field under StrictUndefined, `use_none` aside) raises, as it fails
the enforcement. One deviation, loud: when the rule sets an action parameter named like a
render context (`trigger`, `st2kv`, `action_context`, `config_context`), StackStorm renders
`{{ trigger.x }}` against that parameter's value instead of the payload (one graph node per
name) and the enforcement fails; st2local warns (ShadowedContext, once per rule) and keeps the
context, unless `strict` asks for StackStorm's behaviour. The result is then validated
against the action's parameters: unknown names,
required ones, types (draft 4 with `required: true` inside a property; optional ones
nullable). `render_values` (st2common.util.jinja.render_values, the older data transform that
renders each value once and keeps untemplated values' types) is kept for callers that want it.

Criteria (st2reactor.rules.filter + st2common.operators): every criterion must hold; keys are
`trigger.<path>` (dots and [index]); a missing field is None; an operator that raises does not
match. `search` and the timediff operators are not modelled (RuleError).
"""
import copy
import fnmatch
import json
import re
import warnings

from tools.st2local.pack import Pack, conformance
from tools.st2local.params import (CASTS, NONE_MAGIC_VALUE, cast_params, context_names,
                                   render_live_params, st2_jinja_environment)

__all__ = ["CASTS", "NONE_MAGIC_VALUE", "SYSTEM_USER", "Enforcement", "RuleEngine",
           "RuleError", "ShadowedContext", "cast_params", "criteria_match", "enforce",
           "load_rule", "parameter_problems", "render_values", "rules_for",
           "shadowed_contexts", "st2_jinja_environment"]

SYSTEM_USER = "stanley"  # who a rule enforcement runs as (StackStorm's system user)


class RuleError(Exception):
    """A rule uses something this harness does not model."""


class ShadowedContext(UserWarning):
    """A rule sets an action parameter named like a render context: StackStorm would render
    the rule's `{{ trigger.x }}` against that parameter, not the payload."""


# -- rendering ---------------------------------------------------------------------------------

def render_values(mapping, context):
    """st2common.util.jinja.render_values."""
    super_context = {"__context": context}
    super_context.update(context)
    env = st2_jinja_environment()
    rendered = {}
    for key, value in (mapping or {}).items():
        reverse_json = isinstance(value, (dict, list))
        text = json.dumps(value) if reverse_json else (
            value if isinstance(value, str) else str(value))
        out = env.from_string(text).render(super_context)
        if out == text:
            rendered[key] = mapping[key]
            continue
        rendered[key] = json.loads(out) if reverse_json else out
    return rendered


def parameter_problems(params, accepted, ref):
    """What StackStorm refuses when it schedules `ref` with `params` (after casting)."""
    problems = ["%r is not a parameter of %s" % (k, ref) for k in params if k not in accepted]
    for name, spec in sorted(accepted.items()):
        if spec.get("required") is True and "default" not in spec and name not in params:
            problems.append("required parameter %r of %s is missing" % (name, ref))
    schema = {"type": "object", "properties": copy.deepcopy(accepted)}
    instance = dict(params)
    for name, spec in accepted.items():  # use_default=True
        if name not in instance and "default" in spec and not conformance._is_expression(
                spec["default"]):
            instance[name] = copy.deepcopy(spec["default"])
    validator = conformance.St2Validator(conformance._allow_default_none(schema))
    for error in validator.iter_errors(instance):
        where = ".".join(str(p) for p in error.path) or "(top)"
        problems.append("%s: %s" % (where, error.message))
    return problems


TRIGGER_CONTEXT = {"trigger": None}  # the enforcer's additional context (the payload)


def shadowed_contexts(rule):
    """The parameters `rule` sets whose names shadow a render context (see ShadowedContext)."""
    return sorted(set((rule.get("action") or {}).get("parameters") or {})
                  & context_names(TRIGGER_CONTEXT))


def enforce(rule, payload, pack=None, config=None, datastore=None, strict=True):
    """The parameters StackStorm would run the rule's action with for this trigger payload
    (rendered and cast: the live parameters), and the problems it would refuse them for.
    `config`: the pack config (`config_context`). Rendering errors (a missing payload field)
    raise, as they fail the rule enforcement. A parameter shadowing a context: see the module
    docstring (`strict`: as StackStorm does)."""
    pack = pack or Pack.default()
    ref = rule["action"]["ref"]
    accepted = pack.action_parameters(ref)
    if accepted is None:
        raise RuleError("rule %s runs %s, which does not exist" % (rule.get("name"), ref))
    shadowed = shadowed_contexts(rule)
    if shadowed and not strict:
        warnings.warn(ShadowedContext(
            "rule %s sets %s, which StackStorm's parameter rendering takes for the render "
            "context of that name: in StackStorm the rule's {{ trigger.* }} would render "
            "against that value and the enforcement fail; st2local keeps the context"
            % (rule.get("name"), ", ".join(shadowed))))
    action_context = {"trigger_instance": {"ref": "trigger-instance"},
                      "rule": {"ref": "%s.%s" % (rule.get("pack") or pack.ref, rule.get("name"))},
                      "user": SYSTEM_USER, "pack": ref.split(".", 1)[0]}
    params = render_live_params(accepted, rule["action"].get("parameters") or {},
                                action_context, config if config is not None else {},
                                {"trigger": payload}, datastore, shadowing=strict)
    return params, parameter_problems(params, accepted, ref)


def rules_for(trigger_ref, pack=None):
    """Every enabled rule of the pack on this trigger type."""
    return (pack or Pack.default()).rules_for(trigger_ref)


def load_rule(name, pack=None):
    return (pack or Pack.default()).rule(name)


# -- criteria ----------------------------------------------------------------------------------

def _strings(func):
    def wrapped(value, pattern):
        if pattern is None:
            return False
        return func(value, pattern)
    return wrapped


OPERATORS = {
    "equals": lambda v, p: p is not None and v == p,
    "nequals": lambda v, p: v != p,
    "iequals": _strings(lambda v, p: v.lower() == p.lower()),
    "contains": _strings(lambda v, p: p in v),
    "icontains": _strings(lambda v, p: p.lower() in v.lower()),
    "ncontains": _strings(lambda v, p: p not in v),
    "incontains": _strings(lambda v, p: p.lower() not in v.lower()),
    "startswith": _strings(lambda v, p: v.startswith(p)),
    "istartswith": _strings(lambda v, p: v.lower().startswith(p.lower())),
    "endswith": _strings(lambda v, p: v.endswith(p)),
    "iendswith": _strings(lambda v, p: v.lower().endswith(p.lower())),
    "lessthan": _strings(lambda v, p: v < p),
    "greaterthan": _strings(lambda v, p: v > p),
    "matchwildcard": _strings(lambda v, p: fnmatch.fnmatch(v, p)),
    "matchregex": _strings(lambda v, p: re.compile(p, re.DOTALL).match(v) is not None),
    "regex": _strings(lambda v, p: re.compile(p).search(v) is not None),
    "iregex": _strings(lambda v, p: re.compile(p, re.IGNORECASE).search(v) is not None),
    "exists": lambda v, p: v is not None,
    "nexists": lambda v, p: v is None,
    "inside": _strings(lambda v, p: v in p),
    "ninside": _strings(lambda v, p: v not in p),
}
ALIASES = {"eq": "equals", "neq": "nequals", "ieq": "iequals", "lt": "lessthan",
           "gt": "greaterthan", "in": "inside", "nin": "ninside"}
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def payload_value(payload, key):
    """The value at `trigger.a.b[0]` in the payload, or None when any step is missing."""
    parts = [m.group(1) if m.group(1) is not None else int(m.group(2))
             for m in _PATH_PART.finditer(key)]
    if not parts or parts[0] != "trigger":
        raise RuleError("criteria key %r does not start with 'trigger'" % key)
    value = payload
    for part in parts[1:]:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return None
    return value


def criteria_match(criteria, payload):
    """(matched, why) for a rule's criteria against a trigger payload, as st2's RuleFilter."""
    if criteria and not payload:
        return False, "no payload"
    for key, criterion in (criteria or {}).items():
        if "type" not in criterion:
            return False, "%s: no type" % key
        name = str(criterion["type"]).lower()
        name = ALIASES.get(name, name)
        if name not in OPERATORS:
            raise RuleError("criteria operator %r is not modelled by st2local" % name)
        pattern = criterion.get("pattern")
        if isinstance(pattern, str) and ("{{" in pattern or "{%" in pattern):
            raise RuleError("%s: datastore lookups in patterns are not modelled" % key)
        value = payload_value(payload, key)
        try:
            matched = OPERATORS[name](value, pattern)
        except Exception as exc:  # st2 logs the exception and treats the rule as not matching
            return False, "%s %s %r raised %s" % (key, name, pattern, type(exc).__name__)
        if not matched:
            return False, "%s %s %r: %r does not match" % (key, name, pattern, value)
    return True, "matched"


# -- the engine ----------------------------------------------------------------------------------

class Enforcement(object):
    """One rule applied to one trigger instance: the rendered parameters and the execution
    (status, result) - or why there was none (failure_reason)."""

    def __init__(self, rule, trigger, payload):
        self.rule = rule
        self.trigger = trigger
        self.payload = payload
        self.params = None
        self.problems = []
        self.failure_reason = None
        self.status = None
        self.result = None

    @property
    def action(self):
        return self.rule["action"]["ref"]

    def __repr__(self):
        return "<Enforcement %s on %s: %s>" % (self.rule.get("name"), self.trigger,
                                               self.status or self.failure_reason)


class RuleEngine(object):
    """Trigger instances in, enforcements out: every enabled rule on the trigger type whose
    trigger parameters and criteria match renders its parameters and runs its action on the
    runtime (runtime None: render only). `strict`: see enforce."""

    def __init__(self, runtime=None, pack=None, strict=True):
        self.runtime = runtime
        self.pack = pack or (runtime.pack if runtime is not None else Pack.default())
        self.strict = strict  # a parameter shadowing a render context fails, as in StackStorm
        self.enforcements = []

    def matching(self, trigger, payload, trigger_parameters=None):
        found = []
        for rule in self.pack.rules_for(trigger):
            wanted = (rule.get("trigger") or {}).get("parameters") or {}
            if wanted and wanted != (trigger_parameters or {}):
                continue
            if criteria_match(rule.get("criteria"), payload)[0]:
                found.append(rule)
        return found

    def dispatch(self, trigger, payload, trigger_parameters=None):
        done = []
        for rule in self.matching(trigger, payload, trigger_parameters):
            enforcement = Enforcement(rule, trigger, payload)
            config, datastore = ((self.runtime.config, self.runtime.datastore)
                                 if self.runtime is not None else ({}, None))
            try:
                enforcement.params, enforcement.problems = enforce(
                    rule, payload, self.pack, config, datastore, self.strict)
            except Exception as exc:  # st2 records why the enforcement failed
                enforcement.failure_reason = "%s: %s" % (type(exc).__name__, exc)
            if enforcement.problems:
                enforcement.failure_reason = "; ".join(enforcement.problems)
            if enforcement.failure_reason is None and self.runtime is not None:
                enforcement.status, enforcement.result = self.runtime.run_action(
                    enforcement.action, enforcement.params, rendered=True)
            self.enforcements.append(enforcement)
            done.append(enforcement)
        return done
