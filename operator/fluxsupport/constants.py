"""Names shared by the CRDs, the operator, the CLI and the chart."""

from typing import Final

GROUP: Final = "support.fluxcd.controlplane.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

SUPPORTCASE_KIND: Final = "SupportCase"
SUPPORTCASE_PLURAL: Final = "supportcases"
BULLETIN_KIND: Final = "SecurityBulletin"
BULLETIN_PLURAL: Final = "securitybulletins"

#: kopf's own bookkeeping lives under our group, never under kopf.zalando.org.
KOPF_PREFIX: Final = f"kopf.{GROUP}"
FINALIZER: Final = f"{GROUP}/finalizer"

#: Shown as the source of Events.
REPORTING_COMPONENT: Final = "fluxsupport"
