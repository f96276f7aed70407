"""The pack config as typed settings, with the defaults of `email_retraction.yaml.example`.

Reads StackStorm's `self.config` (a dict-like whose `["missing"]` raises, so only `.get` is
used) or a YAML file of the same shape. Every problem raises `ConfigError` naming the key.

The config is first checked against the pack's `config.schema.yaml` (jsonschema, draft 4 as
StackStorm's own check): types, enums, bounds, patterns, and unknown keys, at the top level too
(`additionalProperties: false` in every section; StackStorm itself lets an unknown top-level
key through, so the loader refuses it here). Every schema problem is reported at once, each
naming its key path (`microsoft.clientid: unknown key`, `microsoft.domains: must be a list`);
a null value counts as not set (StackStorm's config loader turns a datastore value that
renders empty into None). Then the readers below check what a schema cannot say (domain and
address grammar, URLs, the hard-delete policy).

Secrets (client secret, certificate key, service account key, API token, a ledger URL that may
carry a database password) are plain strings for the providers to use, kept out of `repr` and
`str` with `field(repr=False)`; `ConfigError` never shows a secret's value. A secret still
holding an unrendered `{{ st2kv... }}` reference is reported when its provider is built, not
at load time, so an action that needs only the ledger is not stopped by an unused provider.

Defaults are the example's for everything structural (URLs, limits, policy); site-specific
values (tenant, client ids, domains, protected mailboxes) default to empty: a domain nobody
configured routes to no provider, so its copies end `out_of_scope`.
"""
from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from retraction.model import Destination, Disposition, Mode, Trigger
from retraction.validation import InvalidRequest, address, domain_name

DEFAULT_DISPOSITIONS = {
    Disposition.MALICIOUS: Destination.TRASH,
    Disposition.SUSPICIOUS: Destination.JUNK,
    Disposition.SPOOF: Destination.JUNK,
    Disposition.SPAM: None,
    Disposition.BULK: None,
    Disposition.NONE: None,
}
DEFAULT_LEDGER_URL = "sqlite:////opt/stackstorm/configs/email_retraction.ledger.db"
_THUMBPRINT_RE = re.compile(r"[0-9A-Fa-f]{40}")
_DISPOSITION_WORD_RE = re.compile(r"[A-Z][A-Z0-9_-]*")
_URL_PASSWORD_RE = re.compile(r"(//[^/:@]*:)[^@/]*@")


class ConfigError(ValueError):
    """A pack config problem; the message names the key (e.g. `limits.max_recipients`).
    `problems` holds every (key, problem) found together (the schema check reports all of
    them); `key` and `problem` are the first."""

    def __init__(self, key: str, problem: str,
                 problems: Optional[Sequence[Tuple[str, str]]] = None):
        self.key = key
        self.problem = problem
        self.problems = tuple(problems) if problems else ((key, problem),)
        super().__init__("config " + "; ".join("%s: %s" % kp for kp in self.problems))


def is_unrendered(value: str) -> bool:
    """True for a datastore reference StackStorm did not render (a config read outside st2)."""
    return "{{" in value and "}}" in value


def mask_url(url: str) -> str:
    """A URL fit for logs: the password of `scheme://user:password@host` replaced."""
    return _URL_PASSWORD_RE.sub(r"\1***@", url)


@dataclass(frozen=True)
class MicrosoftSettings:
    """What GraphProvider receives. Credentials: a client secret, or a certificate (PEM
    private key + SHA-1 thumbprint)."""

    tenant_id: str = ""
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    certificate_private_key: str = field(default="", repr=False)
    certificate_thumbprint: str = ""
    authority_host: str = "https://login.microsoftonline.com"
    graph_url: str = "https://graph.microsoft.com/v1.0"
    ca_file: str = ""
    domains: Tuple[str, ...] = ()

    def require_credentials(self) -> None:
        """Raise ConfigError unless the app registration is complete enough to ask a token."""
        for key in ("tenant_id", "client_id"):
            if not getattr(self, key):
                raise ConfigError("microsoft." + key, "is required to use Microsoft Graph")
        secret, key_pem = self.client_secret, self.certificate_private_key
        for key, value in (("client_secret", secret), ("certificate_private_key", key_pem)):
            if value and is_unrendered(value):
                raise ConfigError("microsoft." + key,
                                  "is an unrendered datastore reference; set the value")
        if key_pem and not self.certificate_thumbprint:
            raise ConfigError("microsoft.certificate_thumbprint",
                              "is required with certificate_private_key")
        if not secret and not key_pem:
            raise ConfigError("microsoft.client_secret",
                              "set client_secret, or certificate_private_key and "
                              "certificate_thumbprint")


