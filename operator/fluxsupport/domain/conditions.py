"""Status conditions in the shape of ``metav1.Condition``.

Every reconcile builds the whole list, so that a single writer replaces it in one merge
patch. ``lastTransitionTime`` is carried over from the previous list unless the status
actually changed, as the API conventions require.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

import pydantic

Status = Literal["True", "False", "Unknown"]

#: The CRDs' maxLength for a condition message; the API server counts it in bytes. A longer
#: message makes the whole status write fail (422) again and again.
MAX_MESSAGE_BYTES = 32768


def _bounded(message: str) -> str:
    """``message`` cut to MAX_MESSAGE_BYTES of UTF-8, marked when cut."""
    encoded = message.encode("utf-8", "surrogatepass")
    if len(encoded) <= MAX_MESSAGE_BYTES:
        return message
    marker = " [... truncated]"
    kept = encoded[:MAX_MESSAGE_BYTES - len(marker)].decode("utf-8", "ignore")
    return kept + marker


class Condition(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, populate_by_name=True)

    type: str
    status: Status
    reason: str = pydantic.Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: Annotated[str, pydantic.AfterValidator(_bounded)] = ""
    observed_generation: int = pydantic.Field(0, alias="observedGeneration")
    last_transition_time: str = pydantic.Field("", alias="lastTransitionTime")

    def to_status(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True)


def rfc3339(moment: datetime.datetime) -> str:
    """Second-precision UTC, as ``metav1.Time`` serialises.

    Not strftime: its ``%Y`` does not pad years before 1000 ("438-08-13T..."), which the API
    server's date-time format rejects, failing the whole status write.
    """
    utc = moment.astimezone(datetime.UTC)
    return utc.replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def merge(previous: Iterable[Mapping[str, Any]], current: Iterable[Condition],
          generation: int, now: datetime.datetime) -> list[dict[str, Any]]:
    """Return the full condition list, keeping transition times of unchanged statuses."""
    before = {str(item.get("type")): item for item in previous if isinstance(item, Mapping)}
    merged = []
    for condition in current:
        old = before.get(condition.type)
        unchanged = old is not None and old.get("status") == condition.status
        transition = str(old.get("lastTransitionTime")) if unchanged and old else rfc3339(now)
        merged.append(condition.model_copy(update={
            "observed_generation": generation, "last_transition_time": transition,
        }).to_status())
    return merged
