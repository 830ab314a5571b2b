"""The Helm chart (rendered offline with the project's helm), its dashboard, and deploy/flux/."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from typing import Any

import pytest
import yaml

from fluxsupport.devcluster import build
from fluxsupport.domain.policy import Channels, Policy, load_policy
from tests.tools.test_alerts import KNOWN_METRICS, RULES, metric_names, promtool

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "fluxsupport"
FLUX = ROOT / "deploy" / "flux"
NAMESPACE = "fluxsupport-system"
DASHBOARD = CHART / "dashboards" / "fluxsupport.json"

Doc = dict[str, Any]


@pytest.fixture(scope="module")
def helm() -> pathlib.Path:
    """The project's helm (built from hack/controlplane/helm once, then cached)."""
    return build.build_all(("helm",))["helm"]


def run_helm(helm: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120,
                          check=False)


def render(helm: pathlib.Path, *args: str, release: str = "fluxsupport") -> list[Doc]:
    result = run_helm(helm, "template", release, str(CHART), "--namespace", NAMESPACE, *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def only(docs: Iterable[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in docs if d["kind"] == kind
             and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


# --- single sources --------------------------------------------------------------------------

def test_chart_crds_are_byte_identical_to_the_repository_crds() -> None:
    source = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    shipped = sorted(p.name for p in (CHART / "crds").iterdir())
    assert shipped == source == ["fluxupdatechecks.yaml", "kopf-peering.yaml",
                                 "securitybulletins.yaml", "supportcases.yaml"]
    for name in source:
        assert (CHART / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), \
            f"charts/fluxsupport/crds/{name} differs from crds/{name}: run `make chart-sync`"
        assert not (CHART / "crds" / name).is_symlink()


def test_chart_rules_file_is_byte_identical_to_the_plain_rules_file() -> None:
    assert (CHART / "files" / RULES.name).read_bytes() == RULES.read_bytes(), \
        "charts/fluxsupport/files/fluxsupport.rules.yaml differs: run `make chart-sync`"


def test_chart_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    pyproject = (ROOT / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE)
    assert version is not None
    assert chart["appVersion"] == version.group(1)
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "fluxsupport"


# --- lint and render -------------------------------------------------------------------------

def test_helm_lint_strict_passes(helm: pathlib.Path) -> None:
    result = run_helm(helm, "lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_default_render_has_the_expected_objects_and_no_monitoring_objects(
        helm: pathlib.Path) -> None:
    docs = render(helm)
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    assert kinds == sorted([
        ("ServiceAccount", "fluxsupport"),
        ("ConfigMap", "fluxsupport-policy"),
        ("ConfigMap", "fluxsupport-dashboard"),
        ("ClusterRole", "fluxsupport"),
        ("ClusterRole", "fluxsupport-securitybulletins-reader"),
        ("ClusterRole", "fluxsupport-supportcases-view"),
        ("ClusterRole", "fluxsupport-supportcases-edit"),
        ("ClusterRole", "fluxsupport-fluxupdatechecks-view"),
        ("ClusterRoleBinding", "fluxsupport"),
        ("Role", "fluxsupport-configmaps"),
        ("RoleBinding", "fluxsupport-configmaps"),
        ("Role", "fluxsupport-flux-reader"),
        ("RoleBinding", "fluxsupport-flux-reader"),
        ("Service", "fluxsupport-metrics"),
        ("Deployment", "fluxsupport"),
    ])
    for doc in docs:
        if doc["kind"] not in {"ClusterRole", "ClusterRoleBinding"}:
            expected = "flux-system" if doc["metadata"]["name"].endswith("flux-reader") \
                else NAMESPACE
            assert doc["metadata"]["namespace"] == expected, doc["metadata"]


def assert_hardened(deployment: Doc) -> None:
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["serviceAccountName"] == "fluxsupport"
    [container] = pod["containers"]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["runAsNonRoot"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    resources = container["resources"]
    assert set(resources["requests"]) == {"cpu", "memory", "ephemeral-storage"}
    assert set(resources["limits"]) == {"cpu", "memory", "ephemeral-storage"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["ports"] == [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}]
    assert container["args"] == [
        "run", "--metrics-port", "8080", "--namespace", "$(POD_NAMESPACE)",
        "--policy", "/etc/fluxsupport/policy.yaml", "--flux-namespace", "flux-system"]
    env = {item["name"]: item for item in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["policy"] == {"name": "policy", "mountPath": "/etc/fluxsupport",
                                "readOnly": True}
    assert mounts["tmp"]["mountPath"] == "/tmp"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["policy"]["configMap"]["name"] == "fluxsupport-policy"
    assert "emptyDir" in volumes["tmp"]


@pytest.mark.parametrize("values", [
    pytest.param([], id="defaults"),
    pytest.param(["--set", "prometheusRule.enabled=true", "--set", "serviceMonitor.enabled=true"],
                 id="alerting-and-servicemonitor"),
])
def test_rendered_deployment_is_hardened(helm: pathlib.Path, values: list[str]) -> None:
    assert_hardened(only(render(helm, *values), "Deployment"))


def test_deployment_flags_exist_in_the_operator_cli(helm: pathlib.Path) -> None:
    docs = render(helm, "--set", "peering.enabled=true", "--set", "verbose=true")
    [container] = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    flags = {arg for arg in container["args"] if arg.startswith("--")}
    assert flags == {"--metrics-port", "--namespace", "--policy", "--flux-namespace",
                     "--peering", "--verbose"}
    cli = pathlib.Path(sys.executable).parent / "fluxsupport"
    shown = subprocess.run([str(cli), "run", "--help"], capture_output=True, text=True,
                           check=True, timeout=60, env={**os.environ, "COLUMNS": "200"}).stdout
    assert container["args"][0] == "run"
    for flag in flags:
        assert re.search(rf"{re.escape(flag)}\b(?!-)", shown), f"{flag} unknown to the CLI"


def test_service_selects_the_pods_and_exposes_the_metrics_port(helm: pathlib.Path) -> None:
    docs = render(helm)
    service = only(docs, "Service")
    pod_labels = only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8080,
                                         "targetPort": "metrics", "protocol": "TCP"}]


def test_servicemonitor_and_prometheusrule_render_the_plain_rules(helm: pathlib.Path) -> None:
    docs = render(helm, "--set", "prometheusRule.enabled=true",
                  "--set", "serviceMonitor.enabled=true")
    rule = only(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"] == yaml.safe_load(RULES.read_text())
    monitor = only(docs, "ServiceMonitor")
    service = only(docs, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= \
        service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    # Prometheus Operator takes the job name from this Service label: the job the rules select.
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "fluxsupport"


def test_job_name_is_a_value_used_by_the_rules_and_the_servicemonitor(
        helm: pathlib.Path, tmp_path: pathlib.Path) -> None:
    docs = render(helm, "--set", "prometheusRule.enabled=true", "--set",
                  "serviceMonitor.enabled=true", "--set", "metrics.jobName=prod-fluxsupport")
    spec = only(docs, "PrometheusRule")["spec"]
    plain = yaml.safe_load(RULES.read_text())
    text = json.dumps(spec)
    assert 'job=\\"fluxsupport\\"' not in text
    assert json.loads(text.replace('job=\\"prod-fluxsupport\\"', 'job=\\"fluxsupport\\"')) == plain
    monitor, service = only(docs, "ServiceMonitor"), only(docs, "Service")
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "prod-fluxsupport"
    # What the chart renders is a valid rules file for Prometheus too.
    rendered = tmp_path / "rendered.rules.yaml"
    rendered.write_text(yaml.safe_dump(spec))
    result = promtool("check", "rules", str(rendered))
    assert result.returncode == 0, result.stdout + result.stderr


# --- policy ----------------------------------------------------------------------------------

def rendered_policy(docs: list[Doc]) -> Policy:
    text = only(docs, "ConfigMap", "fluxsupport-policy")["data"]["policy.yaml"]
    return load_policy(text, source="policy.yaml")


def test_default_policy_values_are_the_operator_defaults(helm: pathlib.Path) -> None:
    assert rendered_policy(render(helm)) == Policy()


def test_every_policy_field_can_be_set_through_values(helm: pathlib.Path,
                                                      tmp_path: pathlib.Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"policy": {
        "timezone": "America/New_York", "holidays": "US", "closedDates": ["2026-12-24"],
        "businessHours": {"days": ["Mon", "Tue", "Wed", "Thu"], "start": "08:30", "end": "17:00"},
        "targets": {"Urgent": "1h30m", "High": "45s", "Medium": 7200, "Low": "2d"},
        "warningRatio": 0.5}}))
    docs = render(helm, "-f", str(values))
    policy = rendered_policy(docs)
    assert policy.timezone == "America/New_York"
    assert policy.holidays == "US"
    assert [str(day) for day in policy.closed_dates] == ["2026-12-24"]
    assert policy.business_hours.days == ("Mon", "Tue", "Wed", "Thu")
    assert (policy.business_hours.start, policy.business_hours.end) == ("08:30", "17:00")
    assert [policy.targets.for_level(level) for level in (1, 2, 3, 4)] == \
        [5400, 45, 7200, 172800]
    assert policy.warning_ratio == 0.5
    default = only(render(helm), "Deployment")["spec"]["template"]["metadata"]["annotations"]
    changed = only(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert default["checksum/policy"] != changed["checksum/policy"], "a policy change must roll"


def test_the_2026_preset_with_a_region_is_expressible(helm: pathlib.Path) -> None:
    policy = rendered_policy(render(helm, "--set", "policy.preset=support-policy-2026",
                                    "--set", "policy.region=APAC",
                                    "--set", "policy.resolutionTargets.Low=6d",
                                    "--set", "policy.complianceTarget=1"))
    assert policy == load_policy("preset: support-policy-2026\nregion: APAC\n"
                                 "resolutionTargets: {Low: 6d}\ncomplianceTarget: 1\n")
    assert policy.timezone == "Australia/Sydney"
    assert policy.resolution_targets.for_level(1) == 4 * 3600
    for args, message in (
            (["--set", "policy.preset=support-policy-2026"], "missing property 'region'"),
            (["--set", "policy.region=AMER"], "at '/policy/region'"),
            (["--set", "policy.preset=support-policy-2026", "--set", "policy.region=LATAM"],
             "at '/policy/region'")):
        result = run_helm(helm, "template", "fluxsupport", str(CHART), *args)
        assert result.returncode != 0, args
        assert message in result.stderr, result.stderr


def test_the_escalation_rca_remediation_and_add_on_sections_are_expressible(
        helm: pathlib.Path, tmp_path: pathlib.Path) -> None:
    values = tmp_path / "values.yaml"
    sections = {
        "escalation": {"notProgressingAfter": "8h",
                       "repeatedSeverity1": {"count": 3, "window": "14d", "scope": "namespace"},
                       "contacts": {"executiveSponsor": ["sponsor@example.com"]},
                       "commentOnTicket": False},
        "rootCauseAnalysis": {"levels": [1], "days": 5},
        "remediationFramework": "upstream-patch",
        "addOns": ["flux-operator-mcp"]}
    email = {"enabled": True, "host": "smtp.example.com", "from": "a@example.com",
             "to": "b@example.com"}
    values.write_text(yaml.safe_dump({"policy": {
        "preset": "support-policy-2026", "region": "EMEA", **sections,
        "channels": {"email": email, "fallback": {"levels": []}}}}))
    policy = rendered_policy(render(helm, "-f", str(values)))
    assert policy.escalation is not None
    assert policy.escalation.contacts.executive_sponsor == ("sponsor@example.com",)
    assert policy.escalation.repeated_severity1.scope == "namespace"
    assert policy.root_cause_analysis is not None
    assert policy.root_cause_analysis.days == 5
    assert policy.add_ons == ("flux-operator-mcp",)
    assert policy.remediation_framework == "upstream-patch"
    # The preset's sections stay unless the values turn them off.
    assert rendered_policy(render(helm, "--set", "policy.preset=support-policy-2026",
                                  "--set", "policy.region=EMEA")).escalation is not None
    for args, message in (
            (["--set", "policy.escalation.contacts.accountManager={am}"],
             "at '/policy/escalation/contacts/accountManager/0'"),
            (["--set", "policy.escalation.repeatedSeverity1.count=1"],
             "at '/policy/escalation/repeatedSeverity1/count'"),
            (["--set", "policy.rootCauseAnalysis.levels={5}"],
             "at '/policy/rootCauseAnalysis/levels/0'"),
            (["--set", "policy.addOns={Flux_MCP}"], "at '/policy/addOns/0'"),
            (["--set", "policy.remediationFramework=weekly"],
             "at '/policy/remediationFramework'")):
        result = run_helm(helm, "template", "fluxsupport", str(CHART), *args)
        assert result.returncode != 0, args
        assert message in result.stderr, result.stderr


def test_a_24x7_policy_without_holidays_is_expressible(helm: pathlib.Path) -> None:
    policy = rendered_policy(render(helm, "--set", "policy.businessHours.alwaysOpen=true",
                                    "--set", "policy.holidays="))
    assert policy.business_hours.always_open is True
    assert policy.holidays == ""


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "policy.warningRatio=2"], "at '/policy/warningRatio': exclusiveMaximum"),
    (["--set", "policy.warningRatio=0"], "at '/policy/warningRatio': exclusiveMinimum"),
    (["--set-string", "policy.warningRatio=0.5"], "at '/policy/warningRatio': got string"),
    (["--set", "policy.targets.Urgent=soon"], "at '/policy/targets/Urgent'"),
    (["--set", "policy.targets.Urgent=0s"], "at '/policy/targets/Urgent'"),
    (["--set", "policy.businessHours.days={Funday}"], "at '/policy/businessHours/days/0'"),
    (["--set", "policy.businessHours.start=9am"], "at '/policy/businessHours/start'"),
    (["--set", "policy.closedDates={24/12/2026}"], "at '/policy/closedDates/0'"),
    (["--set", "policy.colour=blue"], "additional properties 'colour' not allowed"),
    (["--set", "fluxNamespaces=null"], "missing property 'fluxNamespaces'"),
    (["--set", "image.repository="], "at '/image/repository'"),
    # A job name the API server would refuse as the Service's label value.
    (["--set", "metrics.jobName=my-ops/fluxsupport"], "at '/metrics/jobName'"),
    (["--set", "metrics.jobName=-fluxsupport"], "at '/metrics/jobName'"),
    (["--set", "metrics.jobName=" + "a" * 64], "at '/metrics/jobName'"),
])
def test_schema_rejects_bad_values_with_helms_error(helm: pathlib.Path, args: list[str],
                                                    message: str) -> None:
    result = run_helm(helm, "template", "fluxsupport", str(CHART), *args)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema(s)" in result.stderr
    assert message in result.stderr, result.stderr


