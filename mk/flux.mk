# Flux's source-controller, kustomize-controller and helm-controller, built from their Go
# modules through the wrapper modules in hack/flux (regenerate them with hack/flux/generate.py),
# for the GitOps tests (tests/integration/test_flux_gitops.py runs the first two as processes)
# and the cluster tests (tests/cluster/ runs all three as Pods). Included from the Makefile;
# `make test` needs `flux`. Cold: about 7 and 4.5 minutes on 2 cores for the first two, HC_COLD
# for helm-controller; cached afterwards in $(FLUXSUPPORT_CACHE)/bin like the control plane.

.PHONY: flux

flux: venv
	@command -v go >/dev/null || { echo "Go 1.26+ is needed to build Flux's controllers: https://go.dev/dl/" >&2; exit 1; }
	$(BIN)/fluxsupport devcluster build flux
