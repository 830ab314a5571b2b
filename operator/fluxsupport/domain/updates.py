"""How far the running Flux is behind the distribution's releases: pure, over text and an inventory.

The release data has the distribution's own layout (controlplaneio-fluxcd/distribution):
``images/VERSION`` names the latest release and ``images/<version>/<variant>.yaml`` holds a
kustomize ``images:`` list (name, newTag, digest) per variant. The caller reads the files; this
module parses them and compares them with the components of
:func:`fluxsupport.domain.inventory.build_inventory`.

Versions are compared by the ``semver`` library. A tag is rebuilt many times (CVE patching), so
a newer build of the same tag is told by its digest, never by the tag.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import pydantic
import semver
import yaml
from pydantic.alias_generators import to_camel

from fluxsupport.domain import artifact
from fluxsupport.domain.inventory import FLUX_OPERATOR, RunningComponent

#: The 2026 support policy: the three most recent minors receive backports.
DEFAULT_SUPPORTED_MINORS = 3
#: What the release data may hold. The distribution's files are about 2 KB with seven images
#: each, 28 KB in all; PyYAML builds a node per scalar, so a megabyte of YAML costs a hundred
#: times that in memory, and the bounds keep a hostile file far below the Pod's limit.
MAX_FILE_BYTES = 64 * 1024
MAX_IMAGES = 256
ARCHIVE_LIMITS = artifact.Limits(file=MAX_FILE_BYTES, read=8 * 1024 * 1024)


class ReleaseDataError(ValueError):
    """The release data is not in the distribution's layout, or the inventory does not match it."""

    #: The condition reason that says so.
    reason = "InvalidReleaseData"


class ReleaseDataTooLarge(ReleaseDataError):
    """The artifact or a file of it goes past what the operator reads."""

    reason = "ArtifactTooLarge"


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel,
                                       populate_by_name=True)


class ImageEntry(_Model):
    """One entry of a kustomize ``images:`` list as the distribution writes it."""

    model_config = pydantic.ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    name: str = pydantic.Field(min_length=1)
    new_tag: str = pydantic.Field(alias="newTag", min_length=1)
    digest: str = pydantic.Field(pattern=r"^sha256:[a-f0-9]{64}$")

    @property
    def component(self) -> str:
        return self.name.rsplit("/", 1)[-1]


class Release(_Model):
    version: str
    variant: str
    images: tuple[ImageEntry, ...]

    @property
    def semver(self) -> semver.Version:
        return parse_version(self.version)

    def entry(self, component: str) -> ImageEntry | None:
        return next((e for e in self.images if e.component == component), None)


class ReleaseData(_Model):
    latest: str
    releases: tuple[Release, ...]

    def variants(self) -> list[str]:
        return sorted({r.variant for r in self.releases})

    def of_variant(self, variant: str) -> list[Release]:
        """Newest first."""
        return sorted((r for r in self.releases if r.variant == variant),
                      key=lambda r: r.semver, reverse=True)


class ComponentUpdate(_Model):
    name: str
    repository: str
    #: The running image tag; None for an image without one.
    running: str | None
    digests: tuple[str, ...]
    #: The component's tag in the newest patch release of the running minor.
    newest_patch: str | None
    #: The component's tag in the latest release.
    latest: str | None
    #: The running tag's digest in the newest release that lists that tag.
    newest_digest: str | None
    #: That digest differs from the running one (a rebuild); None when either is unknown.
    newer_build: bool | None


class UpdateReport(_Model):
    running: str
    variant: str
    latest: str
    #: The newest patch release of the running minor in the release data.
    newest_patch: str | None
    minors_behind: int
    supported: bool
    supported_minors: tuple[str, ...]
    #: Running the latest release, and no component has a newer build of its tag.
    up_to_date: bool
    components: tuple[ComponentUpdate, ...]


def parse_version(text: str) -> semver.Version:
    """A Flux version or image tag (``v2.9.4``) as a semantic version; ValueError if not one."""
    return semver.Version.parse(text.strip().removeprefix("v"))


