"""The one error type of the ledger and metrics inputs: it names the offending parameter, so
an action or a ChatOps reply can say exactly what to fix."""
from __future__ import annotations


class InvalidParameter(ValueError):
    """Bad input to a ledger or metrics call. `field` is the parameter's name."""

    def __init__(self, field: str, message: str):
        super().__init__("{}: {}".format(field, message))
        self.field = field
        self.message = message
