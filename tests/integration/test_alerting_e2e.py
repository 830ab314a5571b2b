"""Alerting end to end: the real Prometheus scrapes the operator, evaluates the rules the chart
renders, and the real Alertmanager delivers to a webhook served by the test.

Prometheus (Debian's 2.42) scrapes every second and evaluates every second; Alertmanager
(Debian's 0.25) waits 1 s before a group's first notification. The module runs an operator of
its own (the session operator stops meanwhile): 24x7 with a 10 s Urgent target and the warning
at 40 %, so that the at-risk window (6 s) is wide enough for an alert to be delivered before the
breach resolves it, and so that the operator can be stopped for FluxSupportOperatorDown.

The rules are the chart's PrometheusRule as rendered with prometheusRule.enabled=true, with one
change: every `for` (FluxComponentVulnerable 15m, FluxSupportOperatorDown 5m,
SupportCaseFirstResponseComplianceLow 1h) becomes FOR_IN_TEST, because the chart has no value
that sets them and a test cannot wait 15 minutes. The test checks that nothing else differs;
promtool's unit tests (alerts/tests.yaml) cover the real durations.

The Grafana dashboard's panels run against the same Prometheus, Grafana's variables replaced by
the values Grafana would use: each must parse and return series.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import pathlib
import re
import secrets
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fluxsupport.constants import RESPONDED_AT
from tests import fixtures, harness
from tests import prometheus as prom

PRE = fixtures.images(fixtures.PRE_FIX_V275)
FIX = fixtures.images(fixtures.FIX_V275)
DASHBOARD = harness.ROOT / "charts" / "fluxsupport" / "dashboards" / "fluxsupport.json"
URGENT_S = 10
WARNING_RATIO = 0.4
POLICY = f"""\
timezone: UTC
holidays: ""
businessHours: {{alwaysOpen: true}}
targets: {{Urgent: {URGENT_S}s, High: 1h, Medium: 2h, Low: 3h}}
warningRatio: {WARNING_RATIO}
remediationFramework: standard
"""
FOR_IN_TEST_S = 2
FOR_IN_TEST = f"{FOR_IN_TEST_S}s"
#: A patchBy long past: a vulnerable component then also makes the bulletin overdue.
PATCH_BY = "2026-06-05T12:00:00Z"


@dataclasses.dataclass
class Stack:
    prometheus: prom.Prometheus
    alertmanager: prom.Alertmanager
    webhook: prom.Webhook
    operator: harness.OperatorProcess
    rendered: dict[str, Any]
    loaded: dict[str, Any]

    def retarget(self) -> None:
        """Scrape the operator where it listens now (each start picks a free port)."""
        self.prometheus.set_targets([f"127.0.0.1:{self.operator.port}"])


def with_short_for(rules: dict[str, Any]) -> dict[str, Any]:
    shortened = copy.deepcopy(rules)
    for group in shortened["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = FOR_IN_TEST
    return shortened


def scraped(prometheus: prom.Prometheus, port: int) -> bool:
    return any(s["metric"]["instance"] == f"127.0.0.1:{port}" and s["value"][1] == "1"
               for s in prometheus.query(f'up{{job="{prom.JOB}"}}'))


@pytest.fixture(scope="module")
def stack(operator: harness.OperatorProcess, operator_credentials: harness.OperatorCredentials,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("alerting")
    policy = workdir / "policy.yaml"
    policy.write_text(POLICY)
    rendered = prom.chart_rules()
    loaded = with_short_for(rendered)
    own = harness.OperatorProcess(operator_credentials.kubeconfig, workdir,
                                  extra_args=("--policy", str(policy)), name="alerting-operator")
    webhook = prom.Webhook()
    alertmanager = prom.Alertmanager()
    prometheus = prom.Prometheus()
    operator.stop()  # the session operator; restarted below
    try:
        webhook.start()
        own.start()
        alertmanager.start(workdir / "alertmanager", webhook.url)
        prometheus.start(workdir / "prometheus", loaded, alertmanager.url,
                         [f"127.0.0.1:{own.port}"])
        prom.wait(lambda: scraped(prometheus, own.port), timeout=30,
                  what="Prometheus scraping the operator")
        yield Stack(prometheus, alertmanager, webhook, own, rendered, loaded)
    finally:
        prometheus.stop()
        alertmanager.stop()
        webhook.stop()
        own.stop()
        operator.start()
    assert "Traceback" not in own.log_text(), own.log_tail(200)


def token() -> str:
    return secrets.token_hex(5)


def set_image(api: harness.Api, name: str, entry: dict[str, str]) -> None:
    api.apps.patch_namespaced_deployment(name, "flux-system", {"spec": {"template": {"spec": {
        "containers": [{"name": "manager", "image": harness.pinned(entry)}]}}}})


def wait_alert(stack: Stack, alertname: str, timeout: float, status: str = "firing",
               **labels: str) -> list[tuple[float, dict[str, Any]]]:
    found: list[tuple[float, dict[str, Any]]] = prom.wait(
        lambda: stack.webhook.alerts(alertname, status=status, **labels), timeout=timeout,
        what=f"{alertname} {status} {labels} at the webhook")
    return found


def test_prometheus_runs_the_rules_the_chart_renders(stack: Stack,
                                                     figures: Callable[[str], None]) -> None:
    def without_for(rules: dict[str, Any]) -> dict[str, Any]:
        bare = copy.deepcopy(rules)
        for group in bare["groups"]:
            for rule in group["rules"]:
                rule.pop("for", None)
        return bare

    assert without_for(stack.loaded) == without_for(stack.rendered)
    long_for = {rule["alert"]: rule["for"] for group in stack.rendered["groups"]
                for rule in group["rules"] if "for" in rule}
    assert set(long_for) == {"FluxComponentVulnerable", "FluxSupportOperatorDown",
                             "SupportCaseFirstResponseComplianceLow", "FluxReleaseUnsupported",
                             "FluxComponentNewerBuildAvailable",
                             "FluxSupportAdvisoryFeedFailing"}, long_for
    # Every rendered rule is loaded, with its expression as rendered (job="fluxsupport").
    groups = {g["name"]: g for g in stack.prometheus.api("rules")["groups"]}
    assert sorted(groups) == sorted(g["name"] for g in stack.rendered["groups"])
    for group in stack.rendered["groups"]:
        loaded = groups[group["name"]]["rules"]
        assert [r["name"] for r in loaded] == [r["alert"] for r in group["rules"]]
        for rule, state in zip(group["rules"], loaded, strict=True):
            assert state["health"] == "ok", state
            assert 'job="fluxsupport"' in rule["expr"]
            assert state["duration"] == (FOR_IN_TEST_S if "for" in rule else 0)
    figures(f"alerting: {stack.prometheus.version()}, {stack.alertmanager.version()}; "
            f"rules of the chart, `for` shortened to {FOR_IN_TEST} from {long_for}")


def test_breach_reaches_the_webhook_after_the_at_risk_alert(
        api: harness.Api, stack: Stack, namespace: str, figures: Callable[[str], None]) -> None:
    names = [f"urgent-{i}" for i in range(5)]
    for name in names:
        api.create_case(namespace, harness.case_manifest(name, namespace, "Urgent"))
        # Deadlines at different points of the scrape and evaluation cycles.
        time.sleep(0.3)
    def deadline(name: str) -> float:
        text: str = harness.wait_for(lambda: (api.get_case(namespace, name).get("status") or {})
                                     .get("firstResponse", {}).get("deadline"),
                                     timeout=30, what=f"{name}'s deadline")
        return harness.parse_time(text)

    deadlines = {name: deadline(name) for name in names}
    latencies = []
    for name in names:
        breached = wait_alert(stack, "SupportCaseFirstResponseBreached",
                              timeout=deadlines[name] - time.time() + 60,
                              namespace=namespace, supportcase=name)
        at_risk = stack.webhook.alerts("SupportCaseFirstResponseAtRisk", namespace=namespace,
                                       supportcase=name)
        assert at_risk, f"{name}: no SupportCaseFirstResponseAtRisk before the breach"
        assert at_risk[0][0] < breached[0][0]
        warning = deadlines[name] - URGENT_S * (1 - WARNING_RATIO)
        assert at_risk[0][0] >= warning, "at risk before the warning point"
        arrived, alert = breached[0]
        assert {k: alert["labels"].get(k) for k in
                ("namespace", "supportcase", "level", "severity", "job")} == {
            "namespace": namespace, "supportcase": name, "level": "1", "severity": "page",
            "job": "fluxsupport"}
        assert f"{namespace}/{name} (level 1) breached" in alert["annotations"]["summary"]
        assert at_risk[0][1]["labels"]["severity"] == "ticket"
        latencies.append(arrived - deadlines[name])
    # The breach ends the at-risk alert, and Alertmanager says so (send_resolved).
    for name in names:
        wait_alert(stack, "SupportCaseFirstResponseAtRisk", timeout=30, status="resolved",
                   namespace=namespace, supportcase=name)
    figures(f"alerting: deadline to webhook (SupportCaseFirstResponseBreached) over "
            f"{len(latencies)} cases: p50 {statistics.median(latencies):.2f}s, max "
            f"{max(latencies):.2f}s (scrape and evaluation every 1s, group_wait 1s)")
    assert min(latencies) >= 0
    assert max(latencies) < 20


def test_vulnerable_component_fires_and_resolves_once_fixed(
        api: harness.Api, stack: Stack, flux: list[dict[str, Any]],
        figures: Callable[[str], None]) -> None:
    name = f"am-{token()}"
    api.create_bulletin(fixtures.bulletin_for(name, "CVE-2026-47680", "source-controller",
                                              FIX["source-controller"], patchBy=PATCH_BY))
    created = time.time()
    try:
        vulnerable = wait_alert(stack, "FluxComponentVulnerable", timeout=60, bulletin=name)
        labels = vulnerable[0][1]["labels"]
        assert (labels["namespace"], labels["component"], labels["severity"]) == (
            "flux-system", "source-controller", "ticket")
        assert f"flux-system/source-controller is vulnerable according to SecurityBulletin " \
               f"{name}" in vulnerable[0][1]["annotations"]["summary"]
        overdue = wait_alert(stack, "SecurityBulletinPatchOverdue", timeout=30, bulletin=name)
        assert overdue[0][1]["labels"]["severity"] == "page"
        figures(f"alerting: bulletin created to FluxComponentVulnerable at the webhook "
                f"{vulnerable[0][0] - created:.2f}s (for: {FOR_IN_TEST})")
        set_image(api, "source-controller", FIX["source-controller"])
        wait_alert(stack, "FluxComponentVulnerable", timeout=60, status="resolved",
                   bulletin=name)
        wait_alert(stack, "SecurityBulletinPatchOverdue", timeout=30, status="resolved",
                   bulletin=name)
    finally:
        set_image(api, "source-controller", PRE["source-controller"])
        api.delete_bulletin(name)


def test_a_vendor_fix_past_its_remediation_time_reaches_the_webhook(
        api: harness.Api, stack: Stack, flux: list[dict[str, Any]],
        figures: Callable[[str], None]) -> None:
    """A critical vulnerability identified in June with no fixed digest listed: the standard
    framework's 72 hours have long passed."""
    name = f"vr-{token()}"
    body = fixtures.bulletin_for(name, "CVE-2026-47680", "source-controller",
                                 FIX["source-controller"])
    spec = body["spec"]
    del spec["fixes"]
    spec["affectedVersions"] = [{"component": "source-controller",
                                 "ranges": [{"introduced": "v1.0.0", "fixed": "v1.7.5"}]}]
    spec["vulnerabilities"][0].update(identifiedAt="2026-06-03T10:00:00Z", cvssScore=9.8)
    api.create_bulletin(body)
    created = time.time()
    try:
        fired = wait_alert(stack, "SecurityBulletinVendorRemediationOverdue", timeout=60,
                           bulletin=name)
        alert = fired[0][1]
        assert alert["labels"]["severity"] == "ticket"
        assert name in alert["annotations"]["summary"]
        status = api.get_bulletin(name)["status"]
        [tracked] = status["vendorRemediation"]["vulnerabilities"]
        assert tracked["dueAt"] == "2026-06-06T10:00:00Z"
        figures(f"alerting: bulletin created to SecurityBulletinVendorRemediationOverdue at "
                f"the webhook {fired[0][0] - created:.2f}s")
    finally:
        api.delete_bulletin(name)


