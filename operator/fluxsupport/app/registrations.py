"""kopf registrations: operator settings and one thin handler per kind and verb.

SupportCases are not among them: the runner watches them itself (kube/reflector.py), since
kopf's own work per event was 29% of the operator's CPU in a burst of cases.

Importing this module registers the handlers in kopf's default registry.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import kopf

from fluxsupport.app import config
from fluxsupport.constants import (
    BULLETIN_PLURAL,
    FINALIZER,
    GROUP,
    KOPF_PREFIX,
    PEERING_NAME,
    VERSION,
)
from fluxsupport.controllers import bulletin
from fluxsupport.kube import credentials

logger = logging.getLogger(__name__)

#: kopf's retry delays for API requests (see configure()): about 2 minutes in total.
API_RETRY_BACKOFFS_S: tuple[float, ...] = (0.5, 1, 1, *([2] * 60))


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf builds a diff base on every event for change handlers. There are none here (event
    handlers reconcile from the whole object), so skip the deep copy it costs per event."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        return None

    def fetch(self, *, body: kopf.Body) -> Any:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        return None


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    operator_config: config.OperatorConfig = memo.config
    # kopf posts no Events: the operator posts its own through the kube layer (deterministic
    # names, posted once from the status), and kopf's would be copies of log lines, which may
    # carry embargoed details.
    settings.posting.enabled = False
    # No handler needs a finalizer today (deletion needs no cleanup in the cluster), so none is
    # added; the name is set so that a future one is ours, not kopf.zalando.org's.
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.peering.standalone = operator_config.standalone
    settings.peering.priority = operator_config.priority
    settings.peering.name = PEERING_NAME
    settings.peering.mandatory = not operator_config.standalone
    settings.peering.lifetime = operator_config.peering_lifetime
    # Reconnect quickly after an API outage instead of trusting a silent stream.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 310
    # List in pages: one 10,000-case list parsed at once leaves the process 200 MB larger.
    settings.watching.chunk_size = 500
    # kopf retries a failed request after 1, 1, 2, 3, 5, 8, 13 and 21 s by default: after a
    # 20 s outage the next attempt (listing or watching again) comes up to 13 s after the API
    # server is back. Retry every 2 s instead, for about as long in total before giving up.
    settings.networking.error_backoffs = API_RETRY_BACKOFFS_S
    settings.execution.default_backoff = 5
    # kopf keeps a worker and a queue per object until it idles out: keep that short.
    settings.queueing.idle_timeout = 1.0


@kopf.on.login()
def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
    """kopf's watches log in through the loader the operator's own client uses (not kopf's
    own, which prefers the ServiceAccount): one identity for what it reads and writes."""
    loaded = credentials.load()
    logger.info("Kubernetes credentials: %s", loaded.source)
    return kopf.ConnectionInfo(**dataclasses.asdict(loaded.connection()),
                               trust_env=settings.networking.trust_env)


@kopf.on.event(GROUP, VERSION, BULLETIN_PLURAL)
async def bulletin_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    bulletins: bulletin.BulletinController = memo.bulletins
    if type == "DELETED":
        bulletins.forget(body.metadata["name"])
        return
    name, changed = bulletins.observe(body)
    if changed:
        await bulletins.reconcile(name)
