"""Where the API server spends a wave of breach writes: CPU per process, and a pprof profile.

    python -m bench.apiserver_profile      (or: make bench-profile)

A wave of 500 breaches is bounded by the API server, not by the operator: this shows it.
It writes 500 cases' statuses the way the operator does at a breach (from a plain client, the
operator stopped), for 5 s, while it samples the CPU time of kube-apiserver, etcd and the
client, and takes a CPU profile from the API server's /debug/pprof. It writes the profile to
``bench/results/apiserver.pprof`` and prints the share of the cumulative time of the steps
of a status update.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

from bench import client as bc
from bench import scenarios as sc

RESULTS = pathlib.Path(__file__).parent / "results"
PROFILE_SECONDS = 6
WAVES_SECONDS = 5

#: Steps of a status PATCH in kube-apiserver, by the function that covers each.
STEPS = {
    "status update, whole (registry Store.Update)": "registry.(*Store).Update",
    "decode the stored object and apply the patch": "(*patcher).applyPatch",
    "schema validation of the new status": "customResourceValidator.ValidateStatusUpdate",
    "managedFields bookkeeping": "(*FieldManager).Update",
    "JSON encoding (storage and responses)": "encoding/json.Marshal",
    "decoding for watchers": "(*watchChan).transform",
    "garbage collection (background)": "runtime.gcBgMarkWorker",
}


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pid_of(pattern: str) -> int:
    return int(subprocess.check_output(["pgrep", "-f", pattern]).split()[0])


def step_shares(profile: pathlib.Path) -> dict[str, float]:
    """Cumulative share of each step in the profile, from ``go tool pprof -top -cum``."""
    if shutil.which("go") is None:
        raise SystemExit(f"The profile is in {profile}; reading it needs the Go toolchain on "
                         "PATH (go tool pprof), as building the control plane does.")
    top = subprocess.run(["go", "tool", "pprof", "-top", "-cum", "-nodecount=1000", str(profile)],
                         capture_output=True, text=True, check=True).stdout
    shares: dict[str, float] = {}
    for label, function in STEPS.items():
        for line in top.splitlines():
            if line.rstrip().endswith(function) or f" {function}" in line:
                shares[label] = float(line.split()[4].rstrip("%"))
                break
    return shares


async def measure(workdir: pathlib.Path) -> dict[str, object]:
    async with sc.control_plane(workdir) as setup:
        client, operator, plane = setup.client, setup.operator, setup.plane
        operator.start()
        lags, namespace = await sc.breach_precision(client, 500, operator, setup.policy_path,
                                                    False)
        operator.stop()

        apiserver = pid_of(f"kube-apiserver.*--secure-port={plane.apiserver_port}")
        etcd = pid_of(f"etcd.*{plane.etcd_port}")
        RESULTS.mkdir(exist_ok=True)
        profile_path = RESULTS / "apiserver.pprof"
        with profile_path.open("wb") as out:
            profiler = subprocess.Popen(
                [str(pathlib.Path(sys.executable).parent / "kubectl"),
                 "--kubeconfig", str(plane.kubeconfig), "get", "--raw",
                 f"/debug/pprof/profile?seconds={PROFILE_SECONDS}"], stdout=out)
            await asyncio.sleep(0.5)
            before = [cpu_seconds(pid) for pid in (apiserver, etcd, os.getpid())]
            began = time.time()
            waves = []
            while time.time() - began < WAVES_SECONDS:
                waves.append(await sc.raw_status_wave(client, namespace))
            elapsed = time.time() - began
            after = [cpu_seconds(pid) for pid in (apiserver, etcd, os.getpid())]
            profiler.wait(timeout=60)
        items = (await client.request("GET", bc.CASES.format(namespace=namespace)))["items"]
    cores = [(b - a) / elapsed for a, b in zip(before, after, strict=True)]
    sample = items[0]
    return {
        "operator_breach_p99_s": sc.percentile(lags, 0.99),
        "raw_waves_s": waves,
        "cores_busy": dict(zip(("kube-apiserver", "etcd", "client"), cores, strict=True)),
        "cpus": os.cpu_count(),
        "case_bytes": len(json.dumps(sample)),
        "managed_fields_bytes": len(json.dumps(sample["metadata"].get("managedFields"))),
        "status_bytes": len(json.dumps(sample["status"])),
        "steps_cum_percent": step_shares(profile_path),
        "profile": str(profile_path),
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="fluxsupport-apiprofile-") as workdir:
        result = asyncio.run(measure(pathlib.Path(workdir)))
    print(json.dumps(result, indent=2))
    (RESULTS / "apiserver-profile.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
