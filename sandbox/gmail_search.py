"""Gmail's search grammar (`messages.list?q=`), enough of it that a crafted query widens here as
it would at Google.

Rules reproduced (from Gmail's "Refine searches" help page and observed behaviour):
- whitespace-separated terms are ANDed; `AND` is accepted and means the same;
- `OR` (upper case only) and `{a b}` are alternatives; `OR` binds tighter than the implicit AND,
  so `rfc822msgid:<x@y> OR in:anywhere` is one alternative that matches every message;
- `( ... )` groups, `-term` negates, `"..."` is a phrase, `+word` is the word itself;
- operators: `rfc822msgid:`, `in:` (inbox, spam, trash, anywhere), `is:` (unread, read),
  `label:` (inbox, spam, trash, unread), `from:`, `to:`, `subject:`; `op:(a b)`, `op:{a b}` and
  `op:"a b"` apply the operator to each word; an unknown `x:y` is searched as plain text;
- plain words match the subject, the sender and the recipient, word by word (case-insensitive);
- Gmail never rejects a query: unbalanced parentheses and quotes are tolerated.

Spam and Trash: without `includeSpamTrash=true` messages labelled SPAM or TRASH are left out,
unless the query itself names them (`in:spam`, `in:trash`, `in:anywhere`, `label:spam`,
`label:trash`), as in Gmail's web search.
"""
from __future__ import annotations

import functools
import re
from typing import FrozenSet, List, NamedTuple, Optional, Tuple

OPERATORS = ("rfc822msgid", "in", "is", "label", "from", "to", "subject")
_WORD = re.compile(r"[a-z0-9]+")
_SPECIAL = '(){}"'


class Candidate(NamedTuple):
    """What the grammar can see of one message; `key` is the caller's handle (the copy id)."""

    key: str
    message_id: str
    subject: str
    sender: str
    recipient: str
    labels: FrozenSet[str]  # system labels incl. UNREAD


# -- syntax tree ------------------------------------------------------------------------------
class Node(object):
    def matches(self, cand: Candidate) -> bool:
        raise NotImplementedError

    def children(self) -> List["Node"]:
        return []


class And(Node):
    def __init__(self, parts: List[Node]):
        self.parts = parts

    def matches(self, cand: Candidate) -> bool:
        return all(p.matches(cand) for p in self.parts)

    def children(self) -> List[Node]:
        return self.parts

    def __repr__(self) -> str:
        return "And(%r)" % (self.parts,)


class Or(Node):
    def __init__(self, parts: List[Node]):
        self.parts = parts

    def matches(self, cand: Candidate) -> bool:
        return any(p.matches(cand) for p in self.parts)

    def children(self) -> List[Node]:
        return self.parts

    def __repr__(self) -> str:
        return "Or(%r)" % (self.parts,)


class Not(Node):
    def __init__(self, part: Node):
        self.part = part

    def matches(self, cand: Candidate) -> bool:
        return not self.part.matches(cand)

    def children(self) -> List[Node]:
        return [self.part]

    def __repr__(self) -> str:
        return "Not(%r)" % (self.part,)


def _words(text: str) -> List[str]:
    return _WORD.findall(text.lower())


def _contains(haystack: List[str], needle: List[str]) -> bool:
    if not needle:
        return True  # punctuation-only terms are ignored, as Gmail does
    n = len(needle)
    return any(haystack[i:i + n] == needle for i in range(len(haystack) - n + 1))


def _bare_msgid(value: str) -> str:
    value = value.strip().lower()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    return value


class Term(Node):
    """One search term: `field` is None for plain text, else an operator name."""

    def __init__(self, field: Optional[str], text: str):
        self.field = field
        self.text = text

    def __repr__(self) -> str:
        return "Term(%r, %r)" % (self.field, self.text)

    def matches(self, cand: Candidate) -> bool:
        field, value = self.field, self.text
        if field == "rfc822msgid":
            return bool(value) and _bare_msgid(value) == _bare_msgid(cand.message_id)
        if field == "in":
            return _in(value.lower(), cand.labels)
        if field == "is":
            return _is(value.lower(), cand.labels)
        if field == "label":
            return value.upper() in cand.labels
        words = _words(value)
        if field == "from":
            return _contains(_words(cand.sender), words)
        if field == "to":
            return _contains(_words(cand.recipient), words)
        if field == "subject":
            return _contains(_words(cand.subject), words)
        return any(_contains(_words(text), words)
                   for text in (cand.subject, cand.sender, cand.recipient))

    def names_spam_or_trash(self) -> bool:
        value = self.text.lower()
        return ((self.field == "in" and value in ("spam", "trash", "anywhere"))
                or (self.field == "label" and value in ("spam", "trash")))


def _in(value: str, labels: FrozenSet[str]) -> bool:
    if value == "anywhere":
        return True
    if value == "inbox":
        # what the user sees as the inbox: Spam and Trash hide a kept INBOX label
        return "INBOX" in labels and not labels & {"SPAM", "TRASH"}
    if value in ("spam", "trash"):
        return value.upper() in labels
    return False  # sent, drafts, chats, user labels: the sandbox has none of those


