"""The Kubernetes client layer: the only package that talks to the API server.

One credential loader, the async client the operator writes with, the blocking client of the
CLI, list+watch reflectors, Events, and the peering gate.
"""
