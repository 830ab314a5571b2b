"""Inventory: components, images and digests from Deployments, Pods, FluxReport, FluxInstance."""

from __future__ import annotations

import copy

import yaml

from fluxsupport.domain import inventory
from tests import fixtures


def test_fixture_deployments_give_seven_components_with_digests() -> None:
    found = inventory.build_inventory(fixtures.flux_deployments())
    assert [c.component for c in found] == sorted([
        "flux-operator", "helm-controller", "image-automation-controller",
        "image-reflector-controller", "kustomize-controller", "notification-controller",
        "source-controller"])
    source = next(c for c in found if c.component == "source-controller")
    expected = fixtures.release_images("v2.9.4", "enterprise-distroless")["source-controller"]
    assert source.repository == expected["name"]
    assert source.tag == expected["newTag"]
    assert source.digests == (expected["digest"],)
    assert source.flux_version == "v2.9.4"
    operator = next(c for c in found if c.component == "flux-operator")
    assert operator.digests == ()  # published without a digest; Pods would supply it


def test_digest_from_pods_when_the_image_is_not_pinned() -> None:
    deployment = copy.deepcopy(fixtures.flux_deployments()[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = \
        "ghcr.io/controlplaneio-fluxcd/distroless/source-controller:v1.9.4"
    digest = "sha256:" + "a" * 64
    pod = {"metadata": {"name": "source-controller-abc", "namespace": "flux-system",
                        "labels": {"app": "source-controller"}},
           "spec": {"containers": [{"name": "manager",
                                    "image": "ghcr.io/x/source-controller:v1.9.4"}]},
           "status": {"containerStatuses": [{"name": "manager",
                                             "imageID": f"docker-pullable://ghcr.io/x@{digest}"}]}}
    running = inventory.from_deployment(deployment, [pod])
    assert running is not None
    assert running.digests == (digest,)


def test_rollout_reports_both_digests() -> None:
    deployment = copy.deepcopy(fixtures.flux_deployments()[0])
    old = "sha256:" + "b" * 64
    pod = {"metadata": {"namespace": "flux-system", "labels": {"app": "source-controller"}},
           "spec": {"containers": [{"name": "manager", "image": f"repo/source-controller@{old}"}]}}
    running = inventory.from_deployment(deployment, [pod])
    assert running is not None
    assert len(running.digests) == 2
    assert old in running.digests


def test_component_falls_back_to_the_deployment_name_and_first_container() -> None:
    deployment = {"metadata": {"name": "helm-controller", "namespace": "flux-system",
                               "labels": {"app.kubernetes.io/part-of": "flux"}},
                  "spec": {"template": {"spec": {"containers": [
                      {"name": "sidecar", "image": "ghcr.io/fluxcd/helm-controller:v1.6.3"}]}}}}
    running = inventory.from_deployment(deployment)
    assert running is not None
    assert (running.component, running.tag, running.digests) == ("helm-controller", "v1.6.3", ())


def test_non_flux_deployments_are_ignored() -> None:
    other = {"metadata": {"name": "nginx", "namespace": "flux-system", "labels": {}},
             "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}
    assert inventory.build_inventory([other]) == []


def test_flux_report_and_instance_fill_in_components() -> None:
    report = yaml.safe_load((fixtures.UPSTREAM / "fluxreport-example.yaml").read_text())
    found = inventory.build_inventory([], flux_reports=[report])
    assert {c.component for c in found} >= {"source-controller", "helm-controller"}
    assert all(c.source == "FluxReport" and len(c.digests) == 1 for c in found)
    instance = {"metadata": {"name": "flux", "namespace": "flux-system"},
                "status": {"lastAppliedRevision": "v2.7.5@sha256:" + "c" * 64,
                           "components": [{"name": "source-controller",
                                           "repository": "ghcr.io/fluxcd/source-controller",
                                           "tag": "v1.7.4", "digest": "sha256:" + "d" * 64}]}}
    from_instance = inventory.build_inventory([], flux_instances=[instance])
    assert from_instance[0].flux_version == "v2.7.5"
    assert from_instance[0].digests == ("sha256:" + "d" * 64,)


def test_image_parsing_handles_ports_tags_and_digests() -> None:
    digest = "sha256:" + "e" * 64
    assert inventory.parse_image(f"registry:5000/flux/sc:v1.2.3@{digest}") == \
        inventory.ImageRef("registry:5000/flux/sc", "v1.2.3", digest)
    assert inventory.parse_image("registry:5000/flux/sc") == \
        inventory.ImageRef("registry:5000/flux/sc", None, None)
    assert inventory.parse_image("sc@sha256:short").digest is None
