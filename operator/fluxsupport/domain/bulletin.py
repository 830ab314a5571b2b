"""Verdicts of a SecurityBulletin against the running Flux components: pure functions.

Rules (docs/concepts.md explains them with examples):

* Digests decide, never tags or registries: a tag is rebuilt many times and mirrors change
  the registry, but a digest names one build.
* A running digest listed as a fix for the component is Fixed. So is a digest that a *later*
  bulletin lists for the same component and version: rebuilds are cumulative. A bulletin under
  embargo does not count as a later one until its embargo ends: the verdict, reason and Events
  of a public bulletin would otherwise tell its readers that the embargoed one exists, its
  name, and that the running build carries its fix. The verdict is then what it would be
  without the embargoed bulletin.
* Otherwise the version line (major.minor) decides. Below the fixed patch of its line: Vulnerable.
  The fixed version itself with an unlisted digest: a build from before the fix, Vulnerable.
  A newer patch in a fixed line, or a line newer than every fixed line: Fixed. An older line
  with no fix: Vulnerable.
* No digest at all: Unknown.
* Version ranges (``affectedVersions``, from public OSV advisories) decide for a component that
  has them, unless the bulletin lists fix digests for the component and the image is an
  enterprise build (its repository has a variant path: alpine, distroless, distroless-fips):
  the distribution rebuilds a tag with a backported fix, so for those builds the digests
  decide as above. A listed digest is Fixed before anything else. In a range: Vulnerable,
  VersionInAffectedRange; at or above the fixed version (or past lastAffected): Fixed,
  VersionFixed; before every range: NotAffected, VersionNotAffected. Ranges need no digest.
  Versions are compared as semantic versions by the ``semver`` library.
* OpenVEX: the latest matching statement per CVE and running image wins, whatever its
  product form; earlier statements no longer count. Only then is it decided what that
  statement changes. ``not_affected`` makes the CVE NotAffected. ``fixed`` changes the
  verdict only when it names the running digest (it turns Unknown into Fixed): distributions
  publish version-less ``fixed`` statements to quiet scanners on current images, and such a
  statement must never hide a digest the bulletin shows is pre-fix. ``affected`` for the
  running digest, or version-less when the bulletin lists no fix for the component, makes the
  CVE Vulnerable (AffectedNoFixYet when there is no fix); a version-less ``affected`` leaves
  the digest verdict of a bulletin with fixes, but never lets a CVE stay NotAffected.
  ``under_investigation`` changes nothing. So no statement history can make a verdict less
  severe than the latest statement alone does.
* A component is Vulnerable if any CVE is, NotAffected if every CVE is suppressed (or, by
  range, not affected), Unknown if any CVE is, and otherwise Fixed.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime
import re
from collections.abc import Iterable, Sequence
from typing import Literal

import pydantic
import semver

from fluxsupport.domain import vex
from fluxsupport.domain.inventory import RunningComponent

Verdict = Literal["Fixed", "Vulnerable", "NotAffected", "Unknown"]
#: OpenVEX documents, plain or indexed (the operator indexes each once per document text).
Documents = Sequence[vex.Document | vex.IndexedDocument]
_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)")
_SEVERITY_ORDER: dict[str, int] = {"Vulnerable": 0, "Unknown": 1, "Fixed": 2, "NotAffected": 3}


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(populate_by_name=True, extra="ignore", frozen=True)


class Vulnerability(_Model):
    id: str
    severity: str | None = None
    summary: str | None = None
    components: tuple[str, ...]
    #: The vendor's remediation clock (domain/remediation.py): the CVSS base score and vector,
    #: and when each framework's clock starts.
    cvss_score: float | None = pydantic.Field(None, alias="cvssScore")
    cvss_vector: str | None = pydantic.Field(None, alias="cvssVector")
    identified_at: datetime.datetime | None = pydantic.Field(None, alias="identifiedAt")
    patch_available_at: datetime.datetime | None = pydantic.Field(None, alias="patchAvailableAt")
    remediation_framework: str | None = pydantic.Field(None, alias="remediationFramework")
    remediation_due_at: datetime.datetime | None = pydantic.Field(None, alias="remediationDueAt")


class FixImage(_Model):
    repository: str
    digest: str


class Fix(_Model):
    component: str
    version: str
    images: tuple[FixImage, ...]


class VersionRange(_Model):
    """One interval of affected versions: from introduced (absent: the first version) up to,
    not including, fixed, or up to and including lastAffected (neither: no fix yet)."""

    introduced: str | None = None
    fixed: str | None = None
    last_affected: str | None = pydantic.Field(None, alias="lastAffected")

    def contains(self, version: semver.Version) -> bool:
        if self.introduced is not None and version < parse_version(self.introduced):
            return False
        if self.fixed is not None:
            return version < parse_version(self.fixed)
        if self.last_affected is not None:
            return version <= parse_version(self.last_affected)
        return True

    def fixed_at_or_below(self, version: semver.Version) -> bool:
        if self.fixed is not None:
            return version >= parse_version(self.fixed)
        return self.last_affected is not None and version > parse_version(self.last_affected)


class AffectedVersions(_Model):
    component: str
    package: str | None = None
    ranges: tuple[VersionRange, ...]


class Advisory(_Model):
    id: str
    modified: datetime.datetime
    url: str | None = None


class ConfigMapKeyRef(_Model):
    name: str
    key: str


class VexRef(_Model):
    config_map_key_ref: ConfigMapKeyRef = pydantic.Field(alias="configMapKeyRef")


class BulletinSpec(_Model):
    title: str
    summary: str | None = None
    published_at: datetime.datetime = pydantic.Field(alias="publishedAt")
    severity: str
    embargo_until: datetime.datetime | None = pydantic.Field(None, alias="embargoUntil")
    patch_by: datetime.datetime | None = pydantic.Field(None, alias="patchBy")
    vulnerabilities: tuple[Vulnerability, ...]
    fixes: tuple[Fix, ...] = ()
    affected_versions: tuple[AffectedVersions, ...] = pydantic.Field(
        (), alias="affectedVersions")
    advisory: Advisory | None = None
    vex: tuple[VexRef, ...] = ()
    #: When the public advisory was withdrawn (OSV ``withdrawn``); None while it stands.
    withdrawn_at: datetime.datetime | None = pydantic.Field(None, alias="withdrawnAt")

    @pydantic.field_validator("affected_versions")
    @classmethod
    def _semver_ranges(cls, value: tuple[AffectedVersions, ...]
                       ) -> tuple[AffectedVersions, ...]:
        for affected in value:
            for version_range in affected.ranges:
                for version in (version_range.introduced, version_range.fixed,
                                version_range.last_affected):
                    if version is not None:
                        parse_version(version)
        return value

    def ranges_for(self, component: str) -> tuple[VersionRange, ...]:
        return tuple(r for a in self.affected_versions if a.component == component
                     for r in a.ranges)

    def embargoed(self, now: datetime.datetime) -> bool:
        return self.embargo_until is not None and now < self.embargo_until

    def secrets(self) -> list[str]:
        """Every string that must not leak while the bulletin is under embargo."""
        found = [self.title, *(v.id for v in self.vulnerabilities)]
        if self.advisory is not None:
            found += [self.advisory.id, *([self.advisory.url] if self.advisory.url else [])]
        found += [text for text in (self.summary, *(v.summary for v in self.vulnerabilities))
                  if text]
        return found


@dataclasses.dataclass(frozen=True)
class Bulletin:
    name: str
    spec: BulletinSpec


def parse_version(tag: str) -> semver.Version:
    """An image tag (v1.2.5) or Go module version (1.2.5) as a semantic version; ValueError
    when it is not one."""
    return semver.Version.parse(tag.removeprefix("v"))


def _range_verdict(ranges: Sequence[VersionRange], tag: str | None) -> tuple[Verdict, str]:
    try:
        version = parse_version(tag or "")
    except ValueError:
        return "Unknown", "UnparseableVersion"
    if any(r.contains(version) for r in ranges):
        return "Vulnerable", "VersionInAffectedRange"
    if any(r.fixed_at_or_below(version) for r in ranges):
        return "Fixed", "VersionFixed"
    return "NotAffected", "VersionNotAffected"


def _digest_listed(bulletin: Bulletin, component: str, version: tuple[int, int, int] | None,
                   digest: str, later: Later) -> tuple[Verdict, str] | None:
    if any(image.digest == digest for fix in bulletin.spec.fixes if fix.component == component
           for image in fix.images):
        return "Fixed", "DigestListed"
    newer = later.rebuilt_in(component, version, digest)
    if newer is not None:
        return "Fixed", f"RebuiltIn:{newer.name}"
    return None


def version_tuple(tag: str | None) -> tuple[int, int, int] | None:
    match = _VERSION.match(tag or "")
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


FixKey = tuple[str, tuple[int, int, int] | None, str]


class FixIndex:
    """The fix digests of many bulletins by (component, version, digest), in the order of the
    bulletins: the rebuild rule asks whether any later bulletin lists the running digest, and
    with a thousand bulletins a scan of every one per digest adds up. It holds what
    ``evaluate`` would otherwise scan, and is updated one bulletin at a time."""

    def __init__(self, bulletins: Iterable[Bulletin] = ()) -> None:
        self._listed: dict[FixKey, list[tuple[int, Bulletin]]] = {}
        #: name -> (position, keys listed)
        self._held: dict[str, tuple[int, frozenset[FixKey]]] = {}
        for position, bulletin in enumerate(bulletins):
            self.add(bulletin, position)

    def add(self, bulletin: Bulletin, position: int) -> None:
        """Add ``bulletin``, or replace the one of that name; ``position`` orders it among the
        others (the caller's order of bulletins, as a list of them would have it)."""
        self.remove(bulletin.name)
        keys = frozenset((fix.component, version_tuple(fix.version), image.digest)
                         for fix in bulletin.spec.fixes for image in fix.images)
        for key in keys:
            bisect.insort(self._listed.setdefault(key, []), (position, bulletin),
                          key=lambda item: item[0])
        self._held[bulletin.name] = (position, keys)

    def remove(self, name: str) -> None:
        held = self._held.pop(name, None)
        for key in held[1] if held is not None else ():
            kept = [item for item in self._listed[key] if item[1].name != name]
            if kept:
                self._listed[key] = kept
            else:
                del self._listed[key]

    def listed(self, component: str, version: tuple[int, int, int] | None,
               digest: str) -> list[Bulletin]:
        return [bulletin for _, bulletin in self._listed.get((component, version, digest), ())]


@dataclasses.dataclass(frozen=True)
class Later:
    """The bulletins that count as later than ``after`` for the rebuild rule: published after
    it, under another name, and not under embargo at ``now``. Without ``after``, every
    bulletin of the index counts; without ``now`` (callers that pass only the bulletins that
    count), embargoes are not looked at."""

    index: FixIndex
    after: Bulletin | None = None
    now: datetime.datetime | None = None

    def rebuilt_in(self, component: str, version: tuple[int, int, int] | None,
                   digest: str) -> Bulletin | None:
        """The first later bulletin that lists ``digest`` for this component and version."""
        return next((newer for newer in self.index.listed(component, version, digest)
                     if self._counts(newer)), None)

    def _counts(self, newer: Bulletin) -> bool:
        if self.now is not None and newer.spec.embargoed(self.now):
            return False
        after = self.after
        return after is None or (newer.name != after.name
                                 and newer.spec.published_at > after.spec.published_at)


@dataclasses.dataclass(frozen=True)
class CveVerdict:
    id: str
    verdict: Verdict
    reason: str


@dataclasses.dataclass(frozen=True)
class Remediation:
    name: str
    new_tag: str
    digest: str

    def as_kustomize_image(self) -> dict[str, str]:
        return {"name": self.name, "newTag": self.new_tag, "digest": self.digest}


@dataclasses.dataclass(frozen=True)
class ComponentVerdict:
    component: RunningComponent
    verdict: Verdict
    reason: str
    message: str
    cves: tuple[CveVerdict, ...]
    remediation: Remediation | None


def _digest_verdict(bulletin: Bulletin, component: str, version: tuple[int, int, int] | None,
                    digest: str, later: Later) -> tuple[Verdict, str]:
    fixes = [fix for fix in bulletin.spec.fixes if fix.component == component]
    listed = _digest_listed(bulletin, component, version, digest, later)
    if listed is not None:
        return listed
    if version is None:
        return "Unknown", "UnparseableVersion"
    fixed_versions = [v for v in (version_tuple(fix.version) for fix in fixes) if v]
    if not fixed_versions:
        return "Unknown", "NoFixForComponent"
    same_line = [v for v in fixed_versions if v[:2] == version[:2]]
    if same_line:
        fixed = min(same_line)
        if version < fixed:
            return "Vulnerable", "VersionBelowFix"
        if version == fixed:
            return "Vulnerable", "DigestNotListed"
        return "Fixed", "NewerPatch"
    if all(version[:2] > v[:2] for v in fixed_versions):
        return "Fixed", "NewerLine"
    return "Vulnerable", "NoFixForLine"


def _apply_vex(verdict: Verdict, reason: str, documents: Documents, cve: str,
               component: RunningComponent, digest: str | None,
               no_fix: bool) -> tuple[Verdict, str]:
    """Let the latest OpenVEX statement about the running image change the verdict of one CVE.

    The latest statement is chosen first, among every statement that matches: a vendor that
    corrects a ``not_affected`` with a version-less ``affected`` has withdrawn the
    ``not_affected``, even where the version-less statement itself changes nothing.
    """
    if not documents:
        return verdict, reason
    image_name = component.repository.rsplit("/", 1)[-1] or component.component
    candidate = vex.image_purl(image_name, digest=digest,
                               repository_url=component.repository or None,
                               tag=component.tag)
    statement = vex.effective_statement(documents, cve, candidate)
    if statement is None:
        return verdict, reason
    if statement.status == "not_affected":
        why = statement.justification or (
            "impact_statement" if statement.impact_statement is not None else "unjustified")
        return "NotAffected", f"VexNotAffected:{why}"
    if statement.status == "fixed":
        if statement.digest_specific and verdict == "Unknown":
            return "Fixed", "VexFixed"
        return verdict, reason
    if statement.status == "affected":
        if no_fix:
            return "Vulnerable", "AffectedNoFixYet"
        if verdict != "Vulnerable" and (statement.digest_specific or verdict == "NotAffected"):
            return "Vulnerable", "VexAffected"
    return verdict, reason


def _worst(verdicts: Iterable[tuple[Verdict, str]]) -> tuple[Verdict, str]:
    return min(verdicts, key=lambda item: _SEVERITY_ORDER[item[0]])


def _aggregate(cves: Sequence[CveVerdict]) -> tuple[Verdict, str]:
    verdicts = [c.verdict for c in cves]
    if "Vulnerable" in verdicts:
        return "Vulnerable", next(c.reason for c in cves if c.verdict == "Vulnerable")
    if all(v == "NotAffected" for v in verdicts):
        by_version = [c.reason for c in cves if not c.reason.startswith("Vex")]
        return "NotAffected", by_version[0] if by_version else "AllSuppressedByVex"
    if "Unknown" in verdicts:
        return "Unknown", next(c.reason for c in cves if c.verdict == "Unknown")
    return "Fixed", next(c.reason for c in cves if c.verdict == "Fixed")


VARIANT_PATHS = ("distroless-fips", "distroless", "alpine")


def _variant(repository: str) -> str | None:
    segments = repository.split("/")
    return next((v for v in VARIANT_PATHS if v in segments), None)


def remediation_for(bulletin: Bulletin, component: RunningComponent) -> Remediation | None:
    """The fix to install, as a kustomize images entry that keeps the running registry
    (mirrors included) and variant."""
    fixes = [fix for fix in bulletin.spec.fixes if fix.component == component.component]
    running = version_tuple(component.tag)
    candidates = sorted(((version_tuple(f.version) or (0, 0, 0), f) for f in fixes),
                        key=lambda item: item[0])
    chosen = None
    if running is not None:
        chosen = next((f for v, f in candidates if v[:2] == running[:2]), None) or next(
            (f for v, f in candidates if v > running), None)
    if chosen is None and candidates:
        chosen = candidates[-1][1]
    if chosen is None:
        return None
    variant = _variant(component.repository)
    image = (next((i for i in chosen.images if i.repository == component.repository), None)
             or next((i for i in chosen.images if _variant(i.repository) == variant), None)
             or chosen.images[0])
    return Remediation(component.repository or image.repository, chosen.version, image.digest)


def evaluate_component(bulletin: Bulletin, component: RunningComponent,
                       later: Sequence[Bulletin] | Later = (),
                       documents: Documents = ()) -> ComponentVerdict | None:
    """The verdict of one running component, or None if no CVE of the bulletin concerns it.

    ``later``: the bulletins published after this one, or a Later built by ``evaluate``."""
    concerned = [v for v in bulletin.spec.vulnerabilities if component.component in v.components]
    if not concerned:
        return None
    if not isinstance(later, Later):
        later = Later(FixIndex(later))
    version = version_tuple(component.tag)
    has_fixes = any(fix.component == component.component for fix in bulletin.spec.fixes)
    ranges = bulletin.spec.ranges_for(component.component)
    # Enterprise builds with listed digests: the digests decide (a rebuilt tag carries a
    # backported fix without a new version); otherwise the ranges do.
    by_range = bool(ranges) and not (has_fixes and _variant(component.repository) is not None)
    no_fix = not has_fixes and not any(r.fixed or r.last_affected for r in ranges)
    cves = []
    for vulnerability in concerned:
        if by_range:
            outcomes = [_apply_vex(
                *(_digest_listed(bulletin, component.component, version, digest, later)
                  or _range_verdict(ranges, component.tag)), documents, vulnerability.id,
                component, digest, no_fix) for digest in component.digests]
            outcome = _worst(outcomes) if outcomes else _apply_vex(
                *_range_verdict(ranges, component.tag), documents, vulnerability.id,
                component, None, no_fix)
        elif not component.digests:
            outcome = _apply_vex("Unknown", "NoDigest", documents, vulnerability.id,
                                 component, None, no_fix)
        else:
            outcome = _worst(_apply_vex(*_digest_verdict(bulletin, component.component, version,
                                                         digest, later),
                                        documents, vulnerability.id, component, digest, no_fix)
                             for digest in component.digests)
        cves.append(CveVerdict(vulnerability.id, *outcome))
    verdict, reason = _aggregate(cves)
    remediation = remediation_for(bulletin, component) if verdict == "Vulnerable" else None
    message = _message(component, verdict, reason, remediation)
    if verdict == "Vulnerable" and remediation is None and (upgrade := _upgrade_to(
            ranges, component.tag)):
        message += f"; upgrade to {upgrade} or later"
    return ComponentVerdict(component, verdict, reason, message, tuple(cves), remediation)


def _upgrade_to(ranges: Sequence[VersionRange], tag: str | None) -> str | None:
    """The lowest fixed version above the running one, from the ranges that contain it."""
    try:
        version = parse_version(tag or "")
    except ValueError:
        return None
    fixed = [r.fixed for r in ranges if r.fixed and r.contains(version)]
    return min(fixed, key=parse_version) if fixed else None


def _message(component: RunningComponent, verdict: Verdict, reason: str,
             remediation: Remediation | None) -> str:
    digests = ", ".join(component.digests) or "no digest"
    text = f"{component.component} {component.tag or '(no tag)'} ({digests}): {verdict}, {reason}"
    if remediation is not None:
        text += (f"; install {remediation.name}:{remediation.new_tag}@{remediation.digest}")
    return text


def evaluate(bulletin: Bulletin, inventory: Iterable[RunningComponent],
             all_bulletins: Iterable[Bulletin] | FixIndex = (),
             documents: Documents = (), *, now: datetime.datetime) -> list[ComponentVerdict]:
    """The verdicts of every running component the bulletin concerns. ``all_bulletins`` (or
    their FixIndex, built once for many evaluations) may include ``bulletin`` itself; those
    under embargo at ``now`` do not count for the rebuild rule."""
    index = all_bulletins if isinstance(all_bulletins, FixIndex) else FixIndex(all_bulletins)
    later = Later(index, bulletin, now)
    verdicts = (evaluate_component(bulletin, component, later, documents)
                for component in inventory)
    return [v for v in verdicts if v is not None]


def concerned_components(spec: BulletinSpec) -> frozenset[str]:
    """The components whose running builds the verdicts of ``spec`` read."""
    return frozenset(name for v in spec.vulnerabilities for name in v.components)


