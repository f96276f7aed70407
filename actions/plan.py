"""Decide what the automatic flow does with one verdict (see actions/plan.yaml)."""
import pack_lib  # noqa: F401  (puts the pack's lib/ on sys.path; must come first)
from retraction.automation import plan_verdict
from retraction.bootstrap import build
from retraction.config import ConfigError
from retraction.inert import inert_values
from retraction.validation import InvalidRequest
from st2common.runners.base_action import Action


class PlanAction(Action):
    def run(self, **params):
        # auto_retract publishes this result, error included, and Orquesta evaluates every
        # string it publishes: nothing in it may hold a template delimiter (retraction.inert).
        ok, result = self._plan(params)
        return ok, inert_values(result)

    def _plan(self, params):
        try:
            app = build(self.config)  # settings and policy only: nothing is connected here
        except ConfigError as exc:
            return False, {"act": False, "error": str(exc), "field": exc.key}
        try:
            plan = plan_verdict(app.policy, params)
        except InvalidRequest as exc:
            return False, {"act": False, "error": str(exc), "field": exc.field}
        finally:
            app.close()
        self.logger.info("plan for %s: %s", plan.message_id, plan.why)
        return True, plan.to_dict()
