"""The rules engine's part: match a trigger instance against the pack's rules (trigger type,
trigger parameters, criteria) and render the action parameters as StackStorm does.

Rendering (st2common.util.jinja.render_values, action_db.cast_params, parameter validation):
1. each value is rendered with Jinja (StrictUndefined: a missing payload field fails the
   rule; `use_none` turns None into a magic string); dicts and lists go through
   json.dumps/json.loads; a value without a template keeps its original type; the rendered
   text is not rendered again (payload text is data);
2. the rendered strings are cast to each parameter's type (object/array: JSON, else a Python
   literal; the magic string becomes None);
3. the result is validated against the action's parameters: unknown names, required ones,
   types (draft 4 with `required: true` inside a property; optional ones nullable).

Criteria (st2reactor.rules.filter + st2common.operators): every criterion must hold; keys are
`trigger.<path>` (dots and [index]); a missing field is None; an operator that raises does not
match. `search` and the timediff operators are not modelled (RuleError).
"""
import ast
import copy
import fnmatch
import json
import re

import jinja2

from tools.st2local.pack import Pack, conformance

__all__ = ["NONE_MAGIC_VALUE", "Enforcement", "RuleEngine", "RuleError", "cast_params",
           "criteria_match", "enforce", "load_rule", "parameter_problems", "render_values",
           "rules_for", "st2_jinja_environment"]

NONE_MAGIC_VALUE = "%*****__%NONE%__*****%"


class RuleError(Exception):
    """A rule uses something this harness does not model."""


# -- rendering ---------------------------------------------------------------------------------

def st2_jinja_environment():
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters["use_none"] = lambda value: NONE_MAGIC_VALUE if value is None else value
    env.filters["to_json_string"] = lambda value: json.dumps(value)
    env.tests["in"] = lambda item, seq: item in seq
    return env


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


def _none(value):
    return None if isinstance(value, str) and value == NONE_MAGIC_VALUE else value


def _cast_object(value):
    value = _none(value)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return ast.literal_eval(value)
    return value


def _cast_string(value):
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("Value %r must either be a string or None" % (value,))
    return _none(value)


def _cast_boolean(value):
    value = _none(value)
    return ast.literal_eval(value.capitalize()) if isinstance(value, str) else value


CASTS = {
    "array": _cast_object, "object": _cast_object, "string": _cast_string,
    "boolean": _cast_boolean,
    "integer": lambda v: None if _none(v) is None else int(_none(v)),
    "number": lambda v: None if _none(v) is None else float(_none(v)),
}


def cast_params(params, accepted):
    """st2common.util.action_db.cast_params."""
    out = {}
    for name, value in params.items():
        type_ = (accepted.get(name) or {}).get("type")
        out[name] = CASTS[type_](value) if type_ in CASTS else value
    return out


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


def enforce(rule, payload, pack=None):
    """The parameters StackStorm would run the rule's action with for this trigger payload,
    and the problems it would refuse them for. Rendering errors (a missing payload field)
    raise, as they fail the rule enforcement."""
    pack = pack or Pack.default()
    ref = rule["action"]["ref"]
    accepted = pack.action_parameters(ref)
    if accepted is None:
        raise RuleError("rule %s runs %s, which does not exist" % (rule.get("name"), ref))
    rendered = render_values(rule["action"].get("parameters") or {}, {"trigger": payload})
    params = cast_params(rendered, accepted)
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
    runtime (runtime None: render only)."""

    def __init__(self, runtime=None, pack=None):
        self.runtime = runtime
        self.pack = pack or (runtime.pack if runtime is not None else Pack.default())
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
            try:
                enforcement.params, enforcement.problems = enforce(rule, payload, self.pack)
            except Exception as exc:  # st2 records why the enforcement failed
                enforcement.failure_reason = "%s: %s" % (type(exc).__name__, exc)
            if enforcement.problems:
                enforcement.failure_reason = "; ".join(enforcement.problems)
            if enforcement.failure_reason is None and self.runtime is not None:
                enforcement.status, enforcement.result = self.runtime.run_action(
                    enforcement.action, enforcement.params)
            self.enforcements.append(enforcement)
            done.append(enforcement)
        return done
