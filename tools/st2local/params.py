"""Action parameters as StackStorm renders and casts them: st2common.util.param
(render_live_params, render_final_params), st2common.util.casts and the Jinja environment of
st2common.util.jinja, as StackStorm 3.9 ships them.

render_live_params runs for every action execution that is requested: by the API (`st2 run`,
ChatOps), by a rule enforcement (with the trigger payload as `trigger`) and by a workflow task
(with the input Orquesta evaluated). So a live parameter that holds `{{` or `{%` is rendered
with Jinja, once more, whatever evaluated it before:
1. every live parameter, and every declared default of a parameter that is absent or None, is
   a graph node: a template (its text holds `{{` or `{%` and parses) whose dependencies are the
   names it does not declare, or a plain value (a template that does not parse is a value);
   `st2kv` (the datastore), `action_context`, `config_context` (the pack config of the
   action's pack) and the additional contexts (a rule's `trigger`) are values;
2. a template whose dependencies are all unknown names (`Hi {{ x }}`) becomes a plain value;
   one that mixes known and unknown names is refused ('Dependency unsatisfied in variable');
   so is a cycle. A template without dependencies (`{{ 7 * 7 }}`) is rendered;
3. nodes are rendered in dependency order (StrictUndefined: a missing attribute refuses the
   execution, 'Failed to render parameter "x": ...'); a list or dict template is rendered as
   JSON and decoded;
4. the live parameters, and the parameters whose default is a Jinja template and that were not
   given, are cast to their declared types (object/array: JSON, else a Python literal;
   boolean/integer/number from text; string: None or a string, the `use_none` magic string
   is None) - a rendered default like `{{ config_context.limits.chunk_size }}` becomes an
   integer.
A live parameter named like a context (`trigger`, `st2kv`, `action_context`,
`config_context`) replaces that context in the graph, as StackStorm's graph has one node per
name: a rule that sets an action parameter called `trigger` renders `{{ trigger.x }}` against
that parameter's value, not the payload. `shadowing=False` keeps the context instead (see
tools.st2local.rules.enforce).
render_final_params then adds the defaults of the parameters still absent or None, treating
every live parameter as a plain value, and casts every parameter: the runner receives all
declared parameters, None for those without a value.

Not modelled: `{% raw %}` handling beyond Jinja's own, the `decrypt_kv` and `st2kv` secret
decryption, datastore scopes other than system and user, `immutable` runner parameters that
the action overrides (they are treated as the action declares them).
"""
import ast
import json
import re

import jinja2
from jinja2 import meta

__all__ = ["CASTS", "CONTEXTS", "NONE_MAGIC_VALUE", "KeyValueLookup", "ParamException",
           "UndefinedParameter", "cast_params", "context_names", "is_jinja_expression",
           "render_final_params", "render_live_params", "st2_jinja_environment"]

NONE_MAGIC_VALUE = "%*****__%NONE%__*****%"
CONTEXTS = ("st2kv", "action_context", "config_context")


class ParamException(Exception):
    """st2common.exceptions.param.ParamException: StackStorm refuses the execution."""


class UndefinedParameter(ParamException, jinja2.UndefinedError):
    """A template names something that is not there (StrictUndefined)."""


# -- Jinja and casts ---------------------------------------------------------------------------

