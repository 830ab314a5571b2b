"""The run loop (runner.py) and what the operator asks of kopf (registrations.py).

kopf does two things in this operator. It logs in, through kube/credentials.py like every
other client of the process. With ``--peering`` it keeps this replica's keep-alive (identity,
priority, lifetime) in the ClusterKopfPeering object, and removes it when the process stops.

kopf does nothing else: it watches no kind of the operator's, runs no reconcile, posts no Event,
adds no finalizer and stores nothing in objects. Every kind (SupportCases, SecurityBulletins,
the FluxUpdateCheck, the Flux inventory, ConfigMaps, Flux sources, the peering object) comes
through the operator's own list+watch (kube/reflector.py); every reconcile runs from its
controller's scheduler; and whether this replica acts is decided once, by kube/peering.py's
PeeringGate from that peering object, for every scheduler and the Event poster. kopf applies
its own peering rule too, to its own (empty) set of handlers, so it pauses nothing of ours.

Every long-running part offers ``start`` and ``stop`` (lifecycle.Component); runner.py lists
them and runs the list.
"""
