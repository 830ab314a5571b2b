"""The scope of a case: domain/scope.py, its worked examples in docs/concepts.md, and the
InScope condition a SupportCase gets."""

from __future__ import annotations

import asyncio
import datetime
import itertools
import pathlib
from typing import Any

import jsonschema
import pytest
import yaml

from fluxsupport.domain import scope, supportcase, updates
from fluxsupport.domain.calendar import BusinessCalendar
from fluxsupport.domain.policy import Policy, PolicyError, load_policy
from tests import fixtures

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "concepts.md"
EMEA = load_policy("preset: support-policy-2026\nregion: EMEA\n")
POLICIES = {"default": Policy(), "2026 EMEA": EMEA}
NOW = datetime.datetime(2026, 11, 30, 10, 0, tzinfo=datetime.UTC)


def release_data() -> updates.ReleaseData:
    images = fixtures.UPSTREAM / "images"
    return updates.parse_release_data(
        (images / "VERSION").read_text(),
        {(p.parent.name, p.stem): p.read_text() for p in images.glob("*/*.yaml")})


def test_the_built_in_list_is_what_the_real_release_data_lists() -> None:
    """The fallback is no guess: the vendored v2.7.5-v2.9.4 release data names exactly these."""
    assert scope.released_components(release_data()) == frozenset(scope.BUILT_IN)
    covered = scope.supported(Policy(), release_data())
    assert covered.source == "release data v2.9.4"
    assert covered.names == sorted([*scope.BUILT_IN, "flux-operator"])


def test_release_data_decides_which_controllers_are_covered() -> None:
    data = release_data()
    extra = data.model_copy(update={"releases": (*data.releases, updates.Release(
        version="v2.10.0", variant="enterprise-distroless", images=(updates.ImageEntry(
            name="ghcr.io/controlplaneio-fluxcd/distroless/tofu-controller", newTag="v1.0.0",
            digest="sha256:" + "a" * 64),)))})
    covered = scope.supported(Policy(), extra)
    found = scope.condition("tofu-controller", False, Policy(), covered)
    assert (found.status, found.reason) == ("True", "FluxComponent")
    # Release data without images falls back to the built-in list.
    empty = data.model_copy(update={"releases": ()})
    assert scope.supported(Policy(), empty).source == "built-in list"


def test_the_2026_preset_covers_the_mcp_server_and_the_default_does_not() -> None:
    assert EMEA.add_ons == ("flux-operator-mcp",)
    assert set(EMEA.add_ons) <= set(scope.KNOWN_ADD_ONS)
    assert Policy().add_ons == ()
    written = load_policy("addOns: [flux-operator-mcp, flux-operator-mcp, my-add-on]\n")
    assert written.add_ons == ("flux-operator-mcp", "my-add-on")
    found = scope.condition("my-add-on", False, written, scope.supported(written))
    assert (found.status, found.reason) == ("True", "AddOn")
    with pytest.raises(PolicyError, match="addOns: Value error, other marks"):
        load_policy("addOns: [other]\n")


def test_the_messages_say_what_to_fix() -> None:
    unknown = scope.condition("helm-controler", False, Policy(), scope.supported(Policy()))
    assert "helm-controler is not a component" in unknown.message
    assert "built-in list" in unknown.message
    assert "flux-operator, helm-controller" in unknown.message
    assert "set it to other for a third-party tool" in unknown.message
    not_covered = scope.condition("flux-operator-mcp", False, Policy(),
                                  scope.supported(Policy()))
    assert "names it in addOns; policy technical-support-policy does not" \
        in not_covered.message
    third = scope.condition("other", False, EMEA, scope.supported(EMEA))
    assert "with the add-ons named in the policy" in third.message


# ---- the worked examples of docs/concepts.md ------------------------------------------------

def worked_examples() -> list[list[str]]:
    section = DOC.read_text().split("#### Worked examples of the scope", 1)[1]
    lines = section.splitlines()
    first = next(index for index, line in enumerate(lines) if line.startswith("|"))
    rows = list(itertools.takewhile(lambda line: line.startswith("|"), lines[first:]))
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]
    assert cells[0][:6] == ["Policy", "Controllers from", "Component", "Infrastructure access",
                            "InScope", "Reason"]
    return [row for row in cells[1:] if not set(row[0]) <= {"-"}]


