# Thin, self-documenting entry points; README and .ci/run use these targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY := .venv/bin/python
UV := python3 -m uv
PYTEST_ARGS ?=
# `up`, `setup` and `demo` run with the local profile devservers/local.env (replication 1,
# shrunk horizons, loopback delivery allowed); variables set in the environment win.
# TOPOLOGY=cluster: the stack, system and demo targets act on the production-shaped local
# topology instead (3 Kafka brokers, 3 Cassandra nodes, two of each service, RF 3; its own
# ports and .local/cluster/: devservers/README.md). The default, single, is unchanged.
TOPOLOGY ?= single
ifeq ($(filter $(TOPOLOGY),single cluster),)
$(error TOPOLOGY must be single or cluster, not "$(TOPOLOGY)")
endif
TOPO := $(if $(filter cluster,$(TOPOLOGY)),--topology cluster)

.PHONY: help install tools deploy-check stack-up stack-down stack-status setup up down status demo bench soak chaos lint format test test-unit test-cluster mutation

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

install: .venv/.installed ## create .venv with the locked dependencies, test and benchmark extras (uv)
.venv/.installed: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install -q uv
	$(UV) sync --frozen --extra dev --extra bench
	@touch $@

# The tests that run these tools install them on demand too (tests/support/tools.py).
tools: ## install the test tools: pinned prebuilt deploy validators (helm, kubectl/kustomize, kubernetes-validate, promtool; ~20 s, no root), Debian's Chromium (root or sudo)
	bash deploy/tools/install.sh
	bash devservers/install_chromium.sh

deploy-check: install ## validate the Helm chart, kustomize manifests and alert rules
	bash deploy/tools/install.sh
	bash deploy/tools/check.sh

stack-up: install ## start local Kafka + Cassandra (downloads jars once; idempotent; restarts crashed ones; TOPOLOGY=cluster: 3 + 3 nodes)
	$(PY) devservers/stack.py $(TOPO) up

stack-down: ## stop the local Kafka + Cassandra
	@[ -x $(PY) ] && $(PY) devservers/stack.py $(TOPO) down || true

stack-status: install ## show what the local stack runs
	$(PY) devservers/stack.py $(TOPO) status

setup: stack-up ## create the Kafka topics and apply the Cassandra migrations (idempotent)
	$(PY) devservers/system.py $(TOPO) setup

up: stack-up ## run the whole system on the local stack: Kafka, Cassandra, setup, the four services (TOPOLOGY=cluster: two of each)
	$(PY) devservers/system.py $(TOPO) up

down: ## stop the services and the local stack
	@[ -x $(PY) ] && $(PY) devservers/system.py $(TOPO) down || true
	@$(MAKE) --no-print-directory stack-down

status: install ## what runs, and whether it answers
	@$(PY) devservers/stack.py $(TOPO) status; $(PY) devservers/system.py $(TOPO) status

demo: up ## schedule a spread of messages to a local receiver and watch them arrive
	$(PY) devservers/demo.py $(TOPO)

BENCH_ARGS ?=
bench: stack-up ## benchmark suite on the local stack -> BENCHMARKS.md, docs/bench/*.png (~35 min at most; BENCH_ARGS="--quick": ~5 min; "--with-10m" adds 10 M pending)
	$(PY) -m bench.suite $(BENCH_ARGS)

SOAK_ARGS ?= --duration-s 60 --rate 20 --horizon-s 120
soak: ## soak run against `make up` (SOAK_ARGS="--duration-s 600 --rate 20 --horizon-s 300")
	$(PY) bench/soak.py $(SOAK_ARGS)

CHAOS_ARGS ?=
chaos: install ## randomized fault campaign -> .local/chaos/<run>/report.md (CHAOS_ARGS="--topology cluster --duration-s 1800 --seed N --rate 50"; docs/CHAOS.md)
	$(PY) -m chaos.runner $(CHAOS_ARGS)

lint: install ## ruff (lint + format check), mypy (strict for the packages), the docs check (links, anchors, local paths)
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	$(PY) scripts/check_docs.py

format: install ## apply ruff formatting and safe fixes
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

test-unit: install ## fast tests only: no servers, no external tools (the `tools` ones run in `make test`)
	.venv/bin/pytest -m "unit and not tools" $(PYTEST_ARGS)

MUTATION_ARGS ?=
mutation: install ## mutation testing (mutmut) of the pure domain and the dispatcher's verdict with their unit tests; 4-17 min on 2 busy cores, not in CI (docs/TESTING.md)
	$(PY) scripts/mutation.py $(MUTATION_ARGS)

test: stack-up tools ## the whole suite against the real local stack (starts it if needed)
	@.venv/bin/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure"; exit 1; fi; exit $$rc

test-cluster: install ## the fault test on the 3-node cluster (starts it, kills a broker and a Cassandra node; ~5-8 min; not in `make test`)
	@.venv/bin/pytest -m cluster tests/e2e/test_cluster.py $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure"; exit 1; fi; exit $$rc
