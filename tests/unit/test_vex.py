"""OpenVEX: Flux's real documents, the statement that wins, purl matching, errors and warnings
that say where, and property tests: whatever the official JSON Schema accepts is read without a
warning, and what the schema forbids without changing the meaning is read with one."""

from __future__ import annotations

import calendar
import copy
import datetime
import json
import re
import string
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from packageurl import PackageURL

from fluxsupport.domain import vex
from tests import fixtures

UPSTREAM = fixtures.UPSTREAM
SCHEMA: dict[str, Any] = json.loads(
    (UPSTREAM / "openvex_json_schema_0.2.0.json").read_text(encoding="utf-8"))
SOURCE = "ConfigMap flux-system/flux-vex key v2.7.json"


def real_text(version: str) -> str:
    return (UPSTREAM / "vex" / f"{version}.json").read_text(encoding="utf-8")


def real(version: str) -> vex.Document:
    return vex.parse_document(real_text(version), f"vex/{version}.json")


def flux_image(component: str, flux: str = "v2.7.5",
               variant: str = "enterprise-distroless") -> PackageURL:
    """The purl of a real published Flux image, digest and all."""
    images = yaml.safe_load((UPSTREAM / "images" / flux / f"{variant}.yaml").read_text())
    entry = next(image for image in images["images"]
                 if image["name"].rsplit("/", 1)[-1] == component)
    return vex.image_purl(component, digest=entry["digest"], repository_url=entry["name"],
                          tag=entry["newTag"])


def document(*statements: dict[str, Any], timestamp: str = "2026-01-01T00:00:00Z",
             doc_id: str = "https://openvex.dev/docs/public/vex-test") -> vex.Document:
    body = {"@context": vex.CONTEXT, "@id": doc_id, "author": "test@example.com",
            "timestamp": timestamp, "version": 1, "statements": list(statements)}
    return vex.parse_document(json.dumps(body), "test")


def statement(status: str = "not_affected", *, vulnerability: str = "CVE-2026-0001",
              product: str = "pkg:oci/source-controller", timestamp: str | None = None,
              **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"vulnerability": {"name": vulnerability},
                            "products": [{"@id": product}], "status": status}
    if status == "not_affected":
        body["justification"] = "vulnerable_code_not_in_execute_path"
    if status == "affected":
        body["action_statement"] = "Upgrade to the next patch release"
    if timestamp is not None:
        body["timestamp"] = timestamp
    body.update(extra)
    return body


SOURCE_CONTROLLER = vex.image_purl("source-controller", digest="sha256:" + "a" * 64)


# --- Flux's real documents ----------------------------------------------------------------


def test_the_real_flux_documents_parse() -> None:
    v27, v28, v29 = real("v2.7"), real("v2.8"), real("v2.9")
    assert [len(d.statements) for d in (v27, v28, v29)] == [15, 2, 0]
    assert v27.version == 4
    assert v27.timestamp == datetime.datetime(2025, 9, 30, 9, 26, 4, 422544, tzinfo=datetime.UTC)
    assert v27.statements[13].status == "fixed"
    assert v27.statements[13].justification is None
    assert v27.statements[0].timestamp == datetime.datetime(2025, 12, 8, 9, 40,
                                                            tzinfo=datetime.UTC)
    assert vex.product_purls(v27.statements[0].products[0]) == [
        PackageURL.from_string("pkg:golang/github.com/sigstore/fulcio@1.7.1")]
    assert vex.product_problems(v27) == []


def test_the_empty_v29_document_is_accepted_although_the_schema_says_min_items_1() -> None:
    assert not jsonschema.Draft202012Validator(SCHEMA).is_valid(json.loads(real_text("v2.9")))
    v29 = real("v2.9")
    assert v29.statements == ()
    assert vex.effective_statement([v29], "CVE-2026-47680", flux_image("source-controller")) \
        is None
    assert vex.product_problems(v29) == []


PUBLIC = sorted((UPSTREAM / "openvex").rglob("*.json"))


@pytest.mark.parametrize("path", PUBLIC, ids=lambda p: str(p.relative_to(UPSTREAM / "openvex")))
def test_the_public_openvex_documents_are_read_with_warnings_naming_their_deviations(
        path: Any) -> None:
    """vexctl's examples and test data and go-vex's test data, all read by go-vex (see
    tests/tools/test_vex_govex.py): read here too, each deviation from v0.2.0 a warning."""
    text = path.read_text()
    body = json.loads(text)
    document = vex.parse_document(text, str(path))
    assert len(document.statements) == len(body.get("statements") or [])
    expected = []
    if body["@context"] != vex.CONTEXT:
        expected.append("@context: ")
    if any("statement" in item for item in body.get("statements") or []):
        expected.append("statements[0].statement")
    expected += [f"{key}: required field is missing" for key in ("version", "timestamp")
                 if key not in body]
    assert [fragment for fragment in expected
            if not any(line.startswith(fragment) for line in document.warnings)] == []
    assert bool(document.warnings) == bool(expected) or not VALIDATOR.is_valid(body)
    assert VALIDATOR.is_valid(body) is (document.warnings == ())


@pytest.mark.parametrize(("cve", "component", "status", "justification", "index"), [
    # not_affected for the controller image as a whole (versionless pkg:oci product).
    ("CVE-2025-66506", "source-controller", "not_affected",
     "vulnerable_code_not_in_execute_path", 1),
    ("CVE-2025-66564", "source-controller", "not_affected",
     "vulnerable_code_not_in_execute_path", 3),
    # fixed, versionless, with an impact_statement and no justification.
    ("CVE-2026-40109", "notification-controller", "fixed", None, 13),
    ("CVE-2026-47680", "source-controller", "fixed", None, 14),
    # Statements about other controllers or about library packages do not match the image.
    ("CVE-2026-40109", "source-controller", None, None, None),
    ("CVE-2025-66506", "helm-controller", None, None, None),
    ("CVE-2025-9230", "source-controller", None, None, None),
    ("CVE-2099-0001", "source-controller", None, None, None),
])
def test_effective_statements_of_the_real_v27_document(
        cve: str, component: str, status: str | None, justification: str | None,
        index: int | None) -> None:
    found = vex.effective_statement([real("v2.7")], cve, flux_image(component))
    if status is None:
        assert found is None
        return
    assert found is not None
    assert (found.status, found.justification, found.statement_index) == \
        (status, justification, index)
    assert found.document_index == 0
    assert not found.digest_specific
    assert found.document_id.startswith("https://openvex.dev/docs/public/vex-f843e58a")


