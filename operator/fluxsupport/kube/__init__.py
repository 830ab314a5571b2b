"""The Kubernetes client layer: our only code that talks to the API server (kopf's peering
keep-alive, driven from app/, is the other, and logs in through kube/credentials.py too).

One credential loader, the async client the operator reads and writes with, where each kind
lives and the typed operations on it (objects.py), the blocking client of the CLI, list+watch
reflectors, Secrets, Events, and the peering gate.
"""
