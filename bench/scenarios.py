"""The five measurements of ``make bench``; each returns raw per-trial numbers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import json
import os
import pathlib
import statistics
import time
import timeit
import urllib.request
import uuid
from collections.abc import AsyncIterator
from typing import Any

from tests import fixtures, harness

from bench import client as bc
from fluxsupport import constants
from fluxsupport.devcluster import build, cluster
from fluxsupport.domain.calendar import BusinessCalendar
from fluxsupport.domain.policy import Policy
from fluxsupport.kube import api, blocking

CONCURRENCY = 32


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


@dataclasses.dataclass(frozen=True)
class Setup:
    plane: cluster.ControlPlane
    #: Not started: each measurement starts and stops it.
    operator: harness.OperatorProcess
    #: The operator's --policy file; empty (the default policy) until a measurement writes it.
    policy_path: pathlib.Path
    client: api.Client


@contextlib.asynccontextmanager
async def control_plane(workdir: pathlib.Path) -> AsyncIterator[Setup]:
    """A fresh local control plane with the CRDs installed, and an operator to start."""
    build.build_all(("etcd", "kube-apiserver"))
    plane = cluster.ControlPlane(workdir / "controlplane", attached=True)
    plane.prepare()
    plane.start()
    policy_path = workdir / "policy.yaml"
    policy_path.write_text("")
    operator = harness.OperatorProcess(plane.kubeconfig, workdir,
                                       extra_args=("--policy", str(policy_path)), verbose=False)
    client: api.Client | None = None
    try:
        blocking.install_crds(blocking.api_client(plane.kubeconfig))
        client = bc.client_for(plane.kubeconfig)
        # Where the chart installs it: its ConfigMaps (diagnostics snapshots) go there.
        await bc.create_namespace(client, "fluxsupport-system")
        yield Setup(plane, operator, policy_path, client)
    finally:
        if client is not None:
            await client.close()
        operator.stop()
        plane.stop()


# ---- 5. calendar engine --------------------------------------------------------------------

def calendar_speed(samples: int) -> dict[str, float]:
    """Deadlines per second on one core, and a baseline of plain datetime additions."""
    calendar = BusinessCalendar(Policy())
    start = datetime.datetime(2026, 1, 5, 8, tzinfo=datetime.UTC)
    starts = [start + datetime.timedelta(minutes=37 * i) for i in range(samples)]
    calendar.add(starts[-1], 24 * 3600)  # Build the holiday table outside the timing.
    began = time.perf_counter()
    for index, opened in enumerate(starts):
        calendar.add(opened, (4, 8, 12, 24)[index % 4] * 3600)
    engine = samples / (time.perf_counter() - began)
    delta = datetime.timedelta(hours=8)
    baseline = samples / timeit.timeit(lambda: [s + delta for s in starts], number=1)
    return {"deadlines_per_s": engine, "datetime_adds_per_s": baseline}


# ---- 1. throughput ------------------------------------------------------------------------

async def create_cases(client: api.Client, namespace: str, count: int, severity: str) -> None:
    """A burst of ``count`` creates, CONCURRENCY at a time."""
    def job(index: int) -> Any:
        async def run() -> None:
            await client.request("POST", bc.CASES.format(namespace=namespace),
                                 bc.case_body(f"case-{index}", namespace, severity))
        return run

    await bc.bounded((job(i) for i in range(count)), CONCURRENCY)


async def raw_burst(client: api.Client, count: int, status: dict[str, Any]) -> float:
    """N creates plus one status patch each, by a plain client: what the API can absorb.

    ``status`` is one the operator wrote, so that both sides write objects of the same size.
    """
    namespace = f"raw-{uuid.uuid4().hex[:8]}"
    await bc.create_namespace(client, namespace)

    def job(index: int) -> Any:
        async def run() -> None:
            name = f"case-{index}"
            await client.request("POST", bc.CASES.format(namespace=namespace),
                                 bc.case_body(name, namespace))
            ref = api.ObjectRef(constants.API_VERSION, "SupportCase", "supportcases", name,
                                namespace)
            await client.patch_status(ref, status, None)
        return run

    began = time.time()
    await bc.bounded((job(i) for i in range(count)), CONCURRENCY)
    elapsed = time.time() - began
    await bc.delete_cases(client, namespace)
    return elapsed


async def operator_burst(client: api.Client, count: int) -> tuple[float, dict[str, Any]]:
    """N creates; time until the operator has written every deadline, and one status it
    wrote. The cases are deleted afterwards, so that later phases count only their own."""
    namespace = f"op-{uuid.uuid4().hex[:8]}"
    await bc.create_namespace(client, namespace)
    observer = bc.Observer(client, bc.CASES.format(namespace=namespace), bc.has_deadline)
    await observer.start()

    began = time.time()
    await create_cases(client, namespace, count, "High")
    done = await observer.wait_count(count, timeout=600)
    await observer.stop()
    sample = await client.request("GET", bc.CASES.format(namespace=namespace) + "/case-0")
    await bc.delete_cases(client, namespace)
    return done - began, sample["status"]


# ---- 2. detection latency -----------------------------------------------------------------

PRE = fixtures.images(fixtures.PRE_FIX_V275)
FIX = fixtures.images(fixtures.FIX_V275)


def pinned(entry: dict[str, str]) -> str:
    return f"{entry['name']}:{entry['newTag']}@{entry['digest']}"


async def install_flux(client: api.Client) -> None:
    await bc.create_namespace(client, "flux-system")
    for deployment in fixtures.deployments_running(FIX, "v2.7.5"):
        deployment.pop("status", None)
        try:
            await client.request("POST", "/apis/apps/v1/namespaces/flux-system/deployments",
                                 deployment)
        except api.ApiError as error:
            if error.status != 409:
                raise


async def create_bulletins(client: api.Client, count: int, prefix: str) -> list[str]:
    names = []
    for index in range(count):
        name = f"{prefix}-{index:03d}"
        body = fixtures.bulletin_for(name, f"CVE-2026-{70000 + index}", "source-controller",
                                     FIX["source-controller"])
        await client.request("POST", bc.BULLETINS, body)
        names.append(name)
    return names


def _vulnerable_in_metrics(metrics_url: str, bulletin: str) -> bool:
    with urllib.request.urlopen(metrics_url, timeout=2) as response:
        text = response.read().decode()
    return (f'fluxsupport_component_vulnerable{{bulletin="{bulletin}",'
            f'component="source-controller",namespace="flux-system"}} 1.0') in text


async def detection(client: api.Client, metrics_url: str, bulletins: list[str],
                    trials: int) -> tuple[list[float], list[float]]:
    """Flip source-controller to a vulnerable digest; time until every bulletin says so."""
    path = "/apis/apps/v1/namespaces/flux-system/deployments/source-controller"

    def verdict(obj: dict[str, Any], wanted: str) -> bool:
        return any(c.get("component") == "source-controller" and c.get("verdict") == wanted
                   for c in (obj.get("status") or {}).get("components") or [])

    to_status, to_metrics = [], []
    for _ in range(trials):
        for image, wanted in ((pinned(FIX["source-controller"]), "Fixed"),
                              (pinned(PRE["source-controller"]), "Vulnerable")):
            observer = bc.Observer(client, bc.BULLETINS, lambda o, w=wanted: verdict(o, w))
            await observer.start()
            began = time.time()
            await client.request("PATCH", path, {"spec": {"template": {"spec": {"containers": [
                {"name": "manager", "image": image}]}}}}, "application/strategic-merge-patch+json")
            if wanted == "Vulnerable":
                while not await asyncio.to_thread(_vulnerable_in_metrics, metrics_url,
                                                  bulletins[-1]):
                    await asyncio.sleep(0.005)
                to_metrics.append(time.time() - began)
            done = await observer.wait_count(len(bulletins), timeout=30)
            await observer.stop()
            if wanted == "Vulnerable":
                to_status.append(done - began)
    return to_status, to_metrics


# ---- 3. breach precision ------------------------------------------------------------------

#: Seconds from the opening to the deadline, and the warning point's share of them. A real
#: policy has hours between the two; here the warning wave (one write per case) must be over
#: before the breach wave, or the breach wave measures the tail of the warning wave too.
BREACH_TARGET_S = 20
BREACH_WARNING_RATIO = 0.25


def aligned_policy(opening: datetime.datetime, target_s: int) -> str:
    """Every day opens at ``opening``'s time of day: cases created before it all start
    their clock then, so their deadlines fall in the same second."""
    return (f"timezone: UTC\nholidays: ''\nwarningRatio: {BREACH_WARNING_RATIO}\n"
            f"businessHours: {{days: [Mon, Tue, Wed, Thu, Fri, Sat, Sun], "
            f"start: '{opening:%H:%M:%S}', end: '24:00'}}\n"
            f"targets: {{Urgent: {target_s}s, High: {target_s}s, Medium: 1h, Low: 2h}}\n")


async def breach_precision(client: api.Client, count: int, operator: harness.OperatorProcess,
                           policy_path: pathlib.Path, restart: bool
                           ) -> tuple[list[float], str]:
    """Lags from the shared deadline to each case's Breached, and the cases' namespace."""
    now = datetime.datetime.now(datetime.UTC)
    if now.hour == 23 and now.minute >= 58:
        await asyncio.sleep(180)
        now = datetime.datetime.now(datetime.UTC)
    opening = (now + datetime.timedelta(seconds=25)).replace(microsecond=0)
    target = BREACH_TARGET_S
    deadline = opening + datetime.timedelta(seconds=target)
    policy_path.write_text(aligned_policy(opening, target))
    operator.stop()
    operator.start()
    namespace = f"breach-{uuid.uuid4().hex[:8]}"
    await bc.create_namespace(client, namespace)
    observer = bc.Observer(client, bc.CASES.format(namespace=namespace), bc.breached)
    await observer.start()

    await create_cases(client, namespace, count, "Urgent")
    if time.time() > opening.timestamp():
        raise RuntimeError("creating the cases took longer than the lead time")
    if restart:
        await asyncio.sleep(max(0.0, deadline.timestamp() - 5 - time.time()))
        await asyncio.to_thread(operator.stop)
        await asyncio.to_thread(operator.start, False)
    await observer.wait_count(count, timeout=120)
    await observer.stop()
    return [seen - deadline.timestamp() for seen in observer.seen.values()], namespace


def wave_status(item: dict[str, Any], stamp: str) -> dict[str, Any]:
    """What a breach writes to a case: its conditions (messages changed by ``stamp``) and
    its firstResponse."""
    status = item["status"]
    conditions = [{**c, "message": f"{c['message'][:200]} {stamp}"}
                  for c in status["conditions"]]
    return {"conditions": conditions, "firstResponse": status["firstResponse"]}


def case_ref(item: dict[str, Any], namespace: str) -> api.ObjectRef:
    return api.ObjectRef(constants.API_VERSION, "SupportCase", "supportcases",
                         item["metadata"]["name"], namespace)


async def raw_status_wave(client: api.Client, namespace: str) -> float:
    """Seconds for a plain client to write the same number of statuses to the same cases,
    as the operator does at a breach: the API server's limit on this machine."""
    items = (await client.request("GET", bc.CASES.format(namespace=namespace)))["items"]
    stamp = f"{time.time():.3f}"

    def job(item: dict[str, Any]) -> Any:
        async def run() -> None:
            await client.patch_status(case_ref(item, namespace), wave_status(item, stamp),
                                      None)
        return run

    began = time.time()
    await bc.bounded((job(item) for item in items), 8)
    return time.time() - began