def test_more_than_one_replica_needs_peering(helm: pathlib.Path) -> None:
    result = run_helm(helm, "template", "fluxsupport", str(CHART), "--set", "replicaCount=2")
    assert result.returncode != 0
    assert "replicaCount > 1 needs peering.enabled=true" in result.stderr
    docs = render(helm, "--set", "replicaCount=2", "--set", "peering.enabled=true")
    deployment = only(docs, "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate"}
    assert "--peering" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]


# --- RBAC ------------------------------------------------------------------------------------

WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "*"}


def rules_of(doc: Doc) -> list[tuple[str, str, str]]:
    """(group, resource, verb) triples of a Role or ClusterRole."""
    return [(group, resource, verb) for rule in doc["rules"]
            for group in rule["apiGroups"] for resource in rule["resources"]
            for verb in rule["verbs"]]


#: What the operator's ClusterRole grants with the default values: each verb is one the audit
#: log of tests/integration/test_rbac_audit.py shows the operator using (docs/install.md).
OPERATOR_CLUSTER_RULES = {
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    *(("support.fluxcd.controlplane.io", r, v) for r in ("supportcases", "securitybulletins")
      for v in ("list", "watch")),
    ("support.fluxcd.controlplane.io", "supportcases/status", "patch"),
    ("support.fluxcd.controlplane.io", "securitybulletins/status", "patch"),
    ("", "events", "create"),
}
#: policy.updates adds the one FluxUpdateCheck it creates, and its status.
UPDATE_CHECK_RULES = {
    *(("support.fluxcd.controlplane.io", "fluxupdatechecks", v)
      for v in ("get", "list", "watch", "create")),
    ("support.fluxcd.controlplane.io", "fluxupdatechecks/status", "patch"),
}
WORKLOAD_READS = {(g, r, v) for g, r in (("apps", "deployments"), ("", "pods"),
                                         ("fluxcd.controlplane.io", "fluxreports"),
                                         ("fluxcd.controlplane.io", "fluxinstances"))
                  for v in ("list", "watch")}
