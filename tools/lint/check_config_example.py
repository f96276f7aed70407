"""The example config against config.schema.yaml, by StackStorm's own code.

- config.schema.yaml is a valid config schema: StackStorm's ConfigSchemaAPI, as every
  registrar checks it when it registers the pack;
- the example validates against it: st2common.util.pack.validate_config_against_schema, what
  `st2-validate-pack-config` runs (Exchange CI runs it on *.yaml.example) and what the configs
  registrar runs on `st2ctl reload --register-configs`;
- both name the same top-level settings: StackStorm lets an unknown top-level setting through
  (a misspelt one silently falls back to its default), so the example must not show one, and
  it documents every setting.

Run from the pack root, in the StackStorm venv `make lint` uses:
`python tools/lint/check_config_example.py`. Exit status 1 when anything is wrong.
"""

import os
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACK = "email_retraction"


def _load(path, errors):
    try:
        with open(path, "r", encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as e:
        errors.append("%s: %s" % (os.path.relpath(path, ROOT), str(e).replace("\n", " ")))
        return None


def _why(error):
    """StackStorm's error in one line: jsonschema's message (which StackStorm's config check
    prefixes with the setting's name), and where in the checked document it is."""
    text = (getattr(error, "message", None) or str(error)).split("\n")[0]
    where = ".".join(str(p) for p in getattr(error, "absolute_path", ()))
    return "%s (at %s)" % (text, where) if where else text


def check(schema_path, example_path):
    """The problems found, as lines naming the file."""
    from st2common.models.api.pack import ConfigSchemaAPI
    from st2common.util.pack import validate_config_against_schema

    errors = []
    schema = _load(schema_path, errors)
    example = _load(example_path, errors)
    if errors:
        return errors
    schema_name = os.path.relpath(schema_path, ROOT)
    example_name = os.path.relpath(example_path, ROOT)
    if not isinstance(schema, dict) or not schema:
        return ["%s: must be a non-empty mapping" % schema_name]
    if not isinstance(example, dict):
        return ["%s: must be a mapping" % example_name]
    try:
        ConfigSchemaAPI(pack=PACK, attributes=schema).validate()
    except Exception as e:  # StackStorm raises jsonschema errors and its own
        errors.append("%s: %s" % (schema_name, _why(e)))
        return errors
    try:
        validate_config_against_schema(config_schema=schema, config_object=example,
                                       config_path=example_path, pack_name=PACK)
    except Exception as e:
        errors.append("%s: %s" % (example_name, _why(e)))
    for key in sorted(set(example) - set(schema)):
        errors.append("%s: %r is not in %s" % (example_name, key, schema_name))
    for key in sorted(set(schema) - set(example)):
        errors.append("%s: does not show %r from %s" % (example_name, key, schema_name))
    return errors


def main():
    errors = check(os.path.join(ROOT, "config.schema.yaml"),
                   os.path.join(ROOT, "%s.yaml.example" % PACK))
    for error in errors:
        print(error)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
