"""Every YAML and JSON file of the repository parses (as the StackStorm Exchange CI checks)."""

import json
import os
import sys

import yaml

SKIP_DIRS = frozenset([".venv", ".git", "__pycache__", ".pytest_cache", "node_modules"])


def files(root):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            if name.endswith((".yaml", ".yml", ".json")) or name.endswith(".yaml.example"):
                yield os.path.join(dirpath, name)


def problem(path):
    try:
        with open(path, "r", encoding="utf-8") as fp:
            if path.endswith(".json"):
                json.load(fp)
            else:
                list(yaml.safe_load_all(fp))
    except (OSError, ValueError, yaml.YAMLError) as e:
        return str(e).replace("\n", " ")
    return None


def main(root):
    failures = 0
    count = 0
    for path in files(root):
        count += 1
        why = problem(path)
        if why:
            failures += 1
            print("%s: does not parse: %s" % (os.path.relpath(path, root), why))
    if count == 0:
        print("%s: no YAML or JSON files found" % (root))
        return 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "."))