UPDATES = ("--set", "policy.updates.sourceRef.kind=GitRepository",
           "--set", "policy.updates.sourceRef.name=distribution")


def test_operator_rbac_is_least_privilege(helm: pathlib.Path) -> None:
    docs = render(helm, "--set", "fluxNamespaces={flux-system,tenant-flux}")
    cluster = set(rules_of(only(docs, "ClusterRole", "fluxsupport")))
    assert cluster == OPERATOR_CLUSTER_RULES
    # Never the spec of a case or a bulletin, never an Event twice, never a status by update.
    for verb in ("patch", "update", "get"):
        assert ("support.fluxcd.controlplane.io", "supportcases", verb) not in cluster
    assert ("", "events", "patch") not in cluster
    assert ("", "namespaces", "list") not in cluster
    roles = [d for d in docs if d["kind"] == "Role"]
    workloads = {d["metadata"]["namespace"]: set(rules_of(d)) for d in roles
                 if d["metadata"]["name"] == "fluxsupport-flux-reader"}
    assert workloads == {"flux-system": WORKLOAD_READS, "tenant-flux": WORKLOAD_READS}
    configmaps = only(docs, "Role", "fluxsupport-configmaps")
    assert configmaps["metadata"]["namespace"] == NAMESPACE
    # create and delete for the SupportCases' diagnostics snapshots, in this namespace only.
    assert set(rules_of(configmaps)) == {("", "configmaps", v) for v in (
        "list", "watch", "create", "delete")}
    for binding in (d for d in docs if d["kind"] in {"RoleBinding", "ClusterRoleBinding"}):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "fluxsupport",
                                        "namespace": NAMESPACE}]
    peering = set(rules_of(only(render(helm, "--set", "peering.enabled=true"),
                                "ClusterRole", "fluxsupport")))
    assert peering - OPERATOR_CLUSTER_RULES == {
        ("kopf.dev", "clusterkopfpeerings", v) for v in ("list", "watch", "patch")}
    wide = render(helm, "--set", "rbac.workloadsClusterWide=true")
    assert set(rules_of(only(wide, "ClusterRole", "fluxsupport"))) == \
        OPERATOR_CLUSTER_RULES | WORKLOAD_READS
    assert not [d for d in wide if d["metadata"]["name"] == "fluxsupport-flux-reader"]
    # policy.updates.sourceRef: the FluxUpdateCheck, and the named kind of Flux source where
    # the workloads are.
    updates = render(helm, *UPDATES)
    assert set(rules_of(only(updates, "ClusterRole", "fluxsupport"))) == \
        OPERATOR_CLUSTER_RULES | UPDATE_CHECK_RULES
    git = {("source.toolkit.fluxcd.io", "gitrepositories", v) for v in ("list", "watch")}
    reader = only(updates, "Role", "fluxsupport-flux-reader")
    assert set(rules_of(reader)) == WORKLOAD_READS | git
    assert git <= set(rules_of(only(render(helm, "--set", "rbac.workloadsClusterWide=true",
                                           *UPDATES), "ClusterRole", "fluxsupport")))
    oci = {("source.toolkit.fluxcd.io", "ocirepositories", v) for v in ("list", "watch")}
    both = render(helm, *UPDATES, "--set", "policy.advisories.sourceRef.kind=OCIRepository",
                  "--set", "policy.advisories.sourceRef.name=advisories")
    assert set(rules_of(only(both, "Role", "fluxsupport-flux-reader"))) == \
        WORKLOAD_READS | git | oci
    # The release data in a ConfigMap: the FluxUpdateCheck, but no Flux source.
    from_configmap = render(helm, "--set", "policy.updates.configMap=release-data")
    assert set(rules_of(only(from_configmap, "Role", "fluxsupport-flux-reader"))) == \
        WORKLOAD_READS


