"""Reconcile a SupportCase."""

from __future__ import annotations

import datetime
from typing import Any

import kopf

from fluxsupport.domain import conditions


def reconcile(body: kopf.Body, patch: kopf.Patch) -> None:
    now = datetime.datetime.now(datetime.UTC)
    generation = int(body.metadata.get("generation") or 0)
    previous: list[Any] = list(body.status.get("conditions") or [])
    ready = conditions.Condition(type="Ready", status="True", reason="Reconciled",
                                 message="The case has been reconciled.")
    patch.status["observedGeneration"] = generation
    patch.status["conditions"] = conditions.merge(previous, [ready], generation, now)
