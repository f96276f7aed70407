"""Fixtures that run the pack on StackStorm's own code (tools/st2engine) against the sandbox.

`st2_sandbox` (module): the sandbox tenant as a child process (StackStorm's python runner
starts each action as a subprocess, and eventlet owns this process), reset to basic.yaml for
every test by `st2_tenant`. `st2` (module): one StackStorm (mongomock database, the packs
registered, in-process delivery) with the pack config pointing at that sandbox and a SQLite
ledger of its own; `st2_config` is that config, to change and `st2.reconfigure` with.
"""
import copy
import time

import eventlet
import pytest

from sandbox.process import SandboxProcess
from tools.st2engine import Stack


@pytest.fixture(scope="module")
def st2_sandbox():
    box = SandboxProcess("basic.yaml")
    box.start()
    try:
        yield box
    finally:
        box.stop()


@pytest.fixture(scope="module")
def st2_base_config(st2_sandbox, tmp_path_factory):
    ledger = tmp_path_factory.mktemp("ledger").joinpath("ledger.db")
    return st2_sandbox.pack_config(ledger_url="sqlite:///%s" % ledger)


@pytest.fixture(scope="module")
def st2(st2_base_config, tmp_path_factory):
    stack = Stack.boot(st2_base_config, str(tmp_path_factory.mktemp("st2")))
    try:
        yield stack
    finally:
        stack.shutdown()


@pytest.fixture
def st2_tenant(st2_sandbox, st2, st2_base_config):
    """A fresh basic.yaml tenant and the module's pack config restored."""
    st2_sandbox.load_scenario("basic.yaml")
    st2_sandbox.faults({}, clear=True)
    st2_sandbox.reset_counters()
    if st2.current_config != st2_base_config:
        st2.reconfigure(st2_base_config)
    return st2_sandbox


@pytest.fixture
def st2_config(st2_base_config):
    """A copy of the module's pack config to change (then `st2.reconfigure(st2_config)`)."""
    return copy.deepcopy(st2_base_config)


@pytest.fixture
def st2_own_ledger_config(st2, st2_tenant, st2_config, tmp_path):
    """This test's pack config with a ledger of its own, registered; change it and
    `st2.reconfigure` it."""
    st2_config["ledger_url"] = "sqlite:///%s" % (tmp_path / "ledger.db")
    st2.reconfigure(st2_config)
    return st2_config


def folders_of(box, message_id, mailboxes):
    """mailbox -> the folders its copies of `message_id` are in (the sandbox's truth)."""
    found = {address: [] for address in mailboxes}
    for held in box.copies(message_id):
        if held["mailbox"] in found:
            found[held["mailbox"]].append(held["folder"])
    return found


class Since(object):
    """What StackStorm recorded after this point: trigger instances (the pack's triggers and
    webhooks; not the `core.st2.generic.*` ones StackStorm's own services emit, such as the
    inquirer's inquiry trigger) and action executions."""

    OWN_TRIGGERS = "core.st2.generic."

    def __init__(self, st2):
        self.st2 = st2
        self.instances_before = {str(t.id) for t in st2.trigger_instances()}
        self.executions_before = {str(e.id) for e in self._executions()}

    @staticmethod
    def _executions():
        from st2common.persistence.execution import ActionExecution
        return list(ActionExecution.get_all())

    def trigger_instances(self):
        return [t for t in self.st2.trigger_instances()
                if str(t.id) not in self.instances_before
                and not t.trigger.startswith(self.OWN_TRIGGERS)]

    def executions(self, ref=None):
        return [e for e in self._executions() if str(e.id) not in self.executions_before
                and (ref is None or e.action["ref"] == ref)]

    def processed(self, count, timeout=300):
        """The `count` new trigger instances, oldest first, once the rules engine is done
        with each (more than `count` fails)."""
        from st2common.constants.triggers import TRIGGER_INSTANCE_COMPLETED_STATES
        deadline = time.monotonic() + timeout
        while True:
            found = self.trigger_instances()
            if len(found) >= count and all(t.status in TRIGGER_INSTANCE_COMPLETED_STATES
                                           for t in found):
                assert len(found) == count, [(t.trigger, t.payload) for t in found]
                return sorted(found, key=lambda t: (t.occurrence_time, str(t.id)))
            assert time.monotonic() < deadline, "trigger instances not processed in time"
            eventlet.sleep(0.05)


def ledger_path(config):
    return config["ledger_url"][len("sqlite:///"):]


__all__ = ["st2_sandbox", "st2_base_config", "st2", "st2_tenant", "st2_config",
           "st2_own_ledger_config", "folders_of", "Since", "ledger_path"]
