"""Developer tools of the pack repository (lint checks, the demo, the st2local harness).
Not part of the pack's runtime."""
