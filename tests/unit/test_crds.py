"""The CRDs as users meet them: `kubectl explain` text for every field, list types for
server-side apply, and short names that no built-in or common resource already uses."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from fluxsupport import resources

#: Short names served by a stock kube-apiserver (v1.36, `kubectl api-resources`), whether or
#: not a cluster enables the group. A custom resource loses to them: `kubectl get sc` lists
#: StorageClasses on every cluster.
BUILT_IN_SHORT_NAMES = frozenset({
    "cs", "cm", "ep", "ev", "limits", "ns", "no", "pvc", "pv", "po", "rc", "quota", "sa", "svc",
    "crd", "crds", "ds", "deploy", "rs", "sts", "hpa", "cj", "csr", "ing", "ip", "netpol", "pdb",
    "pc", "sc", "vac",
})

#: Short names (and names) of the custom resources most often installed beside Flux: a clash
#: there makes kubectl pick one kind at random by priority and warn on every call.
ECOSYSTEM_SHORT_NAMES = frozenset({
    # Flux
    "gitrepo", "gitrepos", "ocirepo", "ocirepos", "helmrepo", "helmrepos", "helmchart",
    "helmcharts", "hr", "ks", "alert", "provider", "receiver", "imgrepo", "imgpol", "imgupd",
    "bucket",
    # Flux Operator
    "fluxinstance", "fluxinstances", "fluxreport", "fluxreports", "rset", "rsip",
    # cert-manager
    "cert", "certs", "cr", "crs", "ciss", "iss",
    # Argo CD, Rollouts, Workflows
    "app", "apps", "appproj", "appprojs", "appset", "appsets", "ro", "wf", "cwf", "cronwf",
    "wftmpl", "cwft", "clusterwftmpl", "at", "ar", "exp", "cat",
    # Prometheus operator
    "smon", "pmon", "prom", "am", "promrule", "prb", "ruler", "scfg", "amcfg",
    # others seen beside Flux: Istio, External Secrets, Kyverno, Knative, Cluster API, Velero
    "vs", "gw", "se", "dr", "pa", "ra", "es", "ss", "css", "pol", "cpol", "ksvc", "cl", "ma",
    "md", "ms", "mhc", "vm", "vmi",
})

_KINDS = ("SupportCase", "SecurityBulletin", "FluxUpdateCheck")


def _crds() -> dict[str, dict[str, Any]]:
    found = {document["spec"]["names"]["kind"]: document
             for document in resources.crd_documents()
             if document["spec"]["names"]["kind"] in _KINDS}
    assert sorted(found) == sorted(_KINDS)
    return found


def _nodes(schema: Mapping[str, Any], path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every schema node below ``schema`` (properties and array items), with its path."""
    for name, child in (schema.get("properties") or {}).items():
        yield f"{path}.{name}", child
        yield from _nodes(child, f"{path}.{name}")
    items = schema.get("items")
    if isinstance(items, Mapping):
        yield f"{path}[]", items
        yield from _nodes(items, f"{path}[]")


def _schema(crd: Mapping[str, Any]) -> Mapping[str, Any]:
    versions = crd["spec"]["versions"]
    assert len(versions) == 1, "extend the walk below to every served version"
    schema: Mapping[str, Any] = versions[0]["schema"]["openAPIV3Schema"]
    return schema


@pytest.mark.parametrize("kind", _KINDS)
def test_every_field_and_item_has_a_description(kind: str) -> None:
    schema = _schema(_crds()[kind])
    assert str(schema.get("description", "")).strip(), f"{kind}: the kind has no description"
    nodes = list(_nodes(schema, kind))
    # The API server forbids anything but name/generateName under the root metadata (it
    # answers `kubectl explain` with ObjectMeta's own text), so it carries no description.
    missing = [path for path, node in nodes
               if path != f"{kind}.metadata" and not str(node.get("description", "")).strip()]
    assert not missing, f"{kind}: {len(missing)} of {len(nodes)} fields lack a description: " \
        + ", ".join(missing)
    # Descriptions are for people: a one-word echo of the field name explains nothing.
    terse = [path for path, node in nodes
             if path != f"{kind}.metadata" and len(str(node["description"]).split()) < 4]
    assert not terse, f"{kind}: descriptions too short to explain anything: {terse}"


@pytest.mark.parametrize("kind", _KINDS)
def test_every_array_declares_its_list_type(kind: str) -> None:
    arrays = [(path, node) for path, node in _nodes(_schema(_crds()[kind]), kind)
              if node.get("type") == "array"]
    assert arrays
    for path, node in arrays:
        list_type = node.get("x-kubernetes-list-type")
        assert list_type in ("atomic", "set", "map"), f"{path}: x-kubernetes-list-type missing"
        items = node.get("items") or {}
        if list_type == "map":
            keys = node.get("x-kubernetes-list-map-keys") or []
            assert keys, f"{path}: a map list needs x-kubernetes-list-map-keys"
            # The API server refuses a map list whose keys may be absent (and not defaulted).
            assert set(keys) <= set(items.get("required") or ()), f"{path}: keys not required"
        if list_type == "set":
            assert items.get("type") != "object", f"{path}: a set holds scalars only"


@pytest.mark.parametrize("kind", _KINDS)
def test_conditions_are_a_map_keyed_by_type(kind: str) -> None:
    conditions = _schema(_crds()[kind])["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


def test_short_names_clash_with_nothing_built_in_or_common() -> None:
    crds = _crds()
    ours = {kind: list(crd["spec"]["names"].get("shortNames") or ()) for kind, crd in crds.items()}
    every = [name for names in ours.values() for name in names]
    assert all(ours.values()), ours
    assert len(every) == len(set(every)), f"our kinds share a short name: {ours}"
    assert not set(every) & BUILT_IN_SHORT_NAMES, ours
    assert not set(every) & ECOSYSTEM_SHORT_NAMES, ours
    # `kubectl get sc` is the regression: StorageClasses always won it.
    assert "sc" not in every
    assert "sb" not in every


def test_both_kinds_share_the_fluxsupport_category() -> None:
    for kind, crd in _crds().items():
        categories = crd["spec"]["names"].get("categories") or []
        assert "fluxsupport" in categories, kind
        assert "all" not in categories, f"{kind}: `kubectl get all` is for workloads"
