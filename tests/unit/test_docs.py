"""Documentation checks: the CRD reference matches the CRDs, and no relative link is broken."""

from __future__ import annotations

import importlib.util
import pathlib
import re
import subprocess
import sys
import types

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "hack" / "gen-crd-reference.py"
REFERENCE = ROOT / "docs" / "crd-reference.md"
MARKDOWN = sorted([ROOT / "README.md", ROOT / "CONTRIBUTING.md", *(ROOT / "docs").glob("*.md")])

#: Inline links and images, ``[text](target "title")``; the target ends at space or ")".
_INLINE_LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
#: Reference definitions, ``[label]: target``.
_REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
_EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _generator() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("gen_crd_reference", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _unfenced(text: str) -> list[str]:
    """The lines outside fenced code blocks (lines inside become empty)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            lines.append("")
        else:
            lines.append("" if fenced else line)
    return lines


def _prose(text: str) -> str:
    """The text outside code blocks and code spans, where links are links."""
    return "\n".join(_CODE_SPAN.sub("", line) for line in _unfenced(text))


def _links(path: pathlib.Path) -> list[str]:
    prose = _prose(path.read_text())
    return _INLINE_LINK.findall(prose) + _REFERENCE_LINK.findall(prose)


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|__", "", heading.strip()).lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: pathlib.Path) -> set[str]:
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for line in _unfenced(path.read_text()):
        match = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = _slug(match[1])
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def test_crd_reference_matches_the_crds() -> None:
    expected = _generator().render()
    assert REFERENCE.read_text() == expected, (
        "docs/crd-reference.md is stale; run: .venv/bin/python hack/gen-crd-reference.py")


def test_generator_check_mode_agrees() -> None:
    result = subprocess.run([sys.executable, str(GENERATOR), "--check"], capture_output=True,
                            text=True, timeout=60, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_generator_check_mode_fails_on_a_stale_file(tmp_path: pathlib.Path) -> None:
    stale = tmp_path / "crd-reference.md"
    stale.write_text(REFERENCE.read_text().replace("SupportCase", "SupportKase", 1))
    result = subprocess.run([sys.executable, str(GENERATOR), "--check", "--output", str(stale)],
                            capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)
    assert result.returncode == 1
    assert "stale" in result.stderr


def test_reference_lists_every_spec_and_status_field() -> None:
    generator = _generator()
    text = REFERENCE.read_text()
    for crd in generator.load_crds():
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
        for part in ("spec", "status"):
            for path, _, _ in generator._walk(schema[part], part, False):
                assert f"| `{path}` |" in text, f"{crd['spec']['names']['kind']}: {path}"


@pytest.mark.parametrize("document", MARKDOWN, ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_point_at_existing_files(document: pathlib.Path) -> None:
    broken = []
    for target in _links(document):
        if not target or _EXTERNAL.match(target):
            continue
        file_part, _, fragment = target.partition("#")
        linked = (document.parent / file_part).resolve() if file_part else document
        if not linked.exists():
            broken.append(f"{target}: {linked} does not exist")
        elif fragment and linked.suffix == ".md" and fragment not in _anchors(linked):
            broken.append(f"{target}: no heading #{fragment} in {linked.name}")
    assert broken == [], f"broken links in {document.relative_to(ROOT)}"


def test_docs_index_links_every_page() -> None:
    index = ROOT / "docs" / "README.md"
    linked = {target.partition("#")[0] for target in _links(index)}
    pages = {path.name for path in (ROOT / "docs").glob("*.md")} - {"README.md"}
    assert pages <= linked, f"docs/README.md does not link {sorted(pages - linked)}"
