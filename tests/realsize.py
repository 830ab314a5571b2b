"""Inputs the size and shape of real ones, generated from the real data in tests/data/upstream:
an OSV feed of a thousand and more advisories, and a snapshot of the Flux distribution
repository's layout of thousands of files (a few MB as a Flux artifact).

Deterministic for a seed, and each generator says what it made, so that a test checks the
operator's answer against the generator's, not against the code under test.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import io
import json
import pathlib
import random
import shutil
import tarfile
from typing import Any

from tests import fixtures

ADVISORIES = fixtures.UPSTREAM / "advisories"
#: Go modules of the Flux components (domain/advisory.py's table, written out again here).
FLUX_MODULES = {
    "github.com/fluxcd/source-controller": "source-controller",
    "github.com/fluxcd/kustomize-controller": "kustomize-controller",
    "github.com/fluxcd/helm-controller": "helm-controller",
    "github.com/fluxcd/notification-controller": "notification-controller",
    "github.com/fluxcd/image-reflector-controller": "image-reflector-controller",
    "github.com/fluxcd/image-automation-controller": "image-automation-controller",
    "github.com/fluxcd/source-watcher": "source-watcher",
    "github.com/controlplaneio-fluxcd/flux-operator": "flux-operator",
}
#: Packages that are no Flux component in a cluster: the CLI, API and library modules, other
#: Go modules and other ecosystems, as osv.dev's Go export and the GitHub database hold them.
OTHER_PACKAGES = [
    ("Go", "github.com/fluxcd/flux2"), ("Go", "github.com/fluxcd/flux2/v2"),
    ("Go", "github.com/fluxcd/source-controller/api"), ("Go", "github.com/fluxcd/pkg/git"),
    ("Go", "github.com/fluxcd/pkg/oci"), ("Go", "golang.org/x/net"),
    ("Go", "golang.org/x/crypto"), ("Go", "github.com/go-git/go-git/v5"),
    ("Go", "helm.sh/helm/v3"), ("Go", "sigs.k8s.io/kustomize/api"),
    ("npm", "flux-ui"), ("PyPI", "fluxcd"),
]
_GHSA_ALPHABET = "23456789cfghjmpqrvwx"
_SEVERITIES = ["LOW", "MODERATE", "HIGH", "CRITICAL", None]
_TEXTS = ["", "\n\nSee the upstream advisory for the details.",
          "\n\n### Workarounds\n\nNone. Upgrade.\n\n| a | b |\n|---|---|\n| ü | ✓ |",
          "\n\n" + "Line of the impact section. " * 40]


@dataclasses.dataclass(frozen=True)
class OsvFeed:
    #: (path in the repository, content), in the order a repository lists them.
    files: list[tuple[str, bytes]]
    #: Lower-case id -> the components the generator gave it (its bulletin's components).
    bulletins: dict[str, list[str]]
    #: Ids with no Flux component: skipped, no bulletin.
    skipped: set[str]
    #: Ids with an older copy elsewhere in the feed: the newest must win.
    superseded: set[str]
    #: Lower-case id -> the component of the newest copy's first Flux package, and its range
    #: as the bulletin must say it.
    first_range: dict[str, tuple[str, dict[str, str]]]


def _ghsa(rng: random.Random, taken: set[str]) -> str:
    while True:
        found = "GHSA-" + "-".join("".join(rng.choice(_GHSA_ALPHABET) for _ in range(4))
                                   for _ in range(3))
        if found not in taken:
            taken.add(found)
            return found


def _version(rng: random.Random, floor: tuple[int, int, int] = (0, 0, 0)
             ) -> tuple[int, int, int]:
    major = rng.choice([0, 0, 1, 1, 2]) if floor == (0, 0, 0) else floor[0]
    minor = rng.randrange(0, 40)
    patch = rng.randrange(0, 12)
    found = (major, minor, patch)
    return found if found > floor else (floor[0], floor[1] + 1 + rng.randrange(5), patch)


def _text(version: tuple[int, int, int]) -> str:
    return ".".join(map(str, version))


def _events(rng: random.Random) -> tuple[list[dict[str, str]], dict[str, str]]:
    """OSV events and the range the bulletin must have (tags with a v)."""
    introduced = None if rng.random() < 0.4 else _version(rng)
    end = _version(rng, introduced or (0, 0, 0))
    kind = "fixed" if rng.random() < 0.85 else "last_affected"
    events = [{"introduced": _text(introduced) if introduced else "0"}, {kind: _text(end)}]
    rng.shuffle(events)  # OSV orders them by version, not by position
    expected = {} if introduced is None else {"introduced": f"v{_text(introduced)}"}
    expected["fixed" if kind == "fixed" else "lastAffected"] = f"v{_text(end)}"
    return events, expected


def _advisory(rng: random.Random, template: dict[str, Any], index: int, advisory_id: str
              ) -> tuple[dict[str, Any], tuple[str, dict[str, str]] | None]:
    """A new advisory from a real one, and its first Flux package's component and range."""
    document = copy.deepcopy(template)
    year, month = rng.randrange(2020, 2027), rng.randrange(1, 13)
    document["id"] = advisory_id
    document["aliases"] = [f"CVE-{year}-{10000 + index}"] + (
        [f"CVE-{year}-{60000 + index}"] if rng.random() < 0.1 else [])
    if rng.random() < 0.1:
        document["aliases"] = []  # a GHSA without a CVE
    document["published"] = f"{year}-{month:02d}-{rng.randrange(1, 28):02d}T10:00:00Z"
    document["modified"] = f"{year}-{month:02d}-28T{rng.randrange(0, 24):02d}:00:00Z"
    document["summary"] = f"{document['summary']} ({advisory_id})"
    document["details"] = document.get("details", "") + rng.choice(_TEXTS)
    severity = rng.choice(_SEVERITIES)
    specific = document.setdefault("database_specific", {})
    if severity is None:
        specific.pop("severity", None)
    else:
        specific["severity"] = severity
    document["affected"] = []
    first: tuple[str, dict[str, str]] | None = None
    for _ in range(rng.choice([1, 1, 1, 2])):
        events, expected = _events(rng)
        if rng.random() < 0.3:
            module = rng.choice(list(FLUX_MODULES))
            package = {"ecosystem": "Go", "name": module}
            first = first or (FLUX_MODULES[module], expected)
        else:
            ecosystem, name = rng.choice(OTHER_PACKAGES)
            package = {"ecosystem": ecosystem, "name": name}
        document["affected"].append({"package": package,
                                     "ranges": [{"type": "ECOSYSTEM", "events": events}]})
    return document, first


