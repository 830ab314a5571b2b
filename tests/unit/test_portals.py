"""The registry of helpdesks: the policy, the chart and the operator know the same types."""

from __future__ import annotations

import json
import pathlib
import typing

from fluxsupport.channels import portals, rt
from fluxsupport.domain import policy

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_the_policy_the_chart_and_the_registry_name_the_same_portal_types() -> None:
    """A portal type added to one list and not the others would be refused by the chart, or
    accepted by the policy with no client to make (docs/architecture.md lists the files)."""
    in_policy = set(typing.get_args(policy.Portal.model_fields["type"].annotation))
    schema = json.loads((ROOT / "charts" / "fluxsupport" / "values.schema.json")
                        .read_text())
    portal_schema = schema["properties"]["policy"]["properties"]["channels"]["properties"][
        "portal"]
    in_chart = set(portal_schema["properties"]["type"]["enum"])
    assert set(portals.PORTALS) == in_policy == in_chart


def test_the_portal_type_chooses_the_client() -> None:
    config = policy.Portal(enabled=True, type="rt", url="https://rt.example/rt",
                           queue="FluxSupport", timeout=7)
    client = portals.connect(config, "1-14-abc")
    assert isinstance(client, rt.RequestTracker)
    assert (client.base, client.queue) == ("https://rt.example/rt/", "FluxSupport")