def test_security_bulletins_are_never_aggregated_into_built_in_roles(
        helm: pathlib.Path) -> None:
    docs = render(helm)
    reader = only(docs, "ClusterRole", "fluxsupport-securitybulletins-reader")
    assert "aggregationRule" not in reader
    assert not [k for k in reader["metadata"]["labels"] if k.startswith("rbac.authorization")]
    assert set(rules_of(reader)) == {
        ("support.fluxcd.controlplane.io", r, v)
        for r in ("securitybulletins", "securitybulletins/status")
        for v in ("get", "list", "watch")}
    aggregated = [d for d in docs if d["kind"] == "ClusterRole" and any(
        k.startswith("rbac.authorization.k8s.io/aggregate-to") for k in d["metadata"]["labels"])]
    assert {d["metadata"]["name"] for d in aggregated} == {
        "fluxsupport-supportcases-view", "fluxsupport-supportcases-edit",
        "fluxsupport-fluxupdatechecks-view"}
    for role in aggregated:
        assert {r for _, r, _ in rules_of(role)} <= {"supportcases", "supportcases/status",
                                                     "fluxupdatechecks",
                                                     "fluxupdatechecks/status"}
        assert ("support.fluxcd.controlplane.io", "supportcases/status", "patch") \
            not in rules_of(role)