@dataclass(frozen=True)
class GoogleSettings:
    """What GmailProvider receives. `ca_file` (not in the example) is for a private TLS CA,
    as on the Microsoft side; empty means the system store."""

    service_account_json: str = field(default="", repr=False)
    token_uri: str = "https://oauth2.googleapis.com/token"
    gmail_url: str = "https://gmail.googleapis.com"
    batch_uri: str = "https://gmail.googleapis.com/batch/gmail/v1"
    directory_url: str = "https://admin.googleapis.com"
    directory_admin: str = ""
    domains: Tuple[str, ...] = ()
    ca_file: str = ""
    batch_size: int = 50  # parts per Gmail batch request (Google allows 100)

    def service_account_info(self) -> Dict[str, Any]:
        """The parsed service account key; ConfigError (without its content) if unusable."""
        key = "google.service_account_json"
        text = self.service_account_json
        if not text:
            raise ConfigError(key, "is required to use Gmail")
        if is_unrendered(text):
            raise ConfigError(key, "is an unrendered datastore reference; set the value")
        try:
            info = json.loads(text)
        except ValueError:
            raise ConfigError(key, "is not valid JSON") from None
        if not isinstance(info, dict):
            raise ConfigError(key, "must be a JSON object (the service account key file)")
        missing = [name for name in ("client_email", "private_key", "private_key_id")
                   if not isinstance(info.get(name), str) or not info.get(name)]
        if missing:
            raise ConfigError(key, "lacks " + ", ".join(missing))
        return info

    def require_credentials(self) -> None:
        self.service_account_info()


@dataclass(frozen=True)
class CloudflareSettings:
    account_id: str = ""
    api_token: str = field(default="", repr=False)
    base_url: str = "https://api.cloudflare.com/client/v4"

    def require_credentials(self) -> None:
        if not self.account_id:
            raise ConfigError("cloudflare.account_id", "is required to read verdicts")
        if not self.api_token:
            raise ConfigError("cloudflare.api_token", "is required to read verdicts")
        if is_unrendered(self.api_token):
            raise ConfigError("cloudflare.api_token",
                              "is an unrendered datastore reference; set the value")


@dataclass(frozen=True)
class AutoRetractSettings:
    mode: str = "enforce"  # enforce | preview
    dispositions: Mapping[Disposition, Optional[Destination]] = field(
        default_factory=lambda: dict(DEFAULT_DISPOSITIONS))
    post_delivery_response: bool = True
    phish_submission_response: bool = True

    def destination_for(self, disposition: Disposition) -> Optional[Destination]:
        """Where policy sends a copy of this disposition; None means no action."""
        return self.dispositions.get(Disposition(disposition))

    def forces_preview(self, mode: Mode) -> bool:
        """Automatic runs only preview while the operator watches what policy would do."""
        return mode == Mode.AUTO and self.mode == "preview"

    def enabled_for(self, trigger: Trigger) -> bool:
        """Whether the automatic flow of this trigger is switched on."""
        if trigger == Trigger.POST_DELIVERY:
            return self.post_delivery_response
        if trigger == Trigger.PHISH_SUBMISSION:
            return self.phish_submission_response
        return trigger == Trigger.DISPOSITION


@dataclass(frozen=True)
class ApprovalSettings:
    """When an automatic run waits for an analyst, and how the question is asked (the
    `core.ask` inquiry of `auto_retract`: its route, who may answer, how long it waits)."""

    threshold: int = 300
    hard_delete: bool = True
    route: str = "email_retraction"
    users: Tuple[str, ...] = ()
    roles: Tuple[str, ...] = ()
    ttl_minutes: int = 1440


MAX_VERDICTS_PER_PAGE = 1000  # Cloudflare's investigate/submissions page limit


@dataclass(frozen=True)
class VerdictsSettings:
    dispositions: Tuple[str, ...] = ("MALICIOUS", "SUSPICIOUS", "SPOOF")
    lookback_hours: float = 24
    submission_dispositions: Tuple[str, ...] = ("MALICIOUS",)
    per_page: int = MAX_VERDICTS_PER_PAGE  # rows per verdict source page the sensors ask


@dataclass(frozen=True)
class LimitsSettings:
    max_recipients: int = 50000
    chunk_size: int = 500
    chunk_concurrency: int = 4
    provider_concurrency: int = 16
    retry_budget_s: float = 120
    max_attempts: int = 6
    result_outcomes_limit: int = 1000


