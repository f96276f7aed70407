"""Orquesta's expression evaluation: Jinja `{{ }}` and YAQL `<% %>` with ctx(), result(),
item(), succeeded(), failed() and completed().

Modelled on orquesta.expressions (jinja.py, yql.py, base.py) as StackStorm 3.9 ships it:
- a string that is exactly one expression yields the expression's native value; expressions
  inside text are replaced by `str(value)`;
- a string result is evaluated again (Orquesta's recursive evaluation), so text that reaches a
  workflow as data and contains `{{ }}` or `<% %>` is evaluated as an expression - see
  StackStorm/st2#4636 and #5956; a Jinja result that still holds `{{ }}` is an error
  ("There are unresolved variables");
- a Jinja block (`{% %}`) renders the whole text; `{% raw %}` is not modelled;
- dicts and lists are evaluated item by item (keys too);
- errors come back as ExpressionError with Orquesta's wording ("Unable to evaluate
  expression '...'. <Type>: <message>").
"""
import collections.abc
import functools
import inspect
import re

import jinja2

__all__ = ["ExpressionError", "evaluate", "has_expressions", "plain"]

_JINJA_EXPR = re.compile("{{.*?}}")
_JINJA_BLOCK = re.compile("{%.*?%}")
_YAQL_EXPR = re.compile("<%.*?%>")
_JINJA = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True,
                            lstrip_blocks=True)
_YAQL = {}
_MAX_DEPTH = 20  # recursive evaluation of results that evaluate to more expressions


class ExpressionError(Exception):
    """An expression Orquesta could not evaluate; the workflow fails with this message."""


# Orquesta's workflow functions (orquesta.expressions.functions.workflow). `context` is a dict
# for Jinja and a yaql context for YAQL; both answer context["__vars"] and friends.
def _ctx(context, key=None):
    variables = context["__vars"]
    if key is None:
        return variables
    if key not in variables:
        raise ExpressionError('The variable "%s" is undefined.' % key)
    return variables[key]


def _result(context):
    return (context["__current_task"] or {}).get("result")


def _status(context):
    return (context["__current_task"] or {}).get("status")


def _succeeded(context):
    return _status(context) == "succeeded"


def _failed(context):
    return _status(context) == "failed"


def _completed(context):
    return _status(context) in ("succeeded", "failed", "expired", "abandoned", "canceled")


def _item(context, key=None):
    item = context["__current_item"]
    if key is None:
        return item
    if not isinstance(item, collections.abc.Mapping):
        raise ExpressionError("Item is not type of dict.")
    if key not in item:
        raise ExpressionError('Item does not have key "%s".' % key)
    return item[key]


FUNCTIONS = {"ctx": _ctx, "result": _result, "succeeded": _succeeded, "failed": _failed,
             "completed": _completed, "item": _item}


def _yaql():
    """yaql's engine and a root context with Orquesta's functions, built once."""
    if not _YAQL:
        import yaql  # a test/demo dependency, imported only when a workflow uses YAQL

        root = yaql.create_context()
        for name, func in FUNCTIONS.items():
            root.register_function(func, name=name)
        _YAQL["engine"] = yaql.language.factory.YaqlFactory().create()
        _YAQL["root"] = root
    return _YAQL["engine"], _YAQL["root"]


