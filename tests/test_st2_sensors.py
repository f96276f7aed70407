"""The pack's sensors run by StackStorm's sensor machinery, against the sandbox's Cloudflare API.

Each sensor is started as StackStorm's sensor container starts it (`Stack.sensor_wrapper`:
st2reactor's `SensorWrapper`, so the class is loaded by StackStorm's loader, the config by its
ContentPackConfigLoader, and the sensor gets StackStorm's `SensorService`):
- `dispatch` is StackStorm's TriggerDispatcherService (payload validation on, as in
  production), delivered in-process to StackStorm's rules engine (`Stack`);
- the datastore is StackStorm's `SensorDatastoreService`: it creates a service token in
  StackStorm's database and calls StackStorm's API (st2api's own WSGI app, auth on, served
  from a green thread by `Stack.serve_api`), so the sensors' checkpoints live in StackStorm's
  datastore (mongomock).
A restart is what the container does: `cleanup()`, then a new wrapper (new sensor instance,
new SensorService) over the same datastore. Trigger instances, rule enforcements and
executions are read from StackStorm's database; retractions from the sandbox.

What StackStorm showed (each has its test here):
- `sensor_service.dispatch` returns None whether StackStorm published the trigger or dropped
  the payload as invalid (only a warning in the sensor's log): the pack counted a dropped
  payload as dispatched and remembered the verdict as handled, so it was lost. Pack 0.1.0 and
  0.1.1 shipped trigger types with `required: [...]` lists, which StackStorm's validator
  refuses for every payload: an installation that registered them lost every verdict so. The
  sensors now check each payload with StackStorm's own validation first; a refused one is
  counted as `dropped`, logged as an error with StackStorm's reason, not remembered, and
  offered again every poll until it goes through (here: once the trigger types are registered
  again). No payload the pack's builders emit from Cloudflare rows is refused by the current
  trigger types: rows without a valid recipient or with an unknown disposition are refused as
  malformed before a payload exists; `test_stackstorm_and_the_sensors_refuse_the_same_payloads`
  checks the check against StackStorm's dispatch with payloads the schemas refuse.
- StackStorm's `list_values` returns one page of keys (`api.max_page_size`, 100): with a
  lookback over 100 hours the verdict sensor's seen-set (one key per hour) came back cut after
  a restart, and the re-poll dispatched the forgotten verdicts a second time (with
  `api.max_page_size` lowered to 10, already within the default 24 h lookback). The sensors
  read every page now (`verdict_polling.SensorDatastore`).
- A lone UTF-16 surrogate in Cloudflare's JSON (a subject cut inside an emoji) passes
  StackStorm's payload validation, but its rules engine cannot store the trigger instance
  (orjson refuses the string), so no rule ran and the verdict was lost. The sensors' rows now
  carry U+FFFD in its place (retraction.verdicts.rows.scalar_text).
"""
import copy
import logging
import os
import time
from collections import Counter

import eventlet
import mock
import pytest
import requests
import yaml

import verdict_polling

pytest_plugins = ["st2_stack"]

PACK = "email_retraction"
PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VERDICT = "email_retraction.verdict"
PHISH = "email_retraction.phish_submission"
AUTO_RETRACT = "email_retraction.auto_retract"
VERDICT_RULE = "email_retraction.auto_retract_on_verdict"
DEADLINE = 300
# basic.yaml's verdicts the default config (MALICIOUS, SUSPICIOUS, SPOOF) dispatches.
BASIC_WANTED = ("<abc@evil.example>", "<o'brien+promo@evil.example>")


# -- StackStorm -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def st2_api(st2):
    url = st2.serve_api()
    yield url
    st2.stop_api()


@pytest.fixture
def sensors(st2, st2_api, st2_tenant):
    """A fresh tenant and no sensor state in StackStorm's datastore; the sensors started
    during the test are stopped after it."""
    from st2common.persistence.keyvalue import KeyValuePair
    for kv in KeyValuePair.get_all():
        if kv.name.startswith(PACK + "."):
            KeyValuePair.delete(kv)
    started = []
    yield started
    for sensor in started:
        sensor.stop()