@dataclass(frozen=True)
class Settings:
    microsoft: MicrosoftSettings = field(default_factory=MicrosoftSettings)
    google: GoogleSettings = field(default_factory=GoogleSettings)
    cloudflare: CloudflareSettings = field(default_factory=CloudflareSettings)
    ledger_url: Optional[str] = field(default=DEFAULT_LEDGER_URL, repr=False)
    default_destination: Destination = Destination.JUNK
    allow_hard_delete: bool = False
    protected_mailboxes: Tuple[str, ...] = ()
    expand_groups: bool = True
    auto_retract: AutoRetractSettings = field(default_factory=AutoRetractSettings)
    approval: ApprovalSettings = field(default_factory=ApprovalSettings)
    verdicts: VerdictsSettings = field(default_factory=VerdictsSettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)

    @property
    def ledger_url_display(self) -> Optional[str]:
        return mask_url(self.ledger_url) if self.ledger_url else None


# --- readers: each takes the dotted key so every error names it -----------------------------

def _block(config: Any, key: str) -> Mapping[str, Any]:
    value = config.get(key) if config is not None else None
    if value is None:
        return {}
    if not hasattr(value, "get"):
        raise ConfigError(key, "must be a mapping")
    return value


def _str(block: Mapping[str, Any], name: str, prefix: str, default: str) -> str:
    value = block.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ConfigError(prefix + name, "must be a string")
    return value.strip()


def _secret(block: Mapping[str, Any], name: str, prefix: str) -> str:
    value = block.get(name)
    if value is None:
        return ""
    if isinstance(value, dict) and name == "service_account_json":
        return json.dumps(value)  # YAML may hold the key file as a mapping
    if not isinstance(value, str):
        raise ConfigError(prefix + name, "must be a string")  # never show a secret
    return value.strip()


def _url(block: Mapping[str, Any], name: str, prefix: str, default: str) -> str:
    value = _str(block, name, prefix, default) or default
    if not re.match(r"https?://[^/\s]+", value):
        raise ConfigError(prefix + name, "must be an http(s) URL, got %r" % value[:80])
    return value.rstrip("/")


def _bool(block: Mapping[str, Any], name: str, prefix: str, default: bool) -> bool:
    value = block.get(name)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ConfigError(prefix + name, "must be true or false")


