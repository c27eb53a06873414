# jobqueue-operator: every entry point a user or CI needs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DEVENV := PYTHONPATH=devenv $(PY) -m jobqueue_devenv
PYTEST_ARGS ?=

.PHONY: help deps system-deps python-deps binaries test-tools cluster-up cluster-down cluster-status \
        lint unit test demo bench soak constraints clean manifests logs monitoring chart-docs monitoring-picture images \
        user-image prometheus

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

demo: deps binaries images ## the main job: a local cluster, shown, then torn down
	@$(DEVENV) demo

TEST_WORKERS ?= 2

test: deps binaries test-tools images lint ## install everything, then run the whole test suite
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

unit: python-deps ## only the fast tests that need no cluster
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: python-deps ## ruff, mypy and the import contracts (pure modules stay pure)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

SOAK_ARGS ?=

soak: deps binaries images ## the fault-injection suite with >= 10,000 tasks (node faults on 3 nodes): a table, bench/results/soak.json
	@eval "$$($(DEVENV) up $(if $(NODES),--nodes $(NODES)) | tail -n 1)" && PYTHONPATH=devenv $(PY) -m bench.soak $(SOAK_ARGS)

cluster-up: deps binaries ## start the local cluster (or reuse it), NODES=3 for three nodes; last line: export KUBECONFIG=...
	@$(DEVENV) up $(if $(NODES),--nodes $(NODES))

cluster-down: python-deps ## stop the local cluster; no process or port is left behind
	@$(DEVENV) down

cluster-status: python-deps ## is the local cluster running?
	@$(DEVENV) status

logs: python-deps ## a Pod's container logs: make logs POD=<namespace>/<name> [CONTAINER=<name>]
	@test -n "$(POD)" || { echo "usage: make logs POD=<namespace>/<name> [CONTAINER=<name>]" >&2; exit 2; }
	@$(DEVENV) logs $(POD) $(if $(CONTAINER),-c $(CONTAINER))

bench: deps binaries images ## benchmarks: printed tables, JSON in bench/results/
	PYTHONPATH=devenv $(PY) bench/cluster_startup.py
	PYTHONPATH=devenv $(PY) bench/pod_startup.py
	PYTHONPATH=devenv $(PY) bench/operator_reconcile.py
	PYTHONPATH=devenv $(PY) bench/status_latency.py
	PYTHONPATH=devenv $(PY) bench/operator_tick.py
	PYTHONPATH=devenv $(PY) bench/worker_throughput.py
	PYTHONPATH=devenv $(PY) bench/operator_failover.py
	$(PY) -m bench.autoscale.suite
	PYTHONPATH=devenv $(PY) -m bench.nodeloss

HELM ?= $(shell PYTHONPATH=devenv $(PY) -c 'from jobqueue_devenv import binaries; print(binaries.find().helm)' 2>/dev/null)
CHART := charts/jobqueue-operator

manifests: python-deps ## regenerate manifests/ from the chart (tests/integration/chart fails when they drift)
	@mkdir -p manifests/crds
	cp $(CHART)/crds/jobqueues.jobqueue.dev.yaml manifests/crds/
	$(HELM) template jobqueue-operator $(CHART) --namespace jobqueue-system --kube-version 1.36.3 --include-crds \
	  > manifests/install.yaml

HELM_DOCS ?= $(shell PYTHONPATH=devenv $(PY) -c 'from jobqueue_devenv import binaries; print(binaries.tool("helm-docs"))' 2>/dev/null)
MONITORING_PATH := PYTHONPATH=devenv:operator:worker:monitoring

monitoring: python-deps test-tools ## regenerate dashboards, alert rules, runbooks, the chart README and manifests/ (tests fail on drift)
	$(MONITORING_PATH) $(PY) -m jobqueue_monitoring
	@$(MAKE) --no-print-directory chart-docs manifests

chart-docs: python-deps ## charts/jobqueue-operator/README.md from values.yaml comments (helm-docs)
	$(HELM_DOCS) --chart-search-root charts

prometheus: deps binaries test-tools ## a Prometheus on the host scraping the local cluster as the chart's monitors say; Ctrl-C stops it
	@$(DEVENV) prometheus $(if $(PORT),--port $(PORT)) $(if $(RELEASE),--release $(RELEASE)) $(if $(RELEASE_NAMESPACE),--namespace $(RELEASE_NAMESPACE))

monitoring-picture: deps binaries test-tools ## the per-queue dashboard drawn from a live burst, into $TMPDIR (OUT=docs/images/queue-dashboard.png refreshes the docs')
	$(MONITORING_PATH) $(PY) -m jobqueue_monitoring.picture $(if $(OUT),--out $(OUT))

deps: system-deps python-deps ## system packages (apt-get) and the Python virtualenv

system-deps:
	@bash devenv/install-system-deps.sh

python-deps: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	@echo "==> installing Python packages into $(VENV)" >&2
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]' >&2
	@touch $@

binaries: python-deps ## build (once, then cached) etcd, kube-apiserver & co., kubectl and helm
	@$(DEVENV) binaries

images: deps ## build (layers cached) the operator, worker and examples images with buildah: no Docker needed
	@$(DEVENV) images

user-image: deps images ## your own image for the local cluster: make user-image TAG=myapp:dev CONTEXT=dir [DOCKERFILE=path]
	@test -n "$(TAG)" -a -n "$(CONTEXT)" || { echo "usage: make user-image TAG=myapp:dev CONTEXT=dir [DOCKERFILE=path]" >&2; exit 2; }
	@$(DEVENV) build -t $(TAG) $(if $(DOCKERFILE),-f $(DOCKERFILE)) $(CONTEXT)

test-tools: python-deps ## build (once, then cached) what only the tests run: prometheus and promtool
	@$(DEVENV) binaries --tools

# Also pinned: hatchling, the images' build backend (PIP_CONSTRAINT reaches pip's build environment), and
# async-timeout, which redis needs on Debian's Python 3.11.2 (the images' stand-in base).
constraints: ## re-pin constraints.txt to the newest versions pyproject.toml allows
	rm -rf $(VENV).pins && $(PYTHON) -m venv $(VENV).pins
	$(VENV).pins/bin/pip install --quiet -e '.[dev]'
	$(VENV).pins/bin/pip install --quiet hatchling async-timeout
	{ echo "# Exact versions CI and 'make deps' install (pip install -c constraints.txt). Refresh: make constraints"; \
	  $(VENV).pins/bin/pip freeze --exclude-editable; } > constraints.txt
	rm -rf $(VENV).pins

clean: ## remove the virtualenv (the binary cache in ~/.cache/jobqueue-operator stays)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
