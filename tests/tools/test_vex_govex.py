"""The OpenVEX reader against go-vex, the reference implementation vexctl is built on.

hack/govex is a small Go program over go-vex v0.2.8 (built here once per source, into the
tool cache). It opens documents as vexctl does and answers "which statement decides this
vulnerability for this product". The public documents are the OpenVEX files of vexctl's
examples and test data and of go-vex's test data (tests/data/upstream/openvex, provenance in
its README.md), and Flux's own documents. Both sides must read every one of them, and give the
same effective statement for every vulnerability and product they name, alone and merged.

Not compared, by design (docs/concepts.md, OpenVEX): go-vex sorts statements by vulnerability
name before time, so when statements under different names match one query (by alias) it does
not pick the latest; such queries are skipped and counted. Products with subcomponents are
dropped on the go-vex side (the operator reads them as statements about the subcomponents).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from packageurl import PackageURL

from fluxsupport.devcluster import paths
from fluxsupport.domain import vex
from tests import fixtures

ROOT = pathlib.Path(__file__).resolve().parents[2]
GOVEX = ROOT / "hack" / "govex"
PUBLIC = sorted((fixtures.UPSTREAM / "openvex").rglob("*.json"))
FLUX = [fixtures.UPSTREAM / "vex" / f"v2.{minor}.json" for minor in (7, 8, 9)]
#: Documents read together, as a vendor's history of documents.
FAMILIES = {
    "vexctl sarif examples": [p for p in PUBLIC if "vexctl/examples/sarif" in str(p)],
    "vexctl v0.0.1 test data": [p for p in PUBLIC if "vexctl/pkg/ctl/testdata/v001" in str(p)],
    "vexctl v0.2.0 test data": [p for p in PUBLIC if "vexctl/pkg/ctl/testdata/v020" in str(p)],
    "go-vex test data": [p for p in PUBLIC if "go-vex/pkg/vex/testdata" in str(p)],
    "vexctl examples": [p for p in PUBLIC if "vexctl/examples/openvex" in str(p)],
    "flux": FLUX,
    "all": [*PUBLIC, *FLUX],
}


@pytest.fixture(scope="module")
def govex() -> pathlib.Path:
    """The go-vex program, built once per source into the tool cache."""
    go = shutil.which("go")
    assert go, "Go 1.26+ is needed (make test's prerequisite) to build hack/govex"
    digest = hashlib.sha256(b"".join(
        (GOVEX / name).read_bytes() for name in ("go.mod", "go.sum", "main.go"))).hexdigest()
    binary = paths.cache_dir() / "bin" / f"govex-{digest[:16]}"
    if not binary.exists():
        binary.parent.mkdir(parents=True, exist_ok=True)
        partial = binary.with_name(binary.name + f".{os.getpid()}.partial")
        subprocess.run([go, "build", "-o", str(partial), "."], cwd=GOVEX, check=True,
                       timeout=900, env={**os.environ, "GOWORK": "off", "GOFLAGS": "-mod=mod"})
        partial.replace(binary)
    return binary


@dataclasses.dataclass
class Reference:
    """go-vex's answers, from one run of the program."""

    binary: pathlib.Path

    def ask(self, documents: list[pathlib.Path],
            queries: list[tuple[list[int], str, str]]) -> dict[str, Any]:
        request = {"documents": [str(p) for p in documents],
                   "queries": [{"documents": docs, "vulnerability": vulnerability,
                                "product": product} for docs, vulnerability, product in queries]}
        result = subprocess.run([str(self.binary)], input=json.dumps(request), text=True,
                                capture_output=True, check=True, timeout=120)
        answer: dict[str, Any] = json.loads(result.stdout)
        return answer


def ours(path: pathlib.Path) -> vex.Document | None:
    try:
        return vex.parse_document(path.read_bytes(), str(path))
    except vex.VexError:
        return None


def _product_purls(document: vex.Document) -> Iterator[tuple[vex.Statement, str]]:
    for statement in document.statements:
        for product in statement.products:
            if product.subcomponents:
                continue
            for text in (product.id, product.identifiers.purl if product.identifiers else None):
                if text and text.startswith("pkg:"):
                    yield statement, text


