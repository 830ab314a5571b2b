"""No history of OpenVEX statements can make a verdict less severe than the latest statement.

Hypothesis draws sequences of statements about one CVE, spread over several documents, with
random statuses, timestamps (own or inherited from the document, with ties), order and
product forms: version-less purls, purls with qualifiers, digest-specific purls (raw and
percent-encoded), ``identifiers.purl``, and products that do not cover the running image.
The test works out which statement is the latest from its own table of which product covers
the image, independently of ``vex.purl_matches``, and checks the verdict two ways:

* only the latest statement counts: the verdict is the one that statement alone gives;
* the verdict is at least as severe as the latest statement says. ``not_affected``:
  NotAffected. ``under_investigation``: the bulletin's verdict without VEX. ``fixed``: the
  verdict without VEX, or Fixed instead of Unknown when it names the running digest.
  ``affected``: never NotAffected and never less severe than without VEX; Vulnerable when it
  names the running digest or the bulletin lists no fix.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fluxsupport.domain import bulletin, inventory, vex
from tests import fixtures

CVE = "CVE-2026-47680"
PRE = fixtures.images(fixtures.PRE_FIX_V275)
FIX = fixtures.images(fixtures.FIX_V275)
REPOSITORY = PRE["source-controller"]["name"]
OTHER_DIGEST = "sha256:" + "0" * 64

#: Severity, most severe first, as the bulletin aggregates it.
SEVERITY = {"Vulnerable": 0, "Unknown": 1, "Fixed": 2, "NotAffected": 3}


def make(body: dict[str, Any]) -> bulletin.Bulletin:
    return bulletin.Bulletin(body["metadata"]["name"],
                             bulletin.BulletinSpec.model_validate(body["spec"]))


def _bulletins() -> dict[str, tuple[bulletin.Bulletin, bool]]:
    """name -> (bulletin, whether it lists no fix at all)."""
    with_fix = fixtures.bulletin_for("with-fix", CVE, "source-controller",
                                     FIX["source-controller"])
    no_fix = fixtures.bulletin_for("no-fix", CVE, "source-controller", FIX["source-controller"])
    no_fix["spec"]["fixes"] = []
    ranged = fixtures.bulletin_for("ranged", CVE, "source-controller", FIX["source-controller"])
    ranged["spec"]["fixes"] = []
    ranged["spec"]["affectedVersions"] = [{"component": "source-controller", "ranges": [
        {"introduced": "1.8.0", "fixed": "1.8.2"}]}]
    return {"with-fix": (make(with_fix), False), "no-fix": (make(no_fix), True),
            "ranged": (make(ranged), False)}


BULLETINS = _bulletins()


def _running(entries: dict[str, dict[str, str]], tag: str | None = None,
             digest: bool = True) -> inventory.RunningComponent:
    if tag is not None:
        entries = {"source-controller": {**entries["source-controller"], "newTag": tag}}
    components = inventory.build_inventory(fixtures.deployments_running(entries, "v2.7.5"))
    component = next(c for c in components if c.component == "source-controller")
    return component if digest else dataclasses.replace(component, digests=())


#: Running images whose verdicts without VEX differ: pre-fix, listed fix, no digest, and a
#: tag that is not a version.
RUNNING = {"pre-fix": _running(PRE), "fixed": _running(FIX),
           "no-digest": _running(PRE, digest=False), "unparseable": _running(PRE, tag="main")}


@dataclasses.dataclass(frozen=True)
class ProductForm:
    """A product as a document writes it, and what it means for the running image."""

    body: dict[str, Any]
    covers: bool
    #: It names a build (a digest), not every build of the name.
    specific: bool = False


def product_forms(component: inventory.RunningComponent) -> list[ProductForm]:
    digest = component.digests[0] if component.digests else None
    forms = [
        ProductForm({"@id": "pkg:oci/source-controller"}, True),
        ProductForm({"@id": f"pkg:oci/source-controller?repository_url={REPOSITORY}"}, True),
        ProductForm({"identifiers": {"purl": "pkg:oci/source-controller"}}, True),
        ProductForm({"@id": f"pkg:oci/source-controller@{OTHER_DIGEST}"}, False),
        ProductForm({"@id": "pkg:oci/source-controller?repository_url=docker.io/other"}, False),
        ProductForm({"@id": "pkg:oci/helm-controller"}, False),
        ProductForm({"@id": "pkg:oci/source-controller",
                     "subcomponents": [{"@id": "pkg:golang/github.com/fluxcd/pkg/git"}]}, False),
    ]
    if digest is not None:
        encoded = digest.replace(":", "%3A")
        forms += [
            ProductForm({"@id": f"pkg:oci/source-controller@{digest}"}, True, True),
            ProductForm({"@id": f"pkg:oci/source-controller@{encoded}"}, True, True),
            ProductForm({"identifiers": {"purl": f"pkg:oci/source-controller@{digest}?"
                                                 f"repository_url={REPOSITORY}"}}, True, True),
        ]
    else:  # without a running digest a digest-specific product covers nothing
        forms.append(ProductForm({"@id": f"pkg:oci/source-controller@{OTHER_DIGEST}"}, False))
    return forms


#: (vulnerability object, whether it names the bulletin's CVE)
VULNERABILITIES = [({"name": CVE}, True), ({"name": CVE.lower()}, True),
                   ({"name": "GHSA-xxxx-yyyy-zzzz", "aliases": [CVE]}, True),
                   ({"name": "CVE-2026-00001"}, False)]

JANUARY_2026 = 1_767_225_600  # 2026-01-01T00:00:00Z


def instant(offset: int) -> str:
    """An RFC 3339 time ``offset`` hours into 2026: a small range, so that ties happen."""
    moment = datetime.datetime.fromtimestamp(JANUARY_2026 + offset * 3600, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass(frozen=True)
class Drawn:
    status: str
    vulnerability: int
    products: tuple[int, ...]
    timestamp: int | None  # hours; None: the document's


def statement_body(drawn: Drawn, forms: list[ProductForm]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "vulnerability": VULNERABILITIES[drawn.vulnerability][0], "status": drawn.status,
        "products": [forms[index].body for index in drawn.products]}
    if drawn.timestamp is not None:
        body["timestamp"] = instant(drawn.timestamp)
    if drawn.status == "not_affected":
        body["justification"] = "vulnerable_code_not_in_execute_path"
    if drawn.status == "affected":
        body["action_statement"] = "Upgrade to the fixed build"
    return body


def document_text(timestamp: int, statements: list[dict[str, Any]], number: int) -> str:
    return json.dumps({"@context": vex.CONTEXT, "@id": f"https://vendor.example/vex/{number}",
                       "author": "vendor", "timestamp": instant(timestamp), "version": 1,
                       "statements": statements})


SCENARIOS = st.tuples(st.sampled_from(sorted(BULLETINS)), st.sampled_from(sorted(RUNNING)))


@st.composite
def histories(draw: st.DrawFn, n_forms: int) -> list[tuple[int, list[Drawn]]]:
    """One to three documents, each (its timestamp, its statements)."""
    drawn_statement = st.builds(
        Drawn, st.sampled_from(vex.STATUSES), st.integers(0, len(VULNERABILITIES) - 1),
        st.lists(st.integers(0, n_forms - 1), min_size=1, max_size=2).map(tuple),
        st.none() | st.integers(0, 12))
    return draw(st.lists(st.tuples(st.integers(0, 12),
                                   st.lists(drawn_statement, min_size=0, max_size=5)),
                         min_size=1, max_size=3))


def cve_verdict(result: bulletin.ComponentVerdict | None) -> tuple[str, str]:
    assert result is not None
    (only,) = result.cves
    return only.verdict, only.reason


@settings(max_examples=400, deadline=None)
@given(SCENARIOS, st.data())
def test_no_statement_history_makes_a_verdict_less_severe_than_the_latest_statement(
        scenario: tuple[str, str], data: st.DataObject) -> None:
    bulletin_name, running_name = scenario
    the_bulletin, no_fix = BULLETINS[bulletin_name]
    component = RUNNING[running_name]
    forms = product_forms(component)
    history = data.draw(histories(len(forms)))

    texts, latest, latest_key = [], None, None
    for number, (doc_time, drawn_statements) in enumerate(history):
        texts.append(document_text(doc_time, [statement_body(d, forms)
                                              for d in drawn_statements], number))
        for index, drawn in enumerate(drawn_statements):
            if not (VULNERABILITIES[drawn.vulnerability][1]
                    and any(forms[p].covers for p in drawn.products)):
                continue
            key = (drawn.timestamp if drawn.timestamp is not None else doc_time, number, index)
            if latest_key is None or key > latest_key:
                latest, latest_key = drawn, key
    documents = [vex.parse_document(text, f"doc-{n}") for n, text in enumerate(texts)]

    without = cve_verdict(bulletin.evaluate_component(the_bulletin, component))
    verdict = cve_verdict(bulletin.evaluate_component(the_bulletin, component, (), documents))

    if latest is None:
        assert verdict == without
        return
    assert latest_key is not None
    # Only the latest statement counts.
    alone = {**statement_body(latest, forms), "timestamp": instant(latest_key[0])}
    only_latest = [vex.parse_document(document_text(0, [alone], 0), "latest")]
    assert verdict == cve_verdict(bulletin.evaluate_component(the_bulletin, component, (),
                                                              only_latest))
    # And it is at least as severe as the latest statement says.
    specific = any(forms[p].covers and forms[p].specific for p in latest.products)
    if latest.status == "not_affected":
        assert verdict[0] == "NotAffected"
    elif latest.status == "under_investigation":
        assert verdict == without
    elif latest.status == "fixed":
        assert verdict == without or (without[0] == "Unknown" and specific
                                      and verdict == ("Fixed", "VexFixed"))
    else:
        assert verdict[0] != "NotAffected"
        assert SEVERITY[verdict[0]] <= SEVERITY[without[0]]
        if specific or no_fix:
            assert verdict[0] == "Vulnerable"
