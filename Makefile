# pgkeeper: the two commands a newcomer needs are `make test` and `make demo`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TOOLS := .venv-tools
BENCH ?= all
QUICK ?=
# `make build ARCH=x86_64`: the template's Architecture parameter and the layer's wheels move together.
ARCH ?= arm64
BUILD_DIR ?= .aws-sam/build
# SAM needs a region, never credentials, for validate/build; no telemetry from CI.
SAM := SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=us-east-1 $(TOOLS)/bin/sam

.PHONY: help venv tools services test test-fast lint template-check build deploy demo bench clean

help:
	@echo "make test    - lint, template checks, and the whole test suite against real services"
	@echo "make demo    - run the jobs against a throwaway database and show their reports"
	@echo "make build   - sam build (no Docker needed)"
	@echo "make bench BENCH=<name> [QUICK=1] - benchmarks (refresh, coldstart, ...)"

$(BIN)/.installed: pyproject.toml layers/common/requirements.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

venv: $(BIN)/.installed

# aws-sam-cli pins its own boto3 and cfn-lint: it gets a venv of its own.
$(TOOLS)/.installed: requirements-tools.txt
	@test -x $(TOOLS)/bin/python || $(PY) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q --disable-pip-version-check -r requirements-tools.txt
	@touch $@

tools: $(TOOLS)/.installed

services:
	@scripts/services.sh

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

template-check: tools
	$(TOOLS)/bin/cfn-lint template.yaml
	$(SAM) validate --lint --template template.yaml

# Two pytest-xdist workers: the suite waits on PostgreSQL, subprocesses and builds as much as it
# computes. Tests that share state beyond their own database run on one worker (xdist_group).
WORKERS ?= 2
# The built bundle is tested under CPython 3.13 (the runtime's): scripts/python313.sh finds or fetches it.
test: venv services lint template-check
	PGKEEPER_PYTHON313="$$(scripts/python313.sh)" $(BIN)/pytest -q -n $(WORKERS) --dist loadgroup

test-fast: venv services
	$(BIN)/pytest -q -x tests/unit

# The layer's pip is the tools venv's own: `python3 -m pip` through a pyenv shim rehashes the shims
# after installing, and two builds side by side (the tests build both architectures) collide on it.
# The layer is precompiled by a CPython 3.13 that scripts/python313.sh finds (or fetches); the built
# template then allows only the architecture built (scripts/stamp_architecture.py says why).
build: tools
	PGKEEPER_ARCH=$(ARCH) PIP="$(CURDIR)/$(TOOLS)/bin/python -m pip" \
		PYTHON313="$$(scripts/python313.sh || true)" \
		$(SAM) build --template template.yaml --build-dir $(BUILD_DIR) --parameter-overrides Architecture=$(ARCH)
	$(TOOLS)/bin/python scripts/stamp_architecture.py $(BUILD_DIR)/template.yaml $(ARCH)

# `sam deploy --guided` on the build; README's Deploy section says what to answer. Scheduler names
# are `<stack>-vacuum-analyze` (64 at most), so a stack name has at most 49 characters. Not $(SAM):
# its fixed region would become the guided deploy's default. STACK= only when given (the name
# samconfig.toml saved at the first deploy stays the default otherwise).
STACK ?=
MAX_STACK_NAME := 49
deploy: tools
	@test -f $(BUILD_DIR)/template.yaml || { echo "deploy: no build in $(BUILD_DIR): run make build first"; exit 2; }
	@test $$(printf %s "$(STACK)" | wc -c) -le $(MAX_STACK_NAME) || { echo "deploy: stack name '$(STACK)' \
	has $$(printf %s "$(STACK)" | wc -c) characters; at most $(MAX_STACK_NAME) (its schedules are named \
	<stack>-vacuum-analyze, 64 at most)"; exit 2; }
	SAM_CLI_TELEMETRY=0 $(TOOLS)/bin/sam deploy --guided --template-file $(BUILD_DIR)/template.yaml \
		$(if $(STACK),--stack-name $(STACK),)

demo: venv services
	$(BIN)/python -m demo

bench: venv services
	$(BIN)/python bench/run.py $(BENCH) $(if $(QUICK),--quick,)

clean:
	rm -rf .aws-sam .pytest_cache
