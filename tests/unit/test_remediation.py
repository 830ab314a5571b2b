"""The vendor's CVE remediation deadline: CVSS base scores, the two frameworks of the 2026
policy, the worked examples of docs/concepts.md, the policy setting, what `bulletin import
--from osv` writes, and withdrawn advisories."""

from __future__ import annotations

import copy
import json
import pathlib
import re
import subprocess
import sys
import typing
from typing import Any

import jsonschema
import pytest
import yaml

from fluxsupport import constants, resources
from fluxsupport.domain import advisory, bulletin, remediation
from fluxsupport.domain.calendar import BusinessCalendar
from fluxsupport.domain.policy import Policy, PolicyError, load_policy
from tests import fixtures
from tests.fixtures import EMEA, FINGERPRINTS, at, doc_moment, doc_table, preset_2026

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "concepts.md"
ADVISORIES = ROOT / "tests" / "data" / "upstream" / "advisories"
#: The policies of the worked examples of docs/concepts.md, which name each of them.
POLICIES = {name: fixtures.POLICIES[name] for name in ("2026 EMEA", "2026 AMER", "default")}


def document(advisory_id: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((ADVISORIES / f"{advisory_id}.json").read_text())
    return loaded


# ---- CVSS base scores ------------------------------------------------------------------------

@pytest.mark.parametrize(("vector", "score"), [
    # Worked out with the v3.1 specification's formulas: roundup(3.5952 + 1.6169) = 5.3.
    ("CVSS:3.1/AV:N/AC:H/PR:L/UI:N/S:U/C:H/I:N/A:N", 5.3),
    ("CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
    ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0),
    ("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:H/I:H/A:H", 9.9),  # CVE-2022-24877 as published
    ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0),
    # The v4.0 specification's calculator: 9.3 for full impact on the vulnerable system only.
    ("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N", 9.3),
    ("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:H/SI:H/SA:H", 10.0),
    # The base score leaves out threat (E) and environmental metrics.
    ("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/E:U", 9.3),
    ("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:H/I:H/A:H/E:U/RL:O", 9.9),
])
def test_base_scores(vector: str, score: float) -> None:
    assert remediation.base_score(vector) == score


@pytest.mark.parametrize(("vector", "fragment"), [
    ("CVSS:3.1/AV:N/AC:L", "Missing mandatory metrics"),
    ("CVSS:3.1/AV:N/AV:L/AC:L/PR:L/UI:N/S:C/C:H/I:H/A:H", "Duplicate metric"),
    ("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N/E:Q", "E:Q"),
    ("AV:N/AC:L/Au:N/C:P/I:P/A:P", "not a CVSS v3.0, v3.1 or v4.0 vector"),
    ("CVSS:2.0/AV:N", "not a CVSS v3.0, v3.1 or v4.0 vector"),
])
def test_a_vector_the_library_refuses_says_why(vector: str, fragment: str) -> None:
    with pytest.raises(remediation.CvssError, match=re.escape(fragment)):
        remediation.base_score(vector)


def test_an_advisory_is_scored_by_v4_before_v3_and_past_refused_vectors() -> None:
    v3 = {"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:H/PR:L/UI:N/S:U/C:H/I:N/A:N"}
    v4 = {"type": "CVSS_V4",
          "score": "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"}
    broken_v4 = {"type": "CVSS_V4", "score": "CVSS:4.0/AV:N/AC:L"}
    assert remediation.osv_score({"severity": [v3, v4]}) == remediation.Scored(v4["score"], 9.3)
    assert remediation.osv_score({"severity": [broken_v4, v3]}) == remediation.Scored(
        v3["score"], 5.3)
    unscored = remediation.osv_score({"severity": [broken_v4]})
    assert unscored is not None
    assert (unscored.vector, unscored.score) == (broken_v4["score"], None)
    assert unscored.problem is not None
    assert "Missing mandatory metrics" in unscored.problem
    assert remediation.osv_score({"severity": [{"type": "Ubuntu", "score": "high"}]}) is None
    assert remediation.osv_score({}) is None


