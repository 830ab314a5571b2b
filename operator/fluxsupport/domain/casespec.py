"""A SupportCase's spec as the SLA logic reads it, and the levels it leads to.

The CRD schema has already validated the fields; these models only give them types. The
level a case is handled at follows its severity, lowered by a workaround where the policy
says so; the impact shows which level the case would support.
"""

from __future__ import annotations

from typing import Literal

import pydantic

from fluxsupport.domain import policy as policy_module


class Impact(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(populate_by_name=True)

    statement: str
    environment: Literal["production", "staging", "development"]
    outage: Literal["full", "partial", "degraded", "none"]
    business_critical: bool = pydantic.Field(False, alias="businessCritical")


class CaseSpec(pydantic.BaseModel):
    """The fields the SLA logic reads; the CRD schema has already validated them."""

    model_config = pydantic.ConfigDict(populate_by_name=True, extra="ignore")

    title: str
    severity: Literal["Urgent", "High", "Medium", "Low"]
    impact: Impact
    component: str
    category: str
    requires_infrastructure_access: bool = pydantic.Field(
        False, alias="requiresInfrastructureAccess")
    workaround: bool = False

    @property
    def level(self) -> int:
        return policy_module.LEVELS[self.severity]


def effective_level(case: CaseSpec, policy: policy_module.Policy) -> int:
    """The level the clocks follow: the claimed one, except that under a policy with
    workaroundLowersSeverity (the 2026 preset) a Level 2 case with a working workaround is
    handled as Level 3."""
    if case.level == 2 and case.workaround and policy.workaround_lowers_severity:
        return 3
    return case.level


def assess_level(impact: Impact) -> int:
    """The level the impact supports: production outages of business-critical services are
    Level 1 (full), 2 (partial) or 3 (degraded); everything else is Level 4."""
    if impact.environment == "production" and impact.business_critical:
        return {"full": 1, "partial": 2, "degraded": 3}.get(impact.outage, 4)
    return 4


def describe_level(level: int) -> str:
    return f"Level {level} ({policy_module.LEVEL_NAMES[level]})"
