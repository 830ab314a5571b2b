"""Flux's real source-controller and kustomize-controller, and a git server, on loopback.

For ``fluxsupport demo --gitops`` and the GitOps tests (tests/integration/test_flux_gitops.py).
The controllers are the binaries that ``make flux`` builds from their Go modules (hack/flux);
they run as local processes against the local control plane (KUBECONFIG in the environment),
with every address on 127.0.0.1 and their storage in the caller's folder. The git server is
Debian's git-http-backend behind a small threaded CGI server in this process (GitRepository
URLs must be http, https or ssh, so `git daemon` is out). Children get PR_SET_PDEATHSIG, so nothing
survives a run, a Ctrl-C or a crash.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.server
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from fluxsupport.devcluster import build, cluster

GIT_HTTP_BACKEND = pathlib.Path("/usr/lib/git-core/git-http-backend")
CONTROLLERS = build.FLUX_CONTROLLERS
RUNTIME_NAMESPACE = "flux-system"

class FluxError(RuntimeError):
    """A Flux controller, git or the git server failed; the message says how."""


def _wait(probe: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise FluxError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def kubectl(kubeconfig: pathlib.Path, *args: str) -> str:
    """The kubectl next to this Python (the `kubectl` package of the dev extra)."""
    binary = pathlib.Path(sys.executable).parent / "kubectl"
    done = subprocess.run([str(binary), f"--kubeconfig={kubeconfig}", *args],
                          capture_output=True, text=True, timeout=180, check=False)
    if done.returncode != 0:
        raise FluxError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


_PR_SET_PDEATHSIG = 1
#: Loaded here, not in the forked child: dlopen after fork in a threaded process (the git
#: server's request threads) can hang.
_LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when the test process dies, however it dies."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def git_env() -> dict[str, str]:
    """git without the user's or the machine's configuration, with a fixed identity."""
    return {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "fluxsupport tests", "GIT_AUTHOR_EMAIL": "tests@fluxsupport.test",
            "GIT_COMMITTER_NAME": "fluxsupport tests",
            "GIT_COMMITTER_EMAIL": "tests@fluxsupport.test", "GIT_TERMINAL_PROMPT": "0"}


def git(*args: str, cwd: pathlib.Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env=git_env(), capture_output=True,
                          text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise FluxError(f"git {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout.strip()


# -- the CRDs ---------------------------------------------------------------------------------

def module_dir(controller: str) -> pathlib.Path:
    """The controller's module in Go's module cache, at the version the binary was built from."""
    version = build.tools()[controller].version
    wrapper = build.modules_dir("flux") / controller
    done = subprocess.run(["go", "mod", "download", "-json", f"github.com/fluxcd/{controller}@"
                           f"{version}"], cwd=wrapper, env=build.go_env(), capture_output=True,
                          text=True, timeout=600, check=False)
    info: dict[str, Any] = json.loads(done.stdout or "{}")
    if done.returncode != 0 or "Dir" not in info:
        raise FluxError(f"go mod download {controller}@{version}: "
                             f"{info.get('Error') or done.stderr}")
    return pathlib.Path(info["Dir"])


def crd_files(controllers: Sequence[str] = CONTROLLERS) -> list[pathlib.Path]:
    bases = [module_dir(controller) / "config" / "crd" / "bases" for controller in controllers]
    return [path for folder in bases for path in sorted(folder.glob("*.yaml"))]


def install_crds(kubeconfig: pathlib.Path) -> list[str]:
    """Apply the controllers' own CRDs; return their names once Established."""
    names = []
    for path in crd_files():
        names += kubectl(kubeconfig, "apply", "--server-side", "-f", str(path),
                         "-o", "name").split()
    kubectl(kubeconfig, "wait", "--for=condition=Established", "--timeout=120s", *names)
    return names


# -- the controllers --------------------------------------------------------------------------

class Controller:
    """One Flux controller as a child process, killed with the test run whatever happens."""

    def __init__(self, name: str, kubeconfig: pathlib.Path, workdir: pathlib.Path) -> None:
        assert name in CONTROLLERS, name
        self.name = name
        self.kubeconfig = kubeconfig
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.health_port = 0
        self.metrics_port = 0
        self.storage_port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def version(self) -> str:
        return build.tools()[self.name].version

    def args(self) -> list[str]:
        self.health_port, self.metrics_port = cluster.free_port(), cluster.free_port()
        args = [f"--metrics-addr=127.0.0.1:{self.metrics_port}",
                f"--health-addr=127.0.0.1:{self.health_port}",
                "--enable-leader-election=false", "--log-level=debug", "--log-encoding=json",
                # No notification-controller here: events stay in the API server.
                "--events-addr="]
        if self.name == "source-controller":
            self.storage_port = cluster.free_port()
            storage = self.workdir / "storage"
            storage.mkdir(parents=True, exist_ok=True)
            args += [f"--storage-path={storage}",
                     f"--storage-addr=127.0.0.1:{self.storage_port}",
                     # The host:port written into artifact URLs, fetched by kustomize-controller.
                     f"--storage-adv-addr=127.0.0.1:{self.storage_port}"]
        return args

    def start(self) -> None:
        binary = build.build_all((self.name,))[self.name]
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig),
               "RUNTIME_NAMESPACE": RUNTIME_NAMESPACE, "HOME": str(self.workdir),
               "TMPDIR": str(self.workdir)}
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [str(binary), *self.args()], env=env, cwd=self.workdir, stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509
        )
        log.close()
        _wait(self.ready, timeout=120, what=f"{self.name} /readyz")

    def ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise FluxError(f"{self.name} exited with {self.process.returncode}:\n"
                            f"{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/readyz",
                                        timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=5) as response:
            text: str = response.read().decode()
            return text

    def stop(self) -> None:
        cluster.stop_child(self.process, grace_s=15)
        self.process = None

    def log_tail(self, lines: int = 40) -> str:
        return cluster.log_tail(self.log_path, lines)


