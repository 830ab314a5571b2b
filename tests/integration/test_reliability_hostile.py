"""Hostile input: generated garbage, malformed OpenVEX and oversized fields on the real API server.

Hypothesis generates SupportCases and SecurityBulletins by spoiling valid ones field by field:
wrong types, text of any Unicode, empty and oversized strings, missing and unknown fields,
timestamps in every shape (naive, leap seconds, far past and future), digests and purls that
almost look right. Each one is sent to the API server. Each must either be rejected at
admission with a message (a 4xx with a Status message), or be accepted and reconciled by the
session operator to a Ready condition with a reason, for its current generation. Meanwhile
control objects keep being reconciled, and the operator neither exits nor logs a traceback.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fluxsupport.constants import (
    COLLECT_DIAGNOSTICS,
    DISMISSED_AT,
    GROUP,
    RESOLVED_AT,
    RESPONDED_AT,
    RESPONDED_BY,
    VERSION,
)
from tests import fixtures, harness

CASE_EXAMPLES = 150
BULLETIN_EXAMPLES = 200
OPERATOR_NAMESPACE = "fluxsupport-system"
PRE = fixtures.images(fixtures.PRE_FIX_V275)
FIX = fixtures.images(fixtures.FIX_V275)
CASE_REASONS = {"Reconciled", "InvalidAnnotation", "AnnotationInFuture", "InvalidSpec"}
BULLETIN_REASONS = {"Evaluated", "InvalidVex", "InvalidSpec", "InventoryUnavailable"}
MISSING = object()

# --- strategies --------------------------------------------------------------------------------

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
#: Around the CRD limits (200, 4096, 32768, 16384) and past them.
LONG = st.sampled_from([199, 200, 201, 4096, 4097, 16384, 16385, 32768, 32769, 70000]).map(
    lambda n: "x" * n)
JUNK = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                 st.floats(allow_nan=False, allow_infinity=False), TEXT,
                 st.lists(st.integers(0, 9), max_size=3),
                 st.dictionaries(st.text(max_size=5), st.integers(0, 9), max_size=2))
MOMENTS = st.datetimes(min_value=datetime.datetime(1, 1, 2),
                       max_value=datetime.datetime(9999, 12, 30))
TIMES = st.one_of(
    MOMENTS.map(lambda moment: moment.replace(tzinfo=datetime.UTC).isoformat()),
    st.builds(lambda moment, zone: moment.replace(tzinfo=zone).isoformat(), MOMENTS,
              st.timezones()),
    MOMENTS.map(lambda moment: moment.isoformat()),  # naive
    MOMENTS.map(lambda moment: moment.strftime("%Y-%m-%dT%H:%M:%SZ")),
    st.sampled_from([
        "2026-11-27T10:00:00Z", "2026-11-27 10:00:00Z", "2026-11-27T10:00:00",
        "2026-11-27", "2026-11-27T10:00:60Z", "2026-11-27T23:59:60+00:00", "last tuesday",
        "", " ", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "9999-12-31T23:59:59-14:00",
        "0001-01-01T00:00:00+14:00", "2026-11-27T10:00:00.123456789Z", "2026-11-27t10:00:00z",
        "2026-11-27T10:00:00+0100", "2026-W48-5T10:00:00Z", "20261127T100000Z",
    ]))
#: Times the CRD accepts, in many zones and eras.
AWARE_TIMES = st.builds(lambda moment, zone: moment.replace(tzinfo=zone).isoformat(),
                        MOMENTS, st.one_of(st.just(datetime.UTC), st.timezones()))
HEX = "0123456789abcdef"
DIGESTS = st.one_of(
    st.text(HEX, min_size=64, max_size=64).map(lambda h: f"sha256:{h}"),
    st.text(HEX, min_size=0, max_size=70).map(lambda h: f"sha256:{h}"),
    st.text(HEX + "ABCDEF", min_size=64, max_size=64).map(lambda h: f"sha256:{h}"),
    st.text(HEX, min_size=128, max_size=128).map(lambda h: f"sha512:{h}"),
    TEXT)
NAMES = st.one_of(st.sampled_from([*sorted(PRE), "flux-operator", "other"]),
                  st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True))
COMPONENTS = st.one_of(NAMES, NAMES, TEXT)
VERSIONS = st.one_of(st.from_regex(r"v?[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}", fullmatch=True),
                     st.sampled_from(["v1.7.4", "v1.7.4-rc.1", "1.7", "latest"]), TEXT)
CVES = st.one_of(st.from_regex(r"CVE-20[0-9]{2}-[0-9]{4,7}", fullmatch=True),
                 st.sampled_from(["GHSA-2345-6789-cfgh", "CVE-2026-1", "cve-2026-12345"]), TEXT)


LIFECYCLE_KEYS = [RESPONDED_AT, RESOLVED_AT, DISMISSED_AT, RESPONDED_BY, COLLECT_DIAGNOSTICS,
                  f"{GROUP}/made-up"]
#: Annotation values are free text to the API server; the operator parses the lifecycle ones.
ANNOTATIONS = st.dictionaries(
    st.sampled_from(LIFECYCLE_KEYS),
    st.one_of(TIMES, TEXT, st.sampled_from([40000, 100000]).map(lambda n: "9" * n)),
    max_size=3)


def valid_case() -> dict[str, Any]:
    return {
        "title": "HelmReleases stuck", "description": "helm-controller times out.",
        "severity": "High",
        "impact": {"statement": "Deploys blocked", "environment": "production",
                   "outage": "partial", "businessCritical": True},
        "component": "helm-controller", "category": "incident",
        "contact": {"email": "ops@example.com"},
    }


def valid_bulletin() -> dict[str, Any]:
    entry = FIX["source-controller"]
    return {
        "title": "Fix CVE-2026-47680", "summary": "Path traversal", "severity": "High",
        "publishedAt": "2026-06-02T12:00:00Z",
        "vulnerabilities": [{"id": "CVE-2026-47680", "components": ["source-controller"]}],
        "fixes": [{"component": "source-controller", "version": entry["newTag"],
                   "images": [{"repository": entry["name"], "digest": entry["digest"]}]}],
    }


#: Field path -> what to put there instead (besides junk, or removing the field). Most are
#: plausible values the CRD accepts, so that the operator sees plenty of odd but valid input.
CASE_MUTATIONS: dict[tuple[Any, ...], st.SearchStrategy[Any]] = {
    ("title",): st.one_of(LONG, TEXT, st.just("   ")),
    ("description",): st.one_of(LONG, TEXT, st.just("")),
    ("severity",): st.sampled_from(["Urgent", "Medium", "Low", "Critical", "high", ""]),
    ("impact",): st.just({}),
    ("impact", "statement"): st.one_of(LONG, TEXT),
    ("impact", "environment"): st.sampled_from(["staging", "development", "prod", ""]),
    ("impact", "outage"): st.sampled_from(["full", "degraded", "none", "total"]),
    ("impact", "businessCritical"): st.one_of(st.booleans(), st.just("true")),
    ("component",): COMPONENTS,
    ("category",): st.sampled_from(["question", "vulnerability", "upgrade", "bug"]),
    ("contact",): st.sampled_from([{}, {"name": "x" * 257}, {"name": "Ops"}]),
    ("contact", "email"): TEXT,
    ("requiresInfrastructureAccess",): st.booleans(),
    ("fluxVersion",): VERSIONS,
    ("unknownField",): TEXT,
}
BULLETIN_MUTATIONS: dict[tuple[Any, ...], st.SearchStrategy[Any]] = {
    ("title",): st.one_of(LONG, TEXT),
    ("summary",): st.one_of(LONG, TEXT),
    ("severity",): st.sampled_from(["Critical", "Low", "Urgent"]),
    ("publishedAt",): st.one_of(AWARE_TIMES, AWARE_TIMES, TIMES),
    ("embargoUntil",): st.one_of(AWARE_TIMES, AWARE_TIMES, TIMES),
    ("patchBy",): st.one_of(AWARE_TIMES, AWARE_TIMES, TIMES),
    ("vulnerabilities",): st.lists(
        st.fixed_dictionaries({"id": CVES, "components": st.lists(NAMES, min_size=1,
                                                                  max_size=3)}),
        min_size=1, max_size=3),
    ("vulnerabilities", 0, "id"): CVES,
    ("vulnerabilities", 0, "summary"): st.one_of(LONG, TEXT),
    ("vulnerabilities", 0, "components"): st.lists(COMPONENTS, max_size=4),
    ("fixes", 0, "component"): COMPONENTS,
    ("fixes", 0, "version"): VERSIONS,
    ("fixes", 0, "images", 0, "digest"): DIGESTS,
    ("fixes", 0, "images", 0, "repository"): st.one_of(
        st.sampled_from(["ghcr.io/a/b:443/c", "registry.local/flux/source-controller",
                         "source-controller"]), TEXT),
    ("fixes", 0, "images"): st.lists(st.fixed_dictionaries(
        {"repository": st.just("ghcr.io/fluxcd/source-controller"), "digest": DIGESTS}),
        max_size=3),
    ("vex",): st.lists(st.fixed_dictionaries({"configMapKeyRef": st.fixed_dictionaries({
        "name": st.one_of(st.sampled_from(["hostile-vex", "missing-vex", "Bad_Name"]), TEXT),
        "key": st.one_of(st.sampled_from(["vex.json", "other.json", "a/b"]), TEXT)})}),
        max_size=3),
    ("unknownField",): TEXT,
}


def mutations(table: dict[tuple[Any, ...], st.SearchStrategy[Any]]
              ) -> st.SearchStrategy[list[tuple[tuple[Any, ...], Any]]]:
    """Up to three fields changed: to an odd value (most often), to junk, or removed."""
    def change(path: tuple[Any, ...]) -> st.SearchStrategy[tuple[tuple[Any, ...], Any]]:
        odd = table[path]
        return st.tuples(st.just(path), st.one_of(odd, odd, odd, JUNK, st.just(MISSING)))

    return st.lists(st.sampled_from(sorted(table, key=str)).flatmap(change), max_size=3)


def mutated(base: dict[str, Any], changes: list[tuple[tuple[Any, ...], Any]]) -> dict[str, Any]:
    """``base`` with the changes applied in order (a path that no longer exists is skipped)."""
    for path, value in changes:
        parent: Any = base
        for step in path[:-1]:
            try:
                parent = parent[step]
            except (KeyError, IndexError, TypeError):
                parent = None
                break
        key = path[-1]
        if isinstance(parent, dict):
            if value is MISSING:
                parent.pop(key, None)
            else:
                parent[key] = value
        elif isinstance(parent, list) and isinstance(key, int) and key < len(parent):
            if value is MISSING:
                parent.pop(key)
            else:
                parent[key] = value
    return base


# --- the run -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Tally:
    tried: int = 0
    rejected: int = 0
    accepted: list[str] = dataclasses.field(default_factory=list)
    #: Status code -> one example message, to show what people get.
    messages: dict[int, str] = dataclasses.field(default_factory=dict)
    #: The first field each rejection names -> how often.
    fields: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)


def send(create: Any, body: dict[str, Any], tally: Tally) -> None:
    """Create ``body``; a rejection must be a 4xx that says why."""
    tally.tried += 1
    rejection: kubernetes.client.ApiException | None = None
    try:
        create(body)
    except kubernetes.client.ApiException as error:
        rejection = error
    if rejection is None:
        tally.accepted.append(body["metadata"]["name"])
        return
    status = rejection.status
    assert 400 <= status < 500, f"{status} for {json.dumps(body)[:2000]}"
    try:
        message = json.loads(rejection.body).get("message", "")
    except ValueError:
        message = rejection.body or ""
    assert message.strip(), f"rejected without a message: {status} {rejection.body!r}"
    tally.rejected += 1
    tally.messages.setdefault(status, message[:300])
    named = re.search(r"(spec[.\w\[\]]*|metadata[.\w\[\]]*)", message)
    tally.fields[named[1] if named else message[:40]] += 1


def wait_conditions(get: Any, names: list[str], reasons: set[str], what: str) -> float:
    """Every accepted object gets a Ready condition with a known reason for its generation;
    returns how long that took."""
    began = time.time()
    pending = list(names)

    def probe() -> bool:
        nonlocal pending
        still = []
        for name in pending:
            obj = get(name)
            ready = harness.condition(obj, "Ready")
            status = obj.get("status") or {}
            if ready is None or ready["reason"] not in reasons or not ready["message"] or \
                    status.get("observedGeneration") != obj["metadata"]["generation"]:
                still.append(name)
        pending = still
        return not still

    try:
        harness.wait_for(probe, timeout=120, interval=0.5, what=f"{what} conditions")
    except AssertionError:
        pytest.fail(f"{len(pending)} {what} without a Ready reason: "
                    + "; ".join(json.dumps(get(name))[:1500] for name in pending[:3]))
    return time.time() - began


@pytest.fixture
def hostile_vex(api: harness.Api) -> Iterator[None]:
    """The ConfigMap most generated bulletins reference: a valid upstream document."""
    harness.ensure_namespace(api, OPERATOR_NAMESPACE)
    api.core.create_namespaced_config_map(OPERATOR_NAMESPACE, {
        "metadata": {"name": "hostile-vex"},
        "data": {"vex.json": (fixtures.UPSTREAM / "vex" / "v2.7.json").read_text()}})
    yield
    api.core.delete_namespaced_config_map("hostile-vex", OPERATOR_NAMESPACE)


def control_case(api: harness.Api, namespace: str) -> str:
    name = f"control-{uuid.uuid4().hex[:8]}"
    api.create_case(namespace, harness.case_manifest(name, namespace))
    return name


def test_generated_garbage_is_rejected_or_reconciled(
        api: harness.Api, operator: harness.OperatorProcess, namespace: str,
        flux: list[dict[str, Any]], hostile_vex: None,
        figures: Callable[[str], None]) -> None:
    pid = operator.pid
    cases, bulletins = Tally(), Tally()
    controls: list[str] = []

    @settings(max_examples=CASE_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(changes=mutations(CASE_MUTATIONS), annotations=ANNOTATIONS)
    def feed_cases(changes: list[tuple[tuple[Any, ...], Any]],
                   annotations: dict[str, str]) -> None:
        name = f"h-{uuid.uuid4().hex[:12]}"
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SupportCase",
                "metadata": {"name": name, "namespace": namespace,
                             "annotations": annotations},
                "spec": mutated(valid_case(), changes)}
        send(lambda b: api.create_case(namespace, b), body, cases)
        if cases.tried % 30 == 0:
            controls.append(control_case(api, namespace))

    @settings(max_examples=BULLETIN_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(changes=mutations(BULLETIN_MUTATIONS))
    def feed_bulletins(changes: list[tuple[tuple[Any, ...], Any]]) -> None:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SecurityBulletin",
                "metadata": {"name": f"hostile-{uuid.uuid4().hex[:12]}"},
                "spec": mutated(valid_bulletin(), changes)}
        send(api.create_bulletin, body, bulletins)
        if bulletins.tried % 30 == 0:
            controls.append(control_case(api, namespace))

    try:
        feed_cases()
        feed_bulletins()
        case_s = wait_conditions(lambda n: api.get_case(namespace, n), cases.accepted,
                                 CASE_REASONS, "SupportCases")
        bulletin_s = wait_conditions(api.get_bulletin, bulletins.accepted, BULLETIN_REASONS,
                                     "SecurityBulletins")
        # Control objects created among the garbage were reconciled normally.
        for name in controls:
            obj = api.get_case(namespace, name)
            assert obj["status"]["firstResponse"]["state"] == "Pending", obj
        last = control_case(api, namespace)
        harness.wait_for(lambda: (api.get_case(namespace, last).get("status") or {})
                         .get("firstResponse"), timeout=10, what="a case after the garbage")
        reasons: dict[str, int] = {}
        examples: dict[str, str] = {}
        for name in bulletins.accepted:
            ready = harness.condition(api.get_bulletin(name), "Ready")
            assert ready is not None
            reasons[ready["reason"]] = reasons.get(ready["reason"], 0) + 1
            examples.setdefault(ready["reason"], ready["message"][:200])
        for name in cases.accepted:
            ready = harness.condition(api.get_case(namespace, name), "Ready")
            assert ready is not None
            examples.setdefault(ready["reason"], ready["message"][:200])
    finally:
        for name in bulletins.accepted:
            api.delete_bulletin(name)
    figures(f"hostile input: {cases.tried} SupportCases ({cases.rejected} rejected at "
            f"admission, {len(cases.accepted)} reconciled in {case_s:.1f}s) and "
            f"{bulletins.tried} SecurityBulletins ({bulletins.rejected} rejected, "
            f"{len(bulletins.accepted)} reconciled in {bulletin_s:.1f}s: {reasons}); "
            f"{len(controls) + 1} control cases reconciled meanwhile")
    for status, message in sorted({**cases.messages, **bulletins.messages}.items()):
        figures(f"  e.g. HTTP {status}: {message[:160]}")
    for reason, message in sorted(examples.items()):
        figures(f"  e.g. {reason}: {message[:160]}")
    for kind, tally in (("SupportCases", cases), ("SecurityBulletins", bulletins)):
        common = ", ".join(f"{field} {count}" for field, count in tally.fields.most_common(6))
        figures(f"  {kind} rejected most for: {common}")
    for tally in (cases, bulletins):  # both outcomes were exercised
        assert tally.rejected
        assert tally.accepted
    assert operator.alive()
    assert operator.pid == pid, "the operator must not restart"
    assert "Traceback" not in operator.log_text()


# --- malformed OpenVEX, bad digests and purls ----------------------------------------------------

REAL_VEX = (fixtures.UPSTREAM / "vex" / "v2.7.json").read_text()


def vex_with(statement_products: list[dict[str, Any]]) -> str:
    document = json.loads(REAL_VEX)
    document["statements"][1]["products"] = statement_products
    return json.dumps(document)


def huge_vex(target_bytes: int) -> str:
    """A valid document with thousands of statements, as large as a ConfigMap allows."""
    document = json.loads(REAL_VEX)
    template = document["statements"][0]
    statements = []
    size = len(REAL_VEX)
    index = 0
    while size < target_bytes:
        statement = {**template, "vulnerability": {"name": f"CVE-2026-{10000 + index}"}}
        size += len(json.dumps(statement)) + 2
        statements.append(statement)
        index += 1
    document["statements"] = statements[:-1]
    return json.dumps(document, separators=(",", ":"))


#: name -> (document, reason, what the message must say)
VEX_CASES: dict[str, tuple[str, str, str]] = {
    "truncated": (REAL_VEX[:len(REAL_VEX) // 2], "InvalidVex", "looks truncated"),
    "wrong-types": (json.dumps({**json.loads(REAL_VEX), "version": "four",
                                "statements": {"a": 1}}), "InvalidVex", "statements"),
    "deep": ("[" * 100_000 + "]" * 100_000, "InvalidVex", "nested deeper than 64"),
    "not-an-object": ("[1, 2, 3]", "InvalidVex", "expected a JSON object"),
    "empty": ("", "InvalidVex", "not valid JSON"),
    "nan": ('{"version": NaN}', "InvalidVex", "NaN"),
    "bad-purl": (vex_with([{"@id": "pkg:oci/"}]), "InvalidVex",
                 "statements[1].products[0].@id: 'pkg:oci/' is not a valid purl"),
    "bad-digest": (vex_with([{"@id": "pkg:oci/source-controller@sha256:abc"}]), "InvalidVex",
                   "is not a sha256 digest (64 hex digits)"),
    "tag-as-digest": (vex_with([{"identifiers": {"purl": "pkg:oci/source-controller@v1.7.4"}}]),
                      "InvalidVex", "is not an image digest"),
    "huge-valid": (huge_vex(1_000_000), "Evaluated", "Checked"),
}


@pytest.fixture
def vex_bulletins(api: harness.Api) -> Iterator[dict[str, str]]:
    """A ConfigMap and a bulletin per VEX_CASES entry; name -> bulletin."""
    harness.ensure_namespace(api, OPERATOR_NAMESPACE)
    created: dict[str, str] = {}
    try:
        for name, (document, _, _) in VEX_CASES.items():
            api.core.create_namespaced_config_map(OPERATOR_NAMESPACE, {
                "metadata": {"name": f"vex-{name}"}, "data": {"vex.json": document}})
            bulletin = fixtures.bulletin_for(f"vex-{name}", "CVE-2025-66506",
                                             "source-controller", FIX["source-controller"])
            bulletin["spec"]["vex"] = [{"configMapKeyRef": {"name": f"vex-{name}",
                                                            "key": "vex.json"}}]
            api.create_bulletin(bulletin)
            created[name] = f"vex-{name}"
        yield created
    finally:
        for name in VEX_CASES:
            api.delete_bulletin(f"vex-{name}")
            with contextlib.suppress(kubernetes.client.ApiException):
                api.core.delete_namespaced_config_map(f"vex-{name}", OPERATOR_NAMESPACE)


def ready_of(api: harness.Api, name: str) -> dict[str, Any] | None:
    obj = api.get_bulletin(name)
    ready = harness.condition(obj, "Ready")
    generation_seen = (obj.get("status") or {}).get("observedGeneration") == \
        obj["metadata"]["generation"]
    return ready if ready and generation_seen else None


def test_malformed_openvex_bad_purls_and_digests_give_a_clear_condition(
        api: harness.Api, operator: harness.OperatorProcess, namespace: str,
        flux: list[dict[str, Any]], vex_bulletins: dict[str, str],
        figures: Callable[[str], None]) -> None:
    for name, (_, reason, fragment) in VEX_CASES.items():
        def settled(name: str = name, reason: str = reason,
                    fragment: str = fragment) -> dict[str, Any] | None:
            ready = ready_of(api, vex_bulletins[name])
            return ready if ready and ready["reason"] == reason and \
                fragment in ready["message"] else None

        try:
            ready = harness.wait_for(settled, timeout=30, what=f"Ready of vex-{name}")
        except AssertionError:
            pytest.fail(f"vex-{name}: want {reason} with {fragment!r}, got "
                        f"{ready_of(api, vex_bulletins[name])}")
        if reason == "InvalidVex":
            assert f"ConfigMap {OPERATOR_NAMESPACE}/vex-{name}" in ready["message"]
            assert len(ready["message"]) < 4000, "a readable message, not the document"
    # The huge document does not stall the operator: a case is still reconciled promptly.
    began = time.time()
    name = control_case(api, namespace)
    harness.wait_for(lambda: (api.get_case(namespace, name).get("status") or {})
                     .get("firstResponse"), timeout=10, what="a case next to huge VEX")
    figures(f"{len(VEX_CASES)} VEX documents, each with its condition; a case took "
            f"{time.time() - began:.2f}s meanwhile")

    # Larger documents cannot even be stored: the API server refuses them with a message
    # (kubectl here: the Python client only sees the connection close on a 10 MB body).
    manifest = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "vex-10mb", "namespace": OPERATOR_NAMESPACE},
                "data": {"vex.json": huge_vex(10_000_000)}}
    refused = harness.kubectl(api.kubeconfig, "create", "-f", "-", check=False,
                              input_text=json.dumps(manifest))
    assert refused.returncode != 0
    assert "Request entity too large: limit is 3145728" in refused.stderr
    with pytest.raises(kubernetes.client.ApiException) as too_long:
        api.core.create_namespaced_config_map(OPERATOR_NAMESPACE, {
            "metadata": {"name": "vex-2mb"}, "data": {"vex.json": huge_vex(2_000_000)}})
    assert too_long.value.status == 422
    assert "Too long: may not be more than 1048576 bytes" in too_long.value.body


@pytest.mark.parametrize("digest", [
    "sha256:abc", "sha256:" + "A" * 64, "sha512:" + "a" * 128, "sha256:" + "a" * 65,
    "md5:d41d8cd98f00b204e9800998ecf8427e",
])
def test_bad_fix_digests_are_rejected_naming_the_field(api: harness.Api, digest: str) -> None:
    bulletin = fixtures.bulletin_for(f"bad-digest-{uuid.uuid4().hex[:6]}", "CVE-2026-47680",
                                     "source-controller", {**FIX["source-controller"],
                                                           "digest": digest})
    with pytest.raises(kubernetes.client.ApiException) as refused:
        api.create_bulletin(bulletin)
    assert refused.value.status == 422
    assert "spec.fixes[0].images[0].digest" in refused.value.body


def test_a_malformed_running_digest_gives_a_reason(
        api: harness.Api, operator: harness.OperatorProcess,
        flux: list[dict[str, Any]]) -> None:
    """A running image whose digest is malformed is judged Unknown (NoDigest): the operator
    never guesses a digest, and says why it could not judge."""
    watcher_image = "ghcr.io/controlplaneio-fluxcd/distroless/source-watcher:v2.0.3@sha256:zz"
    deployment = {
        "metadata": {"name": "source-watcher", "namespace": "flux-system",
                     "labels": {"app.kubernetes.io/part-of": "flux",
                                "app.kubernetes.io/component": "source-watcher"}},
        "spec": {"selector": {"matchLabels": {"app": "source-watcher"}},
                 "template": {"metadata": {"labels": {"app": "source-watcher"}},
                              "spec": {"containers": [{"name": "manager",
                                                       "image": watcher_image}]}}}}
    api.apps.create_namespaced_deployment("flux-system", deployment)
    watcher_fix = {"name": "ghcr.io/controlplaneio-fluxcd/distroless/source-watcher",
                   "newTag": "v2.0.3", "digest": "sha256:" + "b" * 64}
    api.create_bulletin(fixtures.bulletin_for("bad-running-digest", "CVE-2026-47682",
                                              "source-watcher", watcher_fix))
    try:
        ready = harness.wait_for(lambda: ready_of(api, "bad-running-digest"), what="Ready")
        assert ready["reason"] == "Evaluated"
        component = harness.wait_for(lambda: next(
            (c for c in (api.get_bulletin("bad-running-digest").get("status") or {})
             .get("components") or [] if c["component"] == "source-watcher"), None),
            what="the source-watcher verdict")
        assert (component["verdict"], component["reason"]) == ("Unknown", "NoDigest")
        assert component["digests"] == []
        compliant = harness.condition(api.get_bulletin("bad-running-digest"), "Compliant")
        assert compliant is not None
        assert (compliant["status"], compliant["reason"]) == ("Unknown", "UnknownDigests")
    finally:
        api.delete_bulletin("bad-running-digest")
        api.apps.delete_namespaced_deployment("source-watcher", "flux-system")
    assert "Traceback" not in operator.log_text()


# --- oversized fields ---------------------------------------------------------------------------

#: etcd's default request limit (--max-request-bytes), which bounds every stored object.
OBJECT_LIMIT = 1_572_864
RUNNING = ["source-controller", "kustomize-controller", "helm-controller",
           "notification-controller", "image-reflector-controller",
           "image-automation-controller"]


def stored_size(obj: dict[str, Any]) -> int:
    return len(json.dumps(obj, separators=(",", ":")).encode())


def largest_bulletin(name: str, padding_components: int, extra_fixes: int = 0
                     ) -> dict[str, Any]:
    """Every field at its CRD maximum: 256 vulnerabilities with 4096-character summaries,
    each naming the six running controllers plus ``padding_components`` 63-character names."""
    padding = [f"p{index:02d}" + "x" * 60 for index in range(padding_components)]
    fixes = [fixtures.bulletin_for("x", "CVE-2026-1", c, FIX[c])["spec"]["fixes"][0]
             for c in RUNNING]
    fixes += [{"component": RUNNING[index % 6], "version": "v9.9.9",
               "images": [{"repository": "r" * 500, "digest": "sha256:" + "c" * 64}]}
              for index in range(extra_fixes)]
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SecurityBulletin",
            "metadata": {"name": name},
            "spec": {"title": "T" * 512, "summary": "S" * 16384, "severity": "High",
                     "publishedAt": "2026-06-01T00:00:00Z", "fixes": fixes,
                     "vulnerabilities": [{"id": f"CVE-2026-{20000 + index}",
                                          "summary": "s" * 4096,
                                          "components": RUNNING + padding}
                                         for index in range(256)]}}


def test_oversized_fields_stay_within_the_object_size_limit(
        api: harness.Api, operator: harness.OperatorProcess, namespace: str,
        flux: list[dict[str, Any]], figures: Callable[[str], None]) -> None:
    # A case with every field at its maximum and 200 kB of unparseable annotation: the
    # condition quotes a bounded prefix and stays under the CRD's 32768-byte message limit.
    case = harness.case_manifest("largest", namespace, **{RESPONDED_AT: "9" * 200_000})
    case["spec"].update(title="T" * 200, description="D" * 32768,
                        contact={"name": "N" * 256, "email": "a@" + "b" * 300 + ".io"})
    case["spec"]["impact"]["statement"] = "I" * 4096
    api.create_case(namespace, case)
    ready = harness.wait_for(lambda: harness.condition(api.get_case(namespace, "largest"),
                                                       "Ready"), what="Ready of the case")
    assert ready["reason"] == "InvalidAnnotation"
    assert len(ready["message"].encode()) < 1000
    assert stored_size(api.get_case(namespace, "largest")) < OBJECT_LIMIT

    # Bulletins at the CRD's limits: one whose full status fits, and one whose full status
    # would exceed etcd's limit (operator bug, fixed: it retried that write for ever and the
    # bulletin never got a condition). The second gets a compact status and says so.
    fits, too_big = largest_bulletin("largest-fits", 10), largest_bulletin("largest-tight", 26)
    try:
        for body in (fits, too_big):
            api.create_bulletin(body)
        full = harness.wait_for(lambda: ready_of(api, "largest-fits"), what="Ready (fits)")
        assert full["reason"] == "Evaluated"
        tight = harness.wait_for(lambda: ready_of(api, "largest-tight"), what="Ready (tight)")
        assert tight["reason"] == "StatusTooLarge", tight
        obj = api.get_bulletin("largest-tight")
        assert len(obj["status"]["components"]) == 6
        assert all("cves" not in c and c["verdict"] for c in obj["status"]["components"])
        assert sum(obj["status"]["counts"].values()) == 6
        sizes = [stored_size(api.get_bulletin(n)) for n in ("largest-fits", "largest-tight")]
        assert max(sizes) < OBJECT_LIMIT
        # Larger still: the API server refuses to store it at all, with a message.
        with pytest.raises(kubernetes.client.ApiException) as refused:
            api.create_bulletin(largest_bulletin("largest-refused", 26, extra_fixes=250))
        assert "too large" in refused.value.body.lower()
        figures(f"oversized: bulletins of {sizes[0]:,} and {sizes[1]:,} bytes stored "
                f"(limit {OBJECT_LIMIT:,}); the second with a compact status "
                f"(StatusTooLarge); a larger one refused with HTTP {refused.value.status}")
    finally:
        for name in ("largest-fits", "largest-tight", "largest-refused"):
            api.delete_bulletin(name)
    assert "Traceback" not in operator.log_text()
