"""Polls Cloudflare Email Security for delivered mail with a verdict the config lists and
dispatches `email_retraction.verdict` (new) and `email_retraction.verdict_changed`
(post-delivery: the disposition changed). The logic is `retraction.verdicts.poll.VerdictPoll`.
Run one instance (see the README: sensor partitioning in StackStorm HA).
"""
import pack_lib  # noqa: F401  (puts the pack's lib/ on sys.path; must come first)

from retraction.verdicts.poll import verdict_poll
from verdict_polling import VerdictPollingSensor


class VerdictSensor(VerdictPollingSensor):
    make_poll = staticmethod(verdict_poll)
    metadata_file = "verdict_sensor.yaml"