def parse_release_data(version_text: str, files: Mapping[tuple[str, str], str]) -> ReleaseData:
    """From ``images/VERSION``'s text and ``{(version, variant): the text of
    images/<version>/<variant>.yaml}``."""
    latest = version_text.strip()
    _checked_version(latest, "images/VERSION")
    releases = []
    for (version, variant), text in sorted(files.items()):
        where = f"images/{version}/{variant}.yaml"
        _checked_version(version, f"images/{version}")
        if len(text) > MAX_FILE_BYTES:
            raise ReleaseDataTooLarge(f"{where}: {len(text)} characters, more than the "
                                      f"{artifact.size_text(MAX_FILE_BYTES)} read from one "
                                      "file")
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ReleaseDataError(f"{where}: not valid YAML: {error}") from error
        entries = document.get("images") if isinstance(document, dict) else None
        if not isinstance(entries, list) or not entries:
            raise ReleaseDataError(f"{where}: expected a kustomize `images:` list")
        if len(entries) > MAX_IMAGES:
            raise ReleaseDataTooLarge(f"{where}: {len(entries)} images, more than "
                                      f"{MAX_IMAGES}")
        images = []
        for index, entry in enumerate(entries):
            try:
                images.append(ImageEntry.model_validate(entry))
            except pydantic.ValidationError as error:
                item = error.errors()[0]
                field = "".join(f".{part}" for part in item["loc"])
                raise ReleaseDataError(f"{where}: images[{index}]{field}: {item['msg']}"
                                       ) from error
        releases.append(Release(version=version, variant=variant, images=tuple(images)))
    if not releases:
        raise ReleaseDataError("no images/<version>/<variant>.yaml file")
    if not any(r.version == latest for r in releases):
        raise ReleaseDataError(f"images/VERSION names {latest} but there is no images/{latest}/")
    return ReleaseData(latest=latest, releases=tuple(releases))


def _checked_version(text: str, where: str) -> semver.Version:
    try:
        return parse_version(text)
    except ValueError as error:
        raise ReleaseDataError(f"{where}: {text!r} is not a semantic version") from error


def _distribution_components(components: Iterable[RunningComponent], data: ReleaseData
                             ) -> list[RunningComponent]:
    """The components the release data lists: not the Flux Operator, whose version is its own."""
    known = {e.component for r in data.releases for e in r.images}
    found = [c for c in components if c.component != FLUX_OPERATOR and c.component in known]
    if not found:
        raise ReleaseDataError("the inventory has none of the components the release data lists "
                               f"({', '.join(sorted(known))})")
    namespaces = sorted({c.namespace for c in found})
    if len(namespaces) > 1:
        raise ReleaseDataError(f"Flux runs in several namespaces ({', '.join(namespaces)}); "
                               "give the objects of one")
    return found


def running_variant(components: Sequence[RunningComponent], data: ReleaseData) -> str:
    """The variant whose image names the components run; by digest for a mirrored registry."""
    for matches in (lambda c, e: e.name == c.repository,
                    lambda c, e: e.digest in c.digests):
        variants = {r.variant for r in data.releases for c in components for e in r.images
                    if e.component == c.component and matches(c, e)}
        if len(variants) == 1:
            return variants.pop()
        if len(variants) > 1:
            raise ReleaseDataError(f"the images match several variants: {sorted(variants)}")
    raise ReleaseDataError("the running images match no variant of the release data "
                           f"({', '.join(data.variants())}): "
                           f"{', '.join(sorted(c.image for c in components))}")


def running_version(components: Sequence[RunningComponent], releases: Sequence[Release]) -> str:
    """From the ``app.kubernetes.io/version`` label the distribution sets (the oldest during an
    upgrade), else the newest release of the variant whose tags the components all run."""
    labelled = []
    for component in components:
        if component.flux_version:
            try:
                labelled.append((parse_version(component.flux_version), component.flux_version))
            except ValueError:
                continue
    if labelled:
        return min(labelled)[1]
    for release in releases:  # newest first
        entries = [release.entry(c.component) for c in components]
        if all(e is not None and e.new_tag == c.tag
               for c, e in zip(components, entries, strict=True)):
            return release.version
    raise ReleaseDataError("cannot tell the running Flux version: no app.kubernetes.io/version "
                           "label, and no release of the variant has the running tags")


def _minor(version: semver.Version) -> tuple[int, int]:
    return (version.major, version.minor)


def _minors_behind(running: semver.Version, latest: semver.Version,
                   releases: Sequence[Release]) -> int:
    if _minor(running) >= _minor(latest):
        return 0
    if running.major == latest.major:
        return latest.minor - running.minor
    # Across a major version the minors cannot be counted from the numbers: count the release
    # data's, at least one.
    return max(1, len({_minor(r.semver) for r in releases
                       if _minor(running) < _minor(r.semver) <= _minor(latest)}))


def _supported_minors(latest: semver.Version, releases: Sequence[Release], count: int
                      ) -> tuple[str, ...]:
    minors = {_minor(r.semver) for r in releases if _minor(r.semver) <= _minor(latest)}
    minors |= {(latest.major, m) for m in range(max(0, latest.minor - count + 1), latest.minor + 1)}
    return tuple(f"v{major}.{minor}" for major, minor in sorted(minors, reverse=True)[:count])


