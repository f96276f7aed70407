"""Sensor base classes, as in ``st2reactor.sensor.base``."""

import abc
import time

__all__ = ["Sensor", "PollingSensor"]


class BaseSensor(abc.ABC):
    """Base sensor class - not to be instantiated directly."""

    def __init__(self, sensor_service, config=None):
        self._sensor_service = sensor_service  # deprecated alias, kept as StackStorm does
        self.sensor_service = sensor_service
        self._config = config or {}  # deprecated alias, kept as StackStorm does
        self.config = self._config

    @abc.abstractmethod
    def setup(self):
        """Run the sensor initialization / setup code (if any)."""

    @abc.abstractmethod
    def run(self):
        """Run the sensor."""

    @abc.abstractmethod
    def cleanup(self):
        """Run the sensor cleanup code (if any)."""

    @abc.abstractmethod
    def add_trigger(self, trigger):
        """Runs when a trigger is created."""

    @abc.abstractmethod
    def update_trigger(self, trigger):
        """Runs when a trigger is updated."""

    @abc.abstractmethod
    def remove_trigger(self, trigger):
        """Runs when a trigger is deleted."""


class Sensor(BaseSensor):
    """Base class of passive sensors."""

    @abc.abstractmethod
    def run(self):
        pass


class PollingSensor(BaseSensor):
    """Base class of active sensors, which poll a third-party system periodically."""

    def __init__(self, sensor_service, config=None, poll_interval=5):
        super(PollingSensor, self).__init__(sensor_service=sensor_service, config=config)
        self._poll_interval = poll_interval

    @abc.abstractmethod
    def poll(self):
        """Poll the third-party system for new information."""

    def run(self):
        # StackStorm sleeps with eventlet (monkey-patched); plain time.sleep is the same here.
        while True:
            self.poll()
            time.sleep(self._poll_interval)

    def get_poll_interval(self):
        return self._poll_interval

    def set_poll_interval(self, poll_interval):
        self._poll_interval = poll_interval
