"""`fluxsupport demo --node --once`: the operator and Flux's controllers as Pods on a node of
the demo's own, the samples reconciled, the report printed, and the node gone afterwards."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time
from typing import Any

import pytest

from fluxsupport.devcluster import images, node

pytestmark = pytest.mark.localnode


def test_demo_runs_the_operator_and_flux_as_pods_and_stops_its_node(
        tmp_path: pathlib.Path, figure: Any) -> None:
    if not images.operator_archive().is_file():
        pytest.fail(f"{images.operator_archive()} is missing: run `make image`")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "fluxsupport", "demo", "--node", "--once"],
                          env={**os.environ, "FLUXSUPPORT_DEMO_DIR": str(tmp_path / "demo")},
                          capture_output=True, text=True, timeout=900, check=False)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-4000:]
    for controller in ("source-controller", "kustomize-controller", "helm-controller"):
        assert f"imageID localhost/{controller}@sha256:" in done.stderr, done.stderr[-3000:]
    assert "The operator runs as Pod fluxsupport-" in done.stderr
    assert "Security bulletin verdicts" in done.stdout
    assert done.stdout.count("<case-") == 3, done.stdout  # the demo's three cases, emailed
    info = tmp_path / "demo" / "node" / "node.json"
    assert not info.exists(), "the node's record outlives the demo"
    state = str(tmp_path / "demo" / "node")
    leftovers = [p.name for p in pathlib.Path("/proc").iterdir() if p.name.isdigit()
                 and node.pid_alive(int(p.name)) and state in _cmdline(p)]
    assert not leftovers, leftovers
    figure(f"fluxsupport demo --node --once: {elapsed:.0f} s from start to a clean stop")


def _cmdline(process: pathlib.Path) -> str:
    try:
        return (process / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
