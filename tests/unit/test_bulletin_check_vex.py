"""`fluxsupport bulletin check` with OpenVEX documents, run as a CI pipeline runs it: the exit
code says whether something is vulnerable."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from typing import Any

import yaml

from tests import fixtures

CVE = "CVE-2026-47680"
PRE = fixtures.images(fixtures.PRE_FIX_V275)
FIX = fixtures.images(fixtures.FIX_V275)
PRODUCT = "pkg:oci/source-controller"


def fluxsupport(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fluxsupport", *args], capture_output=True,
                          text=True, timeout=120, check=False)


def files(tmp_path: pathlib.Path, statements: list[dict[str, Any]]) -> list[str]:
    """Arguments for `bulletin check`: the bulletin, a pre-fix inventory, one VEX document."""
    bulletin = tmp_path / "bulletin.yaml"
    bulletin.write_text(yaml.safe_dump(fixtures.bulletin_for(
        "cpsb-47680", CVE, "source-controller", FIX["source-controller"])))
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List",
                                         "items": fixtures.deployments_running(PRE, "v2.7.5")}))
    document = tmp_path / "vex.json"
    document.write_text(json.dumps({
        "@context": "https://openvex.dev/ns/v0.2.0", "@id": "https://vendor.example/vex/1",
        "author": "vendor", "timestamp": "2026-06-15T00:00:00Z", "version": 2,
        "statements": statements}))
    return [str(bulletin), "--inventory", str(inventory), "--vex", str(document), "-o", "json"]


JANUARY = {"vulnerability": {"name": CVE}, "products": [{"@id": PRODUCT}],
           "status": "not_affected", "justification": "vulnerable_code_not_in_execute_path",
           "timestamp": "2026-01-15T00:00:00Z"}
JUNE = {"vulnerability": {"name": CVE}, "products": [{"@id": PRODUCT}], "status": "affected",
        "action_statement": "Upgrade source-controller to v1.7.4",
        "timestamp": "2026-06-15T00:00:00Z"}


def verdicts(result: subprocess.CompletedProcess[str]) -> list[tuple[str, str]]:
    report = json.loads(result.stdout)
    return [(c["verdict"], c["reason"]) for b in report["bulletins"] for c in b["components"]]


def test_a_later_affected_makes_bulletin_check_fail_after_an_earlier_not_affected(
        tmp_path: pathlib.Path) -> None:
    result = fluxsupport("bulletin", "check", *files(tmp_path, [JANUARY, JUNE]))
    assert result.returncode == 1, result.stderr
    assert verdicts(result) == [("Vulnerable", "DigestNotListed")]
    # The January statement alone suppresses the CVE: exit 0.
    result = fluxsupport("bulletin", "check", *files(tmp_path, [JANUARY]))
    assert result.returncode == 0, result.stderr
    assert verdicts(result) == [("NotAffected", "AllSuppressedByVex")]


def test_bulletin_check_reads_an_openvex_v001_document_and_warns_about_it(
        tmp_path: pathlib.Path) -> None:
    """go-vex's v0.0.1 test data shape (plain-string vulnerability and products, no version):
    read, with a warning on stderr that names the field, instead of exit 2."""
    arguments = files(tmp_path, [])
    document = pathlib.Path(arguments[arguments.index("--vex") + 1])
    document.write_text(json.dumps({
        "@context": "https://openvex.dev/ns", "@id": "https://vendor.example/vex/old",
        "author": "vendor", "timestamp": "2026-01-15T00:00:00Z",
        "statements": [{"vulnerability": CVE, "products": [PRODUCT], "status": "not_affected",
                        "justification": "vulnerable_code_not_in_execute_path"}]}))
    result = fluxsupport("bulletin", "check", *arguments)
    assert result.returncode == 0, result.stderr
    assert verdicts(result) == [("NotAffected", "AllSuppressedByVex")]
    assert f"warning: {document}: @context: 'https://openvex.dev/ns' is OpenVEX v0.0.1" \
        in result.stderr
    assert f"warning: {document}: version: required field is missing" in result.stderr
