"""The diagnostics snapshots cases reference: immutable ConfigMaps in the operator's namespace.

Written before the case's status names one, so a status never points at nothing; created again
by name after a crash (409 means it exists). A snapshot no case references any more is deleted
by a sweep, once it is older than SWEEP_AGE_S: a case being reconciled at that moment may be
about to name it, and the age covers that. The first sweep comes SWEEP_INTERVAL_S after the
start, long after the operator has listed every case (10,000 take about 20 s).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable, Collection
from typing import Any

from fluxsupport import constants
from fluxsupport.domain import diagnostics
from fluxsupport.kube import api

logger = logging.getLogger(__name__)

LABEL = f"{constants.GROUP}/diagnostics"
SELECTOR = f"{LABEL}=snapshot"
SWEEP_INTERVAL_S = 900.0
SWEEP_AGE_S = 3600.0


class Snapshots:
    def __init__(self, client: api.Client, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self.path = f"/api/v1/namespaces/{namespace}/configmaps"
        #: Names known to exist: most cases of a cluster share a handful of snapshots.
        self._known: set[str] = set()

    async def ensure(self, collected: dict[str, Any]) -> str:
        """The snapshot's name, created if it does not exist. Raises api.ApiError (RBAC, an
        unreachable API server): the caller keeps the diagnostics in the case then."""
        name = diagnostics.snapshot_name(collected)
        if name in self._known:
            return name
        body = {"apiVersion": "v1", "kind": "ConfigMap", "immutable": True,
                "metadata": {"name": name, "namespace": self.namespace,
                             "labels": {LABEL: "snapshot",
                                        "app.kubernetes.io/managed-by": "fluxsupport"}},
                "data": diagnostics.snapshot_data(collected)}
        try:
            await self.client.request("POST", self.path, body)
        except api.ApiError as error:
            if error.status != 409:
                raise
        self._known.add(name)
        return name

    async def sweep(self, referenced: Collection[str],
                    now: datetime.datetime | None = None) -> list[str]:
        """Delete the snapshots no case references and older than SWEEP_AGE_S."""
        now = now or datetime.datetime.now(datetime.UTC)
        listing = await self.client.request("GET", f"{self.path}?labelSelector={SELECTOR}")
        deleted = []
        for item in listing.get("items") or []:
            metadata = item.get("metadata") or {}
            name = str(metadata.get("name", ""))
            created = datetime.datetime.fromisoformat(
                str(metadata.get("creationTimestamp", "")).replace("Z", "+00:00"))
            if name in referenced or (now - created).total_seconds() < SWEEP_AGE_S:
                continue
            try:
                await self.client.request("DELETE", f"{self.path}/{name}")
            except api.ApiError as error:
                if error.status != 404:
                    raise
            self._known.discard(name)
            deleted.append(name)
        return deleted

    async def run_sweeps(self, referenced: Callable[[], Collection[str]],
                         gate: asyncio.Event | None = None) -> None:
        """Sweep every SWEEP_INTERVAL_S, while this operator is the active one (``gate``)."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            if gate is not None:
                await gate.wait()
            try:
                deleted = await self.sweep(referenced())
            except (api.ApiError, *api.TRANSPORT_ERRORS, ValueError) as error:
                logger.warning("diagnostics snapshots: sweep failed: %s", error)
                continue
            if deleted:
                logger.info("diagnostics snapshots: deleted %d no case references",
                            len(deleted))