def test_a_real_fixed_statement_carries_its_own_timestamp() -> None:
    found = vex.effective_statement([real("v2.7")], "CVE-2026-47680",
                                    flux_image("source-controller", variant="enterprise-alpine"))
    assert found is not None
    assert found.timestamp == datetime.datetime(2026, 6, 2, 12, tzinfo=datetime.UTC)
    assert found.impact_statement is not None
    assert "backported" in found.impact_statement


@pytest.mark.parametrize(("purl", "index"), [
    ("pkg:apk/alpine/libssl3@3.5.1-r0", 4),
    ("pkg:apk/alpine/libcrypto3@3.5.1-r0", 5),
    ("pkg:apk/alpine/libssl3@3.5.1-r0?arch=x86_64", 4),
    ("pkg:apk/alpine/libssl3@3.5.2-r0", None),
])
def test_real_library_statements_match_by_version(purl: str, index: int | None) -> None:
    found = vex.effective_statement([real("v2.7")], "CVE-2025-9230",
                                    PackageURL.from_string(purl))
    assert (found.statement_index if found else None) == index
    if found:
        assert found.digest_specific


def test_equal_real_timestamps_across_documents_go_to_the_later_document() -> None:
    # v2.7 statement 11 and v2.8 statement 0 both say 2026-03-19T12:00:00Z for zlib.
    zlib = PackageURL.from_string("pkg:apk/alpine/zlib@1.3.1-r2")
    v27, v28 = real("v2.7"), real("v2.8")
    assert v27.id != v28.id
    first = vex.effective_statement([v27, v28], "CVE-2026-22184", zlib)
    assert first is not None
    assert (first.document_index, first.statement_index) == (1, 0)
    second = vex.effective_statement([v28, v27], "CVE-2026-22184", zlib)
    assert second is not None
    assert (second.document_index, second.statement_index) == (1, 11)


# --- which statement wins -----------------------------------------------------------------


def test_the_latest_timestamp_wins_regardless_of_order() -> None:
    doc = document(statement("not_affected", timestamp="2026-02-01T00:00:00Z"),
                   statement("affected", timestamp="2026-01-15T00:00:00Z"))
    found = vex.effective_statement([doc], "CVE-2026-0001", SOURCE_CONTROLLER)
    assert found is not None
    assert (found.status, found.statement_index) == ("not_affected", 0)


def test_equal_timestamps_go_to_the_later_statement() -> None:
    doc = document(statement("under_investigation", timestamp="2026-02-01T00:00:00Z"),
                   statement("not_affected", timestamp="2026-02-01T01:00:00+01:00"))
    found = vex.effective_statement([doc], "CVE-2026-0001", SOURCE_CONTROLLER)
    assert found is not None
    assert (found.status, found.statement_index) == ("not_affected", 1)
    assert found.justification == "vulnerable_code_not_in_execute_path"


def test_across_documents_the_latest_wins_and_equal_ones_go_to_the_later_document() -> None:
    # Both documents reuse one @id, as real publishers do; that must not matter.
    older = document(statement("affected", timestamp="2026-01-01T00:00:00Z"))
    newer = document(statement("fixed", timestamp="2026-03-01T00:00:00Z"))
    for order in ([older, newer], [newer, older]):
        found = vex.effective_statement(order, "CVE-2026-0001", SOURCE_CONTROLLER)
        assert found is not None
        assert found.status == "fixed"
        assert found.document_index == order.index(newer)
    same = document(statement("not_affected", timestamp="2026-03-01T00:00:00Z"))
    found = vex.effective_statement([newer, same], "CVE-2026-0001", SOURCE_CONTROLLER)
    assert found is not None
    assert (found.status, found.document_index) == ("not_affected", 1)
    found = vex.effective_statement([same, newer], "CVE-2026-0001", SOURCE_CONTROLLER)
    assert found is not None
    assert (found.status, found.document_index) == ("fixed", 1)


def test_a_statement_without_timestamp_inherits_its_documents() -> None:
    inherited = document(statement("not_affected"), timestamp="2026-05-01T00:00:00Z")
    explicit = document(statement("affected", timestamp="2026-04-01T00:00:00Z"),
                        timestamp="2026-06-01T00:00:00Z")
    found = vex.effective_statement([inherited, explicit], "CVE-2026-0001", SOURCE_CONTROLLER)
    assert found is not None
    assert found.status == "not_affected"
    assert found.timestamp == datetime.datetime(2026, 5, 1, tzinfo=datetime.UTC)
    assert inherited.statement_timestamp(inherited.statements[0]) == inherited.timestamp
    later = document(statement("affected", timestamp="2026-05-02T00:00:00Z"))
    found = vex.effective_statement([later, inherited], "CVE-2026-0001", SOURCE_CONTROLLER)
    assert found is not None
    assert found.status == "affected"
    assert found.action_statement == "Upgrade to the next patch release"


@pytest.mark.parametrize("query", ["GHSA-abcd-efgh-ijkl", "CVE-2026-1234", "cve-2026-1234",
                                   "https://osv.dev/GHSA-abcd-efgh-ijkl", "OSV-2026-9"])
def test_vulnerabilities_match_by_name_id_or_alias(query: str) -> None:
    doc = document(statement(vulnerability="GHSA-abcd-efgh-ijkl"))
    body = doc.model_dump(by_alias=True, mode="json")
    body["statements"][0]["vulnerability"].update(
        {"@id": "https://osv.dev/GHSA-abcd-efgh-ijkl", "aliases": ["CVE-2026-1234", "OSV-2026-9"]})
    doc = vex.parse_document(json.dumps(body), "aliases")
    found = vex.effective_statement([doc], query, SOURCE_CONTROLLER)
    assert found is not None
    assert found.status == "not_affected"
    assert vex.effective_statement([doc], "CVE-2026-9999", SOURCE_CONTROLLER) is None


