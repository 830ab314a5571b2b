"""What the operator asks of kopf: its settings (``configure``) and its login (``login``).

kopf runs for two things only (app/__init__.py): it logs in through kube/credentials.py, and
with ``--peering`` it keeps this replica's keep-alive in the ClusterKopfPeering object. No
resource handler is registered, so kopf watches no kind of the operator's and runs no
reconcile.

Importing this module registers the two handlers in kopf's default registry.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import kopf

from fluxsupport.app import config
from fluxsupport.constants import PEERING_NAME
from fluxsupport.kube import credentials

logger = logging.getLogger(__name__)

#: kopf's retry delays for API requests (see configure()): about 2 minutes in total.
API_RETRY_BACKOFFS_S: tuple[float, ...] = (0.5, 1, 1, *([2] * 60))


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    operator_config: config.OperatorConfig = memo.config
    # kopf posts no Events: the operator posts its own through the kube layer (deterministic
    # names, posted once from the status), and kopf's would be copies of log lines, which may
    # carry embargoed details.
    settings.posting.enabled = False
    settings.peering.standalone = operator_config.standalone
    settings.peering.priority = operator_config.priority
    settings.peering.name = PEERING_NAME
    settings.peering.mandatory = not operator_config.standalone
    settings.peering.lifetime = operator_config.peering_lifetime
    # kopf's own watches (the peering object, CRDs): reconnect quickly after an API outage
    # instead of trusting a silent stream.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 310
    # kopf retries a failed request after 1, 1, 2, 3, 5, 8, 13 and 21 s by default: after a
    # 20 s outage the next attempt (a keep-alive, watching again) comes up to 13 s after the
    # API server is back. Retry every 2 s instead, for about as long in total before giving up.
    settings.networking.error_backoffs = API_RETRY_BACKOFFS_S


@kopf.on.login()
def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
    """kopf logs in through the loader the operator's own client uses (not kopf's own, which
    prefers the ServiceAccount): one identity for every request of the process."""
    loaded = credentials.load()
    logger.info("Kubernetes credentials: %s", loaded.source)
    return kopf.ConnectionInfo(**dataclasses.asdict(loaded.connection()),
                               trust_env=settings.networking.trust_env)
