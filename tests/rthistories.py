"""Ticket histories recorded from the real Request Tracker 5, as JSON test data.

tests/integration/test_rt_conversation.py plays each scenario against a real RT and, when
``FLUXSUPPORT_RECORD_RT_HISTORIES`` names a folder, writes what the adapter read there
(``<scenario>.json``). The copies in tests/data/rt/ were recorded that way; the unit tests of
domain/conversation.py read them, so that the pure rules are checked on RT's own answers
(its ids, its times, its RT_System transactions) without an RT.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
from typing import Any

from fluxsupport.domain.conversation import People
from fluxsupport.domain.submission import Transaction

DATA = pathlib.Path(__file__).parent / "data" / "rt"
RECORD_ENV = "FLUXSUPPORT_RECORD_RT_HISTORIES"


@dataclasses.dataclass(frozen=True)
class Recorded:
    people: People
    history: list[Transaction]
    #: The ticket's status as RT reported it after the scenario.
    status: str
    provenance: dict[str, Any]


def record(name: str, history: list[Transaction], people: People, status: str,
           provenance: dict[str, Any]) -> pathlib.Path | None:
    """Write the scenario's history when the environment asks for it; else nothing."""
    folder = os.environ.get(RECORD_ENV)
    if not folder:
        return None
    path = pathlib.Path(folder) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    items = []
    for item in history:
        fields = dataclasses.asdict(item)
        fields["created"] = item.created.strftime("%Y-%m-%dT%H:%M:%SZ")
        fields["attachments"] = list(item.attachments)
        items.append(fields)
    path.write_text(json.dumps({
        "provenance": provenance, "operator": people.operator,
        "customers": sorted(people.customers), "status": status, "history": items},
        indent=1) + "\n")
    return path


def load(name: str) -> Recorded:
    data = json.loads((DATA / f"{name}.json").read_text())
    history = []
    for stored in data["history"]:
        fields = {**stored, "attachments": tuple(stored["attachments"]),
                  "created": datetime.datetime.strptime(
                      stored["created"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)}
        history.append(Transaction(**fields))
    return Recorded(People.of(data["operator"], data["customers"]), history, data["status"],
                    data["provenance"])