#: Long enough for the alert to reach the webhook under embargo on a loaded machine (about
#: 4 s idle: verdict, scrape, `for`, group_wait).
EMBARGO_S = 25.0


def test_embargoed_bulletin_leaks_nothing_through_prometheus_or_alertmanager(
        api: harness.Api, stack: Stack, flux: list[dict[str, Any]],
        figures: Callable[[str], None]) -> None:
    until = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=EMBARGO_S)
             ).replace(microsecond=0)
    name = f"emb-{token()}"
    cve = f"CVE-2026-{secrets.randbelow(900000) + 100000}"
    ghsa = "GHSA-" + "-".join("".join(secrets.choice("23456789cfghjmpqrvwx") for _ in range(4))
                              for _ in range(3))
    body = fixtures.bulletin_for(name, cve, "source-controller", FIX["source-controller"],
                                 embargoUntil=until.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                 summary=f"Bulletin summary {token()}", patchBy=PATCH_BY)
    body["spec"]["title"] = f"Embargoed flaw {token()}"
    body["spec"]["vulnerabilities"] = [
        {"id": cve, "components": ["source-controller"], "summary": f"CVE summary {token()}"},
        {"id": ghsa, "components": ["source-controller"]}]
    words = [cve, ghsa, body["spec"]["title"], body["spec"]["summary"],
             body["spec"]["vulnerabilities"][0]["summary"]]

    def said() -> dict[str, str]:
        return {"prometheus": stack.prometheus.stored_text().lower(),
                "alertmanager": json.dumps(stack.alertmanager.alerts()).lower(),
                "webhook": stack.webhook.text().lower()}

    def found(texts: dict[str, str], what: list[str]) -> dict[str, list[str]]:
        return {where: hits for where, text in texts.items()
                if (hits := [w for w in what if w.lower() in text])}

    api.create_bulletin(body)
    try:
        wait_alert(stack, "FluxComponentVulnerable", timeout=EMBARGO_S - 5, bulletin=name)
        wait_alert(stack, "SecurityBulletinPatchOverdue", timeout=EMBARGO_S - 5, bulletin=name)
        assert api.get_bulletin(name)["status"]["embargoed"] is True
        before = said()
        assert time.time() < until.timestamp(), "the scan must happen under embargo"
        # The scan reads what it should: the bulletin's name is in all three.
        assert found(before, [name]) == {w: [name] for w in before}
        leaks = found(before, words)
        figures(f"embargo (alerting): scanned {sum(map(len, before.values()))} bytes of "
                f"Prometheus series, label values and alerts, Alertmanager alerts and "
                f"{len(stack.webhook.received())} webhook payloads: {leaks or 'nothing found'}")
        assert leaks == {}

        harness.wait_for(lambda: api.get_bulletin(name)["status"]["embargoed"] is False,
                         timeout=EMBARGO_S + 20, interval=0.2, what="the lift")
        lifted = time.time()
        cves = api.get_bulletin(name)["status"]["components"][0]["cves"]
        assert cve in [c["id"] for c in cves]  # disclosed in the status
        # A notification sent after the lift (a repeat) carries no more than before: the
        # metrics have no CVE ids or titles, embargo or not.
        wait_alert(stack, "FluxComponentVulnerable", timeout=30, bulletin=name)
        prom.wait(lambda: [t for t, _ in stack.webhook.alerts("FluxComponentVulnerable",
                                                               bulletin=name) if t > lifted],
                  timeout=30, what="a notification after the lift")
        assert found(said(), words) == {}
    finally:
        api.delete_bulletin(name)


