"""An Orquesta workflow execution, walked task by task the way Orquesta conducts it.

Modelled (orquesta.conducting and specs.native.v1):
- input: runtime values or defaults, each *evaluated* as an expression in order (Orquesta's
  render_input evaluates runtime inputs too); vars; output (also when the workflow failed);
- start tasks (no transition leads to them); a task runs its action with its input evaluated;
  a task without action succeeds at once;
- next: every transition whose `when` holds is taken; its publish is evaluated in order;
  `do` targets are queued; no `do` means `continue`; engine commands: `fail` fails the
  workflow, `noop` ends the branch (a failure counts as remediated), `continue` ends it (a
  failure fails the workflow); a transition to a task remediates a failure;
- a failed task without a remediating transition fails the workflow; so do an expression that
  cannot be evaluated (input, vars, items, task input, when, publish, output) and an action
  execution StackStorm would refuse (its parameters do not match the action's);
- with-items: items and concurrency evaluated, every item's input rendered up front, at most
  `concurrency` items in flight (threads, as action runners), new items scheduled while the
  task runs, none once an item failed and none is running; the task fails if any item
  failed; its result is the list of item results (None for items never run).

Not modelled (WorkflowError): join, retry, delay, named items (`x in <expr>`), inline action
parameters. Parallel branches run one after another in one shared context.
"""
import concurrent.futures
import copy
import json

from tools.st2local.expressions import ExpressionError, evaluate, plain
from tools.st2local.runtime import ParameterError, WorkflowError

__all__ = ["Workflow"]

TASK_KEYS = frozenset(["action", "input", "next", "with"])


def _targets(do):
    if not do:
        return ["continue"]
    if isinstance(do, str):
        return [t.strip() for t in do.split(",") if t.strip()]
    return list(do)


def _entries(spec_list):
    """Orquesta's one-key-dict lists (input, vars, output, publish) as (name, value) pairs."""
    for entry in spec_list or []:
        if isinstance(entry, str):
            yield entry, None
        else:
            for name, value in entry.items():
                yield name, value


