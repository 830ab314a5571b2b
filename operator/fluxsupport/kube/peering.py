"""Whether this replica may act: kopf's peering rule, applied once to everything the operator
does.

With ``--peering`` kopf keeps each replica's keep-alive in a ClusterKopfPeering object, and
pauses its own watch streams while a live peer of higher (or equal) priority exists. No kind of
the operator's goes through kopf (app/__init__.py): the watches, the schedulers and the Event
poster are the operator's own, and this gate is what stops them. kopf keeps its pause state
private, so ``PeeringGate`` watches the same ClusterKopfPeering object and applies kopf's rule
to it (kopf/_core/engines/peering.py, ``process_peering_event``):

* a peer is alive until ``lastseen + lifetime``;
* a live peer other than us with a higher priority pauses us;
* a live peer with the same priority pauses us too (kopf pauses both and warns);
* otherwise we act.

Like kopf, the gate starts closed and opens once the peering object shows no blocker; when the
object is missing, it stays closed (kopf stays paused then too). In standalone mode it is
always open.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import os
import secrets
import socket
from collections.abc import Mapping
from typing import Any

from fluxsupport import lifecycle
from fluxsupport.kube import api, objects

logger = logging.getLogger(__name__)


def own_identity() -> str:
    """This replica's key in the peering object, also the ``reportingInstance`` of its Events.

    ``POD_ID`` as kopf reads it when set, else host, pid and a random suffix: unique per process,
    so that a restarted replica never mistakes its predecessor's keep-alive for its own.
    """
    return os.environ.get("POD_ID") or (
        f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}")


@dataclasses.dataclass(frozen=True)
class Peer:
    identity: str
    priority: int
    deadline: datetime.datetime


def parse_peers(status: Mapping[str, Any], now: datetime.datetime) -> list[Peer]:
    """The live peers in a peering object's status; malformed entries count as dead."""
    peers = []
    for identity, info in status.items():
        if not isinstance(info, Mapping):
            continue
        try:
            seen = datetime.datetime.fromisoformat(str(info["lastseen"]).replace("Z", "+00:00"))
            if seen.tzinfo is None:
                seen = seen.replace(tzinfo=datetime.UTC)
            deadline = seen + datetime.timedelta(seconds=int(info.get("lifetime", 60)))
            priority = int(info.get("priority", 0))
        except (KeyError, TypeError, ValueError):
            continue
        if deadline > now:
            peers.append(Peer(str(identity), priority, deadline))
    return peers


class PeeringGate:
    """Open (``active`` set) while this replica should act."""

    def __init__(self, client: api.KubeClient, *, identity: str, name: str, priority: int,
                 standalone: bool) -> None:
        self.identity = identity
        self.name = name
        self.priority = priority
        self.standalone = standalone
        self.active = asyncio.Event()
        self._changed = asyncio.Event()
        self._blockers: list[Peer] = []
        self._missing_reported = False
        self._watch = objects.Objects(client, objects.PEERINGS).watch(self._changed.set,
                                                                       optional=True)
        self._tasks = lifecycle.Tasks()
        if standalone:
            self.active.set()

    @property
    def state(self) -> str:
        """For /healthz and logs: ``standalone``, ``active`` or ``standby``."""
        if self.standalone:
            return "standalone"
        return "active" if self.active.is_set() else "standby"

    async def start(self) -> None:
        if not self.standalone:
            self._tasks.spawn(self._watch.run(), name="peering watch")
            self._tasks.spawn(self._decide(), name="peering gate")

    async def stop(self) -> None:
        await self._tasks.cancel()

    def evaluate(self, now: datetime.datetime) -> datetime.datetime | None:
        """Open or close the gate from the current peering object; return when to look again
        (the earliest expiry of a peer that blocks us), or None."""
        peering = self._watch.objects.get(self.name)
        if peering is None:
            if self._watch.synced.is_set() and not self._missing_reported:
                logger.warning("peering: no ClusterKopfPeering %s (kopf.dev/v1); standing by "
                               "until it exists, as kopf does", self.name)
                self._missing_reported = True
            self.active.clear()
            return None
        self._missing_reported = False
        status = peering.get("status") or {}
        blockers = [peer for peer in parse_peers(status if isinstance(status, Mapping) else {},
                                                 now)
                    if peer.identity != self.identity and peer.priority >= self.priority]
        if blockers and (self.active.is_set() or blockers != self._blockers):
            logger.info("peering: standing by for %s", ", ".join(
                f"{peer.identity} (priority {peer.priority})" for peer in blockers))
        if not blockers and not self.active.is_set():
            logger.info("peering: active (priority %d)", self.priority)
        self._blockers = blockers
        if blockers:
            self.active.clear()
            return min(peer.deadline for peer in blockers)
        self.active.set()
        return None

    async def _decide(self) -> None:
        while True:
            self._changed.clear()
            recheck = self.evaluate(datetime.datetime.now(datetime.UTC))
            timeout = None
            if recheck is not None:
                timeout = max(0.0, (recheck - datetime.datetime.now(datetime.UTC))
                              .total_seconds()) + 0.05
            with contextlib.suppress(TimeoutError):  # asyncio.timeout: see Scheduler.run
                async with asyncio.timeout(timeout):
                    await self._changed.wait()
