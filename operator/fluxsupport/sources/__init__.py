"""Where the operator's inputs come from: the live Flux inventory and the SLA policy."""
