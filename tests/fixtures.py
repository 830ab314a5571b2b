"""What tests check against (tests only): readers for the upstream reference data vendored in
tests/data/upstream, and the policies, times and tables of the worked examples in docs/*.md."""

from __future__ import annotations

import copy
import datetime
import hashlib
import importlib.metadata
import itertools
import pathlib
import re
from collections.abc import Sequence
from typing import Any

import yaml

from fluxsupport.domain import pause, timing
from fluxsupport.domain.policy import Policy, load_policy

#: Vendored upstream reference data (provenance in data/upstream/README.md), so
#: that every tier runs from the checkout alone.
UPSTREAM = pathlib.Path(__file__).resolve().parent / "data" / "upstream"

HISTORY = UPSTREAM / "history"
PRE_FIX_V275 = HISTORY / "v2.7.5-enterprise-distroless.at-67e596b.pre-CVE-2026-47680.yaml"
FIX_V275 = HISTORY / "v2.7.5-enterprise-distroless.at-a322d0b.fix-CVE-2026-47680.yaml"


def images(path: pathlib.Path) -> dict[str, dict[str, str]]:
    """component -> {name, newTag, digest} from a distribution images file."""
    entries = yaml.safe_load(path.read_text())["images"]
    return {entry["name"].rsplit("/", 1)[-1]: entry for entry in entries}


def release_images(version: str, variant: str) -> dict[str, dict[str, str]]:
    return images(UPSTREAM / "images" / version / f"{variant}.yaml")


def flux_deployments() -> list[dict[str, Any]]:
    documents = yaml.safe_load_all((UPSTREAM / "flux-deployments.yaml").read_text())
    return [doc for doc in documents if doc and doc.get("kind") == "Deployment"]


def deployments_running(entries: dict[str, dict[str, str]], flux_version: str,
                        namespace: str = "flux-system") -> list[dict[str, Any]]:
    """The fixture Deployments, re-pinned to the given images (as the Flux Operator renders)."""
    result = []
    for original in flux_deployments():
        deployment = copy.deepcopy(original)
        name = deployment["metadata"]["name"]
        deployment["metadata"]["namespace"] = namespace
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        if name in entries:
            entry = entries[name]
            container["image"] = f"{entry['name']}:{entry['newTag']}@{entry['digest']}"
            deployment["metadata"].setdefault("labels", {})["app.kubernetes.io/version"] = \
                flux_version
        result.append(deployment)
    return result


def bulletin_for(name: str, cve: str, component: str, fixed: dict[str, str],
                 published: str = "2026-06-02T12:00:00Z", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "support.fluxcd.controlplane.io/v1alpha1", "kind": "SecurityBulletin",
        "metadata": {"name": name},
        "spec": {
            "title": f"Fix {cve} in {component}", "publishedAt": published, "severity": "High",
            "vulnerabilities": [{"id": cve, "severity": "High", "components": [component]}],
            "fixes": [{"component": component, "version": fixed["newTag"],
                       "images": [{"repository": fixed["name"], "digest": fixed["digest"]}]}],
            **spec,
        },
    }


#: Minimal CRDs for the Flux Operator's kinds, which the inventory watches when they exist.
FLUX_OPERATOR_KINDS = ("FluxInstance", "FluxReport")


def flux_operator_crd(kind: str) -> dict[str, Any]:
    plural = f"{kind.lower()}s"
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.fluxcd.controlplane.io"},
        "spec": {"group": "fluxcd.controlplane.io", "scope": "Namespaced",
                 "names": {"kind": kind, "plural": plural, "singular": kind.lower(),
                           "listKind": f"{kind}List"},
                 "versions": [{"name": "v1", "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": {
                                   "type": "object",
                                   "x-kubernetes-preserve-unknown-fields": True}}}]},
    }


# ---- the policies, times and tables of the worked examples in docs/*.md ----------------------

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"
SLA_POLICY_DOC = DOCS / "sla-policy.md"


