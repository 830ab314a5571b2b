"""The pure domain: calendars, SLA deadlines, severity, inventory verdicts.

Nothing in this package performs Kubernetes I/O; the handlers feed it plain data.
"""
