"""What both Cloudflare sensors share: a PollingSensor around one `retraction.verdicts.poll`
object. Not a sensor itself (no metadata names it); the sensor modules subclass it."""
import pack_lib  # noqa: F401  (puts the pack's lib/ on sys.path)

from st2reactor.sensor.base import PollingSensor

from retraction.verdicts.poll import DEFAULT_POLL_INTERVAL

PACK = "email_retraction"


class VerdictPollingSensor(PollingSensor):
    make_poll = None  # retraction.verdicts.poll.verdict_poll or submission_poll

    def __init__(self, sensor_service, config=None, poll_interval=DEFAULT_POLL_INTERVAL):
        super(VerdictPollingSensor, self).__init__(sensor_service=sensor_service,
                                                   config=config, poll_interval=poll_interval)
        self._log = sensor_service.get_logger(name=self.__class__.__name__)
        self._poll = None

    def setup(self):
        self._poll = type(self).make_poll(self.config, self.sensor_service, self._dispatch,
                                          log=self._log, poll_interval=self.get_poll_interval())

    def poll(self):
        if self._poll is not None:
            self._poll.poll()

    def _dispatch(self, trigger, payload, trace_tag):
        self.sensor_service.dispatch(trigger="%s.%s" % (PACK, trigger), payload=payload,
                                     trace_tag=trace_tag)

    def cleanup(self):
        if self._poll is not None:
            self._poll.close()

    def add_trigger(self, trigger):
        pass

    def update_trigger(self, trigger):
        pass

    def remove_trigger(self, trigger):
        pass