def test_the_docs_have_an_example_of_each_reason() -> None:
    assert {row[5] for row in worked_examples()} == {
        "FluxComponent", "AddOn", "ThirdParty", "AddOnNotCovered", "UnknownComponent",
        "RequiresInfrastructureAccess"}
    assert {row[1] for row in worked_examples()} == {"built-in list", "release data"}


@pytest.mark.parametrize("row", worked_examples(), ids=lambda row: "-".join(row[:4]))
def test_worked_example(row: list[str]) -> None:
    name, source, component, infrastructure, status, reason = row[:6]
    policy = POLICIES[name]
    covered = scope.supported(policy, release_data() if source == "release data" else None)
    found = scope.condition(component, infrastructure == "yes", policy, covered)
    assert (found.type, found.status, found.reason) == ("InScope", status, reason)


def test_the_crd_accepts_any_component_name_and_only_names() -> None:
    crd = yaml.safe_load((ROOT / "crds" / "supportcases.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    validator = jsonschema.Draft7Validator(
        schema["properties"]["spec"]["properties"]["component"])
    for name in [*scope.BUILT_IN, "flux-operator", *scope.KNOWN_ADD_ONS, "other",
                 "tofu-controller", "a" * 63]:
        assert validator.is_valid(name), name
    for name in ["", "Flux_MCP", "-mcp", "mcp-", "a" * 64, "helm controller"]:
        assert not validator.is_valid(name), name


# ---- on a SupportCase ------------------------------------------------------------------------

def _spec(component: str) -> dict[str, Any]:
    return {"title": "t", "description": "d", "severity": "High", "category": "incident",
            "component": component,
            "impact": {"statement": "s", "environment": "production", "outage": "partial",
                       "businessCritical": True}}


@pytest.mark.parametrize(("policy", "component", "status", "reason"), [
    (Policy(), "helm-controller", "True", "FluxComponent"),
    (Policy(), "other", "False", "ThirdParty"),
    (Policy(), "flux-operator-mcp", "False", "AddOnNotCovered"),
    (EMEA, "flux-operator-mcp", "True", "AddOn"),
    (EMEA, "fluxoperator", "False", "UnknownComponent"),
])
def test_a_case_carries_the_condition_and_an_event_when_out_of_scope(
        policy: Policy, component: str, status: str, reason: str) -> None:
    result = supportcase.evaluate(spec=_spec(component), annotations={}, created=NOW,
                                  generation=1, previous={}, policy=policy,
                                  calendar=BusinessCalendar(policy), now=NOW)
    found = next(c for c in result.status["conditions"] if c["type"] == "InScope")
    assert (found["status"], found["reason"]) == (status, reason)
    warned = [event.reason for event in result.events if event.type == "Warning"]
    assert (reason in warned) == (status == "False")


def _with_tofu_controller() -> updates.ReleaseData:
    data = release_data()
    return data.model_copy(update={"releases": (*data.releases, updates.Release(
        version="v2.10.0", variant="enterprise-distroless", images=(updates.ImageEntry(
            name="ghcr.io/controlplaneio-fluxcd/distroless/tofu-controller", newTag="v1.0.0",
            digest="sha256:" + "a" * 64),)))})


def test_the_case_controller_judges_scope_by_the_release_data_the_update_check_read() -> None:
    from fluxsupport.controllers.supportcase import CaseController
    from tests.unit.test_metrics import fake_client, handle

    cases = CaseController(Policy(), fake_client())
    stamp = "2026-11-30T10:00:00Z"
    body = {"metadata": {"namespace": "team-a", "name": "tofu", "uid": "uid-1",
                         "resourceVersion": "1", "generation": 1, "creationTimestamp": stamp},
            "spec": _spec("tofu-controller"), "status": {}}
    handle(cases, body)

    def in_scope() -> tuple[str, str]:
        status = cases.cases[("team-a", "tofu")].status
        found = next(c for c in status["conditions"] if c["type"] == "InScope")
        return found["status"], found["reason"]
    assert in_scope() == ("False", "UnknownComponent")
    assert cases.scheduler.heap_size == 0

    cases.use_release_data(release_data())  # the same controllers as the built-in list
    assert cases.scheduler.heap_size == 0, "nothing changed, nothing re-checked"
    cases.use_release_data(_with_tofu_controller())
    assert cases.scheduler.heap_size == 1, "every case re-checked"
    asyncio.run(cases.reconcile(("team-a", "tofu")))
    assert in_scope() == ("True", "FluxComponent")
