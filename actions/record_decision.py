"""Keep an analyst's answer to an approval inquiry in the ledger (see
actions/record_decision.yaml)."""
import pack_lib  # noqa: F401  (puts the pack's lib/ on sys.path; must come first)
from retraction_action import record_decision
from st2common.runners.base_action import Action


class RecordDecisionAction(Action):
    def run(self, **params):
        return record_decision(self.config, params, self.logger)