@pytest.mark.parametrize(("score", "severity", "band"), [
    (9.0, "Low", "critical"), (10.0, None, "critical"), (8.9, "Critical", "other"),
    (0.1, None, "other"), (0.0, "Critical", None), (None, "Critical", "critical"),
    (None, "High", "other"), (None, "Low", "other"), (None, None, None),
])
def test_the_score_picks_the_band_and_the_severity_stands_in(
        score: float | None, severity: str | None, band: str | None) -> None:
    assert remediation.band(score, severity) == band


def test_a_support_day_is_one_business_day_of_the_policy() -> None:
    assert remediation.support_day_seconds(EMEA) == 8 * 3600
    assert remediation.support_day_seconds(Policy()) == 9 * 3600
    assert remediation.support_day_seconds(
        load_policy("businessHours: {start: '00:00', end: '24:00'}")) == 86400
    assert remediation.support_day_seconds(load_policy("businessHours: {alwaysOpen: true}")) \
        == 86400


# ---- the worked examples of docs/concepts.md ------------------------------------------------

def worked_examples() -> list[list[str]]:
    return doc_table(DOC, "#### Worked examples of the remediation deadline", [
        "Framework", "Policy", "CVSS", "Severity", "Clock start", "Due"])


def _with_framework(name: str, framework: str) -> Policy:
    return POLICIES[name].model_copy(update={"remediation_framework": framework})


def test_the_docs_have_an_example_of_each_rule() -> None:
    examples = worked_examples()
    assert {row[0] for row in examples} == {"standard", "upstream-patch"}
    assert {row[1] for row in examples} == set(POLICIES)
    scores = [row[2] for row in examples]
    assert any(s.startswith("CVSS:4.0/") for s in scores)
    assert {"9.0", "8.9", "0.0", "none"} <= set(scores)
    # Each framework crosses a DST switch.
    for framework in ("standard", "upstream-patch"):
        assert any(row[0] == framework and row[5] != "none"
                   and doc_moment(row[4]).utcoffset() != doc_moment(row[5]).utcoffset()
                   for row in examples)


@pytest.mark.parametrize("row", worked_examples(), ids=lambda row: f"{row[0]}-{row[4]}")
def test_worked_example(row: list[str]) -> None:
    name, cvss_text, severity, start, expected = row[1:6]
    framework = typing.cast(remediation.Framework, row[0])
    policy = POLICIES[name]
    score = (None if cvss_text == "none" else remediation.base_score(cvss_text)
             if cvss_text.startswith("CVSS:") else float(cvss_text))
    found = remediation.due(framework, doc_moment(start), score, severity, policy,
                            BusinessCalendar(policy))
    if expected == "none":
        assert found is None
        return
    assert found is not None
    assert found.due_at == doc_moment(expected)
    zone = BusinessCalendar(policy).zone
    assert found.due_at.astimezone(zone).utcoffset() == doc_moment(expected).utcoffset()
    # The same through a bulletin, as `bulletin import --policy` and the operator compute it.
    started = doc_moment(start).isoformat()
    vulnerability: dict[str, Any] = {"id": "CVE-2026-00001", "components": ["x"],
                                     "severity": severity}
    if cvss_text.startswith("CVSS:"):
        vulnerability["cvssVector"] = cvss_text
    elif cvss_text != "none":
        vulnerability["cvssScore"] = float(cvss_text)
    vulnerability["identifiedAt" if framework == "standard" else "patchAvailableAt"] = started
    spec = bulletin.BulletinSpec.model_validate({
        "title": "t", "publishedAt": started, "severity": "Low",
        "vulnerabilities": [vulnerability]})
    dues = remediation.bulletin_dues(spec, framework, policy, BusinessCalendar(policy))
    assert dues["CVE-2026-00001"] == found