@contextlib.contextmanager
def running_controllers(kubeconfig: pathlib.Path, workdir: pathlib.Path
                        ) -> Iterator[dict[str, Controller]]:
    started: dict[str, Controller] = {}
    try:
        for name in CONTROLLERS:
            controller = Controller(name, kubeconfig, workdir / name)
            started[name] = controller
            controller.start()
        yield started
    finally:
        for controller in reversed(list(started.values())):
            controller.stop()


# -- the git server ---------------------------------------------------------------------------

class _GitHandler(http.server.BaseHTTPRequestHandler):
    """Hands each request to git-http-backend (CGI): clone, fetch and push over smart HTTP."""

    server: _GitHTTPServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._backend()

    def do_POST(self) -> None:
        self._backend()

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            # git sends large pushes chunked; CGI wants the plain body.
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _backend(self) -> None:
        path, _, query = self.path.partition("?")
        body = self._body()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "GIT_PROJECT_ROOT": str(self.server.root), "GIT_HTTP_EXPORT_ALL": "1",
               "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
               # Pushes are anonymous here: receive-pack needs a user name or http.receivepack.
               "REMOTE_USER": "fluxsupport-tests", "REMOTE_ADDR": self.client_address[0],
               "GATEWAY_INTERFACE": "CGI/1.1", "SERVER_PROTOCOL": "HTTP/1.1",
               "REQUEST_METHOD": self.command, "PATH_INFO": path, "QUERY_STRING": query,
               "CONTENT_TYPE": self.headers.get("Content-Type", ""),
               "CONTENT_LENGTH": str(len(body))}
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        done = subprocess.run([str(GIT_HTTP_BACKEND)], input=body, env=env,
                              capture_output=True, timeout=120, check=False,
                              preexec_fn=_die_with_parent)
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = done.stdout.partition(b"\n\n")
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.split()[0])
            elif key:
                headers.append((key, value.strip()))
        if done.returncode != 0 and not head:
            status, payload = 500, done.stderr
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        self.server.requests.append(f"{self.command} {path} {status}")

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the requests are kept in server.requests."""


class _GitHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: pathlib.Path) -> None:
        super().__init__(("127.0.0.1", 0), _GitHandler)
        self.root = root
        self.requests: list[str] = []


class GitServer:
    """Bare repositories under ``root``, served on 127.0.0.1 over HTTP from a thread."""

    def __init__(self, root: pathlib.Path) -> None:
        if not GIT_HTTP_BACKEND.exists():
            raise FluxError(f"{GIT_HTTP_BACKEND} is missing: Debian's git package has it")
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._server = _GitHTTPServer(root)
        self._thread = threading.Thread(target=self._server.serve_forever, name="git-http",
                                        daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def requests(self) -> list[str]:
        return list(self._server.requests)

    def url(self, repository: str) -> str:
        return f"http://127.0.0.1:{self.port}/{repository}.git"

    def create(self, repository: str) -> str:
        bare = self.root / f"{repository}.git"
        git("init", "--quiet", "--bare", "--initial-branch=main", str(bare), cwd=self.root)
        return self.url(repository)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@contextlib.contextmanager
def running_git_server(root: pathlib.Path) -> Iterator[GitServer]:
    server = GitServer(root)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Checkout:
    """A work tree whose commits are pushed to the git server, as a user's would be."""

    def __init__(self, path: pathlib.Path, remote: str) -> None:
        self.path = path
        self.remote = remote

    @classmethod
    def of_working_tree(cls, source: pathlib.Path, path: pathlib.Path,
                        remote: str) -> Checkout:
        """This repository's files as they are in the working tree (tracked and new ones,
        without what .gitignore excludes), committed afresh: what a user would push."""
        listed = git("ls-files", "-z", "--cached", "--others", "--exclude-standard",
                     cwd=source)
        path.mkdir(parents=True)
        for name in filter(None, listed.split("\0")):
            origin = source / name
            if origin.is_file():  # a tracked file deleted in the working tree is skipped
                (path / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, path / name)
        git("init", "--quiet", "--initial-branch=main", cwd=path)
        git("remote", "add", "origin", remote, cwd=path)
        return cls(path, remote)

    def write(self, files: Mapping[str, str | None]) -> None:
        """Change files (relative paths); None deletes one."""
        for name, text in files.items():
            target = self.path / name
            if text is None:
                target.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)

    def commit(self, message: str, tag: str | None = None) -> str:
        """Commit everything and push the branch (and ``tag``, moved if it exists)."""
        git("add", "--all", cwd=self.path)
        git("commit", "--quiet", "--allow-empty", "-m", message, cwd=self.path)
        refs = ["main"]
        if tag:
            git("tag", "--force", tag, cwd=self.path)
            refs.append(f"+refs/tags/{tag}:refs/tags/{tag}")
        git("push", "--quiet", "origin", *refs, cwd=self.path)
        return git("rev-parse", "HEAD", cwd=self.path)

    def read(self, name: str) -> str:
        return (self.path / name).read_text()
