"""OpenVEX documents as publishers write them, on the real API server: a vexctl example and an
OpenVEX v0.0.1 document are read (the verdict follows them) with a VexWarning condition naming
each deviation, and a later `affected` withdraws an earlier `not_affected`."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import kubernetes
import pytest

from tests import fixtures, harness

CVE = "CVE-2026-47680"
PRE = fixtures.images(fixtures.PRE_FIX_V275)
FIX = fixtures.images(fixtures.FIX_V275)
OPERATOR_NAMESPACE = "fluxsupport-system"
VEXCTL_EXAMPLE = (fixtures.UPSTREAM / "openvex" / "vexctl" / "examples" / "sarif" /
                  "sample-history.openvex.json")


def vexctl_example() -> dict[str, Any]:
    """vexctl's sample-history example (a `statement` field in each statement), about
    source-controller: not_affected, then not_affected again."""
    body: dict[str, Any] = json.loads(VEXCTL_EXAMPLE.read_text())
    for statement in body["statements"]:
        statement["vulnerability"] = {"name": CVE}
        statement["products"] = [{"@id": "pkg:oci/source-controller"}]
    return body


def v001_document() -> dict[str, Any]:
    return {"@context": "https://openvex.dev/ns", "@id": "https://vendor.example/vex/old",
            "author": "vendor", "timestamp": "2026-01-15T00:00:00Z",
            "statements": [{"vulnerability": CVE, "products": ["pkg:oci/source-controller"],
                            "status": "not_affected",
                            "justification": "vulnerable_code_not_in_execute_path"}]}


def withdrawn() -> dict[str, Any]:
    """The vexctl example, then a version-less `affected` months later."""
    body = vexctl_example()
    body["statements"].append({
        "vulnerability": {"name": CVE}, "products": [{"@id": "pkg:oci/source-controller"}],
        "status": "affected", "action_statement": "Upgrade source-controller",
        "timestamp": "2026-06-15T00:00:00Z"})
    return body


DOCUMENTS = {"vexctl": vexctl_example, "v001": v001_document, "withdrawn": withdrawn}


def settled(api: harness.Api, name: str) -> dict[str, Any] | None:
    obj = api.get_bulletin(name)
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"]["generation"] or \
            not status.get("components"):
        return None
    return obj


def test_documents_as_publishers_write_them_are_read_with_a_warning(
        api: harness.Api, operator: harness.OperatorProcess) -> None:
    harness.ensure_namespace(api, OPERATOR_NAMESPACE)
    names = {key: f"vex-docs-{key}" for key in DOCUMENTS}
    with harness.flux_inventory(api, PRE):
        try:
            for key, make in DOCUMENTS.items():
                api.core.create_namespaced_config_map(OPERATOR_NAMESPACE, {
                    "metadata": {"name": names[key]},
                    "data": {"vex.json": json.dumps(make())}})
                body = fixtures.bulletin_for(names[key], CVE, "source-controller",
                                             FIX["source-controller"])
                body["spec"]["vex"] = [{"configMapKeyRef": {"name": names[key],
                                                            "key": "vex.json"}}]
                api.create_bulletin(body)
            found = {key: harness.wait_for(lambda name=name: settled(api, name), timeout=30,
                                           what=f"status of {name}")
                     for key, name in names.items()}
        finally:
            for name in names.values():
                with contextlib.suppress(kubernetes.client.ApiException):
                    api.delete_bulletin(name)
                with contextlib.suppress(kubernetes.client.ApiException):
                    api.core.delete_namespaced_config_map(name, OPERATOR_NAMESPACE)

    def verdict(key: str) -> tuple[str, str]:
        component = found[key]["status"]["components"][0]
        return component["verdict"], component["reason"]

    assert verdict("vexctl") == ("NotAffected", "AllSuppressedByVex")
    assert verdict("v001") == ("NotAffected", "AllSuppressedByVex")
    assert verdict("withdrawn") == ("Vulnerable", "DigestNotListed")
    for key, obj in found.items():
        assert harness.condition(obj, "Ready")["status"] == "True", key
        warning = harness.condition(obj, "VexWarning")
        assert (warning["status"], warning["reason"]) == ("True", "NonConformingVex"), key
        where = f"ConfigMap {OPERATOR_NAMESPACE}/{names[key]} key vex.json"
        expected = f"{where}: @context: 'https://openvex.dev/ns' is OpenVEX v0.0.1" \
            if key == "v001" else f"{where}: statements[0].statement (and 1 more like it): " \
            "unknown field"
        assert expected in warning["message"], warning["message"]


@pytest.fixture(autouse=True)
def _no_leftovers(api: harness.Api) -> None:
    """Names are fixed; a run interrupted before its cleanup must not fail the next one."""
    for key in DOCUMENTS:
        with contextlib.suppress(kubernetes.client.ApiException):
            api.delete_bulletin(f"vex-docs-{key}")
        with contextlib.suppress(kubernetes.client.ApiException):
            api.core.delete_namespaced_config_map(f"vex-docs-{key}", OPERATOR_NAMESPACE)
