"""The automatic flow end to end, without StackStorm's engine but with every piece it would run:

sensor poll (the real sensors against the sandbox's Cloudflare API) -> dispatched payload ->
the rule's parameters rendered and cast as StackStorm does (test_rules) -> the auto_retract
workflow walked task by task, its Jinja expressions evaluated as Orquesta evaluates them ->
plan -> (core.ask answered by the test) -> retract_campaign (walked the same way when its
expressions are Jinja: split_recipients -> retract chunks -> aggregate_run) -> the real
providers against the sandbox tenant -> the ledger (SQLite in tmp_path).

`Walker` covers the part of Orquesta this pack uses: inputs, vars, output, tasks with action,
input, with-items (items, concurrency), next (when, publish, do), the engine commands fail and
noop, and start tasks (those no transition leads to). Expressions are evaluated as Orquesta
evaluates them: Jinja with jinja2, YAQL with yaql (the engine Orquesta uses), with Orquesta's
functions ctx(), result(), succeeded(), failed() and item(). Tasks run one at a time; with-items
items too (concurrency only bounds parallelism, the results are the same).
"""
import copy
import functools
import importlib
import inspect
import json
import os
import re
from datetime import datetime, timezone

import jinja2
import pytest
from st2tests.base import BaseSensorTestCase
from st2tests.mocks.action import MockActionService, MockActionWrapper

import conformance
from conftest import PACK_REF, PACK_ROOT
from retraction.ledger import Ledger
from st2common.runners.utils import get_action_class_instance
from test_rules import SensorDrive, enforce, parameter_problems, rules_for
from verdict_sensor import VerdictSensor

pytest_plugins = ["sandbox.pytest_plugin"]

ACTIONS_DIR = os.path.join(PACK_ROOT, "actions")
ABC = "<abc@evil.example>"
ABC_FOLDERS = {  # where the basic tenant's copies of ABC start
    "alice@corp.example": "inbox", "bob@corp.example": "trash",
    "shared-ops@corp.example": "inbox", "exec@corp.example": "inbox",
    "carol@corp-mail.example": "inbox", "dave@corp-mail.example": "junk",
}


# --- Orquesta, the part this pack uses --------------------------------------------------------

class WorkflowError(AssertionError):
    """The workflow definition does something Orquesta would refuse or this walker lacks."""


# Orquesta's workflow functions; `context` is the evaluator's context: a dict for Jinja, a
# yaql context for YAQL (yaql passes it to a parameter named `context`).
def _ctx(context, key=None):
    variables = context["__vars"]
    if key is None:
        return variables
    if key not in variables:
        raise WorkflowError("ctx(%r) is referenced before assignment" % key)
    return variables[key]


def _result(context):
    return (context["__current_task"] or {}).get("result")


def _succeeded(context):
    return (context["__current_task"] or {}).get("status") == "succeeded"


def _failed(context):
    return (context["__current_task"] or {}).get("status") == "failed"


def _item(context, key=None):
    item = context["__current_item"]
    return item if key is None else item[key]


FUNCTIONS = {"ctx": _ctx, "result": _result, "succeeded": _succeeded, "failed": _failed,
             "item": _item}
_JINJA_EXPR = re.compile("{{.*?}}")
_JINJA_BLOCK = re.compile("{%.*?%}")
_YAQL_EXPR = re.compile("<%.*?%>")
_ORQUESTA_JINJA = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True,
                                     lstrip_blocks=True)
_YAQL = {}


def _yaql():
    """Orquesta's YAQL engine and root context, built once (yaql is a test dependency)."""
    if not _YAQL:
        import collections.abc  # noqa: F401  (yaql 3.2 uses it without importing it)

        import yaql

        root = yaql.create_context()
        for name, func in FUNCTIONS.items():
            root.register_function(func, name=name)
        _YAQL["engine"] = yaql.language.factory.YaqlFactory().create()
        _YAQL["root"] = root
    return _YAQL["engine"], _YAQL["root"]


