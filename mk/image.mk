# The operator image, built from the Dockerfile without Docker. Included from the Makefile;
# `make test` needs `image` (tests/packaging/test_image.py runs it).
#
#   make image   buildah and mmdebstrap from Debian's packages (installed once, as RT is), then
#                `fluxsupport devcluster image`: base images from Debian bookworm packages, the
#                Dockerfile built by buildah on them, the result as an OCI archive in
#                $(FLUXSUPPORT_CACHE)/image/fluxsupport.oci.tar. Rebuilt only when the
#                Dockerfile, constraints.txt, pyproject.toml, README.md or operator/ change.
#                Needs root (mmdebstrap's root mode, buildah's chroot isolation).
#
# docs/install.md ("Building the image without Docker") has the figures.

IMAGE_TOOLS := /usr/bin/buildah /usr/bin/mmdebstrap
IMAGE_PACKAGES := buildah mmdebstrap
IMAGE_SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
IMAGE_APT := $(IMAGE_SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 $(IMAGE_PACKAGES)

.PHONY: image image-tools

test: image

image-tools: $(IMAGE_TOOLS)

$(IMAGE_TOOLS):
	@command -v apt-get >/dev/null || { echo "the image is built with Debian's buildah and mmdebstrap: install $(IMAGE_PACKAGES) (Debian 12 or newer)" >&2; exit 1; }
	@set -e; started=$$(date +%s); log=$$(mktemp); \
	echo "installing the image tools: apt-get install --no-install-recommends $(IMAGE_PACKAGES)"; \
	if ! $(IMAGE_APT) >$$log 2>&1; then \
	  if grep -qE "Unable to locate package|has no installation candidate" $$log; then \
	    echo "apt has no package lists: apt-get update"; \
	    $(IMAGE_SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q >$$log 2>&1 || { cat $$log; exit 1; }; \
	    $(IMAGE_APT) >$$log 2>&1 || { cat $$log; exit 1; }; \
	  else cat $$log; exit 1; fi; \
	fi; \
	rm -f $$log; \
	test -x /usr/bin/buildah && test -x /usr/bin/mmdebstrap; \
	echo "buildah and mmdebstrap installed in $$(( $$(date +%s) - started )) s"

image: venv image-tools
	$(IMAGE_SUDO) env FLUXSUPPORT_CACHE="$(FLUXSUPPORT_CACHE)" $(BIN)/fluxsupport devcluster image --sizes
