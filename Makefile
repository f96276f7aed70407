# make test: lint, then the whole test suite under StackStorm's own code: st2-run-pack-tests,
#            in .venv, a StackStorm test environment built from $(ST2_SHARED) (StackStorm's
#            wheels and its lockfile as pip constraints; see $(ST2_SHARED)/README.md).
# make lint: the StackStorm Exchange checks plus Python 3.8 compatibility.
# make venv: only build (or bring up to date) .venv.

SHELL := /bin/bash
.DEFAULT_GOAL := test

# StackStorm's wheelhouse: wheels/, constraints.txt, st2tests-conf/ (../shared/st2/README.md).
ST2_SHARED ?= ../shared/st2
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Reinstalled only when one of the requirements files changed since the last install.
STAMP := $(VENV)/.st2-requirements-installed
REQUIREMENTS := requirements.txt requirements-tests.txt $(wildcard $(ST2_SHARED)/constraints.txt)

# StackStorm's lockfile is valid for CPython 3.10-3.12 and its wheels were built with 3.11:
# Python 3.11 is required. PYTHON311 may name one; else python3.11 on PATH, then pyenv's.
# Each candidate is run once: a pyenv shim for a version that is not selected fails.
ifeq ($(origin PYTHON311), undefined)
PYTHON311 := $(shell for p in python3.11 "$${PYENV_ROOT:-$$HOME/.pyenv}"/versions/3.11*/bin/python3.11 \
                 /usr/bin/python3.11 /usr/local/bin/python3.11; do \
               if "$$p" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
                    >/dev/null 2>&1; then command -v "$$p"; break; fi; done)
endif

# Exactly the packages of $(ST2_SHARED)/README.md "Install": StackStorm's components, every
# runner, and what StackStorm's tests use (webtest, mongomock, pytest).
ST2_PACKAGES := st2common st2tests st2reactor st2actions st2api st2client webtest \
    stackstorm-runner-python stackstorm-runner-orquesta stackstorm-runner-local \
    stackstorm-runner-noop stackstorm-runner-inquirer stackstorm-runner-action-chain \
    stackstorm-runner-announcement stackstorm-runner-http stackstorm-runner-remote \
    stackstorm-runner-winrm mongomock pytest
ST2_CONSTRAINTS := -c $(ST2_SHARED)/constraints.txt

# Directories that exist today: every check copes with a missing one.
CODE_DIRS := $(wildcard lib actions sensors sandbox tests bench tools)
# Pack code that StackStorm may run on Python 3.8.
PY38_DIRS := $(wildcard lib actions sensors sandbox tests bench)

.PHONY: test lint venv clean

# st2-run-pack-tests: the copy StackStorm's st2common wheel installs into $(VENV)/bin,
# unmodified. -x: no per-pack virtualenv (this is it); -j: no pip installs (done above). It
# runs `python3 -m pytest -s -v tests/` from the pack root, with the pack's lib/, sensors/,
# actions/ and actions/lib/ on PYTHONPATH, and exits with pytest's code (5: nothing collected).
test: lint
	PATH="$(abspath $(VENV))/bin:$$PATH" st2-run-pack-tests -x -j -p .

lint: $(STAMP)
	$(PY) -m compileall -q $(CODE_DIRS)
	$(PY) -m flake8 $(CODE_DIRS)
	$(PY) tools/lint/check_license.py LICENSE
	$(PY) tools/lint/check_parse.py .
	$(PY) tools/lint/check_config_example.py
	$(VENV)/bin/vermin -q -t=3.8- --no-tips --violations $(PY38_DIRS)
	$(PY) tools/lint/check_py38_annotations.py $(PY38_DIRS)

venv: $(STAMP)

# The StackStorm test environment, as $(ST2_SHARED)/README.md "Install" builds it: the st2
# wheels under StackStorm's constraints, then the pack's requirements.txt and
# requirements-tests.txt under the same constraints (requirements-tests.txt accepts the
# pytest StackStorm pins). Then the test datastore key, where st2tests/config.py points
# keyvalue.encryption_key_path: <dir of st2tests>/../../st2tests/conf, which a venv lacks
# ($(ST2_SHARED)/README.md, "What differs"). A $(VENV) left by another Python is rebuilt.
$(STAMP): $(REQUIREMENTS)
	@if [ -z "$(PYTHON311)" ]; then \
	    echo "make: Python 3.11 is required (StackStorm's lockfile and wheels), and none was" \
	         "found: not python3.11 on PATH, nor pyenv's 3.11.x. Install it, or set" \
	         "PYTHON311=/path/to/python3.11." >&2; \
	    exit 1; \
	fi
	@if [ ! -d "$(ST2_SHARED)/wheels" ]; then \
	    echo "make: no StackStorm wheelhouse at ST2_SHARED=$(ST2_SHARED) (expected" \
	         "wheels/ and constraints.txt there, see its README.md)" >&2; \
	    exit 1; \
	fi
	@if [ -x "$(PY)" ] && ! "$(PY)" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
	        >/dev/null 2>&1; then \
	    echo "$(VENV) was built by another Python: rebuilding it with $(PYTHON311)"; \
	    rm -rf "$(VENV)"; \
	fi
	@if [ ! -x "$(PY)" ]; then \
	    echo "$(PYTHON311) -m venv $(VENV)"; \
	    "$(PYTHON311)" -m venv "$(VENV)"; \
	fi
	$(PIP) install -q --disable-pip-version-check --find-links $(ST2_SHARED)/wheels \
	    $(ST2_CONSTRAINTS) $(ST2_PACKAGES)
	$(PIP) install -q --disable-pip-version-check $(ST2_CONSTRAINTS) -r requirements.txt
	$(PIP) install -q --disable-pip-version-check $(ST2_CONSTRAINTS) -r requirements-tests.txt
	d="$$($(PY) -c "import importlib.util as u, os; print(os.path.normpath(os.path.join(os.path.dirname(u.find_spec('st2tests').origin), '..', '..', 'st2tests', 'conf')))")" \
	    && mkdir -p "$$d" \
	    && cp $(ST2_SHARED)/st2tests-conf/st2_kvstore_tests.crypto.key.json "$$d/"
	test -x $(VENV)/bin/st2-run-pack-tests
	touch $@

clean:
	rm -rf $(VENV)
	find . -name __pycache__ -type d -not -path './.git/*' -prune -exec rm -rf {} +

# make test-py38: an EXTRA run, not a replacement for `make test`: the core test modules
# (those that import no StackStorm: lib/retraction, sandbox, ledger, metrics, providers,
# validation, config, the CLI) with plain pytest on Python 3.8, the Python StackStorm 3.8
# runs packs on. StackStorm itself cannot run there (its lockfile needs 3.10+). Installs
# into .venv38; says so and passes when no Python 3.8 is found (tools/ci/test_py38.sh).
.PHONY: test-py38
test-py38:
	bash tools/ci/test_py38.sh

# make demo: the pack's sensors, rules, actions and workflows on a local sandbox tenant,
# narrated step by step (tools/demo.py), in the same StackStorm environment as `make test`.
.PHONY: demo
demo: $(STAMP)
	$(PY) tools/demo.py
