"""The service object handed to sensors, as in
``st2reactor.container.sensor_wrapper.SensorService``.

Only the service is provided; dispatching to the message bus belongs to StackStorm.
"""

import logging

from st2common.constants.keyvalue import SYSTEM_SCOPE

__all__ = ["SensorService"]


class SensorService(object):
    """Exposes dispatch, logging and the datastore to a sensor instance."""

    def __init__(self, sensor_wrapper):
        self._sensor_wrapper = sensor_wrapper
        self._logger = logging.getLogger(
            "SensorWrapper.%s.%s" % (sensor_wrapper._pack, sensor_wrapper._class_name)
        )
        self._datastore_service = None

    @property
    def datastore_service(self):
        if not self._datastore_service:
            raise NotImplementedError("the sensor datastore service needs the StackStorm API")
        return self._datastore_service

    def get_logger(self, name):
        logger = logging.getLogger("%s.%s" % (self._logger.name, name))
        logger.propagate = True
        return logger

    def dispatch(self, trigger, payload=None, trace_tag=None):
        raise NotImplementedError("dispatch() needs the StackStorm message bus")

    def dispatch_with_context(self, trigger, payload=None, trace_context=None):
        raise NotImplementedError("dispatch_with_context() needs the StackStorm message bus")

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
