r"""Strict validation of everything a caller hands us, before any provider call.

A Message-ID ends up inside a Gmail search (`rfc822msgid:<id>`) and an OData filter
(`internetMessageId eq '<id>'`); an address ends up in a URL path (`/users/{upn}`,
`/gmail/v1/users/{u}`). So both are checked against a grammar here, and anything outside it
is refused with an `InvalidRequest` that names the field.

Message-ID (RFC 5322 3.6.4): `"<" id-left "@" id-right ">"`, id-left a dot-atom-text,
id-right a dot-atom-text or a no-fold-literal (`[...]`). We accept every RFC atext character
(`A-Z a-z 0-9 ! # $ % & ' * + - / = ? ^ _ \` | ~`) EXCEPT `{` and `}`, which Gmail's search
grammar reads as an OR group. Whitespace, quotes, parentheses, backslash, commas, `<>` inside
the id and control characters are not atext anyway, so the obsolete forms (quoted id-left,
CFWS inside) are refused. A no-fold-literal may hold only `A-Z a-z 0-9 . - _ :` (addresses such
as `[192.0.2.1]`, `[IPv6:2001:db8::1]`); the rest of RFC dtext is refused there. The id keeps
its case (id-left is case-sensitive). Characters we accept but that mean something to a later
layer (`'` in OData, `+ % # ? /` in URLs) are the provider's to escape: Graph doubles `'` and
percent-encodes the whole value; the Gmail client encodes query parameters, and the provider
re-checks each hit's Message-ID header before acting.

Mailbox address: a conservative addr-spec. Local part: dot-atom of `A-Z a-z 0-9 ! $ & ' * + -
= ^ _ \` ~` (RFC atext minus `# % / ? { } |`, which would change a URL or a search); domain:
LDH labels with at least one dot, lowercased (IDNs in their `xn--` form). At most 64 + 1 + 253
and 254 characters in all. The local part keeps its spelling; comparison is case-insensitive.

A local part of nothing but `*` (and dots), such as `*@corp.example`, is atext but a wildcard,
not one mailbox: it is refused (a `*` among other characters, `a*b@corp.example`, is kept).

Friendly normalisation, nothing more: outer spaces are trimmed (a tab, like any other
whitespace, is refused: `<id>\t` is not one Message-ID), a bare `local@domain`
Message-ID gets its angle brackets, and the two forms chat clients produce (`&lt;id&gt;` and
Slack's `<mailto:a@b|a@b>`) are unwrapped before the grammar is applied.

Template delimiters (retraction.inert says why they matter): a Message-ID whose id-left starts
with `%` or whose id-right ends with `%` reads `<%...%>`, a YAQL expression to Orquesta, so a
Message-ID holding `<%` or `%>` is refused (braces already are); an address cannot hold one
(`% { } < > #` are refused). Free text (`comment`, `requested_by`, and every other field
`free_text` checks) is made inert instead of refused: a retraction must not fail because a
note quotes the phishing subject, inert text reads the same to an analyst, and it is
idempotent, so the chunks of a campaign check it again to the same value. Its length limit
does not count the spaces that made it inert. `show()` makes the values it shows inert, so no
error message carries a live expression into a workflow (auto_retract publishes plan's error).
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Iterator, List, Mapping, Optional, Tuple, Type, TypeVar

from retraction.inert import delimiters_in, inert_text, measured_length
from retraction.model import (
    Destination,
    Disposition,
    Mode,
    Provider,
    RetractionRequest,
    Trigger,
    Word,
)

MAX_MESSAGE_ID = 998  # RFC 5322 line length limit
MAX_ADDRESS = 254  # RFC 5321 path limit less the angle brackets
MAX_LOCAL_PART = 64
MAX_DOMAIN = 253
MAX_COMMENT = 1000
MAX_REQUESTED_BY = 200
SHOWN_CHARS = 60
FUTURE_SLACK = timedelta(days=1)  # a verdict "from tomorrow" is a clock or parsing error

_MSGID_ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`|~"
_MSGID_ATOM = "[" + _MSGID_ATEXT + "]+"
_MSGID_DOT_ATOM = _MSGID_ATOM + r"(?:\." + _MSGID_ATOM + ")*"
_MSGID_LITERAL = r"\[[A-Za-z0-9.\-_:]+\]"
_MESSAGE_ID_RE = re.compile(
    "<" + _MSGID_DOT_ATOM + "@(?:" + _MSGID_DOT_ATOM + "|" + _MSGID_LITERAL + ")>"
)

_LOCAL_ATEXT = r"A-Za-z0-9!$&'*+\-=^_`~"
_LOCAL_ATOM = "[" + _LOCAL_ATEXT + "]+"
_LOCAL_RE = re.compile(_LOCAL_ATOM + r"(?:\." + _LOCAL_ATOM + ")*")
_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# The common case in one match: an address that already is a plain local@domain of the
# grammar above (ASCII letters either case in the domain, which is then lowercased). Every
# check in address() passes for such a text (it holds no character any of them refuses, no
# delimiter, no chat wrapping), so only the lengths remain; anything else takes the checks
# one by one for a precise message.
_WILDCARD_LOCAL_RE = re.compile(r"[*.]+")  # `*@corp.example`: every mailbox, not one
_LDH_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN_ADDRESS_RE = re.compile(
    "(" + _LOCAL_ATOM + r"(?:\." + _LOCAL_ATOM + ")*)@(" + _LDH_LABEL + r"(?:\." + _LDH_LABEL
    + ")+)")

_ISO_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?"
    r"(Z|z|[+-]\d{2}(?::?\d{2})?)?"
)
_SLACK_MAILTO_RE = re.compile(r"<mailto:([^|<>]+)(?:\|([^<>]+))?>")
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")

# Fields build_request understands; anything else is a caller's typo and is refused.
REQUEST_FIELDS = (
    "message_id", "recipients", "destination", "mode", "trigger", "disposition",
    "verdict_time", "comment", "preview", "provider", "requested_by",
)
# Parameters the actions take that are not part of the request itself.
RUN_OPTIONS = ("skip_already_retracted",)


class InvalidRequest(ValueError):
    """Bad input, refused before any provider call. The message names the field and shows a
    shortened, escaped copy of the value (never the whole of a long or hostile value)."""

    def __init__(self, field: str, value: Any, problem: str):
        self.field = field
        self.value = value
        self.problem = inert_text(problem)  # it may quote the value; see show()
        super().__init__("invalid %s: %s (got %s)" % (field, self.problem, show(value)))


def show(value: Any) -> str:
    """A value fit for an error message: at most SHOWN_CHARS characters, control and non-ASCII
    characters escaped so lookalikes and CR/LF are visible and cannot forge a log line, and
    template delimiters broken (retraction.inert) so a workflow that publishes the message
    does not evaluate it."""
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    text = value if isinstance(value, str) else repr(value)
    shown = inert_text(ascii(text[:SHOWN_CHARS]))
    return shown + "…" if len(text) > SHOWN_CHARS else shown


def _first_problem(field: str, value: str) -> None:
    """Refuse the characters no id or address of ours may hold, each with its own explanation.
    The single quote is RFC atext (o'brien@...) and is the provider's to escape."""
    for char in value:
        code = ord(char)
        if char in " \t":
            raise InvalidRequest(field, value, "contains whitespace")
        if code < 32 or code == 127 or 128 <= code < 160:
            raise InvalidRequest(field, value, "contains a control character (%r)" % char)
        if code > 127:
            raise InvalidRequest(
                field, value,
                "contains a non-ASCII character U+%04X (lookalikes are refused)" % code)
        if char == '"':
            raise InvalidRequest(field, value, "contains a double quote")
        if char in "()":
            raise InvalidRequest(field, value, "contains a parenthesis")
        if char in "{}":
            raise InvalidRequest(field, value, "contains a brace, which Gmail search reads as OR")
        if char == "\\":
            raise InvalidRequest(field, value, "contains a backslash")


def _no_delimiters(field: str, value: str) -> None:
    """Refuse a template delimiter (Jinja's, YAQL's) in a value that must stay exact (an id,
    an address), so cannot be made inert. The message names the delimiters made inert: the
    message itself may be published by a workflow."""
    found = delimiters_in(value)
    if found:
        raise InvalidRequest(
            field, value,
            "contains the template delimiter%s %s (a space added here), which StackStorm would "
            "evaluate as a Jinja or YAQL expression in a rule or workflow"
            % ("s" if len(found) > 1 else "", " and ".join("'%s'" % inert_text(d) for d in found)))


def _text(field: str, value: Any) -> str:
    if value is None:
        raise InvalidRequest(field, value, "is required")
    if not isinstance(value, str):
        raise InvalidRequest(field, value, "must be a string")
    return value.strip(" ")  # spaces people and chat add; a tab is refused as whitespace


def _unwrap_chat(value: str) -> str:
    """Undo what chat clients do to `<...>` and to anything that looks like an address."""
    if value.startswith("&lt;") and value.endswith("&gt;"):
        value = "<" + value[4:-4] + ">"
    match = _SLACK_MAILTO_RE.fullmatch(value)
    if match and (match.group(2) is None or match.group(2) == match.group(1)):
        value = match.group(1)
    return value


def message_id(value: Any, field: str = "message_id") -> str:
    """A Message-ID in its canonical `<id-left@id-right>` form, or InvalidRequest."""
    text = _text(field, value)
    if not text:
        raise InvalidRequest(field, value, "is empty")
    if len(text) > MAX_MESSAGE_ID:
        raise InvalidRequest(field, value, "is longer than %d characters" % MAX_MESSAGE_ID)
    text = _unwrap_chat(text)
    _first_problem(field, text)
    if "<" not in text and ">" not in text:
        text = "<" + text + ">"
    _no_delimiters(field, text)
    if len(text) > MAX_MESSAGE_ID:
        raise InvalidRequest(field, value, "is longer than %d characters" % MAX_MESSAGE_ID)
    if text.count("@") == 0:
        raise InvalidRequest(field, value, "has no '@' (expected <id-left@id-right>)")
    if not _MESSAGE_ID_RE.fullmatch(text):
        raise InvalidRequest(
            field, value,
            "is not an RFC 5322 msg-id <id-left@id-right> of letters, digits and "
            "!#$%&'*+-/=?^_`|~ separated by single dots")
    return text


def address(value: Any, field: str = "recipients") -> str:
    """A mailbox address (local part as given, domain lowercased), or InvalidRequest."""
    text = _text(field, value)
    if not text:
        raise InvalidRequest(field, value, "is empty")
    if len(text) > MAX_ADDRESS:
        raise InvalidRequest(field, value, "is longer than %d characters" % MAX_ADDRESS)
    if _WILDCARD_LOCAL_RE.fullmatch(text.rpartition("@")[0]):
        raise InvalidRequest(field, value, "is a wildcard, not one mailbox address")
    plain = _PLAIN_ADDRESS_RE.fullmatch(text)
    if plain is not None and len(plain.group(1)) <= MAX_LOCAL_PART:
        return plain.group(1) + "@" + plain.group(2).lower()  # the domain fits MAX_DOMAIN
    text = _unwrap_chat(text)
    _no_delimiters(field, text)
    _first_problem(field, text)
    for char, why in (("/", "a slash"), ("?", "a '?'"), ("#", "a '#'"), ("%", "a '%'"),
                      (":", "a colon"), ("<", "an angle bracket"), (">", "an angle bracket"),
                      (",", "a comma"), (";", "a semicolon"), ("|", "a '|'")):
        if char in text:
            raise InvalidRequest(field, value, "contains %s" % why)
    if ".." in text:
        raise InvalidRequest(field, value, "contains '..'")
    if text.count("@") != 1:
        raise InvalidRequest(field, value, "must be one local@domain address")
    local, domain = text.split("@")
    if not local or len(local) > MAX_LOCAL_PART or not _LOCAL_RE.fullmatch(local):
        raise InvalidRequest(
            field, value,
            "local part must be 1-%d of letters, digits and !$&'*+-=^_`~ between single dots"
            % MAX_LOCAL_PART)
    return local + "@" + domain_name(domain, field, value)


def domain_name(value: str, field: str, shown: Any = None) -> str:
    """A lowercased DNS name of LDH labels with at least one dot."""
    domain = value.lower()
    labels = domain.split(".")
    if (len(domain) > MAX_DOMAIN or len(labels) < 2
            or not all(_LABEL_RE.fullmatch(label) for label in labels)):
        raise InvalidRequest(
            field, value if shown is None else shown,
            "domain must be dot-separated labels of letters, digits and inner hyphens")
    return domain


def address_key(value: str) -> str:
    """The comparison key of a validated address: mail systems treat addresses case-blind."""
    return value.lower()


def dedupe_addresses(addresses: Iterable[str]) -> Iterator[str]:
    """Drop repeats case-insensitively, keeping the first spelling; lazy, one seen-set."""
    seen = set()
    for value in addresses:
        key = address_key(value)
        if key not in seen:
            seen.add(key)
            yield value


def _split(value: str) -> List[str]:
    # ChatOps sends "a@x, b@y"; Outlook users paste "a@x; b@y". Line breaks are NOT
    # separators: a CR/LF inside a value is refused like any other control character.
    if "," not in value and ";" not in value:  # one address, the usual list item
        return [value] if value.strip(" \t") else []
    return [piece for piece in re.split(r"[,;]", value) if piece.strip(" \t")]


def recipients(value: Any, max_recipients: int, field: str = "recipients") -> Tuple[str, ...]:
    """A non-empty tuple of distinct validated addresses, at most `max_recipients`."""
    if isinstance(value, str):
        items = _split(value)
    elif isinstance(value, (list, tuple)):
        items = []
        for item in value:
            if not isinstance(item, str):
                raise InvalidRequest(field, item, "every recipient must be a string")
            items.extend(_split(item))
    elif value is None:
        raise InvalidRequest(field, value, "is required")
    else:
        raise InvalidRequest(field, value, "must be a list of addresses or a comma-separated "
                                           "string")
    if not items:
        raise InvalidRequest(field, value, "must name at least one recipient")
    unique = tuple(dedupe_addresses(address(item, field) for item in items))
    if len(unique) > max_recipients:
        raise InvalidRequest(
            field, "%d recipients" % len(unique),
            "more than limits.max_recipients (%d); split the run into chunks" % max_recipients)
    return unique


E = TypeVar("E", bound=Word)


def word(enum: Type[E], value: Any, field: str, upper: bool = False) -> E:
    """One of an enum's DESIGN words, case-insensitively."""
    if isinstance(value, enum):
        return value
    if not isinstance(value, str):
        raise InvalidRequest(field, value, "must be one of %s" % ", ".join(enum.values()))
    text = value.strip(" \t")
    text = text.upper() if upper else text.lower()
    try:
        return enum(text)
    except ValueError:
        raise InvalidRequest(field, value, "must be one of %s" % ", ".join(enum.values()))


def boolean(value: Any, field: str) -> bool:
    """A bool, or the strings ChatOps `key=value` pairs produce (true/false/yes/no/1/0)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise InvalidRequest(field, value, "must be true or false")


def timestamp(value: Any, field: str = "verdict_time",
              now: Optional[datetime] = None) -> datetime:
    """An aware datetime from ISO 8601 text (naive means UTC); not more than a day ahead."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        text = value.strip()
        match = _ISO_RE.fullmatch(text)
        if not match:
            raise InvalidRequest(field, value, "must be ISO 8601, e.g. 2024-05-01T12:30:00Z")
        year, month, day, hour, minute, second, fraction, zone = match.groups()
        micro = int((fraction or "0")[:6].ljust(6, "0"))
        tz = timezone.utc
        if zone and zone not in ("Z", "z"):
            digits = zone[1:].replace(":", "")
            offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
            if offset >= timedelta(hours=24):
                raise InvalidRequest(field, value, "has an impossible UTC offset")
            tz = timezone(offset if zone[0] == "+" else -offset)
        try:
            parsed = datetime(int(year), int(month), int(day), int(hour or 0),
                              int(minute or 0), int(second or 0), micro, tzinfo=tz)
        except ValueError as exc:
            raise InvalidRequest(field, value, "is not a real date and time (%s)" % exc)
    else:
        raise InvalidRequest(field, value, "must be an ISO 8601 string")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    parsed = parsed.astimezone(timezone.utc)
    if parsed > (now or datetime.now(timezone.utc)) + FUTURE_SLACK:
        raise InvalidRequest(field, value, "is more than a day in the future")
    return parsed


def free_text(value: Any, field: str, limit: int) -> Optional[str]:
    """Printable text (tabs and line breaks allowed), at most `limit` characters (not counting
    the spaces that make it inert), made inert (retraction.inert); None if blank."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(field, value, "must be a string")
    text = value.strip()
    if measured_length(text) > limit:
        raise InvalidRequest(field, value, "is longer than %d characters" % limit)
    for char in text:
        code = ord(char)
        if (code < 32 and char not in "\t\n") or code == 127 or 128 <= code < 160:
            raise InvalidRequest(field, value, "contains a control character (%r)" % char)
    return inert_text(text) or None


def _given(params: Mapping[str, Any], key: str) -> Any:
    """A parameter's value, with the blanks StackStorm and ChatOps send for 'not given'."""
    value = params.get(key)
    if isinstance(value, str) and not value.strip():
        return None
    return value


def build_request(params: Mapping[str, Any], settings: Any) -> RetractionRequest:
    """Validate raw action parameters into a RetractionRequest, filling defaults from config.

    `settings` is a `retraction.config.Settings`. Defaults: destination from
    `default_destination`, or, for an automatic run given only a disposition, from
    `auto_retract.dispositions`; trigger `analyst` (manual) or `disposition` (auto); an
    automatic run is a preview when `auto_retract.mode` is `preview`."""
    unknown = sorted(set(params) - set(REQUEST_FIELDS) - set(RUN_OPTIONS))
    if unknown:
        raise InvalidRequest(unknown[0], params[unknown[0]], "is not a parameter of a retraction")

    msgid = message_id(_given(params, "message_id"))
    rcpts = recipients(params.get("recipients"), settings.limits.max_recipients)

    raw_mode = _given(params, "mode")
    mode = Mode.MANUAL if raw_mode is None else word(Mode, raw_mode, "mode")
    raw_trigger = _given(params, "trigger")
    if raw_trigger is None:
        trigger = Trigger.DISPOSITION if mode == Mode.AUTO else Trigger.ANALYST
    else:
        trigger = word(Trigger, raw_trigger, "trigger")

    raw_disposition = _given(params, "disposition")
    disposition = (None if raw_disposition is None
                   else word(Disposition, raw_disposition, "disposition", upper=True))

    raw_destination = _given(params, "destination")
    if raw_destination is not None:
        destination = word(Destination, raw_destination, "destination")
    elif mode == Mode.AUTO and disposition is not None:
        mapped = settings.auto_retract.destination_for(disposition)
        if mapped is None:
            raise InvalidRequest("disposition", raw_disposition,
                                 "auto_retract.dispositions maps it to none: nothing to retract")
        destination = mapped
    else:
        destination = settings.default_destination

    raw_provider = _given(params, "provider")
    provider = None
    if raw_provider is not None and str(raw_provider).strip().lower() != "auto":
        provider = word(Provider, raw_provider, "provider")

    raw_time = _given(params, "verdict_time")
    verdict_time = None if raw_time is None else timestamp(raw_time, "verdict_time")

    raw_preview = params.get("preview")
    preview = False if raw_preview is None else boolean(raw_preview, "preview")
    preview = preview or settings.auto_retract.forces_preview(mode)

    return RetractionRequest(
        message_id=msgid,
        recipients=rcpts,
        destination=destination,
        mode=mode,
        trigger=trigger,
        disposition=disposition,
        verdict_time=verdict_time,
        comment=free_text(params.get("comment"), "comment", MAX_COMMENT),
        preview=preview,
        provider=provider,
        requested_by=free_text(params.get("requested_by"), "requested_by", MAX_REQUESTED_BY),
    )


def skip_flag(params: Mapping[str, Any]) -> Optional[bool]:
    """The `skip_already_retracted` option as given; None when left to policy."""
    raw = params.get("skip_already_retracted")
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    return boolean(raw, "skip_already_retracted")
