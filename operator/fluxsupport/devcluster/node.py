"""A real single-node cluster: the control plane, kubelet, containerd and kube-proxy, run
inside a network and mount namespace of their own, so Pods run from locally built images.

Three processes, each with one job:

* the **keeper** (``python -m fluxsupport.devcluster.node keep``) runs on the host. It claims a
  slot (the names and 10.<200+slot>.0.0/16 addresses of one node, so two runs never collide),
  writes certificates and configuration, creates the node's cgroups, starts the supervisor in
  new namespaces, links them to the host with a veth pair, and on SIGTERM, SIGINT or the death of
  its parent (PR_SET_PDEATHSIG) takes everything down again: every process in the node's
  cgroups, the cgroups, the veth (and with it the host's route to the node). A keeper killed with
  SIGKILL leaves its slot's record behind; the next keeper to start reaps it.
* the **supervisor** (``... node supervise``) runs in the new namespaces. It binds folders of
  the state directory over /run and /var and files with kubelet's wanted values over the kernel
  settings kubelet would otherwise change for the whole host, sets up the node's bridge, and
  starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd, kubelet and
  kube-proxy, each dying with it.
* the **caller** (``Node``: the tests, ``fluxsupport devcluster up --node``, the demo) starts the
  keeper and talks to the API server at ``https://10.<200+slot>.1.2:6443``, the namespace's end
  of the veth pair.

Inside the namespace there is no default route: traffic goes to loopback and to the node's own
addresses only. No mount the node makes is visible on the host, no host sysctl changes, and
containerd's, kubelet's and the CNI plugins' files (/run, /var/lib/cni, /var/log/pods ...) land
in the state directory.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import dataclasses
import errno
import fcntl
import ipaddress
import json
import os
import pathlib
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import IO, Any

import yaml

from fluxsupport.devcluster import build, certs, images, paths

#: Slots 0..39 give the ranges 10.200.0.0/16 .. 10.239.0.0/16.
SLOTS = 40
FIRST_OCTET = 200
API_PORT = 6443
CLUSTER_DOMAIN = "cluster.local"
READY_TIMEOUT_S = 240.0
STOP_GRACE_S = 30.0
#: The node's components, in start order (they stop in reverse).
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
              "containerd", "kubelet", "kube-proxy")
CONTAINERD = pathlib.Path("/usr/bin/containerd")
CTR = pathlib.Path("/usr/bin/ctr")
RUNC = pathlib.Path("/usr/sbin/runc")
CNI_BIN = pathlib.Path("/usr/lib/cni")
#: What kubelet writes at start (setupKernelTunables) unless the value is already there. These
#: are host-wide, so inside the node's mount namespace files with these values cover them.
KUBELET_TUNABLES = {"vm/overcommit_memory": "1", "vm/panic_on_oom": "0", "kernel/panic": "10",
                    "kernel/panic_on_oops": "1", "kernel/keys/root_maxkeys": "1000000",
                    "kernel/keys/root_maxbytes": "25000000"}
#: A unix socket path must fit in sockaddr_un (108 bytes with its NUL).
SOCKET_PATH_MAX = 107
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)


class NodeError(RuntimeError):
    """The node could not be started or stopped; the message says why and what to do."""


# -- names and addresses ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Slot:
    """The names and addresses of one node; two nodes on one machine use two slots."""

    number: int

    @property
    def octet(self) -> int:
        return FIRST_OCTET + self.number

    @property
    def name(self) -> str:
        """The Node's name, and the name of its cgroups in every hierarchy."""
        return f"fluxsupport-node-{self.number}"

    @property
    def node_range(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"10.{self.octet}.0.0/16")

    @property
    def node_ip(self) -> str:
        """The bridge ``node0`` in the namespace: the node's InternalIP and the address the
        API server advertises (the ``kubernetes`` Service's endpoint)."""
        return f"10.{self.octet}.0.1"

    @property
    def host_ip(self) -> str:
        return f"10.{self.octet}.1.1"

    @property
    def namespace_ip(self) -> str:
        """The namespace's end of the veth pair: how the host reaches the node."""
        return f"10.{self.octet}.1.2"

    @property
    def pod_cidr(self) -> str:
        return f"10.{self.octet}.128.0/24"

    @property
    def service_cidr(self) -> str:
        return f"10.{self.octet}.64.0/24"

    @property
    def service_ip(self) -> str:
        """The ``kubernetes`` Service's ClusterIP (the range's first address)."""
        return f"10.{self.octet}.64.1"

    @property
    def host_link(self) -> str:
        return f"fsnode{self.number}"

    @property
    def server(self) -> str:
        return f"https://{self.namespace_ip}:{API_PORT}"


def registry_dir() -> pathlib.Path:
    """Each running node's slot record and lock, machine-wide (in the cache, which every
    checkout of this user shares)."""
    return paths.cache_dir() / "node-slots"


# -- small helpers ---------------------------------------------------------------------------

def _die_with_parent(sig: int) -> Callable[[], None]:
    def preexec() -> None:
        _LIBC.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    return preexec


def _run(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                          check=False)
    if check and done.returncode != 0:
        raise NodeError(f"{' '.join(args)} failed ({done.returncode}): "
                        f"{(done.stderr or done.stdout).strip()}")
    return done


