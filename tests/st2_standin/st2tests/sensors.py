"""Base class of sensor tests, as in ``st2tests.sensors``."""

from st2tests.mocks.sensor import MockSensorService
from st2tests.mocks.sensor import MockSensorWrapper
from st2tests.pack_resource import BasePackResourceTestCase

__all__ = ["BaseSensorTestCase"]


class BaseSensorTestCase(BasePackResourceTestCase):
    """Set ``sensor_cls``; dispatched triggers are recorded on the mock sensor service.

    As in StackStorm, the datastore namespace is ``tests.<ClassName>:``.
    """

    sensor_cls = None

    def setUp(self):
        super(BaseSensorTestCase, self).setUp()
        class_name = self.sensor_cls.__name__
        sensor_wrapper = MockSensorWrapper(pack="tests", class_name=class_name)
        self.sensor_service = MockSensorService(sensor_wrapper=sensor_wrapper)

    def get_sensor_instance(self, config=None, poll_interval=None):
        kwargs = {"sensor_service": self.sensor_service}
        if config:
            kwargs["config"] = config
        if poll_interval is not None:
            kwargs["poll_interval"] = poll_interval
        return self.sensor_cls(**kwargs)  # pylint: disable=not-callable

    def get_dispatched_triggers(self):
        return self.sensor_service.dispatched_triggers

    def get_last_dispatched_trigger(self):
        return self.sensor_service.dispatched_triggers[-1]

    def assertTriggerDispatched(self, trigger, payload=None, trace_context=None):
        """Pass if a trigger of that name (and payload / trace context, when given) was
        dispatched; raise AssertionError otherwise."""
        for item in self.get_dispatched_triggers():
            trigger_matches = item["trigger"] == trigger
            payload_matches = (item["payload"] == payload) if payload else True
            trace_matches = (item["trace_context"] == trace_context) if trace_context else True
            if trigger_matches and payload_matches and trace_matches:
                return True

        raise AssertionError('Trigger "%s" hasn\'t been dispatched' % (trigger))
