"""Pack constants, as in ``st2common.constants.pack``."""

__all__ = ["PACK_REF_WHITELIST_REGEX", "MANIFEST_FILE_NAME", "CONFIG_SCHEMA_FILE_NAME"]

PACK_REF_WHITELIST_REGEX = r"^[a-z0-9_]+$"
MANIFEST_FILE_NAME = "pack.yaml"
CONFIG_SCHEMA_FILE_NAME = "config.schema.yaml"