def grafana_expr(expr: str, variables: dict[str, str]) -> str:
    """``expr`` with Grafana's variables ($name, ${name}, [[name]]) replaced."""
    def value(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        assert name in variables, f"unknown Grafana variable {name} in {expr}"
        return variables[name]
    replaced = re.sub(r"\$\{(\w+)\}|\[\[(\w+)\]\]|\$(\w+)", value, expr)
    assert "$" not in replaced, replaced
    return replaced


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        found.extend(inner for inner in [panel, *panel.get("panels", [])]
                     if inner.get("targets"))
    return found


def test_every_dashboard_panel_parses_and_returns_series(
        api: harness.Api, stack: Stack, flux: list[dict[str, Any]], namespace: str,
        figures: Callable[[str], None]) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    # Something for every panel: cases open and answered, a vulnerable overdue component.
    bulletin = f"dash-{token()}"
    api.create_bulletin(fixtures.bulletin_for(bulletin, "CVE-2026-47680", "source-controller",
                                              FIX["source-controller"], patchBy=PATCH_BY))
    try:
        for name, severity in (("open-high", "High"), ("answered", "Medium"),
                               ("breached", "Urgent")):
            api.create_case(namespace, harness.case_manifest(name, namespace, severity))
        harness.wait_for(lambda: (api.get_case(namespace, "answered").get("status") or {})
                         .get("firstResponse", {}).get("deadline"), what="a deadline")
        api.patch_case(namespace, "answered", {"metadata": {"annotations": {
            RESPONDED_AT: harness.rfc3339(time.time())}}})
        harness.wait_for(lambda: (api.get_case(namespace, "answered").get("status") or {})
                         .get("firstResponse", {}).get("state") == "Met", what="Met")

        # The dashboard's variable: the job, from label_values(fluxsupport_build_info, job).
        jobs = stack.prometheus.api("label/job/values", **{"match[]": "fluxsupport_build_info"})
        assert jobs == ["fluxsupport"]
        since = dashboard["time"]["from"]
        assert since.startswith("now-"), since
        variables = {"job": jobs[0], "__range": since.removeprefix("now-"),
                     "__rate_interval": "1m", "__interval": "2s"}
        queries = [(panel["title"], panel["type"], grafana_expr(target["expr"], variables))
                   for panel in panels(dashboard) for target in panel["targets"]]
        assert len(queries) >= 10

        def empty() -> list[str]:
            missing = []
            for title, kind, expr in queries:
                if not stack.prometheus.query(expr):
                    missing.append(f"{title}: {expr}")
                elif kind == "timeseries" and not stack.prometheus.query_range(expr, 60):
                    missing.append(f"{title} (range): {expr}")
            return missing

        # Parse errors fail at once, with Prometheus' message; empty panels get a few
        # scrapes' time: the answered case's counter must be seen before and after its increment.
        with pytest.raises(AssertionError, match="bad_data"):
            stack.prometheus.query('sum by (level (supportcase_open_cases{job=~"fluxsupport"})')
        for _, _, expr in queries:
            stack.prometheus.query(expr)
        started = time.monotonic()
        last: list[str] = []
        while time.monotonic() - started < 45:
            last = empty()
            if not last:
                break
            time.sleep(1)
        assert last == [], "panels without series:\n" + "\n".join(last)
        # The answered case (level 3) shows in the p90 panel once a scrape saw its response.
        p90 = next(e for t, _, e in queries if "p90" in t)
        prom.wait(lambda: [s for s in stack.prometheus.query(p90)
                           if s["metric"].get("level") == "3" and s["value"][1] != "NaN"],
                  timeout=30, what="the answered case in the p90 panel")
        results = {title: stack.prometheus.query(expr) for title, _, expr in queries}
        nan = sorted(title for title, series in results.items()
                     if any(s["value"][1] == "NaN" for s in series))
        figures(f"dashboard: {len(queries)} panel queries returned series after "
                f"{time.monotonic() - started:.1f}s; some series NaN (no responses at that "
                f"level): {nan}")
    finally:
        api.delete_bulletin(bulletin)


def test_operator_stopped_fires_operator_down(stack: Stack,
                                              figures: Callable[[str], None]) -> None:
    stack.operator.stop()
    stopped = time.time()
    try:
        # A scrape that timed out earlier on a busy machine may have fired it before: only a
        # notification after the stop counts.
        down = prom.wait(lambda: [(at, alert) for at, alert in stack.webhook.alerts(
            "FluxSupportOperatorDown", status="firing") if at > stopped], timeout=60,
            what="FluxSupportOperatorDown firing after the stop")
        assert down[0][1]["labels"]["severity"] == "page"
        assert stack.prometheus.query('up{job="fluxsupport"}')[0]["value"][1] == "0"
        figures(f"alerting: operator stopped to FluxSupportOperatorDown at the webhook "
                f"{down[0][0] - stopped:.2f}s (for: {FOR_IN_TEST})")
    finally:
        stack.operator.start()
        stack.retarget()
    prom.wait(lambda: scraped(stack.prometheus, stack.operator.port), timeout=30,
              what="the restarted operator scraped")
    wait_alert(stack, "FluxSupportOperatorDown", timeout=30, status="resolved")


def test_helpers_leave_no_process_behind(tmp_path: pathlib.Path) -> None:
    """A Prometheus and an Alertmanager started and stopped by the helpers are gone."""
    webhook = prom.Webhook()
    webhook.start()
    alertmanager = prom.Alertmanager()
    prometheus = prom.Prometheus()
    try:
        alertmanager.start(tmp_path / "am", webhook.url)
        prometheus.start(tmp_path / "prom", {"groups": []}, alertmanager.url, [])
        processes = [alertmanager.process, prometheus.process]
    finally:
        prometheus.stop()
        alertmanager.stop()
        webhook.stop()
    assert all(p is not None and p.poll() is not None for p in processes)
