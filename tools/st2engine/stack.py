"""One StackStorm in this process: configuration, database, registration, message delivery.

`Stack.boot` does what `st2ctl reload` and StackStorm's services do at start, with StackStorm's
own code: st2tests' configuration, `db_setup` (mongomock as the MongoClient), the registrars
(`fail_on_failure`) for the runners, StackStorm's `core` pack and this pack (with its config,
validated against config.schema.yaml by StackStorm), then the action scheduler's queue handler
loop. Messages StackStorm publishes to RabbitMQ are handed to the service that consumes them
in a deployment, in a green thread as its consumer would:

| published | consumed by (StackStorm code) |
| --- | --- |
| live action `requested` | scheduler entrypoint (`st2actions.scheduler.entrypoint`) |
| live action `scheduled`, `canceling`, `pausing`, ... | action runner (`st2actions.worker`) |
| workflow execution create / state | workflow engine (`st2actions.workflows.workflows`) |
| action execution update | workflow engine (`st2.workflow.action.update` queue) |
| trigger instance | rules engine (`st2reactor.rules.worker.TriggerInstanceDispatcher`) |

Everything else (stream, announcements, CUD events for the sensor container) has no consumer
here and is dropped, as it is in StackStorm's unit tests.
"""
import copy
import json
import logging
import os
import sys
import time

import yaml

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACK_REF = "email_retraction"
# ../shared/st2 beside the project (CI lays shared/ next to its clone); ST2_SHARED overrides.
ST2_SHARED = os.environ.get("ST2_SHARED") or os.path.join(
    os.path.dirname(PACK_ROOT), "shared", "st2")

LOG = logging.getLogger(__name__)


class StackError(RuntimeError):
    """StackStorm refused something, or an execution did not end in time."""


def _monkey_patch():
    # StackStorm's services (and st2tests.base) patch before anything opens a socket.
    from st2common.util.monkey_patch import monkey_patch
    monkey_patch()