async def raw_status_wave_inline(client: api.Client, namespace: str) -> float:
    """The same wave on copies of the cases that hold their diagnostics inline, as every case
    did before the shared diagnostics snapshot: what the API server
    needed for a breach wave before."""
    items = (await client.request("GET", bc.CASES.format(namespace=namespace)))["items"]
    held = items[0]["status"].get("diagnostics") or {}
    inline = dict(held)
    if held.get("snapshot"):
        snapshot = await client.request(
            "GET", f"/api/v1/namespaces/fluxsupport-system/configmaps/{held['snapshot']}")
        inline = {key: value for key, value in held.items() if key not in ("snapshot",
                                                                           "summary")}
        inline.update(json.loads(snapshot["data"]["diagnostics.json"]))
    copies = f"inline-{uuid.uuid4().hex[:8]}"
    await bc.create_namespace(client, copies)

    def copy(item: dict[str, Any]) -> Any:
        async def run() -> None:
            name = item["metadata"]["name"]
            await client.request("POST", bc.CASES.format(namespace=copies),
                                 bc.case_body(name, copies, "Urgent"))
            ref = api.ObjectRef(constants.API_VERSION, "SupportCase", "supportcases", name,
                                copies)
            await client.patch_status(ref, {**item["status"], "diagnostics": inline}, None)
        return run

    await bc.bounded((copy(item) for item in items), CONCURRENCY)
    try:
        return await raw_status_wave(client, copies)
    finally:
        await bc.delete_cases(client, copies)


