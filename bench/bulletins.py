"""``python -m bench.bulletins [--quick]``: the bulletin path at scale.

How long after a Deployment image change the affected SecurityBulletins show the new verdict,
with 1,000 bulletins (200 with ``--quick``) that each reference a real-size OpenVEX document
(about 1 MB, generated from the distribution's real ``vex/v2.7.json``), and what each bulletin
costs the operator in memory (RSS delta over the bulletins, divided by their number).

The bulletins spread over the seven Flux components the fixture installs, as a vendor's
history of bulletins would: most fix older release lines (Fixed whatever runs), a few
(``TRACKED``) fix source-controller v1.7.4 at the digest the fixture runs, so they flip
between Fixed and Vulnerable when the benchmark moves source-controller between the fix and
the pre-fix build. A trial is one such flip: the latency is until the last tracked bulletin
shows the new verdict in its status (``bulletin_detect_p99_ms`` is the p99 over trials); the
time until every bulletin that concerns source-controller shows the new digest is reported
too. The operator CPU must be idle between trials, so one flip never overlaps the next.

Writes ``bulletin_detect_p99_ms`` and ``n_bulletins`` at the top level of
bench/results/latest.json and its trials under ``figures``, keeping every other key (read,
update, write), as bench/cli_startup.py does. ``python -m bench`` can call
``bulletin_detection(client, operator, n_bulletins, trials)`` with its own control plane.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import datetime
import gc
import hashlib
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable
from typing import Any

from packageurl import PackageURL
from tests import fixtures, harness

from bench import client as bc
from bench import scenarios as sc
from fluxsupport import constants
from fluxsupport.domain import vex
from fluxsupport.kube import api

ROOT = pathlib.Path(__file__).resolve().parents[1]
OPERATOR_NAMESPACE = "fluxsupport-system"
REAL_VEX = fixtures.UPSTREAM / "vex" / "v2.7.json"
#: Under the ConfigMap limit (1 MiB for all its data) and vex.MAX_DOCUMENT_BYTES.
DOCUMENT_BYTES = 1_000_000
#: Distinct documents; bulletin i references document i % DOCUMENTS (a vendor publishes one
#: document per release line, which many bulletins share).
DOCUMENTS = 4
#: Bulletins that flip with source-controller's image; they are spread over the whole set.
TRACKED = 20
COMPONENTS = ("source-controller", "kustomize-controller", "helm-controller",
              "notification-controller", "image-reflector-controller",
              "image-automation-controller", "flux-operator")
REPOSITORY = "ghcr.io/controlplaneio-fluxcd/distroless/{component}"
DEPLOYMENT = "/apis/apps/v1/namespaces/flux-system/deployments/source-controller"
CONFIGMAPS = f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/configmaps"
RUN_LABEL = "bench.fluxsupport.io/run"
SIZES = {"quick": {"n_bulletins": 200, "trials": 10},
         "full": {"n_bulletins": 1000, "trials": 20}}


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- the data ------------------------------------------------------------------------------

def cve(index: int) -> str:
    return f"CVE-2026-{80000 + index}"


def component_of(index: int) -> str:
    return COMPONENTS[index % len(COMPONENTS)]


def tracked_indexes(count: int) -> set[int]:
    """Source-controller bulletins (index % 7 == 0), TRACKED of them evenly spread."""
    candidates = list(range(0, count, len(COMPONENTS)))
    wanted = min(TRACKED, len(candidates))
    step = len(candidates) / wanted
    return {candidates[int(i * step)] for i in range(wanted)}


def _renamed(purl_text: str, suffix: str) -> str:
    """The same kind of product under another name: a distinct product for every copy."""
    try:
        purl = PackageURL.from_string(purl_text)
    except ValueError:
        return purl_text + suffix
    return PackageURL(type=purl.type, namespace=purl.namespace, name=purl.name + suffix,
                      version=purl.version, qualifiers=purl.qualifiers,
                      subpath=purl.subpath).to_string()


def real_size_document(number: int, bulletins: int, tracked: set[int]) -> str:
    """The real v2.7 document, its statements repeated with distinct products (and CVE ids
    from a pool of 400) up to DOCUMENT_BYTES, plus statements on the bulletins that reference
    it: not_affected for every fourth, a version-less fixed (which must not count) for the
    next. Pretty-printed like the original."""
    base = json.loads(REAL_VEX.read_text())
    real = base["statements"]
    own = []
    for index in range(number, bulletins, DOCUMENTS):
        if index in tracked:
            continue
        product = [{"@id": f"pkg:oci/{component_of(index)}"}]
        if index % 4 == 1:
            own.append({"vulnerability": {"name": cve(index)}, "products": product,
                        "status": "not_affected",
                        "justification": "vulnerable_code_not_in_execute_path",
                        "impact_statement": "Benchmark: the code is not executed."})
        elif index % 4 == 2:
            own.append({"vulnerability": {"name": cve(index)}, "products": product,
                        "status": "fixed"})
    statements = [*real, *own]
    document = {**base, "@id": f"{base['@id']}-bench-{number}", "statements": statements}
    size = len(json.dumps(document, indent=2))
    copies = 0
    while True:
        statement = copy.deepcopy(real[copies % len(real)])
        suffix = f"-bench{number}-{copies}"
        statement["vulnerability"] = {"name": f"CVE-2025-{60000 + copies % 400}"}
        for product in statement["products"]:
            if "@id" in product:
                product["@id"] = _renamed(product["@id"], suffix)
            for sub in product.get("subcomponents") or []:
                if "@id" in sub:
                    sub["@id"] = _renamed(sub["@id"], suffix)
        added = len(json.dumps(statement, indent=2).replace("\n", "\n    ")) + 6
        if size + added > DOCUMENT_BYTES:
            break
        statements.append(statement)
        size += added
        copies += 1
    text = json.dumps(document, indent=2)
    assert len(text.encode()) <= DOCUMENT_BYTES, len(text)
    return text


def bulletin_body(index: int, run: str, tracked: set[int]) -> dict[str, Any]:
    component = component_of(index)
    if index in tracked:
        fixed = sc.FIX["source-controller"]
    else:
        # An older release line, with a made-up digest: Fixed (NewerLine) whatever runs now.
        digest = "sha256:" + hashlib.sha256(f"{run}-{index}".encode()).hexdigest()
        fixed = {"name": REPOSITORY.format(component=component),
                 "newTag": f"v0.{index % 9}.{index % 5}", "digest": digest}
    published = (datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
                 + datetime.timedelta(hours=index)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = fixtures.bulletin_for(
        f"bench-{run}-{index:04d}", cve(index), component, fixed, published=published,
        summary=f"Benchmark bulletin {index} for {component}.",
        vex=[{"configMapKeyRef": {"name": f"bench-vex-{index % DOCUMENTS}", "key": "vex.json"}}])
    body["metadata"]["labels"] = {RUN_LABEL: run, "bench.fluxsupport.io/component": component,
                                  "bench.fluxsupport.io/tracked": str(index in tracked).lower()}
    return body


def document_bytes(text: str) -> dict[str, int]:
    """Bytes a parsed document keeps alive in Python (tracemalloc, in this process), and its
    index of image statements, which the operator keeps instead of the parsed document."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    document = vex.parse_document(text, source="bench")
    gc.collect()
    parsed = tracemalloc.get_traced_memory()[0] - before
    indexed = 0
    index_document = getattr(vex, "index_document", None)
    if index_document is not None:
        index = index_document(document, purl_types=("oci",))
        del document
        gc.collect()
        indexed = tracemalloc.get_traced_memory()[0] - before
        del index
    tracemalloc.stop()
    return {"parsed_document_bytes": parsed, "indexed_document_bytes": indexed}


