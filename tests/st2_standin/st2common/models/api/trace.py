"""Trace context, as in ``st2common.models.api.trace``."""

__all__ = ["TraceContext"]


class TraceContext(object):
    """Tags a trigger instance so its trace can be followed.

    Like StackStorm's class it has no ``__eq__``: compare ``trace_tag``, not the object.
    """

    def __init__(self, id_=None, trace_tag=None):
        self.id_ = id_
        self.trace_tag = trace_tag

    def __str__(self):
        return "{id_: %s, trace_tag: %s}" % (self.id_, self.trace_tag)