def test_people_read_the_update_check_through_the_built_in_roles(helm: pathlib.Path) -> None:
    """The FluxUpdateCheck is no secret: readable with view, edit and admin; only the
    operator writes it."""
    role = only(render(helm), "ClusterRole", "fluxsupport-fluxupdatechecks-view")
    assert {k: v for k, v in role["metadata"]["labels"].items()
            if k.startswith("rbac.authorization.k8s.io/")} == {
        f"rbac.authorization.k8s.io/aggregate-to-{r}": "true" for r in ("view", "edit", "admin")}
    assert set(rules_of(role)) == {("support.fluxcd.controlplane.io", r, v)
                                   for r in ("fluxupdatechecks", "fluxupdatechecks/status")
                                   for v in ("get", "list", "watch")}
    off = render(helm, "--set", "rbac.aggregateUpdateChecks=false")
    assert not [d for d in off if d["metadata"]["name"] == "fluxsupport-fluxupdatechecks-view"]
    assert only(off, "ClusterRole", "fluxsupport-supportcases-view")


FEED = ("--set", "policy.advisories.sourceRef.kind=GitRepository",
        "--set", "policy.advisories.sourceRef.name=flux-advisories")


def test_the_advisory_feed_may_create_and_update_bulletins_and_read_sources(
        helm: pathlib.Path) -> None:
    bulletin_writes = {("support.fluxcd.controlplane.io", "securitybulletins", v)
                       for v in ("get", "create", "update")}
    sources = {("source.toolkit.fluxcd.io", "gitrepositories", v) for v in ("list", "watch")}
    default = render(helm)
    assert not bulletin_writes & set(rules_of(only(default, "ClusterRole", "fluxsupport")))
    assert rendered_policy(default).advisories is None
    docs = render(helm, *FEED, "--set", "fluxNamespaces={flux-system,tenant-flux}")
    cluster = set(rules_of(only(docs, "ClusterRole", "fluxsupport")))
    assert bulletin_writes <= cluster
    assert ("support.fluxcd.controlplane.io", "securitybulletins", "delete") not in cluster
    assert not {t for t in cluster if t[0] == "source.toolkit.fluxcd.io"}
    readers = [d for d in docs if d["kind"] == "Role"
               and d["metadata"]["name"] == "fluxsupport-flux-reader"]
    assert {d["metadata"]["namespace"] for d in readers} == {"flux-system", "tenant-flux"}
    for reader in readers:
        assert sources <= set(rules_of(reader))
    wide = only(render(helm, *FEED, "--set", "rbac.workloadsClusterWide=true"),
                "ClusterRole", "fluxsupport")
    assert sources | bulletin_writes <= set(rules_of(wide))
    policy = rendered_policy(render(helm, *FEED, "--set", "policy.advisories.path=."))
    assert policy.advisories is not None
    assert (policy.advisories.source_ref.kind, policy.advisories.source_ref.name,
            policy.advisories.path) == ("GitRepository", "flux-advisories", ".")
    for args, message in (
            (["--set", "policy.advisories.path=x"], "missing property 'sourceRef'"),
            ([*FEED, "--set", "policy.advisories.sourceRef.kind=HelmRepository"],
             "at '/policy/advisories/sourceRef/kind'"),
            ([*FEED, "--set", "policy.advisories.interval=1h"],
             "additional properties 'interval' not allowed")):
        result = run_helm(helm, "template", "fluxsupport", str(CHART), *args)
        assert result.returncode != 0, args
        assert message in result.stderr, result.stderr


