"""The StackStorm stand-in behaves as StackStorm 3.9 does.

Only meaningful when the stand-in is in use: under a real StackStorm (st2-run-pack-tests)
this module is skipped. The alias extraction cases are those of StackStorm's own unit tests
for ActionAliasFormatParser.
"""

import os
import unittest

import pytest

import st2common
from conftest import PACK_ROOT, STANDIN_DIR

if not os.path.abspath(st2common.__file__).startswith(STANDIN_DIR + os.sep):
    pytest.skip("the real StackStorm is installed; the stand-in is not in use",
                allow_module_level=True)

from st2common.exceptions.content import ParseException  # noqa: E402
from st2common.models.utils.action_alias_utils import ActionAliasFormatParser  # noqa: E402
from st2common.models.utils.action_alias_utils import extract_parameters  # noqa: E402
from st2common.runners.base_action import Action  # noqa: E402
from st2common.runners.utils import get_action_class_instance  # noqa: E402
from st2reactor.sensor.base import PollingSensor, Sensor  # noqa: E402
from st2tests.base import BaseActionAliasTestCase  # noqa: E402
from st2tests.base import BaseActionTestCase, BaseSensorTestCase  # noqa: E402

GOOD_PACK = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                         "fixtures", "metadata", "good_pack")


class CountingAction(Action):
    def run(self, name, times=1):
        return True, {"greeting": " ".join(["hello %s" % name] * times)}


class CheckpointSensor(PollingSensor):
    def setup(self):
        self.polls = 0

    def poll(self):
        self.polls += 1
        self.sensor_service.set_value("checkpoint", self.polls)
        self.sensor_service.dispatch(trigger="email_retraction.verdict",
                                     payload={"message_id": "<m%d@corp.example>" % self.polls},
                                     trace_tag="poll-%d" % self.polls)

    def cleanup(self):
        pass

    def add_trigger(self, trigger):
        pass

    def update_trigger(self, trigger):
        pass

    def remove_trigger(self, trigger):
        pass


# --- actions ------------------------------------------------------------------------------

class ActionStandinTest(BaseActionTestCase):
    action_cls = CountingAction

    def test_instance_gets_config_service_and_logger(self):
        action = self.get_action_instance(config={"limits": {"chunk_size": 5}})
        self.assertIs(action.action_service, self.action_service)
        self.assertEqual(action.config.get("limits"), {"chunk_size": 5})
        self.assertEqual(action.logger.name, "actions.python.CountingAction")
        self.assertEqual(action.run(name="ana", times=2),
                         (True, {"greeting": "hello ana hello ana"}))

    def test_missing_config_key_raises_value_error_naming_pack_and_key(self):
        action = self.get_action_instance(config={})
        with self.assertRaises(ValueError) as caught:
            action.config["ledger_url"]
        message = str(caught.exception)
        self.assertIn('Config for pack "tests" is missing key "ledger_url"', message)
        self.assertIn("/opt/stackstorm/configs/tests.yaml", message)
        self.assertIsNone(action.config.get("ledger_url"))

    def test_datastore_keys_are_local_to_pack_and_class(self):
        service = self.action_service
        self.assertTrue(service.set_value("cursor", "abc"))
        self.assertTrue(service.set_value("shared", "x", local=False))
        names = sorted(kvp.name for kvp in service.list_values(local=False))
        self.assertEqual(names, ["shared", "tests.CountingAction:cursor"])
        self.assertEqual([kvp.name for kvp in service.list_values()],
                         ["tests.CountingAction:cursor"])
        self.assertEqual(service.get_value("cursor"), "abc")
        self.assertEqual(service.get_value("tests.CountingAction:cursor", local=False), "abc")
        self.assertEqual(service.get_value("shared", local=False), "x")
        self.assertIsNone(service.get_value("shared"))

    def test_datastore_values_come_back_as_strings(self):
        service = self.action_service
        service.set_value("count", 5)
        service.set_value("doc", {"a": 1})
        self.assertEqual(service.get_value("count"), "5")
        self.assertEqual(service.get_value("doc"), "{'a': 1}")

    def test_list_values_prefix_and_delete(self):
        service = self.action_service
        for name in ("run.1", "run.2", "other"):
            service.set_value(name, name)
        self.assertEqual(sorted(k.value for k in service.list_values(prefix="run.")),
                         ["run.1", "run.2"])
        self.assertTrue(service.delete_value("run.1"))
        self.assertFalse(service.delete_value("run.1"))
        self.assertIsNone(service.get_value("run.1"))

    def test_only_system_scope_is_supported(self):
        for call in (lambda: self.action_service.get_value("k", scope="user"),
                     lambda: self.action_service.set_value("k", "v", scope="user"),
                     lambda: self.action_service.delete_value("k", scope="user")):
            with self.assertRaisesRegex(ValueError, "Scope user is unsupported"):
                call()

    def test_ttl_is_accepted_and_warned_about(self):
        self.assertTrue(self.action_service.set_value("k", "v", ttl=60))
        self.action_service._logger.warning.assert_called_once_with(
            "MockDatastoreService is not able to expire keys based on ttl.")
        self.assertEqual(self.action_service.list_values()[0].ttl, 60)


