"""The sensor container's part: the pack's sensor classes polled with a sensor service that
records what they dispatch, as StackStorm's sensor container and message bus would carry it.

StackStorm validates a dispatched payload against its trigger type's payload_schema and drops
an invalid one with only a log line. Here a drop is loud: `SensorDrive.poll` raises
PayloadDropped, so a sensor that would lose a verdict in production fails the test or demo.
"""
from tools.st2local.pack import Pack  # first: puts StackStorm (or its stand-in) on sys.path

from st2tests.mocks.sensor import MockSensorService, MockSensorWrapper

__all__ = ["PayloadDropped", "SensorDrive", "SensorService"]

SENSORS = ("verdict_sensor", "submission_sensor")


class PayloadDropped(AssertionError):
    """A dispatched payload StackStorm would drop (it does not match the payload_schema)."""


class SensorService(MockSensorService):
    """One sensor's service: st2tests' MockSensorService (in-memory datastore namespaced
    `<pack>.<SensorClass>:`, every dispatch recorded in `dispatched_triggers`) that checks each
    payload as StackStorm does (`dropped`: what it would drop) and hands the valid ones to a
    rule engine when one is attached (`deliver()`)."""

    def __init__(self, class_name, pack=None, rule_engine=None):
        self.pack = pack or Pack.default()
        super(SensorService, self).__init__(
            sensor_wrapper=MockSensorWrapper(pack=self.pack.ref, class_name=class_name))
        self.rule_engine = rule_engine
        self.pending = []  # valid dispatches not yet delivered
        self.dropped = []  # (dispatch, errors)

    def dispatch_with_context(self, trigger, payload=None, trace_context=None):
        item = super(SensorService, self).dispatch_with_context(
            trigger=trigger, payload=payload, trace_context=trace_context)
        errors = self.pack.payload_errors(trigger, payload)
        if errors:
            self.dropped.append((item, errors))
        else:
            self.pending.append(item)
        return item

    def deliver(self):
        """Hand the pending dispatches to the rule engine; returns its enforcements."""
        items, self.pending = self.pending, []
        done = []
        for item in items:
            done.extend(self.rule_engine.dispatch(item["trigger"], item["payload"]))
        return done


class SensorDrive(object):
    """Polls the pack's sensors (verdict_sensor and submission_sensor by default) with the
    pack config. `service`: one sensor service for all of them (a test case's
    `self.sensor_service`, whose dispatches the test inspects), else a SensorService each, as
    the sensor container gives every sensor its own."""

    def __init__(self, config, service=None, pack=None, sensors=SENSORS, poll_interval=60):
        self.pack = pack or Pack.default()
        self.config = config
        self.sensors = []
        for name in sensors:
            cls = self.pack.sensor_class(name)
            own = service if service is not None else SensorService(cls.__name__, self.pack)
            sensor = cls(sensor_service=own, config=config, poll_interval=poll_interval)
            sensor.setup()
            self.sensors.append((name, sensor, own))
        self._seen = {}

    def poll(self):
        """Poll every sensor once; the (trigger, payload) pairs dispatched by this poll, in
        order. Raises PayloadDropped for a payload StackStorm would drop."""
        found = []
        for name, sensor, service in self.sensors:
            sensor.poll()
            records = service.dispatched_triggers
            new = records[self._seen.get(id(service), 0):]
            self._seen[id(service)] = len(records)
            for item in new:
                errors = self.pack.payload_errors(item["trigger"], item["payload"])
                if errors:
                    raise PayloadDropped("%s dispatched a %s payload StackStorm would drop: %s"
                                         % (name, item["trigger"], errors))
                found.append((item["trigger"], item["payload"]))
        return found

    def cleanup(self):
        for _, sensor, _ in self.sensors:
            sensor.cleanup()