def test_a_product_with_subcomponents_does_not_match_the_image_itself() -> None:
    narrowed = statement(products=[{"@id": "pkg:oci/source-controller",
                                    "subcomponents": [{"@id": "pkg:apk/alpine/git"}]}])
    doc = document(narrowed)
    assert vex.effective_statement([doc], "CVE-2026-0001", SOURCE_CONTROLLER) is None
    assert vex.effective_statement(
        [doc], "CVE-2026-0001", PackageURL.from_string("pkg:apk/alpine/git@2.45.0")) is None
    whole = document(narrowed, statement(products=[
        {"@id": "https://example.com/not-a-purl"},
        {"identifiers": {"purl": "pkg:oci/source-controller?tag=v1.7.4"}}]))
    found = vex.effective_statement(
        [whole], "CVE-2026-0001",
        vex.image_purl("source-controller", digest="sha256:" + "b" * 64, tag="v1.7.4"))
    assert found is not None
    assert found.statement_index == 1


def test_digest_specific_says_whether_the_matching_product_named_a_build() -> None:
    digest = "sha256:" + "a" * 64
    doc = document(statement(product=f"pkg:oci/source-controller@{digest}"))
    found = vex.effective_statement([doc], "CVE-2026-0001", SOURCE_CONTROLLER)
    assert found is not None
    assert found.digest_specific
    other = vex.image_purl("source-controller", digest="sha256:" + "c" * 64)
    assert vex.effective_statement([doc], "CVE-2026-0001", other) is None


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(vex.STATUSES), st.integers(0, 10_000)),
                min_size=1, max_size=8, unique_by=lambda item: item[1]),
       st.integers(1, 3), st.randoms(use_true_random=False))
def test_with_distinct_timestamps_the_latest_wins_however_split_and_ordered(
        items: list[tuple[str, int]], parts: int, random: Any) -> None:
    base = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    bodies = [statement(status, timestamp=(base + datetime.timedelta(minutes=minutes))
                        .isoformat()) for status, minutes in items]
    random.shuffle(bodies)
    documents = [document(*bodies[i::parts]) for i in range(parts) if bodies[i::parts]]
    found = vex.effective_statement(documents, "CVE-2026-0001", SOURCE_CONTROLLER)
    latest = max(items, key=lambda item: item[1])
    assert found is not None
    assert found.status == latest[0]
    assert found.timestamp == base + datetime.timedelta(minutes=latest[1])


# --- purls --------------------------------------------------------------------------------

DIGEST = "sha256:d070a1016b61952e91ac164b9ffca73aa70dc701ddaa920631bdffec1e4a870c"


@pytest.mark.parametrize(("statement_purl", "candidate", "matches"), [
    # No version in the statement: any version, and none.
    ("pkg:oci/source-controller", f"pkg:oci/source-controller@{DIGEST}", True),
    ("pkg:oci/source-controller", "pkg:oci/source-controller", True),
    # No qualifiers in the statement: any qualifiers; extra candidate qualifiers are fine.
    ("pkg:oci/source-controller",
     f"pkg:oci/source-controller@{DIGEST}?repository_url=ghcr.io/fluxcd/source-controller"
     "&tag=v1.7.4&arch=amd64", True),
    ("pkg:oci/source-controller?repository_url=ghcr.io/fluxcd/source-controller",
     "pkg:oci/source-controller?repository_url=ghcr.io/fluxcd/source-controller&tag=v1", True),
    # A qualifier in the statement must be present and equal.
    ("pkg:oci/source-controller?repository_url=ghcr.io/fluxcd/source-controller",
     "pkg:oci/source-controller?repository_url=ghcr.io/controlplaneio-fluxcd/distroless/"
     "source-controller", False),
    ("pkg:oci/source-controller?repository_url=ghcr.io/fluxcd/source-controller",
     "pkg:oci/source-controller?tag=v1.7.4", False),
    # The digest colon raw or percent-encoded is the same version, in either position.
    (f"pkg:oci/source-controller@{DIGEST}",
     f"pkg:oci/source-controller@{DIGEST.replace(':', '%3A')}", True),
    (f"pkg:oci/source-controller@{DIGEST.replace(':', '%3A')}",
     f"pkg:oci/source-controller@{DIGEST}", True),
    (f"pkg:oci/source-controller@{DIGEST}", f"pkg:oci/source-controller@{DIGEST[:-1]}0", False),
    # A versioned statement does not match a candidate without a version.
    (f"pkg:oci/source-controller@{DIGEST}", "pkg:oci/source-controller", False),
    # Different name, type or namespace.
    ("pkg:oci/source-controller", f"pkg:oci/kustomize-controller@{DIGEST}", False),
    ("pkg:oci/source-controller", "pkg:docker/source-controller", False),
    ("pkg:golang/github.com/sigstore/fulcio@1.7.1", "pkg:golang/github.com/other/fulcio@1.7.1",
     False),
    ("pkg:golang/github.com/sigstore/fulcio@1.7.1", "pkg:golang/github.com/sigstore/fulcio@1.7.1",
     True),
    # Parsed, not string, comparison: case of the type and qualifier order do not matter.
    ("pkg:OCI/source-controller?tag=v1&arch=amd64",
     "pkg:oci/source-controller?arch=amd64&tag=v1", True),
])
def test_purl_matching(statement_purl: str, candidate: str, matches: bool) -> None:
    assert vex.purl_matches(PackageURL.from_string(statement_purl),
                            PackageURL.from_string(candidate)) is matches


def test_percent_encoded_digests_match_also_when_constructed() -> None:
    # packageurl keeps constructor arguments as given, so "%3A" survives construction.
    constructed = PackageURL(type="oci", name="source-controller",
                             version=DIGEST.replace(":", "%3A"))
    assert vex.purl_matches(constructed, vex.image_purl("source-controller", digest=DIGEST))
    assert vex.purl_matches(vex.image_purl("source-controller", digest=DIGEST), constructed)


def test_image_purl() -> None:
    purl = vex.image_purl("ghcr.io/controlplaneio-fluxcd/distroless/Source-Controller",
                          digest=DIGEST.replace(":", "%3A"),
                          repository_url="ghcr.io/controlplaneio-fluxcd/distroless/"
                                         "source-controller",
                          tag="v1.7.4")
    assert (purl.type, purl.namespace, purl.name, purl.version) == \
        ("oci", None, "source-controller", DIGEST)
    assert purl.qualifiers == {"repository_url": "ghcr.io/controlplaneio-fluxcd/distroless/"
                                                 "source-controller", "tag": "v1.7.4"}
    assert purl == PackageURL.from_string(purl.to_string())
    assert vex.image_purl("source-controller").to_string() == "pkg:oci/source-controller"
    assert vex.image_purl("source-controller", tag="").qualifiers == {}


