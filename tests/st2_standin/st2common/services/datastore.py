"""Datastore access for actions and sensors, as in ``st2common.services.datastore``.

The real services talk to the StackStorm API; the stand-in keeps the parts every
implementation shares (key naming, scope rules) and leaves storage to
``st2tests.mocks.datastore.MockDatastoreService``.
"""

from st2common.constants.keyvalue import DATASTORE_KEY_SEPARATOR, SYSTEM_SCOPE

__all__ = ["BaseDatastoreService"]


class BaseDatastoreService(object):
    """Public datastore methods; local names live under ``<pack>.<ClassName>:``."""

    DATASTORE_NAME_SEPARATOR = DATASTORE_KEY_SEPARATOR

    def __init__(self, logger, pack_name, class_name):
        self._pack_name = pack_name
        self._class_name = class_name
        self._logger = logger
        self._client = None

    def get_user_info(self):
        raise NotImplementedError("get_user_info() needs the StackStorm API")

    def list_values(self, local=True, prefix=None):
        raise NotImplementedError("list_values() needs the StackStorm API")

    def get_value(self, name, local=True, scope=SYSTEM_SCOPE, decrypt=False):
        raise NotImplementedError("get_value() needs the StackStorm API")

    def set_value(self, name, value, ttl=None, local=True, scope=SYSTEM_SCOPE, encrypt=False):
        raise NotImplementedError("set_value() needs the StackStorm API")

    def delete_value(self, name, local=True, scope=SYSTEM_SCOPE):
        raise NotImplementedError("delete_value() needs the StackStorm API")

    def get_api_client(self):
        raise NotImplementedError("get_api_client() not implemented")

    @staticmethod
    def _check_scope(scope):
        # The real service supports only the system scope for pack code.
        if scope != SYSTEM_SCOPE:
            raise ValueError("Scope %s is unsupported." % scope)

    def _get_full_key_name(self, name, local):
        if local:
            name = self._get_key_name_with_prefix(name=name)
        return name

    def _get_full_key_prefix(self, local, prefix=None):
        if local:
            key_prefix = self._get_local_key_name_prefix()
            if prefix:
                key_prefix += prefix
        else:
            key_prefix = prefix
        return key_prefix

    def _get_local_key_name_prefix(self):
        return self._get_datastore_key_prefix() + self.DATASTORE_NAME_SEPARATOR

    def _get_key_name_with_prefix(self, name):
        return self._get_datastore_key_prefix() + self.DATASTORE_NAME_SEPARATOR + name

    def _get_datastore_key_prefix(self):
        return "%s.%s" % (self._pack_name, self._class_name)
