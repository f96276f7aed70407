"""What the Cloudflare sensor tests share: the sandbox, a config pointing at it, payloads
checked against their trigger schemas by StackStorm's own validator, the sensor's log as text,
and the rule that the API token never reaches a log line. A mixin for BaseSensorTestCase
classes."""
import os

import jsonschema
import pytest
import yaml

from conftest import PACK_ROOT
from st2common.util import schema as util_schema


def trigger_schemas(sensor_yaml):
    with open(os.path.join(PACK_ROOT, "sensors", sensor_yaml), encoding="utf-8") as handle:
        meta = yaml.safe_load(handle)
    return {"email_retraction." + t["name"]: t["payload_schema"] for t in meta["trigger_types"]}


def payload_errors(schema, payload):
    """Why StackStorm would drop this payload ([] when it would not): the check the sensor
    container makes on dispatch (st2common.validators.api.reactor.validate_trigger_payload,
    which StackStorm's MockSensorService does not call), on the trigger's payload_schema."""
    try:
        util_schema.validate(instance=payload, schema=schema, cls=util_schema.CustomValidator,
                             use_default=True, allow_default_none=True)
    except jsonschema.ValidationError as error:
        path = ".".join(str(p) for p in error.path) or "(top)"
        return ["%s: %s" % (path, error.message)]
    return []


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
            errors = payload_errors(self.schemas[item["trigger"]], item["payload"])
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