class ActionBaseClassTest(unittest.TestCase):
    def test_run_is_abstract(self):
        class NoRun(Action):
            pass

        with self.assertRaises(TypeError):
            NoRun()

    def test_constructor_signature_and_defaults(self):
        action = CountingAction()
        self.assertEqual(dict(action.config), {})
        self.assertIsNone(action.action_service)
        with self.assertRaisesRegex(ValueError, 'pack "unknown"'):
            action.config["x"]

    def test_old_constructor_without_action_service_gets_late_assignment(self):
        class OldAction(Action):
            def __init__(self, config=None):
                super(OldAction, self).__init__(config=config)

            def run(self):
                return None

        service = object()
        action = get_action_class_instance(OldAction, config={"a": 1}, action_service=service)
        self.assertIs(action.action_service, service)
        self.assertEqual(action.config.get("a"), 1)


# --- sensors ------------------------------------------------------------------------------

class SensorStandinTest(BaseSensorTestCase):
    sensor_cls = CheckpointSensor

    def test_dispatch_is_recorded_with_trace_context(self):
        sensor = self.get_sensor_instance(config={"verdicts": {}}, poll_interval=30)
        sensor.setup()
        sensor.poll()
        sensor.poll()

        self.assertEqual(sensor.get_poll_interval(), 30)
        self.assertEqual(sensor.config, {"verdicts": {}})
        self.assertEqual(len(self.get_dispatched_triggers()), 2)
        last = self.get_last_dispatched_trigger()
        self.assertEqual(last["trigger"], "email_retraction.verdict")
        self.assertEqual(last["payload"], {"message_id": "<m2@corp.example>"})
        self.assertEqual(last["trace_context"].trace_tag, "poll-2")
        self.assertTrue(self.assertTriggerDispatched(
            "email_retraction.verdict", payload={"message_id": "<m1@corp.example>"}))

    def test_assert_trigger_dispatched_fails_for_other_payloads(self):
        sensor = self.get_sensor_instance()
        sensor.setup()
        sensor.poll()
        with self.assertRaisesRegex(AssertionError, "hasn't been dispatched"):
            self.assertTriggerDispatched("email_retraction.verdict",
                                         payload={"message_id": "<other@corp.example>"})
        with self.assertRaises(AssertionError):
            self.assertTriggerDispatched("email_retraction.verdict_changed")

    def test_defaults_and_datastore(self):
        sensor = self.get_sensor_instance()
        self.assertEqual(sensor.get_poll_interval(), 5)
        self.assertEqual(sensor.config, {})
        sensor.set_poll_interval(60)
        self.assertEqual(sensor.get_poll_interval(), 60)
        sensor.setup()
        sensor.poll()
        self.assertEqual(self.sensor_service.get_value("checkpoint"), "1")
        self.assertEqual([k.name for k in self.sensor_service.list_values()],
                         ["tests.CheckpointSensor:checkpoint"])

    def test_get_logger_is_a_mock_that_records_calls(self):
        logger = self.sensor_service.get_logger("verdicts")
        logger.info("polled %d", 3)
        logger.info.assert_called_once_with("polled %d", 3)


class SensorBaseClassTest(unittest.TestCase):
    def test_abstract_methods(self):
        class Incomplete(PollingSensor):
            def poll(self):
                pass

        with self.assertRaises(TypeError):
            Incomplete(sensor_service=None)
        self.assertEqual(
            sorted(Sensor.__abstractmethods__),
            ["add_trigger", "cleanup", "remove_trigger", "run", "setup", "update_trigger"])
        self.assertEqual(
            sorted(PollingSensor.__abstractmethods__),
            ["add_trigger", "cleanup", "poll", "remove_trigger", "setup", "update_trigger"])


# --- action aliases -------------------------------------------------------------------------