def preset_2026(region: str, extra: str = "") -> Policy:
    """The support-policy-2026 preset of ``region``, with ``extra`` lines of policy YAML."""
    return load_policy(f"preset: support-policy-2026\nregion: {region}\n{extra}")


#: The policies by the names the worked examples' tables give them.
POLICIES = {"default": Policy(), "2026 EMEA": preset_2026("EMEA"),
            "2026 AMER": preset_2026("AMER"), "2026 APAC": preset_2026("APAC")}
EMEA = POLICIES["2026 EMEA"]
#: Monday 2026-11-30 10:00 UTC: 10:00 in London, within the default and EMEA hours.
MONDAY = datetime.datetime(2026, 11, 30, 10, 0, tzinfo=datetime.UTC)


def at(text: str) -> datetime.datetime:
    """An RFC 3339 time, in UTC."""
    return timing.parse_time(text)


#: A time in a worked example's table: ``Mon 2026-11-30 10:00 +00:00``.
DOC_MOMENT = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun) (\d{4}-\d\d-\d\d) (\d\d:\d\d) "
                        r"([+-]\d\d:\d\d)$")


def doc_moment(text: str) -> datetime.datetime:
    """A worked example's time, with the offset it is written with; its weekday is checked."""
    match = DOC_MOMENT.match(text.strip())
    assert match, f"not a worked-example time: {text!r}"
    moment = datetime.datetime.fromisoformat(f"{match[2]}T{match[3]}{match[4]}")
    assert moment.strftime("%a") == match[1], f"{text}: wrong weekday"
    return moment


def doc_pauses(text: str) -> tuple[pause.Pause, ...]:
    """``none``, or waits separated by ``;``: ``START to END`` or ``START to (waiting)``."""
    if text == "none":
        return ()
    found = []
    for part in text.split(";"):
        start, _, end = part.partition(" to ")
        found.append(pause.Pause(doc_moment(start),
                                 None if end.strip() == "(waiting)" else doc_moment(end)))
    return tuple(found)


def doc_table(doc: pathlib.Path, heading: str, header: Sequence[str]) -> list[list[str]]:
    """The cells of each row of the first table after ``heading`` in ``doc``, once its first
    columns are checked to be ``header``; the separator row is left out."""
    section = doc.read_text().split(heading, 1)[1]
    lines = section.splitlines()
    first = next(index for index, line in enumerate(lines) if line.startswith("|"))
    rows = list(itertools.takewhile(lambda line: line.startswith("|"), lines[first:]))
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]
    assert cells[0][:len(header)] == list(header)
    return [row for row in cells[1:] if not set(row[0]) <= {"-"}]


#: What the fingerprints of the default and the 2026 presets hashed before the settings that
#: leave them existed (escalation, root-cause analyses, add-ons, the remediation framework),
#: by policy text; the holidays release is appended. Deadlines stored with them stay.
_FINGERPRINTED = {
    "": '{"timezone":"Europe/London","holidays":"GB-ENG","closedDates":[],"businessHours":'
        '{"alwaysOpen":false,"days":["Mon","Tue","Wed","Thu","Fri"],"start":"09:00","end":'
        '"18:00"},"targets":{"Urgent":14400,"High":28800,"Medium":43200,"Low":86400},'
        '"warningRatio":0.75}',
    "preset: support-policy-2026\nregion: AMER\n":
        '{"preset":"support-policy-2026","region":"AMER","timezone":"America/New_York",'
        '"holidays":"US","closedDates":[],"businessHours":{"alwaysOpen":false,"days":["Mon",'
        '"Tue","Wed","Thu","Fri"],"start":"09:00","end":"17:00"},"targets":{"Urgent":3600,'
        '"High":14400,"Medium":28800,"Low":57600},"resolutionTargets":{"Urgent":14400,'
        '"High":28800,"Medium":57600,"Low":144000},"alwaysOpenLevels":[1],'
        '"workaroundLowersSeverity":true,"warningRatio":0.75}',
}
FINGERPRINTS = {
    text: hashlib.sha256((material + importlib.metadata.version("holidays")).encode()
                         ).hexdigest()[:12]
    for text, material in _FINGERPRINTED.items()}
