"""Put the pack-root `lib/` on sys.path.

StackStorm adds `<pack>/lib` only when `[packs] enable_common_libs = True` (off by default);
importing this module first makes the pack work either way.
"""
import os
import sys

PACK_LIB = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                         os.pardir, os.pardir, "lib"))
if PACK_LIB not in sys.path:
    sys.path.insert(0, PACK_LIB)