# (format, command, expected parameters) from StackStorm's test_action_alias_utils.py
PARSER_CASES = [
    ("", "", {}),
    ("", "a=foobar1", {"a": "foobar1"}),
    ("foo", 'foo a="foobar2 poonies bar"', {"a": "foobar2 poonies bar"}),
    ("foo", "foo a='foobar2 poonies bar'", {"a": "foobar2 poonies bar"}),
    ("foo", 'foo a={"foobar2": "poonies"}', {"a": '{"foobar2": "poonies"}'}),
    ("", 'a=foobar1 b="boobar2 3 4" c=\'coobar3 4\' d={"a": "b"}',
     {"a": "foobar1", "b": "boobar2 3 4", "c": "coobar3 4", "d": '{"a": "b"}'}),
    ("{{ captain }} is my captain", 'Malcolm Reynolds is my captain weirdo="River Tam"',
     {"captain": "Malcolm Reynolds", "weirdo": "River Tam"}),
    ("skip {{a}} more skip {{b}} and skip more.", "skip a1 more skip b1 and skip more.",
     {"a": "a1", "b": "b1"}),
    ("skip {{a}} more skip {{b}}", "skip a1 more skip b1", {"a": "a1", "b": "b1"}),
    ("skip {{a}} more skip {{b}} and skip more.", 'skip "a1 a2" more skip b1 and skip more.',
     {"a": "a1 a2", "b": "b1"}),
    ("acl {{a}} {{b}} {{c}} {{d=1}}", 'acl "a1 a2" "b1" "c1"',
     {"a": "a1 a2", "b": "b1", "c": "c1", "d": "1"}),
    ("acl {{a=test}}", "acl", {"a": "test"}),
    ("skip {{a}} more skip.", 'skip {"a": "b", "c": "d"} more skip.',
     {"a": '{"a": "b", "c": "d"}'}),
    ("skip {{a}} more skip {{b}}.", 'skip {"a": "b", "c": "d"} more skip x.',
     {"a": '{"a": "b", "c": "d"}', "b": "x"}),
    ("s {{a}} more {{ b }} more {{ c=99 }} more {{ d = 99 }}", "s one more two more three more",
     {"a": "one", "b": "two", "c": "three", "d": "99"}),
    ("skip {{ a = value }} more", "skip one more", {"a": "one"}),
    ("skip {{ a = value }} more", "skip more", {"a": "value"}),
    ("two by two hands of {{ color = {{ colors.default_color }} }}", "two by two hands of",
     {"color": "{{ colors.default_color }}"}),
    ("testing {{ a }}", "testing value b=value2", {"a": "value", "b": "value2"}),
    ("testing {{ a=new }}", 'testing b="another value"', {"a": "new", "b": "another value"}),
    ("testing {{ b=abc }} {{ c=xyz }}", 'testing newvalue d={"1": "2"} e="long value"',
     {"b": "newvalue", "c": "xyz", "d": '{"1": "2"}', "e": "long value"}),
    ("skip {{d=test1}} more skip {{e=test1}}.", "skip more skip", {"d": "test1", "e": "test1"}),
    ("skip {{d=test}} more skip {{e=test}}", "skip ponies more skip",
     {"d": "ponies", "e": "test"}),
    ("{{ p0='http' }} g {{ p1=p }} a {{ url }} {{ p2={'a':'b'} }} {{ p3={{ e.i }} }}",
     "g a http://google.com {{ execution.id }} p4='testing' p5={'a':'c'}",
     {"p0": "http", "p1": "p", "url": "http://google.com", "p2": "{{ execution.id }}",
      "p3": "{{ e.i }}", "p4": "testing", "p5": "{'a':'c'}"}),
    ("foo bar", "foo bar pony1=foo pony2=bar", {"pony1": "foo", "pony2": "bar"}),
    (r"^\s*foo (?P<issue_key>[A-Z][A-Z0-9]+-[0-9]+)", "foo ASDF-1234",
     {"issue_key": "ASDF-1234"}),
    (r"foo (?P<issue_key>[A-Z][A-Z0-9]+-[0-9]+)\s*$", "foo ASDF-1234",
     {"issue_key": "ASDF-1234"}),
    (r"^\s*foo (?P<issue_key>[A-Z][A-Z0-9]+-[0-9]+) bar\s*$", "foo ASDF-1234 bar",
     {"issue_key": "ASDF-1234"}),
]

# (format, command, expected message or None) that StackStorm refuses
PARSER_FAILURES = [
    ("skip {{d}} more skip {{e}}.", None,
     'Command "" doesn\'t match format string "skip {{d}} more skip {{e}}."'),
    ("foo bar ponies", "foo lulz ponies",
     'Command "foo lulz ponies" doesn\'t match format string "foo bar ponies"'),
    (r"^\s*foo (?P<issue_key>[A-Z][A-Z0-9]+-[0-9]+)", "bar foo ASDF-1234", None),
    (r"foo (?P<issue_key>[A-Z][A-Z0-9]+-[0-9]+)\s*$", "foo ASDF-1234 bar", None),
    (r"^\s*foo (?P<issue_key>[A-Z][A-Z0-9]+-[0-9]+)\s*$", "bar ASDF-1234", None),
]


