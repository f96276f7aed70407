"""The automatic flow's decisions, kept out of the workflow so they can be tested.

`plan_verdict` is what the `plan` action (the first task of the `auto_retract` workflow) does
with one verdict: check it, then say whether policy acts on it, where the copies go, whether
it is a preview and whether an analyst must approve first, and why, in one sentence.

Order of the checks, each ending the plan with its own reason:
1. the trigger's switch: `auto_retract.post_delivery_response` and
   `auto_retract.phish_submission_response` turn those flows off (the `disposition` flow is on
   whenever a disposition maps to a destination). Rules cannot read the pack config, so the
   switches are applied here, not in the rules.
2. the disposition's destination in `auto_retract.dispositions`; `none` is "no action by
   policy" (a NONE verdict never moves mail).
3. a changed verdict (`previous_disposition` given, as the post-delivery rule does): act
   only when the new disposition's destination is stronger than where the previous one
   already sent the copies (inbox < junk < trash < soft_delete < hard_delete; "no action"
   ranks as inbox). MALICIOUS -> SUSPICIOUS must not pull copies out of the trash into junk.
4. preview: `auto_retract.mode: preview` makes every automatic run a preview.
5. approval: more copies than `approval.threshold`, or a hard delete while
   `approval.hard_delete` is on. A preview moves nothing, so it never waits for an analyst.
   The plan carries the inquiry's settings (`approval.route`, `users`, `roles`,
   `ttl_minutes`) so the workflow asks as the config says.

`decision_from_params` checks an analyst's answer before `Ledger.record_decision` keeps it
(the `record_decision` action, which `auto_retract` runs on approve and on reject).

`verdict_from_body` checks what a verdict source POSTs to the StackStorm webhook
(`email_retraction/verdict`) against `VERDICT_BODY_SCHEMA`, then against the same field
grammar as every other request, and returns the `auto_retract` parameters. Every problem
names the field (`body.recipients[2]`), so the sender can fix its integration.

Expression injection (retraction.inert): the subject, sender, reporter and ids of a phishing
email reach `auto_retract`, whose engine evaluates any `{{ }}`/`{% %}`/`<% %>` in them. So
everything these functions return is inert: free text through `free_text`, which makes it
inert, ids and addresses refusing the delimiters, and the result dicts (and every error
message, which a workflow publishes as `why`) passed through `inert_values` once more.
A webhook body reaches `intake_verdict` as its input, which Orquesta evaluates before
`validate_verdict` sees it; the body therefore travels percent-encoded
(`{"percent_encoded_json": "<the body as JSON, URL-quoted>"}`, what the rule's
`{{ trigger.body | tojson | urlencode }}` makes: no delimiter survives URL quoting) and is
decoded here. A plain JSON object is still accepted (direct calls, tests).
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple
from urllib.parse import unquote

from retraction.campaign import run_id as checked_run_id
from retraction.inert import inert_text, inert_values
from retraction.model import Destination, Disposition, Mode, Trigger
from retraction.policy import Policy
from retraction.validation import (InvalidRequest, free_text, message_id, recipients, show,
                                   timestamp, word)

# An analyst's answer to an approval inquiry; = retraction.ledger.DECISIONS (not imported
# from there: the plan's process never loads SQLAlchemy).
DECISIONS = ("approved", "rejected")
DECISION_FIELDS = ("message_id", "decision", "decided_by", "comment", "copies", "destination",
                   "trigger", "disposition", "run_id")

AUTOMATIC_TRIGGERS = (Trigger.DISPOSITION, Trigger.POST_DELIVERY, Trigger.PHISH_SUBMISSION)
SWITCHES = {
    Trigger.POST_DELIVERY: "auto_retract.post_delivery_response",
    Trigger.PHISH_SUBMISSION: "auto_retract.phish_submission_response",
}
FLOW_NAMES = {
    Trigger.DISPOSITION: "automatic retraction by disposition",
    Trigger.POST_DELIVERY: "post-delivery response",
    Trigger.PHISH_SUBMISSION: "phish submission response",
}
SOURCE_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
WEBHOOK_SOURCE = "webhook"  # the source word of a verdict whose body names none
MAX_SOURCE_ID = 256
MAX_SUBJECT = 998
MAX_COMMENT = 1000
MAX_REQUESTED_BY = 200
MAX_PROBLEMS_SHOWN = 5

PLAN_FIELDS = ("message_id", "recipients", "disposition", "trigger", "verdict_time", "source",
               "source_id", "recipients_count", "comment", "requested_by", "sender", "subject",
               "previous_disposition")


@dataclass(frozen=True)
class Plan:
    """What the automatic flow does with one verdict (the `plan` action's result)."""

    act: bool
    why: str
    destination: Optional[str]
    preview: bool
    needs_approval: bool
    approval_reason: Optional[str]
    copies: int
    message_id: str
    trigger: str
    disposition: str
    verdict_time: str
    source: str
    source_id: Optional[str]
    comment: str
    requested_by: str
    question: Optional[str]  # the inquiry's text when needs_approval
    previous_disposition: Optional[str]  # the verdict before it changed (post-delivery)
    inquiry: Dict[str, Any]  # core.ask route, users, roles, ttl (minutes) from `approval`
    mode: str = Mode.AUTO.value

    def to_dict(self) -> Dict[str, Any]:
        """JSON-safe and inert (every string free of template delimiters)."""
        return inert_values(asdict(self))


def _source(value: Any, field: str) -> str:
    text = free_text(value, field, 64)
    if text is None:
        raise InvalidRequest(field, value, "is required (the verdict source, e.g. cloudflare)")
    if not re.match(SOURCE_PATTERN, text):
        raise InvalidRequest(field, value, "must be a word of letters, digits and _ . : - "
                                           "(at most 64), e.g. cloudflare")
    return text


def _count(value: Any, field: str) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise InvalidRequest(field, value, "must be a whole number")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidRequest(field, value, "must be a whole number") from None
    if number < 0 or (isinstance(value, float) and not value.is_integer()):
        raise InvalidRequest(field, value, "must be a whole number >= 0")
    return number


def _shown(value: Any) -> Optional[str]:
    return value if isinstance(value, str) and value.strip() else None


def _trigger(value: Any) -> Trigger:
    if value is None or (isinstance(value, str) and not value.strip()):
        return Trigger.DISPOSITION
    trigger = word(Trigger, value, "trigger")
    if trigger not in AUTOMATIC_TRIGGERS:
        raise InvalidRequest("trigger", value, "analyst is a manual trigger; an automatic run "
                                               "is disposition, post_delivery or "
                                               "phish_submission")
    return trigger


def plan_verdict(policy: Policy, params: Mapping[str, Any]) -> Plan:
    """Check one verdict and decide what policy does with it. Raises InvalidRequest naming
    the field for bad input (nothing is retracted then)."""
    unknown = sorted(set(params) - set(PLAN_FIELDS))
    if unknown:
        raise InvalidRequest(unknown[0], params[unknown[0]], "is not a parameter of plan")
    settings = policy.settings
    msgid = message_id(params.get("message_id"))
    rcpts = recipients(params.get("recipients"), settings.limits.max_recipients)
    disposition = word(Disposition, params.get("disposition"), "disposition", upper=True)
    trigger = _trigger(params.get("trigger"))
    raw_time = params.get("verdict_time")
    if raw_time is None or (isinstance(raw_time, str) and not raw_time.strip()):
        raise InvalidRequest("verdict_time", raw_time,
                             "is required: time to retract is measured from the verdict")
    verdict_time = timestamp(raw_time, "verdict_time").isoformat()
    source = _source(params.get("source"), "source")
    source_id = free_text(params.get("source_id"), "source_id", MAX_SOURCE_ID)
    copies = max(len(rcpts), _count(params.get("recipients_count"), "recipients_count"))
    given_comment = free_text(params.get("comment"), "comment", MAX_COMMENT)
    requested_by = (free_text(params.get("requested_by"), "requested_by", MAX_REQUESTED_BY)
                    or source)
    # Shown to the analyst only, escaped and made inert by show(): an odd subject
    # (attacker-chosen text) must never stop a retraction, so these two are not refused.
    subject, sender = _shown(params.get("subject")), _shown(params.get("sender"))

    # What the ledger keeps with every outcome: which verdict this run answered.
    comment = "%s: %s verdict %s%s" % (trigger.value, source, disposition.value,
                                       " (%s)" % source_id if source_id else "")
    if given_comment:
        comment += "; " + given_comment
    raw_previous = params.get("previous_disposition")
    previous = None
    if not (raw_previous is None or (isinstance(raw_previous, str) and not raw_previous.strip())):
        previous = word(Disposition, raw_previous, "previous_disposition", upper=True)
    approval = settings.approval
    base = dict(copies=copies, message_id=msgid, trigger=trigger.value,
                disposition=disposition.value, verdict_time=verdict_time, source=source,
                source_id=source_id, comment=comment[:MAX_COMMENT], requested_by=requested_by,
                previous_disposition=previous.value if previous is not None else None,
                inquiry={"route": approval.route, "users": list(approval.users),
                         "roles": list(approval.roles), "ttl": approval.ttl_minutes})

    if not policy.auto_enabled(trigger):
        why = "no action by policy: %s is off (%s: false)" % (FLOW_NAMES[trigger],
                                                              SWITCHES[trigger])
        return Plan(act=False, why=why, destination=None, preview=False, needs_approval=False,
                    approval_reason=None, question=None, **base)

    destination = policy.destination_for(disposition)
    if destination is None:
        if disposition == Disposition.NONE:
            why = "no action by policy: a NONE (clean) verdict never moves mail"
        else:
            why = ("no action by policy: auto_retract.dispositions maps %s to none"
                   % disposition.value)
        return Plan(act=False, why=why, destination=None, preview=False, needs_approval=False,
                    approval_reason=None, question=None, **base)

    if previous is not None and policy.already_handled(previous, destination):
        before = policy.destination_for(previous)
        why = "already handled: previous disposition %s %s, and %s -> %s is not stronger" % (
            previous.value, "sent copies to %s" % before.value if before is not None
            else "left copies where they were (no action by policy)", disposition.value,
            destination.value)
        return Plan(act=False, why=why, destination=None, preview=False, needs_approval=False,
                    approval_reason=None, question=None, **base)

    preview = policy.preview_for(Mode.AUTO, False)
    approval_reason = None
    if not preview and policy.needs_approval(copies, destination):
        approval_reason = _approval_reason(policy, copies, destination)
    why = "%s: %s -> %s by policy (auto_retract.dispositions), %d %s" % (
        FLOW_NAMES[trigger], disposition.value, destination.value, copies,
        "copy" if copies == 1 else "copies")
    if preview:
        why += "; preview only (auto_retract.mode: preview), nothing will move"
    if approval_reason:
        why += "; waits for approval: " + approval_reason
    question = None
    if approval_reason:
        question = _question(msgid, subject, sender, destination, copies, disposition,
                             source, approval_reason)
    return Plan(act=True, why=why, destination=destination.value, preview=preview,
                needs_approval=approval_reason is not None, approval_reason=approval_reason,
                question=question, **base)


def _approval_reason(policy: Policy, copies: int, destination: Destination) -> str:
    approval = policy.settings.approval
    reasons = []
    if destination == Destination.HARD_DELETE and approval.hard_delete:
        reasons.append("hard delete (approval.hard_delete)")
    if copies > approval.threshold:
        reasons.append("%d copies is more than approval.threshold (%d)"
                       % (copies, approval.threshold))
    return " and ".join(reasons)


def _question(msgid: str, subject: Optional[str], sender: Optional[str],
              destination: Destination, copies: int, disposition: Disposition, source: str,
              reason: str) -> str:
    about = msgid
    if subject:
        about += " %s" % show(subject)
    if sender:
        about += " from %s" % show(sender)
    return ("Approve moving %d %s of %s to %s? %s says %s. Asked because of %s. Answer "
            "approve=true to go ahead, approve=false to stop (add analyst and comment)."
            % (copies, "copy" if copies == 1 else "copies", about, destination.value, source,
               disposition.value, reason))


# --- approval decisions ------------------------------------------------------------------------

def _optional(params: Mapping[str, Any], name: str) -> Any:
    value = params.get(name)
    return None if value is None or (isinstance(value, str) and not value.strip()) else value


def decision_from_params(params: Mapping[str, Any]) -> Dict[str, Any]:
    """The arguments of `Ledger.record_decision` from the `record_decision` action's
    parameters, every field checked (InvalidRequest naming it) before the ledger is opened."""
    unknown = sorted(set(params) - set(DECISION_FIELDS))
    if unknown:
        raise InvalidRequest(unknown[0], params[unknown[0]], "is not a parameter of "
                                                             "record_decision")
    decision = _optional(params, "decision")
    text = decision.strip().lower() if isinstance(decision, str) else None
    if text not in DECISIONS:
        raise InvalidRequest("decision", decision, "must be one of %s" % ", ".join(DECISIONS))
    copies = _optional(params, "copies")
    values = {
        "message_id": message_id(params.get("message_id")),
        "decision": text,
        "decided_by": free_text(params.get("decided_by"), "decided_by", MAX_REQUESTED_BY),
        "comment": free_text(params.get("comment"), "comment", MAX_COMMENT),
        "copies": None if copies is None else _count(copies, "copies"),
        "destination": None, "trigger": None, "disposition": None, "run_id": None,
    }
    if _optional(params, "destination") is not None:
        values["destination"] = word(Destination, params["destination"], "destination").value
    if _optional(params, "trigger") is not None:
        values["trigger"] = word(Trigger, params["trigger"], "trigger").value
    if _optional(params, "disposition") is not None:
        values["disposition"] = word(Disposition, params["disposition"], "disposition",
                                     upper=True).value
    if _optional(params, "run_id") is not None:
        values["run_id"] = checked_run_id(params["run_id"])
    return values


# --- the webhook ------------------------------------------------------------------------------

VERDICT_BODY_SCHEMA = {
    "$schema": "http://json-schema.org/draft-04/schema#",
    "title": "A verdict POSTed to /api/v1/webhooks/email_retraction/verdict",
    "type": "object",
    "additionalProperties": False,
    "required": ["message_id", "recipients", "disposition", "verdict_time"],
    "properties": {
        "message_id": {"type": "string", "minLength": 1, "maxLength": 998,
                       "description": "The Message-ID header, e.g. <abc@host.example>."},
        "recipients": {"type": "array", "minItems": 1,
                       "items": {"type": "string", "minLength": 1, "maxLength": 254},
                       "description": "Mailbox addresses the message was delivered to."},
        "disposition": {"type": "string", "enum": list(Disposition.values()),
                        "description": "The verdict, in the pack's words."},
        "verdict_time": {"type": "string", "minLength": 1,
                         "description": "When the verdict was reached, ISO 8601 (no zone: "
                                        "UTC); time to retract is measured from it."},
        "source": {"type": "string", "pattern": SOURCE_PATTERN,
                   "description": "Who says so (e.g. defender, sublime, siem); default "
                                  "webhook."},
        "source_id": {"type": ["string", "null"], "maxLength": MAX_SOURCE_ID,
                      "description": "The source's own id of the verdict or alert."},
        "sender": {"type": ["string", "null"], "maxLength": MAX_SUBJECT},
        "subject": {"type": ["string", "null"], "maxLength": MAX_SUBJECT},
        "trigger": {"type": "string", "enum": [t.value for t in AUTOMATIC_TRIGGERS],
                    "description": "disposition (default), post_delivery (the verdict "
                                   "changed after delivery) or phish_submission (a user "
                                   "report was confirmed); each obeys its config switch."},
        "recipients_count": {"type": "integer", "minimum": 0,
                             "description": "Copies the source counted, when it lists "
                                            "fewer recipients than that."},
    },
}


class InvalidVerdict(ValueError):
    """A webhook body that is not a verdict: every problem, each naming its field."""

    def __init__(self, problems: List[Tuple[str, str]]):
        # A field path can hold a key the sender chose (body.<unknown key>): inert, as all text.
        problems = [(inert_text(field), inert_text(problem)) for field, problem in problems]
        self.problems = problems
        shown = "; ".join("%s %s" % (field, problem)
                          for field, problem in problems[:MAX_PROBLEMS_SHOWN])
        more = len(problems) - MAX_PROBLEMS_SHOWN
        if more > 0:
            shown += "; and %d more" % more
        super().__init__("invalid verdict body: %s. Nothing was retracted." % shown)

    @property
    def field(self) -> str:
        return self.problems[0][0]


def _path(parts: Any) -> str:
    text = "body"
    for part in parts:
        text += "[%d]" % part if isinstance(part, int) else ".%s" % part
    return text


# Our own words for the other checks the schema makes (jsonschema's change between versions).
_WORDING = {
    "minItems": "must hold at least %d item(s)",
    "maxItems": "must hold at most %d item(s)",
    "minLength": "must be at least %d character(s) long",
    "maxLength": "must be at most %d characters long",
    "minimum": "must be at least %s",
    "pattern": "must match %s",
}


def _schema_problems(body: Any) -> List[Tuple[str, str]]:
    import jsonschema  # imported here: only the webhook path needs it

    if not isinstance(body, dict):
        return [("body", "must be a JSON object (got %s)" % type(body).__name__)]
    validator = jsonschema.Draft4Validator(VERDICT_BODY_SCHEMA)
    problems = []
    for error in validator.iter_errors(body):
        path = list(error.absolute_path)
        if error.validator == "required":
            for name in VERDICT_BODY_SCHEMA["required"]:
                if name not in error.instance:
                    problems.append((_path(path + [name]), "is required"))
        elif error.validator == "additionalProperties":
            known = VERDICT_BODY_SCHEMA["properties"]
            for name in sorted(k for k in error.instance if k not in known):
                problems.append((_path(path + [name]), "is not a field of a verdict (fields: "
                                 "%s)" % ", ".join(sorted(known))))
        elif error.validator == "enum":
            problems.append((_path(path), "must be one of %s (got %s)"
                             % (", ".join(error.validator_value), show(error.instance))))
        elif error.validator == "type":
            types = error.validator_value
            types = types if isinstance(types, list) else [types]
            problems.append((_path(path), "must be %s (got %s)"
                             % (" or ".join(types), show(error.instance))))
        elif error.validator in _WORDING:
            problems.append((_path(path), _WORDING[error.validator] % error.validator_value))
        else:
            problems.append((_path(path), error.message[:200]))
    return sorted(set(problems), key=lambda p: (p[0], p[1]))


ENCODED_BODY = "percent_encoded_json"


def decode_body(body: Any) -> Any:
    """The webhook body: `{"percent_encoded_json": "%7B..."}` (what the webhook rule passes,
    so Orquesta does not evaluate the body before it is checked) decoded, anything else as
    given. InvalidVerdict when the encoded text is not URL-quoted UTF-8 JSON."""
    if not (isinstance(body, dict) and list(body) == [ENCODED_BODY]):
        return body
    text = body[ENCODED_BODY]
    if not isinstance(text, str):
        raise InvalidVerdict([("body.%s" % ENCODED_BODY, "must be a string (got %s)"
                               % show(text))])
    try:
        return json.loads(unquote(text, encoding="utf-8", errors="strict"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidVerdict([("body", "is not URL-quoted JSON (%s)" % type(exc).__name__)])


def verdict_from_body(body: Any, settings: Any) -> Dict[str, Any]:
    """The `auto_retract` parameters of a webhook body (or of its percent-encoded form, see
    decode_body), or InvalidVerdict naming each bad field. The grammar checks are the ones
    every request gets (Message-ID, addresses, ISO 8601 time not in the future), so nothing
    odd reaches a provider; the parameters are inert (retraction.inert)."""
    body = decode_body(body)
    problems = _schema_problems(body)
    if not isinstance(body, dict):
        raise InvalidVerdict(problems)
    # Fields the schema refused are reported once; the others still get their grammar
    # checked, so the sender hears every problem in one answer.
    refused = set(re.split(r"[.\[]", field)[1] for field, _ in problems if field != "body")
    out = {}  # type: Dict[str, Any]
    checks = (
        ("message_id", lambda v: message_id(v, "body.message_id")),
        ("recipients", lambda v: list(recipients(v, settings.limits.max_recipients,
                                                 "body.recipients"))),
        ("verdict_time", lambda v: timestamp(v, "body.verdict_time").isoformat()),
        ("sender", lambda v: free_text(v, "body.sender", MAX_SUBJECT)),
        ("subject", lambda v: free_text(v, "body.subject", MAX_SUBJECT)),
        ("source_id", lambda v: free_text(v, "body.source_id", MAX_SOURCE_ID)),
    )
    for name, check in checks:
        if name in refused:
            continue
        try:
            out[name] = check(body.get(name))
        except InvalidRequest as exc:
            problems.append((exc.field, "%s (got %s)" % (exc.problem, show(exc.value))))
    if problems:
        raise InvalidVerdict(problems)
    out["disposition"] = body["disposition"]
    out["retraction_trigger"] = body.get("trigger") or Trigger.DISPOSITION.value
    out["source"] = body.get("source") or WEBHOOK_SOURCE
    out["recipients_count"] = body.get("recipients_count") or 0
    return inert_values(out)
