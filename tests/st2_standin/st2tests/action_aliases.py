"""Base class of action alias tests, as in ``st2tests.action_aliases``."""

import os
import re

import yaml

from st2common.constants.pack import MANIFEST_FILE_NAME, PACK_REF_WHITELIST_REGEX
from st2common.exceptions.content import ParseException
from st2common.models.db.actionalias import ActionAliasDB
from st2common.models.utils.action_alias_utils import extract_parameters
from st2common.models.utils.action_alias_utils import extract_parameters_for_action_alias_db
from st2tests.pack_resource import BasePackResourceTestCase

__all__ = ["BaseActionAliasTestCase"]

# The keys StackStorm's ActionAliasAPI accepts in an alias file.
ALIAS_KEYS = frozenset([
    "id", "ref", "uid", "name", "pack", "description", "enabled", "action_ref", "formats",
    "ack", "result", "extra", "immutable_parameters", "metadata_file",
])
ALIAS_REQUIRED_KEYS = ("name", "action_ref", "formats")
RESOURCE_EXTENSIONS = (".json", ".yaml", ".yml")


def get_pack_ref_from_metadata(metadata, pack_directory_name=None):
    """The pack ref: ``ref``, else a valid directory name, else a valid ``name``."""
    if metadata.get("ref", None):
        return metadata["ref"]
    if pack_directory_name and re.match(PACK_REF_WHITELIST_REGEX, pack_directory_name):
        return pack_directory_name
    if re.match(PACK_REF_WHITELIST_REGEX, metadata["name"]):
        return metadata["name"]
    raise ValueError(
        'Pack name "%s" contains invalid characters and "ref" attribute is not available. '
        'You either need to add "ref" attribute which contains only word characters to the '
        "pack metadata file or update name attribute to contain only word characters."
        % (metadata["name"])
    )


def _load_alias(path, pack):
    with open(path, "r") as fp:
        content = yaml.safe_load(fp) or {}
    if not isinstance(content, dict):
        raise ValueError("%s: an alias must be a mapping" % (path))

    pack_field = content.get("pack", None)
    if not pack_field:
        content["pack"] = pack
    elif pack_field != pack:
        raise Exception(
            'Model is in pack "%s" but field "pack" is different: %s' % (pack, pack_field)
        )

    unknown = sorted(set(content) - ALIAS_KEYS)
    if unknown:
        raise ValueError(
            "%s: Additional properties are not allowed (%s)" % (path, ", ".join(unknown))
        )
    for key in ALIAS_REQUIRED_KEYS:
        if key not in content:
            raise ValueError("%s: '%s' is a required property" % (path, key))

    fields = dict((k, v) for k, v in content.items() if k not in ("id", "ref", "uid"))
    return ActionAliasDB(**fields)


class BaseActionAliasTestCase(BasePackResourceTestCase):
    """Set ``action_alias_name``; the alias is loaded from ``<pack>/aliases/``."""

    action_alias_name = None
    action_alias_db = None

    def setUp(self):
        super(BaseActionAliasTestCase, self).setUp()
        if not self.action_alias_name:
            raise ValueError('"action_alias_name" class attribute needs to be provided')
        self.action_alias_db = self._get_action_alias_db_by_name(name=self.action_alias_name)

    def assertCommandMatchesExactlyOneFormatString(self, format_strings, command):
        """Assert that the command matches exactly one of the format strings."""
        matched = []
        for format_string in format_strings:
            try:
                extract_parameters(format_str=format_string, param_stream=command)
            except ParseException:
                continue
            matched.append(format_string)

        if len(matched) == 0:
            raise AssertionError(
                'Command "%s" didn\'t match any of the provided format strings' % (command)
            )
        if len(matched) > 1:
            raise AssertionError(
                'Command "%s" matched multiple format strings: %s' % (command, ", ".join(matched))
            )

    def assertExtractedParametersMatch(self, format_string, command, parameters):
        """Assert that the command matches the format string and yields these parameters."""
        extracted = extract_parameters_for_action_alias_db(
            action_alias_db=self.action_alias_db, format_str=format_string, param_stream=command
        )
        if extracted != parameters:
            msg = (
                'Extracted parameters from command string "%s" against format string "%s"'
                " didn't match the provided parameters: " % (command, format_string)
            )
            try:
                self.assertEqual(extracted, parameters)
            except AssertionError as e:
                msg += str(e)
            raise AssertionError(msg)

    def _get_action_alias_db_by_name(self, name):
        base_pack_path = self._get_base_pack_path()
        pack_yaml_path = os.path.join(base_pack_path, MANIFEST_FILE_NAME)

        if os.path.isfile(pack_yaml_path):
            with open(pack_yaml_path, "r") as fp:
                pack = get_pack_ref_from_metadata(metadata=yaml.safe_load(fp))
        else:
            # Without pack.yaml the directory name is the pack name.
            _, pack = os.path.split(base_pack_path)

        aliases_dir = os.path.join(base_pack_path, "aliases")
        if os.path.isdir(aliases_dir):
            for file_name in sorted(os.listdir(aliases_dir)):
                if not file_name.endswith(RESOURCE_EXTENSIONS):
                    continue
                alias_db = _load_alias(os.path.join(aliases_dir, file_name), pack)
                if alias_db.name == name:
                    return alias_db

        raise ValueError('Alias with name "%s" not found' % (name))