# ---- the operator --------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_idle(pid: int, timeout: float, window: float = 1.0, share: float = 0.05) -> float:
    """Wait until the operator used under ``share`` of a core for ``window`` seconds; return
    how long that took. The bulletins' work is CPU work in that process."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        used = cpu_seconds(pid)
        await asyncio.sleep(window)
        if cpu_seconds(pid) - used < share * window:
            return time.monotonic() - began
    raise TimeoutError(f"operator still busy after {timeout:.0f} s")


def shows(digest: str, verdict: str | None) -> Callable[[dict[str, Any]], bool]:
    """Whether a bulletin shows source-controller running ``digest`` (with ``verdict``)."""
    def done(obj: dict[str, Any]) -> bool:
        return any(c.get("component") == "source-controller"
                   and digest in (c.get("digests") or [])
                   and (verdict is None or c.get("verdict") == verdict)
                   for c in (obj.get("status") or {}).get("components") or [])
    return done


def watcher(client: api.Client, selector: str,
            done: Callable[[dict[str, Any]], bool]) -> bc.Observer:
    """Watch the bulletins of a label selector (the query goes along with the watch)."""
    return bc.Observer(client, f"{bc.BULLETINS}?labelSelector={selector}", done)


async def set_source_controller(client: api.Client, entry: dict[str, str]) -> None:
    await client.request("PATCH", DEPLOYMENT, {"spec": {"template": {"spec": {"containers": [
        {"name": "manager", "image": sc.pinned(entry)}]}}}},
        "application/strategic-merge-patch+json")


async def put_configmap(client: api.Client, name: str, text: str) -> None:
    body = {"metadata": {"name": name, "namespace": OPERATOR_NAMESPACE},
            "data": {"vex.json": text}}
    try:
        await client.request("POST", CONFIGMAPS, body)
    except api.ApiError as error:
        if error.status != 409:
            raise
        await client.request("PUT", f"{CONFIGMAPS}/{name}", body)


def _evaluated(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    return status.get("observedGeneration") == obj["metadata"].get("generation") and any(
        c.get("type") == "Ready" for c in status.get("conditions") or [])


async def _create(client: api.Client, pid: int, n_bulletins: int, run: str,
                  tracked: set[int], timeout: float) -> dict[str, Any]:
    """Create the bulletins, 8 at a time; how long until each was evaluated and the
    operator idle, and its RSS before and after."""
    rss_before = sc.rss_mb(pid)
    settled = watcher(client, f"{RUN_LABEL}={run}", _evaluated)
    await settled.start()
    began = time.time()

    def create(index: int) -> Any:
        async def job() -> None:
            await client.request("POST", bc.BULLETINS, bulletin_body(index, run, tracked))
        return job

    await bc.bounded((create(i) for i in range(n_bulletins)), 8)
    created_s = time.time() - began
    await settled.wait_count(n_bulletins, timeout=timeout)
    await settled.stop()
    evaluated_s = time.time() - began
    idle_s = await wait_idle(pid, timeout=timeout)
    figures = {"create_s": created_s, "evaluated_s": evaluated_s, "idle_after_s": idle_s,
               "settle_s": time.time() - began, "rss_before_mb": rss_before,
               "rss_after_mb": sc.rss_mb(pid)}
    say(f"bulletins: created in {created_s:.1f} s, all evaluated after {evaluated_s:.1f} s, "
        f"operator idle after {figures['settle_s']:.1f} s; RSS {rss_before:.1f} -> "
        f"{figures['rss_after_mb']:.1f} MB")
    return figures


async def _flips(client: api.Client, pid: int, run: str, tracked: int, concerned: int,
                 trials: int, timeout: float) -> dict[str, list[float]]:
    """Move source-controller between the pre-fix and the fixed build ``trials`` times."""
    detect: list[float] = []
    per_bulletin: list[float] = []
    concerned_ms: list[float] = []
    directions = ((sc.PRE["source-controller"], "Vulnerable"),
                  (sc.FIX["source-controller"], "Fixed"))
    for trial in range(trials):
        entry, wanted = directions[trial % 2]
        flips = watcher(client, f"{RUN_LABEL}={run},bench.fluxsupport.io/tracked=true",
                        shows(entry["digest"], wanted))
        digests = watcher(client, f"{RUN_LABEL}={run},bench.fluxsupport.io/component="
                          "source-controller", shows(entry["digest"], None))
        await flips.start()
        await digests.start()
        began = time.time()
        await set_source_controller(client, entry)
        await flips.wait_count(tracked, timeout=timeout)
        await digests.wait_count(concerned, timeout=timeout)
        await flips.stop()
        await digests.stop()
        detect.append((max(flips.seen.values()) - began) * 1000)
        per_bulletin += [(seen - began) * 1000 for seen in flips.seen.values()]
        concerned_ms.append((max(digests.seen.values()) - began) * 1000)
        say(f"bulletins: trial {trial + 1}/{trials} to {wanted}: {detect[-1]:.0f} ms "
            f"(all {concerned} source-controller bulletins: {concerned_ms[-1]:.0f} ms)")
        await wait_idle(pid, timeout=timeout)
    return {"detect_ms": detect, "detect_per_bulletin_ms": per_bulletin,
            "concerned_ms": concerned_ms}


async def raw_wave(client: api.Client, run: str) -> float:
    """Seconds for a plain client to write once the status of every bulletin that concerns
    source-controller (a changed message, 32 in flight, as the operator's scheduler): what
    one flip writes, at the API server's limit in this run. The operator must be stopped."""
    items = (await client.request("GET", f"{bc.BULLETINS}?labelSelector={RUN_LABEL}={run},"
                                  "bench.fluxsupport.io/component=source-controller"))["items"]
    stamp = f" {time.time():.3f}"

    def job(item: dict[str, Any]) -> Any:
        async def write() -> None:
            components = [{**c, "message": c["message"] + stamp}
                          for c in item["status"]["components"]]
            ref = api.ObjectRef(constants.API_VERSION, constants.BULLETIN_KIND,
                                constants.BULLETIN_PLURAL, item["metadata"]["name"], None)
            await client.patch_status(ref, {"components": components}, None)
        return write

    began = time.time()
    await bc.bounded((job(item) for item in items), 32)
    return time.time() - began


async def bulletin_detection(client: api.Client, operator: harness.OperatorProcess,
                             n_bulletins: int, trials: int, settle_timeout: float = 3600.0,
                             on_trials: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Create ``n_bulletins`` bulletins with real-size OpenVEX documents, then flip
    source-controller ``trials`` times between the pre-fix and the fixed build.

    Needs a control plane with the CRDs and starts the operator if it is not running. Returns
    raw trials: ``detect_ms`` (to the last tracked bulletin's verdict, one per flip),
    ``detect_per_bulletin_ms`` (every tracked bulletin of every flip), ``concerned_ms`` (to
    the last source-controller bulletin showing the new digest), the set-up times and the
    memory figures; ``raw_wave_ms``, the same writes by a plain client with the operator
    stopped (it is started again). The run's bulletins are deleted; the ConfigMaps stay.
    ``on_trials(pid)`` is called once the bulletins are settled, before the first flip (the
    standalone entry starts py-spy there).
    """
    run = uuid.uuid4().hex[:6]
    tracked = tracked_indexes(n_bulletins)
    concerned = len(range(0, n_bulletins, len(COMPONENTS)))
    await sc.install_flux(client)
    await set_source_controller(client, sc.FIX["source-controller"])
    await bc.create_namespace(client, OPERATOR_NAMESPACE)
    say(f"bulletins: {DOCUMENTS} OpenVEX documents of about {DOCUMENT_BYTES:,} bytes")
    documents = [real_size_document(n, n_bulletins, tracked) for n in range(DOCUMENTS)]
    for number, text in enumerate(documents):
        await put_configmap(client, f"bench-vex-{number}", text)
    memory = document_bytes(documents[0])
    if not operator.alive():
        operator.start()
    assert operator.pid is not None
    pid = operator.pid
    await wait_idle(pid, timeout=300)
    say(f"bulletins: creating {n_bulletins} ({len(tracked)} tracked, {concerned} concern "
        "source-controller)")
    setup = await _create(client, pid, n_bulletins, run, tracked, settle_timeout)
    if on_trials is not None:
        on_trials(pid)
    flips = await _flips(client, pid, run, len(tracked), concerned, trials, settle_timeout)
    rss_end = sc.rss_mb(pid)
    say("bulletins: the same writes by a plain client, operator stopped (3 waves)")
    operator.stop()
    raw_ms = [await raw_wave(client, run) * 1000 for _ in range(3)]
    await client.request("DELETE", f"{bc.BULLETINS}?labelSelector={RUN_LABEL}={run}")
    operator.start()
    if trials % 2:  # leave source-controller at the fixed build, as install_flux does
        await set_source_controller(client, sc.FIX["source-controller"])
    return {
        "n_bulletins": n_bulletins, "tracked": len(tracked), "concerned": concerned,
        "documents": DOCUMENTS, "document_bytes": [len(t.encode()) for t in documents],
        **setup, **flips, "raw_wave_ms": raw_ms, "rss_end_mb": rss_end,
        "bytes_per_bulletin": (setup["rss_after_mb"] - setup["rss_before_mb"]) * 1024 * 1024
        / n_bulletins,
        **memory,
    }


def figures_of(result: dict[str, Any]) -> dict[str, Any]:
    """The keys for latest.json: the two top-level ones and the trials under ``figures``."""
    detect, per_bulletin = result["detect_ms"], result["detect_per_bulletin_ms"]
    return {
        "bulletin_detect_p99_ms": sc.percentile(detect, 0.99),
        "n_bulletins": result["n_bulletins"],
        "figures": {
            "bulletin_detect_ms": sc.spread(detect),
            "bulletin_detect_per_bulletin_ms": {
                "p50": sc.percentile(per_bulletin, 0.5), "p99": sc.percentile(per_bulletin, 0.99),
                "samples": len(per_bulletin)},
            "bulletin_concerned_ms": sc.spread(result["concerned_ms"]),
            "bulletin_raw_wave_ms": sc.spread(result["raw_wave_ms"]),
            "bulletin_setup": {key: result[key] for key in (
                "tracked", "concerned", "documents", "document_bytes", "create_s",
                "evaluated_s", "idle_after_s", "settle_s")},
            "bulletin_memory": {
                "bytes_per_bulletin": round(result["bytes_per_bulletin"]),
                "rss_before_mb": result["rss_before_mb"], "rss_after_mb": result["rss_after_mb"],
                "rss_end_mb": result["rss_end_mb"],
                # The documents are shared: their cost is not per bulletin.
                "bytes_per_bulletin_without_documents": round(
                    result["bytes_per_bulletin"]
                    - DOCUMENTS * result["indexed_document_bytes"] / result["n_bulletins"]),
                "parsed_document_bytes": result["parsed_document_bytes"],
                "indexed_document_bytes": result["indexed_document_bytes"]},
        },
    }


def merge_into(path: pathlib.Path, keys: dict[str, Any]) -> None:
    results = json.loads(path.read_text()) if path.exists() else {}
    figures = {**results.get("figures", {}), **keys["figures"]}
    results.update({**keys, "figures": figures})
    results["bulletin_run"] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join([sys.executable, "-m", "bench.bulletins", *sys.argv[1:]]),
        "load_average": os.getloadavg()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


async def _standalone(n_bulletins: int, trials: int, workdir: pathlib.Path,
                      profile: pathlib.Path | None) -> dict[str, Any]:
    async with sc.control_plane(workdir) as setup:
        await sc.install_flux(setup.client)
        setup.operator.start()
        spies: list[subprocess.Popen[bytes]] = []

        def record(pid: int) -> None:
            if profile is None:
                return
            binary = shutil.which("py-spy") or str(pathlib.Path(sys.executable).parent / "py-spy")
            spies.append(subprocess.Popen([binary, "record", "--nonblocking", "--format", "raw",
                                           "-o", str(profile), "-p", str(pid)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        try:
            return await bulletin_detection(setup.client, setup.operator, n_bulletins, trials,
                                            on_trials=record)
        finally:
            for spy in spies:
                spy.send_signal(2)
                spy.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 bulletins, 10 trials")
    parser.add_argument("--bulletins", type=int, help="override the number of bulletins")
    parser.add_argument("--trials", type=int, help="override the number of flips")
    parser.add_argument("--profile", type=pathlib.Path,
                        help="record the operator during the flips with py-spy (raw format)")
    parser.add_argument("--output", type=pathlib.Path,
                        default=ROOT / "bench" / "results" / "latest.json")
    args = parser.parse_args()
    sizes = SIZES["quick" if args.quick else "full"]
    n_bulletins = args.bulletins or sizes["n_bulletins"]
    trials = args.trials or sizes["trials"]
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="fluxsupport-bench-bulletins-") as tmp:
        result = asyncio.run(_standalone(n_bulletins, trials, pathlib.Path(tmp), args.profile))
    keys = figures_of(result)
    merge_into(args.output, keys)
    detect = result["detect_ms"]
    print(f"load average at start {load[0]:.2f}, at end {os.getloadavg()[0]:.2f}")
    print(f"n_bulletins {n_bulletins}, tracked {result['tracked']}, concerned "
          f"{result['concerned']}, documents {DOCUMENTS} x ~{DOCUMENT_BYTES:,} bytes")
    print(f"bulletin_detect_p99_ms {keys['bulletin_detect_p99_ms']:.0f} (median "
          f"{statistics.median(detect):.0f}, min {min(detect):.0f}, max {max(detect):.0f}; "
          f"target < 500)")
    print(f"all {result['concerned']} source-controller bulletins: median "
          f"{statistics.median(result['concerned_ms']):.0f} ms, "
          f"max {max(result['concerned_ms']):.0f} ms; the same writes by a plain client "
          f"(API limit, same run): median {statistics.median(result['raw_wave_ms']):.0f} ms")
    print(f"settle (create + evaluate {n_bulletins}): {result['settle_s']:.1f} s; "
          f"bytes per bulletin {result['bytes_per_bulletin']:,.0f} "
          f"(RSS {result['rss_before_mb']:.1f} -> {result['rss_after_mb']:.1f} MB); "
          f"a parsed document retains {result['parsed_document_bytes']:,} bytes, "
          f"its index of image statements {result['indexed_document_bytes']:,}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
