"""Foundation: the real control plane serves our CRDs and the operator marks objects Ready."""

from __future__ import annotations

import json
import pathlib

import kubernetes
import pytest
import yaml

from tests import harness

EXAMPLES = harness.ROOT / "examples"


def test_server_reports_a_real_release(kubeconfig: pathlib.Path) -> None:
    version = json.loads(harness.kubectl(kubeconfig, "version", "-o", "json").stdout)
    server = version["serverVersion"]["gitVersion"]
    print(f"server version: {server}")
    assert server.startswith("v1.")
    assert not server.startswith("v0.0.0")


def test_supportcase_reaches_ready(api: harness.Api, operator: harness.OperatorProcess,
                                   namespace: str) -> None:
    case = yaml.safe_load((EXAMPLES / "supportcase.yaml").read_text())
    case["metadata"]["namespace"] = namespace
    api.create_case(namespace, case)
    name = case["metadata"]["name"]

    def ready() -> dict[str, object] | None:
        obj = api.get_case(namespace, name)
        cond = harness.condition(obj, "Ready")
        return obj if cond and cond["status"] == "True" else None

    obj = harness.wait_for(ready, what="SupportCase Ready=True")
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    harness.kubectl(api.kubeconfig, "wait", "--for=condition=Ready", "--timeout=10s",
                    "-n", namespace, f"supportcases/{name}")


def test_securitybulletin_reaches_ready(api: harness.Api,
                                        operator: harness.OperatorProcess) -> None:
    bulletin = yaml.safe_load((EXAMPLES / "securitybulletin.yaml").read_text())
    bulletin["metadata"]["name"] = "foundation-ready"
    api.create_bulletin(bulletin)
    try:
        harness.kubectl(api.kubeconfig, "wait", "--for=condition=Ready", "--timeout=30s",
                        "securitybulletins/foundation-ready")
        obj = api.get_bulletin("foundation-ready")
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    finally:
        api.delete_bulletin("foundation-ready")


def test_invalid_supportcase_is_rejected_naming_the_field(api: harness.Api,
                                                          namespace: str) -> None:
    case = yaml.safe_load((EXAMPLES / "supportcase.yaml").read_text())
    case["metadata"] = {"name": "bad-severity", "namespace": namespace}
    case["spec"]["severity"] = "Critical"
    with pytest.raises(kubernetes.client.ApiException) as raised:
        api.create_case(namespace, case)
    assert raised.value.status == 422
    assert "spec.severity" in raised.value.body
    assert "Unsupported value" in raised.value.body


def test_invalid_bulletin_digest_is_rejected_naming_the_field(api: harness.Api) -> None:
    bulletin = yaml.safe_load((EXAMPLES / "securitybulletin.yaml").read_text())
    bulletin["metadata"]["name"] = "bad-digest"
    bulletin["spec"]["fixes"][0]["images"][0]["digest"] = "sha256:abc"
    result = harness.kubectl(api.kubeconfig, "apply", "-f", "-", input_text=yaml.safe_dump(
        bulletin), check=False)
    assert result.returncode != 0
    assert "spec.fixes[0].images[0].digest" in result.stderr


def test_metrics_and_liveness_are_served(operator: harness.OperatorProcess) -> None:
    assert "fluxsupport_build_info" in operator.metrics()
