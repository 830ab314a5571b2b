"""Prometheus metrics and the HTTP endpoints that serve them and the probes."""