class Recorder(logging.Handler):
    def __init__(self):
        super(Recorder, self).__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def messages(self, level):
        return [r.getMessage() for r in self.records if r.levelno == level]


class Sensor(object):
    """One sensor process as the container runs it; its log recorded."""

    def __init__(self, st2, class_name, started):
        self.wrapper = st2.sensor_wrapper("%s.%s" % (PACK, class_name))
        self.instance = self.wrapper._sensor_instance
        self.log = Recorder()
        self.instance._log.addHandler(self.log)
        self.instance._log.setLevel(logging.INFO)  # the sensor container logs INFO
        self.instance.setup()
        self.stopped = False
        started.append(self)

    def poll(self):
        """One poll (what the sensor's `poll()` runs each interval), returning its counts
        (None: the poll failed and was logged; a poll never raises)."""
        counts = self.instance._poll.poll()
        eventlet.sleep(0)  # the rules engine's deliveries of the last dispatches
        return counts

    def stop(self):
        """What the container's stop does to the sensor (its cleanup)."""
        if not self.stopped:
            self.stopped = True
            self.instance.cleanup()
            self.instance._log.removeHandler(self.log)


def add_verdict(box, message_id, disposition="SPOOF", to=("bob@corp.example",), **spec):
    body = dict(spec, message_id=message_id, final_disposition=disposition, to=list(to))
    return box.control("POST", "/verdicts", body)


def trigger_instances(st2, trigger, before=()):
    """The trigger instances of `trigger` in StackStorm's database, but those in `before`."""
    return [t for t in st2.trigger_instances(trigger) if str(t.id) not in before]


def instance_ids(st2):
    return {str(t.id) for t in st2.trigger_instances()}


def executions(st2, source_ids):
    """{source_id: [auto_retract executions]} once every row has one and all have ended."""
    deadline = time.monotonic() + DEADLINE
    while True:
        found = {}
        for execution in st2.executions_of(AUTO_RETRACT):
            found.setdefault(execution.parameters.get("source_id"), []).append(execution)
        missing = set(source_ids) - set(found)
        if not missing:
            break
        if time.monotonic() > deadline:
            raise AssertionError("no auto_retract execution for %s" % sorted(missing))
        eventlet.sleep(0.05)
    return {sid: [st2.wait(str(e.id), timeout=DEADLINE) for e in found[sid]]
            for sid in source_ids}


def datastore(class_name="VerdictSensor"):
    """The sensor's keys as StackStorm's datastore holds them (KeyValuePair, mongomock)."""
    from st2common.persistence.keyvalue import KeyValuePair
    prefix = "%s.%s:" % (PACK, class_name)
    return {kv.name[len(prefix):]: kv.value for kv in KeyValuePair.get_all()
            if kv.name.startswith(prefix)}


def set_rule_enabled(st2_api, ref, enabled):
    """`st2 rule enable|disable` through StackStorm's API, as a user with a token."""
    from st2client.client import Client
    from st2common.services.access import create_token
    client = Client(api_url=st2_api + "/v1", token=create_token("stanley").token)
    rule = client.rules.get_by_ref_or_id(ref)
    rule.enabled = enabled
    client.rules.update(rule)


def sensor_metadata(name):
    with open(os.path.join(PACK_ROOT, "sensors", name)) as handle:
        return yaml.safe_load(handle)


def as_released_in_0_1_1(trigger_type):
    """A trigger type as pack 0.1.0/0.1.1 shipped it: the same properties, `required` as a
    draft-4 list on the object (`git show 1509815:sensors/verdict_sensor.yaml`)."""
    trigger_type = copy.deepcopy(trigger_type)
    schema = trigger_type["payload_schema"]
    schema["required"] = [name for name, prop in schema["properties"].items()
                          if prop.pop("required", False)]
    return trigger_type