def osv_feed(count: int = 1200, seed: int = 7, prefix: str = "advisories") -> OsvFeed:
    """``count`` advisories made from the seven real ones: new GHSA ids and CVE aliases, one
    or two affected packages (Flux components, the CLI, other modules and ecosystems), varied
    ranges, severities, texts and dates, in the advisory database's layout
    (``<prefix>/github-reviewed/<year>/<month>/<id>/<id>.json``), and an older copy of some
    under ``<prefix>/unreviewed/`` that the newest must supersede."""
    rng = random.Random(seed)
    templates = [json.loads(p.read_text()) for p in sorted(ADVISORIES.glob("*.json"))]
    taken: set[str] = set()
    feed = OsvFeed([], {}, set(), set(), {})
    for index in range(count):
        advisory_id = _ghsa(rng, taken)
        document, first = _advisory(rng, rng.choice(templates), index, advisory_id)
        year, month = document["modified"][:4], document["modified"][5:7]
        if rng.random() < 0.03:
            older = copy.deepcopy(document)
            older["modified"] = f"{int(year) - 1}-01-01T00:00:00Z"
            older["summary"] = "an older copy that the newest supersedes"
            older["affected"] = [{"package": {"ecosystem": "Go",
                                              "name": "github.com/fluxcd/source-controller"},
                                  "ranges": [{"type": "ECOSYSTEM",
                                              "events": [{"introduced": "0"},
                                                         {"fixed": "0.0.1"}]}]}]
            feed.files.append((f"{prefix}/unreviewed/{advisory_id}.json",
                               json.dumps(older, indent=2).encode()))
            feed.superseded.add(advisory_id.lower())
        feed.files.append((f"{prefix}/github-reviewed/{year}/{month}/{advisory_id}/"
                           f"{advisory_id}.json",
                           json.dumps(document, indent=2, ensure_ascii=False).encode()))
        if first is None:
            feed.skipped.add(advisory_id)
        else:
            feed.bulletins[advisory_id.lower()] = sorted(
                {FLUX_MODULES[a["package"]["name"]] for a in document["affected"]
                 if a["package"]["name"] in FLUX_MODULES and a["package"]["ecosystem"] == "Go"})
            feed.first_range[advisory_id.lower()] = first
    return feed


# --- the distribution repository ------------------------------------------------------------

_CONTROLLERS = ["source-controller", "kustomize-controller", "helm-controller",
                "notification-controller", "image-reflector-controller",
                "image-automation-controller"]
_VARIANTS = {"upstream-alpine": "ghcr.io/fluxcd",
             "enterprise-alpine": "ghcr.io/controlplaneio-fluxcd/alpine",
             "enterprise-distroless": "ghcr.io/controlplaneio-fluxcd/distroless",
             "enterprise-distroless-fips": "ghcr.io/controlplaneio-fluxcd/distroless-fips"}
_ADDONS = ["dex", "mcp", "mcp-stdio", "web", "tofu", "terraform", "kyverno", "cert-manager"]
_WORDS = ["flux", "controller", "release", "digest", "image", "variant", "distroless", "fips",
          "alpine", "kustomize", "helm", "source", "notification", "reconcile", "cluster",
          "tenant", "upgrade", "sbom", "provenance", "signature", "cosign", "attestation",
          "policy", "support", "enterprise"]


