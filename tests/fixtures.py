"""Readers for the upstream reference data vendored in tests/data/upstream (tests only)."""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import yaml

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
