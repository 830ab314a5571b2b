"""CLI commands that need no cluster: sla due, bulletin check, bulletin import, run's input checks.

Every command is run as a user would, through the console entry point, and its error path
exits with 2 and a message that says what is wrong.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import yaml

from tests import fixtures

PRE = fixtures.images(fixtures.PRE_FIX_V275)
FIX = fixtures.images(fixtures.FIX_V275)


def fluxsupport(*args: str, cwd: pathlib.Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fluxsupport", *args], capture_output=True,
                          text=True, timeout=120, check=False, cwd=cwd)


def test_help_lists_every_command() -> None:
    result = fluxsupport("--help")
    assert result.returncode == 0
    for command in ("run", "demo", "devcluster", "case", "sla", "bulletin", "report"):
        assert command in result.stdout


def test_sla_due_prints_one_iso_line_in_the_policy_zone() -> None:
    result = fluxsupport("sla", "due", "--level", "1", "--opened", "2026-12-04T16:00:00Z")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "2026-12-07T11:00:00+00:00\n"


def test_sla_due_json_with_zone_and_holidays() -> None:
    result = fluxsupport("sla", "due", "--level", "High", "--opened", "2026-11-25T20:00:00Z",
                         "--timezone", "America/New_York", "--holidays", "US", "--json")
    assert result.returncode == 0, result.stderr
    # Wed 15:00 EST + 8 h: 3 h Wednesday, Thanksgiving closed, 5 h Friday.
    assert json.loads(result.stdout) == {"startedAt": "2026-11-25T15:00:00-05:00",
                                         "warningAt": "2026-11-27T12:00:00-05:00",
                                         "deadline": "2026-11-27T14:00:00-05:00"}


def test_sla_due_bad_input_exits_2_with_a_message() -> None:
    for args, fragment in (
            (("--level", "7", "--opened", "2026-12-04T16:00:00Z"), "is not a level"),
            (("--level", "1", "--opened", "tomorrow"), "is not an ISO 8601 time"),
            # Regression: years 1 and 9999 raised tracebacks in the calendar.
            (("--level", "1", "--opened", "0001-06-01T10:00:00Z"), "supported years 1970-2099"),
            (("--level", "1", "--opened", "9999-06-01T10:00:00Z"), "supported years 1970-2099"),
            (("--level", "1", "--opened", "9999-12-31T23:59:59Z"), "supported years 1970-2099"),
            (("--level", "1", "--opened", "2026-12-04T16:00:00Z", "--holidays", "ZZ"),
             "unknown holiday country"),
    ):
        result = fluxsupport("sla", "due", *args)
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        assert fragment in " ".join(result.stderr.replace("│", " ").split())


def write(path: pathlib.Path, documents: list[object]) -> pathlib.Path:
    path.write_text(yaml.safe_dump_all(documents))
    return path


def inventory_list(tmp_path: pathlib.Path, entries: dict[str, dict[str, str]]) -> pathlib.Path:
    items = fixtures.deployments_running(entries, "v2.7.5")
    return write(tmp_path / "inventory.yaml", [{"apiVersion": "v1", "kind": "List",
                                                "items": items}])


def test_bulletin_check_exit_1_and_json_shape_when_vulnerable(tmp_path: pathlib.Path) -> None:
    bulletin = write(tmp_path / "b.yaml", [fixtures.bulletin_for(
        "cpsb-47680", "CVE-2026-47680", "source-controller", FIX["source-controller"])])
    result = fluxsupport("bulletin", "check", str(bulletin), "--inventory",
                         str(inventory_list(tmp_path, PRE)), "--vex",
                         str(fixtures.UPSTREAM / "vex" / "v2.7.json"), "-o", "json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    component = report["bulletins"][0]["components"][0]
    assert set(component) == {"namespace", "component", "image", "digest", "verdict", "reason",
                              "cves", "remediation"}
    assert component["verdict"] == "Vulnerable"
    assert component["remediation"]["digest"] == FIX["source-controller"]["digest"]
    assert component["cves"] == [{"id": "CVE-2026-47680", "verdict": "Vulnerable",
                                  "reason": "DigestNotListed"}]


def test_bulletin_check_exit_0_when_fixed(tmp_path: pathlib.Path) -> None:
    bulletin = write(tmp_path / "b.yaml", [fixtures.bulletin_for(
        "cpsb-47680", "CVE-2026-47680", "source-controller", FIX["source-controller"])])
    result = fluxsupport("bulletin", "check", str(bulletin), "--inventory",
                         str(inventory_list(tmp_path, FIX)))
    assert result.returncode == 0, result.stderr
    assert "Fixed" in result.stdout


def test_bulletin_check_invalid_input_names_file_and_field(tmp_path: pathlib.Path) -> None:
    body = fixtures.bulletin_for("bad", "CVE-2026-47680", "source-controller",
                                 FIX["source-controller"])
    body["spec"]["fixes"][0]["images"][0]["digest"] = "sha256:nothex"
    bad = write(tmp_path / "bad.yaml", [body])
    result = fluxsupport("bulletin", "check", str(bad), "--inventory",
                         str(inventory_list(tmp_path, PRE)))
    assert result.returncode == 2
    assert str(bad) in result.stderr
    assert "spec.fixes[0].images[0].digest" in result.stderr
    broken_vex = tmp_path / "vex.json"
    broken_vex.write_text('{"@context": ')
    good = write(tmp_path / "good.yaml", [fixtures.bulletin_for(
        "ok", "CVE-2026-47680", "source-controller", FIX["source-controller"])])
    result = fluxsupport("bulletin", "check", str(good), "--inventory",
                         str(inventory_list(tmp_path, PRE)), "--vex", str(broken_vex))
    assert result.returncode == 2
    assert str(broken_vex) in result.stderr
    empty = write(tmp_path / "empty.yaml", [{"apiVersion": "v1", "kind": "List", "items": []}])
    result = fluxsupport("bulletin", "check", str(good), "--inventory", str(empty))
    assert result.returncode == 2
    assert "no Flux Deployment found" in result.stderr


def test_bulletin_import_builds_a_valid_manifest(tmp_path: pathlib.Path) -> None:
    result = fluxsupport("bulletin", "import", "--images", str(fixtures.FIX_V275),
                         "--cve", "CVE-2026-47680", "--component", "source-controller",
                         "--name", "cpsb-2026-0602", "--published", "2026-06-02T12:00:00Z")
    assert result.returncode == 0, result.stderr
    manifest = yaml.safe_load(result.stdout)
    assert manifest["spec"]["fixes"] == [{
        "component": "source-controller", "version": "v1.7.4",
        "images": [{"repository": FIX["source-controller"]["name"],
                    "digest": FIX["source-controller"]["digest"]}]}]
    # What import builds, check accepts.
    path = tmp_path / "imported.yaml"
    path.write_text(result.stdout)
    checked = fluxsupport("bulletin", "check", str(path), "--inventory",
                          str(inventory_list(tmp_path, FIX)))
    assert checked.returncode == 0, checked.stderr


def test_bulletin_import_bad_input_exits_2() -> None:
    result = fluxsupport("bulletin", "import", "--images", str(fixtures.FIX_V275),
                         "--cve", "CVE-26-1", "--name", "x")
    assert result.returncode == 2
    assert "is not a CVE-YYYY-NNNN or GHSA id" in result.stderr
    result = fluxsupport("bulletin", "import", "--images", str(fixtures.FIX_V275),
                         "--cve", "CVE-2026-47680", "--name", "x", "--component", "nope")
    assert result.returncode == 2
    assert "none of the components" in result.stderr


def test_case_create_dry_run_prints_the_manifest() -> None:
    result = fluxsupport("case", "create", "stuck", "-n", "team-a", "--title", "Stuck",
                         "--statement", "Prod blocked", "--severity", "High", "--outage",
                         "partial", "--business-critical", "--component", "helm-controller",
                         "--category", "incident", "--dry-run")
    assert result.returncode == 0, result.stderr
    manifest = yaml.safe_load(result.stdout)
    assert manifest["metadata"] == {"name": "stuck", "namespace": "team-a"}
    assert manifest["spec"]["impact"]["businessCritical"] is True


def test_case_respond_with_a_bad_time_exits_2() -> None:
    result = fluxsupport("case", "respond", "x", "--at", "noon", "--kubeconfig", "/dev/null")
    assert result.returncode == 2
    assert "not an RFC 3339 time" in result.stderr


def test_run_rejects_a_bad_policy_with_exit_2(tmp_path: pathlib.Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("targets: {Urgent: forever}\n")
    result = fluxsupport("run", "--policy", str(policy))
    assert result.returncode == 2
    assert "targets.Urgent" in result.stderr
    assert str(policy) in result.stderr


def test_devcluster_build_rejects_unknown_tools() -> None:
    # containerd comes from Debian's package (make node), not from a Go build.
    result = fluxsupport("devcluster", "build", "containerd")
    assert result.returncode == 2
    assert "unknown tool containerd" in result.stderr


def test_case_respond_with_a_future_time_exits_2() -> None:
    """The operator would ignore it (AnnotationInFuture), so the CLI refuses to write it."""
    result = fluxsupport("case", "respond", "x", "--at", "2099-01-01T00:00:00Z",
                         "--kubeconfig", "/dev/null")
    assert result.returncode == 2
    assert "is in the future" in result.stderr


def test_sla_due_at_the_edges_of_the_supported_years() -> None:
    early = fluxsupport("sla", "due", "--level", "4", "--opened", "1970-01-01T00:00:00Z")
    assert early.returncode == 0, early.stderr
    # 1970 London kept British Standard Time (UTC+1) all year, and New Year's Day became an
    # English bank holiday only in 1974: Thu 9 h + Fri 9 h + Mon 6 h.
    assert early.stdout == "1970-01-05T15:00:00+01:00\n"
    late = fluxsupport("sla", "due", "--level", "4", "--opened", "2099-12-31T23:00:00Z")
    assert late.returncode == 0, late.stderr
    # Thu 31 Dec 2099 23:00 is closed, Fri 1 Jan 2100 a holiday: Mon 9 h + Tue 9 h + Wed 6 h.
    assert late.stdout == "2100-01-06T15:00:00+00:00\n"