def pid_alive(pid: int) -> bool:
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait(probe: Callable[[], bool], timeout: float, what: str,
          alive: Callable[[], None] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None:
            alive()
        if probe():
            return
        if time.monotonic() > deadline:
            raise NodeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def log_tail(path: pathlib.Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class _Stop(Exception):
    """Raised from the SIGTERM/SIGINT handler so that a blocking call returns at once."""


def _raise_stop(_signum: int, _frame: object) -> None:
    raise _Stop


# -- cgroups ------------------------------------------------------------------------------------

def cgroup_mounts() -> list[tuple[pathlib.Path, str]]:
    """(mount point, "cgroup" or "cgroup2") of every cgroup hierarchy the host mounts."""
    found = []
    for line in pathlib.Path("/proc/self/mountinfo").read_text().splitlines():
        _, after = line.split(" - ", 1)
        fstype = after.split()[0]
        if fstype in ("cgroup", "cgroup2"):
            found.append((pathlib.Path(line.split()[4]), fstype))
    return found


def cgroup_dirs(slot: Slot) -> list[pathlib.Path]:
    return [mount / slot.name for mount, _ in cgroup_mounts()]


def create_cgroups(slot: Slot) -> None:
    """The node's cgroup root in every v1 hierarchy, as kubelet's cgroupRoot needs; cpuset's
    copy the root's CPUs and memory nodes (a new cpuset has none)."""
    for mount, fstype in cgroup_mounts():
        if fstype != "cgroup":
            continue
        for folder in (mount / slot.name, mount / slot.name / "node"):
            folder.mkdir(exist_ok=True)
            for name in ("cpuset.cpus", "cpuset.mems"):
                if (folder / name).exists():
                    (folder / name).write_text((folder.parent / name).read_text())


def join_cgroups(slot: Slot, pid: int) -> None:
    """Put ``pid`` (the supervisor, before it starts anything) into the node's cgroups, so that
    every process of the node, containerd's shims included, can be found and killed."""
    for mount, fstype in cgroup_mounts():
        target = mount / slot.name / "node" / "cgroup.procs"
        if fstype == "cgroup" and target.exists():
            target.write_text(f"{pid}\n")


def _cgroup_pids(slot: Slot) -> set[int]:
    pids: set[int] = set()
    for root in cgroup_dirs(slot):
        if not root.is_dir():
            continue
        for procs in root.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in procs.read_text().split())
    return pids


def kill_cgroups(slot: Slot, timeout: float = 30.0) -> None:
    """SIGKILL every process in the node's cgroups, frozen first so none can fork away."""
    freezer = next((root for root in cgroup_dirs(slot)
                    if (root / "freezer.state").exists()), None)
    deadline = time.monotonic() + timeout
    while pids := {pid for pid in _cgroup_pids(slot) if pid_alive(pid)}:
        if time.monotonic() > deadline:
            raise NodeError(f"processes {sorted(pids)} of {slot.name} survived SIGKILL")
        if freezer is not None:
            with contextlib.suppress(OSError):
                (freezer / "freezer.state").write_text("FROZEN")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if freezer is not None:
            with contextlib.suppress(OSError):
                (freezer / "freezer.state").write_text("THAWED")
        time.sleep(0.1)


def remove_cgroups(slot: Slot) -> None:
    """Remove the node's cgroups depth-first (rmdir; a cgroup has no files to delete)."""
    for root in cgroup_dirs(slot):
        if not root.is_dir():
            continue
        folders = sorted((p for p in root.rglob("*") if p.is_dir()),
                         key=lambda p: len(p.parts), reverse=True)
        for folder in [*folders, root]:
            for _ in range(50):
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as error:  # EBUSY while the kernel releases the last task
                    if error.errno != errno.EBUSY:
                        raise
                    time.sleep(0.1)


# -- slots --------------------------------------------------------------------------------------

def _route_conflict(slot: Slot) -> str | None:
    """A host route or address that overlaps the slot's range, if any (not the slot's own)."""
    routes = json.loads(_run("ip", "-j", "route", "show", "table", "all").stdout or "[]")
    for route in routes:
        destination = route.get("dst", "")
        if destination in ("default", "") or route.get("dev") == slot.host_link:
            continue
        with contextlib.suppress(ValueError):
            network = ipaddress.ip_network(destination if "/" in destination
                                           else f"{destination}/32", strict=False)
            if network.version == 4 and network.overlaps(slot.node_range):
                return f"route {destination} dev {route.get('dev')}"
    return None


def _record_path(number: int) -> pathlib.Path:
    return registry_dir() / f"slot-{number}.json"


def cleanup(slot: Slot) -> None:
    """Take down whatever a node of ``slot`` left: processes, cgroups, the veth, its record."""
    kill_cgroups(slot)
    remove_cgroups(slot)
    if _run("ip", "link", "show", slot.host_link, check=False).returncode == 0:
        _run("ip", "link", "delete", slot.host_link, check=False)
    _record_path(slot.number).unlink(missing_ok=True)


def claim_slot(preferred: int | None = None) -> tuple[Slot, IO[str]]:
    """Lock a free slot (the lock lasts as long as the keeper); reap dead keepers' slots."""
    registry_dir().mkdir(parents=True, exist_ok=True)
    order = list(range(SLOTS))
    if preferred is not None:
        order = [preferred]
    conflicts = []
    for number in order:
        lock = (registry_dir() / f"slot-{number}.lock").open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        slot = Slot(number)
        if _record_path(number).exists():
            cleanup(slot)  # its keeper died without cleaning up
        conflict = _route_conflict(slot)
        if conflict is None:
            return slot, lock
        conflicts.append(f"{slot.node_range}: {conflict}")
        lock.close()
    raise NodeError("no free node slot: " + ("; ".join(conflicts) if conflicts
                                             else f"all {len(order)} are in use"))


# -- configuration --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Layout:
    """The files of a node under its state directory."""

    root: pathlib.Path

    @property
    def pki(self) -> pathlib.Path:
        return self.root / "pki"

    @property
    def config(self) -> pathlib.Path:
        return self.root / "config"

    @property
    def cni(self) -> pathlib.Path:
        return self.root / "config" / "cni"

    @property
    def logs(self) -> pathlib.Path:
        return self.root / "logs"

    @property
    def etcd(self) -> pathlib.Path:
        return self.root / "etcd"

    @property
    def containerd(self) -> pathlib.Path:
        return self.root / "containerd"

    @property
    def run(self) -> pathlib.Path:
        """Bound over /run in the node's mount namespace."""
        return self.root / "run"

    @property
    def var(self) -> pathlib.Path:
        """Bound over /var in the node's mount namespace."""
        return self.root / "var"

    @property
    def images(self) -> pathlib.Path:
        return self.root / "images"

    @property
    def sysctl(self) -> pathlib.Path:
        return self.root / "sysctl"

    @property
    def kubeconfig(self) -> pathlib.Path:
        return self.root / "kubeconfig"

    @property
    def info(self) -> pathlib.Path:
        return self.root / "node.json"

    @property
    def containerd_socket(self) -> pathlib.Path:
        """containerd's socket as the host sees it (/run/containerd/... in the namespace)."""
        return self.run / "containerd" / "containerd.sock"

    @property
    def audit_log(self) -> pathlib.Path:
        return self.logs / "audit.log"


def _kubeconfig(server: str, ca: bytes, pair: certs.Pair, user: str) -> dict[str, Any]:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return {"apiVersion": "v1", "kind": "Config", "current-context": user,
            "clusters": [{"name": "fluxsupport-node", "cluster": {
                "server": server, "certificate-authority-data": b64(ca)}}],
            "users": [{"name": user, "user": {"client-certificate-data": b64(pair.cert_pem),
                                               "client-key-data": b64(pair.key_pem)}}],
            "contexts": [{"name": user, "context": {"cluster": "fluxsupport-node",
                                                    "user": user, "namespace": "default"}}]}


#: The API server's audit policy: every request of a ServiceAccount outside kube-system, at
#: Metadata level (who, verb, resource, response code), for the least-privilege tests.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1", "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "None", "userGroups": ["system:serviceaccounts:kube-system"]},
        {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
        {"level": "None"},
    ],
}


