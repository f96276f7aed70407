#!/usr/bin/env bash
# make test-py38: the whole pytest suite on Python 3.8, the Python StackStorm 3.8 runs packs on
# (Ubuntu 20.04, RHEL 8). Builds .venv38 from requirements.txt + requirements-tests.txt with the
# pip that Python 3.8's venv bundles, on purpose not upgraded: an older pip must resolve both
# files quickly too, as it does in a pack virtualenv. Lint runs once, in `make test`.
# No Python 3.8 on the machine: says so and exits 0.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

VENV="${VENV38:-.venv38}"
STAMP="$VENV/.requirements-sha256"

is_py38() {
    "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 8))' >/dev/null 2>&1
}

# An explicit PYTHON38, then pyenv's builds (newest 3.8.x first), then python3.8 on PATH.
# Each is run once to check it: a pyenv shim for a version that is not selected fails.
find_py38() {
    local pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}" candidate
    local candidates=("${PYTHON38:-}")
    while IFS= read -r candidate; do
        candidates+=("$candidate")
    done < <(ls -d "$pyenv_root"/versions/3.8*/bin/python3.8 2>/dev/null | sort -rV)
    candidates+=("$(command -v python3.8 2>/dev/null || true)" /usr/bin/python3.8
                 /usr/local/bin/python3.8)
    for candidate in "${candidates[@]}"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ] && is_py38 "$candidate"; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

if ! PY38="$(find_py38)"; then
    echo "test-py38: SKIPPED - no Python 3.8 found (PYTHON38, ${PYENV_ROOT:-$HOME/.pyenv}/versions/3.8*, python3.8 on PATH)"
    exit 0
fi
echo "test-py38: using $PY38 ($("$PY38" -c 'import sys; print(sys.version.split()[0])'))"

if [ -x "$VENV/bin/python" ] && ! is_py38 "$VENV/bin/python"; then
    rm -rf "$VENV"   # left by another Python: rebuild rather than mix
fi
if [ ! -x "$VENV/bin/python" ]; then
    "$PY38" -m venv "$VENV"
    echo '*' > "$VENV/.gitignore"   # keep the venv out of git whatever .gitignore says
fi

# Reinstall only when a requirements file changed since the last install.
wanted="$(cat requirements.txt requirements-tests.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$wanted" ]; then
    echo "test-py38: installing requirements with $("$VENV/bin/python" -m pip --version | cut -d' ' -f1-2)"
    started=$SECONDS
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        -r requirements.txt -r requirements-tests.txt
    echo "test-py38: requirements installed in $((SECONDS - started)) s"
    echo "$wanted" > "$STAMP"
fi

exec "$VENV/bin/python" -m pytest tests -q -p no:cacheprovider
