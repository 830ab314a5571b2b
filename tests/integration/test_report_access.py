"""``fluxsupport report`` against the real API server, with real, restricted credentials.

The report is meant to be pasted into a ticket: bulletins under embargo are left out unless
``--include-embargoed``, and then marked. A user who may read only one kind (cases in one
namespace, or bulletins) gets the part they may read, a line that names what was left out,
and exit code 3; with nothing readable, exit code 1.
"""

from __future__ import annotations

import datetime
import json
import pathlib
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from fluxsupport import constants
from tests import fixtures, harness
from tests.integration.test_cli import fluxsupport

FIX = fixtures.images(fixtures.FIX_V275)
RESOURCE = f"{{}}.{constants.GROUP}"


def token() -> str:
    return secrets.token_hex(4)


def user_kubeconfig(api: harness.Api, namespace: str, name: str,
                    tmp_path: pathlib.Path) -> pathlib.Path:
    """A kubeconfig with the token of a new ServiceAccount ``name``, which may do nothing
    until bound."""
    api.core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    path = harness.token_kubeconfig(
        api.kubeconfig, harness.service_account_token(api, namespace, name, 3600),
        tmp_path / name, name)
    assert harness.whoami(path) == f"system:serviceaccount:{namespace}:{name}"
    return path


def wait_evaluated(api: harness.Api, name: str) -> dict[str, Any]:
    return harness.wait_for(lambda: (b := api.get_bulletin(name)).get("status", {}).get(
        "components") and b, what=f"{name} evaluated")


@pytest.fixture
def bulletins(api: harness.Api, operator: harness.OperatorProcess,
              flux: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """A public bulletin and one under embargo for an hour, both evaluated by the operator."""
    until = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    public = fixtures.bulletin_for(f"public-{token()}", "CVE-2026-47680", "source-controller",
                                   FIX["source-controller"])
    cve = f"CVE-2026-{secrets.randbelow(900000) + 100000}"
    hidden = fixtures.bulletin_for(f"emb-{token()}", cve, "source-controller",
                                   FIX["source-controller"], embargoUntil=until)
    for body in (public, hidden):
        api.create_bulletin(body)
    try:
        wait_evaluated(api, public["metadata"]["name"])
        assert wait_evaluated(api, hidden["metadata"]["name"])["status"]["embargoed"] is True
        yield {"public": public["metadata"]["name"], "hidden": hidden["metadata"]["name"],
               "cve": cve, "until": until}
    finally:
        for body in (public, hidden):
            api.delete_bulletin(body["metadata"]["name"])


def test_a_user_who_may_read_only_cases_gets_them_and_is_told_bulletins_were_left_out(
        api: harness.Api, namespace: str, tmp_path: pathlib.Path,
        bulletins: dict[str, Any]) -> None:
    api.create_case(namespace, harness.case_manifest("visible", namespace))
    viewer = user_kubeconfig(api, namespace, "case-reader", tmp_path)
    harness.kubectl(api.kubeconfig, "create", "role", "case-reader", "-n", namespace,
                    "--verb=get,list,watch", f"--resource={RESOURCE.format('supportcases')}")
    harness.kubectl(api.kubeconfig, "create", "rolebinding", "case-reader", "-n", namespace,
                    "--role=case-reader", f"--serviceaccount={namespace}:case-reader")

    as_json = harness.wait_for(
        lambda: (r := fluxsupport(viewer, "report", "-n", namespace, "-o", "json")).returncode
        != 1 and r, what="the viewer's binding in effect")
    assert as_json.returncode == 3, as_json.stderr
    data = json.loads(as_json.stdout)
    assert [c["name"] for c in data["cases"]] == ["visible"]
    assert data["bulletins"] is None
    [left_out] = data["unreadable"]
    assert (left_out["resource"], left_out["status"]) == ("securitybulletins", 403)
    assert "forbidden" in left_out["message"]
    assert "warning: securitybulletins left out" in as_json.stderr

    table = fluxsupport(viewer, "report", "-n", namespace)
    assert table.returncode == 3, table.stderr
    assert "visible" in table.stdout
    assert ("Security bulletin verdicts: not readable with these credentials (HTTP 403)"
            in table.stdout)

    # Cases in every namespace are not readable either: nothing is, exit 1.
    nothing = fluxsupport(viewer, "report")
    assert nothing.returncode == 1
    assert "nothing in the report is readable" in nothing.stderr

    # Positive control: the admin reads both, exit 0.
    admin = fluxsupport(api.kubeconfig, "report", "-n", namespace, "-o", "json")
    assert admin.returncode == 0, admin.stderr
    assert bulletins["public"] in [b["name"] for b in json.loads(admin.stdout)["bulletins"]]


def test_a_user_who_may_read_only_bulletins_gets_them_without_the_cases(
        api: harness.Api, namespace: str, tmp_path: pathlib.Path,
        bulletins: dict[str, Any]) -> None:
    reader = user_kubeconfig(api, namespace, "bulletin-reader", tmp_path)
    role = f"bulletin-reader-{namespace}"
    harness.kubectl(api.kubeconfig, "create", "clusterrole", role, "--verb=get,list,watch",
                    f"--resource={RESOURCE.format('securitybulletins')}")
    harness.kubectl(api.kubeconfig, "create", "clusterrolebinding", role, f"--clusterrole={role}",
                    f"--serviceaccount={namespace}:bulletin-reader")
    try:
        result = harness.wait_for(
            lambda: (r := fluxsupport(reader, "report", "-o", "json")).returncode != 1 and r,
            what="the reader's binding in effect")
        assert result.returncode == 3, result.stderr
        data = json.loads(result.stdout)
        assert data["cases"] is None
        assert data["compliance"] is None
        assert bulletins["public"] in [b["name"] for b in data["bulletins"]]
        assert [u["resource"] for u in data["unreadable"]] == ["supportcases"]
    finally:
        harness.kubectl(api.kubeconfig, "delete", "clusterrolebinding", role)
        harness.kubectl(api.kubeconfig, "delete", "clusterrole", role)


def test_bulletins_under_embargo_are_left_out_of_the_report_unless_asked_for_then_marked(
        api: harness.Api, bulletins: dict[str, Any]) -> None:
    hidden, cve = bulletins["hidden"], bulletins["cve"]
    for fmt in ("table", "json"):
        result = fluxsupport(api.kubeconfig, "report", "-o", fmt)
        assert result.returncode == 0, result.stderr
        assert bulletins["public"] in result.stdout
        assert hidden not in result.stdout
        assert cve.lower() not in result.stdout.lower()
        # Said on stderr, to whoever runs it, not in what is pasted.
        assert "under embargo left out; --include-embargoed shows them" in result.stderr

    table = fluxsupport(api.kubeconfig, "report", "--include-embargoed")
    assert table.returncode == 0, table.stderr
    assert hidden in table.stdout
    assert f"EMBARGOED {cve}" in table.stdout
    assert bulletins["until"] in table.stdout
    assert "under EMBARGO: do not share those rows" in table.stdout
    assert "Remediation from bulletins under EMBARGO" in table.stdout

    as_json = fluxsupport(api.kubeconfig, "report", "--include-embargoed", "-o", "json")
    rows = {b["name"]: b for b in json.loads(as_json.stdout)["bulletins"]}
    assert (rows[hidden]["embargoed"], rows[hidden]["embargoUntil"]) == (True, bulletins["until"])
    assert rows[bulletins["public"]]["embargoed"] is False