class Stack(object):
    """StackStorm's services, booted by `boot`; `shutdown` stops what it started."""

    def __init__(self, work_dir):
        self.work_dir = work_dir
        self.packs_dir = os.path.join(work_dir, "packs")
        self.config_path = os.path.join(work_dir, "configs", PACK_REF + ".yaml")
        self._patches = []
        self._threads = []
        self._scheduler = None
        self.current_config = None

    # -- start -----------------------------------------------------------------------------
    @classmethod
    def boot(cls, pack_config, work_dir, packs=("core", PACK_REF)):
        """Configure, connect, register `packs` and start delivery. `pack_config` is written
        to <work_dir>/configs/email_retraction.yaml (None: no config file)."""
        _monkey_patch()
        stack = cls(work_dir)
        stack._configure()
        stack._lay_out(pack_config)
        stack._connect()
        stack._start_delivery()
        stack.register(packs)
        # The scheduler's own loop: picks queued requests, applies policies, re-tries delays.
        from st2actions.scheduler import handler as scheduling_queue
        stack._scheduler = scheduling_queue.get_handler()
        stack._scheduler.start()
        return stack

    def _configure(self):
        from oslo_config import cfg
        import st2tests.config as tests_config
        # No coordination backend, as in StackStorm's unit tests and a single-node install
        # without one: locks are best effort (StackStorm says so in its log).
        tests_config.parse_args()
        cfg.CONF.set_override("base_path", self.work_dir, group="system")
        cfg.CONF.set_override("packs_base_paths", self.packs_dir, group="content")
        cfg.CONF.set_override("system_packs_base_path", self.packs_dir, group="content")
        # Production's default: payloads that do not match the trigger type are dropped.
        cfg.CONF.set_override("validate_trigger_payload", True, group="system")
        # The registrars remember each pack's directory for the life of the process (as
        # st2-register-content, a one-shot script, may): a Stack booted earlier in this
        # process (another test module) left its packs dir there, and registration here
        # would refuse every file as "not located inside the pack directory".
        from st2common.content import utils as content_utils
        content_utils.PACK_NAME_TO_BASE_PATH_CACHE.clear()

    def _lay_out(self, pack_config):
        """/opt/stackstorm as StackStorm lays it out: packs/, configs/, virtualenvs/."""
        os.makedirs(self.packs_dir, exist_ok=True)
        os.makedirs(os.path.dirname(self.config_path), exist_ok=True)
        os.makedirs(os.path.join(self.work_dir, "virtualenvs"), exist_ok=True)
        links = {
            os.path.join(self.packs_dir, PACK_REF): PACK_ROOT,
            os.path.join(self.packs_dir, "core"): os.path.join(ST2_SHARED, "contrib", "core"),
            # The pack's virtualenv: this venv holds requirements.txt already.
            os.path.join(self.work_dir, "virtualenvs", PACK_REF): sys.prefix,
        }
        for link, target in links.items():
            if not os.path.exists(target):
                raise StackError("%s is missing (ST2_SHARED=%s)" % (target, ST2_SHARED))
            if not os.path.lexists(link):
                os.symlink(os.path.abspath(target), link)
        if pack_config is not None:
            self.write_config(pack_config)

    def write_config(self, pack_config):
        self.current_config = copy.deepcopy(pack_config)
        with open(self.config_path, "w") as handle:
            yaml.safe_dump(pack_config, handle, default_flow_style=False)

    def reconfigure(self, pack_config):
        """A new pack config, registered as `st2ctl reload --register-configs` does (validated
        against config.schema.yaml by StackStorm); the next execution reads it."""
        from st2common.bootstrap import configsregistrar
        self.write_config(pack_config)
        configsregistrar.ConfigsRegistrar(use_pack_cache=False, fail_on_failure=True) \
            .register_from_pack(os.path.join(self.packs_dir, PACK_REF))

    def _connect(self):
        import mongoengine.connection
        import mongomock
        from mock import patch
        from st2common.database_setup import db_setup

        real_connect = mongoengine.connection.connect

        def connect(*args, **kwargs):
            kwargs["mongo_client_class"] = mongomock.MongoClient
            return real_connect(*args, **kwargs)

        self._start(patch.object(mongoengine.connection, "connect", connect))
        self.db = db_setup(ensure_indexes=False)
        # mongomock clients share one store per process: start from an empty database.
        from oslo_config import cfg
        self.db.drop_database(cfg.CONF.database.db_name)

    def register(self, packs=("core", PACK_REF)):
        """Every registrar `st2ctl reload --register-all` runs, failing on the first error."""
        from st2common.bootstrap import (actionsregistrar, aliasesregistrar, configsregistrar,
                                         policiesregistrar, rulesregistrar, runnersregistrar,
                                         sensorsregistrar, triggersregistrar)
        from st2common.bootstrap.ruletypesregistrar import register_rule_types
        from st2common.bootstrap.policiesregistrar import register_policy_types
        from st2common.triggers import register_internal_trigger_types
        import st2common

        runnersregistrar.register_runners(fail_on_failure=True)
        register_rule_types()
        register_policy_types(st2common)
        register_internal_trigger_types()
        # What st2api does when it starts (WebhooksController._register_webhook_trigger_types):
        # without core.st2.webhook in the database a webhook rule's enforcement fails.
        from st2common.constants.triggers import WEBHOOK_TRIGGER_TYPES
        from st2common.services.triggers import create_trigger_type_db
        for trigger_type in WEBHOOK_TRIGGER_TYPES.values():
            create_trigger_type_db(trigger_type, log_not_unique_error_as_debug=True)
        counts = {}
        for pack in packs:
            pack_dir = os.path.join(self.packs_dir, pack)
            for name, registrar in (
                    ("triggers", triggersregistrar.TriggersRegistrar),
                    ("sensors", sensorsregistrar.SensorsRegistrar),
                    ("actions", actionsregistrar.ActionsRegistrar),
                    ("rules", rulesregistrar.RulesRegistrar),
                    ("aliases", aliasesregistrar.AliasesRegistrar),
                    ("policies", policiesregistrar.PolicyRegistrar),
                    ("configs", configsregistrar.ConfigsRegistrar)):
                instance = registrar(use_pack_cache=False, fail_on_failure=True)
                counts[(pack, name)] = instance.register_from_pack(pack_dir)
        self.registered = counts
        return counts

    # -- in-process delivery -----------------------------------------------------------------
    def _start(self, patcher):
        patcher.start()
        self._patches.append(patcher)

    def _spawn(self, fn, *args):
        import eventlet
        thread = eventlet.spawn(fn, *args)
        self._threads.append(thread)
        return thread

    def _start_delivery(self):
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

        stack = self

        def live_action_state(_publisher, payload, state):
            if not isinstance(payload, LiveActionDB):
                return
            if state == action_constants.LIVEACTION_STATUS_REQUESTED:
                scheduling.get_scheduler_entrypoint().process(payload)
            else:
                stack._spawn(worker.get_worker().process, payload)

        def workflow_message(_publisher, payload, *_state):
            if isinstance(payload, WorkflowExecutionDB):
                stack._spawn(workflows.get_engine().process, payload)

        def execution_update(_publisher, payload, *args, **kwargs):
            if isinstance(payload, ActionExecutionDB):
                stack._spawn(workflows.get_engine().process, payload)

        rules_worker = TriggerInstanceDispatcher(None, [])

        def trigger_instance(_publisher, payload, routing_key=None, **kwargs):
            def deliver():
                response = rules_worker.pre_ack_process(payload)
                rules_worker.process(response)
            stack._spawn(deliver)

        def dropped(*args, **kwargs):
            return None

        # StackStorm's python runner hands its own process's `sys.argv[1:]` to every action's
        # wrapper (`--parent-args`), which parses them with StackStorm's config parser; an
        # st2actionrunner has `--config-file st2.conf` there. In a test process they are
        # pytest's arguments, which the wrapper refuses (exit 2, every python action fails):
        # this process, as an action runner, has none.
        self._start(patch.object(sys, "argv", sys.argv[:1]))
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
            self._start(patcher)

    def shutdown(self):
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
        from st2common.database_setup import db_teardown
        try:
            db_teardown()
        except Exception:  # already disconnected
            pass

    # -- what a user does --------------------------------------------------------------------
    def request(self, ref, parameters=None, user="stanley", context=None):
        """`st2 run ref k=v ...`: the execution's id; it runs in the background."""
        from st2common.models.db.liveaction import LiveActionDB
        from st2common.services import action as action_service
        ctx = {"user": user}
        ctx.update(context or {})
        live_action = LiveActionDB(action=ref, parameters=dict(parameters or {}), context=ctx)
        _, execution = action_service.request(live_action)
        return str(execution.id)

    def run(self, ref, parameters=None, timeout=300, **kwargs):
        """`st2 run` and wait: the finished ActionExecutionDB."""
        return self.wait(self.request(ref, parameters, **kwargs), timeout=timeout)

    def execution(self, execution_id):
        from st2common.persistence.execution import ActionExecution
        return ActionExecution.get_by_id(execution_id)

    def wait(self, execution_id, timeout=300, statuses=None):
        """Until the execution reaches one of `statuses` (default: any completed state)."""
        import eventlet
        from st2common.constants import action as action_constants
        wanted = set(statuses or action_constants.LIVEACTION_COMPLETED_STATES)
        deadline = time.monotonic() + timeout
        while True:
            execution = self.execution(execution_id)
            if execution.status in wanted:
                return execution
            if time.monotonic() > deadline:
                raise StackError("execution %s (%s) still %s after %ss" % (
                    execution_id, execution.action.get("ref"), execution.status, timeout))
            eventlet.sleep(0.05)

    def children(self, execution_id):
        """The executions a workflow started, oldest first."""
        from st2common.persistence.execution import ActionExecution
        found = list(ActionExecution.query(parent=execution_id))
        return sorted(found, key=lambda e: (e.start_timestamp, str(e.id)))

    def descendants(self, execution_id, ref=None):
        out = []
        for child in self.children(execution_id):
            if ref is None or child.action.get("ref") == ref:
                out.append(child)
            out.extend(self.descendants(str(child.id), ref))
        return out

    def dispatch(self, trigger, payload, throw_on_validation_error=False):
        """What `sensor_service.dispatch` does: validate the payload (dropped when invalid and
        validation is on, as in production), then publish it to the rules engine."""
        from st2common.services.trigger_dispatcher import TriggerDispatcherService
        return TriggerDispatcherService(LOG).dispatch(
            trigger, payload=payload, throw_on_validation_error=throw_on_validation_error)

    def trigger_instances(self, trigger=None):
        from st2common.persistence.trigger import TriggerInstance
        query = {"trigger": trigger} if trigger else {}
        return list(TriggerInstance.query(**query))

    def enforcements(self, rule_ref=None):
        from st2common.persistence.rule_enforcement import RuleEnforcement
        query = {"rule__ref": rule_ref} if rule_ref else {}
        return list(RuleEnforcement.query(**query))

    def executions_of(self, ref):
        from st2common.persistence.execution import ActionExecution
        found = list(ActionExecution.query(action__ref=ref))
        return sorted(found, key=lambda e: (e.start_timestamp, str(e.id)))

    def pending_inquiries(self, timeout=300, count=1):
        """The core.ask executions waiting for an answer (waits for `count` of them)."""
        import eventlet
        from st2common.constants import action as action_constants
        from st2common.persistence.execution import ActionExecution
        deadline = time.monotonic() + timeout
        while True:
            found = list(ActionExecution.query(
                runner__name="inquirer", status=action_constants.LIVEACTION_STATUS_PENDING))
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise StackError("no pending inquiry after %ss" % timeout)
            eventlet.sleep(0.05)

    def respond(self, inquiry_execution, response, requester="stanley"):
        """Answer a core.ask as `st2 inquiry respond` does: the inquiry service validates the
        response against the inquiry's schema, then resumes the workflow."""
        from st2common.models.api.inquiry import InquiryAPI
        from st2common.services import inquiry as inquiry_service
        inquiry = InquiryAPI.from_model(inquiry_execution)
        inquiry_service.validate_response(inquiry, response)
        return inquiry_service.respond(inquiry, response, requester=requester)

    def sensor(self, sensor_cls, config=None, poll_interval=60):
        """An instance of a sensor class of the pack, set up, as the sensor container runs it:
        its service is StackStorm's `SensorService` (so `dispatch` is StackStorm's: payload
        validated against the trigger type, dropped when invalid, else to the rules engine),
        with st2tests' `MockDatastoreService` for the datastore (the real one talks to st2api
        over HTTP). `config`: the pack config (default: the registered one, loaded by
        StackStorm's ContentPackConfigLoader as the sensor wrapper loads it). The sensor's log
        goes to the `st2.email_retraction.sensor.<class>` logger."""
        from st2reactor.container.sensor_wrapper import SensorService
        from st2tests.mocks.datastore import MockDatastoreService
        from st2tests.mocks.sensor import MockSensorWrapper
        name = sensor_cls.__name__
        wrapper = MockSensorWrapper(PACK_REF, name)
        wrapper._logger = logging.getLogger("%s.sensor" % PACK_REF)
        service = SensorService(wrapper)
        service._datastore_service = MockDatastoreService(
            logger=wrapper._logger, pack_name=PACK_REF, class_name=name)
        if config is None:
            from st2common.util.config_loader import ContentPackConfigLoader
            config = ContentPackConfigLoader(pack_name=PACK_REF).get_config()
        sensor = sensor_cls(sensor_service=service, config=copy.deepcopy(config),
                            poll_interval=poll_interval)
        sensor.setup()
        return sensor

    # -- StackStorm's API and sensor processes (added for tests/test_st2_sensors.py) -----------
    def serve_api(self):
        """StackStorm's API (`st2api.app.setup_app`: its router, controllers and middleware,
        auth as configured: on, so every request needs a token from the database) served on
        127.0.0.1 by eventlet's WSGI server in a green thread, as `st2api` serves it
        (st2api/cmd/api.py). `auth.api_url` points at it, so StackStorm's API clients in this
        process (a sensor's SensorDatastoreService) reach it. Returns its base URL; `stop_api`
        ends it (`shutdown` kills its thread too)."""
        import eventlet
        from eventlet import wsgi
        from oslo_config import cfg
        from st2api import app as st2api_app
        if getattr(self, "_api", None) is not None:
            return self._api["url"]
        sock = eventlet.listen(("127.0.0.1", 0))
        url = "http://127.0.0.1:%d" % sock.getsockname()[1]
        application = st2api_app.setup_app()
        thread = eventlet.spawn(wsgi.server, sock, application, log=LOG, log_output=False)
        self._threads.append(thread)
        self._api = {"url": url, "socket": sock, "thread": thread,
                     "api_url": cfg.CONF.auth.api_url}
        cfg.CONF.set_override("api_url", url, group="auth")
        return url

    def stop_api(self):
        from oslo_config import cfg
        api, self._api = getattr(self, "_api", None), None
        if api is None:
            return
        api["thread"].kill()
        api["socket"].close()
        cfg.CONF.set_override("api_url", api["api_url"], group="auth")

    def sensor_wrapper(self, ref):
        """The registered sensor `ref` (e.g. `email_retraction.VerdictSensor`) as StackStorm's
        sensor container starts it: the container's sensor object (`_to_sensor_object` of
        st2reactor's SensorContainerManager) and `SensorWrapper` with the arguments the
        container gives its wrapper process (`--config-file` of the container, here an empty
        st2.conf: Stack's configuration holds every setting). The wrapper parses the config,
        connects the database, loads the pack config (ContentPackConfigLoader: schema defaults,
        st2kv), loads the class and gives it a `SensorService` (TriggerDispatcherService;
        SensorDatastoreService, which creates a token in the database and calls the API of
        `serve_api`). Returns the wrapper; the sensor is `wrapper._sensor_instance`.

        Left out, because they belong to the separate sensor process: `wrapper.run()` (the test
        steps setup/poll/cleanup itself), its trigger watcher (a RabbitMQ consumer of trigger
        CUD events) and its `logging.setup` (a process-wide logging file config that redirects
        stderr)."""
        from mock import patch
        from st2common.persistence.sensor import SensorType
        from st2reactor.container import sensor_wrapper
        from st2reactor.container.manager import SensorContainerManager
        from st2reactor.container.partitioners import DefaultPartitioner

        manager = SensorContainerManager(DefaultPartitioner(sensor_node_name="sensornode1"))
        sensor = manager._to_sensor_object(SensorType.get_by_ref(ref))
        st2_conf = os.path.join(self.work_dir, "st2.conf")
        if not os.path.exists(st2_conf):
            with open(st2_conf, "w") as handle:
                handle.write("# The sensor processes' --config-file: Stack sets every option.\n")
        with patch.object(sensor_wrapper.logging, "setup"):
            return sensor_wrapper.SensorWrapper(
                pack=sensor["pack"], file_path=sensor["file_path"],
                class_name=sensor["class_name"], trigger_types=sensor["trigger_types"],
                poll_interval=sensor["poll_interval"], parent_args=["--config-file", st2_conf],
                db_ensure_indexes=False)

    def rerun(self, execution_id, tasks=None, parameters=None, user="stanley"):
        """`st2 execution re-run <id> [--tasks t ...] [k=v ...]`: StackStorm's API controller
        (ActionExecutionReRunController.post) schedules a new execution of the same action
        with the old parameters (merged with `parameters`); with `tasks`, an Orquesta workflow
        is rerun from those tasks (a with-items task reruns its failed and unrun items).
        Returns the new execution's id. (Added for tests/test_st2_workflow_retract_campaign.py.)"""
        from st2api.controllers.v1.actionexecutions import ActionExecutionReRunController
        from st2common.models.db.auth import UserDB
        spec = ActionExecutionReRunController.ExecutionSpecificationAPI(
            parameters=parameters, tasks=tasks)
        response = ActionExecutionReRunController().post(
            spec, str(execution_id), requester_user=UserDB(name=user))
        return str(response.json["id"])

    @staticmethod
    def result(execution):
        """A python action's return value (`execution.result.result`), JSON-decoded when the
        runner handed it over as text."""
        result = (execution.result or {}).get("result")
        if isinstance(result, str):
            try:
                return json.loads(result)
            except ValueError:
                return result
        return result
