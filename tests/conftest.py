"""Test set-up shared by the whole suite.

Mirrors what ``st2-run-pack-tests`` gives a pack: ``lib/``, ``actions/``, ``actions/lib/`` and
``sensors/`` on ``sys.path`` (plus the pack root, so ``import sandbox`` works). StackStorm's
own modules come from the real installation when there is one, else from the stand-in in
``tests/st2_standin``.
"""

import os
import sys

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
PACK_ROOT = os.path.dirname(TESTS_DIR)
PACK_REF = "email_retraction"
STANDIN_DIR = os.path.join(TESTS_DIR, "st2_standin")

# Not test modules: the stand-in is a library, the fixtures are data.
collect_ignore = ["st2_standin", "fixtures"]


def _put_on_path(paths):
    # Earlier entries win, as in the PYTHONPATH st2-run-pack-tests builds.
    for path in reversed(paths):
        if path not in sys.path:
            sys.path.insert(0, path)


_put_on_path([
    os.path.join(PACK_ROOT, "lib"),
    os.path.join(PACK_ROOT, "actions", "lib"),
    os.path.join(PACK_ROOT, "actions"),
    os.path.join(PACK_ROOT, "sensors"),
    PACK_ROOT,
])

try:
    import st2common  # noqa: F401  (the real StackStorm, when tests run inside it)
    USING_STANDIN = False
except ImportError:
    sys.path.insert(0, STANDIN_DIR)
    USING_STANDIN = True