def _evaluate_text(text, data):
    """One string, as orquesta's Jinja or YAQL evaluator does it: a string that is one
    expression yields its native value; expressions inside text are substituted."""
    jinja_exprs, yaql_exprs = _JINJA_EXPR.findall(text), _YAQL_EXPR.findall(text)
    if jinja_exprs and yaql_exprs:
        raise WorkflowError("%r mixes Jinja and YAQL (Orquesta refuses it)" % text)
    if _JINJA_BLOCK.search(text):
        raise WorkflowError("Jinja block in %r: not used by this pack" % text)
    output = text
    if jinja_exprs:
        scope = {"__vars": data, "__current_task": data.get("__current_task"),
                 "__current_item": data.get("__current_item")}
        names = dict((name, functools.partial(func, scope)) for name, func in FUNCTIONS.items())
        for expr in jinja_exprs:
            compiled = _ORQUESTA_JINJA.compile_expression(expr[2:-2].strip(),
                                                          undefined_to_none=False)
            value = compiled(**names)
            if isinstance(value, jinja2.Undefined):
                str(value)  # raises UndefinedError naming what is missing, as Orquesta does
            output = _substitute(output, expr, value, len(jinja_exprs))
    for expr in yaql_exprs:
        from yaql.language import utils as yaql_utils

        engine, root = _yaql()
        context = root.create_child_context()
        context["__vars"] = yaql_utils.convert_input_data(data)
        context["__current_task"] = context["__vars"].get("__current_task")
        context["__current_item"] = context["__vars"].get("__current_item")
        value = engine(expr[2:-2].strip()).evaluate(context=context)
        output = _substitute(output, expr, value, len(yaql_exprs))
    return output


def _substitute(output, expr, value, count):
    if inspect.isgenerator(value):
        value = list(value)
    if count > 1 or len(output) > len(expr):
        return output.replace(expr, str(value))
    return value


def evaluate(statement, data):
    """orquesta.expressions.base.evaluate: dicts and lists are evaluated item by item."""
    if isinstance(statement, dict):
        return {evaluate(k, data): evaluate(v, data) for k, v in statement.items()}
    if isinstance(statement, list):
        return [evaluate(item, data) for item in statement]
    if isinstance(statement, str):
        return _evaluate_text(statement, data)
    return statement


