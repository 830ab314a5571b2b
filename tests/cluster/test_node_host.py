"""The node leaves the host as it found it: after a normal stop, after the process that started
it is killed (a crashed test run), after Ctrl-C, and after its keeper itself is killed (then the
next node to take the slot cleans up).

Each test starts a node of its own (in a free slot, next to the session's node if that runs),
runs a Pod on it, then compares the host before and after: links, addresses, routes, /run/netns,
/var/lib/cni, mounts, cgroups, iptables rules, the kernel settings kubelet and kube-proxy would
change, the folders their defaults would create, and every process of the node.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from fluxsupport.devcluster import node
from tests import harness

pytestmark = pytest.mark.localnode

#: Folders that kubelet, containerd, runc or the CNI plugins create by default.
DEFAULT_PATHS = ("/run/netns", "/var/lib/cni", "/var/lib/kubelet", "/var/lib/containerd",
                 "/run/containerd", "/var/log/pods", "/var/log/containers", "/opt/containerd",
                 "/usr/libexec/kubernetes", "/etc/cni", "/run/runc", "/run/xtables.lock",
                 "/etc/kubernetes", "/var/run/netns")
#: Host-wide settings: kubelet's tunables, and kube-proxy's conntrack ones.
SYSCTLS = (*node.KUBELET_TUNABLES, "net/netfilter/nf_conntrack_max",
           "net/netfilter/nf_conntrack_tcp_timeout_established",
           "net/netfilter/nf_conntrack_tcp_timeout_close_wait", "net/ipv4/ip_forward",
           "net/ipv4/conf/all/route_localnet", "net/bridge/bridge-nf-call-iptables")
HELPER = """
import json, pathlib, sys, time
from fluxsupport.devcluster import node
started = node.Node(pathlib.Path(sys.argv[1]))
try:
    started.start()
    print(json.dumps(started.info), flush=True)
    time.sleep(3600)
finally:
    started.stop()
"""


def _lines(*args: str) -> list[str]:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=False)
    return sorted(line.strip() for line in done.stdout.splitlines()
                  if line.strip() and not line.startswith("#"))


def _listing(path: str) -> list[str] | None:
    root = pathlib.Path(path)
    if not root.exists():
        return None
    if not root.is_dir():
        return [root.name]
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def host_state() -> dict[str, Any]:
    mounts = []
    for line in pathlib.Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        mounts.append(f"{fields[4]} {line.split(' - ', 1)[1].split()[0]}")
    cgroups = sorted(str(p) for mount, _ in node.cgroup_mounts()
                     for p in mount.iterdir() if p.is_dir())
    sysctls = {}
    for name in SYSCTLS:
        path = pathlib.Path("/proc/sys") / name
        sysctls[name] = path.read_text().strip() if path.exists() else None
    # Counters change with the host's traffic; the rules must not.
    iptables = [re.sub(r"\[\d+:\d+\]", "", line) for line in _lines("iptables-save")]
    return {
        "links": [line.split(":")[1].strip().split("@")[0]
                  for line in _lines("ip", "-o", "link", "show")],
        "addresses": _lines("ip", "-o", "addr", "show"),
        "routes": _lines("ip", "route", "show", "table", "all")
        + _lines("ip", "-6", "route", "show", "table", "all"),
        "netns": _listing("/run/netns"),
        "var_lib_cni": _listing("/var/lib/cni"),
        "mounts": sorted(mounts),
        "cgroups": cgroups,
        "iptables": sorted(iptables),
        "sysctls": sysctls,
        "paths": {path: os.path.lexists(path) for path in DEFAULT_PATHS},
    }


def _foreign(line: str, ours: int) -> bool:
    """A line about another slot's node (another run on this machine), not ours."""
    for match in re.finditer(r"fsnode(\d+)|fluxsupport-node-(\d+)|10\.(2[0-3]\d)\.", line):
        number = int(match.group(1) or match.group(2) or int(match.group(3)) - node.FIRST_OCTET)
        if number != ours:
            return True
    return False


def differences(before: dict[str, Any], after: dict[str, Any], slot: int) -> list[str]:
    found = []
    for key, old in before.items():
        new = after[key]
        if isinstance(old, list) and isinstance(new, list):
            for line in sorted(set(old) ^ set(new)):
                if not _foreign(line, slot):
                    found.append(f"{key}: {'+' if line in new else '-'} {line}")
        elif old != new:
            if isinstance(old, dict) and isinstance(new, dict):
                for item in sorted(set(old) | set(new)):
                    if old.get(item) != new.get(item):
                        found.append(f"{key}[{item}]: {old.get(item)!r} -> {new.get(item)!r}")
            else:
                found.append(f"{key}: {old!r} -> {new!r}")
    return found


def node_processes(info: dict[str, Any], net_inode: int | None) -> list[str]:
    """Processes of the node: in its network namespace, its cgroups, or running from its
    state directory."""
    slot = node.Slot(int(info["slot"]))
    state = str(pathlib.Path(info["kubeconfig"]).parent)
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
            cgroup = (entry / "cgroup").read_text()
            inode = os.stat(entry / "ns" / "net").st_ino
            zombie = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            continue
        if zombie:  # exited; only its parent's wait is missing
            continue
        if (f"/{slot.name}/" in cgroup or cgroup.rstrip().endswith(f"/{slot.name}")
                or state in cmdline or (net_inode is not None and inode == net_inode)):
            found.append(f"{entry.name} {cmdline[:120]}")
    return found