def _digest(rng: random.Random) -> str:
    return "sha256:" + hashlib.sha256(rng.randbytes(16)).hexdigest()


def _images_yaml(rng: random.Random, registry: str, names: list[str], tag: str) -> str:
    return "images:\n" + "".join(
        f"  - name: {registry}/{name}\n    newTag: {tag}\n    digest: {_digest(rng)}\n"
        for name in names)


def _prose(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words))


def distribution_snapshot(root: pathlib.Path, seed: int = 11, files: int = 3000,
                          assets_kib: int = 3840) -> dict[str, int]:
    """A work tree in the layout of controlplaneio-fluxcd/distribution: the real
    ``images/`` (VERSION, v2.7.5, v2.8.8, v2.9.4) plus generated older releases (v2.0-v2.6,
    tags ``v0.<minor>.<patch>`` that no real release uses), add-on images, OpenVEX documents,
    release notes, docs and site pages, and the site's scripts (``assets_kib`` of random bytes
    in base64, which compress little, as minified scripts do). About ``files`` files in all;
    returns the count per top directory."""
    rng = random.Random(seed)
    shutil.copytree(fixtures.UPSTREAM / "images", root / "images")
    written = {"images": sum(1 for p in (root / "images").rglob("*") if p.is_file())}

    def write(name: str, data: str | bytes) -> None:
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            target.write_bytes(data)
        else:
            target.write_text(data)
        kind = name.split("/", 1)[0]
        written[kind] = written.get(kind, 0) + 1

    for minor in range(0, 7):
        for patch in range(0, rng.randrange(3, 8)):
            for variant, registry in _VARIANTS.items():
                write(f"images/v2.{minor}.{patch}/{variant}.yaml",
                      _images_yaml(rng, registry, _CONTROLLERS, f"v0.{minor}.{patch}"))
    for addon in _ADDONS:
        for minor in range(rng.randrange(4, 12)):
            version = f"v0.{minor}.{rng.randrange(0, 4)}"
            write(f"addons/{addon}/images/{version}/enterprise-distroless.yaml",
                  _images_yaml(rng, "ghcr.io/controlplaneio-fluxcd/distroless", [addon],
                               version))
            write(f"addons/{addon}/charts/{version[1:]}/enterprise.yaml",
                  f"# {addon} {version}\n" + _prose(rng, 60) + "\n")
    for minor in range(0, 10):
        statements = [{"vulnerability": {"name": f"CVE-2025-{rng.randrange(10000, 99999)}"},
                       "products": [{"@id": f"pkg:oci/{c}"} for c in _CONTROLLERS[:3]],
                       "status": "not_affected",
                       "justification": "vulnerable_code_not_in_execute_path"}
                      for _ in range(rng.randrange(0, 30))]
        write(f"vex/v2.{minor}.json", json.dumps({
            "@context": "https://openvex.dev/ns/v0.2.0", "@id": f"vex-v2.{minor}",
            "author": "ControlPlane", "timestamp": "2026-08-14T00:00:00Z", "version": 1,
            "statements": statements}, indent=2))
        write(f"releases/release-v2.{minor}.trivyignore",
              "".join(f"CVE-2025-{rng.randrange(10000, 99999)}\n" for _ in range(20)))
    # source-controller leaves images (*.png, *.jpg...) out of artifacts: the site's bulk that
    # it packs is its minified scripts, which compress little.
    for index in range(max(1, assets_kib // 32)):
        write(f"assets/javascripts/bundle.{index:03d}.min.js",
              "!function(){var s='" + base64.b64encode(rng.randbytes(32 * 1024)).decode()
              + "';}();\n")
    text_files = max(0, files - sum(written.values()))
    for index in range(text_files):
        section = rng.choice(["distribution", "guides", "operator", "mcp", "addons"])
        body = f"<html><body><h1>{section} {index}</h1><p>{_prose(rng, 200)}</p></body></html>"
        if index % 3:
            write(f"docs/{section}/page-{index:04d}.md",
                  f"# {section} {index}\n\n{_prose(rng, 220)}\n")
        else:
            write(f"{section}/page-{index:04d}/index.html", body)
    write("README.md", "# ControlPlane Enterprise for Flux CD\n")
    return written


def tarball(root: pathlib.Path) -> bytes:
    """``root`` packed as source-controller packs a repository: a tar.gz of its files."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            archive.add(path, arcname=str(path.relative_to(root)), recursive=False)
    return buffer.getvalue()


def files_tarball(files: list[tuple[str, bytes]], extra: dict[str, bytes] | None = None
                  ) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in [*files, *(extra or {}).items()]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_files(root: pathlib.Path, files: list[tuple[str, bytes]]) -> None:
    for name, data in files:
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