def write_config(layout: Layout, slot: Slot, pause: images.Written) -> None:
    """Certificates, kubeconfigs and every component's configuration for ``slot``."""
    for folder in (layout.pki, layout.config, layout.logs, layout.etcd, layout.containerd,
                   layout.cni, layout.sysctl, layout.run, layout.var):
        folder.mkdir(parents=True, exist_ok=True)
    if len(str(layout.containerd_socket)) > SOCKET_PATH_MAX:
        raise NodeError(f"the state directory {layout.root} is too long for a unix socket "
                        f"path; use a shorter one")
    credentials = certs.generate(extra_sans=(
        slot.node_ip, slot.namespace_ip, slot.service_ip, "kubernetes", "kubernetes.default",
        "kubernetes.default.svc", f"kubernetes.default.svc.{CLUSTER_DOMAIN}"))
    credentials.write(layout.pki)
    clients = {
        "admin": credentials.admin,
        "kubelet": certs.client_certificate(credentials.client_ca, f"system:node:{slot.name}",
                                            "system:nodes"),
        "kube-controller-manager": certs.client_certificate(
            credentials.client_ca, "system:kube-controller-manager"),
        "kube-scheduler": certs.client_certificate(credentials.client_ca,
                                                   "system:kube-scheduler"),
        "kube-proxy": certs.client_certificate(credentials.client_ca, "system:kube-proxy"),
        "apiserver-kubelet-client": certs.client_certificate(
            credentials.client_ca, "kube-apiserver-kubelet-client", "system:masters"),
    }
    for name, pair in clients.items():
        (layout.pki / f"{name}.crt").write_bytes(pair.cert_pem)
        key = layout.pki / f"{name}.key"
        key.write_bytes(pair.key_pem)
        key.chmod(0o600)
        if name != "apiserver-kubelet-client":
            # Inside the namespace the components use loopback; the host uses the veth.
            server = slot.server if name == "admin" else f"https://127.0.0.1:{API_PORT}"
            target = layout.kubeconfig if name == "admin" else layout.config / f"{name}.kubeconfig"
            target.write_text(yaml.safe_dump(_kubeconfig(
                server, credentials.serving_ca.cert_pem, pair, name)))
            target.chmod(0o600)
    (layout.config / "audit-policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY))
    # Pods resolve nothing: no cluster DNS, and nothing outside the namespace to ask.
    (layout.config / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    (layout.cni / "10-fluxsupport-node.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "fluxsupport-node",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False,
             "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": slot.pod_cidr}]],
                      # A default route for the Pods that leads nowhere: the namespace has none.
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ]}, indent=2))
    (layout.config / "containerd.toml").write_text(_containerd_config(layout, pause))
    (layout.config / "kubelet.yaml").write_text(yaml.safe_dump(_kubelet_config(layout, slot)))
    (layout.config / "kube-proxy.yaml").write_text(yaml.safe_dump(_proxy_config(layout, slot)))


