"""The Kubernetes client layer: our only code that talks to the API server (kopf, driven from
app/, is the other, and logs in through kube/credentials.py too).

One credential loader, the async client the operator writes with, the blocking client of the
CLI, list+watch reflectors, Events, and the peering gate.
"""
