"""Benchmarks against the real API server (``make bench``; ``make bench QUICK=1``)."""
