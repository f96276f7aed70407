"""The registered form of an action alias, as in ``st2common.models.db.actionalias``."""

__all__ = ["ActionAliasDB"]


class ActionAliasDB(object):
    """The fields of an alias that matter to parameter extraction."""

    def __init__(self, name, pack, action_ref, formats, description=None, enabled=True,
                 ack=None, result=None, extra=None, immutable_parameters=None,
                 metadata_file=None):
        self.name = name
        self.pack = pack
        self.ref = "%s.%s" % (pack, name)
        self.action_ref = action_ref
        self.formats = formats
        self.description = description
        self.enabled = enabled
        self.ack = ack
        self.result = result
        self.extra = extra
        self.immutable_parameters = immutable_parameters
        self.metadata_file = metadata_file

    def get_format_strings(self):
        """All format strings: plain ones, and each ``representation`` of a display format."""
        result = []
        for format_string in self.formats or []:
            if isinstance(format_string, dict) and format_string.get("representation", None):
                result.extend(format_string["representation"])
            else:
                result.append(format_string)
        return result
