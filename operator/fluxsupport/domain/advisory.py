"""Public advisories in the OSV format (the GitHub Advisory Database) as SecurityBulletin specs.

Pure: the caller reads the files and passes the OSV schema's validator in; :func:`read_feed`
validates, picks the newest copy of each advisory and maps it to a bulletin, for the
``bulletin import --from osv`` command and the operator's advisory feed alike.

Go modules map to Flux components through an explicit table, not by guessing from the path:
``github.com/fluxcd/flux2`` is the CLI, which never runs in the cluster, and API sub-modules
(``.../source-controller/api``) have versions of their own that say nothing about the
controller's image. Go module versions (``1.2.5``) become image tags (``v1.2.5``): Flux tags its
images with the module's git tag.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import pydantic
import semver

from fluxsupport import constants
from fluxsupport.domain import artifact, bulletin, remediation

#: Go module -> the Flux component (Deployment and image name) it builds. Only controllers
#: that run in a cluster; everything else in an advisory is left out of the bulletin.
MODULE_COMPONENTS: Mapping[str, str] = {
    "github.com/fluxcd/source-controller": "source-controller",
    "github.com/fluxcd/kustomize-controller": "kustomize-controller",
    "github.com/fluxcd/helm-controller": "helm-controller",
    "github.com/fluxcd/notification-controller": "notification-controller",
    "github.com/fluxcd/image-reflector-controller": "image-reflector-controller",
    "github.com/fluxcd/image-automation-controller": "image-automation-controller",
    "github.com/fluxcd/source-watcher": "source-watcher",
    "github.com/controlplaneio-fluxcd/flux-operator": "flux-operator",
}

#: GitHub's database_specific.severity -> the bulletin's severity.
_SEVERITIES = {"LOW": "Low", "MODERATE": "Medium", "MEDIUM": "Medium", "HIGH": "High",
               "CRITICAL": "Critical"}
#: Without a GitHub severity (other OSV sources): treat as High rather than hide it as Low.
DEFAULT_SEVERITY = "High"
_MAX_TITLE, _MAX_SUMMARY, _MAX_CVE_SUMMARY = 512, 16384, 4096
#: A Kubernetes object name: a DNS-1123 subdomain.
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_MAX_NAME = 253
#: What the advisory feed and ``bulletin import --from osv`` read. An advisory of the GitHub
#: database is a few KB; validating a megabyte of affected packages against the OSV schema
#: takes seconds of CPU, so one file is bounded well above the real ones, not at a megabyte.
LIMITS = artifact.Limits(file=256 * 1024)
#: Schema errors of one document looked at to name the first.
MAX_SCHEMA_ERRORS = 100


class AdvisoryError(ValueError):
    """The advisory cannot become a bulletin (a version that is not semver, for example)."""


@dataclasses.dataclass(frozen=True)
class Converted:
    name: str
    #: The bulletin's spec, or None when no affected package is a Flux component.
    spec: dict[str, Any] | None
    skipped_packages: tuple[str, ...]


def image_tag(go_version: str) -> str:
    """``1.2.5`` -> ``v1.2.5``; refuses what is not semver, as Go module versions are."""
    text = go_version.removeprefix("v")
    if not semver.Version.is_valid(text):
        raise AdvisoryError(f"version {go_version!r} is not a semantic version")
    return f"v{text}"


def _ranges(events: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """OSV events (introduced/fixed/last_affected) as intervals, in the order OSV evaluates
    them: sorted by version, each introduced opens an interval that the next fixed or
    last_affected closes. ``introduced: "0"`` means from the first version: left out."""
    keyed = []
    for event in events:
        for kind in ("introduced", "fixed", "last_affected"):
            if kind in event:
                version = event[kind]
                key = (semver.Version(0) if version == "0"
                       else semver.Version.parse(image_tag(version)[1:]))
                keyed.append((key, kind, version))
    keyed.sort(key=lambda item: (item[0], item[1] != "introduced"))
    intervals: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for _key, kind, version in keyed:
        if kind == "introduced":
            if current is None:
                current = {} if version == "0" else {"introduced": image_tag(version)}
        elif current is not None:
            current["fixed" if kind == "fixed" else "lastAffected"] = image_tag(version)
            intervals.append(current)
            current = None
    if current is not None:
        intervals.append(current)
    return intervals


def bulletin_name(advisory_id: str) -> str:
    """The id in lower case, if that is a valid name for a Kubernetes object (a DNS-1123
    subdomain); refused otherwise rather than changed, so that an id such as
    ``GHSA-x/../../clusters/prod/kustomization`` names no file or object but its own.
    :func:`read_feed` refuses a second id with the same name (``GHSA-ABC``, ``ghsa-abc``)."""
    name = advisory_id.lower()
    # ASCII first: "K" (the Kelvin sign) is "k" in lower case.
    if not advisory_id.isascii() or len(name) > _MAX_NAME or not _NAME.fullmatch(name):
        raise AdvisoryError(
            f"advisory id {advisory_id!r} cannot name a bulletin: in lower case it must be a "
            "Kubernetes object name (ASCII letters, digits, '-' and '.', starting and ending "
            f"with a letter or digit, at most {_MAX_NAME} characters)")
    return name


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def to_bulletin(advisory: Mapping[str, Any]) -> Converted:
    """The SecurityBulletin spec of one OSV advisory (already valid against the OSV schema).

    Deterministic (no clock): the same advisory gives the same bulletin, so importing a feed
    again changes nothing, and a modified advisory changes exactly its bulletin.
    """
    advisory_id = str(advisory["id"])
    affected: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    for entry in advisory.get("affected") or []:
        package = entry.get("package") or {}
        module = package.get("name", "")
        component = MODULE_COMPONENTS.get(module) if package.get("ecosystem") == "Go" else None
        if component is None:
            skipped.append(f"{package.get('ecosystem', '?')}:{module}")
            continue
        target = affected.setdefault(component, {"component": component, "package": module,
                                                 "ranges": []})
        for version_range in entry.get("ranges") or []:
            if version_range.get("type") in ("SEMVER", "ECOSYSTEM"):
                target["ranges"] += _ranges(version_range.get("events") or [])
    affected = {c: a for c, a in affected.items() if a["ranges"]}
    if not affected:
        return Converted(advisory_id.lower(), None, tuple(skipped))
    name = bulletin_name(advisory_id)
    components = sorted(affected)
    cves = [alias for alias in advisory.get("aliases") or [] if alias.startswith("CVE-")]
    severity = _SEVERITIES.get(str((advisory.get("database_specific") or {}).get(
        "severity", "")).upper(), DEFAULT_SEVERITY)
    title = (advisory.get("summary") or "").strip() or advisory_id
    vulnerability: dict[str, Any] = {"severity": severity, "components": components}
    if advisory.get("summary"):
        vulnerability["summary"] = _cut(advisory["summary"], _MAX_CVE_SUMMARY)
    spec: dict[str, Any] = {
        "title": _cut(title, _MAX_TITLE),
        **({"summary": _cut(advisory["details"], _MAX_SUMMARY)} if advisory.get("details")
           else {}),
        "publishedAt": advisory.get("published") or advisory["modified"],
        "severity": severity,
        # OpenVEX statements name CVEs, so the CVE ids are the keys; the advisory id only
        # when the advisory has no CVE.
        "vulnerabilities": [{"id": cve, **vulnerability} for cve in cves or [advisory_id]],
        "affectedVersions": [affected[c] for c in components],
        "advisory": {"id": advisory_id, "modified": advisory["modified"],
                     "url": _url(advisory)},
    }
    if advisory.get("withdrawn"):
        spec["withdrawnAt"] = advisory["withdrawn"]
    remediation.record_osv_facts(spec, advisory)
    return Converted(name, spec, tuple(skipped))


def _url(advisory: Mapping[str, Any]) -> str:
    advisory_id = str(advisory["id"])
    if advisory_id.startswith("GHSA-"):
        return f"https://github.com/advisories/{advisory_id}"
    return f"https://osv.dev/vulnerability/{advisory_id}"


# --- a feed: many files ---------------------------------------------------------------------

class SchemaError(Protocol):
    """What a jsonschema validation error offers (jsonschema stays the caller's import)."""

    message: str

    @property
    def absolute_path(self) -> Sequence[str | int]: ...


class Validator(Protocol):
    def iter_errors(self, instance: Any) -> Iterable[SchemaError]: ...


@dataclasses.dataclass(frozen=True)
class Invalid:
    """A file that gives no bulletin, and why (the path is the caller's name for it)."""

    path: str
    reason: str


@dataclasses.dataclass(frozen=True)
class Imported:
    path: str
    advisory_id: str
    converted: Converted

    def manifest(self, labels: Mapping[str, str] | None = None,
                 annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The SecurityBulletin; only for an advisory with a Flux component."""
        assert self.converted.spec is not None
        metadata: dict[str, Any] = {"name": self.converted.name}
        if labels:
            metadata["labels"] = dict(labels)
        if annotations:
            metadata["annotations"] = dict(annotations)
        return {"apiVersion": constants.API_VERSION, "kind": constants.BULLETIN_KIND,
                "metadata": metadata, "spec": self.converted.spec}


@dataclasses.dataclass(frozen=True)
class Feed:
    #: One per advisory id, sorted by id: the newest copy when a feed holds several.
    advisories: tuple[Imported, ...]
    #: Files that are not JSON, not OSV, or whose bulletin would be invalid; the reading
    #: order, then the id order.
    invalid: tuple[Invalid, ...]
    #: The files read, valid or not.
    files: int = 0

    @property
    def bulletins(self) -> list[Imported]:
        return [a for a in self.advisories if a.converted.spec is not None]

    @property
    def skipped(self) -> list[Imported]:
        """Advisories without a Flux component (the flux2 CLI, other Go modules)."""
        return [a for a in self.advisories if a.converted.spec is None]


def _where(error: SchemaError) -> str:
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}"
                    for p in error.absolute_path).lstrip(".")
    return field or "(root)"


def _first_error(validator: Validator, instance: Any) -> SchemaError | None:
    # The error nearest the root first; indexes in numeric order, before names. Among the
    # first few only: a file of a million wrong items would otherwise hold a million errors.
    first = itertools.islice(validator.iter_errors(instance), MAX_SCHEMA_ERRORS)
    errors = sorted(first, key=lambda e: [(0, p, "") if isinstance(p, int) else (1, 0, str(p))
                                          for p in e.absolute_path])
    return errors[0] if errors else None


def _modified(document: Mapping[str, Any]) -> datetime.datetime:
    moment = datetime.datetime.fromisoformat(str(document["modified"]).replace("Z", "+00:00"))
    # A time without offset is UTC (OSV requires one): never compare naive with aware.
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def read_feed(files: Iterable[tuple[str, bytes | artifact.TooLarge]], osv_schema: Validator,
              bulletin_schema: Validator | None = None) -> Feed:
    """Every advisory of ``files`` (name, content) as a bulletin.

    A file that is not JSON, not valid against ``osv_schema``, names a version that is not
    semver, or gives a bulletin that ``bulletin_schema`` (the CRD's) or the operator's model
    refuses, is reported in ``Feed.invalid`` and the others go on; so is a file the reader
    left out for its size (:class:`artifact.TooLarge`). Of two copies of one id the later
    ``modified`` wins, the later file on a tie. Deterministic: the same files give the same
    bulletins, so a feed read again changes nothing.

    ``files`` is consumed one file at a time and no document is kept, only its bulletin:
    what a feed holds in memory is its bulletins, not its files.
    """
    invalid: list[Invalid] = []
    newest: dict[str, tuple[str, Converted | str, datetime.datetime]] = {}
    count = 0
    for path, content in files:
        count += 1
        if isinstance(content, artifact.TooLarge):
            invalid.append(Invalid(path, f"not read: {content}"))
            continue
        try:
            document = json.loads(content)
        except ValueError as error:
            invalid.append(Invalid(path, f"not valid JSON: {error}"))
            continue
        except RecursionError:
            # A hostile file of deeply nested brackets must not stop the feed.
            invalid.append(Invalid(path, "not valid JSON: nested too deeply"))
            continue
        refused = _first_error(osv_schema, document)
        if refused is not None:
            invalid.append(Invalid(path, f"not an OSV advisory: {_where(refused)}: "
                                         f"{refused.message}"))
            continue
        try:
            modified = _modified(document)
        except ValueError:
            invalid.append(Invalid(path, f"not an OSV advisory: modified: "
                                         f"{document['modified']!r} is not an RFC 3339 time"))
            continue
        held = newest.get(document["id"])
        if held is None or modified >= held[2]:
            newest[document["id"]] = (path, _converted(document), modified)
    advisories = []
    named: dict[str, str] = {}
    for advisory_id in sorted(newest):
        path, converted, _ = newest[advisory_id]
        if isinstance(converted, str):
            invalid.append(Invalid(path, converted))
            continue
        imported = Imported(path, advisory_id, converted)
        if converted.spec is not None:
            problem = _bulletin_problem(imported, bulletin_schema)
            if problem is None and converted.name in named:
                problem = (f"metadata.name: {converted.name} is already the name of the "
                           f"bulletin of advisory {named[converted.name]}")
            if problem is not None:
                invalid.append(Invalid(path, f"the bulletin would be invalid: {problem}"))
                continue
            named[converted.name] = advisory_id
        advisories.append(imported)
    return Feed(tuple(advisories), tuple(invalid), count)


def _converted(document: Mapping[str, Any]) -> Converted | str:
    """The bulletin of a valid OSV document, or why there is none."""
    try:
        return to_bulletin(document)
    except ValueError as error:  # AdvisoryError, or a range semver cannot order
        return str(error)


def _bulletin_problem(imported: Imported, schema: Validator | None) -> str | None:
    if schema is not None:
        error = _first_error(schema, imported.manifest())
        if error is not None:
            return f"{_where(error)}: {error.message}"
    try:
        bulletin.BulletinSpec.model_validate(imported.converted.spec)
    except pydantic.ValidationError as error:
        item = error.errors()[0]
        return f"spec.{'.'.join(map(str, item['loc']))}: {item['msg']}"
    return None