def test_the_clock_starts_of_a_bulletin() -> None:
    published = "2026-12-04T16:00:00Z"
    spec = bulletin.BulletinSpec.model_validate({
        "title": "t", "publishedAt": published, "severity": "Critical", "vulnerabilities": [
            {"id": "CVE-2026-00001", "components": ["x"]},
            {"id": "CVE-2026-00002", "components": ["x"], "identifiedAt": "2026-12-01T16:00:00Z",
             "patchAvailableAt": "2026-12-02T16:00:00Z", "severity": "Low"}]})
    calendar = BusinessCalendar(EMEA)
    standard = remediation.bulletin_dues(spec, "standard", EMEA, calendar)
    upstream = remediation.bulletin_dues(spec, "upstream-patch", EMEA, calendar)
    # Standard: without identifiedAt the bulletin's publication, and its severity, decide.
    first = standard["CVE-2026-00001"]
    assert first is not None
    assert (first.started_at, first.band, first.budget) == (at(published), "critical",
                                                             "72 hours")
    second = standard["CVE-2026-00002"]
    assert second is not None
    assert (second.started_at, second.band) == (at("2026-12-01T16:00:00Z"), "other")
    # Upstream patch: no patch, no clock.
    assert upstream["CVE-2026-00001"] is None
    late = upstream["CVE-2026-00002"]
    assert late is not None
    assert late.due_at == at("2026-12-16T16:00:00Z")
    # A withdrawn advisory no longer stands: no deadline at all.
    withdrawn = spec.model_copy(update={"withdrawn_at": at("2026-12-05T00:00:00Z")})
    assert remediation.bulletin_dues(withdrawn, "standard", EMEA, calendar) == {
        "CVE-2026-00001": None, "CVE-2026-00002": None}


# ---- the policy setting ----------------------------------------------------------------------

@pytest.mark.parametrize("text", sorted(FINGERPRINTS))
def test_the_remediation_framework_leaves_the_fingerprint(text: str) -> None:
    assert load_policy(text).fingerprint() == FINGERPRINTS[text]
    for framework in ("standard", "upstream-patch", "null"):
        assert load_policy(f"{text}remediationFramework: {framework}\n").fingerprint() \
            == FINGERPRINTS[text]


def test_the_default_policy_tracks_no_remediation_and_the_2026_preset_the_standard() -> None:
    assert Policy().remediation_framework is None
    assert load_policy("").remediation_framework is None
    assert EMEA.remediation_framework == "standard"
    assert preset_2026("APAC", "remediationFramework: upstream-patch\n").remediation_framework \
        == "upstream-patch"
    assert preset_2026("APAC", "remediationFramework: null\n").remediation_framework is None
    assert load_policy("remediationFramework: standard\n").remediation_framework == "standard"
    with pytest.raises(PolicyError, match="remediationFramework: Input should be 'standard'"):
        load_policy("remediationFramework: fast\n")


# ---- what an OSV advisory gives ---------------------------------------------------------------

def test_an_imported_advisory_carries_its_score_and_clock_starts() -> None:
    converted = advisory.to_bulletin(document("GHSA-4xh5-jcj2-ch8q"))
    assert converted.spec is not None
    [vulnerability] = converted.spec["vulnerabilities"]
    assert vulnerability["cvssVector"] == "CVSS:3.1/AV:N/AC:H/PR:L/UI:N/S:U/C:H/I:N/A:N"
    assert vulnerability["cvssScore"] == 5.3
    assert vulnerability["identifiedAt"] == vulnerability["patchAvailableAt"] \
        == "2026-01-21T22:23:33Z"
    assert "withdrawnAt" not in converted.spec


def test_no_patch_clock_without_a_fixed_version_and_no_clock_without_publication() -> None:
    source = document("GHSA-4xh5-jcj2-ch8q")
    source["affected"][0]["ranges"][0]["events"] = [{"introduced": "0.36.0"},
                                                     {"last_affected": "0.39.0"}]
    spec = advisory.to_bulletin(source).spec
    assert spec is not None
    assert "patchAvailableAt" not in spec["vulnerabilities"][0]
    assert spec["vulnerabilities"][0]["identifiedAt"] == "2026-01-21T22:23:33Z"
    del source["published"]
    spec = advisory.to_bulletin(source).spec
    assert spec is not None
    assert "identifiedAt" not in spec["vulnerabilities"][0]


def test_every_cve_of_an_advisory_gets_the_facts() -> None:
    source = document("GHSA-4xh5-jcj2-ch8q")
    source["aliases"] = ["CVE-2026-23990", "CVE-2026-23991"]
    source["severity"] = [{"type": "CVSS_V4", "score": "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/"
                                                       "VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"}]
    spec = advisory.to_bulletin(source).spec
    assert spec is not None
    assert [(v["id"], v["cvssScore"]) for v in spec["vulnerabilities"]] == [
        ("CVE-2026-23990", 9.3), ("CVE-2026-23991", 9.3)]