def register_trigger_types(metadata_file, trigger_types):
    """Trigger types registered as StackStorm's sensors registrar registers a sensor's
    (sensor_type_utils.create_trigger_types)."""
    from st2common.models.utils.sensor_type_utils import create_trigger_types
    return create_trigger_types([dict(t, pack=PACK, metadata_file=metadata_file)
                                 for t in trigger_types])


def register_sensors(st2):
    """`st2ctl reload --register-sensors` for this pack: the sensors and their trigger types."""
    from st2common.bootstrap.sensorsregistrar import SensorsRegistrar
    SensorsRegistrar(use_pack_cache=False, fail_on_failure=True).register_from_pack(
        os.path.join(st2.packs_dir, PACK))


# -- a restart in the middle of a paged stream ----------------------------------------------
def test_a_restart_in_the_middle_of_a_paged_stream_loses_none_and_repeats_none(
        st2, st2_api, st2_tenant, sensors, st2_config):
    box = st2_tenant
    st2_config["verdicts"]["per_page"] = 2
    # SPOOF and SUSPICIOUS verdicts run auto_retract, whose plan says "no action by policy"
    # (quick); basic's MALICIOUS one is retracted for real.
    st2_config["auto_retract"]["dispositions"].update(SPOOF="none", SUSPICIOUS="none")
    st2.reconfigure(st2_config)
    before = instance_ids(st2)
    stream = {}

    def arrive(tag, count):
        for i in range(count):
            row = add_verdict(box, "<stream-%s%02d@evil.example>" % (tag, i))
            stream[row["id"]] = row["message_id"]
        return [row_id for row_id in stream if stream[row_id].startswith("<stream-" + tag)]

    first = arrive("a", 4)
    a = Sensor(st2, "VerdictSensor", sensors)
    assert a.poll() == {"verdict": 6}  # pages of 2: the 4 and basic's two

    # More mail; the next poll fails on its 4th Cloudflare page (a 429, seeded), after the
    # first three: the 4 read again (the overlap) and the first of the new ones.
    second = arrive("b", 5)
    box.faults({"seed": 25, "cloudflare": {"rate_429": 0.3}})
    assert a.poll() is None
    assert box.control("GET", "/faults")["injected"]["cloudflare"] == {"429": 1}
    box.faults({}, clear=True)
    assert any("failed" in m and "429" in m for m in a.log.messages(logging.WARNING))
    done = Counter(t.payload["source_id"] for t in trigger_instances(st2, VERDICT, before))
    assert 0 < sum(done[row_id] for row_id in second) < len(second)  # in the middle of it

    # The container restarts the sensor: cleanup, a new process, the same datastore.
    a.stop()
    third = arrive("c", 2)
    b = Sensor(st2, "VerdictSensor", sensors)
    rest = len(second) + len(third) - sum(done[row_id] for row_id in second)
    assert b.poll() == {"verdict": rest}
    assert b.poll() == {}

    dispatched = trigger_instances(st2, VERDICT, before)
    by_message = Counter(t.payload["message_id"] for t in dispatched)
    assert by_message == Counter(list(stream.values()) + list(BASIC_WANTED))  # each once
    by_row = Counter(t.payload["source_id"] for t in dispatched)
    assert set(by_row.values()) == {1} and set(first + second + third) <= set(by_row)

    # The rule fired once per verdict and every workflow ended well.
    runs = executions(st2, list(by_row))
    assert {sid: len(found) for sid, found in runs.items()} == {sid: 1 for sid in by_row}
    assert {e.status for found in runs.values() for e in found} == {"succeeded"}
    enforced = Counter(str(e.trigger_instance_id) for e in st2.enforcements(VERDICT_RULE))
    assert all(enforced[str(t.id)] == 1 for t in dispatched)
    # End to end: basic's MALICIOUS message went to trash in both providers.
    folders = {c["mailbox"]: c["folder"] for c in box.copies("<abc@evil.example>")}
    assert folders["alice@corp.example"] == "trash"
    assert folders["carol@corp-mail.example"] == "trash"

    # The checkpoint and the seen-set live in StackStorm's datastore, written through its API
    # (which refuses a request without a token) with the service token the sensor's
    # SensorDatastoreService created in StackStorm's database.
    from st2common.persistence.auth import Token
    assert requests.get(st2_api + "/v1/keys", timeout=60).status_code == 401
    assert Token.query(user="sensor_service").count() >= 2  # one per sensor process
    keys = datastore()
    assert "verdicts.checkpoint" in keys
    seen = [k for k in keys if k.startswith("verdicts.seen.")]
    rows = {}
    for key in seen:
        rows.update(yaml.safe_load(keys[key])["rows"])
    assert set(first + second + third) <= set(rows)


