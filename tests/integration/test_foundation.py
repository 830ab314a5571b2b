"""Foundation: the real control plane serves our CRDs and the operator marks objects Ready."""

from __future__ import annotations

import gzip
import json
import pathlib
import re
import urllib.request

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
    text = operator.metrics()
    assert re.search(r'^fluxsupport_build_info\{version="[^"]+"\} 1\.0$', text, re.MULTILINE)
    # The operator-health series, with the queue depth of both controllers.
    assert re.search(r'^fluxsupport_queue_depth\{kind="SupportCase"\} \d', text, re.MULTILINE)
    assert re.search(r'^fluxsupport_queue_depth\{kind="SecurityBulletin"\} \d', text,
                     re.MULTILINE)
    # prometheus-client's handler negotiates the format: OpenMetrics when asked for it, gzip
    # when accepted (the hand-written handler answered the text format to everything).
    request = urllib.request.Request(operator.metrics_url, headers={
        "Accept": "application/openmetrics-text; version=1.0.0", "Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        assert response.headers["Content-Encoding"] == "gzip"
        body = gzip.decompress(response.read()).decode()
    assert body.endswith("# EOF\n")
    assert "fluxsupport_build_info" in body

    health = operator.healthz()
    assert health["status"] == "ok"
    assert health["peering"] == "standalone"
    assert health["identity"]
    assert isinstance(health["uptime_s"], float | int)
    assert health["uptime_s"] >= 0
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.port}/readyz",
                                timeout=5) as response:
        assert json.loads(response.read()) == {"ready": True}