def run_pod(started: node.Node, name: str = "sleeper") -> None:
    """A Pod of the pause image: a sandbox, a CNI network namespace, a container."""
    pause = json.loads((started.layout.images / "pause.json").read_text())["reference"]
    started.kubectl("run", name, f"--image={pause}", "--restart=Never",
                    "--image-pull-policy=Never")
    started.kubectl("wait", f"pod/{name}", "--for=condition=Ready", "--timeout=120s",
                    timeout=150)


def _net_inode(info: dict[str, Any]) -> int:
    return os.stat(f"/proc/{info['supervisor']}/ns/net").st_ino


def check_host_unchanged(before: dict[str, Any], info: dict[str, Any],
                         net_inode: int) -> None:
    def settled() -> list[str] | None:
        problems = differences(before, host_state(), int(info["slot"]))
        problems += [f"process: {p}" for p in node_processes(info, net_inode)]
        return problems or None

    # Teardown is over when the keeper exits; give the kernel a moment to release the rest.
    deadline = time.monotonic() + 20
    while (problems := settled()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not problems, "\n".join(problems)


@pytest.fixture
def host_before() -> dict[str, Any]:
    return host_state()


def test_a_stopped_node_leaves_the_host_unchanged(tmp_path: pathlib.Path,
                                                  host_before: dict[str, Any],
                                                  figure: Any) -> None:
    started = node.Node(tmp_path / "state")
    begun = time.monotonic()
    started.start()
    up = time.monotonic() - begun
    try:
        info, net_inode = dict(started.info), _net_inode(started.info)
        run_pod(started)
        during = host_state()
        # While it runs: no kernel setting changed, no mount of the node is visible here, and
        # the node's range is routed to its veth, nowhere else.
        assert during["sysctls"] == host_before["sysctls"]
        assert not [m for m in set(during["mounts"]) - set(host_before["mounts"])
                    if not _foreign(m, started.slot.number)]
        routes = [r for r in during["routes"] if str(started.slot.node_range) in r]
        assert routes == [f"{started.slot.node_range} via {started.slot.namespace_ip} dev "
                          f"{started.slot.host_link}"], during["routes"]
        inside = subprocess.run([*started.enter(), "ip", "route"], capture_output=True,
                                text=True, check=True).stdout
        assert "default" not in inside, inside
    finally:
        begun = time.monotonic()
        started.stop()
        down = time.monotonic() - begun
    check_host_unchanged(host_before, info, net_inode)
    figure(f"node up {up:.1f} s, teardown {down:.1f} s, host unchanged")


@pytest.fixture
def helper(tmp_path: pathlib.Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    """A process that starts a node and waits, to be killed or interrupted by the test."""
    process = subprocess.Popen([sys.executable, "-c", HELPER, str(tmp_path / "state")],
                               stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    try:
        info = json.loads(line)
        yield process, info
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=60)


def _keeper_gone(info: dict[str, Any]) -> None:
    harness.wait_for(lambda: not node.pid_alive(int(info["keeper"])), timeout=90,
                     interval=0.2, what="the keeper to finish its cleanup")


def test_a_killed_test_run_leaves_the_host_unchanged(
        host_before: dict[str, Any],
        helper: tuple[subprocess.Popen[str], dict[str, Any]]) -> None:
    process, info = helper
    net_inode = _net_inode(info)
    started = node.Node.load(pathlib.Path(info["kubeconfig"]).parent)
    run_pod(started)
    process.kill()  # SIGKILL: no finally runs; the keeper learns of it through PDEATHSIG
    _keeper_gone(info)
    check_host_unchanged(host_before, info, net_inode)


def test_ctrl_c_leaves_the_host_unchanged(
        host_before: dict[str, Any],
        helper: tuple[subprocess.Popen[str], dict[str, Any]]) -> None:
    process, info = helper
    net_inode = _net_inode(info)
    os.killpg(process.pid, signal.SIGINT)  # what the terminal sends to the foreground group
    process.wait(timeout=120)
    _keeper_gone(info)
    check_host_unchanged(host_before, info, net_inode)


def test_a_killed_keeper_is_cleaned_up_by_the_next_node_in_its_slot(
        tmp_path: pathlib.Path, host_before: dict[str, Any],
        helper: tuple[subprocess.Popen[str], dict[str, Any]]) -> None:
    process, info = helper
    run_pod(node.Node.load(pathlib.Path(info["kubeconfig"]).parent))
    os.kill(int(info["keeper"]), signal.SIGKILL)  # no cleanup at all
    process.kill()
    _keeper_gone(info)
    # Found through the node's cgroups (no process is left to name its network namespace).
    leftovers = [line.split()[0] for line in node_processes(info, None)]
    assert leftovers, "the Pod's processes outlive a killed keeper"
    successor = node.Node(tmp_path / "successor", slot=int(info["slot"]))
    successor.start()
    try:
        alive = [pid for pid in leftovers if node.pid_alive(int(pid))]
        assert not alive, f"the next node in slot {info['slot']} left {alive} running"
        run_pod(successor)
        after, inode = dict(successor.info), _net_inode(successor.info)
    finally:
        successor.stop()
    check_host_unchanged(host_before, after, inode)
    assert node_processes(info, None) == []