def variants(text: str) -> list[str]:
    """The purl itself, with an extra qualifier, and with a version where it has none."""
    purl = PackageURL.from_string(text)
    found = [text]
    qualifiers = dict(purl.qualifiers) if isinstance(purl.qualifiers, dict) else {}
    if "arch" not in qualifiers:
        found.append(PackageURL(purl.type, purl.namespace, purl.name, purl.version,
                                {**qualifiers, "arch": "arm64"}, purl.subpath).to_string())
    if not purl.version:
        version = "sha256:" + "e" * 64 if purl.type == "oci" else "9.9.9"
        found.append(PackageURL(purl.type, purl.namespace, purl.name, version,
                                qualifiers or None, purl.subpath).to_string())
    return found


def queries_for(documents: list[vex.Document]) -> list[tuple[str, str]]:
    """(vulnerability, product) for every identifier and product purl the documents name, a
    few variations of each, and a product no document names."""
    found: dict[tuple[str, str], None] = {}
    for document in documents:
        for statement, text in _product_purls(document):
            vulnerability = statement.vulnerability
            names = [n for n in (vulnerability.name, *vulnerability.aliases, vulnerability.id)
                     if n]
            for name in names:
                for product in variants(text):
                    found[(name, product)] = None
                found[(name, "pkg:oci/in-no-document")] = None
    return list(found)


def covers(statement: vex.Statement, candidate: PackageURL) -> bool:
    return any(vex.purl_matches(purl, candidate) for product in statement.products
               if not product.subcomponents for purl in vex.product_purls(product))


def compare(reference: Reference, documents: list[pathlib.Path]
            ) -> tuple[int, int, int, list[str]]:
    """Ask both sides about every document alone and all of them merged: (queries compared,
    of which a statement was found, skipped, disagreements)."""
    parsed = [ours(p) for p in documents]
    readable = [i for i, d in enumerate(parsed) if d is not None]
    groups = [[i] for i in readable] + ([readable] if len(readable) > 1 else [])
    asked: list[tuple[list[int], str, str]] = []
    for group in groups:
        asked += [(group, v, p) for v, p in queries_for([parsed[i] for i in group])]  # type: ignore[misc]
    answers = reference.ask(documents, asked)["answers"]
    compared = found = skipped = 0
    disagreements = []
    for (group, vulnerability, product), theirs in zip(asked, answers, strict=True):
        if theirs.get("error"):  # go-vex cannot merge timeless statements of a timeless document
            skipped += 1
            continue
        candidate = PackageURL.from_string(product)
        chosen = [parsed[i] for i in group]
        mine = vex.effective_statement(chosen, vulnerability, candidate)  # type: ignore[arg-type]
        names = {statement.vulnerability.name for document in chosen
                 for statement in document.statements  # type: ignore[union-attr]
                 if statement.vulnerability.matches(vulnerability) and covers(statement,
                                                                              candidate)}
        if len(names) > 1:
            skipped += 1
            continue
        compared += 1
        mine_answer = None if mine is None else (
            group[mine.document_index or 0], mine.statement_index, mine.status)
        their_answer = (theirs["document"], theirs["statement"], theirs["status"]) \
            if theirs["found"] else None
        found += mine_answer is not None
        if mine_answer != their_answer:
            disagreements.append(f"{[documents[i].name for i in group]} {vulnerability} "
                                 f"{product}: ours {mine_answer}, go-vex {their_answer}")
    return compared, found, skipped, disagreements