# -- a payload StackStorm would drop --------------------------------------------------------
@pytest.fixture
def registered_as_0_1_1(st2):
    """StackStorm holds the sensors' trigger types as pack 0.1.1 registered them; the current
    ones are registered again after the test."""
    for name in ("verdict_sensor.yaml", "submission_sensor.yaml"):
        register_trigger_types("sensors/" + name, [
            as_released_in_0_1_1(t) for t in sensor_metadata(name)["trigger_types"]])
    yield
    register_sensors(st2)


def test_a_payload_stackstorm_would_drop_is_counted_dropped_and_held_until_it_goes_through(
        st2, st2_tenant, sensors, st2_config, registered_as_0_1_1):
    box = st2_tenant
    st2_config["auto_retract"]["dispositions"].update(MALICIOUS="none", SUSPICIOUS="none")
    st2.reconfigure(st2_config)
    held = add_verdict(box, "<held@evil.example>", "MALICIOUS", to=["alice@corp.example"])
    box.control("POST", "/submissions/s-1/confirm", {"disposition": "MALICIOUS"})
    before = instance_ids(st2)

    reports = Sensor(st2, "SubmissionSensor", sensors)
    assert reports.poll() == {"dropped": 1}
    a = Sensor(st2, "VerdictSensor", sensors)
    assert a.poll() == {"dropped": 3}  # held, and basic's two
    assert trigger_instances(st2, VERDICT, before) == []
    errors = a.log.messages(logging.ERROR)
    assert len(errors) == 3
    assert all("NOT dispatched" in m and "SchemaError" in m and "is not of type 'boolean'" in m
               for m in errors)
    assert any("<held@evil.example>" in m and held["id"] in m for m in errors)
    assert any("dropped 3" in m for m in a.log.messages(logging.WARNING))

    # Why the pack had to check: StackStorm's dispatch answers None whether it drops a payload
    # (here, under 0.1.1's trigger type) or publishes it (below, once registered again).
    payload = {"message_id": "<probe@evil.example>", "recipients": ["alice@corp.example"],
               "disposition": "MALICIOUS", "verdict_time": "2026-01-01T00:00:00.000Z",
               "source": "cloudflare", "source_id": "probe-1"}
    assert a.instance.sensor_service.dispatch(VERDICT, payload) is None
    eventlet.sleep(0)
    assert trigger_instances(st2, VERDICT, before) == []

    # Held across a restart: still refused, still not remembered.
    a.stop()
    b = Sensor(st2, "VerdictSensor", sensors)
    assert b.poll() == {"dropped": 3}
    assert trigger_instances(st2, VERDICT, before) == []
    assert len(b.log.messages(logging.ERROR)) == 3

    # The operator registers the pack's trigger types again: the held verdicts go through,
    # once each, and the rule runs auto_retract for them.
    register_sensors(st2)
    assert b.poll() == {"verdict": 3}
    assert b.poll() == {}
    assert reports.poll() == {"phish_submission": 1}
    assert reports.poll() == {}
    phish = trigger_instances(st2, PHISH, before)
    assert [t.payload["submission_id"] for t in phish] == ["s-1"]
    assert b.instance.sensor_service.dispatch(VERDICT, payload) is None
    eventlet.sleep(0)
    dispatched = trigger_instances(st2, VERDICT, before)
    assert Counter(t.payload["message_id"] for t in dispatched) == Counter(
        ["<held@evil.example>", "<probe@evil.example>"] + list(BASIC_WANTED))
    assert len(b.log.messages(logging.ERROR)) == 3  # nothing refused after registration
    assert sum("accepted now" in m for m in b.log.messages(logging.INFO)) == 3
    runs = executions(st2, [held["id"], phish[0].payload["source_id"]])
    assert len(runs[held["id"]]) == 1
    assert {e.status for found in runs.values() for e in found} == {"succeeded"}


