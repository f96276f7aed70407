"""Test set-up shared by the whole suite.

Mirrors what ``st2-run-pack-tests`` gives a pack: ``lib/``, ``sensors/``, ``actions/``,
``actions/lib/`` and ``etc/`` on ``sys.path``, in its order (plus the pack root, so
``import sandbox`` works), for a plain ``python -m pytest`` run too. StackStorm's own modules
(``st2common``, ``st2tests``, ...) come from the StackStorm installation the tests run in:
``make test`` builds one in ``.venv`` from ``../shared/st2`` (see the Makefile). There is no
stand-in for them.

Eventlet: ``st2tests.base`` applies StackStorm's ``monkey_patch()`` (os, select, socket,
thread, time) when it is imported, that is, when the first test module that uses it is
collected. Modules imported before that keep the blocking originals: ``socketserver`` keeps
a blocking poll selector (a loopback server thread then never yields, and its client waits
forever), and ``urllib3`` a blocking ``select``, which starves the sandbox tenant served from
a thread of this process. So the patch is applied here, first, as StackStorm's own processes
do (``st2reactor.container.sensor_wrapper``; ``st2tests/base.py``: "perform monkeypatch
before importing ssl module otherwise tests will fail"), and every test module sees the same
patched world whatever is collected, or run, alone. Where StackStorm is not installed at all
(``make test-py38``: the core modules only, which import no StackStorm) there is nothing to
patch.
"""

import importlib.util
import os
import sys

if importlib.util.find_spec("st2common") is not None:
    from st2common.util.monkey_patch import monkey_patch

    monkey_patch()

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
PACK_ROOT = os.path.dirname(TESTS_DIR)
PACK_REF = "email_retraction"

# Not test modules: the fixtures are data.
collect_ignore = ["fixtures"]


def _put_on_path(paths):
    # Earlier entries win, as in the PYTHONPATH st2-run-pack-tests builds.
    for path in reversed(paths):
        if path not in sys.path:
            sys.path.insert(0, path)


_put_on_path([
    os.path.join(PACK_ROOT, "lib"),
    os.path.join(PACK_ROOT, "sensors"),
    os.path.join(PACK_ROOT, "actions"),
    os.path.join(PACK_ROOT, "actions", "lib"),
    os.path.join(PACK_ROOT, "etc"),
    PACK_ROOT,
])
