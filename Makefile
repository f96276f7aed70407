# make test: lint, then the whole test suite, in .venv (created and filled when needed).
# make lint: the StackStorm Exchange checks plus Python 3.8 compatibility.

SHELL := /bin/bash
.DEFAULT_GOAL := test

VENV ?= .venv
PY := $(VENV)/bin/python
# Prefer Python 3.11 (StackStorm 3.9's newest), else whatever python3 is.
BOOTSTRAP_PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
STAMP := $(VENV)/.requirements-installed

# Directories that exist today: every check copes with a missing one.
CODE_DIRS := $(wildcard lib actions sensors sandbox tests bench tools)
# Pack code that StackStorm may run on Python 3.8.
PY38_DIRS := $(wildcard lib actions sensors sandbox tests bench)

.PHONY: test lint venv clean

test: lint
	$(PY) -m pytest tests -q -p no:cacheprovider

lint: $(STAMP)
	$(PY) -m compileall -q $(CODE_DIRS)
	$(PY) -m flake8 $(CODE_DIRS)
	$(PY) tools/lint/check_license.py LICENSE
	$(PY) tools/lint/check_parse.py .
	$(PY) tools/lint/check_config_example.py
	$(VENV)/bin/vermin -q -t=3.8- --no-tips --violations $(PY38_DIRS)
	$(PY) tools/lint/check_py38_annotations.py $(PY38_DIRS)

venv: $(STAMP)

$(PY):
	$(BOOTSTRAP_PYTHON) -m venv $(VENV)

# Reinstall only when a requirements file changed since the last install.
$(STAMP): requirements.txt requirements-tests.txt | $(PY)
	$(PY) -m pip install -q -r requirements.txt -r requirements-tests.txt
	touch $@

clean:
	rm -rf $(VENV)
	find . -name __pycache__ -type d -not -path './.git/*' -prune -exec rm -rf {} +

# make test-py38: the whole suite again on Python 3.8 (StackStorm 3.8's pack Python) in .venv38,
# installed with the pip that 3.8's venv bundles; says so and passes when no 3.8 is found.
.PHONY: test-py38
test-py38:
	bash tools/ci/test_py38.sh

# make demo: the pack's sensors, rules, actions and workflows on a local sandbox tenant,
# narrated step by step (tools/demo.py; the sandbox runs as a subprocess and is stopped after).
.PHONY: demo
demo: $(STAMP)
	$(PY) tools/demo.py