def test_stackstorm_and_the_sensors_refuse_the_same_payloads(st2, st2_tenant, sensors,
                                                             st2_config):
    """Payloads a trigger type refuses, through StackStorm's dispatch and through the sensor's
    check: by the trigger type StackStorm registered (the database, as in the sensor
    container) and by the sensor's metadata (no database, as under st2tests' mocks)."""
    st2_config["auto_retract"]["dispositions"]["MALICIOUS"] = "none"
    st2.reconfigure(st2_config)
    sensor = Sensor(st2, "VerdictSensor", sensors).instance
    good = {"message_id": "<same@evil.example>", "recipients": ["alice@corp.example"],
            "disposition": "MALICIOUS", "verdict_time": "2026-01-01T00:00:00.000Z",
            "source": "cloudflare", "source_id": "same-1", "sender": None}
    refused = {
        "no recipient": dict(good, recipients=[]),
        "a disposition outside the enum": dict(good, disposition="PHISH"),
        "no verdict time": {k: v for k, v in good.items() if k != "verdict_time"},
        "an unknown field": dict(good, score=7),
        "a recipient that is no string": dict(good, recipients=[None]),
    }
    for why, payload in list(refused.items()) + [("good", good)]:
        before = instance_ids(st2)
        registered = sensor.refusal(VERDICT, payload)
        with mock.patch.object(verdict_polling, "database_connected", return_value=False):
            metadata = sensor.refusal(VERDICT, payload)
        st2.dispatch(VERDICT, payload)
        eventlet.sleep(0)
        published = trigger_instances(st2, VERDICT, before)
        if why == "good":
            assert registered is None and metadata is None, why
            assert [t.payload["source_id"] for t in published] == ["same-1"]
        else:
            assert registered is not None and metadata is not None, why
            assert registered == metadata, why
            assert published == [], why
    assert sensor.refusal("email_retraction.nonesuch", good).startswith("ValueError")
    assert [e.status for e in executions(st2, ["same-1"])["same-1"]] == ["succeeded"]


# -- text StackStorm cannot store -------------------------------------------------------------
def test_a_subject_cut_inside_an_emoji_reaches_the_rule(st2, st2_tenant, sensors, st2_config):
    """Cloudflare's JSON can carry half of a surrogate pair (a subject cut inside an emoji).
    StackStorm's payload validation accepts it and the dispatcher publishes it, but the rules
    engine cannot store the trigger instance (st2common's JSON dict field serializes the
    payload with orjson, which refuses it; MongoDB's BSON would too): no trigger instance, no
    rule, while the sensor counted it dispatched."""
    box = st2_tenant
    st2_config["auto_retract"]["dispositions"].update(MALICIOUS="none", SUSPICIOUS="none")
    st2.reconfigure(st2_config)
    row = add_verdict(box, "<cut@evil.example>", "MALICIOUS", to=["alice@corp.example"],
                      subject="You won \ud83d")
    before = instance_ids(st2)
    sensor = Sensor(st2, "VerdictSensor", sensors)
    assert sensor.poll() == {"verdict": 3}
    found = [t for t in trigger_instances(st2, VERDICT, before)
             if t.payload["source_id"] == row["id"]]
    assert [t.payload["subject"] for t in found] == ["You won \ufffd"]
    runs = executions(st2, [row["id"]])[row["id"]]
    assert [(e.status, e.parameters["subject"]) for e in runs] == [
        ("succeeded", "You won \ufffd")]


