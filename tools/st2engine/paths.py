"""Where the pack and StackStorm's wheelhouse are."""
import os

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACK_REF = "email_retraction"
# ../shared/st2 beside the project (CI lays shared/ next to its clone); ST2_SHARED overrides.
ST2_SHARED = os.environ.get("ST2_SHARED") or os.path.join(
    os.path.dirname(PACK_ROOT), "shared", "st2")