def test_the_public_documents_are_read_by_both(govex: pathlib.Path) -> None:
    documents = [*PUBLIC, *FLUX]
    assert len(PUBLIC) == 25
    theirs = Reference(govex).ask(documents, [])["documents"]
    refused_by_go = [p.name for p, answer in zip(documents, theirs, strict=True)
                     if not answer["ok"]]
    refused_by_us = [p.name for p in documents if ours(p) is None]
    assert refused_by_go == []
    assert refused_by_us == []


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_effective_statements_agree_with_go_vex(
        govex: pathlib.Path, family: str, figures: Callable[[str], None]) -> None:
    compared, found, skipped, disagreements = compare(Reference(govex), FAMILIES[family])
    assert disagreements == []
    assert found > 0, "the comparison covers statements that match"
    assert compared > found, "and queries that match nothing"
    assert skipped <= compared // 10
    figures(f"go-vex differential, {family}: {compared} queries compared ({found} with a "
            f"statement), {skipped} skipped")


# --- what each side reads ------------------------------------------------------------------

BASE = fixtures.UPSTREAM / "openvex" / "vexctl" / "examples" / "sarif" / \
    "sample-history.openvex.json"


def _statement(body: dict[str, Any]) -> dict[str, Any]:
    statement: dict[str, Any] = body["statements"][0]
    return statement


#: name -> (change to the base document, go-vex reads it, we read it). The base is vexctl's
#: sample-history example (two statements, one with its own timestamp, a `statement` field).
VARIANTS: dict[str, tuple[Callable[[dict[str, Any]], Any], bool, bool]] = {
    "as published": (lambda body: None, True, True),
    "unknown fields everywhere": (lambda body: (
        body.update(x_generator="tool"), _statement(body).update(x_note="n"),
        _statement(body)["vulnerability"].update(x_cwe="CWE-22"),
        _statement(body)["products"][0].update(supplier="Vendor")), True, True),
    "no version, timestamp, @id or author": (lambda body: [
        body.pop(key) for key in ("version", "timestamp", "@id", "author")], True, True),
    "not_affected without justification": (
        lambda body: _statement(body).pop("justification"), True, True),
    "a justification OpenVEX does not define": (
        lambda body: _statement(body).update(justification="trust_me"), True, True),
    "affected without action_statement": (
        lambda body: _statement(body).update(status="affected", justification=None), True,
        True),
    "no statements": (lambda body: body.pop("statements"), True, True),
    # We read more than go-vex: values of fields that change no statement's meaning.
    "a string version": (lambda body: body.update(version="1"), False, True),
    "a number in status_notes": (lambda body: _statement(body).update(status_notes=4), False,
                                 True),
    # What changes the meaning is refused although go-vex reads it.
    "an unknown status": (lambda body: _statement(body).update(status="resolved"), True,
                          False),
    "a product purl that does not parse": (
        lambda body: _statement(body)["products"][0].update({"@id": "pkg:oci/"}), True, False),
    # Both refuse.
    "an OpenVEX version neither knows": (
        lambda body: body.update({"@context": "https://openvex.dev/ns/v0.3.0"}), False, False),
    "statements as an object": (lambda body: body.update(statements={}), False, False),
    "a vulnerability as a number": (lambda body: _statement(body).update(vulnerability=7),
                                    False, False),
    "a malformed statement timestamp": (
        lambda body: _statement(body).update(timestamp="yesterday"), False, False),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_we_read_what_go_vex_reads_except_what_changes_the_meaning(
        govex: pathlib.Path, tmp_path: pathlib.Path, name: str) -> None:
    change, go_reads, we_read = VARIANTS[name]
    body = json.loads(BASE.read_text())
    change(body)
    path = tmp_path / "variant.json"
    path.write_text(json.dumps(body))
    reference = Reference(govex)
    (theirs,) = reference.ask([path], [])["documents"]
    assert (theirs["ok"], ours(path) is not None) == (go_reads, we_read), theirs
    if go_reads and we_read:
        compared, _, _, disagreements = compare(reference, [path])
        assert disagreements == []
        assert compared > 0 or "statements" not in body
    if not we_read:
        with pytest.raises(vex.VexError):
            vex.parse_document(path.read_bytes(), "variant")
    elif (name != "as published") and go_reads:
        assert vex.parse_document(path.read_bytes(), "variant").warnings, \
            "what deviates from OpenVEX v0.2.0 is read with a warning"