def _feed(documents: list[dict[str, Any]]) -> advisory.Feed:
    bulletin_schema = next(
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for crd in resources.crd_documents()
        if crd["spec"]["names"]["kind"] == constants.BULLETIN_KIND)
    return advisory.read_feed(
        [(f"{d['id']}.json", json.dumps(d).encode()) for d in documents],
        jsonschema.Draft202012Validator(resources.osv_schema()),
        jsonschema.Draft7Validator(bulletin_schema, format_checker=jsonschema.FormatChecker()))


def test_a_withdrawn_advisory_gives_a_marked_bulletin_that_the_crd_accepts() -> None:
    withdrawn = document("GHSA-v554-xwgw-hc3w")
    withdrawn["withdrawn"] = "2024-06-01T10:00:00Z"
    feed = _feed([withdrawn, document("GHSA-4xh5-jcj2-ch8q")])
    assert feed.invalid == ()
    marked = {b.advisory_id: b.converted.spec for b in feed.bulletins}
    assert marked["GHSA-v554-xwgw-hc3w"] is not None
    assert marked["GHSA-v554-xwgw-hc3w"]["withdrawnAt"] == "2024-06-01T10:00:00Z"
    assert "withdrawnAt" not in (marked["GHSA-4xh5-jcj2-ch8q"] or {})
    model = bulletin.BulletinSpec.model_validate(marked["GHSA-v554-xwgw-hc3w"])
    assert model.withdrawn_at == at("2024-06-01T10:00:00Z")
    assert model.vulnerabilities[0].cvss_score == 5.1


def test_every_vendored_advisory_still_gives_a_valid_bulletin() -> None:
    feed = _feed([json.loads(p.read_text()) for p in sorted(ADVISORIES.glob("*.json"))])
    assert feed.invalid == ()
    assert all("cvssScore" in v for b in feed.bulletins
               for v in (b.converted.spec or {})["vulnerabilities"])


def test_an_unscorable_vector_is_kept_without_a_score() -> None:
    source = document("GHSA-4xh5-jcj2-ch8q")
    # The OSV schema lets a v3 vector miss base metrics; the library refuses it.
    source["severity"] = [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:H"}]
    feed = _feed([source])
    assert feed.invalid == ()
    [vulnerability] = (feed.bulletins[0].converted.spec or {})["vulnerabilities"]
    assert vulnerability["cvssVector"] == "CVSS:3.1/AV:N/AC:H"
    assert "cvssScore" not in vulnerability


# ---- bulletin import --from osv --policy -----------------------------------------------------

def _import(*args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fluxsupport", "bulletin", "import", "--from",
                           "osv", *args], capture_output=True, text=True, timeout=120,
                          check=False, cwd=cwd)


