"""View details: the outcome rows of a window, newest first, a page at a time (see
actions/retraction_details.yaml)."""
import pack_lib  # noqa: F401  (puts the pack's lib/ on sys.path; must come first)
from retraction_action import details
from st2common.runners.base_action import Action


class RetractionDetailsAction(Action):
    def run(self, **params):
        return details(self.config, params, self.logger)
