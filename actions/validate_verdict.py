"""Check a verdict POSTed to the webhook (see actions/validate_verdict.yaml)."""
import pack_lib  # noqa: F401  (puts the pack's lib/ on sys.path; must come first)
from retraction.automation import InvalidVerdict, verdict_from_body
from retraction.config import ConfigError, load_settings
from retraction.inert import inert_values
from st2common.runners.base_action import Action


class ValidateVerdictAction(Action):
    def run(self, body=None):
        # intake_verdict publishes this result, error included, and Orquesta evaluates every
        # string it publishes: nothing in it may hold a template delimiter (retraction.inert).
        ok, result = self._validate(body)
        return ok, inert_values(result)

    def _validate(self, body):
        try:
            verdict = verdict_from_body(body, load_settings(self.config))
        except InvalidVerdict as exc:
            self.logger.warning("%s", exc)
            return False, {"error": str(exc), "field": exc.field,
                           "problems": [{"field": f, "problem": p} for f, p in exc.problems]}
        except ConfigError as exc:
            return False, {"error": str(exc), "field": exc.key, "problems": []}
        return True, verdict