# --- support channels ------------------------------------------------------------------------

CHANNELS_ROLE = "fluxsupport-channels-secret"
# The shape of a private CA's PEM block; the chart must carry its line breaks intact.
CA_BUNDLE = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUAA==\n-----END CERTIFICATE-----\n"
PORTAL_ON = ["--set", "policy.channels.portal.enabled=true",
             "--set", "policy.channels.portal.url=https://rt.example.com/"]
EMAIL_ON = ["--set", "policy.channels.email.enabled=true",
            "--set", "policy.channels.email.host=smtp.example.com",
            "--set", "policy.channels.email.from=fluxsupport@example.com",
            "--set", "policy.channels.email.to=support@example.com"]


def secret_rules(docs: list[Doc]) -> list[Doc]:
    return [rule for doc in docs if doc["kind"] in {"Role", "ClusterRole"}
            for rule in doc["rules"] if "secrets" in rule["resources"]]


def test_no_channel_and_no_secret_access_by_default(helm: pathlib.Path) -> None:
    docs = render(helm)
    assert rendered_policy(docs).channels == Channels()
    assert not rendered_policy(docs).channels.enabled
    assert not secret_rules(docs)
    assert not [d for d in docs if d["metadata"]["name"] == CHANNELS_ROLE]
    # Without RBAC from the chart, none for the channels either.
    assert not secret_rules(render(helm, *PORTAL_ON, "--set", "rbac.create=false"))


@pytest.mark.parametrize(("args", "secret"), [
    pytest.param(PORTAL_ON, "fluxsupport-channels", id="portal"),
    pytest.param([*EMAIL_ON, "--set", "policy.channels.secretName=helpdesk-credentials"],
                 "helpdesk-credentials", id="email-named-secret"),
    pytest.param([*PORTAL_ON, *EMAIL_ON], "fluxsupport-channels", id="both"),
])
def test_an_enabled_channel_may_get_its_one_secret_and_nothing_else(
        helm: pathlib.Path, args: list[str], secret: str) -> None:
    docs = render(helm, *args)
    role = only(docs, "Role", CHANNELS_ROLE)
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [{"apiGroups": [""], "resources": ["secrets"],
                              "resourceNames": [secret], "verbs": ["get"]}]
    # The only Secret rule of the whole chart.
    assert secret_rules(docs) == role["rules"]
    binding = only(docs, "RoleBinding", CHANNELS_ROLE)
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": CHANNELS_ROLE}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "fluxsupport",
                                    "namespace": NAMESPACE}]
    assert rendered_policy(docs).channels.secret_name == secret


def test_every_channels_field_is_rendered_into_the_policy(helm: pathlib.Path,
                                                          tmp_path: pathlib.Path) -> None:
    channels = {
        "cluster": "prod-eu-1", "secretName": "helpdesk",
        "portal": {"enabled": True, "type": "rt", "url": "https://rt.example.com/rt/",
                   "queue": "Flux", "syncInterval": "2m", "timeout": "15s",
                   "caBundle": CA_BUNDLE},
        "email": {"enabled": True, "host": "smtp.example.com", "port": 465, "tls": "implicit",
                  "from": "fluxsupport@example.com", "to": "support@example.com",
                  "timeout": "30s"},
        "fallback": {"levels": [1], "after": "10m", "attempts": 5}}
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"policy": {"channels": channels}}))
    docs = render(helm, "-f", str(values))
    text = only(docs, "ConfigMap", "fluxsupport-policy")["data"]["policy.yaml"]
    assert yaml.safe_load(text)["channels"] == channels
    rendered = rendered_policy(docs).channels
    assert (rendered.cluster, rendered.secret_name) == ("prod-eu-1", "helpdesk")
    assert (rendered.portal.enabled, rendered.portal.url, rendered.portal.queue) == \
        (True, "https://rt.example.com/rt/", "Flux")
    assert (rendered.portal.sync_interval, rendered.portal.timeout) == (120, 15)
    assert rendered.portal.ca_bundle == CA_BUNDLE
    assert (rendered.email.host, rendered.email.port, rendered.email.tls) == \
        ("smtp.example.com", 465, "implicit")
    assert (rendered.email.sender, rendered.email.to, rendered.email.timeout) == \
        ("fluxsupport@example.com", "support@example.com", 30)
    assert (rendered.fallback.levels, rendered.fallback.after, rendered.fallback.attempts) == \
        ((1,), 600, 5)
    # The channels do not move deadlines, but a change rolls the Deployment like any policy.
    assert rendered_policy(docs).fingerprint() == Policy().fingerprint()
    default = only(render(helm), "Deployment")["spec"]["template"]["metadata"]["annotations"]
    changed = only(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert default["checksum/policy"] != changed["checksum/policy"]


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "policy.channels.email.tls=ssl"], "at '/policy/channels/email/tls'"),
    (["--set", "policy.channels.fallback.levels={1,5}"],
     "at '/policy/channels/fallback/levels/1'"),
    (["--set", "policy.channels.fallback.levels={0}"], "at '/policy/channels/fallback/levels/0'"),
    (["--set", "policy.channels.fallback.attempts=0"], "at '/policy/channels/fallback/attempts'"),
    (["--set", "policy.channels.portal.type=jira"], "at '/policy/channels/portal/type'"),
    (["--set", "policy.channels.portal.syncInterval=60"],
     "at '/policy/channels/portal/syncInterval'"),
    (["--set", "policy.channels.portal.timeout=10 seconds"],
     "at '/policy/channels/portal/timeout'"),
    (["--set", "policy.channels.fallback.after=0m"], "at '/policy/channels/fallback/after'"),
    (["--set", "policy.channels.email.port=0"], "at '/policy/channels/email/port'"),
    (["--set", "policy.channels.email.to=support"], "at '/policy/channels/email/to'"),
    (["--set", "policy.channels.portal.url=rt.example.com"], "at '/policy/channels/portal/url'"),
    (["--set", "policy.channels.portal.enabled=true"], "at '/policy/channels/portal/url'"),
    (["--set", "policy.channels.email.enabled=true"], "at '/policy/channels/email"),
    (["--set", "policy.channels.secretName=Bad_Name"], "at '/policy/channels/secretName'"),
    (["--set", "policy.channels.portal.token=abc"], "additional properties 'token' not allowed"),
])
def test_schema_rejects_bad_channels_values(helm: pathlib.Path, args: list[str],
                                            message: str) -> None:
    result = run_helm(helm, "template", "fluxsupport", str(CHART), *args)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema(s)" in result.stderr
    assert message in result.stderr, result.stderr


