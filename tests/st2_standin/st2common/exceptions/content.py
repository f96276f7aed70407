"""Content exceptions, as in ``st2common.exceptions.content``."""

__all__ = ["ParseException"]


class ParseException(ValueError):
    """A command did not match an action alias format string."""
