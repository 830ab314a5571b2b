# A real node for the cluster tests (tests/cluster/) and `fluxsupport devcluster up --node`:
# kubelet, kube-controller-manager, kube-scheduler, kube-proxy, kubectl and the sandbox
# ("pause") program, built from hack/controlplane into the cache like kube-apiserver; the
# container runtime, the CNI plugins and iptables from Debian's packages. Included from the
# Makefile; `make test` needs `node`.
#
# The packages' own services stay unused: the node runs its own containerd with its own
# configuration, socket and state, inside a network and mount namespace of its own
# (operator/fluxsupport/devcluster/node.py). Where systemd runs, the containerd service that
# the package enables is stopped and disabled again.

NODE_BINARIES := /usr/bin/containerd /usr/sbin/runc /usr/lib/cni/bridge /usr/sbin/iptables
NODE_PACKAGES := containerd runc containernetworking-plugins iptables
NODE_SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
# Another apt run (a second engineer's install, unattended upgrades) holds the lock for a while.
NODE_APT := $(NODE_SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
  -o DPkg::Lock::Timeout=600 --no-install-recommends $(NODE_PACKAGES)

.PHONY: node node-packages

node: venv node-packages
	@command -v go >/dev/null || { echo "Go 1.26+ is needed to build the node's binaries: https://go.dev/dl/" >&2; exit 1; }
	$(BIN)/fluxsupport devcluster build node

node-packages: $(NODE_BINARIES)

$(NODE_BINARIES) &:
	@command -v apt-get >/dev/null || { echo "the node needs Debian's $(NODE_PACKAGES) (Debian 12 or newer)" >&2; exit 1; }
	@set -e; started=$$(date +%s); log=$$(mktemp); \
	echo "installing the node's runtime: apt-get install --no-install-recommends $(NODE_PACKAGES)"; \
	if ! $(NODE_APT) >$$log 2>&1; then \
	  if grep -qE "Unable to locate package|has no installation candidate" $$log; then \
	    echo "apt has no package lists: apt-get update"; \
	    $(NODE_SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q >$$log 2>&1 || { cat $$log; exit 1; }; \
	    $(NODE_APT) >$$log 2>&1 || { cat $$log; exit 1; }; \
	  else cat $$log; exit 1; fi; \
	fi; \
	rm -f $$log; \
	if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then \
	  $(NODE_SUDO) systemctl disable --now containerd >/dev/null 2>&1 || true; \
	fi; \
	for binary in $(NODE_BINARIES); do test -x $$binary; done; \
	echo "node runtime installed in $$(( $$(date +%s) - started )) s"
