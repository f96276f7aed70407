"""The service object handed to Python actions, as in
``st2common.runners.python_action_wrapper.ActionService``.

Only the service is provided; the wrapper process itself belongs to StackStorm.
"""

from st2common.constants.keyvalue import SYSTEM_SCOPE

__all__ = ["ActionService"]


class ActionService(object):
    """Exposes the datastore to an action instance."""

    def __init__(self, action_wrapper):
        self._action_wrapper = action_wrapper
        self._datastore_service = None

    @property
    def datastore_service(self):
        if not self._datastore_service:
            raise NotImplementedError("the action datastore service needs the StackStorm API")
        return self._datastore_service

    def get_user_info(self):
        return self.datastore_service.get_user_info()

    def list_values(self, local=True, prefix=None):
        return self.datastore_service.list_values(local=local, prefix=prefix)

    def get_value(self, name, local=True, scope=SYSTEM_SCOPE, decrypt=False):
        return self.datastore_service.get_value(
            name=name, local=local, scope=scope, decrypt=decrypt
        )

    def set_value(self, name, value, ttl=None, local=True, scope=SYSTEM_SCOPE, encrypt=False):
        return self.datastore_service.set_value(
            name=name, value=value, ttl=ttl, local=local, scope=scope, encrypt=encrypt
        )

    def delete_value(self, name, local=True, scope=SYSTEM_SCOPE):
        return self.datastore_service.delete_value(name=name, local=local, scope=scope)
