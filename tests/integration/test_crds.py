"""The CRDs as kubectl users meet them on the real API server: short names that clash with no
other served resource, the `fluxsupport` category, and `kubectl explain` text."""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import Iterator

import kubernetes
import pytest
import yaml

from fluxsupport.constants import GROUP
from fluxsupport.domain import submission
from tests import harness

OURS = {"supportcases": "SupportCase", "securitybulletins": "SecurityBulletin"}


def _api_resources(kubeconfig: pathlib.Path) -> list[dict[str, str]]:
    """`kubectl api-resources` as rows. Its columns are aligned text and SHORTNAMES is often
    empty, so each row is cut at the offsets of the header's column names."""
    lines = harness.kubectl(kubeconfig, "api-resources", "--cached=false").stdout.splitlines()
    header, rows = lines[0], [line for line in lines[1:] if line.strip()]
    names = header.split()
    assert names == ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"], header
    starts = [header.index(name) for name in names]
    ends = [*starts[1:], None]
    return [{name.lower(): row[start:end].strip() for name, start, end
             in zip(names, starts, ends, strict=True)}
            for row in rows]


def test_short_names_clash_with_no_other_served_resource(api: harness.Api) -> None:
    resources = _api_resources(api.kubeconfig)
    ours = {row["name"]: row for row in resources
            if row["apiversion"].startswith(f"{GROUP}/") and row["name"] in OURS}
    assert sorted(ours) == sorted(OURS), resources
    our_names = {row["name"]: set(filter(None, row["shortnames"].split(",")))
                 for row in ours.values()}
    assert all(our_names.values()), our_names
    others = [row for row in resources
              if not (row["apiversion"].startswith(f"{GROUP}/") and row["name"] in OURS)]
    # The built-in groups must be there, or the check below proves nothing.
    assert {"storageclasses", "pods", "deployments", "customresourcedefinitions"} <= {
        row["name"] for row in others}
    taken = {name for row in others
             for name in (row["name"], *filter(None, row["shortnames"].split(",")))}
    for plural, short in our_names.items():
        assert not short & taken, f"{plural}: {sorted(short & taken)} is also another resource's"
    first, second = our_names.values()
    assert not first & second, our_names


@pytest.fixture
def case_and_bulletin(api: harness.Api, namespace: str) -> Iterator[tuple[str, str, str]]:
    case = f"crd-{uuid.uuid4().hex[:8]}"
    api.create_case(namespace, harness.case_manifest(case, namespace))
    bulletin = yaml.safe_load((harness.ROOT / "examples" / "securitybulletin.yaml").read_text())
    bulletin["metadata"] = {"name": f"crd-{uuid.uuid4().hex[:8]}"}
    api.create_bulletin(bulletin)
    try:
        yield namespace, case, bulletin["metadata"]["name"]
    finally:
        api.delete_bulletin(bulletin["metadata"]["name"])


def test_category_and_short_names_list_our_objects(
        api: harness.Api, case_and_bulletin: tuple[str, str, str]) -> None:
    namespace, case, bulletin = case_and_bulletin
    listed = harness.kubectl(api.kubeconfig, "get", "fluxsupport", "-A", "-o", "name")
    names = listed.stdout.split()
    assert f"supportcase.{GROUP}/{case}" in names, listed.stdout
    assert f"securitybulletin.{GROUP}/{bulletin}" in names, listed.stdout
    for args, expected in ((("get", "fscase", "-n", namespace, "-o", "name"), case),
                           (("get", "fsbulletin", "-o", "name"), bulletin)):
        result = harness.kubectl(api.kubeconfig, *args)
        assert expected in result.stdout, result
        # kubectl warns when a short name could also match another resource.
        assert "could also match" not in result.stderr, result.stderr
    # The regression: `sc` belonged to StorageClasses and to us, and kubectl warned each time.
    storage = harness.kubectl(api.kubeconfig, "get", "sc")
    assert "could also match" not in storage.stderr, storage.stderr