def test_the_documented_import_prints_what_the_docs_say(tmp_path: pathlib.Path) -> None:
    (tmp_path / "policy-2026.yaml").write_text("preset: support-policy-2026\nregion: EMEA\n")
    result = _import(str(ADVISORIES / "GHSA-j77r-2fxf-5jrw.json"), "--policy",
                     "policy-2026.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = DOC.read_text()
    block = text.split("grep -A 11 '^  vulnerabilities:'\n", 1)[1].split("```", 1)[0]
    lines = result.stdout.splitlines()
    start = lines.index("  vulnerabilities:")
    assert "\n".join(lines[start:start + 12]) + "\n" == block


def test_import_writes_the_due_time_of_every_vulnerability(tmp_path: pathlib.Path) -> None:
    (tmp_path / "policy.yaml").write_text("preset: support-policy-2026\nregion: EMEA\n"
                                          "remediationFramework: upstream-patch\n")
    result = _import(str(ADVISORIES), "--policy", "policy.yaml", "-o", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    dues = {}
    for path in sorted((tmp_path / "out").glob("*.yaml")):
        for vulnerability in yaml.safe_load(path.read_text())["spec"]["vulnerabilities"]:
            assert vulnerability["remediationFramework"] == "upstream-patch"
            dues[vulnerability["id"]] = vulnerability["remediationDueAt"]
    # GHSA-j77r (9.9): 7 days; GHSA-4xh5 (5.3): 14 days; both from `published`.
    assert dues["CVE-2022-24877"] == "2022-05-11T18:04:07Z"
    assert dues["CVE-2026-23990"] == "2026-02-04T22:23:33Z"
    assert len(dues) == 6


def test_import_without_a_framework_writes_no_due_time(tmp_path: pathlib.Path) -> None:
    plain = _import(str(ADVISORIES / "GHSA-j77r-2fxf-5jrw.json"), cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert "cvssScore: 9.9" in plain.stdout
    assert "remediationDueAt" not in plain.stdout
    (tmp_path / "policy.yaml").write_text("timezone: Europe/Berlin\n")
    none = _import(str(ADVISORIES / "GHSA-j77r-2fxf-5jrw.json"), "--policy", "policy.yaml",
                   cwd=tmp_path)
    assert none.returncode == 0, none.stderr
    assert none.stdout == plain.stdout
    assert "no remediationFramework" in none.stderr


def test_import_warns_of_a_vector_it_cannot_score(tmp_path: pathlib.Path) -> None:
    source = document("GHSA-4xh5-jcj2-ch8q")
    source["severity"] = [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:H"}]
    (tmp_path / "advisory.json").write_text(json.dumps(source))
    (tmp_path / "policy.yaml").write_text("preset: support-policy-2026\nregion: EMEA\n")
    result = _import("advisory.json", "--policy", "policy.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "CVE-2026-23990: no CVSS score" in result.stderr
    assert "Missing mandatory metrics" in result.stderr
    [vulnerability] = yaml.safe_load(result.stdout)["spec"]["vulnerabilities"]
    # Medium by GitHub's severity: 5 Support Days from Thursday 09:00.
    assert vulnerability["remediationDueAt"] == "2026-01-28T17:00:00Z"


@pytest.mark.parametrize(("args", "fragment"), [
    (["--policy", "missing.yaml"], "cannot read missing.yaml"),
    (["--policy", "bad.yaml"], "remediationFramework: Input should be"),
])
def test_import_refuses_a_bad_policy(args: list[str], fragment: str,
                                     tmp_path: pathlib.Path) -> None:
    (tmp_path / "bad.yaml").write_text("remediationFramework: soon\n")
    result = subprocess.run(
        [sys.executable, "-m", "fluxsupport", "bulletin", "import", "--from", "osv",
         str(ADVISORIES / "GHSA-j77r-2fxf-5jrw.json"), *args], capture_output=True, text=True,
        timeout=120, check=False, cwd=tmp_path, env={"COLUMNS": "300", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert fragment in result.stderr


def test_policy_needs_from_osv(tmp_path: pathlib.Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fluxsupport", "bulletin", "import", "--images", "x.yaml",
         "--cve", "CVE-2026-47680", "--name", "n", "--policy", "p.yaml"],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
        env={"COLUMNS": "300", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert "need --from osv" in result.stderr


def test_a_bulletin_with_the_new_fields_passes_bulletin_check_schema() -> None:
    manifest = advisory.Imported("x", "GHSA-j77r-2fxf-5jrw", advisory.to_bulletin(
        document("GHSA-j77r-2fxf-5jrw"))).manifest()
    spec = copy.deepcopy(manifest["spec"])
    spec["vulnerabilities"][0].update(remediationFramework="standard",
                                      remediationDueAt="2022-05-07T18:04:07Z")
    spec["withdrawnAt"] = "2022-06-01T00:00:00Z"
    schema = next(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
                  for crd in resources.crd_documents()
                  if crd["spec"]["names"]["kind"] == constants.BULLETIN_KIND)
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())
    assert list(validator.iter_errors({**manifest, "spec": spec})) == []
    spec["vulnerabilities"][0]["cvssScore"] = 11
    assert [e.message for e in validator.iter_errors({**manifest, "spec": spec})] == [
        "11 is greater than the maximum of 10"]