# ---- 4. memory and resume -----------------------------------------------------------------

def rss_mb(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


async def load_many(client: api.Client, cases: int, bulletins: int) -> None:
    namespace = f"mem-{uuid.uuid4().hex[:8]}"
    await bc.create_namespace(client, namespace)
    observer = bc.Observer(client, bc.CASES.format(namespace=namespace), bc.has_deadline)
    await observer.start()

    await create_cases(client, namespace, cases, "Low")
    await create_bulletins(client, bulletins, f"mem-{namespace[-4:]}")
    await observer.wait_count(cases, timeout=1200)
    await observer.stop()


#: The two families resume_time counts: the operator collects only what a scrape names, not
#: the per-case deadline series (about 1 s of its CPU to collect and render at 10,000 cases).
COUNTS_QUERY = "?name[]=supportcase_open_cases&name[]=fluxsupport_bulletin_patch_overdue"


def _metrics_counts(metrics_url: str) -> tuple[int, int]:
    try:
        with urllib.request.urlopen(metrics_url + COUNTS_QUERY, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return 0, 0
    cases = sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
                if line.startswith("supportcase_open_cases{"))
    bulletins = sum(1 for line in text.splitlines()
                    if line.startswith("fluxsupport_bulletin_patch_overdue{"))
    return cases, bulletins


async def resume_time(client: api.Client, operator: harness.OperatorProcess) -> float:
    """Restart the operator; seconds until it has evaluated every case and bulletin."""
    cases = 0
    for item in (await client.request("GET", f"/apis/{constants.API_VERSION}/supportcases"))[
            "items"]:
        state = ((item.get("status") or {}).get("firstResponse") or {}).get("state")
        cases += 1 if state and not (item.get("status") or {}).get("closure") else 0
    bulletins = len((await client.request("GET", bc.BULLETINS))["items"])
    operator.stop()
    began = time.time()
    operator.start(wait_ready=False)
    while True:
        asked = time.time()
        seen_cases, seen_bulletins = _metrics_counts(operator.metrics_url)
        if seen_cases >= cases and seen_bulletins >= bulletins:
            return time.time() - began
        # Polled every 50 ms, the full /metrics took half the operator's samples (py-spy,
        # bench/RESULTS.md); the names above take far less, but the poll stays bounded by
        # what it costs.
        await asyncio.sleep(max(0.25, 4 * (time.time() - asked)))


def spread(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "trials": [round(v, 6) for v in values]}


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))
