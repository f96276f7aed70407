"""Stand-in for StackStorm's ``st2common`` (only what packs and pack tests use)."""

__version__ = "3.9.0"
