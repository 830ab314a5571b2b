"""Which Flux components run, with which images and digests: pure functions over API objects.

Shared by the SecurityBulletin verdicts and the SupportCase diagnostics. The inputs are the
plain dicts the API returns (Deployments, Pods, FluxReports, FluxInstances); nothing here
talks to the cluster.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any

FLUX_PART_OF = "flux"
FLUX_OPERATOR = "flux-operator"
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")


@dataclasses.dataclass(frozen=True)
class ImageRef:
    repository: str
    tag: str | None
    digest: str | None

    def __str__(self) -> str:
        text = self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_image(reference: str) -> ImageRef:
    """Split ``registry/path/name[:tag][@sha256:hex]``; a registry port is not a tag."""
    reference = reference.strip()
    name, _, digest = reference.partition("@")
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    tag = None
    if colon > last_slash:
        name, tag = name[:colon], name[colon + 1:] or None
    valid_digest = digest if _DIGEST.fullmatch(digest or "") else None
    return ImageRef(name, tag, valid_digest)


def digest_of_image_id(image_id: str) -> str | None:
    """The ``sha256:`` digest in a Pod's imageID, whatever the runtime's prefix."""
    found = _DIGEST.findall(image_id or "")
    return found[-1] if found else None


@dataclasses.dataclass(frozen=True)
class RunningComponent:
    namespace: str
    name: str
    component: str
    image: str
    repository: str
    tag: str | None
    #: Every digest this component runs; two during a rollout.
    digests: tuple[str, ...]
    ready: bool | None
    flux_version: str | None
    source: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.component)


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def is_flux_deployment(deployment: Mapping[str, Any]) -> bool:
    labels = _labels(deployment)
    return (labels.get("app.kubernetes.io/part-of") == FLUX_PART_OF
            or labels.get("app.kubernetes.io/name") == FLUX_OPERATOR)


def _main_container(containers: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    for container in containers:
        if container.get("name") == "manager":
            return container
    return containers[0] if containers else None


def _selector_matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def _pod_digests(pod: Mapping[str, Any], container_name: str | None) -> set[str]:
    """A Pod's digest: from its own image reference if pinned, else from its imageID."""
    spec_containers = (pod.get("spec") or {}).get("containers") or []
    container = next((c for c in spec_containers if c.get("name") == container_name),
                     _main_container(spec_containers))
    if container is not None:
        pinned = parse_image(str(container.get("image", ""))).digest
        if pinned:
            return {pinned}
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    status = next((s for s in statuses if s.get("name") == container_name),
                  statuses[0] if statuses else None)
    if status is None:
        return set()
    digest = digest_of_image_id(str(status.get("imageID", "")))
    return {digest} if digest else set()


def _deployment_ready(deployment: Mapping[str, Any]) -> bool | None:
    status = deployment.get("status")
    if not status:
        return None
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Available":
            return bool(condition.get("status") == "True")
    wanted = (deployment.get("spec") or {}).get("replicas", 1)
    return bool(status.get("readyReplicas", 0) >= wanted)


def from_deployment(deployment: Mapping[str, Any],
                    pods: Iterable[Mapping[str, Any]] = ()) -> RunningComponent | None:
    metadata = deployment.get("metadata") or {}
    labels = _labels(deployment)
    spec = deployment.get("spec") or {}
    template = spec.get("template") or {}
    container = _main_container((template.get("spec") or {}).get("containers") or [])
    if container is None:
        return None
    image = parse_image(str(container.get("image", "")))
    digests: set[str] = {image.digest} if image.digest else set()
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    for pod in pods:
        if (pod.get("metadata") or {}).get("namespace") == metadata.get("namespace") \
                and _selector_matches(selector, _labels(pod)):
            digests |= _pod_digests(pod, container.get("name"))
    component = (labels.get("app.kubernetes.io/component")
                 or (FLUX_OPERATOR if labels.get("app.kubernetes.io/name") == FLUX_OPERATOR
                     else metadata.get("name", "")))
    return RunningComponent(
        namespace=metadata.get("namespace", ""), name=metadata.get("name", ""),
        component=component, image=str(container.get("image", "")),
        repository=image.repository, tag=image.tag, digests=tuple(sorted(digests)),
        ready=_deployment_ready(deployment), flux_version=labels.get("app.kubernetes.io/version"),
        source="Deployment",
    )


def from_flux_report(report: Mapping[str, Any]) -> list[RunningComponent]:
    namespace = (report.get("metadata") or {}).get("namespace", "")
    spec = report.get("spec") or {}
    version = (spec.get("distribution") or {}).get("version")
    found = []
    for item in spec.get("components") or []:
        image = parse_image(str(item.get("image", "")))
        found.append(RunningComponent(
            namespace=namespace, name=str(item.get("name", "")), component=str(item.get("name")),
            image=str(item.get("image", "")), repository=image.repository, tag=image.tag,
            digests=(image.digest,) if image.digest else (), ready=item.get("ready"),
            flux_version=version, source="FluxReport"))
    return found


def from_flux_instance(instance: Mapping[str, Any]) -> list[RunningComponent]:
    namespace = (instance.get("metadata") or {}).get("namespace", "")
    status = instance.get("status") or {}
    revision = str(status.get("lastAppliedRevision") or "")
    version = revision.partition("@")[0] or (
        ((instance.get("spec") or {}).get("distribution") or {}).get("version"))
    found = []
    for item in status.get("components") or []:
        repository, tag = str(item.get("repository", "")), item.get("tag")
        digest = item.get("digest") if _DIGEST.fullmatch(str(item.get("digest", ""))) else None
        image = str(ImageRef(repository, tag, digest))
        found.append(RunningComponent(
            namespace=namespace, name=str(item.get("name", "")), component=str(item.get("name")),
            image=image, repository=repository, tag=tag, digests=(digest,) if digest else (),
            ready=None, flux_version=version, source="FluxInstance"))
    return found


def build_inventory(deployments: Iterable[Mapping[str, Any]],
                    pods: Iterable[Mapping[str, Any]] = (),
                    flux_reports: Iterable[Mapping[str, Any]] = (),
                    flux_instances: Iterable[Mapping[str, Any]] = ()) -> list[RunningComponent]:
    """Deployments first; FluxReport and FluxInstance fill in components not found, and
    the Flux version where the Deployments carry no version label."""
    pod_list = list(pods)
    by_key: dict[tuple[str, str], RunningComponent] = {}
    for deployment in deployments:
        if not is_flux_deployment(deployment):
            continue
        running = from_deployment(deployment, pod_list)
        if running is not None:
            by_key[running.key] = running
    reported = [c for report in flux_reports for c in from_flux_report(report)]
    reported += [c for instance in flux_instances for c in from_flux_instance(instance)]
    versions = {c.namespace: c.flux_version for c in reported if c.flux_version}
    for candidate in reported:
        by_key.setdefault(candidate.key, candidate)
    return sorted(
        (c if c.flux_version or c.namespace not in versions
         else dataclasses.replace(c, flux_version=versions[c.namespace])
         for c in by_key.values()),
        key=lambda c: c.key)


def flux_version(components: Iterable[RunningComponent]) -> str | None:
    versions = sorted({c.flux_version for c in components if c.flux_version})
    return versions[-1] if versions else None