def _containerd_config(layout: Layout, pause: images.Written) -> str:
    # restrict_oom_score_adj: without CAP_SYS_RESOURCE runc cannot lower a sandbox's
    # oom_score_adj, and every Pod would fail with "can't get final child's PID from pipe".
    # The opt plugin would create /opt/containerd on the host; nothing here needs it.
    return f"""version = 2
root = "{layout.containerd / 'root'}"
state = "/run/containerd"
oom_score = 0
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause.reference}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{RUNC}"
        Root = "/run/containerd/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{layout.cni}"
"""


def _kubelet_config(layout: Layout, slot: Slot) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        # 1.35+ refuses cgroup v1 unless told otherwise; this kind of machine has v1.
        "failCgroupV1": False, "cgroupDriver": "cgroupfs", "cgroupRoot": f"/{slot.name}",
        "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
        "address": slot.node_ip, "port": 10250, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(layout.pki / "client-cert-auth-ca.crt")}},
        "authorization": {"mode": "Webhook"},
        "failSwapOn": False, "oomScoreAdj": 0, "protectKernelDefaults": False,
        # An imported image can never be pulled again: never collect one.
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "100Mi",
                         "imagefs.available": "100Mi"},
        "resolvConf": str(layout.config / "resolv.conf"), "clusterDomain": CLUSTER_DOMAIN,
        "volumePluginDir": str(layout.root / "kubelet-plugins"),
        "serializeImagePulls": False, "rotateCertificates": False,
        "nodeStatusUpdateFrequency": "4s", "syncFrequency": "10s",
        "shutdownGracePeriod": "0s",
    }


def _proxy_config(layout: Layout, slot: Slot) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(layout.config / "kube-proxy.kubeconfig")},
        "mode": "iptables", "clusterCIDR": slot.pod_cidr, "hostnameOverride": slot.name,
        "bindAddress": slot.node_ip, "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # Lowering its own oom_score_adj needs CAP_SYS_RESOURCE.
        "oomScoreAdj": 0,
        # Zero leaves the host's conntrack sysctls as they are.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s", "udpTimeout": "0s",
                      "udpStreamTimeout": "0s"},
    }


def _component_args(name: str, layout: Layout, slot: Slot) -> list[str]:
    pki, config = layout.pki, layout.config
    if name == "etcd":
        return [str(build.binary_path("etcd")), "--name=node", f"--data-dir={layout.etcd}",
                "--listen-client-urls=http://127.0.0.1:2379",
                "--advertise-client-urls=http://127.0.0.1:2379",
                "--listen-peer-urls=http://127.0.0.1:2380",
                "--initial-advertise-peer-urls=http://127.0.0.1:2380",
                "--initial-cluster=node=http://127.0.0.1:2380", "--unsafe-no-fsync=true",
                "--log-level=warn"]
    if name == "kube-apiserver":
        return [str(build.binary_path("kube-apiserver")),
                "--etcd-servers=http://127.0.0.1:2379",
                # Every address of the namespace: loopback, the node's bridge, the veth.
                "--bind-address=0.0.0.0", f"--secure-port={API_PORT}",
                f"--advertise-address={slot.node_ip}",
                f"--cert-dir={pki}", f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'client-cert-auth-ca.crt'}",
                "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
                f"--service-account-issuer=https://kubernetes.default.svc.{CLUSTER_DOMAIN}",
                f"--service-account-key-file={pki / 'sa-signer.crt'}",
                f"--service-account-signing-key-file={pki / 'sa-signer.key'}",
                f"--service-cluster-ip-range={slot.service_cidr}", "--allow-privileged=true",
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                # The node's address, not its name: nothing resolves names in the namespace.
                "--kubelet-preferred-address-types=InternalIP",
                f"--audit-policy-file={config / 'audit-policy.yaml'}",
                f"--audit-log-path={layout.audit_log}", "--audit-log-maxsize=200",
                "--audit-log-maxbackup=1", "--v=1"]
    if name == "kube-controller-manager":
        kubeconfig = config / "kube-controller-manager.kubeconfig"
        return [str(build.binary_path("kube-controller-manager")),
                f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}", "--bind-address=127.0.0.1",
                f"--service-account-private-key-file={pki / 'sa-signer.key'}",
                f"--root-ca-file={pki / 'serving-ca.crt'}",
                "--use-service-account-credentials=true",
                f"--cluster-signing-cert-file={pki / 'client-cert-auth-ca.crt'}",
                f"--cluster-signing-key-file={pki / 'client-ca.key'}",
                f"--service-cluster-ip-range={slot.service_cidr}",
                # Its default, /usr/libexec/kubernetes/..., would be created on the host.
                f"--flex-volume-plugin-dir={layout.root / 'kubelet-plugins'}",
                "--leader-elect=false", "--v=1"]
    if name == "kube-scheduler":
        kubeconfig = config / "kube-scheduler.kubeconfig"
        return [str(build.binary_path("kube-scheduler")), f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}", "--bind-address=127.0.0.1",
                "--leader-elect=false", "--v=1"]
    if name == "containerd":
        return [str(CONTAINERD), f"--config={config / 'containerd.toml'}", "--log-level=warn"]
    if name == "kubelet":
        return [str(build.binary_path("kubelet")), f"--config={config / 'kubelet.yaml'}",
                f"--kubeconfig={config / 'kubelet.kubeconfig'}",
                "--root-dir=/var/lib/kubelet", f"--node-ip={slot.node_ip}",
                f"--hostname-override={slot.name}", "--v=1"]
    if name == "kube-proxy":
        return [str(build.binary_path("kube-proxy")), f"--config={config / 'kube-proxy.yaml'}",
                "--v=1"]
    raise ValueError(name)


# -- the supervisor (inside the namespaces) --------------------------------------------------------

