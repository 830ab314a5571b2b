"""fluxsupport: business-hours support SLAs and security-bulletin verdicts for Flux CD."""

__version__ = "0.1.0"
