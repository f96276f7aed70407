"""Polls Cloudflare Email Security for delivered mail with a verdict the config lists and
dispatches `email_retraction.verdict` (new) and `email_retraction.verdict_changed`
(post-delivery: the disposition changed). The logic is `retraction.verdicts.poll.VerdictPoll`.
Run one instance (see the README: sensor partitioning in StackStorm HA).
"""
import pack_lib  # noqa: F401  (puts the pack's lib/ on sys.path)

from st2reactor.sensor.base import PollingSensor

from retraction.verdicts.poll import DEFAULT_POLL_INTERVAL, verdict_poll

PACK = "email_retraction"


class VerdictSensor(PollingSensor):
    def __init__(self, sensor_service, config=None, poll_interval=DEFAULT_POLL_INTERVAL):
        super(VerdictSensor, self).__init__(sensor_service=sensor_service, config=config,
                                            poll_interval=poll_interval)
        self._log = sensor_service.get_logger(name=self.__class__.__name__)
        self._poll = None

    def setup(self):
        self._poll = verdict_poll(self.config, self.sensor_service, self._dispatch,
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