def _mount_bind(source: pathlib.Path, target: str) -> None:
    _run("mount", "--bind", str(source), target)


def _private_filesystem(layout: Layout) -> None:
    """Bind the state directory's folders over /run and /var, and kubelet's wanted values over
    the host-wide kernel settings: all inside this mount namespace only (unshare made every
    mount a slave, so nothing propagates back to the host)."""
    for tunable, wanted in KUBELET_TUNABLES.items():
        path = pathlib.Path("/proc/sys") / tunable
        if path.exists() and path.read_text().strip() != wanted:
            copy = layout.sysctl / tunable.replace("/", ".")
            copy.write_text(f"{wanted}\n")
            _mount_bind(copy, str(path))
    var = layout.var
    for folder in ("lib/kubelet", "lib/cni", "log", "tmp"):
        (var / folder).mkdir(parents=True, exist_ok=True)
    for link, target in (("run", "/run"), ("lock", "/run/lock")):
        if not (var / link).is_symlink():
            (var / link).symlink_to(target)
    (layout.run / "lock").mkdir(parents=True, exist_ok=True)
    # The host's resolver is outside the namespace: ask loopback, where nothing answers.
    resolv = pathlib.Path("/etc/resolv.conf")
    if resolv.is_file() and not resolv.is_symlink():
        _mount_bind(layout.config / "resolv.conf", str(resolv))
    _mount_bind(layout.run, "/run")
    _mount_bind(var, "/var")


def _has_default_route() -> bool:
    return any(line.split()[1] == "00000000"
               for line in pathlib.Path("/proc/net/route").read_text().splitlines()[1:]
               if line.split())


def _namespace_network(slot: Slot) -> None:
    _run("ip", "link", "set", "lo", "up")
    _run("ip", "link", "add", "node0", "type", "bridge")
    _run("ip", "addr", "add", f"{slot.node_ip}/24", "dev", "node0")
    _run("ip", "link", "set", "node0", "up")
    # Without a default route, a process here (not in a Pod) would find no route to a Service's
    # ClusterIP before kube-proxy's rules could rewrite it; one that nothing rewrites ends on
    # the bridge, which has no ports.
    _run("ip", "route", "add", slot.service_cidr, "dev", "node0")
    # Per network namespace: Pods' packets are routed through this namespace.
    pathlib.Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")


