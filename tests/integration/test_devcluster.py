"""``fluxsupport devcluster up|down|env``: real processes, and none left behind."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

from tests import harness


def _control_plane_pids(marker: pathlib.Path) -> list[int]:
    """Live (non-zombie) etcd/kube-apiserver processes whose command line mentions ``marker``."""
    found = []
    for proc in pathlib.Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            state = (proc / "stat").read_text().split()[2]
        except OSError:
            continue
        if str(marker) in cmdline and ("etcd" in cmdline or "kube-apiserver" in cmdline) \
                and state != "Z":
            found.append(int(proc.name))
    return found


def _fluxsupport(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fluxsupport", *args], env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_up_version_down_leaves_no_process(tmp_path: pathlib.Path) -> None:
    state_dir = tmp_path / "devcluster"
    env = {**os.environ, "FLUXSUPPORT_DEVCLUSTER_DIR": str(state_dir)}
    started = _fluxsupport("devcluster", "up", env=env)
    assert started.returncode == 0, started.stderr
    try:
        export_line = started.stdout.strip().splitlines()[-1]
        assert export_line == f"export KUBECONFIG={state_dir / 'kubeconfig'}"
        assert _fluxsupport("devcluster", "env", env=env).stdout.strip() == export_line

        version = json.loads(harness.kubectl(state_dir / "kubeconfig", "version",
                                             "-o", "json").stdout)
        print(f"kubectl version against the devcluster: {version['serverVersion']['gitVersion']}")
        assert version["serverVersion"]["gitVersion"].startswith("v1.")
        assert len(_control_plane_pids(state_dir)) == 2
        again = _fluxsupport("devcluster", "up", env=env)
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip() == export_line
    finally:
        stopped = _fluxsupport("devcluster", "down", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped etcd, kube-apiserver" in stopped.stderr
    assert _control_plane_pids(state_dir) == []
    assert not state_dir.exists()
    assert _fluxsupport("devcluster", "env", env=env).returncode == 2


def test_killed_parent_takes_the_control_plane_with_it(tmp_path: pathlib.Path) -> None:
    """A test run killed with SIGKILL must not leave etcd or kube-apiserver behind."""
    script = (
        "import pathlib, sys, time\n"
        "from fluxsupport.devcluster import cluster\n"
        "plane = cluster.up(pathlib.Path(sys.argv[1]), attached=True)\n"
        "print('up', flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "cp")],
                              stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    assert parent.stdout.readline().strip() == "up"
    assert len(_control_plane_pids(tmp_path)) == 2
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=10)
    deadline = time.monotonic() + 15
    while _control_plane_pids(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _control_plane_pids(tmp_path) == []