class Walker(object):
    """Runs workflows and actions of this pack as StackStorm would, one task at a time."""

    def __init__(self, config, answer=None):
        self.config = config
        self.answer = answer  # core.ask: schema -> response dict, or None (expired)
        self.index = conformance.PackIndex.load(PACK_ROOT, PACK_REF)
        self.trail = []  # (action ref, parameters, status) in the order they ran
        self.inquiries = []

    # actions -------------------------------------------------------------------------
    def run_action(self, ref, params):
        """(status, result) of one action execution, parameters checked and defaulted as
        StackStorm schedules them."""
        accepted = self.index.action_parameters(ref)
        if accepted is None:
            raise WorkflowError("action %s does not exist" % ref)
        params = {k: v for k, v in params.items()}
        problems = parameter_problems(params, accepted, ref)
        if problems:
            raise WorkflowError("StackStorm would refuse %s: %s" % (ref, problems))
        params = self._defaults(params, accepted)
        if ref == "core.ask":
            status, result = self._ask(params)
        elif ref == "core.noop":
            status, result = "succeeded", {}
        else:
            meta = self.index.actions[ref]
            if meta["runner_type"] == "orquesta":
                status, result = self.run_workflow(meta, params)
            else:
                status, result = self._python(meta, params)
        self.trail.append((ref, params, status))
        return status, result

    def _defaults(self, params, accepted):
        context = {"config_context": self.config,
                   "action_context": {"user": "stanley", "api_user": None}}
        env = jinja2.Environment(undefined=jinja2.StrictUndefined)
        for name, spec in accepted.items():
            if name in params or "default" not in spec:
                continue
            default = spec["default"]
            if conformance._is_expression(default):
                default = env.from_string(default).render(context)
            params[name] = copy.deepcopy(default)
        return params

    def _python(self, meta, params):
        module = importlib.import_module(os.path.splitext(meta["entry_point"])[0])
        cls = next(v for v in vars(module).values()
                   if isinstance(v, type) and v.__module__ == module.__name__
                   and hasattr(v, "run"))
        service = MockActionService(action_wrapper=MockActionWrapper(
            pack=PACK_REF, class_name=cls.__name__))
        action = get_action_class_instance(cls, config=self.config, action_service=service)
        own = {k: v for k, v in params.items() if k in (meta.get("parameters") or {})}
        try:
            value = action.run(**own)
        except Exception as exc:  # the runner reports the traceback; the result is empty
            return "failed", {"result": None, "stderr": "%s: %s" % (type(exc).__name__, exc),
                              "exit_code": 1}
        ok = True
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], bool):
            ok, value = value
        value = json.loads(json.dumps(value))  # what StackStorm stores
        return ("succeeded" if ok else "failed"), {"result": value, "exit_code": 0}

    def _ask(self, params):
        schema = params["schema"]
        self.inquiries.append(params)
        response = self.answer(schema) if self.answer else None
        if response is None:
            return "failed", {"error": "inquiry timed out"}  # the TTL expired
        validator = conformance.St2Validator(conformance._allow_default_none(schema))
        errors = [e.message for e in validator.iter_errors(response)]
        if errors:
            raise WorkflowError("StackStorm would refuse the response %r: %s"
                                % (response, errors))
        response = dict(response)
        for name, spec in schema.get("properties", {}).items():  # use_default=True
            if name not in response and "default" in spec:
                response[name] = spec["default"]
        return "succeeded", dict(params, response=response)

    # workflows ---------------------------------------------------------------------------
    def run_workflow(self, meta, params):
        path = os.path.join(ACTIONS_DIR, meta["entry_point"])
        spec, problem = conformance.load_yaml(path)
        assert problem is None, problem
        variables = {}
        for entry in spec.get("input") or []:
            name, default = (entry, None) if isinstance(entry, str) else next(iter(entry.items()))
            if name in params:
                variables[name] = params[name]
            else:
                variables[name] = evaluate(default, self._scope(variables))
        for item in spec.get("vars") or []:
            (name, value), = item.items()
            variables[name] = evaluate(value, self._scope(variables))
        tasks = spec["tasks"]
        targets = set()
        for task in tasks.values():
            for transition in (task or {}).get("next") or []:
                targets.update(t.strip() for t in str(transition.get("do") or "").split(",")
                               if t.strip())
        queue = [name for name in tasks if name not in targets]
        failed = False
        errors = []
        steps = 0
        while queue:
            steps += 1
            if steps > 100:
                raise WorkflowError("%s loops" % path)
            name = queue.pop(0)
            status, result, followed = self._task(name, tasks[name], variables)
            for target in followed:
                if target == "fail":
                    failed = True
                elif target not in ("noop", "continue"):
                    queue.append(target)
            if status == "failed" and not followed:
                failed = True  # an unhandled task failure fails the workflow
                errors.append({"task_id": name, "result": result})
        output = {}
        for item in spec.get("output") or []:
            (name, value), = item.items()
            output[name] = evaluate(value, self._scope(variables))
        result = {"output": json.loads(json.dumps(output))}
        if failed:
            result["errors"] = errors or [{"message": "the workflow ran the fail command"}]
        return ("failed" if failed else "succeeded"), result

    @staticmethod
    def _scope(variables, current=None, item=None):
        """The data Orquesta evaluates an expression against: the variables, plus the task
        being completed (result, status) and the with-items item."""
        return dict(variables, __current_task=current, __current_item=item)

    def _task(self, name, task, variables):
        task = task or {}
        unknown = set(task) - {"action", "input", "next", "with"}
        if unknown:
            raise WorkflowError("task %s uses %s, which this walker does not run"
                                % (name, sorted(unknown)))
        ref = (task.get("action") or "core.noop").split()[0]
        with_ = task.get("with")
        if with_:
            items_expr = with_["items"] if isinstance(with_, dict) else with_
            items = evaluate(items_expr, self._scope(variables))
            results, status = [], "succeeded"
            for item in items:
                params = evaluate(task.get("input") or {}, self._scope(variables, item=item))
                item_status, item_result = self.run_action(ref, params)
                results.append(item_result)
                if item_status != "succeeded":
                    status = "failed"
            result = results
        else:
            params = evaluate(task.get("input") or {}, self._scope(variables))
            status, result = self.run_action(ref, params)
        current = {"status": status, "result": result}
        followed = []
        for transition in task.get("next") or []:
            when = transition.get("when")
            if when is not None and not evaluate(when, self._scope(variables, current)):
                continue
            publish = transition.get("publish") or []
            for entry in publish if isinstance(publish, list) else [publish]:
                for key, value in entry.items():
                    variables[key] = evaluate(value, self._scope(variables, current))
            followed.extend(t.strip() for t in str(transition.get("do") or "").split(",")
                            if t.strip())
            if transition.get("do") is None:
                followed.append("noop")  # a matched transition that ends the branch
        return status, result, followed