@pytest.mark.parametrize(("field", "text"), [
    ("supportcase.spec", "What the reporter asks for"),
    ("supportcase.spec.severity", "The first-response deadline follows this"),
    ("supportcase.status.firstResponse.businessSeconds", "Business seconds from the case's"),
    ("supportcase.status.conditions.lastTransitionTime", "When the condition last changed"),
    ("securitybulletin.spec.fixes.images.digest", "manifest digest"),
    ("securitybulletin.status.counts.unknown", "could not be checked"),
])
def test_kubectl_explain_shows_the_descriptions(api: harness.Api, field: str, text: str) -> None:
    explained = harness.kubectl(api.kubeconfig, "explain", field).stdout
    # kubectl re-wraps the text: compare with white space collapsed.
    assert text in " ".join(explained.split()), explained


#: Characters a pasted title may carry, and whether the CRD admits them in a title: it refuses
#: exactly the controls and line separators, which the email library refuses in a header.
TITLE_CHARACTERS = [("\n", False), ("\r", False), ("\t", False), ("\x0b", False),
                    ("\x0c", False), ("\x1c", False), ("\x1f", False), ("\x7f", False),
                    ("\x85", False), ("\x9f", False), ("\u2028", False), ("\u2029", False),
                    ("é", True), ("\u00a0", True), ("\u200b", True), ("\u202e", True),
                    ("\U0001f525", True), ("#", True), ("[", True), ("]", True), ("<", True),
                    ("\\", True)]


@pytest.mark.parametrize(("character", "admitted"), TITLE_CHARACTERS, ids=repr)
def test_the_title_admits_what_a_subject_line_can_carry(api: harness.Api, namespace: str,
                                                        character: str, admitted: bool) -> None:
    body = harness.case_manifest(f"title-{uuid.uuid4().hex[:8]}", namespace)
    body["spec"]["title"] = f"HelmReleases stuck{character}after the upgrade"
    if admitted:
        api.create_case(namespace, body)
    else:
        with pytest.raises(kubernetes.client.ApiException) as refused:
            api.create_case(namespace, body)
        assert refused.value.status == 422
        assert "spec.title" in str(refused.value.body)
    # The operator's own rule (for titles stored before this one) is the same.
    assert (submission.HEADER_UNSAFE.search(character) is None) == admitted


@pytest.mark.parametrize("title", ["\u00a0", " \u3000 ", "\u2028"], ids=repr)
def test_a_title_of_white_space_only_is_refused(api: harness.Api, namespace: str,
                                                title: str) -> None:
    body = harness.case_manifest(f"blank-{uuid.uuid4().hex[:8]}", namespace)
    body["spec"]["title"] = title
    with pytest.raises(kubernetes.client.ApiException) as refused:
        api.create_case(namespace, body)
    assert refused.value.status == 422


@pytest.mark.parametrize(("contact", "admitted"), [
    ({"name": "Bob Smith", "email": "bob@customer.example"}, True),
    ({"name": "Bob\nSmith"}, False),
    ({"name": "Bob\u2028Smith"}, False),
    ({"email": "bob\x0b@customer.example"}, False),
    ({"email": "bob@customer.example\x1c"}, False),
    ({"email": "bob@customer.example\x85"}, False),
    ({"email": "bob@customer.example\u2028"}, False),
    ({"email": "bob@customer.example,eve@evil.example"}, False),
    ({"email": "Bob <bob@customer.example>"}, False),
], ids=repr)
def test_the_contact_is_one_line_and_one_address(api: harness.Api, namespace: str,
                                                 contact: dict[str, str],
                                                 admitted: bool) -> None:
    body = harness.case_manifest(f"contact-{uuid.uuid4().hex[:8]}", namespace)
    body["spec"]["contact"] = contact
    if admitted:
        api.create_case(namespace, body)
        return
    with pytest.raises(kubernetes.client.ApiException) as refused:
        api.create_case(namespace, body)
    assert refused.value.status == 422
    assert "spec.contact" in str(refused.value.body)
