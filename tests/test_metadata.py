"""Pack metadata conforms to what StackStorm registers and runs (see conformance.py).

Runs the checks over the pack's real directories (however many files they hold today) and
proves on fixtures that each check catches what it is meant to catch.
"""

import glob
import os
import re

import pytest

import conformance
from conftest import PACK_REF, PACK_ROOT

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "metadata")
GOOD_PACK = os.path.join(FIXTURES, "good_pack")
BROKEN = os.path.join(FIXTURES, "broken")
EXPECT_RE = re.compile(r"^# expect: (.+)$", re.MULTILINE)

conformance.set_message_root(PACK_ROOT)


def _ids(paths):
    return [os.path.relpath(p, PACK_ROOT) for p in paths]


def _check(kind, path, index):
    if kind == "pack":
        return conformance.check_pack_yaml(path, PACK_REF)
    if kind == "config_schema":
        return conformance.check_config_schema(path)
    if kind == "workflow":
        return conformance.check_action(path, index)
    return conformance.KINDS[kind][1](path, index)


# --- the pack itself ------------------------------------------------------------------

REAL_INDEX = conformance.PackIndex.load(PACK_ROOT, PACK_REF)
REAL_FILES = [(kind, path) for kind in conformance.KINDS
              for path in conformance.metadata_files(PACK_ROOT, kind)]


def test_pack_yaml_conforms():
    assert conformance.check_pack_yaml(os.path.join(PACK_ROOT, "pack.yaml"), PACK_REF) == []


def test_config_schema_conforms():
    assert conformance.check_config_schema(os.path.join(PACK_ROOT, "config.schema.yaml")) == []


@pytest.mark.parametrize("kind,path", REAL_FILES, ids=_ids([p for _, p in REAL_FILES]))
def test_pack_metadata_file_conforms(kind, path):
    assert conformance.KINDS[kind][1](path, REAL_INDEX) == []


def test_whole_pack_conforms():
    # Also catches workflows no action uses, whatever files exist today.
    assert conformance.check_pack(PACK_ROOT, PACK_REF) == []


def test_example_config_validates_against_schema():
    schema, problem = conformance.load_yaml(os.path.join(PACK_ROOT, "config.schema.yaml"))
    assert problem is None
    example, problem = conformance.load_yaml(
        os.path.join(PACK_ROOT, "%s.yaml.example" % PACK_REF))
    assert problem is None
    assert conformance.validate_config(schema, example) == []
    # The example documents every setting, and sets nothing the schema does not know.
    assert sorted(example) == sorted(schema)


# --- the checks catch what they should ----------------------------------------------------

def test_good_fixture_pack_passes_every_check():
    assert conformance.check_pack(GOOD_PACK, PACK_REF) == []


def test_good_fixture_pack_covers_every_kind():
    index = conformance.PackIndex.load(GOOD_PACK, PACK_REF)
    for kind in conformance.KINDS:
        assert conformance.metadata_files(GOOD_PACK, kind), kind
    assert any(m["runner_type"] == "orquesta" for m in index.actions.values())
    assert os.path.isfile(os.path.join(GOOD_PACK, "config.schema.yaml"))


BROKEN_FILES = sorted(glob.glob(os.path.join(BROKEN, "*", "*.yaml")))


@pytest.mark.parametrize("path", BROKEN_FILES, ids=_ids(BROKEN_FILES))
def test_broken_fixture_is_caught(path):
    kind = os.path.basename(os.path.dirname(path))
    with open(path, "r", encoding="utf-8") as fp:
        expected = EXPECT_RE.findall(fp.read())
    assert expected, "fixture has no '# expect:' line"

    errors = _check(kind, path, conformance.PackIndex.load(GOOD_PACK, PACK_REF))

    for message in expected:
        assert any(message in error for error in errors), (message, errors)


def test_every_kind_has_broken_fixtures():
    kinds = set(os.path.basename(os.path.dirname(p)) for p in BROKEN_FILES)
    assert kinds == {"pack", "config_schema", "action", "workflow", "sensor", "rule", "alias",
                     "policy"}


def test_a_file_that_does_not_parse_is_reported(tmp_path):
    path = tmp_path / "retract.yaml"
    path.write_text("name: [unclosed\n")
    index = conformance.PackIndex.load(GOOD_PACK, PACK_REF)
    errors = conformance.check_action(str(path), index)
    assert len(errors) == 1 and "does not parse as YAML" in errors[0]


def test_an_unused_workflow_is_reported(tmp_path):
    pack = tmp_path / "pack"
    (pack / "actions" / "workflows").mkdir(parents=True)
    (pack / "pack.yaml").write_text(
        'name: email_retraction\ndescription: d\nversion: "0.1.0"\nauthor: a\n')
    (pack / "actions" / "workflows" / "orphan.yaml").write_text(
        "version: 1.0\ntasks:\n  one:\n    action: core.noop\n")
    errors = conformance.check_pack(str(pack), PACK_REF)
    assert errors == ["%s: no action metadata (runner_type: orquesta) uses this workflow"
                      % (pack / "actions" / "workflows" / "orphan.yaml")]


def test_config_validation_applies_defaults_and_types():
    schema = {
        "limits": {"type": "object", "default": {}, "properties": {
            "chunk_size": {"type": "integer", "minimum": 1, "default": 500}}},
        "mode": {"type": "string", "enum": ["enforce", "preview"], "required": True},
    }
    assert conformance.validate_config(schema, {"mode": "preview"}) == []
    assert conformance.validate_config(schema, {}) == ["mode: 'mode' is a required property"]
    errors = conformance.validate_config(schema, {"mode": "x", "limits": {"chunk_size": 0}})
    assert errors == ["limits.chunk_size: 0 is less than the minimum of 1",
                      "mode: 'x' is not one of ['enforce', 'preview']"]


def test_payload_errors_reports_what_stackstorm_would_drop():
    schema = {"type": "object", "required": ["message_id"],
              "properties": {"message_id": {"type": "string"},
                             "disposition": {"type": "string", "enum": ["MALICIOUS"]}}}
    assert conformance.payload_errors(schema, {"message_id": "<a@b>"}) == []
    assert conformance.payload_errors(schema, {"disposition": "SPAM"}) == [
        "(top): 'message_id' is a required property",
        "disposition: 'SPAM' is not one of ['MALICIOUS']",
    ]
