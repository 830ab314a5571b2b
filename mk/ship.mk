# Shipping targets: Helm chart, alert rules, Dockerfile. Included from the Makefile.
#
#   make promtool       promtool (Debian's prometheus 2.42) unpacked into the cache, no root needed;
#                       the prometheus server next to it runs in tests/integration/test_alerting_e2e.py
#   make alertmanager   Debian's prometheus-alertmanager 0.25, unpacked the same way
#   make chart-sync     generate the chart's crds/ and files/ from their one source: the CRDs
#                       shipped in the package (operator/fluxsupport/crds/) and the alert rules
#                       (tests/tools/test_chart.py fails while the copies differ)
#   make ship-lint      helm lint, promtool check/test rules, hadolint
#   make chart-package  helm package into dist/
#
# `make test` gets promtool as a prerequisite: tests/tools/test_alerts.py and test_chart.py fail
# (not skip) without it. tests/unit needs none of these tools.

# Keep the including Makefile's default goal (its first target), whatever the include order.
_SHIP_DEFAULT_GOAL := $(.DEFAULT_GOAL)

VENV ?= .venv
BIN ?= $(VENV)/bin
FLUXSUPPORT_CACHE ?= $(HOME)/.cache/fluxsupport
export FLUXSUPPORT_CACHE

CHART_DIR := charts/fluxsupport
PROMETHEUS_DIR := $(FLUXSUPPORT_CACHE)/prometheus
# tests/tools/test_alerts.py looks here first, then for promtool on PATH.
PROMTOOL := $(PROMETHEUS_DIR)/usr/bin/promtool
# tests/prometheus.py runs both servers from here.
ALERTMANAGER_DIR := $(FLUXSUPPORT_CACHE)/alertmanager
ALERTMANAGER := $(ALERTMANAGER_DIR)/usr/bin/prometheus-alertmanager
# Debian's build reads its default notification templates from this absolute path (no flag moves
# it; without them it refuses every config), so they alone are copied there from the package.
ALERTMANAGER_TEMPLATES := /usr/share/prometheus/alertmanager
SHIP_SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
HELM = $(shell $(BIN)/python -c 'from fluxsupport.devcluster import build; print(build.binary_path("helm"))')

.PHONY: promtool alertmanager chart-sync helm ship-lint chart-package

test: promtool alertmanager

promtool: $(PROMTOOL)

# `apt-get download` needs no root: it fetches the .deb into the current directory, and
# `dpkg-deb -x` unpacks it without running maintainer scripts or starting a service.
# Only when that fails (no package lists yet, for instance) fall back to installing it.
$(PROMTOOL):
	@mkdir -p $(PROMETHEUS_DIR)/deb
	@if ( cd $(PROMETHEUS_DIR)/deb && apt-get download prometheus ) \
	    && dpkg-deb -x "$$(ls -t $(PROMETHEUS_DIR)/deb/prometheus_*.deb | head -n1)" $(PROMETHEUS_DIR); then \
	  rm -rf $(PROMETHEUS_DIR)/deb; \
	else \
	  rm -rf $(PROMETHEUS_DIR)/deb; \
	  echo "apt-get download prometheus failed; installing the package instead" >&2; \
	  { apt-get update && apt-get install -y --no-install-recommends prometheus; } \
	    || { echo "promtool is missing: install Debian's prometheus package (it ships promtool)" >&2; exit 1; }; \
	  mkdir -p $(dir $(PROMTOOL)) && ln -sf "$$(command -v promtool)" $(PROMTOOL); \
	fi
	@$(PROMTOOL) --version 2>&1 | head -n1

alertmanager: $(ALERTMANAGER) $(ALERTMANAGER_TEMPLATES)/default.tmpl

$(ALERTMANAGER_TEMPLATES)/default.tmpl: | $(ALERTMANAGER)
	$(SHIP_SUDO) install -D -m 644 -t $(ALERTMANAGER_TEMPLATES) \
	  $(ALERTMANAGER_DIR)$(ALERTMANAGER_TEMPLATES)/default.tmpl \
	  $(ALERTMANAGER_DIR)$(ALERTMANAGER_TEMPLATES)/email.tmpl

# As promtool, but no fallback to `apt-get install`: the package's service would start and
# listen on every interface. Missing package lists are the usual failure: update them once.
$(ALERTMANAGER):
	@rm -rf $(ALERTMANAGER_DIR)/deb && mkdir -p $(ALERTMANAGER_DIR)/deb
	@( cd $(ALERTMANAGER_DIR)/deb && apt-get download prometheus-alertmanager ) \
	  || { apt-get update && ( cd $(ALERTMANAGER_DIR)/deb && apt-get download prometheus-alertmanager ); } \
	  || { rm -rf $(ALERTMANAGER_DIR)/deb; \
	       echo "apt-get download prometheus-alertmanager failed (run apt-get update as root)" >&2; exit 1; }
	@dpkg-deb -x "$$(ls -t $(ALERTMANAGER_DIR)/deb/prometheus-alertmanager_*.deb | head -n1)" $(ALERTMANAGER_DIR)
	@rm -rf $(ALERTMANAGER_DIR)/deb
	@$(ALERTMANAGER) --version 2>&1 | head -n1

# The package data is the source (the wheel and the image ship it); a CRD removed there is
# removed from the chart too.
CRD_SOURCE := operator/fluxsupport/crds

chart-sync:
	mkdir -p $(CHART_DIR)/crds $(CHART_DIR)/files
	rm -f $(CHART_DIR)/crds/*.yaml
	cp $(CRD_SOURCE)/*.yaml $(CHART_DIR)/crds/
	cp alerts/fluxsupport.rules.yaml $(CHART_DIR)/files/

helm: venv
	$(BIN)/fluxsupport devcluster build helm

ship-lint: venv helm promtool
	$(HELM) lint --strict $(CHART_DIR)
	$(PROMTOOL) check rules alerts/fluxsupport.rules.yaml
	cd alerts && $(PROMTOOL) test rules tests.yaml tests-30d.yaml
	$(BIN)/hadolint Dockerfile

chart-package: chart-sync helm
	mkdir -p dist
	$(HELM) package $(CHART_DIR) --destination dist

.DEFAULT_GOAL := $(_SHIP_DEFAULT_GOAL)
