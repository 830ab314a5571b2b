"""The VexWarning condition: a SecurityBulletin that cites an OpenVEX document deviating from
OpenVEX v0.2.0 (read as go-vex reads it) says so, by ConfigMap, key and JSON path, while its
verdicts use the document and Ready stays True."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests import fixtures
from tests.unit.test_bulletin_index import FIX, PRE, Harness, _body

VEXCTL_EXAMPLE = (fixtures.UPSTREAM / "openvex" / "vexctl" / "examples" / "sarif" /
                  "sample-1statement.openvex.json")
REF = [{"configMapKeyRef": {"name": "vendor-vex", "key": "vex.json"}}]


def conditions_of(h: Harness, name: str) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in h.fake.status[name]["conditions"]}


def vendor_document(cve: str, conforming: bool) -> str:
    """vexctl's example (a `statement` field, as vexctl writes it), about source-controller;
    ``conforming``: without the field and with a version."""
    body = json.loads(VEXCTL_EXAMPLE.read_text())
    statement = body["statements"][0]
    statement["vulnerability"] = {"name": cve}
    statement["products"] = [{"@id": "pkg:oci/source-controller"}]
    assert "statement" in statement
    body.pop("version", None)
    if conforming:
        del statement["statement"]
        body["version"] = 1
    return json.dumps(body)


def test_a_bulletin_names_what_its_vex_document_deviates_in_and_still_uses_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        h = Harness(monkeypatch)
        h.run_image("source-controller", PRE["source-controller"])
        body = _body("cited", "source-controller", FIX["source-controller"], vex=REF)
        cve = body["spec"]["vulnerabilities"][0]["id"]
        h.configmap("vendor-vex", vendor_document(cve, conforming=False))
        h.controller.observe(body)
        h.controller.observe(_body("uncited", "source-controller", FIX["source-controller"]))
        await h.drain()

        found = conditions_of(h, "cited")
        assert found["Ready"]["status"] == "True"
        warning = found["VexWarning"]
        assert (warning["status"], warning["reason"]) == ("True", "NonConformingVex")
        where = "ConfigMap fluxsupport-system/vendor-vex key vex.json"
        assert f"{where}: statements[0].statement: unknown field" in warning["message"]
        assert f"{where}: version: required field is missing" in warning["message"]
        # The document counts: its not_affected statement suppresses the CVE.
        assert h.verdict("cited") == "NotAffected"
        assert h.verdict("uncited") == "Vulnerable"
        uncited = conditions_of(h, "uncited")["VexWarning"]
        assert (uncited["status"], uncited["reason"]) == ("False", "NoVexDocuments")
        assert not any(event["reason"] == "NonConformingVex" for event in h.fake.events.values())

        h.configmap("vendor-vex", vendor_document(cve, conforming=True))
        h.controller.reconcile_all_soon()
        await h.drain()
        warning = conditions_of(h, "cited")["VexWarning"]
        assert (warning["status"], warning["reason"]) == ("False", "ConformingVex")
        assert h.verdict("cited") == "NotAffected"

    asyncio.run(scenario())
