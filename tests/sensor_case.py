"""What the Cloudflare sensor tests share: the sandbox, a config pointing at it, payloads
checked against their trigger schemas, the sensor's log as text, and the rule that the API
token never reaches a log line. A mixin for BaseSensorTestCase classes."""
import os

import pytest

import conformance
from conftest import PACK_ROOT


def trigger_schemas(sensor_yaml):
    meta, _ = conformance.load_yaml(os.path.join(PACK_ROOT, "sensors", sensor_yaml))
    return {"email_retraction." + t["name"]: t["payload_schema"] for t in meta["trigger_types"]}


class CloudflareSensorCase(object):
    schemas = {}  # trigger ref -> payload_schema, from the sensor's metadata

    @pytest.fixture(autouse=True)
    def _sandbox(self, sandbox):
        self.sandbox = sandbox
        self.tenant = sandbox.tenant

    def tearDown(self):
        # The API token is a secret: whatever happened, it is in no log line.
        token = self.sandbox.credentials()["cloudflare"]["api_token"]
        self.assertNotIn(token, self.logged())
        super(CloudflareSensorCase, self).tearDown()

    def config(self, **verdicts):
        config = self.sandbox.pack_config()
        config["verdicts"] = dict(config.get("verdicts") or {}, **verdicts)
        return config

    def start_sensor(self, config):
        sensor = self.get_sensor_instance(config=config, poll_interval=60)
        sensor.setup()
        return sensor

    def checked_dispatches(self):
        """(trigger, payload) dispatched so far, each valid against its trigger's schema."""
        out = []
        for item in self.get_dispatched_triggers():
            self.assertIn(item["trigger"], self.schemas)
            errors = conformance.payload_errors(self.schemas[item["trigger"]], item["payload"])
            self.assertEqual(errors, [], item["payload"])
            out.append((item["trigger"], item["payload"]))
        return out

    def logged(self, level=None):
        """What was logged (at a level), rendered as logging would, plus the raw calls."""
        lines = []
        for name, args, kwargs in self.sensor_service.get_logger("x").mock_calls:
            if level is None or name == level:
                text = args[0] % args[1:] if len(args) > 1 else str(args[0] if args else "")
                lines.append("%s: %s %r" % (name, text, (args, kwargs)))
        return "\n".join(lines)