def _number(block: Mapping[str, Any], name: str, prefix: str, default: Any,
            minimum: float, integer: bool = True, maximum: Optional[float] = None) -> Any:
    value = block.get(name)
    if value is None:
        return default
    if isinstance(value, str):
        try:
            value = int(value) if integer else float(value)
        except ValueError:
            raise ConfigError(prefix + name, "must be a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(prefix + name, "must be a number")
    if integer and not float(value).is_integer():
        raise ConfigError(prefix + name, "must be a whole number")
    if value < minimum:
        raise ConfigError(prefix + name, "must be at least %s" % minimum)
    if maximum is not None and value > maximum:
        raise ConfigError(prefix + name, "must be at most %s" % maximum)
    return int(value) if integer else value


def _list(block: Mapping[str, Any], name: str, prefix: str, default: Tuple[str, ...]
          ) -> Tuple[str, ...]:
    value = block.get(name)
    if value is None:
        return default
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(prefix + name, "must be a list of strings")
    return tuple(v.strip() for v in value)


def _domains(block: Mapping[str, Any], prefix: str, default: Tuple[str, ...]) -> Tuple[str, ...]:
    out = []
    for value in _list(block, "domains", prefix, default):
        try:
            out.append(domain_name(value, prefix + "domains"))
        except InvalidRequest as exc:
            raise ConfigError(prefix + "domains", "%s: %s" % (value[:80], exc.problem)) from None
    return tuple(dict.fromkeys(out))


def _microsoft(config: Any) -> MicrosoftSettings:
    b, p, d = _block(config, "microsoft"), "microsoft.", MicrosoftSettings()
    thumbprint = _str(b, "certificate_thumbprint", p, "").replace(":", "")
    if thumbprint and not _THUMBPRINT_RE.fullmatch(thumbprint):
        raise ConfigError(p + "certificate_thumbprint", "must be 40 hex digits (SHA-1)")
    return MicrosoftSettings(
        tenant_id=_str(b, "tenant_id", p, d.tenant_id),
        client_id=_str(b, "client_id", p, d.client_id),
        client_secret=_secret(b, "client_secret", p),
        certificate_private_key=_secret(b, "certificate_private_key", p),
        certificate_thumbprint=thumbprint.upper(),
        authority_host=_url(b, "authority_host", p, d.authority_host),
        graph_url=_url(b, "graph_url", p, d.graph_url),
        ca_file=_str(b, "ca_file", p, ""),
        domains=_domains(b, p, d.domains),
    )


def _google(config: Any) -> GoogleSettings:
    b, p, d = _block(config, "google"), "google.", GoogleSettings()
    admin = _str(b, "directory_admin", p, "")
    if admin:
        try:
            admin = address(admin, p + "directory_admin")
        except InvalidRequest as exc:
            raise ConfigError(p + "directory_admin", exc.problem) from None
    return GoogleSettings(
        service_account_json=_secret(b, "service_account_json", p),
        token_uri=_url(b, "token_uri", p, d.token_uri),
        gmail_url=_url(b, "gmail_url", p, d.gmail_url),
        batch_uri=_url(b, "batch_uri", p, d.batch_uri),
        directory_url=_url(b, "directory_url", p, d.directory_url),
        directory_admin=admin,
        domains=_domains(b, p, d.domains),
        ca_file=_str(b, "ca_file", p, ""),
        batch_size=_number(b, "batch_size", p, d.batch_size, 1, maximum=100),
    )


def _cloudflare(config: Any) -> CloudflareSettings:
    b, p, d = _block(config, "cloudflare"), "cloudflare.", CloudflareSettings()
    return CloudflareSettings(
        account_id=_str(b, "account_id", p, d.account_id),
        api_token=_secret(b, "api_token", p),
        base_url=_url(b, "base_url", p, d.base_url),
    )


def _destination(value: Any, key: str, allow_none: bool = False) -> Optional[Destination]:
    text = value.strip().lower() if isinstance(value, str) else value
    if allow_none and (text is None or text == "none"):
        return None
    try:
        return Destination(text)
    except ValueError:
        words = Destination.values() + (("none",) if allow_none else ())
        raise ConfigError(key, "must be one of %s, got %r" % (", ".join(words), value)) from None


def _auto_retract(config: Any, allow_hard_delete: bool) -> AutoRetractSettings:
    b, p = _block(config, "auto_retract"), "auto_retract."
    mode = _str(b, "mode", p, "enforce").lower()
    if mode not in ("enforce", "preview"):
        raise ConfigError(p + "mode", "must be enforce or preview, got %r" % mode[:40])
    raw = b.get("dispositions")
    if raw is None:
        mapping = dict(DEFAULT_DISPOSITIONS)
    elif not hasattr(raw, "items"):
        raise ConfigError(p + "dispositions", "must be a mapping of disposition to destination")
    else:
        # Given explicitly, the mapping is taken as is: a disposition left out means no action,
        # so nothing is retracted that the operator did not name.
        mapping = {}
        for name, value in raw.items():
            key = p + "dispositions." + str(name)
            try:
                disposition = Disposition(str(name).strip().upper())
            except ValueError:
                raise ConfigError(key, "is not a disposition (%s)"
                                  % ", ".join(Disposition.values())) from None
            mapping[disposition] = _destination(value, key, allow_none=True)
            if mapping[disposition] == Destination.HARD_DELETE and not allow_hard_delete:
                raise ConfigError(key, "is hard_delete but allow_hard_delete is false")
    mapping[Disposition.NONE] = None  # a clean verdict never moves mail
    return AutoRetractSettings(
        mode=mode,
        dispositions=mapping,
        post_delivery_response=_bool(b, "post_delivery_response", p, True),
        phish_submission_response=_bool(b, "phish_submission_response", p, True),
    )


def _disposition_words(block: Mapping[str, Any], name: str, prefix: str,
                       default: Tuple[str, ...]) -> Tuple[str, ...]:
    words = tuple(v.upper() for v in _list(block, name, prefix, default))
    for value in words:
        if not _DISPOSITION_WORD_RE.fullmatch(value):
            raise ConfigError(prefix + name, "%r is not a disposition word" % value[:40])
    return words


_ROUTE_RE = re.compile(r"[^\s\x00-\x1f\x7f]{1,128}")  # one word: inquiry rules match it


def _names(block: Mapping[str, Any], name: str, prefix: str) -> Tuple[str, ...]:
    """StackStorm user or role names: no blanks, no repeats."""
    names = []
    for value in _list(block, name, prefix, ()):
        if not value or any(c.isspace() for c in value):
            raise ConfigError(prefix + name, "%r is not a user or role name" % value[:80])
        names.append(value)
    return tuple(dict.fromkeys(names))


def _approval(config: Any) -> ApprovalSettings:
    b, p, d = _block(config, "approval"), "approval.", ApprovalSettings()
    route = _str(b, "route", p, d.route) or d.route
    if not _ROUTE_RE.fullmatch(route):
        raise ConfigError(p + "route", "must be one word of at most 128 characters (rules on "
                                       "core.st2.generic.inquiry match it), got %r"
                          % route[:80])
    return ApprovalSettings(
        threshold=_number(b, "threshold", p, d.threshold, 0),
        hard_delete=_bool(b, "hard_delete", p, d.hard_delete),
        route=route,
        users=_names(b, "users", p),
        roles=_names(b, "roles", p),
        ttl_minutes=_number(b, "ttl_minutes", p, d.ttl_minutes, 1),
    )


def _verdicts(config: Any) -> VerdictsSettings:
    b, p, d = _block(config, "verdicts"), "verdicts.", VerdictsSettings()
    return VerdictsSettings(
        dispositions=_disposition_words(b, "dispositions", p, d.dispositions),
        lookback_hours=_number(b, "lookback_hours", p, d.lookback_hours, 0, integer=False),
        submission_dispositions=_disposition_words(b, "submission_dispositions", p,
                                                   d.submission_dispositions),
        per_page=_number(b, "per_page", p, d.per_page, 1, maximum=MAX_VERDICTS_PER_PAGE),
    )


def _limits(config: Any) -> LimitsSettings:
    b, p, d = _block(config, "limits"), "limits.", LimitsSettings()
    return LimitsSettings(
        max_recipients=_number(b, "max_recipients", p, d.max_recipients, 1),
        chunk_size=_number(b, "chunk_size", p, d.chunk_size, 1),
        chunk_concurrency=_number(b, "chunk_concurrency", p, d.chunk_concurrency, 1),
        provider_concurrency=_number(b, "provider_concurrency", p, d.provider_concurrency, 1),
        retry_budget_s=_number(b, "retry_budget_s", p, d.retry_budget_s, 0, integer=False),
        max_attempts=_number(b, "max_attempts", p, d.max_attempts, 1),
        result_outcomes_limit=_number(b, "result_outcomes_limit", p, d.result_outcomes_limit, 0),
    )


def _protected(config: Any) -> Tuple[str, ...]:
    out = []
    for value in _list(config, "protected_mailboxes", "", ()):
        try:
            out.append(address(value, "protected_mailboxes"))
        except InvalidRequest as exc:
            raise ConfigError("protected_mailboxes", "%s: %s" % (value[:80], exc.problem)) \
                from None
    return tuple(out)


# --- the schema check ------------------------------------------------------------------------

SCHEMA_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "config.schema.yaml")
_SCHEMA: Dict[str, Any] = {}
_TYPE_WORDS = {
    "object": "must be a mapping",
    "array": "must be a list",
    "string": "must be a string",
    "integer": "must be a whole number",
    "number": "must be a number",
    "boolean": "must be true or false",
}
SHOWN = 80  # characters of a (non-secret) value an error shows


