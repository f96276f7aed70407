"""The pack's own conventions for its metadata files: things StackStorm does not require.

What StackStorm checks (registration, schemas, payloads, workflows) is tested with
StackStorm's own code in test_st2_registration.py. Here only:
- each file is named after the resource it defines (StackStorm registers by the `name`
  field; the docs, the tests and the maintainers find a resource by its file);
- everything an operator sees listed has a description: `st2 action list`, `st2 rule list`,
  `st2 trigger list`, `!help` in ChatOps, the Web UI and its config form show them.
"""
import glob
import os

import pytest
import yaml

from conftest import PACK_ROOT


def _files(kind):
    return sorted(glob.glob(os.path.join(PACK_ROOT, kind, "*.yaml")))


def _load(path):
    with open(path, "r", encoding="utf-8") as handle:
        return yaml.safe_load(handle)


NAMED = [p for kind in ("actions", "rules", "aliases", "policies") for p in _files(kind)]
DESCRIBED = NAMED + _files("sensors")


def _id(path):
    return os.path.relpath(path, PACK_ROOT)


@pytest.mark.parametrize("path", NAMED, ids=[_id(p) for p in NAMED])
def test_the_file_is_named_after_its_resource(path):
    assert _load(path)["name"] == os.path.splitext(os.path.basename(path))[0]


@pytest.mark.parametrize("path", DESCRIBED, ids=[_id(p) for p in DESCRIBED])
def test_the_resource_is_described(path):
    meta = _load(path)
    assert (meta.get("description") or "").strip(), "no description"
    for name, spec in (meta.get("parameters") or {}).items():
        if os.path.basename(os.path.dirname(path)) == "actions":
            assert (spec.get("description") or "").strip(), "parameter %s" % name
    for trigger_type in meta.get("trigger_types") or []:
        assert (trigger_type.get("description") or "").strip(), trigger_type["name"]


def test_every_setting_of_the_config_schema_is_described():
    for name, spec in _load(os.path.join(PACK_ROOT, "config.schema.yaml")).items():
        assert (spec.get("description") or "").strip(), name


def test_the_conventions_see_every_kind_of_file():
    for kind in ("actions", "rules", "aliases", "policies", "sensors"):
        assert _files(kind), kind
