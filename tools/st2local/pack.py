"""The pack as StackStorm loads it: sys.path as `st2-run-pack-tests` builds it, the metadata
(read through tests/conformance.py, the pack's metadata checker), and its Python classes.

StackStorm's own modules (st2common, st2reactor, st2tests) come from a real installation when
there is one, else from the stand-in in tests/st2_standin, exactly as tests/conftest.py does.
"""
import importlib
import importlib.util
import inspect
import os
import sys

import yaml

__all__ = ["PACK_REF", "PACK_ROOT", "Pack", "conformance", "load_module", "setup_paths"]

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACK_REF = "email_retraction"
TESTS_DIR = os.path.join(PACK_ROOT, "tests")
STANDIN_DIR = os.path.join(TESTS_DIR, "st2_standin")


def setup_paths(root=PACK_ROOT):
    """lib/, actions/lib/, actions/, sensors/ and the pack root first on sys.path (earlier
    entries win), and the StackStorm stand-in when StackStorm is not installed."""
    paths = [os.path.join(root, "lib"), os.path.join(root, "actions", "lib"),
             os.path.join(root, "actions"), os.path.join(root, "sensors"), root]
    for path in reversed(paths):
        if path not in sys.path:
            sys.path.insert(0, path)
    try:
        import st2common  # noqa: F401  (the real StackStorm, when there is one)
    except ImportError:
        if STANDIN_DIR not in sys.path:
            sys.path.insert(0, STANDIN_DIR)
        importlib.invalidate_caches()


def _conformance():
    """tests/conformance.py, one module object whether pytest or the demo imports it."""
    if "conformance" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "conformance", os.path.join(TESTS_DIR, "conformance.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules["conformance"] = module
        spec.loader.exec_module(module)
    return sys.modules["conformance"]


setup_paths()
conformance = _conformance()


def _same_file(a, b):
    try:
        return bool(a) and os.path.samefile(a, b)
    except OSError:
        return False


def load_module(path):
    """The module of a Python file: the one already imported under its plain name when that
    is this file (so tests and harness share classes), else loaded from the path."""
    path = os.path.abspath(path)
    stem = os.path.splitext(os.path.basename(path))[0]
    module = sys.modules.get(stem)
    if module is not None and _same_file(getattr(module, "__file__", None), path):
        return module
    if module is None and os.path.dirname(path) in sys.path:
        module = importlib.import_module(stem)
        if _same_file(getattr(module, "__file__", None), path):
            return module
    name = "st2local_%s_%x" % (stem, abs(hash(path)))
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _load_yaml(path):
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


class Pack(object):
    """One pack directory: actions, workflows, rules, sensors and trigger types by reference."""

    _default = None

    def __init__(self, root=PACK_ROOT, ref=None):
        self.root = os.path.abspath(root)
        self.index = conformance.PackIndex.load(self.root, ref)
        self.ref = self.index.ref

    @classmethod
    def default(cls):
        """This repository's pack (loaded once)."""
        if cls._default is None:
            cls._default = cls(PACK_ROOT, PACK_REF)
        return cls._default

    # -- actions ----------------------------------------------------------------------------
    def action(self, ref):
        """The action's metadata; KeyError for an action of this pack that does not exist."""
        if ref not in self.index.actions:
            raise KeyError(self.index.describe_unknown_action(ref))
        return self.index.actions[ref]

    def action_parameters(self, ref):
        """Every parameter StackStorm accepts for `ref` (runner parameters included), or None
        when no such action is known (this pack's actions and StackStorm's core actions)."""
        return self.index.action_parameters(ref)

    def runner(self, ref):
        if ref in self.index.actions:
            return self.index.actions[ref].get("runner_type")
        return conformance.CORE_ACTIONS[ref][0] if ref in conformance.CORE_ACTIONS else None

    def entry_point(self, ref):
        return os.path.join(self.root, "actions", self.action(ref)["entry_point"])

    def workflow_spec(self, ref):
        return _load_yaml(self.entry_point(ref))

    def action_class(self, ref):
        """The Python runner's choice: the class in the entry point module that subclasses
        StackStorm's Action."""
        from st2common.runners.base_action import Action

        return self._class_in(self.entry_point(ref), Action, None)

    # -- rules -------------------------------------------------------------------------------
    def rules(self):
        found = []
        for path in conformance.metadata_files(self.root, "rule"):
            rule = _load_yaml(path)
            rule.setdefault("pack", self.ref)
            found.append(rule)
        return found

    def rule(self, name):
        for rule in self.rules():
            if rule.get("name") == name:
                return rule
        raise KeyError("no rule %r in %s" % (name, self.root))

    def rules_for(self, trigger_ref):
        """Every enabled rule of the pack on this trigger type."""
        return [r for r in self.rules()
                if (r.get("trigger") or {}).get("type") == trigger_ref and r.get("enabled")]

    # -- sensors and triggers ----------------------------------------------------------------
    def sensor_meta(self, name):
        return _load_yaml(os.path.join(self.root, "sensors", name + ".yaml"))

    def sensor_class(self, name):
        meta = self.sensor_meta(name)
        path = os.path.join(self.root, "sensors", meta["entry_point"])
        from st2reactor.sensor.base import BaseSensor

        return self._class_in(path, BaseSensor, meta["class_name"])

    def trigger_schema(self, trigger_ref):
        trigger = self.index.triggers.get(trigger_ref)
        if trigger is None:
            raise KeyError("no trigger type %r in pack %s" % (trigger_ref, self.ref))
        return trigger.get("payload_schema") or {}

    def payload_errors(self, trigger_ref, payload):
        """Why StackStorm would drop this payload (it does so silently); [] when valid."""
        return conformance.payload_errors(self.trigger_schema(trigger_ref), payload)

    @staticmethod
    def _class_in(path, base, name):
        module = load_module(path)
        for value in vars(module).values():
            if (inspect.isclass(value) and value.__module__ == module.__name__
                    and issubclass(value, base) and value is not base
                    and (name is None or value.__name__ == name)):
                return value
        raise LookupError("%s defines no %s subclass%s" % (
            path, base.__name__, "" if name is None else " named %s" % name))
