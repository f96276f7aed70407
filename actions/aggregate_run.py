"""Last step of `retract_campaign`: finish a run from its outcomes in the ledger (see
actions/aggregate_run.yaml)."""
import pack_lib  # noqa: F401  (puts the pack's lib/ on sys.path; must come first)
from retraction_action import aggregate
from st2common.runners.base_action import Action


class AggregateRunAction(Action):
    def run(self, **params):
        return aggregate(self.config, params, self.logger)
