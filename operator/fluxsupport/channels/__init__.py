"""The support team's channels: the helpdesk portal and email (I/O adapters)."""
