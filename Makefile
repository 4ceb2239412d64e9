# The two commands of the README: `make demo` and `make test`. Both set everything up themselves:
# the virtualenv and Python packages from PyPI, the Kafka jars from Maven Central, a local broker.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_RUN := $(CURDIR)/.run/kafka
TEST_RUN := $(CURDIR)/.run/test-kafka
PYTEST_ARGS ?=
SUITE ?= all

.PHONY: help install jars toxiproxy k8s registry promtool kafka-up kafka-down demo test test-matrix lint typecheck unit bench report clean

help:
	@echo "make demo   - set up, start a local Kafka, run the main job, print where the result is"
	@echo "make test   - set up, lint, type-check, run every test against a real local Kafka"
	@echo "make bench  - benchmarks (results under benchmarks/results/); SUITE=scale (or batch, eos...) for one suite"
	@echo "make test-matrix - the core integration tests against Kafka 4.1, 4.2, 4.3 and 4.4 (docs/compatibility.md)"

$(STAMP): pyproject.toml tools/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]' -e './tools[report]'
	touch $@

install: $(STAMP)

jars: install
	@$(BIN)/python -c 'from pyrallel_tools.localkafka.jars import ensure_jars; print("Kafka jars:", ensure_jars())'

# The TCP fault proxy of the fault tests, built once with `go install` into the same cache (needs go).
toxiproxy: install
	@$(BIN)/python -c 'from pyrallel_tools.faults.toxiproxy import ensure_toxiproxy; print("Toxiproxy:", ensure_toxiproxy())'

# The Kubernetes test bed of tests/k8s: etcd, kube-apiserver and Helm built with Go into the same cache (the first
# build takes ~10 minutes on two cores), and the third-party CRDs the chart's optional objects need.
k8s: install
	@$(BIN)/python -c 'from pyrallel_tools.localk8s.binaries import ensure_k8s; print("Kubernetes test bed:", ensure_k8s().helm.parent)'
	@$(BIN)/python -c 'from pyrallel_tools.localk8s.crds import ensure_crds; print("CRDs:", ensure_crds())'

# The schema registry of the typed-record tests: Apicurio Registry's runnable distribution, resolved with Maven from
# Maven Central into the same cache (~30 s and ~170 MB the first time); it runs on the JDK 21+.
registry: install
	@$(BIN)/python -c 'from pyrallel_tools.localregistry.distribution import ensure_registry; print("Schema registry:", ensure_registry())'

kafka-up: jars
	$(BIN)/pyrallel kafka up --connect --run-dir $(DEMO_RUN)

kafka-down: install
	$(BIN)/pyrallel kafka down --run-dir $(DEMO_RUN)

# Runs a command with PYRALLEL_BOOTSTRAP_SERVERS / PYRALLEL_CONNECT_URL of a fresh local Kafka in $(1),
# and stops that Kafka afterwards whatever the command's outcome.
define with_kafka
	@$(BIN)/pyrallel kafka down --run-dir $(1) >/dev/null
	$(BIN)/pyrallel kafka up --connect --run-dir $(1)
	@status=0; \
	PYRALLEL_BOOTSTRAP_SERVERS=$$($(BIN)/pyrallel kafka address --run-dir $(1)) \
	PYRALLEL_CONNECT_URL=$$($(BIN)/pyrallel kafka address --connect --run-dir $(1)) \
	  $(2) || status=$$?; \
	$(BIN)/pyrallel kafka down --run-dir $(1) >/dev/null; exit $$status
endef

demo: jars
	$(call with_kafka,$(DEMO_RUN),$(BIN)/pyrallel demo)

report: jars
	$(call with_kafka,$(DEMO_RUN),$(BIN)/pyrallel scenario run)

# SUITE=scale|batch|recovery|... runs one suite of `pyrallel bench --suite` (see `pyrallel bench --help`).
bench: jars
	$(call with_kafka,$(DEMO_RUN),$(BIN)/pyrallel bench --suite $(SUITE))

lint: install
	$(BIN)/ruff check src tools tests
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

unit: promtool
	$(BIN)/pytest -m unit $(PYTEST_ARGS)

# promtool validates and unit-tests deploy/monitoring (tests/unit/test_monitoring_rules.py): built with go install
# into the same cache (~6 minutes the first time), no system package.
promtool: install
	@$(BIN)/python -c 'from pyrallel_tools.promtool import ensure_promtool; print("promtool:", ensure_promtool())'

# The suite on one broker (the default Kafka version), then the fault suite (tests/faults) on a 3-broker cluster
# behind Toxiproxy that its pytest session starts and stops itself.
test: promtool jars toxiproxy k8s registry lint typecheck
	$(call with_kafka,$(TEST_RUN),$(BIN)/pytest -m "not faults" $(PYTEST_ARGS))
	$(BIN)/pytest -m faults $(PYTEST_ARGS)

# The core integration tests against each version of COMPATIBILITY_VERSIONS, one fresh broker each (the matrix
# resolves every version's jars itself); writes docs/compatibility.md. MATRIX_ARGS, e.g. "--versions 4.2.2 -- -x".
test-matrix: jars
	$(BIN)/python -m pyrallel_tools.compat_matrix $(MATRIX_ARGS)

clean:
	-$(BIN)/pyrallel kafka down --run-dir $(DEMO_RUN)
	-$(BIN)/pyrallel kafka down --run-dir $(TEST_RUN)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
