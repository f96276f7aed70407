"""In-memory datastore for pack tests, as in ``st2tests.mocks.datastore``."""

from st2common.constants.keyvalue import SYSTEM_SCOPE
from st2common.services.datastore import BaseDatastoreService

__all__ = ["KeyValuePair", "MockDatastoreService"]


class KeyValuePair(object):
    """The shape of ``st2client.models.keyvalue.KeyValuePair`` that pack code reads."""

    def __init__(self, name=None, value=None, scope=SYSTEM_SCOPE, ttl=None, secret=False):
        self.id = name
        self.name = name
        self.value = value
        self.scope = scope
        self.ttl = ttl
        self.secret = secret

    def __repr__(self):
        return "<KeyValuePair name=%s,value=%s>" % (self.name, self.value)


class MockDatastoreService(BaseDatastoreService):
    """Keeps values in a dict, with the key naming and value rules of the real service."""

    def __init__(self, logger, pack_name, class_name, api_username=None):
        super(MockDatastoreService, self).__init__(
            logger=logger, pack_name=pack_name, class_name=class_name
        )
        self._username = api_username or "admin"
        self._datastore_items = {}

    def get_user_info(self):
        return {
            "username": self._username,
            "rbac": {"is_admin": True, "enabled": True, "roles": ["admin"]},
            "authentication": {"method": "authentication token", "location": "header"},
        }

    def list_values(self, local=True, prefix=None):
        key_prefix = self._get_full_key_prefix(local=local, prefix=prefix)
        if not key_prefix:
            return list(self._datastore_items.values())
        return [kvp for name, kvp in self._datastore_items.items() if name.startswith(key_prefix)]

    def get_value(self, name, local=True, scope=SYSTEM_SCOPE, decrypt=False):
        self._check_scope(scope)
        name = self._get_full_key_name(name=name, local=local)
        kvp = self._datastore_items.get(name)
        return kvp.value if kvp is not None else None

    def set_value(self, name, value, ttl=None, local=True, scope=SYSTEM_SCOPE, encrypt=False):
        self._check_scope(scope)
        name = self._get_full_key_name(name=name, local=local)
        if ttl:
            self._logger.warning("MockDatastoreService is not able to expire keys based on ttl.")
        # Production stores str(value): what is read back is always a string.
        self._datastore_items[name] = KeyValuePair(
            name=name, value=str(value), scope=scope, ttl=ttl or None, secret=bool(encrypt)
        )
        return True

    def delete_value(self, name, local=True, scope=SYSTEM_SCOPE):
        self._check_scope(scope)
        name = self._get_full_key_name(name=name, local=local)
        if name not in self._datastore_items:
            return False
        del self._datastore_items[name]
        return True
