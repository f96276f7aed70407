"""The example config validates against config.schema.yaml, as StackStorm validates a pack
config (defaults applied, draft 3 style ``required``), and both name the same settings."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import conformance  # noqa: E402

PACK = "email_retraction"


def main():
    schema_path = os.path.join(ROOT, "config.schema.yaml")
    example_path = os.path.join(ROOT, "%s.yaml.example" % PACK)
    errors = conformance.check_config_schema(schema_path)
    schema, problem = conformance.load_yaml(schema_path)
    example, problem2 = conformance.load_yaml(example_path)
    for path, why in ((schema_path, problem), (example_path, problem2)):
        if why:
            errors.append("%s: %s" % (os.path.relpath(path, ROOT), why))
    if not errors:
        if not isinstance(example, dict):
            errors.append("%s: must be a mapping" % (os.path.basename(example_path)))
        else:
            for message in conformance.validate_config(schema, example):
                errors.append("%s: %s" % (os.path.basename(example_path), message))
            for key in sorted(set(example) - set(schema)):
                errors.append("%s: %r is not in config.schema.yaml"
                              % (os.path.basename(example_path), key))
            for key in sorted(set(schema) - set(example)):
                errors.append("%s: does not show %r from config.schema.yaml"
                              % (os.path.basename(example_path), key))
    for error in errors:
        print(error)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
