"""Which components a support case may be about: the InScope condition of a SupportCase.

A case is in scope when its ``spec.component`` is one the policy covers:

* the distribution's controllers: those its release data lists (``images/<version>/
  <variant>.yaml``, :mod:`fluxsupport.domain.updates`) where the operator has release data,
  else the built-in list of the controllers the distribution ships, which Flux 2.7 to 2.9 list;
* the Flux Operator, which installs the distribution (release data does not list it);
* the add-ons the policy covers (``addOns``; the Flux Operator's MCP server under the
  ``support-policy-2026`` preset).

Out of scope: ``other`` (a third-party tool; this check wins), a known add-on the policy does
not cover, a name that is none of these (most likely a typo: the message lists the names),
and a case that needs access to the customer's infrastructure. An out-of-scope case is
flagged, never closed: its clock keeps running until someone dismisses it.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Literal

from fluxsupport.domain import conditions
from fluxsupport.domain.inventory import FLUX_OPERATOR

if TYPE_CHECKING:
    from fluxsupport.domain.policy import Policy
    from fluxsupport.domain.updates import ReleaseData

POLICY_REFERENCE = "ControlPlane Enterprise for Flux CD support policy"
OTHER = "other"
#: The controllers of the distribution's releases, as images/v2.9.4/*.yaml lists them.
BUILT_IN: tuple[str, ...] = (
    "source-controller", "kustomize-controller", "helm-controller", "notification-controller",
    "image-reflector-controller", "image-automation-controller", "source-watcher")
#: Add-ons of the distribution that some policy may cover: the MCP server of the Flux Operator
#: project (binary and image ``flux-operator-mcp``).
KNOWN_ADD_ONS: tuple[str, ...] = ("flux-operator-mcp",)

Reason = Literal["FluxComponent", "AddOn", "ThirdParty", "AddOnNotCovered", "UnknownComponent",
                 "RequiresInfrastructureAccess"]


@dataclasses.dataclass(frozen=True)
class Supported:
    """The components cases may be about, and where the list of controllers came from."""

    controllers: frozenset[str]
    add_ons: frozenset[str]
    #: ``release data v2.9.4`` or ``built-in list``: said in messages.
    source: str

    @property
    def names(self) -> list[str]:
        return sorted(self.controllers | {FLUX_OPERATOR} | self.add_ons)


def released_components(data: ReleaseData) -> frozenset[str]:
    """Every component the release data's images name, across its releases and variants."""
    return frozenset(image.component for release in data.releases for image in release.images)


def supported(policy: Policy, release_data: ReleaseData | None = None) -> Supported:
    """What ``policy`` covers, with the controllers of ``release_data`` when it is known."""
    add_ons = frozenset(policy.add_ons)
    if release_data is not None:
        released = released_components(release_data)
        if released:
            return Supported(released, add_ons, f"release data {release_data.latest}")
    return Supported(frozenset(BUILT_IN), add_ons, "built-in list")


def condition(component: str, requires_infrastructure_access: bool, policy: Policy,
              covered: Supported) -> conditions.Condition:
    """The InScope condition of a case."""
    reason, status, message = _decide(component, requires_infrastructure_access, policy,
                                      covered)
    return conditions.Condition(type="InScope", status=status, reason=reason, message=message)


def _decide(component: str, requires_infrastructure_access: bool, policy: Policy,
            covered: Supported) -> tuple[Reason, Literal["True", "False"], str]:
    dismissible = "the case may be dismissed. The SLA clock keeps running until it is."
    if component == OTHER:
        covers = "the Flux controllers and the Flux Operator" + (
            ", with the add-ons named in the policy" if covered.add_ons else "")
        return ("ThirdParty", "False",
                f"Third-party tools are outside the {POLICY_REFERENCE}, which covers "
                f"{covers}; {dismissible}")
    known = covered.controllers | {FLUX_OPERATOR} | covered.add_ons
    if component not in known and component in KNOWN_ADD_ONS:
        return ("AddOnNotCovered", "False",
                f"{component} is an add-on of the distribution, which the {POLICY_REFERENCE} "
                f"covers where the policy names it in addOns; policy {policy.preset} does "
                f"not: {dismissible}")
    if component not in known:
        return ("UnknownComponent", "False",
                f"{component} is not a component the {POLICY_REFERENCE} covers; those are "
                f"the controllers of the {covered.source}, the Flux Operator and the "
                f"policy's add-ons: {', '.join(covered.names)}. Correct spec.component, or "
                f"set it to other for a third-party tool. The SLA clock keeps running.")
    if requires_infrastructure_access:
        return ("RequiresInfrastructureAccess", "False",
                f"Cases that need access to the customer's infrastructure are outside the "
                f"{POLICY_REFERENCE}; {dismissible}")
    if component in covered.add_ons and component not in covered.controllers:
        return ("AddOn", "True",
                f"{component}, an add-on of the distribution, is covered by the "
                f"{POLICY_REFERENCE} (policy {policy.preset}).")
    return ("FluxComponent", "True", f"{component} is covered by the {POLICY_REFERENCE}.")
