"""Action executions as StackStorm runs them: parameters rendered and cast (render_live_params,
tools.st2local.params: the API's and a workflow task's parameters are rendered here, a rule's
by the rule engine), checked, defaulted (render_final_params: every declared parameter, None
when it has no value), then the runner: python-script (the pack's action class on
StackStorm's base class, a fresh instance per execution, with the pack config), orquesta
(tools.st2local.workflow), core.noop and core.ask (answered by a callback, as an analyst
answers an inquiry in chat).

Results have StackStorm's shape: python-script {"result", "exit_code", "stdout", "stderr"}
(a runner that died or an action that raised leaves result None), orquesta {"output"[,
"errors"]}, core.ask the inquiry's parameters plus "response".
"""
import json
import threading
import time

from tools.st2local.pack import Pack, conformance
from tools.st2local.params import (ParamException, cast_params, render_final_params,
                                   render_live_params)
from tools.st2local.rules import parameter_problems

__all__ = ["ACTION_CONTEXT", "Event", "ParameterError", "Runtime", "WorkflowError"]

ACTION_CONTEXT = {"user": "stanley", "api_user": None}  # who StackStorm says is running it


class WorkflowError(AssertionError):
    """Something StackStorm would refuse (a bad parameter, an unknown action, an invalid
    inquiry response) or that this harness does not model."""


class ParameterError(WorkflowError):
    """Parameters StackStorm would refuse for an execution. Raised to the caller; inside a
    workflow the workflow fails with it, as the workflow engine fails a workflow whose action
    execution cannot be requested."""


class Event(object):
    """What an observer sees: an execution starting ("start") or ending ("end")."""

    def __init__(self, phase, ref, where, params, status=None, result=None, elapsed=None):
        self.phase, self.ref, self.where, self.params = phase, ref, where, params
        self.status, self.result, self.elapsed = status, result, elapsed


