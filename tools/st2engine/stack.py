"""One StackStorm in this process: configuration, database, registration, and what a user does.

`Stack.boot` does what `st2ctl reload` and StackStorm's services do at start, with StackStorm's
own code: st2tests' configuration, `db_setup` (mongomock as the MongoClient), the registrars
(`fail_on_failure`) for the runners, StackStorm's `core` pack and this pack (with its config,
validated against config.schema.yaml by StackStorm), then message delivery (delivery.py: the
scheduler, action runner, workflow engine and rules engine consume what is published). Its
methods are what a user or a service does next: `st2 run`, a sensor's dispatch, answering an
inquiry, a re-run; api.py serves StackStorm's API, sensors.py runs the pack's sensors.
"""
import copy
import json
import logging
import os
import sys
import time

import yaml

from tools.st2engine import api, sensors
from tools.st2engine.delivery import InProcessDelivery
from tools.st2engine.paths import PACK_REF, PACK_ROOT, ST2_SHARED


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
        self._db_patch = None
        self.delivery = InProcessDelivery()
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
        stack.delivery.start()
        stack.register(packs)
        stack.delivery.start_scheduler()
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

        self._db_patch = patch.object(mongoengine.connection, "connect", connect)
        self._db_patch.start()
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

    def shutdown(self):
        self.stop_api()
        self.delivery.stop()
        from st2common.database_setup import db_teardown
        try:
            db_teardown()
        except Exception:  # already disconnected
            pass
        if self._db_patch is not None:
            self._db_patch.stop()
            self._db_patch = None

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

    # -- StackStorm's API and sensors (api.py, sensors.py) -----------------------------------
    def serve_api(self):
        """StackStorm's API served on 127.0.0.1 (api.serve); its base URL."""
        return api.serve(self)

    def stop_api(self):
        api.stop(self)

    def rerun(self, execution_id, tasks=None, parameters=None, user="stanley"):
        """`st2 execution re-run <id> [--tasks ...] [k=v ...]` (api.rerun): the new id."""
        return api.rerun(execution_id, tasks=tasks, parameters=parameters, user=user)

    def sensor(self, sensor_cls, config=None, poll_interval=60):
        """A pack sensor with StackStorm's SensorService, set up (sensors.sensor)."""
        return sensors.sensor(sensor_cls, config=config, poll_interval=poll_interval)

    def sensor_wrapper(self, ref):
        """A registered sensor in StackStorm's SensorWrapper (sensors.sensor_wrapper)."""
        return sensors.sensor_wrapper(self, ref)

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
