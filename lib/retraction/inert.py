"""Text that no template engine of StackStorm's will evaluate: `inert_text`.

Why: StackStorm evaluates text it was handed as data.
- Orquesta evaluates a workflow's runtime inputs as expressions and evaluates again every string
  an expression returns (StackStorm/st2#4636, open; #5956): a subject `{{ 7 * 7 }}` reaches
  `plan` as the number 49, `Hi {{ x }}` fails the workflow before anything is retracted, and
  `{{ cycler.__init__.__globals__.os.getpid() }}` runs Python in the workflow engine. YAQL
  `<% %>` is evaluated the same way (a Message-ID `<%x@evil.example%>` is one).
- Every action execution a workflow task, a rule or the API requests goes through
  `st2common.util.param.render_live_params`, which renders any parameter holding `{{` or `{%`
  with Jinja, with the pack config (`config_context`) and the datastore (`st2kv`) in scope.
The subject, sender, reporter and ids of a phishing email are the attacker's to choose, and
they travel from the sensors and the webhook through rules into `auto_retract`. So every
free-text field is made inert where it enters the pack (the payloads the sensors dispatch,
the verdict `validate_verdict` returns, `plan`'s result, every error message that shows a
value), and fields that have a grammar (Message-ID, addresses) refuse the delimiters instead
(retraction.validation).

How: a space goes between the two characters of every delimiter Jinja or YAQL recognises:
`{{ }} {% %} {# #} <% %>` become `{ { } } { % % } { # # } < % % >`. Jinja's lexer and Orquesta's
expression patterns need the two characters adjacent, so the text is plain data to all of
them, and an analyst still reads what the attacker wrote. A visible space, not a zero-width
character: nothing invisible that an analyst could copy back into a search or a rule.
Idempotent (inert text is left as it is), so text may pass through here at every layer.
"""
from __future__ import annotations

import re
from typing import Any, List

__all__ = ["DELIMITERS", "delimiters_in", "inert_text", "inert_values", "measured_length"]

# Jinja (variables, blocks, comments; the `-`/`+` whitespace-control forms start with these)
# and YAQL, as Orquesta and st2common.util.jinja recognise them.
DELIMITERS = ("{{", "}}", "{%", "%}", "{#", "#}", "<%", "%>")

# The places between the two characters of a delimiter.
_JOINS = re.compile(r"(?<=\{)(?=[{%#])|(?<=[}%#])(?=\})|(?<=<)(?=%)|(?<=%)(?=>)")
# One space at such a place: what inert_text inserts (or what was typed there).
_SEPARATORS = re.compile(r"(?<=\{) (?=[{%#])|(?<=[}%#]) (?=\})|(?<=<) (?=%)|(?<=%) (?=>)")


def inert_text(text: Any) -> Any:
    """`text` with every template delimiter broken by a space; anything not a string as is."""
    if not isinstance(text, str):
        return text
    return _JOINS.sub(" ", text)


def inert_values(value: Any) -> Any:
    """Every string in a JSON-like structure (dict values and keys, list items) made inert."""
    if isinstance(value, str):
        return inert_text(value)
    if isinstance(value, dict):
        return {inert_text(k): inert_values(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [inert_values(v) for v in value]
    return value


def delimiters_in(text: str) -> List[str]:
    """The delimiters `text` holds, in DELIMITERS order (empty: none)."""
    return [d for d in DELIMITERS if d in text]


def measured_length(text: str) -> int:
    """The length of `text` not counting the spaces `inert_text` inserts, so a length limit
    gives the same answer for a text and its inert form (a limit checked again downstream
    must not refuse what passed upstream)."""
    return len(text) - len(_SEPARATORS.findall(text))
