#!/usr/bin/env bash
# make test-py38: an EXTRA run on Python 3.8, NOT a replacement for `make test`.
#
# `make test` runs the whole suite under StackStorm's own code (st2-run-pack-tests in .venv,
# Python 3.11). StackStorm cannot be installed on Python 3.8 (its lockfile needs 3.10+), so
# this run is plain pytest over the core test modules only: those that import no StackStorm
# (lib/retraction's engine, policy, validation, config, ledger, metrics, providers and CLI,
# and the sandbox tenant). It checks that the pack's library still works on Python 3.8, the
# Python StackStorm 3.8 runs packs on (Ubuntu 20.04, RHEL 8). The action, sensor, alias,
# rule and workflow tests run in `make test` only.
#
# Builds .venv38 from requirements.txt + requirements-tests.txt minus the packages only
# StackStorm's own tests use, with the pip that Python 3.8's venv bundles, on purpose not
# upgraded: an older pip must resolve both files quickly too, as it does in a pack virtualenv.
# Lint runs once, in `make test`. No Python 3.8 on the machine: says so and exits 0.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

VENV="${VENV38:-.venv38}"
STAMP="$VENV/.requirements-sha256"

# requirements-tests.txt lines for StackStorm's own test tooling (StackStorm-engine tests).
ST2_ONLY='^[[:space:]]*(mongomock|webtest)([^A-Za-z0-9_.-]|$)'

# The core test modules: they import no StackStorm (directly or through a tests/ helper).
# A module added here that does import StackStorm fails this run at collection.
CORE_TESTS=(
    tests/test_campaign.py
    tests/test_cli.py
    tests/test_config.py
    tests/test_engine.py
    tests/test_gmail_batch_equivalence.py
    tests/test_ledger.py
    tests/test_ledger_decisions.py
    tests/test_ledger_migrations.py
    tests/test_metrics.py
    tests/test_metrics_query.py
    tests/test_policy.py
    tests/test_provider_gmail.py
    tests/test_provider_graph.py
    tests/test_run_counts.py
    tests/test_sandbox_cloudflare.py
    tests/test_sandbox_control.py
    tests/test_sandbox_core.py
    tests/test_sandbox_entra.py
    tests/test_sandbox_gmail.py
    tests/test_sandbox_gmail_batch.py
    tests/test_sandbox_google_oauth.py
    tests/test_sandbox_graph.py
    tests/test_validation.py
    tests/test_verdicts_cloudflare.py
)

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
echo "test-py38: an extra run, not a replacement for make test: the core modules on $PY38 ($("$PY38" -c 'import sys; print(sys.version.split()[0])'))"

for module in "${CORE_TESTS[@]}"; do
    if [ ! -f "$module" ]; then
        echo "test-py38: $module is listed in tools/ci/test_py38.sh but does not exist" >&2
        exit 1
    fi
done

if [ -x "$VENV/bin/python" ] && ! is_py38 "$VENV/bin/python"; then
    rm -rf "$VENV"   # left by another Python: rebuild rather than mix
fi
if [ ! -x "$VENV/bin/python" ]; then
    "$PY38" -m venv "$VENV"
    echo '*' > "$VENV/.gitignore"   # keep the venv out of git whatever .gitignore says
fi

# requirements-tests.txt without StackStorm's test tooling, kept in the venv for pip -r.
TEST_REQUIREMENTS="$VENV/requirements-tests-py38.txt"
grep -v -i -E "$ST2_ONLY" requirements-tests.txt > "$TEST_REQUIREMENTS"

# Reinstall only when a requirements file changed since the last install.
wanted="$(cat requirements.txt "$TEST_REQUIREMENTS" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$wanted" ]; then
    echo "test-py38: installing requirements with $("$VENV/bin/python" -m pip --version | cut -d' ' -f1-2)"
    started=$SECONDS
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        -r requirements.txt -r "$TEST_REQUIREMENTS"
    echo "test-py38: requirements installed in $((SECONDS - started)) s"
    echo "$wanted" > "$STAMP"
fi

# The same sys.path as `make test` (tests/conftest.py puts lib/, sensors/, actions/,
# actions/lib/ and the pack root first), with no StackStorm installed.
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider "${CORE_TESTS[@]}"