@pytest.mark.parametrize(("name", "digest", "fragment"), [
    ("ghcr.io/fluxcd/source-controller:v1.7.4", None, "includes a tag or digest"),
    (f"ghcr.io/fluxcd/source-controller@{DIGEST}", None, "includes a tag or digest"),
    ("", None, "is empty"),
    ("source-controller", "v1.7.4", "not of the form sha256:<hex>"),
])
def test_image_purl_rejects_what_it_cannot_represent(name: str, digest: str | None,
                                                     fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        vex.image_purl(name, digest=digest)


def test_unparseable_product_purls_refuse_the_document() -> None:
    """A product meant as a purl that does not parse would make its statement silently say
    nothing; that changes the meaning, so the document is refused, naming each."""
    with pytest.raises(vex.VexError) as caught:
        document(statement(product="pkg:"),
                 statement(products=[{"identifiers": {"purl": "not a purl",
                                                      "cpe23": "cpe:2.3:a:x:y:1"}}]),
                 statement(products=[]))
    message = str(caught.value)
    assert "statements[0].products[0].@id: 'pkg:' is not a valid purl" in message
    assert "statements[1].products[0].identifiers.purl: 'not a purl' is not a valid purl" \
        in message
    # An @id that is not meant as a purl (an IRI) is read; it matches no image.
    doc = document(statement(products=[{"@id": "https://example.com/product/1"}]))
    assert vex.effective_statement([doc], "CVE-2026-0001", SOURCE_CONTROLLER) is None
    assert doc.warnings == ()


def test_an_oci_purl_whose_version_is_not_a_digest_is_reported() -> None:
    doc = document(statement(product="pkg:oci/source-controller@v1.7.4"))
    assert vex.product_problems(doc) == [
        "statements[0].products[0].@id: version 'v1.7.4' is not an image digest "
        "(sha256:<hex>), so it matches no image"]


# --- malformed input ----------------------------------------------------------------------


def parse_error(data: str | bytes) -> str:
    with pytest.raises(vex.VexError) as caught:
        vex.parse_document(data, SOURCE)
    message = str(caught.value)
    assert message.startswith(f"{SOURCE}: ")
    return message


def real_v27_with(change: Any) -> str:
    body = json.loads(real_text("v2.7"))
    change(body)
    return json.dumps(body, indent=2)


def test_truncated_json_names_line_and_column() -> None:
    text = real_text("v2.7")
    message = parse_error(text[: len(text) // 2])
    assert re.search(r"not valid JSON at line \d+, column \d+: .*looks truncated", message)
    assert "line 1, column 2" in parse_error("{")


def test_statements_as_a_string_names_the_field() -> None:
    message = parse_error(real_v27_with(lambda body: body.update(statements="none")))
    assert message == f'{SOURCE}: statements: expected a JSON array (got "none")'


def test_an_unknown_status_names_the_statement_and_the_allowed_values() -> None:
    message = parse_error(real_v27_with(lambda body: body["statements"][3].update(
        status="broken")))
    assert "statements[3].status: Input should be 'not_affected', 'affected', 'fixed' or " \
           "'under_investigation' (got \"broken\")" in message


def warnings_of(data: str) -> tuple[str, ...]:
    return vex.parse_document(data, SOURCE).warnings


@pytest.mark.parametrize(("change", "fragment"), [
    (lambda body: body.update(timestamp="2026-01-01T00:00:00"),
     "timestamp: '2026-01-01T00:00:00' is not an RFC 3339 date-time such as "
     "2026-06-02T12:00:00Z: it needs an offset Z or +hh:mm"),
    (lambda body: body.update({"@context": "https://openvex.dev/ns"}),
     "statements[0].vulnerability: expected a string, as OpenVEX v0.0.1 names "
     "vulnerabilities (got {\"name\": \"CVE-2025-66506\""),
    (lambda body: body.update({"@context": "https://openvex.dev/ns/v0.3.0"}),
     "@context: 'https://openvex.dev/ns/v0.3.0' names an OpenVEX version this operator "
     "cannot read"),
    (lambda body: body.update({"@context": "https://cyclonedx.org/vex"}),
     "@context: 'https://cyclonedx.org/vex' is not an OpenVEX context"),
    (lambda body: body.pop("@context"),
     "@context: expected the OpenVEX context https://openvex.dev/ns/v0.2.0 (it is missing)"),
    (lambda body: body["statements"][4].update(products=[{"@id": 7}]),
     "statements[4].products[0].@id: expected a string (got 7)"),
    (lambda body: body["statements"][4].pop("status"),
     "statements[4].status: required field is missing"),
    (lambda body: body["statements"][4].update(status=None),
     "statements[4].status: null; it needs a value"),
    (lambda body: body["statements"][4].update(vulnerability="CVE-2026-1"),
     'statements[4].vulnerability: expected a JSON object (got "CVE-2026-1")'),
    (lambda body: body["statements"][4]["vulnerability"].update(aliases="CVE-2026-1"),
     'statements[4].vulnerability.aliases: expected a JSON array (got "CVE-2026-1")'),
    (lambda body: body["statements"][4].update(products={"@id": "pkg:oci/x"}),
     "statements[4].products: expected a JSON array"),
    (lambda body: body["statements"].append("CVE-2026-1"),
     'statements[15]: expected a JSON object (got "CVE-2026-1")'),
])
def test_what_changes_the_meaning_is_refused_with_its_path(change: Any, fragment: str) -> None:
    assert fragment in parse_error(real_v27_with(change))


@pytest.mark.parametrize(("change", "warning"), [
    (lambda body: body.pop("author"), "author: required field is missing"),
    (lambda body: body.pop("@id"), "@id: required field is missing"),
    (lambda body: body.pop("version"), "version: required field is missing"),
    (lambda body: body.update(version="four"),
     'version: expected an integer of at least 1, got a string ("four"); ignored'),
    (lambda body: body.update(version=0),
     "version: expected an integer of at least 1, got 0; ignored"),
    (lambda body: body["statements"][0].update(justifcation="component_not_present"),
     "statements[0].justifcation: unknown field; OpenVEX v0.2.0 does not define it; ignored"),
    (lambda body: body["statements"][0].update(statement="a vexctl example field"),
     "statements[0].statement: unknown field; OpenVEX v0.2.0 does not define it; ignored"),
    (lambda body: body["statements"][2].pop("vulnerability"),
     "statements[2].vulnerability: required field is missing; the statement matches no "
     "vulnerability"),
    (lambda body: body["statements"][2]["vulnerability"].pop("name"),
     "statements[2].vulnerability.name: required field is missing; it matches no "
     "vulnerability"),
    (lambda body: body["statements"][5].pop("justification") and
     body["statements"][5].pop("impact_statement"),
     "statements[5]: a not_affected statement needs a justification"),
    (lambda body: body["statements"][6].update(status="affected"),
     "statements[6]: an affected statement needs an action_statement saying what to do; "
     "read as affected"),
    (lambda body: body["statements"][7].update(justification="trust_me"),
     "statements[7].justification: Input should be 'component_not_present'"),
    (lambda body: body["statements"][7].update(status_notes=42),
     "statements[7].status_notes: expected a string (got 42); ignored"),
    (lambda body: body["statements"][7]["products"][0].update(hashes={"sha-256": 1}),
     "statements[7].products[0].hashes: sha-256: expected a string (got 1); ignored"),
    (lambda body: body["statements"][7]["products"][0].update(supplier="Vendor Inc."),
     "statements[7].products[0].supplier: unknown field"),
    (lambda body: body["statements"][7].update(products=None),
     "statements[7].products: null; read as absent"),
    (lambda body: body["statements"][7].update(vulnerability=None),
     "statements[7].vulnerability: null; read as absent"),
    (lambda body: body["statements"][7].update(last_updated="yesterday"),
     "statements[7].last_updated: 'yesterday' is not an RFC 3339 date-time"),
])
def test_what_does_not_change_the_meaning_is_read_with_a_warning_naming_its_path(
        change: Any, warning: str) -> None:
    original = real("v2.7")
    changed = real_v27_with(change)
    warnings = warnings_of(changed)
    assert any(warning in line for line in warnings), warnings
    assert len({line.split(": ", 1)[0] for line in warnings}) == len(warnings), \
        "one warning per path"
    assert len(vex.parse_document(changed, SOURCE).statements) == len(original.statements)
    assert original.warnings == ()


def test_a_document_without_timestamp_reads_its_timeless_statements_as_the_oldest() -> None:
    body = json.loads(real_text("v2.8"))
    del body["timestamp"]
    for item in body["statements"]:
        item.pop("timestamp", None)
    timeless = vex.parse_document(json.dumps(body), SOURCE)
    assert timeless.timestamp is None
    assert "timestamp: required field is missing; statements without their own timestamp " \
        "count as the oldest" in timeless.warnings
    zlib = PackageURL.from_string("pkg:apk/alpine/zlib@1.3.1-r2")
    found = vex.effective_statement([timeless], "CVE-2026-22184", zlib)
    assert found is not None
    assert found.timestamp == vex.EARLIEST
    dated = document(statement("affected", vulnerability="CVE-2026-22184",
                               product="pkg:apk/alpine/zlib", timestamp="2000-01-01T00:00:00Z"))
    for order in ([timeless, dated], [dated, timeless]):
        found = vex.effective_statement(order, "CVE-2026-22184", zlib)
        assert found is not None
        assert found.status == "affected"


def test_an_openvex_v001_document_is_converted_as_go_vex_converts_it() -> None:
    text = json.dumps({
        "@context": "https://openvex.dev/ns", "@id": "https://example.com/vex/old",
        "author": "Vendor", "role": "vex issuer", "format": "text/vex+json",
        "timestamp": "2023-01-08T18:02:03.647787998-06:00", "version": "3",
        "statements": [{
            "vulnerability": "CVE-2023-12345", "vuln_description": "a flaw",
            "products": ["pkg:oci/source-controller", "https://example.com/p"],
            "subcomponents": ["pkg:golang/github.com/fluxcd/pkg", ""],
            "status": "not_affected", "justification": "component_not_present",
            "timestamp": "2023-01-09T00:00:00Z"}]})
    doc = vex.parse_document(text, SOURCE)
    assert doc.version == 3
    (only,) = doc.statements
    assert only.vulnerability == vex.Vulnerability(name="CVE-2023-12345",
                                                   description="a flaw")
    assert [p.id for p in only.products] == ["pkg:oci/source-controller",
                                             "https://example.com/p"]
    assert [[c.id for c in p.subcomponents] for p in only.products] == \
        [["pkg:golang/github.com/fluxcd/pkg"]] * 2
    assert doc.warnings == (
        "@context: 'https://openvex.dev/ns' is OpenVEX v0.0.1; read as "
        "https://openvex.dev/ns/v0.2.0, as go-vex reads it",
        "format: unknown field; OpenVEX v0.0.1 does not define it; ignored")
    # Without subcomponents, the product is the whole image.
    body = json.loads(text)
    del body["statements"][0]["subcomponents"]
    found = vex.effective_statement([vex.parse_document(json.dumps(body), SOURCE)],
                                    "CVE-2023-12345", SOURCE_CONTROLLER)
    assert found is not None
    assert found.status == "not_affected"
    body["statements"][0]["products"] = ["pkg:oci/"]
    assert "statements[0].products[0]: 'pkg:oci/' is not a valid purl" in \
        parse_error(json.dumps(body))


def test_warnings_are_grouped_bounded_and_quote_hostile_keys_shortened() -> None:
    body = json.loads(real_text("v2.7"))
    for item in body["statements"]:
        item["statement"] = "sample"
    for number in range(40):
        body[f"extra-{number} {'x' * 200}"] = number
    warnings = warnings_of(json.dumps(body))
    assert warnings[0] == ("statements[0].statement (and 14 more like it): unknown field; "
                           "OpenVEX v0.2.0 does not define it; ignored")
    assert len(warnings) == vex.MAX_WARNINGS + 1
    assert warnings[-1] == "and 21 more kinds of warning"
    assert all(len(line) < 200 for line in warnings)
    assert warnings[1].startswith('["extra-0 xxx')


def test_a_ten_megabyte_document_is_refused_before_parsing() -> None:
    data = '{"statements": ["' + "x" * (10 * 1024 * 1024) + '"]}'
    message = parse_error(data)
    assert f"{len(data)} bytes, over the limit of 1048576 bytes" in message
    assert f"{len(data)} bytes" in parse_error(data.encode())


def test_the_size_limit_counts_utf8_bytes() -> None:
    data = '{"x": "' + "é" * (vex.MAX_DOCUMENT_BYTES // 2) + '"}'
    assert len(data) < vex.MAX_DOCUMENT_BYTES
    assert "over the limit" in parse_error(data)


def test_ten_thousand_nested_arrays_are_refused() -> None:
    message = parse_error("[" * 10_000 + "]" * 10_000)
    assert "nested deeper than 64 levels at line 1, column 65" in message
    assert "nested deeper than 64 levels" in parse_error("[" * 10_000)


def test_nesting_within_the_recursion_limit_but_over_64_is_refused_with_a_path() -> None:
    message = parse_error('{"a": ' * 100 + "1" + "}" * 100)
    assert "a.a.a" in message
    assert "nesting deeper than 64 levels" in message


@pytest.mark.parametrize(("data", "kind"), [
    ("[]", "an array"), ('"vex"', "a string"), ("null", "null"), ("42", "a number"),
    ("true", "a boolean")])
def test_a_non_object_top_level_is_refused(data: str, kind: str) -> None:
    assert parse_error(data) == \
        f"{SOURCE}: (root): expected a JSON object (an OpenVEX document), got {kind}"


def test_other_encodings_and_constants() -> None:
    assert "not UTF-8" in parse_error(b"\xff\xfe{}")
    assert "NaN is not valid JSON" in parse_error('{"version": NaN}')
    assert "not valid JSON at line 1, column 1" in parse_error("")
    # A UTF-8 byte order mark is tolerated.
    assert len(vex.parse_document("\ufeff" + real_text("v2.8"), SOURCE).statements) == 2


def test_many_problems_are_listed_with_a_count_of_the_rest() -> None:
    body = json.loads(real_text("v2.7"))
    for item in body["statements"]:
        item["status"] = "broken"
    message = parse_error(json.dumps(body))
    assert message.count("Input should be") == 10
    assert message.endswith("; and 5 more")


def test_leap_seconds_and_lowercase_separators_are_read() -> None:
    doc = document(statement(timestamp="2016-12-31t23:59:60.5z"))
    assert doc.statements[0].timestamp == datetime.datetime(2016, 12, 31, 23, 59, 59, 999999,
                                                            tzinfo=datetime.UTC)


# --- schema acceptance --------------------------------------------------------------------
#
# hypothesis-jsonschema 0.23.1 (the newest release) cannot generate from this schema with the
# pinned Hypothesis: it calls the private ``many.more()``, which Hypothesis has since removed.
# So the strategy below is written by hand from the schema, and every instance it draws is
# first validated with Draft202012Validator against the vendored schema: a drawn instance that
# the schema rejects fails the test, so the claim "schema-valid => parse_document accepts" is
# never checked on a document outside the schema.
#
# Formats: jsonschema's default checker asserts none of this schema's formats here (no
# rfc3339-validator, no rfc3987), so ``date-time`` gets the RFC 3339 section 5.6 check below;
# ``iri`` and ``uri`` stay unchecked, which only widens what the schema accepts.
# Deliberate exceptions: ``@context`` is always the v0.2.0 URL (parse_document rejects other
# versions on purpose), and years are 0001-9999 (Python cannot hold year 0000).

_RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?"
                      r"([Zz]|[+-](\d{2}):(\d{2}))$")


def _is_rfc3339(value: object) -> bool:
    if not isinstance(value, str):
        return True
    match = _RFC3339.match(value)
    if not match:
        return False
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    days = 29 if month == 2 and leap else calendar.mdays[month] if 1 <= month <= 12 else 0
    offset_ok = match.group(9) is None or (int(match.group(9)) <= 23
                                           and int(match.group(10)) <= 59)
    return 1 <= day <= days and hour <= 23 and minute <= 59 and second <= 60 and offset_ok


FORMATS = jsonschema.FormatChecker()
FORMATS.checks("date-time")(_is_rfc3339)
jsonschema.Draft202012Validator.check_schema(SCHEMA)
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=FORMATS)


@st.composite
def rfc3339(draw: st.DrawFn) -> str:
    day = draw(st.dates(min_value=datetime.date(1, 1, 1)))
    second = draw(st.integers(0, 60))
    if second == 60:
        event("leap second")
    fraction = draw(st.one_of(st.just(""),
                              st.text("0123456789", min_size=1, max_size=12).map(".{}".format)))
    offset = draw(st.one_of(
        st.sampled_from(["Z", "z", "+00:00", "-00:00"]),
        st.builds("{}{:02d}:{:02d}".format, st.sampled_from("+-"), st.integers(0, 23),
                  st.integers(0, 59))))
    return (f"{day.isoformat()}{draw(st.sampled_from('Tt'))}{draw(st.integers(0, 23)):02d}:"
            f"{draw(st.integers(0, 59)):02d}:{second:02d}{fraction}{offset}")


_TOKEN = st.text(string.ascii_lowercase + string.digits + "-._", min_size=1, max_size=8)
_PURL = st.builds(
    lambda kind, namespace, name, version, qualifiers: PackageURL(
        type=kind, namespace=namespace, name=name, version=version,
        qualifiers=qualifiers).to_string(),
    st.sampled_from(["oci", "apk", "golang", "generic", "deb"]),
    st.none() | _TOKEN, _TOKEN,
    st.none() | _TOKEN | st.just(DIGEST),
    st.dictionaries(st.sampled_from(["arch", "repository_url", "tag"]), _TOKEN, max_size=2))
_TEXT = st.text(max_size=12)
# format: iri is not asserted, so any string is schema-valid; purls and near-purls matter most.
_IRI = st.one_of(_PURL, _TEXT, _TEXT.map("pkg:{}".format),
                 st.sampled_from(["https://openvex.dev/docs/public/vex-1",
                                  "pkg:oci/source-controller", f"pkg:oci/x@{DIGEST}"]))
_INTEGER = st.one_of(st.integers(min_value=1),
                     st.integers(1, 2**60).map(float),
                     st.just(1e300))
_HASHES = st.dictionaries(st.sampled_from(sorted(SCHEMA["$defs"]["hashes"]["properties"])),
                          _TEXT, max_size=3)
_IDENTIFIER_VALUES = {"purl": _PURL | _IRI, "cpe22": _TEXT, "cpe23": _TEXT}
# anyOf: at least one of purl, cpe22, cpe23.
_IDENTIFIERS = st.sampled_from(sorted(_IDENTIFIER_VALUES)).flatmap(
    lambda key: st.fixed_dictionaries(
        {key: _IDENTIFIER_VALUES[key]},
        optional={other: value for other, value in _IDENTIFIER_VALUES.items() if other != key}))


def _unique(items: st.SearchStrategy[Any], max_size: int = 3,
            min_size: int = 0) -> st.SearchStrategy[list[Any]]:
    return st.lists(items, min_size=min_size, max_size=max_size,
                    unique_by=lambda item: json.dumps(item, sort_keys=True))


def _component(extra: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    # anyOf: @id or identifiers (or both).
    named = st.sampled_from([{"@id": _IRI}, {"identifiers": _IDENTIFIERS},
                             {"@id": _IRI, "identifiers": _IDENTIFIERS}])
    return named.flatmap(lambda required: st.fixed_dictionaries(
        required, optional={"hashes": _HASHES, **extra}))


_SUBCOMPONENT = _component({})
_PRODUCT = _component({"subcomponents": _unique(_SUBCOMPONENT, max_size=2)})
_VULNERABILITY = st.fixed_dictionaries(
    {"name": _TEXT | st.just("CVE-2026-0001")},
    optional={"@id": _IRI, "description": _TEXT, "aliases": _unique(_TEXT)})


@st.composite
def _statement(draw: st.DrawFn) -> dict[str, Any]:
    status = draw(st.sampled_from(vex.STATUSES))
    event(f"status {status}")
    required: dict[str, Any] = {"vulnerability": _VULNERABILITY, "status": st.just(status)}
    optional: dict[str, Any] = {
        "@id": _IRI, "version": _INTEGER, "timestamp": rfc3339(), "last_updated": rfc3339(),
        "products": _unique(_PRODUCT), "supplier": _TEXT, "status_notes": _TEXT,
        "justification": st.sampled_from(vex.JUSTIFICATIONS), "impact_statement": _TEXT,
        "action_statement": _TEXT, "action_statement_timestamp": rfc3339()}
    if status == "not_affected":  # then: anyOf justification / impact_statement
        key = draw(st.sampled_from(["justification", "impact_statement"]))
        required[key] = optional.pop(key)
    if status == "affected":  # then: required action_statement
        required["action_statement"] = optional.pop("action_statement")
    return draw(st.fixed_dictionaries(required, optional=optional))


DOCUMENTS = st.fixed_dictionaries(
    {"@context": st.just(vex.CONTEXT), "@id": _IRI, "author": _TEXT, "timestamp": rfc3339(),
     "version": _INTEGER, "statements": _unique(_statement(), min_size=1)},
    optional={"role": _TEXT, "last_updated": rfc3339(), "tooling": _TEXT})


def purls_of(instance: dict[str, Any]) -> list[tuple[str, str]]:
    """(path, text) of the product identifiers meant as purls, as parse_document checks them."""
    found = []
    for index, item in enumerate(instance["statements"]):
        for number, product in enumerate(item.get("products", [])):
            where = f"statements[{index}].products[{number}]"
            if product.get("@id", "").startswith("pkg:"):
                found.append((f"{where}.@id", product["@id"]))
            if product.get("identifiers", {}).get("purl"):
                found.append((f"{where}.identifiers.purl", product["identifiers"]["purl"]))
    return found


def parses(text: str) -> bool:
    """Whether the purl parses, each qualifier key once (the purl specification's rule)."""
    try:
        purl = PackageURL.from_string(text)
    except ValueError:
        return False
    query = text.split("#", 1)[0].partition("?")[2]
    keys = [part.split("=", 1)[0].lower() for part in query.split("&") if part]
    return bool(purl) and len(keys) == len(set(keys))


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(DOCUMENTS, st.booleans())
def test_every_document_the_schema_accepts_is_accepted(instance: dict[str, Any],
                                                       as_bytes: bool) -> None:
    VALIDATOR.validate(instance)  # the generator's claim; a failure here is a generator bug
    text = json.dumps(instance, ensure_ascii=not as_bytes)
    unparseable = [f"{where}: " for where, purl in purls_of(instance) if not parses(purl)]
    if unparseable:  # the schema leaves IRIs unchecked; a purl that does not parse is refused
        event("refused: a product purl does not parse")
        message = parse_error(text)
        assert all(where in message for where in unparseable[:10])
        return
    parsed = vex.parse_document(text.encode() if as_bytes else text, "generated")
    assert parsed.warnings == ()
    assert len(parsed.statements) == len(instance["statements"])
    assert [s.status for s in parsed.statements] == \
        [s["status"] for s in instance["statements"]]
    # What is accepted must also be usable without raising.
    for candidate in (SOURCE_CONTROLLER, PackageURL.from_string(f"pkg:oci/x@{DIGEST}")):
        for item in instance["statements"]:
            found = vex.effective_statement([parsed, parsed], item["vulnerability"]["name"],
                                            candidate)
            if found is not None:
                event("a product matched")
    vex.product_problems(parsed)


def meaning(document: vex.Document) -> list[tuple[Any, ...]]:
    """What each statement says: which vulnerability, status, products and when."""
    return [(item.vulnerability.name, item.vulnerability.id, item.vulnerability.aliases,
             item.status, item.products, document.statement_timestamp(item))
            for item in document.statements]


#: Deviations from the schema that change no statement's meaning: (name, where it applies,
#: how to apply it, the field the warning names).
_UNKNOWN_KEYS = st.sampled_from(["statement", "format", "comment", "x_custom", "@type"])


@st.composite
def deviations(draw: st.DrawFn, instance: dict[str, Any]) -> list[tuple[Any, str]]:
    """Changes to apply to ``instance`` in place: (a function of the instance, the field name
    a warning must mention)."""
    statements = instance["statements"]

    def objects() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = [instance]
        for item in statements:
            found += [item, item["vulnerability"]]
            for product in item.get("products", []):
                found += [product, *product.get("subcomponents", [])]
                found += [product["identifiers"]] if "identifiers" in product else []
        return found

    changes: list[tuple[Any, str]] = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["unknown", "drop", "version", "incidental"]))
        if kind == "unknown":
            target, key = draw(st.sampled_from(objects())), draw(_UNKNOWN_KEYS)
            changes.append((lambda _, t=target, k=key: t.update({k: "x"}), key))
        elif kind == "drop":
            key = draw(st.sampled_from(["@id", "author", "version"]))
            changes.append((lambda doc, k=key: doc.pop(k, None), key))
        elif kind == "version":
            changes.append((lambda doc: doc.update(version=str(doc.get("version", 1))),
                            "version"))
        else:
            item = draw(st.sampled_from(statements))
            key, value = draw(st.sampled_from([("status_notes", 42),
                                               ("last_updated", "yesterday"),
                                               ("action_statement_timestamp", 1),
                                               ("supplier", ["a"]), ("@id", {})]))
            changes.append((lambda _, t=item, k=key, v=value: t.update({k: v}), key))
    return changes


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(DOCUMENTS, st.data())
def test_what_the_schema_forbids_without_changing_the_meaning_is_read_with_a_warning(
        instance: dict[str, Any], data: st.DataObject) -> None:
    """Unknown fields anywhere, missing @id, author or version, a string version, wrong values
    in fields that say nothing about the status: read, each with a warning naming its field,
    and every statement says what it said before."""
    assume(all(parses(purl) for _, purl in purls_of(instance)))
    original = vex.parse_document(json.dumps(instance), "original")
    changed = copy.deepcopy(instance)
    changes = data.draw(deviations(changed))
    for change, _ in changes:
        change(changed)
    assert not VALIDATOR.is_valid(changed)
    parsed = vex.parse_document(json.dumps(changed), "changed")
    assert meaning(parsed) == meaning(original)
    for _, field in changes:
        assert any(field in line for line in parsed.warnings), (field, parsed.warnings)


def test_the_schema_check_really_rejects_what_the_models_warn_about() -> None:
    # The validator is not vacuous: it rejects the same not_affected-without-reason statement.
    body = json.loads(real_text("v2.8"))
    del body["statements"][0]["justification"], body["statements"][0]["impact_statement"]
    assert not VALIDATOR.is_valid(body)
    assert any("needs a justification" in line for line in warnings_of(json.dumps(body)))
    body = json.loads(real_text("v2.8"))
    body["timestamp"] = "2026-02-30T00:00:00Z"
    assert not VALIDATOR.is_valid(body)


# --- what the schema and RFC 3339 forbid ---------------------------------------------------

@pytest.mark.parametrize(("change", "fragment", "refused"), [
    (lambda body: body.update(version="4"),
     'version: expected an integer of at least 1, got a string ("4")', False),
    (lambda body: body.update(version=True),
     "version: expected an integer of at least 1, got a boolean (true)", False),
    (lambda body: body["statements"][1].update(version="2"),
     'statements[1].version: expected an integer of at least 1, got a string ("2")', False),
    (lambda body: body.update(timestamp=1767225600),
     "timestamp: expected an RFC 3339 date-time string such as 2026-06-02T12:00:00Z, got a "
     "number (1767225600)", True),
    (lambda body: body["statements"][0].update(timestamp="2025-12-08T09:40Z"),
     "statements[0].timestamp: '2025-12-08T09:40Z' is not an RFC 3339 date-time such as "
     "2026-06-02T12:00:00Z: it needs seconds (hh:mm:ss)", True),
    (lambda body: body["statements"][0].update(timestamp="2025-12-08T09:40:00+0100"),
     "statements[0].timestamp: '2025-12-08T09:40:00+0100' is not an RFC 3339 date-time such "
     "as 2026-06-02T12:00:00Z: it needs a colon in the offset (+01:00, not +0100)", True),
    (lambda body: body.update(last_updated="2025-12-08 09:40:00Z"),
     "last_updated: '2025-12-08 09:40:00Z' is not an RFC 3339 date-time such as "
     "2026-06-02T12:00:00Z: it needs a T between date and time", False),
    (lambda body: body.update({"@context": "https://openvex.dev/ns/v0.2.0", "supplier": 3}),
     "supplier: expected a string (got 3)", False),
])
def test_what_the_schema_and_rfc3339_forbid_is_refused_or_read_with_a_warning(
        change: Any, fragment: str, refused: bool) -> None:
    """Timestamps order the statements, so a malformed one is refused (pydantic's lax mode
    took Unix time, hh:mm and +0100); a malformed version or last_updated changes nothing a
    statement says, so it is dropped with a warning."""
    body = json.loads(real_text("v2.7"))
    change(body)
    assert not VALIDATOR.is_valid(body)
    if refused:
        assert fragment in parse_error(json.dumps(body))
    else:
        assert any(fragment in line for line in warnings_of(json.dumps(body)))


@pytest.mark.parametrize(("change", "fragment"), [
    # The schema leaves IRIs unchecked; the purl specification forbids a repeated key.
    (lambda body: body["statements"][0]["products"][0].update(
        {"@id": "pkg:oci/source-controller?arch=amd64&arch=arm64"}),
     "statements[0].products[0].@id: purl 'pkg:oci/source-controller?arch=amd64&arch=arm64' "
     "repeats the qualifier 'arch'; each qualifier key may appear once"),
    (lambda body: body["statements"][0]["products"][0].update(
        {"identifiers": {"purl": "pkg:oci/x?tag=v1&Tag=v2"}}),
     "statements[0].products[0].identifiers.purl: purl 'pkg:oci/x?tag=v1&Tag=v2' repeats the "
     "qualifier 'tag'"),
])
def test_a_purl_that_repeats_a_qualifier_is_refused(change: Any, fragment: str) -> None:
    body = json.loads(real_text("v2.7"))
    change(body)
    assert VALIDATOR.is_valid(body)
    assert fragment in parse_error(json.dumps(body))


def test_statements_800_nanoseconds_apart_do_not_tie() -> None:
    """Regression: both truncated to the same microsecond, so document order decided."""
    doc = document(statement("not_affected", timestamp="2026-01-01T00:00:00.000001800Z"),
                   statement("affected", timestamp="2026-01-01T00:00:00.000001000Z"))
    found = vex.effective_statement([doc], "CVE-2026-0001", SOURCE_CONTROLLER)
    assert found is not None
    assert found.status == "not_affected"
    assert found.timestamp.nanosecond == 1800  # type: ignore[attr-defined]
    # And across offsets: 00:00:00.0000018+00:00 is after 01:00:00.000001+01:00.
    doc = document(statement("not_affected", timestamp="2026-01-01T00:00:00.0000018Z"),
                   statement("affected", timestamp="2026-01-01T01:00:00.000001+01:00"))
    found = vex.effective_statement([doc], "CVE-2026-0001", SOURCE_CONTROLLER)
    assert found is not None
    assert found.status == "not_affected"
