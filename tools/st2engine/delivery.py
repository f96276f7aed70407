"""RabbitMQ replaced by in-process delivery: each message StackStorm publishes is handed to the
service that consumes its queue in a deployment, in a green thread as its consumer would (the
seam StackStorm's own unit tests use, `st2tests.mocks`):

| published | consumed by (StackStorm code) |
| --- | --- |
| live action `requested` | scheduler entrypoint (`st2actions.scheduler.entrypoint`) |
| live action `scheduled`, `canceling`, `pausing`, ... | action runner (`st2actions.worker`) |
| workflow execution create / state | workflow engine (`st2actions.workflows.workflows`) |
| action execution update | workflow engine (`st2.workflow.action.update` queue) |
| trigger instance | rules engine (`st2reactor.rules.worker.TriggerInstanceDispatcher`) |

Everything else (stream, announcements, CUD events for the sensor container) has no consumer
here and is dropped, as it is in StackStorm's unit tests. The action scheduler's own queue
handler loop runs too: it picks queued requests, applies policies and retries delayed ones.
"""
import sys


class InProcessDelivery(object):
    """`start` patches StackStorm's publishers; `start_scheduler` starts the scheduler's loop;
    `stop` undoes both and ends every green thread it started."""

    def __init__(self):
        self._patches = []
        self._threads = []
        self._scheduler = None

    def _patch(self, patcher):
        patcher.start()
        self._patches.append(patcher)

    def _spawn(self, fn, *args):
        import eventlet
        thread = eventlet.spawn(fn, *args)
        self._threads.append(thread)
        return thread

    def start(self):
        from mock import patch
        from st2actions import worker
        from st2actions.scheduler import entrypoint as scheduling
        from st2actions.workflows import workflows
        from st2common.constants import action as action_constants
        from st2common.models.db.execution import ActionExecutionDB
        from st2common.models.db.liveaction import LiveActionDB
        from st2common.models.db.workflow import WorkflowExecutionDB
        from st2common.transport import liveaction, publishers, reactor, workflow
        from st2reactor.rules.worker import TriggerInstanceDispatcher

        delivery = self

        def live_action_state(_publisher, payload, state):
            if not isinstance(payload, LiveActionDB):
                return
            if state == action_constants.LIVEACTION_STATUS_REQUESTED:
                scheduling.get_scheduler_entrypoint().process(payload)
            else:
                delivery._spawn(worker.get_worker().process, payload)

        def workflow_message(_publisher, payload, *_state):
            if isinstance(payload, WorkflowExecutionDB):
                delivery._spawn(workflows.get_engine().process, payload)

        def execution_update(_publisher, payload, *args, **kwargs):
            if isinstance(payload, ActionExecutionDB):
                delivery._spawn(workflows.get_engine().process, payload)

        rules_worker = TriggerInstanceDispatcher(None, [])

        def trigger_instance(_publisher, payload, routing_key=None, **kwargs):
            def deliver():
                response = rules_worker.pre_ack_process(payload)
                rules_worker.process(response)
            delivery._spawn(deliver)

        def dropped(*args, **kwargs):
            return None

        # StackStorm's python runner hands its own process's `sys.argv[1:]` to every action's
        # wrapper (`--parent-args`), which parses them with StackStorm's config parser; an
        # st2actionrunner has `--config-file st2.conf` there. In a test process they are
        # pytest's arguments, which the wrapper refuses (exit 2, every python action fails):
        # this process, as an action runner, has none.
        self._patch(patch.object(sys, "argv", sys.argv[:1]))
        for patcher in (
                patch.object(liveaction.LiveActionPublisher, "publish_create", dropped),
                patch.object(liveaction.LiveActionPublisher, "publish_state",
                             live_action_state),
                patch.object(workflow.WorkflowExecutionPublisher, "publish_create",
                             workflow_message),
                patch.object(workflow.WorkflowExecutionPublisher, "publish_state",
                             workflow_message),
                patch.object(publishers.CUDPublisher, "publish_update", execution_update),
                patch.object(publishers.CUDPublisher, "publish_create", dropped),
                patch.object(publishers.CUDPublisher, "publish_delete", dropped),
                patch.object(reactor.TriggerInstancePublisher, "publish_trigger",
                             trigger_instance),
                patch.object(publishers.PoolPublisher, "publish", dropped)):
            self._patch(patcher)

    def start_scheduler(self):
        from st2actions.scheduler import handler as scheduling_queue
        self._scheduler = scheduling_queue.get_handler()
        self._scheduler.start()

    def stop(self):
        if self._scheduler is not None:
            self._scheduler.shutdown()
            # Its loops see the flag only after their next sleep, when the database may be
            # gone (ConnectionFailure tracebacks in the log): stop them now.
            for thread in (self._scheduler._main_thread, self._scheduler._cleanup_thread):
                if thread is not None:
                    thread.kill()
            self._scheduler = None
        for thread in self._threads:
            thread.kill()
        self._threads = []
        for patcher in reversed(self._patches):
            patcher.stop()
        self._patches = []
