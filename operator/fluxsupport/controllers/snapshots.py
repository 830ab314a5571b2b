"""The diagnostics snapshots cases reference: immutable ConfigMaps in the operator's namespace.

Written before the case's status names one, so a status never points at nothing; created again
by name after a crash (409 means it exists). A snapshot no case references any more is deleted
by a sweep, once it is older than SWEEP_AGE_S: a case being reconciled at that moment may be
about to name it, and the age covers that. The first sweep comes SWEEP_INTERVAL_S after the
start, long after the operator has listed every case (10,000 take about 20 s).

A snapshot can still vanish under a case: deleted by hand, or by a sweep of the other replica
that had not seen yet the case naming it (an old snapshot a new case shares). Every
CHECK_INTERVAL_S the snapshots cases name are listed; for a missing one the cases naming it
collect their diagnostics again, which creates the snapshot again under the same name when
Flux has not changed since (names follow the content), or points them at the new one.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable, Collection
from typing import Any

from fluxsupport import constants
from fluxsupport.domain import diagnostics
from fluxsupport.kube import api, objects

logger = logging.getLogger(__name__)

LABEL = f"{constants.GROUP}/diagnostics"
SELECTOR = f"{LABEL}=snapshot"
SWEEP_INTERVAL_S = 900.0
SWEEP_AGE_S = 3600.0
#: How often the snapshots cases name are checked for existence (one list request).
CHECK_INTERVAL_S = 60.0


class Snapshots:
    def __init__(self, client: api.KubeClient, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self.configmaps = objects.Objects(client, objects.CONFIGMAPS, namespace)
        #: Names known to exist: most cases of a cluster share a handful of snapshots.
        #: Every check forgets the ones that no longer do.
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
        await self.configmaps.create(body)  # None: it exists (a crash, the other replica)
        self._known.add(name)
        return name

    async def _list(self) -> list[dict[str, Any]]:
        return await self.configmaps.list(SELECTOR)

    async def check(self, referenced: Collection[str]) -> set[str]:
        """The snapshots in ``referenced`` that do not exist. The ones known to exist that
        are gone are forgotten, so that the next ensure() creates them again."""
        existing = {str((item.get("metadata") or {}).get("name", ""))
                    for item in await self._list()}
        self._known &= existing
        return set(referenced) - existing

    async def sweep(self, referenced: Collection[str],
                    now: datetime.datetime | None = None) -> list[str]:
        """Delete the snapshots no case references and older than SWEEP_AGE_S."""
        now = now or datetime.datetime.now(datetime.UTC)
        deleted = []
        for item in await self._list():
            metadata = item.get("metadata") or {}
            name = str(metadata.get("name", ""))
            created = datetime.datetime.fromisoformat(
                str(metadata.get("creationTimestamp", "")).replace("Z", "+00:00"))
            if name in referenced or (now - created).total_seconds() < SWEEP_AGE_S:
                continue
            await self.configmaps.delete(name)  # False: deleted by hand meanwhile
            self._known.discard(name)
            deleted.append(name)
        return deleted

    async def run_sweeps(self, referenced: Callable[[], Collection[str]],
                         gate: asyncio.Event | None = None,
                         lost: Callable[[set[str]], None] | None = None) -> None:
        """While this operator is the active one (``gate``): every CHECK_INTERVAL_S tell
        ``lost`` the referenced snapshots that are missing, and every SWEEP_INTERVAL_S
        sweep."""
        swept = time.monotonic()
        while True:
            await asyncio.sleep(CHECK_INTERVAL_S)
            if gate is not None:
                await gate.wait()
            try:
                # The names first, then the list: a snapshot named meanwhile was created
                # before the case named it, so it is in the list.
                missing = await self.check(referenced())
                if missing and lost is not None:
                    logger.warning("diagnostics snapshots: %s named by cases but missing; "
                                   "collecting those cases' diagnostics again",
                                   ", ".join(sorted(missing)))
                    lost(missing)
                if time.monotonic() - swept < SWEEP_INTERVAL_S:
                    continue
                swept = time.monotonic()
                deleted = await self.sweep(referenced())
            except (api.ApiError, *api.TRANSPORT_ERRORS, ValueError) as error:
                logger.warning("diagnostics snapshots: check or sweep failed: %s", error)
                continue
            if deleted:
                logger.info("diagnostics snapshots: deleted %d no case references",
                            len(deleted))
