"""`python -m retraction` (with the pack's lib/ on PYTHONPATH): see `retraction.cli` for the
commands and the exit codes (0 ok, 1 some copies failed, 2 bad input, 3 nothing could be
attempted, 4 internal error, 130 interrupted)."""
import os
import sys

from retraction.cli import EXIT_INTERRUPTED, main

if __name__ == "__main__":
    code = main()
    if code == EXIT_INTERRUPTED:
        # Provider threads may be stuck in network calls; the run is already recorded as
        # failed, so leave now instead of waiting for them at interpreter exit.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