def _is(value: str, labels: FrozenSet[str]) -> bool:
    if value == "unread":
        return "UNREAD" in labels
    if value == "read":
        return "UNREAD" not in labels
    return False  # starred, important, ...: never set in the sandbox


# -- tokenizer --------------------------------------------------------------------------------
# token kinds: "(", ")", "{", "}", "-", "OR", "AND", "word", "phrase", "op"
Token = Tuple[str, str]


def tokenize(query: str) -> List[Token]:
    tokens: List[Token] = []
    i, n = 0, len(query)
    while i < n:
        ch = query[i]
        if ch.isspace():
            i += 1
        elif ch in "(){}":
            tokens.append((ch, ch))
            i += 1
        elif ch == '"':
            end = query.find('"', i + 1)
            end = n if end < 0 else end
            tokens.append(("phrase", query[i + 1:end]))
            i = end + 1
        elif ch in "-+" and i + 1 < n and not query[i + 1].isspace():
            if ch == "-":
                tokens.append(("-", ch))
            i += 1  # `+word` is the word itself
        else:
            j = i
            while j < n and not query[j].isspace() and query[j] not in _SPECIAL:
                j += 1
            tokens.extend(_bare(query[i:j]))
            i = j
    return tokens


def _bare(text: str) -> List[Token]:
    if text in ("OR", "AND"):
        return [(text, text)]
    name, sep, value = text.partition(":")
    if sep and name.lower() in OPERATORS:
        out: List[Token] = [("op", name.lower())]
        if value:
            out.append(("word", value))
        return out
    return [("word", text)]


# -- parser -----------------------------------------------------------------------------------
class _Parser(object):
    def __init__(self, tokens: List[Token]):
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> Optional[Token]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def sequence(self, field: Optional[str], closer: Optional[str]) -> Node:
        """Implicitly ANDed alternatives up to `closer` (or the end)."""
        parts: List[Node] = []
        while True:
            token = self.peek()
            if token is None:
                break
            if token[0] == closer:
                self.take()
                break
            if token[0] in (")", "}", "OR", "AND"):
                self.take()  # stray closer or dangling operator: tolerated, as Gmail does
                continue
            parts.append(self.alternatives(field, closer))
        return parts[0] if len(parts) == 1 else And(parts)

    def alternatives(self, field: Optional[str], closer: Optional[str]) -> Node:
        options = [self.unary(field)]
        while True:
            token = self.peek()
            if token is not None and token[0] in (")", "}") and token[0] != closer:
                self.take()  # a stray closer is skipped: `a) OR (b` is `a OR b`
                continue
            if token is None or token[0] != "OR":
                break
            self.take()
            if self.peek() is None or self.peek()[0] in (")", "}", "OR"):
                break
            options.append(self.unary(field))
        return options[0] if len(options) == 1 else Or(options)

    def unary(self, field: Optional[str]) -> Node:
        token = self.peek()
        if token is not None and token[0] == "-":
            self.take()
            if self.peek() is None or self.peek()[0] in (")", "}", "OR", "AND"):
                return And([])  # a dangling `-` is ignored
            return Not(self.unary(field))
        return self.primary(field)

    def primary(self, field: Optional[str]) -> Node:
        kind, value = self.take()
        if kind == "(":
            return self.sequence(field, ")")
        if kind == "{":
            return self.braces(field)
        if kind == "op":
            nxt = self.peek()
            if nxt is None or nxt[0] in (")", "}", "OR", "AND", "-"):
                return Term(field, value + ":")
            return self.primary(value)
        return Term(field, value)  # word or phrase

    def braces(self, field: Optional[str]) -> Node:
        options: List[Node] = []
        while self.peek() is not None and self.peek()[0] != "}":
            if self.peek()[0] in (")", "OR", "AND"):
                self.take()
                continue
            options.append(self.unary(field))
        if self.peek() is not None:
            self.take()
        return Or(options)


class Query(object):
    """A compiled `q`: `matches(candidate)` and whether it names Spam/Trash itself."""

    def __init__(self, text: str):
        self.text = text or ""
        self.root = _Parser(tokenize(self.text)).sequence(None, None)
        self.names_spam_or_trash = _names_spam_or_trash(self.root)

    def matches(self, cand: Candidate) -> bool:
        return self.root.matches(cand)

    def __repr__(self) -> str:
        return "Query(%r -> %r)" % (self.text, self.root)


def _names_spam_or_trash(node: Node) -> bool:
    if isinstance(node, Term):
        return node.names_spam_or_trash()
    return any(_names_spam_or_trash(child) for child in node.children())


@functools.lru_cache(maxsize=256)
def _compiled(text: str) -> Query:
    """A Query is never changed once built, so a campaign's one `q` is parsed once."""
    return Query(text)


def search(query: str, candidates: List[Candidate],
           include_spam_trash: bool = False) -> List[Candidate]:
    """The candidates `query` selects, in the given order, with Gmail's Spam/Trash rule."""
    compiled = _compiled(query)
    widen = include_spam_trash or compiled.names_spam_or_trash
    return [c for c in candidates
            if (widen or not c.labels & {"SPAM", "TRASH"}) and compiled.matches(c)]
