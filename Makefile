# fluxsupport: `make demo` and `make test` set up everything on a fresh machine.
# Prerequisites: Python 3.11+ and Go 1.26+ (Go builds the local control plane once).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export FLUXSUPPORT_CACHE ?= $(HOME)/.cache/fluxsupport
PYTEST_ARGS ?=

.PHONY: all venv tools lint test test-unit demo bench bench-cli bench-profile bench-size graph lock clean help

help:
	@echo "make demo    build what is missing, start a local control plane, run the operator"
	@echo "make test    lint, type-check, check the import layers and run every test tier:"
	@echo "             tests/unit (Python alone), tests/tools (promtool, helm, go-vex), tests/packaging"
	@echo "             (the wheel in a fresh venv, the image), tests/integration (a real kube-apiserver)"
	@echo "make test-unit   the unit tier only: no Go, helm, promtool, network or cluster"
	@echo "make flux    build Flux's source-, kustomize- and helm-controller for the GitOps tests"
	@echo "make image   the operator image from the Dockerfile, as an OCI archive (buildah; root)"
	@echo "make node    the node of tests/cluster and devcluster up --node: kubelet, containerd ..."
	@echo "make bench   benchmarks (QUICK=1 for the short run)"
	@echo "make bench-cli   CLI start-up against python -c pass (part of make bench too)"
	@echo "make bench-profile   where the API server spends a wave of breach writes"
	@echo "make bench-size   bytes etcd stores per case, and the cost of each patch type"
	@echo "make graph   draw the import graph in docs/architecture.md again"

$(BIN)/.installed: pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $@

venv: $(BIN)/.installed

tools: venv
	@command -v go >/dev/null || { echo "Go 1.26+ is needed to build the local control plane: https://go.dev/dl/" >&2; exit 1; }
	$(BIN)/fluxsupport devcluster build

lint: venv
	$(BIN)/ruff check operator tests hack bench
	$(BIN)/mypy
	$(BIN)/mypy tests/fakes.py
	$(BIN)/lint-imports

test: tools lint rt flux node
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: venv
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

demo: tools
	$(BIN)/fluxsupport demo

bench: tools
	$(BIN)/python -m bench $(if $(QUICK),--quick,)

bench-cli: venv
	$(BIN)/python -m bench.cli_startup

bench-profile: tools
	$(BIN)/python -m bench.apiserver_profile

bench-size: tools
	$(BIN)/python -m bench.object_size

graph: venv
	$(BIN)/python hack/gen-import-graph.py

lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet -e '.[dev]'
	{ echo "# Exact versions for every machine: pip install -c constraints.txt -e '.[dev]'"; \
	  echo "# Regenerate with: make lock"; \
	  .lock-venv/bin/pip freeze --exclude-editable; } > constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

include mk/ship.mk
include mk/rt.mk
include mk/flux.mk
include mk/image.mk
include mk/node.mk
