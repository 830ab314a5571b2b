"""What a SupportCase costs the API server: the bytes etcd stores, and the CPU of a status write
by patch type.

    python -m bench.object_size        (or: make bench-size)

A wave of breaches is bounded by the API server, which decodes, patches, validates and
re-encodes the stored object for every write and sends it to every watcher: the size of that
object is the cost. This reads the values etcd stores (its JSON gateway, /v3/kv/range), splits
one into its parts (managedFields, spec, each status block), and compares merge patch, JSON
patch and server-side apply on the status subresource: API server and etcd CPU per write, and
the managedFields each leaves behind. The figures go into bench/results/latest.json
(``bytes_per_case`` and ``figures.object_size``) next to the others.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import pathlib
import statistics
import tempfile
import time
import urllib.request
import uuid
from typing import Any

from bench import apiserver_profile as ap
from bench import client as bc
from bench import scenarios as sc
from fluxsupport import constants
from fluxsupport.devcluster import cluster
from fluxsupport.kube import api

RESULTS = pathlib.Path(__file__).parent / "results" / "latest.json"
PATCH_TYPES = ("merge", "json", "apply")


def etcd_value(etcd_port: int, key: str) -> bytes:
    """The value etcd holds under ``key`` (custom resources are stored as JSON)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{etcd_port}/v3/kv/range",
        data=json.dumps({"key": base64.b64encode(key.encode()).decode()}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        kvs = json.loads(response.read()).get("kvs") or []
    if not kvs:
        raise KeyError(key)
    return base64.b64decode(kvs[0]["value"])


def case_key(namespace: str, name: str) -> str:
    return f"/registry/{constants.GROUP}/supportcases/{namespace}/{name}"


def compact(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")))


def breakdown(stored: bytes) -> dict[str, int]:
    """Bytes of each part of a stored object, as compact JSON (which is how it is stored)."""
    body = json.loads(stored)
    metadata = dict(body.get("metadata") or {})
    managed = metadata.pop("managedFields", [])
    parts = {"total": len(stored), "metadata.managedFields": compact(managed),
             "metadata (rest)": compact(metadata), "spec": compact(body.get("spec") or {})}
    for key, value in sorted((body.get("status") or {}).items()):
        parts[f"status.{key}"] = compact(value)
    return parts


def sizes(etcd_port: int, namespace: str, names: list[str]) -> list[int]:
    return [len(etcd_value(etcd_port, case_key(namespace, name))) for name in names]


async def _write(client: api.Client, kind: str, ref: api.ObjectRef,
                 status: dict[str, Any]) -> None:
    if kind == "merge":
        await client.request("PATCH", ref.path + "/status", {"status": status},
                             "application/merge-patch+json")
    elif kind == "json":
        await client.request("PATCH", ref.path + "/status", [
            {"op": "replace", "path": f"/status/{key}", "value": value}
            for key, value in status.items()], "application/json-patch+json")
    else:
        body = {"apiVersion": constants.API_VERSION, "kind": "SupportCase",
                "metadata": {"name": ref.name, "namespace": ref.namespace},
                "status": status}
        await client.request("PATCH", ref.path + "/status?fieldManager=bench&force=true",
                             body, "application/apply-patch+yaml")


async def patch_costs(client: api.Client, plane: cluster.ControlPlane, namespace: str,
                      items: list[dict[str, Any]]) -> dict[str, Any]:
    """For each patch type: the wave's wall time and API server + etcd CPU per write, writing
    to every case the conditions and firstResponse it has (a new message stamp each time),
    and the managedFields bytes a case carries afterwards."""
    apiserver = ap.pid_of(f"kube-apiserver.*--secure-port={plane.apiserver_port}")
    etcd = ap.pid_of(f"etcd.*{plane.etcd_port}")
    results: dict[str, Any] = {}
    for kind in PATCH_TYPES:
        trials = []
        for _ in range(3):
            stamp = f"{time.time():.3f}"

            def job(item: dict[str, Any], stamp: str = stamp, kind: str = kind) -> Any:
                async def run() -> None:
                    await _write(client, kind, sc.case_ref(item, namespace),
                                 sc.wave_status(item, stamp))
                return run

            cpu_before = ap.cpu_seconds(apiserver) + ap.cpu_seconds(etcd)
            began = time.time()
            await bc.bounded((job(item) for item in items), 8)
            wall = time.time() - began
            cpu = ap.cpu_seconds(apiserver) + ap.cpu_seconds(etcd) - cpu_before
            trials.append({"wall_s": wall, "cpu_ms_per_write": cpu * 1000 / len(items)})
        stored = etcd_value(plane.etcd_port, case_key(namespace, items[0]["metadata"]["name"]))
        results[kind] = {
            "wall_s": statistics.median(t["wall_s"] for t in trials),
            "cpu_ms_per_write": statistics.median(t["cpu_ms_per_write"] for t in trials),
            "trials": trials, "parts_after": breakdown(stored)}
    return results


async def measure(client: api.Client, plane: cluster.ControlPlane, namespace: str
                  ) -> dict[str, Any]:
    """Sizes of the breached cases in ``namespace`` (as the operator left them), one case
    taken apart, and the patch-type comparison on those cases."""
    items = (await client.request("GET", bc.CASES.format(namespace=namespace)))["items"]
    names = [item["metadata"]["name"] for item in items]
    stored = sizes(plane.etcd_port, namespace, names)
    sample = etcd_value(plane.etcd_port, case_key(namespace, names[0]))
    return {"bytes_per_case": statistics.median(stored),
            "bytes_min": min(stored), "bytes_max": max(stored), "n": len(stored),
            "parts": breakdown(sample),
            "patch_types": await patch_costs(client, plane, namespace, items)}


async def run(workdir: pathlib.Path, count: int) -> dict[str, Any]:
    async with sc.control_plane(workdir) as setup:
        await sc.install_flux(setup.client)
        _, namespace = await sc.breach_precision(setup.client, count, setup.operator,
                                                 setup.policy_path, False)
        setup.operator.stop()
        return await measure(setup.client, setup.plane, namespace)


def merge_into(path: pathlib.Path, figures: dict[str, Any]) -> None:
    results = json.loads(path.read_text()) if path.exists() else {}
    results["bytes_per_case"] = figures["bytes_per_case"]
    results.setdefault("figures", {})["object_size"] = figures
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


def print_figures(figures: dict[str, Any]) -> None:
    print(f"bytes stored per case (median of {figures['n']}): {figures['bytes_per_case']}")
    for part, size in figures["parts"].items():
        print(f"  {part:<32}{size:>8}")
    print(f"{'patch type':<12}{'wall s':>8}{'CPU ms/write':>14}{'managedFields B':>17}")
    for kind, cost in figures["patch_types"].items():
        print(f"{kind:<12}{cost['wall_s']:>8.2f}{cost['cpu_ms_per_write']:>14.2f}"
              f"{cost['parts_after']['metadata.managedFields']:>17}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=500)
    parser.add_argument("--output", type=pathlib.Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix=f"fluxsupport-size-{uuid.uuid4().hex[:4]}-") as tmp:
        figures = asyncio.run(run(pathlib.Path(tmp), args.cases))
    merge_into(args.output, figures)
    print_figures(figures)


if __name__ == "__main__":
    main()
