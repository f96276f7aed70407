"""First step of `retract_campaign`: validate the request and split its recipients into
chunks (see actions/split_recipients.yaml)."""
import pack_lib  # noqa: F401  (puts the pack's lib/ on sys.path; must come first)
from retraction_action import split
from st2common.runners.base_action import Action


class SplitRecipientsAction(Action):
    def run(self, **params):
        return split(self.config, params, self.logger)