# --- the tests ----------------------------------------------------------------------------------

def approve(analyst="bob", comment="checked the headers"):
    return lambda schema: {"approve": True, "analyst": analyst, "comment": comment}


def reject(analyst="bob", comment="false positive"):
    return lambda schema: {"approve": False, "analyst": analyst, "comment": comment}


class AutomationEndToEndTest(BaseSensorTestCase):
    sensor_cls = VerdictSensor

    @pytest.fixture(autouse=True)
    def _tenant(self, sandbox, tmp_path):
        self.box = sandbox
        self.ledger_url = "sqlite:///%s" % (tmp_path / "ledger.db")

    def config(self, **sections):
        config = self.box.pack_config()
        config["ledger_url"] = self.ledger_url
        for name, values in sections.items():
            config[name] = (dict(config.get(name) or {}, **values) if isinstance(values, dict)
                            else values)
        return config

    def folder(self, address, message_id=ABC):
        view = self.box.mailbox_view(address)
        found = [c["folder"] for c in view["copies"] if c["message_id"] == message_id]
        return found[0] if len(found) == 1 else found

    def dispatch(self, config, trigger, message_id=ABC, setup=None):
        """Poll the sensors (after `setup`) until they dispatch `trigger` for `message_id`."""
        drive = SensorDrive(self, self.box, config)
        dispatched = drive.poll()
        if setup is not None:
            setup()
            dispatched += drive.poll()
        found = [p for t, p in dispatched
                 if t == "email_retraction." + trigger and p["message_id"] == message_id]
        self.assertEqual(len(found), 1, dispatched)
        return found[0]

    def respond(self, config, trigger_ref, payload, answer=None):
        """What the rule on `trigger_ref` does with the payload: the rule's parameters, then
        the workflow it runs. Returns (status, output, walker)."""
        (rule,) = rules_for(trigger_ref)
        params, problems = enforce(rule, payload)
        self.assertEqual(problems, [])
        walker = Walker(config, answer=answer)
        status, result = walker.run_action(rule["action"]["ref"], params)
        return status, result["output"], walker

    def ledger_run(self, run_id):
        with Ledger(self.ledger_url) as ledger:
            return ledger.run(run_id), ledger.outcomes_for_run(run_id)

    def runs(self):
        with Ledger(self.ledger_url) as ledger:
            return ledger.runs()[0]

    def assert_retracted(self, output, payload, trigger, destination, walker):
        self.assertIsNotNone(output["run_id"], output)
        refs = [ref for ref, _, _ in walker.trail]
        self.assertEqual(refs[0], "email_retraction.plan")
        self.assertIn("email_retraction.retract_campaign", refs)
        run, outcomes = self.ledger_run(output["run_id"])
        self.assertEqual((run["mode"], run["trigger"], run["destination"]),
                         ("auto", trigger, destination))
        self.assertEqual(run["disposition"], payload["disposition"])
        self.assertEqual(sorted(o.recipient for o in outcomes), sorted(payload["recipients"]))
        for outcome in outcomes:
            self.assertEqual((outcome.mode, outcome.trigger), ("auto", trigger))
            self.assertEqual(outcome.verdict_time,
                             datetime.fromisoformat(payload["verdict_time"].replace(
                                 "Z", "+00:00")).astimezone(timezone.utc))
        record = output["metric_record"]
        self.assertEqual(record["total"], len(outcomes))
        self.assertEqual((record["auto"], record["manual"]), (record["total"], 0))
        self.assertEqual(list(record["by_trigger"]), [trigger])
        self.assertEqual(list(record["by_destination"]), [destination])
        return run, outcomes, record

    # -- the three sensor triggers ---------------------------------------------------------
    def test_verdict_retracts_every_delivered_copy(self):
        config = self.config()
        payload = self.dispatch(config, "verdict")
        status, output, walker = self.respond(config, "email_retraction.verdict", payload)
        self.assertEqual(status, "succeeded", output)
        run, outcomes, record = self.assert_retracted(output, payload, "disposition", "trash",
                                                      walker)
        by_recipient = {o.recipient: o for o in outcomes}
        self.assertEqual(by_recipient["alice@corp.example"].status, "retracted")
        self.assertEqual(by_recipient["bob@corp.example"].status, "already_in_destination")
        self.assertEqual(by_recipient["exec@corp.example"].reason, "not_authorized")
        for address in ("alice@corp.example", "bob@corp.example", "shared-ops@corp.example",
                        "carol@corp-mail.example", "dave@corp-mail.example"):
            self.assertEqual(self.folder(address), "trash", address)
        self.assertEqual(self.folder("exec@corp.example"), "inbox")
        # time to retract counts from the verdict (scanned ten minutes before the test)
        self.assertGreaterEqual(record["time_to_retract"]["p50_s"], 9 * 60)
        self.assertIn("disposition: cloudflare verdict MALICIOUS", run["comment"])
        self.assertEqual(run["requested_by"], "cloudflare")
        self.assertEqual(output["decision"], None)
        self.assertEqual(walker.inquiries, [])

    def test_post_delivery_response(self):
        """The basic tenant's SUSPICIOUS promo is re-scanned MALICIOUS after delivery."""
        config = self.config()
        promo = "<o'brien+promo@evil.example>"
        row = next(v for v in self.box.tenant.verdicts.values() if v.message_id == promo)
        payload = self.dispatch(config, "verdict_changed", promo,
                                setup=lambda: self.box.rescan(row.id, "MALICIOUS"))
        self.assertEqual(payload["previous_disposition"], "SUSPICIOUS")
        status, output, walker = self.respond(config, "email_retraction.verdict_changed",
                                              payload)
        self.assertEqual(status, "succeeded", output)
        run, outcomes, record = self.assert_retracted(output, payload, "post_delivery", "trash",
                                                      walker)
        self.assertEqual(sorted((o.recipient, o.status) for o in outcomes),
                         [("alice@corp.example", "retracted"),
                          ("carol@corp-mail.example", "retracted")])
        self.assertEqual(self.folder("alice@corp.example", promo), "trash")
        self.assertEqual(self.folder("carol@corp-mail.example", promo), "trash")
        self.assertIn("was SUSPICIOUS at delivery", run["comment"])

    def test_phish_submission_response(self):
        config = self.config()
        payload = self.dispatch(config, "phish_submission",
                                setup=lambda: self.box.confirm_submission("s-1", "MALICIOUS"))
        status, output, walker = self.respond(config, "email_retraction.phish_submission",
                                              payload)
        self.assertEqual(status, "succeeded", output)
        run, outcomes, record = self.assert_retracted(output, payload, "phish_submission",
                                                      "trash", walker)
        self.assertEqual(run["requested_by"], "alice@corp.example")  # the reporter
        self.assertIn("user report s-1", run["comment"])
        self.assertEqual(self.folder("alice@corp.example"), "trash")

    # -- policy says no ----------------------------------------------------------------------
    def test_switch_off_means_no_action_by_policy(self):
        config = self.config(auto_retract={"phish_submission_response": False})
        payload = self.dispatch(config, "phish_submission",
                                setup=lambda: self.box.confirm_submission("s-1", "MALICIOUS"))
        status, output, walker = self.respond(config, "email_retraction.phish_submission",
                                              payload)
        self.assertEqual(status, "succeeded")
        self.assertEqual(output["why"], "no action by policy: phish submission response is off "
                                        "(auto_retract.phish_submission_response: false)")
        self.assertEqual(output["plan"]["act"], False)
        self.assertIsNone(output["run_id"])
        self.assertEqual([ref for ref, _, _ in walker.trail],
                         ["email_retraction.plan", "email_retraction.auto_retract"])
        self.assertEqual(self.runs(), [])
        for address, folder in ABC_FOLDERS.items():
            self.assertEqual(self.folder(address), folder)

    def test_a_disposition_mapped_to_none(self):
        config = self.config(auto_retract={"dispositions": {"MALICIOUS": "none",
                                                            "SUSPICIOUS": "junk"}})
        payload = self.dispatch(config, "verdict")
        status, output, walker = self.respond(config, "email_retraction.verdict", payload)
        self.assertEqual(status, "succeeded")
        self.assertEqual(output["why"],
                         "no action by policy: auto_retract.dispositions maps MALICIOUS to none")
        self.assertEqual(self.runs(), [])
        self.assertEqual(self.folder("alice@corp.example"), "inbox")

    def test_preview_mode_moves_nothing_and_records_what_would_move(self):
        config = self.config(auto_retract={"mode": "preview"}, approval={"threshold": 0})
        payload = self.dispatch(config, "verdict")
        status, output, walker = self.respond(config, "email_retraction.verdict", payload)
        self.assertEqual(status, "succeeded", output)
        self.assertEqual(walker.inquiries, [])  # a preview never waits for an analyst
        run, outcomes = self.ledger_run(output["run_id"])
        self.assertIs(run["preview"], True)
        self.assertEqual((run["mode"], run["trigger"]), ("auto", "disposition"))
        statuses = {o.recipient: o.status for o in outcomes}
        self.assertEqual(statuses["alice@corp.example"], "previewed")
        for address, folder in ABC_FOLDERS.items():
            self.assertEqual(self.folder(address), folder)

    # -- approval ----------------------------------------------------------------------------
    def test_an_approved_run_records_who_approved(self):
        config = self.config(approval={"threshold": 3})
        payload = self.dispatch(config, "verdict")
        status, output, walker = self.respond(config, "email_retraction.verdict", payload,
                                              answer=approve())
        self.assertEqual(status, "succeeded", output)
        (inquiry,) = walker.inquiries
        self.assertEqual(inquiry["route"], "email_retraction")
        self.assertEqual((inquiry["ttl"], inquiry["users"], inquiry["roles"]), (1440, [], []))
        self.assertIn("Approve moving 8 copies of <abc@evil.example> 'Invoice'",
                      inquiry["schema"]["description"])
        self.assertIn("8 copies is more than approval.threshold (3)",
                      inquiry["schema"]["description"])
        self.assertEqual(output["decision"], {"approved": True, "analyst": "bob",
                                              "comment": "checked the headers"})
        run, outcomes = self.ledger_run(output["run_id"])
        self.assertTrue(run["comment"].endswith("; approved by bob: checked the headers"))
        self.assertTrue(all(o.comment == run["comment"] for o in outcomes))
        self.assertEqual(self.folder("alice@corp.example"), "trash")

    def test_a_rejected_run_retracts_nothing_and_says_who(self):
        config = self.config(approval={"threshold": 3})
        payload = self.dispatch(config, "verdict")
        status, output, walker = self.respond(config, "email_retraction.verdict", payload,
                                              answer=reject())
        self.assertEqual(status, "succeeded", output)
        self.assertEqual(output["why"], "rejected by bob: false positive; nothing retracted")
        self.assertEqual(output["decision"], {"approved": False, "analyst": "bob",
                                              "comment": "false positive"})
        self.assertIsNone(output["run_id"])
        self.assertNotIn("email_retraction.retract_campaign",
                         [ref for ref, _, _ in walker.trail])
        self.assertEqual(self.runs(), [])
        for address, folder in ABC_FOLDERS.items():
            self.assertEqual(self.folder(address), folder)

    def test_an_unnamed_answer_and_an_expired_inquiry(self):
        config = self.config(allow_hard_delete=True,
                             auto_retract={"dispositions": {"MALICIOUS": "hard_delete"}})
        payload = self.dispatch(config, "verdict")
        status, output, _ = self.respond(config, "email_retraction.verdict", payload,
                                         answer=lambda schema: {"approve": False})
        self.assertEqual(status, "succeeded")
        self.assertEqual(output["why"], "rejected by an unnamed analyst; nothing retracted")
        status, output, _ = self.respond(config, "email_retraction.verdict", payload,
                                         answer=None)
        self.assertEqual(status, "failed")
        self.assertEqual(output["why"], "no answer to the approval inquiry within 1440 minutes; "
                                        "nothing retracted")
        self.assertEqual(self.runs(), [])
        self.assertEqual(self.folder("alice@corp.example"), "inbox")

    # -- chunks ------------------------------------------------------------------------------
    def test_a_campaign_in_chunks_is_one_run(self):
        truth = self.box.generate_campaign(message_id="<wave@evil.example>", copies=23,
                                           seed=5, disposition="SPOOF", scanned_at="-3m")
        config = self.config(limits={"chunk_size": 5})
        payload = self.dispatch(config, "verdict", "<wave@evil.example>")
        self.assertEqual(sorted(payload["recipients"]), sorted(truth.recipients))
        status, output, walker = self.respond(config, "email_retraction.verdict", payload)
        self.assertEqual(status, "succeeded", output)
        chunks = [params for ref, params, _ in walker.trail if ref == "email_retraction.retract"]
        self.assertEqual([len(c["recipients"]) for c in chunks], [5, 5, 5, 5, 3])
        self.assertEqual({c["run_id"] for c in chunks}, {output["run_id"]})
        run, outcomes, record = self.assert_retracted(output, payload, "disposition", "junk",
                                                      walker)
        self.assertEqual(run["state"], "finished")
        self.assertEqual(record["total"], 23)

    # -- bad input -----------------------------------------------------------------------------
    def test_bad_input_fails_in_plan_naming_the_field(self):
        walker = Walker(self.config())
        status, result = walker.run_action("email_retraction.auto_retract", {
            "message_id": "<abc@evil.example>", "recipients": ["alice@corp.example", "x y@z.io"],
            "disposition": "MALICIOUS", "verdict_time": "2024-01-01T00:00:00Z",
            "source": "cloudflare"})
        self.assertEqual(status, "failed")
        self.assertTrue(result["output"]["why"].startswith("invalid recipients: contains "
                                                           "whitespace"))
        self.assertEqual([ref for ref, _, _ in walker.trail],
                         ["email_retraction.plan", "email_retraction.auto_retract"])
        self.assertEqual(self.folder("alice@corp.example"), "inbox")

    def test_no_ledger_no_retraction(self):
        """A configured ledger that cannot be opened stops the run before any provider call;
        the workflow fails and says where to look."""
        config = self.config()
        payload = self.dispatch(config, "verdict")
        blocker = os.path.join(os.path.dirname(self.ledger_url[len("sqlite:///"):]), "a-file")
        with open(blocker, "w") as handle:
            handle.write("not a directory")
        config["ledger_url"] = "sqlite:///" + os.path.join(blocker, "ledger.db")
        status, output, walker = self.respond(config, "email_retraction.verdict", payload)
        self.assertEqual(status, "failed")
        self.assertTrue(output["why"].endswith("; retract_campaign failed (see its output and "
                                               "the ledger)"), output["why"])
        self.assertNotIn("email_retraction.retract", [ref for ref, _, _ in walker.trail])
        for address, folder in ABC_FOLDERS.items():
            self.assertEqual(self.folder(address), folder)


