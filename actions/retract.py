"""Retract copies of one message from many mailboxes (see actions/retract.yaml)."""
import pack_lib  # noqa: F401  (puts the pack's lib/ on sys.path; must come first)
from retraction_action import execute
from st2common.runners.base_action import Action


class RetractAction(Action):
    def run(self, **params):
        return execute(self.config, params, self.logger)
