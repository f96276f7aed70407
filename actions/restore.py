"""Move copies of one message back to the inbox: the undo of a retraction."""
import pack_lib  # noqa: F401  (puts the pack's lib/ on sys.path; must come first)
from retraction_action import execute
from st2common.runners.base_action import Action


class RestoreAction(Action):
    def run(self, **params):
        return execute(self.config, params, self.logger, destination="inbox")