class WebhookEndToEndTest(BaseSensorTestCase):
    sensor_cls = VerdictSensor  # unused; the base class wants one

    @pytest.fixture(autouse=True)
    def _tenant(self, sandbox, tmp_path):
        self.box = sandbox
        self.ledger_url = "sqlite:///%s" % (tmp_path / "ledger.db")
        self.config = dict(sandbox.pack_config(), ledger_url=self.ledger_url)

    def post(self, body):
        """POST /api/v1/webhooks/email_retraction/verdict, as the rule hands it on."""
        (rule,) = rules_for("core.st2.webhook")
        params, problems = enforce(rule, {"body": body, "headers": {}})
        self.assertEqual(problems, [])
        walker = Walker(self.config)
        status, result = walker.run_action(rule["action"]["ref"], params)
        return status, result["output"], walker

    def test_a_verdict_from_another_source(self):
        status, output, walker = self.post({
            "message_id": "abc@evil.example", "recipients": ["alice@corp.example",
                                                             "carol@corp-mail.example"],
            "disposition": "SUSPICIOUS", "verdict_time": "2024-05-01T12:00:00Z",
            "source": "sublime", "source_id": "alert-9"})
        self.assertEqual(status, "succeeded", output)
        self.assertEqual(output["verdict"]["message_id"], ABC)
        run_id = output["auto_retract"]["run_id"]
        with Ledger(self.ledger_url) as ledger:
            run = ledger.run(run_id)
            outcomes = ledger.outcomes_for_run(run_id)
        self.assertEqual((run["mode"], run["trigger"], run["destination"], run["requested_by"]),
                         ("auto", "disposition", "junk", "sublime"))
        self.assertEqual(run["comment"], "disposition: sublime verdict SUSPICIOUS (alert-9)")
        self.assertEqual(sorted(o.status for o in outcomes), ["retracted", "retracted"])
        self.assertEqual(run["verdict_time"], "2024-05-01T12:00:00+00:00")

    def test_an_invalid_body_is_refused_naming_the_field_and_nothing_moves(self):
        status, output, walker = self.post({
            "message_id": "abc@evil.example", "recipients": ["alice@corp.example"],
            "disposition": "MALICIOUS", "verdict_time": "tomorrow", "severity": "high"})
        self.assertEqual(status, "failed")
        self.assertIn("body.verdict_time must be ISO 8601", output["why"])
        self.assertIn("body.severity is not a field of a verdict", output["why"])
        self.assertEqual([ref for ref, _, _ in walker.trail],
                         ["email_retraction.validate_verdict", "email_retraction.intake_verdict"])
        with Ledger(self.ledger_url) as ledger:
            self.assertEqual(ledger.runs()[0], [])
        view = self.box.mailbox_view("alice@corp.example")
        self.assertEqual([c["folder"] for c in view["copies"] if c["message_id"] == ABC],
                         ["inbox"])