@pytest.mark.parametrize("alias_format,command,expected", PARSER_CASES)
def test_parser_extracts_like_stackstorm(alias_format, command, expected):
    parser = ActionAliasFormatParser(alias_format, command)
    assert parser.get_extracted_param_value() == expected


@pytest.mark.parametrize("alias_format,command,message", PARSER_FAILURES)
def test_parser_refuses_like_stackstorm(alias_format, command, message):
    parser = ActionAliasFormatParser(alias_format, command)
    with pytest.raises(ParseException) as caught:
        parser.get_extracted_param_value()
    if message is not None:
        assert str(caught.value) == message
    assert isinstance(caught.value, ValueError)


def test_parser_matches_multiple():
    assert extract_parameters("retract {{id}}", "retract a retract b", match_multiple=True) \
        == [{"id": "a retract b"}]


class PackAliasTest(BaseActionAliasTestCase):
    """The alias base class against the fixture pack (as if this file were in its tests/)."""

    action_alias_name = "retract"
    FORMAT = "retract {{message_id}} from {{recipients}}( to {{destination=junk}})?"

    def _get_base_pack_path(self):
        return GOOD_PACK

    def test_alias_is_loaded_from_the_pack(self):
        self.assertEqual(self.action_alias_db.pack, "email_retraction")
        self.assertEqual(self.action_alias_db.action_ref, "email_retraction.retract")
        self.assertEqual(self.action_alias_db.get_format_strings(),
                         [self.FORMAT, "pull {{message_id}} from {{recipients}}"])

    def test_optional_group_with_default(self):
        self.assertExtractedParametersMatch(
            self.FORMAT, "retract <a@corp.example> from bob@corp.example",
            {"message_id": "<a@corp.example>", "recipients": "bob@corp.example",
             "destination": "junk"})
        self.assertExtractedParametersMatch(
            self.FORMAT, "retract <a@corp.example> from bob@corp.example,eve@corp.example to "
                         "trash",
            {"message_id": "<a@corp.example>",
             "recipients": "bob@corp.example,eve@corp.example", "destination": "trash"})

    def test_mismatch_raises_with_both_sides(self):
        with self.assertRaisesRegex(AssertionError, "didn't match the provided parameters"):
            self.assertExtractedParametersMatch(
                self.FORMAT, "retract <a@corp.example> from bob@corp.example",
                {"message_id": "<a@corp.example>", "recipients": "bob@corp.example"})

    def test_format_not_on_the_alias_is_refused(self):
        with self.assertRaisesRegex(ValueError, "is not available on the alias"):
            self.assertExtractedParametersMatch("retract {{x}}", "retract y", {"x": "y"})

    def test_exactly_one_format_matches(self):
        formats = self.action_alias_db.get_format_strings()
        self.assertCommandMatchesExactlyOneFormatString(
            formats, "pull <a@corp.example> from bob@corp.example")
        with self.assertRaisesRegex(AssertionError, "didn't match any"):
            self.assertCommandMatchesExactlyOneFormatString(formats, "undo <a@corp.example>")
        with self.assertRaisesRegex(AssertionError, "matched multiple format strings"):
            self.assertCommandMatchesExactlyOneFormatString(
                ["retract {{a}}", "retract {{b}}"], "retract x")


class AliasResolutionTest(unittest.TestCase):
    def test_pack_path_is_the_parent_of_the_test_file(self):
        class Probe(BaseActionAliasTestCase):
            action_alias_name = "anything"

        self.assertEqual(Probe("run")._get_base_pack_path(), PACK_ROOT)

    def test_unknown_alias_name_is_an_error(self):
        class Missing(BaseActionAliasTestCase):
            action_alias_name = "no_such_alias"

            def _get_base_pack_path(self):
                return GOOD_PACK

        with self.assertRaisesRegex(ValueError, 'Alias with name "no_such_alias" not found'):
            Missing("run").setUp()

    def test_alias_name_is_required(self):
        class Unnamed(BaseActionAliasTestCase):
            pass

        with self.assertRaisesRegex(ValueError, "action_alias_name"):
            Unnamed("run").setUp()

    def test_fixture_content(self):
        class Reader(BaseActionTestCase):
            action_cls = CountingAction

        text = Reader("run").get_fixture_content("metadata/good_pack/pack.yaml")
        self.assertIn("ref: email_retraction", text)