def _config_schema() -> Dict[str, Any]:
    """config.schema.yaml (StackStorm's format: a mapping of top-level settings) as one JSON
    Schema object that, unlike StackStorm's check, refuses unknown top-level keys."""
    if not _SCHEMA:
        import yaml

        try:
            with open(SCHEMA_PATH, encoding="utf-8") as handle:
                # libyaml's loader when PyYAML has it: a cold action reads this file each time
                properties = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader",
                                                              yaml.SafeLoader))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError("(schema)", "cannot read %s: %s"
                              % (SCHEMA_PATH, type(exc).__name__)) from None
        _SCHEMA.update(type="object", properties=properties, additionalProperties=False)
    return _SCHEMA


def _plain(value: Any) -> Any:
    """The config as plain JSON data for jsonschema; a null counts as not set."""
    if hasattr(value, "keys") and hasattr(value, "get"):
        out = {}
        for key in list(value.keys()):
            item = value.get(key)
            if item is None:
                continue
            out[str(key)] = _plain(item)
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN else text[:SHOWN] + "..."


def _schema_problems(error: Any) -> List[Tuple[str, str]]:
    """(key path, problem) for one jsonschema error, in our words; a value is shown only
    for a setting that is not secret."""
    path = [str(p) for p in error.absolute_path if not isinstance(p, int)]
    items = [p for p in error.absolute_path if isinstance(p, int)]
    key = ".".join(path) or "(root)"
    item = "item %d " % (items[-1] + 1) if items else ""
    schema = error.schema if isinstance(error.schema, dict) else {}
    secret = bool(schema.get("secret"))
    kind = error.validator
    if kind == "additionalProperties":
        known = sorted((schema.get("properties") or {}).keys())
        out = []
        for name in sorted(set(error.instance) - set(known)):
            close = difflib.get_close_matches(name, known, n=1)
            hint = " (did you mean %s?)" % close[0] if close else ""
            out.append((".".join(path + [name]), "unknown key" + hint))
        return out
    if kind == "type":
        wanted = error.validator_value
        words = _TYPE_WORDS.get(wanted, "must be of type %s" % wanted) \
            if isinstance(wanted, str) else "has the wrong type"
        return [(key, item + words if item else words)]
    if secret:
        return [(key, "is not valid (%s)" % kind)]
    shown = _shown(error.instance)
    if kind == "enum":
        words = ", ".join(str(v) for v in error.validator_value)
        return [(key, "%smust be one of %s, got %s" % (item, words, shown))]
    if kind == "minimum":
        return [(key, "%smust be at least %s" % (item, error.validator_value))]
    if kind == "maximum":
        return [(key, "%smust be at most %s" % (item, error.validator_value))]
    if kind == "pattern":
        return [(key, "%s%s does not match %s" % (item, shown, error.validator_value))]
    return [(key, "%sis not valid (%s), got %s" % (item, kind, shown))]


