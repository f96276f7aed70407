"""What both Cloudflare sensors share: a PollingSensor around one `retraction.verdicts.poll`
object. Not a sensor itself (no metadata names it); the sensor modules subclass it.

Dispatch. `sensor_service.dispatch` returns None both when StackStorm published the trigger
and when its TriggerDispatcherService dropped the payload as invalid (with only a warning in
this sensor's log), so a dropped payload used to be counted as dispatched and remembered as
handled: lost without a trace. Each payload is now checked first, by StackStorm's own code:
- where the sensor has StackStorm's database (it does in StackStorm's sensor container), with
  `validate_trigger_payload`, the function the dispatcher calls: the trigger type as StackStorm
  registered it, its payload_schema and StackStorm's validator (a trigger type registered by
  an older version of this pack, or not registered at all, is caught too);
- without a database (unit tests with st2tests' mock sensor service), with StackStorm's
  `st2common.util.schema.validate` and CustomValidator, called as validate_trigger_payload
  calls it, against the payload_schema in the sensor's own metadata file.
A refused payload raises `PayloadRefused`: the poll counts it as `dropped`, logs StackStorm's
reason as an error and does not remember it, so it is offered again next poll (see
retraction.verdicts.poll). With `[system] validate_trigger_payload = False` StackStorm
dispatches invalid payloads anyway, and so does this check.

Datastore. StackStorm's `list_values` returns one page (`limit` defaults to
`api.max_page_size`, 100 keys); the poll needs every key of a prefix (one per hour of the
lookback window), so `SensorDatastore` reads page after page.
"""
import os

import pack_lib  # noqa: F401  (puts the pack's lib/ on sys.path)

from st2reactor.sensor.base import PollingSensor

from retraction.verdicts.poll import DEFAULT_POLL_INTERVAL, PayloadRefused

PACK = "email_retraction"
SENSORS_DIR = os.path.dirname(os.path.abspath(__file__))
MAX_REASON = 500


class VerdictPollingSensor(PollingSensor):
    make_poll = None  # retraction.verdicts.poll.verdict_poll or submission_poll
    metadata_file = None  # the sensor's metadata (its trigger types), beside this file

    def __init__(self, sensor_service, config=None, poll_interval=DEFAULT_POLL_INTERVAL):
        super(VerdictPollingSensor, self).__init__(sensor_service=sensor_service,
                                                   config=config, poll_interval=poll_interval)
        self._log = sensor_service.get_logger(name=self.__class__.__name__)
        self._poll = None
        self._schemas = None

    def setup(self):
        self._poll = type(self).make_poll(self.config, SensorDatastore(self.sensor_service),
                                          self._dispatch, log=self._log,
                                          poll_interval=self.get_poll_interval())

    def poll(self):
        if self._poll is not None:
            self._poll.poll()

    def _dispatch(self, trigger, payload, trace_tag):
        ref = "%s.%s" % (PACK, trigger)
        reason = self.refusal(ref, payload)
        if reason is not None:
            raise PayloadRefused(reason)
        self.sensor_service.dispatch(trigger=ref, payload=payload, trace_tag=trace_tag)

    def refusal(self, ref, payload):
        """Why StackStorm's dispatch would drop `payload` for trigger type `ref`, or None."""
        if database_connected():
            return registered_refusal(ref, payload)
        schemas = self._metadata_schemas()
        if ref not in schemas:
            return "trigger type %s is not in %s" % (ref, self.metadata_file)
        return schema_refusal(schemas[ref], payload)

    def _metadata_schemas(self):
        if self._schemas is None:
            import yaml
            with open(os.path.join(SENSORS_DIR, self.metadata_file)) as handle:
                metadata = yaml.safe_load(handle) or {}
            self._schemas = {"%s.%s" % (PACK, t["name"]): t.get("payload_schema") or {}
                             for t in metadata.get("trigger_types") or []}
        return self._schemas

    def cleanup(self):
        if self._poll is not None:
            self._poll.close()

    def add_trigger(self, trigger):
        pass

    def update_trigger(self, trigger):
        pass

    def remove_trigger(self, trigger):
        pass


def database_connected():
    """Whether StackStorm's database connection is set up in this process (the sensor
    container's wrapper sets it up before it loads the sensor)."""
    from mongoengine.connection import ConnectionFailure, get_db
    try:
        get_db()
    except ConnectionFailure:
        return False
    return True


def registered_refusal(ref, payload):
    """What StackStorm's TriggerDispatcherService decides, by its own function: None when it
    would publish the payload, else the reason it would drop it."""
    from oslo_config import cfg
    from st2common.validators.api.reactor import validate_trigger_payload
    try:
        validate_trigger_payload(trigger_type_ref=ref, payload=payload,
                                 throw_on_inexistent_trigger=True)
    except Exception as exc:  # the dispatcher drops the payload on any exception
        if not cfg.CONF.system.validate_trigger_payload:
            return None  # it only warns, and publishes
        return describe(exc)
    return None


def schema_refusal(schema, payload):
    """StackStorm's validation of a trigger payload (validate_trigger_payload's call) against
    `schema`: None, or why it fails."""
    if not schema:
        return None  # a trigger type without payload_schema is not validated
    from st2common.util import schema as util_schema
    try:
        util_schema.validate(instance=payload, schema=schema, cls=util_schema.CustomValidator,
                             use_default=True, allow_default_none=True)
    except Exception as exc:
        return describe(exc)
    return None


def describe(exc):
    """A validation error in one line: jsonschema's message and where (its str() carries the
    whole schema and payload)."""
    message = getattr(exc, "message", None) or str(exc)
    path = "/".join(str(part) for part in (getattr(exc, "path", None) or ()))
    text = "%s%s: %s" % (type(exc).__name__, (" at " + path) if path else "", message)
    return text if len(text) <= MAX_REASON else text[:MAX_REASON - 3] + "..."


class SensorDatastore(object):
    """The sensor service's datastore methods as retraction.verdicts.poll uses them, with a
    `list_values` that returns every key of the prefix: StackStorm's returns one page, so the
    pages are read by `offset` until one brings no new key (a store that ignores `offset`,
    as st2tests' mock datastore does, then stops after one repeated page)."""

    MAX_PAGES = 10000

    def __init__(self, sensor_service):
        self._service = sensor_service

    def get_value(self, name, local=True):
        return self._service.get_value(name, local=local)

    def set_value(self, name, value, local=True):
        return self._service.set_value(name, value, local=local)

    def delete_value(self, name, local=True):
        return self._service.delete_value(name, local=local)

    def list_values(self, local=True, prefix=None):
        found, names, offset = [], set(), 0
        for _ in range(self.MAX_PAGES):
            page = self._service.list_values(local=local, prefix=prefix, offset=offset) or []
            fresh = [item for item in page if item.name not in names]
            if not fresh:
                break
            found.extend(fresh)
            names.update(item.name for item in fresh)
            offset += len(page)
        return found
