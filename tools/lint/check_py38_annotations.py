"""Annotations that Python 3.8 evaluates must not use 3.9+/3.10+ typing syntax.

vermin (run without --eval-annotations) does not look inside annotations, yet Python 3.8
evaluates function and module/class-level annotations at definition time unless the module
has ``from __future__ import annotations``: ``list[int]`` or ``int | None`` there is a
TypeError on import under StackStorm's Python 3.8.
"""

import ast
import os
import sys

# builtin -> its typing spelling that works on Python 3.8
BUILTIN_GENERICS = {"list": "List", "dict": "Dict", "set": "Set", "frozenset": "FrozenSet",
                    "tuple": "Tuple", "type": "Type"}
SKIP_DIRS = frozenset([".venv", ".git", "__pycache__"])


def _has_future_annotations(tree):
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            if any(alias.name == "annotations" for alias in node.names):
                return True
    return False


def _problems_in(annotation):
    for node in ast.walk(annotation):
        if (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
                and node.value.id in BUILTIN_GENERICS):
            yield node.lineno, "%s[...] needs Python 3.9 (use typing.%s)" % (
                node.value.id, BUILTIN_GENERICS[node.value.id])
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            yield node.lineno, "X | Y needs Python 3.10 (use typing.Optional/Union)"


def _evaluated_annotations(tree):
    """Annotations Python evaluates at definition time (not those of local variables)."""
    def walk(body, in_function):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args
                for arg in args.posonlyargs + args.args + args.kwonlyargs:
                    if arg.annotation is not None:
                        yield arg.annotation
                for arg in (args.vararg, args.kwarg):
                    if arg is not None and arg.annotation is not None:
                        yield arg.annotation
                if node.returns is not None:
                    yield node.returns
                for item in walk(node.body, True):
                    yield item
            elif isinstance(node, ast.ClassDef):
                for item in walk(node.body, False):
                    yield item
            elif isinstance(node, ast.AnnAssign) and not in_function:
                yield node.annotation
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    inner = getattr(node, field, None)
                    if isinstance(inner, list):
                        for item in walk(inner, in_function):
                            yield item
    return walk(tree.body, False)


def check_file(path):
    with open(path, "r", encoding="utf-8") as fp:
        tree = ast.parse(fp.read(), filename=path)
    if _has_future_annotations(tree):
        return []
    found = []
    for annotation in _evaluated_annotations(tree):
        for lineno, message in _problems_in(annotation):
            found.append("%s:%d: %s" % (path, lineno, message))
    return found


def main(paths):
    found = []
    for root in paths:
        if os.path.isfile(root):
            found.extend(check_file(root))
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
            for name in sorted(filenames):
                if name.endswith(".py"):
                    found.extend(check_file(os.path.join(dirpath, name)))
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
