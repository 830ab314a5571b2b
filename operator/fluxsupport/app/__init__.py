"""The kopf application: operator settings, handler registrations and the run loop."""