def st2_jinja_environment():
    """st2common.util.jinja.get_jinja_environment, with the filters this pack's files use."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters["use_none"] = lambda value: NONE_MAGIC_VALUE if value is None else value
    env.filters["to_json_string"] = lambda value: json.dumps(value)
    env.filters["to_complex"] = lambda value: json.dumps(value)
    env.filters["from_json_string"] = lambda value: json.loads(value)
    env.tests["in"] = lambda item, seq: item in seq
    return env


def is_jinja_expression(value):
    """st2common.util.jinja.is_jinja_expression: a string holding `{{` or `{%`."""
    return bool(value) and isinstance(value, str) and ("{{" in value or "{%" in value)


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


def _cast(value, spec):
    """st2common.util.param._cast."""
    if value is None or not spec:
        return value
    cast = CASTS.get(spec.get("type"))
    return cast(value) if cast else value


def cast_params(params, accepted):
    """st2common.util.action_db.cast_params."""
    out = {}
    for name, value in params.items():
        type_ = (accepted.get(name) or {}).get("type")
        out[name] = CASTS[type_](value) if type_ in CASTS else value
    return out


class KeyValueLookup(object):
    """`st2kv.system.<key>` / `st2kv.user.<key>`: a datastore value, '' when there is none
    (st2common.services.keyvalues)."""

    def __init__(self, values, prefix=""):
        self._values = values
        self._prefix = prefix

    def _child(self, name):
        return KeyValueLookup(self._values, "%s.%s" % (self._prefix, name) if self._prefix
                              else name)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return self._child(name)

    def __getitem__(self, name):
        return self._child(name)

    def __str__(self):
        return str(self._values.get(self._prefix, ""))

    def __eq__(self, other):
        return str(self) == other

    def __hash__(self):
        return hash(str(self))


# -- the dependency graph ----------------------------------------------------------------------

class _Graph(object):
    """networkx.DiGraph as st2common.util.param uses it: nodes with attributes (`value`,
    `template`), edges dependency -> dependent."""

    def __init__(self):
        self.nodes = {}
        self.edges = []

    def add_node(self, name, **attrs):
        self.nodes.setdefault(name, {}).update(attrs)

    def add_edge(self, source, target):
        self.add_node(source)
        self.add_node(target)
        if (source, target) not in self.edges:
            self.edges.append((source, target))

    def remove_edge(self, source, target):
        self.edges.remove((source, target))

    def remove_node(self, name):
        del self.nodes[name]
        self.edges = [(s, t) for s, t in self.edges if name not in (s, t)]

    def predecessors(self, name):
        return [s for s, t in self.edges if t == name]

    def copy(self):
        other = _Graph()
        other.nodes = {name: dict(attrs) for name, attrs in self.nodes.items()}
        other.edges = list(self.edges)
        return other

    def topological_order(self):
        """Kahn's algorithm in insertion order; ParamException naming a cycle's nodes."""
        indegree = dict((name, 0) for name in self.nodes)
        for _, target in self.edges:
            indegree[target] += 1
        ready = [name for name in self.nodes if indegree[name] == 0]
        order = []
        while ready:
            name = ready.pop(0)
            order.append(name)
            for source, target in self.edges:
                if source == name:
                    indegree[target] -= 1
                    if indegree[target] == 0:
                        ready.append(target)
        if len(order) < len(self.nodes):
            cyclic = sorted(name for name in self.nodes if name not in order)
            raise ParamException(
                "Cyclic dependency found in the following variables: %s. Likely the variable "
                "is referencing itself" % ", ".join(cyclic))
        return order


def _base_graph(action_context, config, datastore, additional_contexts):
    graph = _Graph()
    store = datastore or {}
    graph.add_node("st2kv", value={"system": KeyValueLookup(store.get("system") or {}),
                                   "user": KeyValueLookup(store.get("user") or {})})
    graph.add_node("action_context", value=action_context)
    graph.add_node("config_context", value=config)
    for name, value in (additional_contexts or {}).items():
        graph.add_node(name, value=value)
    return graph


def _process(graph, env, name, value):
    complex_text = str(value) if isinstance(value, (list, dict)) else None
    if is_jinja_expression(value) or is_jinja_expression(complex_text):
        try:
            template_ast = env.parse(value)  # Jinja parses str() of a list or dict
        except jinja2.TemplateSyntaxError:
            graph.add_node(name, value=value)  # not a template after all
            return
        graph.add_node(name, template=value)
        for dependency in meta.find_undeclared_variables(template_ast):
            graph.add_edge(dependency, name)
    else:
        graph.add_node(name, value=value)


def _process_defaults(graph, env, accepted):
    for name, spec in accepted.items():
        absent = name not in graph.nodes
        is_none = graph.nodes.get(name, {}).get("value") is None
        if absent or is_none or spec.get("immutable", False):
            _process(graph, env, name, spec.get("default"))


def _check_any_bad(graph, nodes, found, tracked):
    for name in nodes:
        attrs = graph.nodes[name]
        found.append("value" in attrs or "template" in attrs)
        if name not in tracked:
            children = graph.predecessors(name)
            tracked.extend(nodes)
            _check_any_bad(graph, children, found, tracked)
    return found


def _remove_bad(graph, parent, nodes, tracked=None):
    tracked = [parent] if tracked is None else tracked + [parent]
    for name in nodes:
        if "template" in graph.nodes[parent]:
            graph.nodes[parent]["value"] = graph.nodes[parent].pop("template")
        if name in graph.nodes:
            children = graph.predecessors(name)
            if children and name not in tracked:
                _remove_bad(graph, name, children)
            graph.remove_edge(name, parent)
            graph.remove_node(name)


def _validate(graph):
    """Templates whose every dependency is an unknown name become plain text; a template
    mixing known and unknown names is refused."""
    checked = graph.copy()
    for name in list(graph.nodes):
        children = graph.predecessors(name)
        if not children:
            continue
        found = _check_any_bad(graph, children, [], [])
        if not any(found):
            _remove_bad(checked, name, children)
        elif not all(found):
            raise ParamException('Dependency unsatisfied in variable "%s"' % name)
    return checked


def _render(env, attrs, context):
    if "template" in attrs:
        template = attrs["template"]
        complex_type = isinstance(template, (list, dict))
        if complex_type:
            template = re.sub(r'"{{([A-z0-9_-]+)}}"', r"{{\1 | to_complex}}",
                              json.dumps(template))
        result = env.from_string(str(template)).render(context)
        return json.loads(result) if complex_type else result
    return attrs.get("value")


def _resolve(graph, env):
    context = {}
    for name in graph.topological_order():
        try:
            context[name] = _render(env, graph.nodes[name], context)
        except jinja2.UndefinedError as exc:
            raise UndefinedParameter('Failed to render parameter "%s": %s' % (name, exc))
        except Exception as exc:
            raise ParamException('Failed to render parameter "%s": %s' % (name, exc))
    return context


def context_names(additional_contexts=None):
    """The names a parameter template can use besides the parameters."""
    return set(CONTEXTS) | set(additional_contexts or {})


def render_live_params(accepted, params, action_context, config, additional_contexts=None,
                       datastore=None, shadowing=True):
    """st2common.util.param.render_live_params: `params` (the live parameters) rendered with
    the contexts, plus the parameters whose default is a Jinja template, cast to the types
    `accepted` declares. ParamException (UndefinedParameter) when StackStorm refuses them;
    ValueError/SyntaxError when a value does not cast. `shadowing=False`: a parameter named
    like a context does not replace it (StackStorm's graph would)."""
    env = st2_jinja_environment()
    graph = _base_graph(action_context, config, datastore, additional_contexts)
    kept = set() if shadowing else context_names(additional_contexts) & set(params)
    node = dict((name, name + "\x00parameter" if name in kept else name) for name in params)
    for name, value in params.items():
        _process(graph, env, node[name], value)
    _process_defaults(graph, env, dict((node.get(name, name), spec)
                                       for name, spec in accepted.items()))
    context = _resolve(_validate(graph), env)
    live = {}
    for name in params:
        live[name] = _cast(context[node[name]], accepted.get(name) or {})
    for name, spec in accepted.items():
        if (spec.get("immutable") or "default" not in spec or name in params
                or spec.get("default") == context.get(name)
                or not is_jinja_expression(spec.get("default"))):
            continue
        live[name] = _cast(context[name], spec)
    return live


def render_final_params(accepted, params, action_context, config, datastore=None):
    """st2common.util.param.render_final_params: the live parameters as plain values, the
    defaults of those absent or None rendered, every declared parameter cast (None when it
    has no value)."""
    env = st2_jinja_environment()
    graph = _base_graph(action_context, config, datastore, None)
    for name, value in params.items():
        graph.add_node(name, value=value)
    _process_defaults(graph, env, accepted)
    context = _resolve(_validate(graph), env)
    return dict((name, _cast(context.get(name), spec)) for name, spec in accepted.items())