# -- StackStorm's datastore pages its keys ---------------------------------------------------
@pytest.fixture
def page_of_10():
    """StackStorm's `api.max_page_size` at 10 (default 100): the page size of the API's lists,
    and the `limit` SensorDatastoreService.list_values asks for when given none."""
    from oslo_config import cfg
    cfg.CONF.set_override("max_page_size", 10, group="api")
    yield 10
    cfg.CONF.clear_override("max_page_size", group="api")


def test_a_seen_set_over_more_than_one_page_of_keys_survives_a_restart(
        st2, st2_api, st2_tenant, sensors, st2_config, page_of_10):
    box = st2_tenant
    st2_config["verdicts"]["lookback_hours"] = 24
    st2_config["verdicts"]["per_page"] = 50
    st2.reconfigure(st2_config)
    set_rule_enabled(st2_api, VERDICT_RULE, False)  # only the trigger instances count here
    try:
        rows = [add_verdict(box, "<hourly%03d@evil.example>" % h, "MALICIOUS",
                            scanned_at="-%dh" % h)["id"] for h in range(1, 13)]
        before = instance_ids(st2)
        a = Sensor(st2, "VerdictSensor", sensors)
        assert a.poll() == {"verdict": len(rows) + 2}
        buckets = [k for k in datastore() if k.startswith("verdicts.seen.")]
        assert len(buckets) > page_of_10  # more than one page of StackStorm's list_values
        a.stop()

        b = Sensor(st2, "VerdictSensor", sensors)
        assert b.poll() == {}  # the re-poll reads all of them again: each one is remembered
        by_row = Counter(t.payload["source_id"] for t in trigger_instances(st2, VERDICT, before))
        assert set(rows) <= set(by_row) and set(by_row.values()) == {1}
    finally:
        set_rule_enabled(st2_api, VERDICT_RULE, True)


# -- the submission sensor ------------------------------------------------------------------
def test_confirmed_reports_over_several_pages_are_dispatched_once_across_a_restart(
        st2, st2_tenant, sensors, st2_config):
    box = st2_tenant
    st2_config["verdicts"]["per_page"] = 3
    st2_config["auto_retract"]["dispositions"]["MALICIOUS"] = "none"  # plan decides, quickly
    st2.reconfigure(st2_config)
    for i in range(7):  # reports nobody reviewed yet: pages of the submissions list
        box.control("POST", "/submissions", {"message_id": "<hello@corp.example>",
                                             "submission_id": "pending-%d" % i})
    before = instance_ids(st2)

    a = Sensor(st2, "SubmissionSensor", sensors)
    assert a.poll() == {}
    box.control("POST", "/submissions/s-1/confirm", {"disposition": "MALICIOUS"})
    assert a.poll() == {"phish_submission": 1}
    a.stop()
    b = Sensor(st2, "SubmissionSensor", sensors)
    assert b.poll() == {}
    assert '"s-1"' in datastore("SubmissionSensor")["submissions.handled"]

    dispatched = trigger_instances(st2, PHISH, before)
    assert [t.payload["submission_id"] for t in dispatched] == ["s-1"]
    payload = dispatched[0].payload
    assert payload["message_id"] == "<abc@evil.example>"
    assert "alice@corp.example" in payload["recipients"]
    runs = executions(st2, [payload["source_id"]])
    phish_runs = [e for e in runs[payload["source_id"]]
                  if e.parameters.get("retraction_trigger") == "phish_submission"]
    assert [e.status for e in phish_runs] == ["succeeded"]