class Workflow(object):
    """One execution of an orquesta action: `run()` then status, tasks [(name, status)], ctx,
    output, errors; `execution()` is (status, result) as the orquesta runner reports it."""

    def __init__(self, runtime, ref, params):
        self.runtime = runtime
        self.ref = ref
        self.params = params
        self.spec = runtime.pack.workflow_spec(ref)
        self.ctx = {}
        self.tasks = []
        self.status = None
        self.output = None
        self.errors = []
        for name, task in (self.spec.get("tasks") or {}).items():
            unknown = set(task or {}) - TASK_KEYS
            if unknown:
                raise WorkflowError("%s: task %s uses %s, which st2local does not model"
                                    % (ref, name, sorted(unknown)))

    @property
    def calls(self):
        return self.runtime.calls

    def evaluate(self, value, current=None, item=None):
        """`value` evaluated against this workflow's context (deep-copied: expressions never
        change it), the task being completed and the with-items item."""
        return plain(evaluate(value, copy.deepcopy(self.ctx), copy.deepcopy(current),
                              copy.deepcopy(item)))

    def execute(self, ref, params, where=(None, None)):
        return self.runtime.run_action(ref, params, where)

    def execution(self):
        result = {"output": self.output}
        if self.status == "failed":
            result["errors"] = self.errors
        return self.status, result

    # -- conducting ----------------------------------------------------------------------------
    def run(self):
        self.status = "running"
        try:
            self._start()
            self._conduct()
        except ExpressionError as exc:
            self._fail(str(exc))
        except ParameterError as exc:
            self._fail("Unable to request action execution. %s" % exc)
        self._render_output()
        if self.status == "running":
            self.status = "succeeded"
        return self

    def _fail(self, message, task=None, result=None):
        entry = {"type": "error", "message": message}
        if task is not None:
            entry["task_id"] = task
            entry["result"] = result
        self.errors.append(entry)
        self.status = "failed"

    def _start(self):
        declared = [name for name, _ in _entries(self.spec.get("input"))]
        unknown = sorted(set(self.params) - set(declared))
        if unknown:
            raise WorkflowError("%s: %s are not inputs of the workflow" % (self.ref, unknown))
        for name, default in _entries(self.spec.get("input")):
            self.ctx[name] = self.evaluate(self.params.get(name, default))
        for name, value in _entries(self.spec.get("vars")):
            self.ctx[name] = self.evaluate(value)

    def _conduct(self):
        tasks = self.spec.get("tasks") or {}
        inbound = set()
        for task in tasks.values():
            for transition in (task or {}).get("next") or []:
                inbound.update(_targets(transition.get("do")))
        queue = sorted(name for name in tasks if name not in inbound)
        while queue and self.status == "running":
            name = queue.pop(0)
            task = tasks[name] or {}
            status, result = self._run_task(name, task)
            self.tasks.append((name, status))
            current = {"status": status, "result": result}
            remediated, fail = False, False
            for transition in task.get("next") or []:
                when = transition.get("when")
                if when is not None and not self.evaluate(when, current):
                    continue
                for key, value in _entries(transition.get("publish")):
                    self.ctx[key] = self.evaluate(value, current)
                for target in _targets(transition.get("do")):
                    if target == "retry":
                        raise WorkflowError("%s: the retry command is not modelled" % name)
                    if target == "fail":
                        fail = True
                    elif target == "noop":
                        remediated = True
                    elif target != "continue":
                        if target not in tasks:
                            raise WorkflowError("%s: task %s is not defined" % (name, target))
                        remediated = True
                        queue.append(target)
            if fail:
                self._fail("task %s ran the fail command" % name, name, result)
            elif status != "succeeded" and not remediated:
                self._fail("Execution failed. See result for details.", name, result)

    def _run_task(self, name, task):
        action = task.get("action")
        if action is None:
            return "succeeded", None
        ref = self.evaluate(action)
        if " " in ref.strip():
            raise WorkflowError("%s: inline action parameters are not modelled" % name)
        if "with" not in task:
            return self.runtime.run_action(ref, self.evaluate(task.get("input") or {}),
                                           (name, None))
        with_ = task["with"] if isinstance(task["with"], dict) else {"items": task["with"]}
        expression = with_["items"]
        if not expression.strip().startswith(("<%", "{{")):
            raise WorkflowError("%s: named items (x in ...) are not modelled" % name)
        items = self.evaluate(expression)
        if not isinstance(items, list):
            raise ExpressionError('The value of "%s" is not type of list.' % expression)
        concurrency = self.evaluate(with_.get("concurrency"))
        inputs = [self.evaluate(task.get("input") or {}, item=item) for item in items]
        return self._run_items(name, ref, inputs, concurrency)

    def _run_items(self, name, ref, inputs, concurrency):
        count = len(inputs)
        results, statuses = [None] * count, [None] * count
        size = int(concurrency) if concurrency else self.runtime.max_items_in_flight
        size = max(1, min(size, count or 1))
        if size == 1:  # in this thread: hooks and faults stay in order
            for index in range(count):
                statuses[index], results[index] = self.runtime.run_action(
                    ref, inputs[index], (name, index))
                if statuses[index] != "succeeded":
                    break
        else:
            self._run_items_in_threads(name, ref, inputs, size, statuses, results)
        failed = any(s is not None and s != "succeeded" for s in statuses)
        return ("failed" if failed else "succeeded"), results

    def _run_items_in_threads(self, name, ref, inputs, size, statuses, results):
        runtime = self.runtime
        buffers = [None] * len(inputs)

        def work(index):
            return runtime.in_buffer(runtime.run_action, ref, inputs[index], (name, index))

        active, upcoming, failed = {}, 0, False
        try:
            with concurrent.futures.ThreadPoolExecutor(max_workers=size) as pool:
                while upcoming < len(inputs) and len(active) < size:
                    active[pool.submit(work, upcoming)] = upcoming
                    upcoming += 1
                while active:
                    done, _ = concurrent.futures.wait(
                        list(active), return_when=concurrent.futures.FIRST_COMPLETED)
                    for future in done:
                        index = active.pop(future)
                        (statuses[index], results[index]), buffers[index] = future.result()
                        failed = failed or statuses[index] != "succeeded"
                    if failed and not active:
                        break  # Orquesta: the task fails once no item is running
                    while upcoming < len(inputs) and len(active) < size:
                        active[pool.submit(work, upcoming)] = upcoming
                        upcoming += 1
        finally:
            for buffer in buffers:
                if buffer is not None:
                    runtime.flush(buffer)

    def _render_output(self):
        output, rolling = {}, copy.deepcopy(self.ctx)
        try:
            for name, value in _entries(self.spec.get("output")):  # later ones see earlier
                output[name] = rolling[name] = plain(evaluate(value, copy.deepcopy(rolling)))
        except ExpressionError as exc:
            self._fail(str(exc))
        self.output = json.loads(json.dumps(output))  # what StackStorm stores
