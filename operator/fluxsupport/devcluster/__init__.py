"""A real local Kubernetes control plane (etcd + kube-apiserver) built from Go modules.

Used by the integration tests and by ``fluxsupport demo`` on machines without a
container engine. Nothing here is needed to run the operator in a cluster.
"""
