"""Names shared by the CRDs, the operator, the CLI and the chart."""

from typing import Final

GROUP: Final = "support.fluxcd.controlplane.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

SUPPORTCASE_KIND: Final = "SupportCase"
SUPPORTCASE_PLURAL: Final = "supportcases"
BULLETIN_KIND: Final = "SecurityBulletin"
BULLETIN_PLURAL: Final = "securitybulletins"

#: The ClusterKopfPeering object that replicas share with --peering (the chart creates it).
PEERING_NAME: Final = "fluxsupport"

#: Shown as the source of Events.
REPORTING_COMPONENT: Final = "fluxsupport"

#: Lifecycle annotations on a SupportCase (RFC 3339 times, free-text names).
RESPONDED_AT: Final = f"{GROUP}/responded-at"
RESPONDED_BY: Final = f"{GROUP}/responded-by"
RESOLVED_AT: Final = f"{GROUP}/resolved-at"
RESOLVED_BY: Final = f"{GROUP}/resolved-by"
DISMISSED_AT: Final = f"{GROUP}/dismissed-at"
DISMISSED_BY: Final = f"{GROUP}/dismissed-by"
DISMISS_REASON: Final = f"{GROUP}/dismiss-reason"
#: The customer's side records the root-cause analysis as delivered (RFC 3339, free text).
RCA_DELIVERED_AT: Final = f"{GROUP}/rca-delivered-at"
RCA_DELIVERED_BY: Final = f"{GROUP}/rca-delivered-by"
#: Any new value asks the operator to collect the cluster diagnostics again.
COLLECT_DIAGNOSTICS: Final = f"{GROUP}/collect-diagnostics"
#: The customer's side marks a wait on itself (RFC 3339 START, or START/END once over): the
#: SLA clocks pause (docs/sla-policy.md, "Waiting on the customer").
WAITING_ON_CUSTOMER: Final = f"{GROUP}/waiting-on-customer"

UPDATECHECK_KIND: Final = "FluxUpdateCheck"
UPDATECHECK_PLURAL: Final = "fluxupdatechecks"
#: The one FluxUpdateCheck the operator writes: the cluster's.
UPDATECHECK_NAME: Final = "cluster"

#: On a SecurityBulletin written by the advisory feed: ``<namespace>.<name>`` of its Flux
#: source. The feed updates only bulletins that carry its value; one without the label is a
#: person's, and the feed leaves it alone.
ADVISORY_FEED_LABEL: Final = f"{GROUP}/advisory-feed"
#: The source revision (``main@sha1:...``) whose artifact last wrote the bulletin's spec.
ADVISORY_REVISION: Final = f"{GROUP}/advisory-revision"