def plain(value):
    """yaql's frozen dicts and tuples (and any mapping or sequence) as dicts and lists."""
    if isinstance(value, collections.abc.Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def has_expressions(text):
    return isinstance(text, str) and bool(
        _JINJA_EXPR.search(text) or _JINJA_BLOCK.search(text) or _YAQL_EXPR.search(text))


def _substitute(output, expr, value, count, block=False):
    if inspect.isgenerator(value):
        value = list(value)
    if count > 1 or block or len(output) > len(expr):
        return output.replace(expr, value if isinstance(value, str) else str(value))
    return value


def _jinja(text, data, depth):
    scope = {"__vars": data["__vars"], "__current_task": data["__current_task"],
             "__current_item": data["__current_item"]}
    names = dict((name, functools.partial(func, scope)) for name, func in FUNCTIONS.items())
    if "{% raw" in text:
        raise ExpressionError("Jinja raw blocks are not modelled by st2local: %r" % text)
    expr = text
    try:
        if _JINJA_BLOCK.search(text):
            output = _JINJA.from_string(text).render(dict(scope, **names))
            return _evaluate_string(output, data, depth + 1, only="jinja")
        exprs = _JINJA_EXPR.findall(text)
        output = text
        for expr in exprs:
            compiled = _JINJA.compile_expression(expr[2:-2].strip(), undefined_to_none=False)
            value = compiled(**names)
            if isinstance(value, jinja2.Undefined):
                str(value)  # raises UndefinedError naming what is missing, as in Orquesta
            if isinstance(value, str):
                value = _evaluate_string(value, data, depth + 1, only="jinja")
            output = _substitute(output, expr, value, len(exprs))
    except ExpressionError:
        raise
    except Exception as exc:  # jinja2 errors and whatever the expression raised
        raise ExpressionError("Unable to evaluate expression '%s'. %s: %s"
                              % (expr, type(exc).__name__, exc))
    if isinstance(output, str) and _JINJA_EXPR.search(output):
        raise ExpressionError("There are unresolved variables: %s" % ", ".join(
            e[2:-2].strip() for e in _JINJA_EXPR.findall(output)))
    return output


def _yaql_text(text, data, depth):
    from yaql.language import utils as yaql_utils

    engine, root = _yaql()
    context = root.create_child_context()
    context["__vars"] = yaql_utils.convert_input_data(data["__vars"])
    context["__current_task"] = yaql_utils.convert_input_data(data["__current_task"])
    context["__current_item"] = yaql_utils.convert_input_data(data["__current_item"])
    exprs = _YAQL_EXPR.findall(text)
    output = text
    expr = text
    try:
        for expr in exprs:
            value = engine(expr[2:-2].strip()).evaluate(context=context)
            if isinstance(value, str):
                value = _evaluate_string(value, data, depth + 1, only="yaql")
            output = _substitute(output, expr, value, len(exprs))
    except ExpressionError:
        raise
    except KeyError as exc:
        raise ExpressionError("Unable to resolve key '%s' in expression '%s' from context."
                              % (str(exc).strip("'"), expr))
    except Exception as exc:
        raise ExpressionError("Unable to evaluate expression '%s'. %s: %s"
                              % (expr, type(exc).__name__, str(exc).strip("'")))
    return plain(output)


def _evaluate_string(text, data, depth, only=None):
    if depth > _MAX_DEPTH:
        raise ExpressionError("expression %r keeps evaluating to more expressions" % text)
    jinja = bool(_JINJA_EXPR.search(text) or _JINJA_BLOCK.search(text))
    yaql_ = bool(_YAQL_EXPR.search(text))
    if jinja and yaql_ and only is None:
        raise ExpressionError("Expression with multiple types is not supported: %r" % text)
    if jinja and only in (None, "jinja"):
        return _jinja(text, data, depth)
    if yaql_ and only in (None, "yaql"):
        return _yaql_text(text, data, depth)
    return text


def evaluate(statement, variables, current=None, item=None):
    """orquesta.expressions.base.evaluate: `statement` against the workflow variables, the
    task being completed (`current`: {"status", "result"}) and the with-items `item`."""
    data = {"__vars": variables, "__current_task": current, "__current_item": item}
    return _evaluate(statement, data)


def _evaluate(statement, data):
    if isinstance(statement, dict):
        return {_evaluate(k, data): _evaluate(v, data) for k, v in statement.items()}
    if isinstance(statement, list):
        return [_evaluate(v, data) for v in statement]
    if isinstance(statement, str):
        return _evaluate_string(statement, data, 0)
    return statement
