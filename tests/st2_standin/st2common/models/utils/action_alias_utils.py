"""Parameter extraction for action aliases, as in
``st2common.models.utils.action_alias_utils``.

The behaviour (regular expressions, defaults, trailing ``key=value`` pairs, anchors) follows
StackStorm 3.9 so alias tests give the answers ChatOps will give.
"""

import re

try:  # Python 3.11+: sre_parse is deprecated in favour of re._parser
    from re import _constants as sre_constants
    from re import _parser as sre_parse
except ImportError:  # Python 3.8 - 3.10
    import sre_constants
    import sre_parse

from st2common.exceptions.content import ParseException

__all__ = [
    "ActionAliasFormatParser",
    "extract_parameters_for_action_alias_db",
    "extract_parameters",
    "search_regex_tokens",
]

AT = sre_constants.AT
AT_BEGINNING = sre_constants.AT_BEGINNING
AT_BEGINNING_STRING = sre_constants.AT_BEGINNING_STRING
AT_END = sre_constants.AT_END
AT_END_STRING = sre_constants.AT_END_STRING
BRANCH = sre_constants.BRANCH
SUBPATTERN = sre_constants.SUBPATTERN

# Index of the nested pattern inside a SUBPATTERN token (Python 3 layout).
SUBPATTERN_INDEX = 3

# A key is a word without spaces; a value is quoted, a {...} literal, or one word.
_KEY = r"\s*(\S+?)\s*"
_VALUE = r'""|\'\'|"(.+?)"|\'(.+?)\'|({.+?})|(\S+)'
# In a default, an unquoted value may contain spaces.
_EXT_VALUE = r'""|\'\'|"(.+?)"|\'(.+?)\'|({.+?})|(.+?)'
_PAIR = r"(?:^|\s+)" + _KEY + "=(" + _VALUE + ")"
_ENDING = r".*?((" + _PAIR + r"\s*)*)$"
_DEFAULT = r"\s*=\s*(?:" + _EXT_VALUE + r")\s*"
_OPTIONAL = "{{" + _KEY + _DEFAULT + "}}"
_REQUIRED = "{{" + _KEY + "}}"

# What a {{ param }} becomes in the command regex: an optionally quoted named group.
_PARAM_GROUP = r'\1["\']?(?P<\2>(?:(?<=\').+?(?=\')|(?<=").+?(?=")|{.+?}|.+?))["\']?'


class ActionAliasFormatParser(object):
    """Match a command against one alias format string and pull out its parameters."""

    def __init__(self, alias_format=None, param_stream=None):
        self._format = alias_format or ""
        self._original_param_stream = param_stream or ""
        self._param_stream = self._original_param_stream
        self._snippets = self.generate_snippets()

        # 1. key=value pairs at the end of the command are extra parameters; cut them off.
        self._kv_pairs, self._param_stream = self.match_kv_pairs_at_end()
        # 2. {{ name = default }} placeholders and their defaults.
        self._optional = self.generate_optional_params_regex()
        # 3. the format string turned into a regex with one named group per placeholder.
        self._regex = self.transform_format_string_into_regex()

    def generate_snippets(self):
        return {
            "key": _KEY,
            "value": _VALUE,
            "ext_value": _EXT_VALUE,
            "pairs": _PAIR,
            "ending": _ENDING,
            "default": _DEFAULT,
            "optional": _OPTIONAL,
            "required": _REQUIRED,
        }

    def match_kv_pairs_at_end(self):
        param_stream = self._param_stream
        ending = re.match(_ENDING, param_stream, re.DOTALL)
        if ending and ending.group(1):
            kv_pairs = re.findall(_PAIR, ending.group(1), re.DOTALL)
            param_stream = param_stream.replace(ending.group(1), "")
        else:
            kv_pairs = []
        return kv_pairs, " %s " % (param_stream)

    def generate_optional_params_regex(self):
        return re.findall(_OPTIONAL, self._format, re.DOTALL)

    def transform_format_string_into_regex(self):
        reg = re.sub(r"(\s*)" + _OPTIONAL, r"(?:" + _PARAM_GROUP + r")?", self._format)
        reg = re.sub(r"(\s*)" + _REQUIRED, _PARAM_GROUP, reg)

        tokens = sre_parse.parse(reg, flags=re.DOTALL)
        # Anchor the regex at both ends unless the format string already does.
        if not search_regex_tokens(((AT, AT_BEGINNING), (AT, AT_BEGINNING_STRING)), tokens):
            reg = r"^\s*" + reg
        if not search_regex_tokens(((AT, AT_END), (AT, AT_END_STRING)), tokens, backwards=True):
            reg = reg + r"\s*$"

        return re.compile(reg, re.DOTALL)

    def match_params_in_stream(self, matched_stream):
        if not matched_stream:
            raise ParseException(
                'Command "%s" doesn\'t match format string "%s"'
                % (self._original_param_stream, self._format)
            )

        result = matched_stream.groupdict()

        # Placeholders left empty take their default.
        for param in self._optional:
            value = result[param[0]] or "".join(param[1:])
            if value is not None:
                result[param[0]] = value

        # Trailing key=value pairs win over everything else.
        for pair in self._kv_pairs:
            result[pair[0]] = "".join(pair[2:])

        if self._format and not (self._param_stream.strip() or any(result.values())):
            raise ParseException("No value supplied and no default value found.")

        return result

    def get_extracted_param_value(self):
        return self.match_params_in_stream(self._regex.search(self._param_stream))

    def get_multiple_extracted_param_value(self):
        return [self.match_params_in_stream(m) for m in self._regex.finditer(self._param_stream)]


def extract_parameters_for_action_alias_db(
    action_alias_db, format_str, param_stream, match_multiple=False
):
    """Extract parameters, refusing a format string the alias does not have."""
    formats = action_alias_db.get_format_strings()
    if format_str not in formats:
        raise ValueError(
            'Format string "%s" is not available on the alias "%s"'
            % (format_str, action_alias_db.name)
        )
    return extract_parameters(
        format_str=format_str, param_stream=param_stream, match_multiple=match_multiple
    )


def extract_parameters(format_str, param_stream, match_multiple=False):
    parser = ActionAliasFormatParser(alias_format=format_str, param_stream=param_stream)
    if match_multiple:
        return parser.get_multiple_extracted_param_value()
    return parser.get_extracted_param_value()


def search_regex_tokens(needle_tokens, haystack_tokens, backwards=False):
    """True if any (token type, token) pair of ``needle_tokens`` occurs in the parsed regex.

    Descends into groups and, as StackStorm does, into the second alternative of a branch.
    """
    if backwards:
        haystack_tokens = reversed(haystack_tokens)

    for token_type, token in haystack_tokens:
        if token_type == SUBPATTERN:
            if search_regex_tokens(needle_tokens, token[SUBPATTERN_INDEX]):
                return True
        elif token_type == BRANCH:
            if search_regex_tokens(needle_tokens, token[1][1]):
                return True
        elif (token_type, token) in needle_tokens:
            return True
    return False