class Runtime(object):
    """Runs the pack's actions and workflows in this process, one StackStorm for a test or the
    demo. `answer(schema)` answers core.ask (a response dict, or None: the inquiry expires).
    `crash` ({(task, item index)}) makes the action runner die there; `around` ({(task, item
    index): (before, after)}) runs callables around that execution. `observer(event)` sees
    every execution start and end.

    `calls` [(where, ref, params)] are recorded as executions are requested and `trail`
    [(ref, params, status)] as they end (a workflow after its tasks); with-items items are
    recorded in item order whatever order their threads finish in. `datastore`
    ({"system": {key: value}, "user": {...}}) is what `st2kv` reads in parameter templates.
    """

    def __init__(self, config, pack=None, answer=None, crash=(), around=None, observer=None,
                 action_context=None, log_level="debug", max_items_in_flight=16,
                 datastore=None):
        self.config = config
        self.datastore = datastore or {}
        self.pack = pack or Pack.default()
        self.answer = answer
        self.crash = set(crash)
        self.around = dict(around or {})
        self.observer = observer
        self.action_context = dict(action_context or ACTION_CONTEXT)
        self.log_level = log_level
        self.max_items_in_flight = max_items_in_flight
        self.calls = []
        self.trail = []
        self.inquiries = []
        self.workflows = []
        self._lock = threading.Lock()
        self._local = threading.local()

    # -- records (a with-items worker thread records into its item's buffer) ----------------
    def _record(self, kind, entry):
        buffer = getattr(self._local, "buffer", None)
        if buffer is not None:
            buffer[kind].append(entry)
        else:
            with self._lock:
                getattr(self, kind).append(entry)

    def in_buffer(self, func, *args):
        """Run func(*args) recording into a fresh buffer; returns (value, buffer)."""
        previous = getattr(self._local, "buffer", None)
        self._local.buffer = buffer = {"calls": [], "trail": [], "inquiries": [],
                                       "workflows": []}
        try:
            return func(*args), buffer
        finally:
            self._local.buffer = previous

    def flush(self, buffer):
        for kind in ("calls", "trail", "inquiries", "workflows"):
            for entry in buffer[kind]:
                self._record(kind, entry)

    def _observe(self, *args, **kwargs):
        if self.observer is not None:
            self.observer(Event(*args, **kwargs))

    # -- parameters ------------------------------------------------------------------------
    def context_for(self, ref):
        """(action_context, config_context) of an execution of `ref`: who runs it and in which
        pack, and that pack's config (StackStorm's core pack has none here)."""
        pack = ref.split(".", 1)[0]
        return (dict(self.action_context, pack=pack),
                self.config if pack == self.pack.ref else {})

    def prepare(self, ref, params, rendered=False):
        """Parameters as StackStorm hands them to the runner: the live parameters rendered
        and cast (unless `rendered`: a rule enforcement already did), checked (ParameterError
        when StackStorm would refuse them), then every declared parameter defaulted and cast
        (Jinja defaults rendered with action_context, config_context and st2kv)."""
        accepted = self.pack.action_parameters(ref)
        if accepted is None:
            raise ParameterError("action %s does not exist" % ref)
        action_context, config = self.context_for(ref)
        try:
            if rendered:
                live = cast_params(dict(params), accepted)
            else:
                live = render_live_params(accepted, dict(params), action_context, config,
                                          datastore=self.datastore)
        except (ParamException, ValueError, SyntaxError) as exc:
            raise ParameterError("StackStorm would refuse %s: %s" % (ref, exc))
        problems = parameter_problems(live, accepted, ref)
        if problems:
            raise ParameterError("StackStorm would refuse %s: %s" % (ref, problems))
        try:
            return render_final_params(accepted, live, action_context, config, self.datastore)
        except (ParamException, ValueError, SyntaxError) as exc:
            raise ParameterError("StackStorm would refuse %s: %s" % (ref, exc))

    # -- executions --------------------------------------------------------------------------
    def run_action(self, ref, params, where=(None, None), rendered=False):
        """One action execution: (status, result). `where` is (task, item index) when a
        workflow task runs it; `rendered`: the parameters are a rule enforcement's, already
        rendered (StackStorm does not render them again)."""
        self._record("calls", (where, ref, params))
        params = self.prepare(ref, params, rendered)
        self._observe("start", ref, where, params)
        started = time.monotonic()
        runner = self.pack.runner(ref)
        if ref == "core.ask":
            status, result = self._ask(params)
        elif runner == "noop":
            status, result = "succeeded", {}
        elif runner == "orquesta":
            status, result = self.workflow(ref, params, prepared=True).run().execution()
        elif runner == "python-script":
            status, result = self._python(ref, params, where)
        else:
            raise WorkflowError("runner %s (action %s) is not modelled by st2local"
                                % (runner, ref))
        self._record("trail", (ref, params, status))
        self._observe("end", ref, where, params, status, result, time.monotonic() - started)
        return status, result

    # Test A's name for it.
    execute = run_action

    def workflow(self, ref, params, prepared=False):
        """An Orquesta workflow execution, not started yet (call .run())."""
        from tools.st2local.workflow import Workflow

        params = params if prepared else self.prepare(ref, params)
        own = self.pack.action(ref).get("parameters") or {}
        workflow = Workflow(self, ref, dict((k, v) for k, v in params.items() if k in own))
        self._record("workflows", workflow)
        return workflow

    def _python(self, ref, params, where):
        if where in self.crash:
            return "failed", {"result": None, "exit_code": -9, "stdout": "",
                              "stderr": "the action runner died"}
        from st2tests.mocks.action import MockActionService, MockActionWrapper
        from st2common.runners.utils import get_action_class_instance

        cls = self.pack.action_class(ref)
        wrapper = MockActionWrapper(pack=self.pack.ref, class_name=cls.__name__)
        wrapper._log_level = self.log_level
        service = MockActionService(action_wrapper=wrapper)
        action = get_action_class_instance(cls, config=self.config, action_service=service)
        own = {k: v for k, v in params.items()
               if k in (self.pack.action(ref).get("parameters") or {})}
        before, after = self.around.get(where, (None, None))
        if before:
            before()
        try:
            value = action.run(**own)
        except Exception as exc:  # the runner reports the traceback; the result is empty
            return "failed", {"result": None, "exit_code": 1, "stdout": "",
                              "stderr": "%s: %s" % (type(exc).__name__, exc)}
        finally:
            if after:
                after()
        ok = True
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], bool):
            ok, value = value
        value = json.loads(json.dumps(value))  # what StackStorm stores
        return ("succeeded" if ok else "failed"), {"result": value, "exit_code": 0,
                                                   "stdout": "", "stderr": ""}

    def _ask(self, params):
        schema = params["schema"]
        self._record("inquiries", params)
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