def check_schema(config: Any) -> None:
    """Check the pack config against config.schema.yaml; ConfigError listing every problem,
    each naming its key path, never a secret's value."""
    import jsonschema

    validator = jsonschema.Draft4Validator(_config_schema())
    plain = _plain(config)
    google = plain.get("google") if isinstance(plain, dict) else None
    if isinstance(google, dict) and isinstance(google.get("service_account_json"), dict):
        google["service_account_json"] = "{}"  # the key file as a mapping: _secret's JSON
    problems: List[Tuple[str, str]] = []
    for error in validator.iter_errors(plain):
        for found in _schema_problems(error):
            if found not in problems:
                problems.append(found)
    if problems:
        problems.sort()
        raise ConfigError(problems[0][0], problems[0][1], problems)


def load_settings(config: Any) -> "Settings":
    """Settings from a pack config mapping (or StackStorm's config object); None means all
    defaults. Raises ConfigError naming the bad keys: every schema problem at once, then the
    first problem the readers find."""
    if isinstance(config, Settings):
        return config
    if config is None:
        config = {}
    if not hasattr(config, "get"):
        raise ConfigError("(root)", "the pack config must be a mapping")
    check_schema(config)
    microsoft, google = _microsoft(config), _google(config)
    overlap = sorted(set(microsoft.domains) & set(google.domains))
    if overlap:
        raise ConfigError("google.domains", "%s is also under microsoft.domains" % overlap[0])
    allow_hard_delete = _bool(config, "allow_hard_delete", "", False)
    default_destination = _destination(config.get("default_destination") or "junk",
                                       "default_destination")
    if default_destination == Destination.HARD_DELETE:
        raise ConfigError("default_destination", "hard_delete is never a default; ask for it")
    ledger_url = config.get("ledger_url", DEFAULT_LEDGER_URL)
    if ledger_url is not None and not isinstance(ledger_url, str):
        raise ConfigError("ledger_url", "must be a string (an SQLAlchemy URL) or empty")
    return Settings(
        microsoft=microsoft,
        google=google,
        cloudflare=_cloudflare(config),
        ledger_url=(ledger_url or "").strip() or None,
        default_destination=default_destination,
        allow_hard_delete=allow_hard_delete,
        protected_mailboxes=_protected(config),
        expand_groups=_bool(config, "expand_groups", "", True),
        auto_retract=_auto_retract(config, allow_hard_delete),
        approval=_approval(config),
        verdicts=_verdicts(config),
        limits=_limits(config),
    )


def load_file(path: str) -> "Settings":
    """Settings from a YAML file shaped like `email_retraction.yaml.example`."""
    import yaml  # only the CLI, the demo and tests read files; actions get a dict

    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise ConfigError("(file)", "cannot read %s: %s" % (path, exc.strerror)) from None
    except yaml.YAMLError as exc:
        raise ConfigError("(file)", "%s is not valid YAML: %s" % (path, exc)) from None
    return load_settings(data or {})
