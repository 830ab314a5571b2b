"""Run etcd and kube-apiserver on loopback, supervised from Python.

Two modes share this code:

* attached (tests, demo): the children die with the parent, even on SIGKILL, through
  ``PR_SET_PDEATHSIG``; teardown also kills their process groups.
* detached (``fluxsupport devcluster up``): the children outlive the command; their pids
  are kept in ``state.json`` so that ``devcluster down`` can stop them.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import dataclasses
import json
import os
import pathlib
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import yaml

from fluxsupport.devcluster import build, certs

READY_TIMEOUT_S = 120.0
PR_SET_PDEATHSIG = 1


class ControlPlaneError(RuntimeError):
    """The control plane could not be started or reached; the message says why."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _has_default_route() -> bool:
    try:
        lines = pathlib.Path("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        return True
    return any(line.split()[1] == "00000000" for line in lines if line.split())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        # A zombie is dead for our purposes; it only waits to be reaped.
        if pathlib.Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return False
    return True


def _runs(pid: int, name: str) -> bool:
    """True if ``pid`` still runs ``name``: a recorded pid may have been reused since."""
    try:
        command = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return False
    return pathlib.Path(command.decode(errors="replace")).name.startswith(name)


def stop_child(process: subprocess.Popen[bytes] | None, grace_s: float) -> None:
    """Stop a child started in its own process group, if it still runs, and reap it."""
    if process is not None and process.poll() is None:
        stop_process_group(process.pid, grace_s=grace_s)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


def log_tail(path: pathlib.Path, lines: int) -> str:
    """The last ``lines`` of a child's log, for an error message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_process_group(pid: int, grace_s: float = 10.0) -> None:
    """SIGTERM the group led by ``pid``, then SIGKILL whatever is left."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not _pid_alive(pid):
                return
            time.sleep(0.05)


@dataclasses.dataclass
class ControlPlane:
    """One etcd and one kube-apiserver with their certificates, logs and kubeconfig."""

    state_dir: pathlib.Path
    etcd_port: int = 0
    etcd_peer_port: int = 0
    apiserver_port: int = 0
    attached: bool = True
    pids: dict[str, int] = dataclasses.field(default_factory=dict)
    #: An audit policy (audit.k8s.io/v1 Policy) for kube-apiserver, which then writes its
    #: audit log as JSON lines to ``audit_log``. For tests: what each identity asked for.
    audit_policy: pathlib.Path | None = None
    _processes: dict[str, subprocess.Popen[bytes]] = dataclasses.field(
        default_factory=dict, repr=False)

    # ---- files -------------------------------------------------------------------

    @property
    def cert_dir(self) -> pathlib.Path:
        return self.state_dir / "certs"

    @property
    def kubeconfig(self) -> pathlib.Path:
        return self.state_dir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    def log_path(self, name: str) -> pathlib.Path:
        return self.state_dir / f"{name}.log"

    @property
    def audit_log(self) -> pathlib.Path:
        return self.state_dir / "audit.log"

    def _save_state(self) -> None:
        state = {"etcd_port": self.etcd_port, "etcd_peer_port": self.etcd_peer_port,
                 "apiserver_port": self.apiserver_port, "pids": self.pids,
                 "kubeconfig": str(self.kubeconfig)}
        (self.state_dir / "state.json").write_text(json.dumps(state, indent=2) + "\n")

    @classmethod
    def load(cls, state_dir: pathlib.Path) -> ControlPlane:
        state = json.loads((state_dir / "state.json").read_text())
        return cls(state_dir, state["etcd_port"], state["etcd_peer_port"],
                   state["apiserver_port"], attached=False, pids=state["pids"])

    def prepare(self) -> None:
        """Create certificates, pick ports and write the kubeconfig."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        credentials = certs.generate()
        credentials.write(self.cert_dir)
        self.etcd_port, self.etcd_peer_port, self.apiserver_port = (
            free_port(), free_port(), free_port())
        self.kubeconfig.write_text(yaml.safe_dump(self.kubeconfig_dict(credentials)))
        self.kubeconfig.chmod(0o600)
        self._save_state()

    def kubeconfig_dict(self, credentials: certs.ControlPlaneCredentials) -> dict[str, Any]:
        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        return {
            "apiVersion": "v1", "kind": "Config", "current-context": "fluxsupport-dev",
            "clusters": [{"name": "fluxsupport-dev", "cluster": {
                "server": self.server,
                "certificate-authority-data": b64(credentials.serving_ca.cert_pem)}}],
            "users": [{"name": "admin", "user": {
                "client-certificate-data": b64(credentials.admin.cert_pem),
                "client-key-data": b64(credentials.admin.key_pem)}}],
            "contexts": [{"name": "fluxsupport-dev", "context": {
                "cluster": "fluxsupport-dev", "user": "admin", "namespace": "default"}}],
        }

    # ---- processes -----------------------------------------------------------------

    def etcd_args(self) -> list[str]:
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        client = f"http://127.0.0.1:{self.etcd_port}"
        return [
            str(build.binary_path("etcd")),
            "--name=default",
            f"--data-dir={self.state_dir / 'etcd-data'}",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            # Test data is disposable; fsync makes every write wait for the disk.
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ]

    def apiserver_args(self) -> list[str]:
        certs_at = self.cert_dir
        args = [
            str(build.binary_path("kube-apiserver")),
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.apiserver_port}",
            f"--cert-dir={certs_at}",
            f"--tls-cert-file={certs_at / 'apiserver.crt'}",
            f"--tls-private-key-file={certs_at / 'apiserver.key'}",
            f"--client-ca-file={certs_at / 'client-cert-auth-ca.crt'}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer=https://127.0.0.1:{self.apiserver_port}/",
            f"--service-account-key-file={certs_at / 'sa-signer.crt'}",
            f"--service-account-signing-key-file={certs_at / 'sa-signer.key'}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            # No controller-manager runs, so nothing would create the tokens it expects.
            "--disable-admission-plugins=ServiceAccount",
            "--v=1",
        ]
        if self.audit_policy is not None:
            # The log backend writes each event before the request completes (mode
            # blocking, the default), so a reader sees every request that was answered.
            args += [f"--audit-policy-file={self.audit_policy}",
                     f"--audit-log-path={self.audit_log}", "--audit-log-format=json"]
        if not _has_default_route():
            # With a loopback bind address the apiserver advertises its default-route
            # address, and exits without one; loopback itself is refused (k/k #121942).
            args.append("--advertise-address=192.0.2.1")
        return args

    def _spawn(self, name: str, args: list[str]) -> None:
        log = self.log_path(name).open("ab")
        process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
            # Only prctl runs between fork and exec, which is safe with threads.
            preexec_fn=_die_with_parent if self.attached else None,  # noqa: PLW1509
        )
        log.close()
        self._processes[name] = process
        self.pids[name] = process.pid
        self._save_state()

    def _stop(self, name: str) -> None:
        pid = self.pids.pop(name, None)
        if pid is not None and _runs(pid, name):
            stop_process_group(pid)
        process = self._processes.pop(name, None)
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        self._save_state()

    def _wait(self, name: str, probe: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            process = self._processes.get(name)
            if process is not None and process.poll() is not None:
                raise ControlPlaneError(
                    f"{name} exited with code {process.returncode} before {what}. "
                    f"Last lines of {self.log_path(name)}:\n{self.log_tail(name)}")
            if probe():
                return
            time.sleep(0.1)
        raise ControlPlaneError(f"{name} did not report {what} within {READY_TIMEOUT_S:.0f}s. "
                                f"Last lines of {self.log_path(name)}:\n{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 25) -> str:
        return log_tail(self.log_path(name), lines)

    def _etcd_healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.etcd_port}/health",
                                        timeout=2) as response:
                return bool(json.loads(response.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.cert_dir / "serving-ca.crt"))
        context.load_cert_chain(self.cert_dir / "admin.crt", self.cert_dir / "admin.key")
        return context

    def get(self, path: str, timeout: float = 5.0) -> bytes:
        """GET an apiserver path as admin."""
        with urllib.request.urlopen(f"{self.server}{path}", timeout=timeout,
                                    context=self._ssl_context()) as response:
            body: bytes = response.read()
            return body

    def _apiserver_ready(self) -> bool:
        try:
            self.get("/readyz", timeout=5)
            self.get("/api/v1/namespaces/default", timeout=5)
        except (OSError, urllib.error.HTTPError):
            return False
        return True

    def start_etcd(self) -> None:
        self._spawn("etcd", self.etcd_args())
        self._wait("etcd", self._etcd_healthy, "health")

    def stop_etcd(self) -> None:
        self._stop("etcd")

    def start_apiserver(self) -> None:
        self._spawn("kube-apiserver", self.apiserver_args())
        self._wait("kube-apiserver", self._apiserver_ready, "/readyz")

    def stop_apiserver(self) -> None:
        self._stop("kube-apiserver")

    def start(self) -> None:
        """Start both, retrying with new ports if another process took one meanwhile."""
        for attempt in range(3):
            try:
                self.start_etcd()
                self.start_apiserver()
                return
            except ControlPlaneError:
                self.stop()
                if attempt == 2:
                    raise
                shutil.rmtree(self.state_dir / "etcd-data", ignore_errors=True)
                self.prepare()

    def stop(self) -> None:
        """Stop the apiserver first, so it does not log a storm of etcd errors."""
        self.stop_apiserver()
        self.stop_etcd()

    def version(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.get("/version"))
        return data

    def running(self) -> dict[str, bool]:
        return {name: _pid_alive(pid) and (_runs(pid, name) or _runs_python(pid))
                for name, pid in self.pids.items()}


def up(state_dir: pathlib.Path, *, attached: bool) -> ControlPlane:
    """Build what is missing, then start a fresh control plane in ``state_dir``."""
    build.build_all(("etcd", "kube-apiserver"))
    if (state_dir / "state.json").exists():
        existing = ControlPlane.load(state_dir)
        if any(existing.running().values()):
            raise ControlPlaneError(
                f"a control plane is already running from {state_dir}; "
                "run `fluxsupport devcluster down` first")
    shutil.rmtree(state_dir, ignore_errors=True)
    plane = ControlPlane(state_dir, attached=attached)
    plane.prepare()
    plane.start()
    return plane


def up_detached(state_dir: pathlib.Path) -> ControlPlane:
    """Start a control plane that outlives this process, under a small supervisor.

    The supervisor is the parent of etcd and kube-apiserver. It reaps them when
    ``down`` stops it, and they die with it if it is killed, so neither is ever left
    behind as an orphan or a zombie.
    """
    build.build_all(("etcd", "kube-apiserver"))
    if (state_dir / "state.json").exists():
        existing = ControlPlane.load(state_dir)
        if existing.running().get("supervisor") and existing._apiserver_ready():
            return existing
    down(state_dir)
    supervisor_log = supervisor_log_path(state_dir)
    supervisor_log.parent.mkdir(parents=True, exist_ok=True)
    log = supervisor_log.open("wb")
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "fluxsupport.devcluster.cluster", str(state_dir)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
        start_new_session=True,
    )
    log.close()
    assert supervisor.stdout is not None
    first_line = supervisor.stdout.readline().decode().strip()
    supervisor.stdout.close()
    if first_line != "READY":
        supervisor.wait(timeout=30)
        tail = supervisor_log.read_text(errors="replace").splitlines()[-30:]
        raise ControlPlaneError("the control plane did not start:\n" + "\n".join(tail))
    return ControlPlane.load(state_dir)


def supervisor_log_path(state_dir: pathlib.Path) -> pathlib.Path:
    # Beside the state directory, which ``up`` recreates from scratch.
    return state_dir.with_name(f"{state_dir.name}-supervisor.log")


def supervise(state_dir: pathlib.Path) -> None:
    """Body of the supervisor process started by ``up_detached``."""
    stopping = False

    def request_stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    plane = up(state_dir, attached=True)
    plane.pids["supervisor"] = os.getpid()
    plane._save_state()
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    while not stopping and all(p.poll() is None for p in plane._processes.values()):
        time.sleep(0.2)
    plane.pids.pop("supervisor", None)
    plane.stop()


def down(state_dir: pathlib.Path) -> list[str]:
    """Stop a control plane started by ``up_detached``; return what was stopped."""
    if not (state_dir / "state.json").exists():
        return []
    plane = ControlPlane.load(state_dir)
    stopped = [name for name, alive in plane.running().items()
               if alive and name != "supervisor"]
    supervisor = plane.pids.pop("supervisor", None)
    if supervisor is not None and _runs_python(supervisor):
        stop_process_group(supervisor, grace_s=30.0)
    plane.stop()  # Whatever the supervisor could not stop.
    shutil.rmtree(state_dir, ignore_errors=True)
    return stopped


def _runs_python(pid: int) -> bool:
    try:
        return b"fluxsupport.devcluster.cluster" in pathlib.Path(
            f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


if __name__ == "__main__":
    supervise(pathlib.Path(sys.argv[1]))