class Supervisor:
    def __init__(self, layout: Layout, slot: Slot) -> None:
        self.layout = layout
        self.slot = slot
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def log(self, name: str) -> pathlib.Path:
        return self.layout.logs / f"{name}.log"

    def spawn(self, name: str) -> None:
        env = {**os.environ, "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "HOME": str(self.layout.root), "TMPDIR": "/var/tmp"}
        with self.log(name).open("ab") as log:
            self.processes[name] = subprocess.Popen(
                _component_args(name, self.layout, self.slot), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.layout.root,
                start_new_session=True,
                preexec_fn=_die_with_parent(signal.SIGKILL))  # noqa: PLW1509 - only prctl

    def check(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise NodeError(f"{name} exited with {process.returncode}; last lines of "
                                f"{self.log(name)}:\n{log_tail(self.log(name))}")

    def ssl_context(self) -> ssl.SSLContext:
        pki = self.layout.pki
        context = ssl.create_default_context(cafile=str(pki / "serving-ca.crt"))
        context.load_cert_chain(pki / "admin.crt", pki / "admin.key")
        return context

    def get(self, path: str) -> Any:
        """GET as admin; JSON decoded, or the text of /readyz and the like."""
        with urllib.request.urlopen(f"https://127.0.0.1:{API_PORT}{path}", timeout=5,
                                    context=self.ssl_context()) as response:
            body: bytes = response.read()
        return json.loads(body) if body.startswith(b"{") else body.decode()

    def _answers(self, path: str, accept: Callable[[Any], bool] = bool) -> Callable[[], bool]:
        def probe() -> bool:
            try:
                return accept(self.get(path))
            except (OSError, ValueError, urllib.error.HTTPError):
                return False
        return probe

    def import_pause(self) -> None:
        archive = self.layout.images / "pause.tar"
        reference = json.loads((self.layout.images / "pause.json").read_text())["reference"]
        import_image(self.layout.containerd_socket, archive, reference.rsplit(":", 1)[0])

    def start(self) -> None:
        def node_ready(node: Any) -> bool:
            return any(c["type"] == "Ready" and c["status"] == "True"
                       for c in node.get("status", {}).get("conditions", []))

        self.spawn("etcd")
        self.spawn("kube-apiserver")
        _wait(self._answers("/readyz"), READY_TIMEOUT_S, "kube-apiserver /readyz", self.check)
        for name in ("kube-controller-manager", "kube-scheduler", "containerd"):
            self.spawn(name)
        _wait(self.layout.containerd_socket.exists, READY_TIMEOUT_S, "containerd's socket",
              self.check)
        self.import_pause()
        self.spawn("kubelet")
        self.spawn("kube-proxy")
        _wait(self._answers(f"/api/v1/nodes/{self.slot.name}", node_ready), READY_TIMEOUT_S,
              f"node {self.slot.name} Ready", self.check)
        # Pods are refused until their namespace's ServiceAccount exists.
        _wait(self._answers("/api/v1/namespaces/default/serviceaccounts/default"),
              READY_TIMEOUT_S, "the default ServiceAccount", self.check)

    def stop(self) -> None:
        for name in reversed(COMPONENTS):
            process = self.processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=5 if name != "etcd" else 10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def supervise(state_dir: pathlib.Path, number: int) -> int:
    """Body of the supervisor process; the keeper started it with unshare --net --mount."""
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    layout, slot = Layout(state_dir), Slot(number)
    supervisor = Supervisor(layout, slot)
    try:
        if sys.stdin.readline().strip() != "go":
            return 1
        _private_filesystem(layout)
        _namespace_network(slot)
        _say("netns")
        if sys.stdin.readline().strip() != "veth":
            return 1
        _run("ip", "addr", "add", f"{slot.namespace_ip}/30", "dev", "veth0")
        _run("ip", "link", "set", "veth0", "up")
        if _has_default_route():
            raise NodeError("the node's network namespace has a default route; refusing to "
                            "start (its traffic must stay inside)")
        supervisor.start()
        _say("ready")
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        while True:
            supervisor.check()
            time.sleep(0.5)
    except _Stop:
        return 0
    except (NodeError, OSError, subprocess.SubprocessError) as error:
        print(f"supervisor: {error}", file=sys.stderr, flush=True)
        with contextlib.suppress(OSError):
            _say(f"error {json.dumps(str(error))}")
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        supervisor.stop()


# -- the keeper (on the host) --------------------------------------------------------------------

def import_image(socket_path: pathlib.Path, archive: pathlib.Path, name: str) -> None:
    """Import an OCI layout archive into the node's containerd as ``name:<its tag>``, with a
    ``name@<digest>`` reference too: the kubelet then reports that digest as the imageID, as
    it does for an image pulled from a registry."""
    _run(str(CTR), f"--address={socket_path}", "--namespace=k8s.io", "images", "import",
         f"--base-name={name}", "--digests", str(archive), timeout=300)


def _plumb(slot: Slot, pid: int) -> None:
    """The veth pair between host and namespace, and the host's route to the node's range."""
    link = slot.host_link
    _run("ip", "link", "add", link, "type", "veth", "peer", "name", "veth0", "netns", str(pid))
    _run("ip", "link", "set", link, "addrgenmode", "none")
    _run("ip", "addr", "add", f"{slot.host_ip}/30", "dev", link)
    _run("ip", "link", "set", link, "up")
    # Nothing for the node's range may follow the host's default route.
    _run("ip", "route", "add", str(slot.node_range), "via", slot.namespace_ip, "dev", link)


def _write_pause(layout: Layout) -> images.Written:
    binary = build.build_all(("pause",))["pause"]
    written = images.write(images.static_program(
        "localhost/pause", build.tools()["pause"].version, binary, "pause", with_ca=False),
        layout.images / "pause.tar")
    (layout.images / "pause.json").write_text(json.dumps({"reference": written.reference,
                                                          "digest": written.digest}))
    return written


def _check_runtime() -> None:
    missing = [str(p) for p in (CONTAINERD, CTR, RUNC, CNI_BIN / "bridge") if not p.exists()]
    if missing or shutil.which("iptables") is None:
        raise NodeError(f"the node's runtime is missing ({', '.join(missing) or 'iptables'}): "
                        "run `make node` (Debian's containerd, runc, "
                        "containernetworking-plugins and iptables)")


def _spawn_supervisor(layout: Layout, slot: Slot) -> subprocess.Popen[str]:
    """The supervisor in new network and mount namespaces, in the node's cgroups before it
    starts anything; it waits for "go" on its stdin."""
    with (layout.logs / "supervisor.log").open("ab") as log:
        supervisor = subprocess.Popen(
            ["unshare", "--net", "--mount", "--propagation", "slave", "--", sys.executable,
             "-m", "fluxsupport.devcluster.node", "supervise", str(layout.root),
             str(slot.number)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
            start_new_session=True,
            preexec_fn=_die_with_parent(signal.SIGKILL))  # noqa: PLW1509 - only prctl
    join_cgroups(slot, supervisor.pid)
    return supervisor


def _tell(supervisor: subprocess.Popen[str], line: str, expect: str, layout: Layout) -> None:
    """Send the supervisor the next step and wait for its answer."""
    assert supervisor.stdin is not None
    assert supervisor.stdout is not None
    supervisor.stdin.write(line + "\n")
    supervisor.stdin.flush()
    answer = supervisor.stdout.readline().strip()
    if answer != expect:
        detail = json.loads(answer[6:]) if answer.startswith("error ") else answer
        raise NodeError(f"the node did not start: {detail or 'the supervisor exited'}\n"
                        f"{log_tail(layout.logs / 'supervisor.log')}")


def _stop_supervisor(supervisor: subprocess.Popen[str] | None) -> None:
    if supervisor is not None and supervisor.poll() is None:
        supervisor.terminate()
        try:
            supervisor.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            supervisor.kill()
            supervisor.wait(timeout=10)


def keep(state_dir: pathlib.Path, preferred: int | None) -> int:
    """Body of the keeper process. Prints one JSON line: the node's details once it is Ready,
    or {"error": ...}."""
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    layout = Layout(state_dir)
    supervisor: subprocess.Popen[str] | None = None
    slot: Slot | None = None
    lock: IO[str] | None = None
    try:
        _check_runtime()
        build.build_all(("node",))
        slot, lock = claim_slot(preferred)
        _record_path(slot.number).write_text(json.dumps(
            {"slot": slot.number, "keeper": os.getpid(), "state_dir": str(state_dir)}))
        shutil.rmtree(state_dir, ignore_errors=True)
        layout.images.mkdir(parents=True)
        write_config(layout, slot, _write_pause(layout))
        create_cgroups(slot)
        supervisor = _spawn_supervisor(layout, slot)
        _tell(supervisor, "go", "netns", layout)
        _plumb(slot, supervisor.pid)
        _tell(supervisor, "veth", "ready", layout)
        info = {"slot": slot.number, "name": slot.name, "server": slot.server,
                "kubeconfig": str(layout.kubeconfig), "keeper": os.getpid(),
                "supervisor": supervisor.pid, "node_ip": slot.node_ip,
                "pod_cidr": slot.pod_cidr, "service_cidr": slot.service_cidr,
                "containerd": str(layout.containerd_socket),
                "audit_log": str(layout.audit_log)}
        layout.info.write_text(json.dumps(info, indent=2) + "\n")
        _say(json.dumps(info))
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        supervisor.wait()
        print(f"keeper: the supervisor exited with {supervisor.returncode}", file=sys.stderr)
        return 1
    except _Stop:
        return 0
    except (NodeError, OSError, subprocess.SubprocessError, build.BuildError) as error:
        print(f"keeper: {error}", file=sys.stderr, flush=True)
        with contextlib.suppress(OSError, ValueError):
            _say(json.dumps({"error": str(error)}))
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _stop_supervisor(supervisor)
        if slot is not None:
            cleanup(slot)
        layout.info.unlink(missing_ok=True)
        if lock is not None:
            lock.close()


# -- the caller's side ---------------------------------------------------------------------------

class Node:
    """A node started by a keeper child process; ``attached`` ties it to this process."""

    def __init__(self, state_dir: pathlib.Path, *, attached: bool = True,
                 slot: int | None = None) -> None:
        self.state_dir = state_dir
        self.layout = Layout(state_dir)
        self.attached = attached
        self.preferred_slot = slot
        self.info: dict[str, Any] = {}
        self.keeper: subprocess.Popen[bytes] | None = None
        self._forwarders: list[Forwarder] = []

    @classmethod
    def load(cls, state_dir: pathlib.Path) -> Node:
        """The node a detached keeper runs from ``state_dir`` (``devcluster up --node``)."""
        node = cls(state_dir, attached=False)
        node.info = json.loads(Layout(state_dir).info.read_text())
        return node

    # -- details ---------------------------------------------------------------------------

    @property
    def slot(self) -> Slot:
        return Slot(int(self.info["slot"]))

    @property
    def name(self) -> str:
        return str(self.info["name"])

    @property
    def server(self) -> str:
        return str(self.info["server"])

    @property
    def kubeconfig(self) -> pathlib.Path:
        return pathlib.Path(self.info["kubeconfig"])

    @property
    def audit_log(self) -> pathlib.Path:
        return pathlib.Path(self.info["audit_log"])

    @property
    def supervisor_pid(self) -> int:
        return int(self.info["supervisor"])

    @property
    def netns(self) -> pathlib.Path:
        """The node's network namespace (it has no name under /run/netns)."""
        return pathlib.Path(f"/proc/{self.supervisor_pid}/ns/net")

    def enter(self) -> list[str]:
        """A command prefix that runs a host program inside the node's network namespace."""
        return ["nsenter", f"--net={self.netns}", "--"]

    def keeper_log(self) -> pathlib.Path:
        return self.state_dir.with_name(self.state_dir.name + "-keeper.log")

    # -- life cycle --------------------------------------------------------------------------

    def start(self, timeout: float = READY_TIMEOUT_S + 60) -> None:
        """Start the keeper and wait until the node is Ready (builds what is missing first)."""
        build.build_all(("node",))
        self.state_dir.parent.mkdir(parents=True, exist_ok=True)
        with self.keeper_log().open("ab") as log:
            args = [sys.executable, "-m", "fluxsupport.devcluster.node", "keep",
                    str(self.state_dir)]
            if self.preferred_slot is not None:
                args.append(str(self.preferred_slot))
            # Attached: SIGTERM when this process dies however it dies, so the keeper cleans
            # up; detached: in a session of its own, it outlives the command.
            self.keeper = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                start_new_session=True,
                preexec_fn=_die_with_parent(signal.SIGTERM) if self.attached else None)  # noqa: PLW1509
        reader = threading.Thread(target=self._read_ready, daemon=True)
        reader.start()
        reader.join(timeout)
        if not self.info:
            self.stop()
            raise NodeError(f"the node did not become Ready within {timeout:.0f} s; keeper log "
                            f"{self.keeper_log()}:\n{log_tail(self.keeper_log())}")
        if "error" in self.info:
            error = self.info.pop("error")
            self.stop()
            raise NodeError(f"{error}\n(keeper log: {self.keeper_log()})")

    def _read_ready(self) -> None:
        assert self.keeper is not None
        assert self.keeper.stdout is not None
        line = self.keeper.stdout.readline().decode().strip()
        self.keeper.stdout.close()
        self.info = json.loads(line) if line.startswith("{") else {
            "error": f"the keeper exited: {log_tail(self.keeper_log())}"}

    def stop(self, timeout: float = STOP_GRACE_S + 60) -> None:
        """Stop the node and wait until everything of it is gone."""
        for forwarder in self._forwarders:
            forwarder.close()
        self._forwarders.clear()
        pid = self.keeper.pid if self.keeper is not None else self.info.get("keeper")
        if pid is not None and pid_alive(int(pid)) and self._is_keeper(int(pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while pid_alive(int(pid)) and time.monotonic() < deadline:
                if self.keeper is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.keeper.wait(timeout=0.2)
                else:
                    time.sleep(0.2)
        if self.keeper is not None:
            if self.keeper.poll() is None:
                self.keeper.kill()
            self.keeper.wait(timeout=10)
            self.keeper = None
        if self.info.get("slot") is not None and _record_path(self.slot.number).exists():
            record = json.loads(_record_path(self.slot.number).read_text())
            if record.get("state_dir") == str(self.state_dir) and not pid_alive(
                    int(record.get("keeper", 0))):
                cleanup(self.slot)  # the keeper could not: it was killed

    @staticmethod
    def _is_keeper(pid: int) -> bool:
        try:
            return b"fluxsupport.devcluster.node\0keep" in pathlib.Path(
                f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False

    def running(self) -> bool:
        pid = self.info.get("keeper")
        return pid is not None and pid_alive(int(pid)) and self._is_keeper(int(pid))

    # -- using it ------------------------------------------------------------------------------

    def kubectl(self, *args: str, input_text: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The kubectl built with the node (the server's version)."""
        done = subprocess.run([str(build.binary_path("kubectl")),
                               f"--kubeconfig={self.kubeconfig}", *args], input=input_text,
                              capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise NodeError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done

    def import_image(self, archive: pathlib.Path, name: str) -> None:
        import_image(pathlib.Path(self.info["containerd"]), archive, name)

    def tag_image(self, source: str, target: str) -> None:
        """Another name for an imported image, such as the one a chart defaults to (what
        ``kind load docker-image`` gives a kind node)."""
        _run(str(CTR), f"--address={self.info['containerd']}", "--namespace=k8s.io", "images",
             "tag", "--force", source, target)

    def images(self) -> list[str]:
        done = _run(str(CTR), f"--address={self.info['containerd']}", "--namespace=k8s.io",
                    "images", "list", "--quiet")
        return done.stdout.split()

    def forward(self, port: int, *, tls: bool = False) -> Forwarder:
        """Make 127.0.0.1:``port`` of the host reachable from the node and its Pods, at
        ``node_ip:<forwarder.port>``; with ``tls`` the forwarder speaks TLS to the Pods (a
        certificate for the node's address, signed by ``forwarder.ca_pem``) and plain TCP to
        the host's server, as a TLS-terminating proxy in front of a helpdesk does."""
        forwarder = Forwarder(self.netns, self.slot.node_ip, port, tls=tls)
        self._forwarders.append(forwarder)
        return forwarder


# -- reaching host servers from the node ---------------------------------------------------------

def socket_in(netns: pathlib.Path, host: str, port: int = 0) -> socket.socket:
    """A listening TCP socket that lives in ``netns``: a short-lived thread enters the namespace
    (setns is per thread), creates it and leaves; the socket stays where it was made."""
    made: dict[str, Any] = {}

    def make() -> None:
        fd = os.open(netns, os.O_RDONLY)
        try:
            if _LIBC.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns {netns}")
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, port))
            listener.listen(64)
            made["socket"] = listener
        except OSError as error:
            made["error"] = error
        finally:
            os.close(fd)

    thread = threading.Thread(target=make, name="setns")
    thread.start()
    thread.join()
    if "error" in made:
        raise made["error"]
    result: socket.socket = made["socket"]
    return result


class Forwarder:
    """TCP from a socket in the node's namespace to a port on the host's loopback, so that
    Pods reach the tests' servers (RT, SMTP, git) without any of them leaving loopback."""

    def __init__(self, netns: pathlib.Path, host: str, target_port: int, *,
                 tls: bool = False) -> None:
        self.target_port = target_port
        self.host = host
        #: The CA a client trusts to reach this forwarder over TLS ("" without TLS).
        self.ca_pem = ""
        self._tls: ssl.SSLContext | None = None
        if tls:
            ca, serving = certs.server_certificate((host,))
            self.ca_pem = ca.cert_pem.decode()
            self._tls = _server_context(serving)
        self._listener = socket_in(netns, host)
        self.port = int(self._listener.getsockname()[1])
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True,
                                        name=f"forward-{self.port}")
        self._thread.start()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._tls is not None:
                threading.Thread(target=self._serve_tls, args=(client,), daemon=True).start()
                continue
            self._connect(client)

    def _serve_tls(self, client: socket.socket) -> None:
        """The handshake in a thread of its own: a slow client holds up no other."""
        assert self._tls is not None
        client.settimeout(10)
        try:
            secure = self._tls.wrap_socket(client, server_side=True)
        except OSError:
            client.close()
            return
        self._connect(secure)

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
        except OSError:
            client.close()
            return
        client.settimeout(None)
        upstream.settimeout(None)
        for source, target in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pump, args=(source, target), daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()


def _server_context(serving: certs.Pair) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory(prefix="fluxsupport-forward-") as tmp:
        cert, key = pathlib.Path(tmp, "tls.crt"), pathlib.Path(tmp, "tls.key")
        cert.write_bytes(serving.cert_pem)
        key.write_bytes(serving.key_pem)
        context.load_cert_chain(cert, key)  # the ssl module reads files only
    return context


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def running_node(state_dir: pathlib.Path, slot: int | None = None) -> Iterator[Node]:
    node = Node(state_dir, attached=True, slot=slot)
    node.start()
    try:
        yield node
    finally:
        node.stop()


def main(argv: list[str]) -> int:
    if argv[:1] == ["keep"]:
        return keep(pathlib.Path(argv[1]), int(argv[2]) if len(argv) > 2 else None)
    if argv[:1] == ["supervise"]:
        return supervise(pathlib.Path(argv[1]), int(argv[2]))
    print("usage: python -m fluxsupport.devcluster.node keep STATE_DIR [SLOT] | "
          "supervise STATE_DIR SLOT", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
