"""The shape of every kind's status evaluation: one pure function per kind returns it.

``supportcase.evaluate``, ``securitybulletin.evaluate`` and ``updatecheck.evaluate`` compute
the whole status of one object from what the controller read (the object, the cluster, the
policy) and the time. The controller writes the status with the Events in one patch
(controllers/writes.py), schedules the next transition and hands the metric values to the
collectors. Since the result depends only on the inputs and the clock, whichever reconcile
writes last writes the right status.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping
from typing import Any, Generic, Literal, NamedTuple, TypeVar

import pydantic

from fluxsupport.domain import conditions

#: The metric values of one object, as the collector of its kind reads them.
Metrics = TypeVar("Metrics")


class Event(NamedTuple):
    """A Kubernetes Event a transition calls for; the status write owes it."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class Evaluation(Generic[Metrics]):
    """The whole status of one object, what it owes, and what comes next."""

    status: dict[str, Any]
    events: tuple[Event, ...]
    #: The next instant at which the status changes by the clock alone (a deadline, a
    #: warning point, an embargo's end); None when only a change of the inputs changes it.
    next_transition: datetime.datetime | None
    #: None while the object cannot be evaluated (an invalid spec): it then has no series.
    metrics: Metrics | None


def validation_message(error: pydantic.ValidationError) -> str:
    """Each problem of a spec that did not validate, by its field path."""
    return "; ".join(f"spec.{'.'.join(str(p) for p in item['loc'])}: {item['msg']}"
                     for item in error.errors())


def invalid_spec_condition(error: pydantic.ValidationError) -> conditions.Condition:
    """Ready=False, InvalidSpec: the spec does not match what the operator reads."""
    return conditions.Condition(type="Ready", status="False", reason="InvalidSpec",
                                message=validation_message(error))


def invalid_spec(ready: conditions.Condition, previous_conditions: Iterable[Mapping[str, Any]],
                 generation: int, now: datetime.datetime,
                 next_transition: datetime.datetime | None = None) -> Evaluation[Any]:
    """The status of an object whose spec is invalid: only ``ready`` (the InvalidSpec
    condition, as the kind shows it) and a Warning Event with its message. Nothing else is
    kept: no verdicts, counts or metrics of the spec before."""
    status = {"observedGeneration": generation,
              "conditions": conditions.merge(previous_conditions, [ready], generation, now)}
    return Evaluation(status, (Event("Warning", ready.reason, ready.message),),
                      next_transition, None)