def check(components: Iterable[RunningComponent], data: ReleaseData,
          supported_minors: int = DEFAULT_SUPPORTED_MINORS) -> UpdateReport:
    """Compare the running distribution with the release data.

    Supported means the running minor is among the ``supported_minors`` most recent minors
    (counted back from the latest release), whether or not a patch is available.
    """
    if supported_minors < 1:
        raise ReleaseDataError("the number of supported minors must be at least 1")
    running = _distribution_components(components, data)
    variant = running_variant(running, data)
    releases = data.of_variant(variant)
    version = running_version(running, releases)
    current, latest = parse_version(version), parse_version(data.latest)
    latest_release = next((r for r in releases if r.version == data.latest), None)
    if latest_release is None:
        raise ReleaseDataError(f"the latest release {data.latest} has no {variant}.yaml")
    patch_release = next((r for r in releases if _minor(r.semver) == _minor(current)), None)
    updates = []
    for component in sorted(running, key=lambda c: c.component):
        # The newest release listing the running tag holds that tag's newest build.
        newest = next((e for r in releases if (e := r.entry(component.component)) is not None
                       and e.new_tag == component.tag), None)
        newest_digest = newest.digest if newest else None
        patch_entry = patch_release.entry(component.component) if patch_release else None
        latest_entry = latest_release.entry(component.component)
        updates.append(ComponentUpdate(
            name=component.component, repository=component.repository, running=component.tag,
            digests=component.digests,
            newest_patch=patch_entry.new_tag if patch_entry else None,
            latest=latest_entry.new_tag if latest_entry else None,
            newest_digest=newest_digest,
            newer_build=(newest_digest not in component.digests
                         if newest_digest and component.digests else None)))
    behind = _minors_behind(current, latest, releases)
    return UpdateReport(
        running=version, variant=variant, latest=data.latest,
        newest_patch=patch_release.version if patch_release else None,
        minors_behind=behind, supported=behind < supported_minors,
        supported_minors=_supported_minors(latest, releases, supported_minors),
        up_to_date=current >= latest and not any(u.newer_build for u in updates),
        components=tuple(updates))


#: A ConfigMap key holding images/<version>/<variant>.yaml: ``v2.9.4-enterprise-distroless.yaml``.
#: ConfigMap keys cannot hold a slash; a version is cut at its patch number (no pre-releases).
_CONFIGMAP_KEY = re.compile(r"^(v?\d+\.\d+\.\d+)-([A-Za-z0-9][-A-Za-z0-9_.]*)\.yaml$")


def parse_configmap_data(data: Mapping[str, str]) -> ReleaseData:
    """The release data from a ConfigMap's ``data``: key ``VERSION`` and one key
    ``<version>-<variant>.yaml`` per file; other keys are refused so that a typo is seen."""
    if "VERSION" not in data:
        raise ReleaseDataError("no key VERSION (the latest release, images/VERSION)")
    files = {}
    for key, text in data.items():
        if key == "VERSION":
            continue
        match = _CONFIGMAP_KEY.match(key)
        if match is None:
            raise ReleaseDataError(f"key {key!r} is not VERSION or <version>-<variant>.yaml "
                                   "(v2.9.4-enterprise-distroless.yaml)")
        files[(match.group(1), match.group(2))] = text
    return parse_release_data(data["VERSION"], files)


def verify_digest(content: artifact.Content, digest: str) -> None:
    """``digest`` is ``<algorithm>:<hex>`` as source-controller writes status.artifact.digest."""
    try:
        artifact.verify_digest(content, digest)
    except artifact.ArtifactError as error:
        raise ReleaseDataError(str(error)) from error


def _release_file(name: str) -> bool:
    parts = name.split("/")
    return parts == ["VERSION"] or (len(parts) == 2 and parts[1].endswith(".yaml"))


def parse_archive(content: artifact.Content, path: str = "images") -> ReleaseData:
    """The release data from a Flux source artifact (a tar.gz): ``<path>/VERSION`` and
    ``<path>/<version>/<variant>.yaml``. Only regular files are read, never extracted, within
    :data:`ARCHIVE_LIMITS`. CPU work on hostile input: run it off the event loop."""
    texts = {}
    try:
        for name, data in artifact.iter_files(content, path, _release_file, ARCHIVE_LIMITS):
            if isinstance(data, artifact.TooLarge):
                raise ReleaseDataTooLarge(f"{artifact.prefix_of(path)}{name}: {data}")
            texts[name] = data.decode()
    except artifact.ArtifactTooLarge as error:
        raise ReleaseDataTooLarge(str(error)) from error
    except artifact.ArtifactError as error:
        raise ReleaseDataError(str(error)) from error
    except UnicodeDecodeError as error:
        raise ReleaseDataError(f"the artifact holds a file that is not UTF-8: {error}"
                               ) from error
    version_text = texts.pop("VERSION", None)
    if version_text is None:
        raise ReleaseDataError(f"the artifact has no {artifact.prefix_of(path)}VERSION")
    files = {(version, variant.removesuffix(".yaml")): text for name, text in texts.items()
             for version, variant in [name.split("/")]}
    return parse_release_data(version_text, files)
