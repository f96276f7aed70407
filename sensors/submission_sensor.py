"""Polls Cloudflare Email Security for user phish reports confirmed in a disposition the config
lists (`verdicts.submission_dispositions`) and dispatches `email_retraction.phish_submission`
once per report, over every delivered recipient of the reported message. The logic is
`retraction.verdicts.poll.SubmissionPoll`. Run one instance (StackStorm HA: partitioning).
"""
import pack_lib  # noqa: F401  (puts the pack's lib/ on sys.path; must come first)

from retraction.verdicts.poll import submission_poll
from verdict_polling import VerdictPollingSensor


class SubmissionSensor(VerdictPollingSensor):
    make_poll = staticmethod(submission_poll)
    metadata_file = "submission_sensor.yaml"
