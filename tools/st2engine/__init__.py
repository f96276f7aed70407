"""StackStorm's own services in one process, for the tests and `make demo`.

Nothing here models StackStorm: every step runs StackStorm's code from the venv built from
../shared/st2 (st2common, st2reactor, st2actions, st2api, the runners, orquesta). Only the two
seams StackStorm's own unit tests use are replaced (`st2tests.mocks`): MongoDB by mongomock,
and RabbitMQ by in-process delivery of each published message to the service that consumes
its queue in a real deployment (scheduler, action runner, workflow engine, rules engine).

    from tools.st2engine import Stack
    stack = Stack.boot(pack_config, work_dir)       # config, database, registration, bus
    execution = stack.run("email_retraction.retract", {...})   # waits for completion
    stack.dispatch("email_retraction.verdict", payload)        # as a sensor dispatches
"""
from tools.st2engine.paths import ST2_SHARED
from tools.st2engine.stack import Stack, StackError

__all__ = ["ST2_SHARED", "Stack", "StackError"]
