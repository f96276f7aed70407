"""The "Retractions" card: the metric record of a window, rendered (see
actions/retraction_metrics.yaml)."""
import pack_lib  # noqa: F401  (puts the pack's lib/ on sys.path; must come first)
from retraction_action import metrics
from st2common.runners.base_action import Action


class RetractionMetricsAction(Action):
    def run(self, **params):
        return metrics(self.config, params, self.logger)