def test_notes_say_how_to_create_the_channels_secret(helm: pathlib.Path,
                                                     tmp_path: pathlib.Path) -> None:
    # `helm template` leaves NOTES.txt out and `helm install --dry-run` wants a cluster: a copy
    # of the chart renders the notes into a ConfigMap with tpl instead.
    chart = tmp_path / "fluxsupport"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "NOTES.txt").rename(chart / "notes.txt.tmpl")
    (chart / "templates" / "notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data: {notes: {{ tpl (.Files.Get "notes.txt.tmpl") . | quote }}}\n')

    def notes(*args: str) -> str:
        result = run_helm(helm, "template", "fluxsupport", str(chart), "--namespace", NAMESPACE,
                          "--show-only", "templates/notes.yaml", *args)
        assert result.returncode == 0, result.stderr
        text: str = yaml.safe_load(result.stdout)["data"]["notes"]
        return text
    default = notes()
    assert f"kubectl -n {NAMESPACE} rollout status deployment/fluxsupport" in default
    assert "portal off, email off" in default
    assert (f"kubectl -n {NAMESPACE} create secret generic fluxsupport-channels "
            "--from-literal=portal-token=") in default
    assert "portal on, email off" in notes(*PORTAL_ON)
    assert ("SLA policy: preset technical-support-policy; keys that override the preset: "
            "none") in default
    assert ("SLA policy: preset support-policy-2026, region AMER; keys that override the "
            "preset: targets") in notes("--set", "policy.preset=support-policy-2026",
                                        "--set", "policy.region=AMER",
                                        "--set", "policy.targets.Low=3d")


# --- dashboard -------------------------------------------------------------------------------

def dashboard_targets(dashboard: Doc) -> list[tuple[str, str]]:
    found = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            found.extend((inner["title"], target["expr"]) for target in inner.get("targets", []))
    return found


def test_dashboard_configmap_carries_the_sidecar_label_and_the_json(helm: pathlib.Path) -> None:
    configmap = only(render(helm), "ConfigMap", "fluxsupport-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["fluxsupport.json"]) == json.loads(DASHBOARD.read_text())
    relabelled = only(render(helm, "--set", "dashboard.labels.grafana_dashboard=null",
                             "--set", "dashboard.labels.dashboards=flux",
                             "--set", "dashboard.namespace=monitoring"),
                      "ConfigMap", "fluxsupport-dashboard")
    assert "grafana_dashboard" not in relabelled["metadata"]["labels"]
    assert relabelled["metadata"]["labels"]["dashboards"] == "flux"
    assert relabelled["metadata"]["namespace"] == "monitoring"
    assert not [d for d in render(helm, "--set", "dashboard.enabled=false")
                if d["metadata"]["name"] == "fluxsupport-dashboard"]


def test_dashboard_queries_use_only_the_operators_metrics(tmp_path: pathlib.Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    targets = dashboard_targets(dashboard)
    assert len(targets) >= 10
    used: set[str] = set()
    for title, expr in targets:
        names = metric_names(expr)
        assert names, (title, expr)
        assert names <= KNOWN_METRICS, (title, names - KNOWN_METRICS)
        used |= names
    variable = dashboard["templating"]["list"][1]["query"]["query"]
    assert variable == "label_values(fluxsupport_build_info, job)"
    # The panels the issue asks for, by what they query.
    assert {"supportcase_open_cases", "supportcase_first_response_deadline_timestamp_seconds",
            "supportcase_first_responses_total", "fluxsupport_component_vulnerable",
            "fluxsupport_bulletin_components"} <= used
    titles = " | ".join(title for title, _ in targets).lower()
    for topic in ("open cases by level and state", "deadline", "breach", "compliance",
                  "vulnerable components per bulletin"):
        assert topic in titles, topic
    # promtool parses every query (Grafana's variables replaced by plain values).
    rules = [{"record": f"dashboard:query_{i}:expr",
              "expr": expr.replace("$__range", "1h").replace("$job", "fluxsupport")}
             for i, (_, expr) in enumerate(targets)]
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


# --- deploy/flux -----------------------------------------------------------------------------

def flux_docs() -> list[Doc]:
    docs = []
    for path in sorted(FLUX.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def test_flux_manifests_parse_and_kustomize_builds_them() -> None:
    kustomization = yaml.safe_load((FLUX / "kustomization.yaml").read_text())
    files = sorted(p.name for p in FLUX.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == files
    kubectl = pathlib.Path(sys.executable).parent / "kubectl"
    built = subprocess.run([str(kubectl), "kustomize", str(FLUX)], capture_output=True,
                           text=True, check=False, timeout=60)
    assert built.returncode == 0, built.stderr
    kinds = sorted((d["kind"], d["metadata"]["name"])
                   for d in yaml.safe_load_all(built.stdout) if d)
    assert kinds == [("GitRepository", "fluxsupport"), ("HelmRelease", "fluxsupport")]


def test_flux_helmrelease_references_this_chart(helm: pathlib.Path,
                                                tmp_path: pathlib.Path) -> None:
    docs = flux_docs()
    source = only(docs, "GitRepository")
    release = only(docs, "HelmRelease")
    assert source["apiVersion"] == "source.toolkit.fluxcd.io/v1"
    assert release["apiVersion"] == "helm.toolkit.fluxcd.io/v2"
    chart = release["spec"]["chart"]["spec"]
    assert chart["sourceRef"] == {"kind": source["kind"], "name": source["metadata"]["name"],
                                  "namespace": source["metadata"]["namespace"]}
    path = (ROOT / chart["chart"]).resolve()
    assert path == CHART
    assert yaml.safe_load((path / "Chart.yaml").read_text())["name"] == \
        release["spec"]["releaseName"] == "fluxsupport"
    # The source keeps the chart directory (and only it).
    ignore = source["spec"]["ignore"].split()
    # The chart, and the cases that deploy/flux/cases/flux-kustomization.yaml applies.
    assert ignore == ["/*", "!/" + chart["chart"].removeprefix("./") + "/", "!/deploy/flux/cases/"]
    assert release["spec"]["targetNamespace"] == NAMESPACE
    assert release["spec"]["install"]["crds"] == "Create"
    assert release["spec"]["upgrade"]["crds"] == "CreateReplace"
    # The values pass the chart's schema and carry a policy the operator accepts.
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(release["spec"]["values"]))
    rendered = render(helm, "-f", str(values))
    assert rendered_policy(rendered) == load_policy(yaml.safe_dump(
        release["spec"]["values"]["policy"]))
    assert rendered_policy(rendered).closed_dates
    assert {d["kind"] for d in rendered} >= {"PrometheusRule", "ServiceMonitor", "Deployment"}


def test_one_replica_has_no_budget_nor_anti_affinity(helm: pathlib.Path) -> None:
    docs = render(helm)
    assert not [d for d in docs if d["kind"] in ("PodDisruptionBudget", "NetworkPolicy")]
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert "affinity" not in pod
    resources = pod["containers"][0]["resources"]
    assert resources["requests"]["ephemeral-storage"] == "64Mi"
    assert resources["limits"]["ephemeral-storage"] == "128Mi"


def test_replicas_get_a_budget_and_spread_over_nodes(helm: pathlib.Path) -> None:
    docs = render(helm, "--set", "replicaCount=2", "--set", "peering.enabled=true")
    budget = only(docs, "PodDisruptionBudget")
    labels = budget["spec"]["selector"]["matchLabels"]
    assert budget["spec"]["minAvailable"] == 1
    pod = only(docs, "Deployment")["spec"]["template"]
    assert labels.items() <= pod["metadata"]["labels"].items()
    [term] = pod["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == labels
    # An affinity of the user's replaces the default one.
    docs = render(helm, "--set", "replicaCount=2", "--set", "peering.enabled=true",
                  "--set", "affinity.nodeAffinity.x=1")
    assert only(docs, "Deployment")["spec"]["template"]["spec"]["affinity"] == {
        "nodeAffinity": {"x": 1}}


def test_network_policy_opens_the_metrics_port_only(helm: pathlib.Path) -> None:
    docs = render(helm, "--set", "networkPolicy.enabled=true",
                  "--set", "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels"
                           ".kubernetes\\.io/metadata\\.name=monitoring")
    policy = only(docs, "NetworkPolicy")
    deployment = only(docs, "Deployment")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= \
        deployment["spec"]["template"]["metadata"]["labels"].items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    [rule] = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "monitoring"}}}]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert [port["name"] for port in container["ports"]] == ["metrics"]
