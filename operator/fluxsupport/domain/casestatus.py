"""What a SupportCase's status says of its clocks: their states, how the case counts towards
its month, and the metric values the collectors export."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any, Literal


class State(enum.StrEnum):
    """Of a clock (first response, resolution), as status.firstResponse.state shows it."""

    PENDING = "Pending"
    AT_RISK = "AtRisk"
    BREACHED = "Breached"
    MET = "Met"
    LATE = "Late"
    CLOSED = "Closed"


Compliance = Literal["met", "missed", "pending"]


def compliance_outcome(status: Mapping[str, Any]) -> Compliance | None:
    """How a case counts towards its month: missed once any of its targets was missed (a
    breach is final), met once every target it has was met, pending until then; None for a
    case without deadlines and for one dismissed before any deadline passed."""
    blocks = [block for block in (status.get("firstResponse"), status.get("resolution"))
              if isinstance(block, Mapping) and block]
    if not blocks:
        return None
    states = [block.get("state") for block in blocks]
    if any(state in (State.BREACHED, State.LATE) for state in states):
        return "missed"
    if (status.get("closure") or {}).get("outcome") == "Dismissed" or State.CLOSED in states:
        return None
    if all(state == State.MET for state in states):
        return "met"
    return "pending"


@dataclasses.dataclass(frozen=True)
class CaseMetrics:
    """What the metrics collector needs to know about one case."""

    level: int
    state: State
    awaiting_response: bool
    open: bool
    deadline: float
    warning: float
    outcome: Literal["met", "breached"] | None
    response_business_seconds: float | None
    #: The resolution clock, where the policy defines one: deadline and warning point while
    #: the case is open, the outcome and business time once it is resolved.
    resolution_deadline: float | None = None
    resolution_warning: float | None = None
    resolution_outcome: Literal["met", "breached"] | None = None
    resolution_business_seconds: float | None = None
    #: A wait on the customer holds the first-response clock: its deadline series is left
    #: out, so its alerts stay quiet.
    paused: bool = False
    #: When the case began waiting on the customer, while it waits and is open.
    waiting_since: float | None = None
    #: When the case was created, and how it stands for the monthly compliance.
    created: float = 0.0
    compliance: Compliance | None = None
    #: The highest escalation tier reached (0: none); None while the policy has no tiers.
    escalation_tier: int | None = None
    #: When the root-cause analysis is due, while it is owed and not delivered.
    rca_due: float | None = None
