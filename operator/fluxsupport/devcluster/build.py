"""Build kube-apiserver, etcd and helm from the Go tool modules in ``hack/controlplane``,
the node's binaries (kubelet, kube-controller-manager, kube-scheduler, kube-proxy, kubectl and
the sandbox program ``pause``) from the same modules, and Flux's source-, kustomize- and
helm-controller from the wrapper modules in ``hack/flux``.

A cold build compiles a few thousand Go packages and takes many minutes on two cores,
so it runs once into the cache and reports progress as it goes.
"""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fluxsupport.devcluster import paths


class BuildError(RuntimeError):
    """A tool could not be built; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Tool:
    name: str
    module: str  # directory under hack/<group>
    package: str  # Go main package
    version: str
    ldflags: tuple[str, ...] = ()
    group: str = "controlplane"

    @property
    def binary_name(self) -> str:
        return f"{self.name}-{self.version}"


def modules_dir(group: str = "controlplane") -> pathlib.Path:
    return paths.source_root() / "hack" / group


def versions(group: str = "controlplane") -> dict[str, str]:
    data: dict[str, str] = json.loads((modules_dir(group) / "versions.json").read_text())
    return data


def kubernetes_version_ldflags(version: str) -> tuple[str, ...]:
    """Stamp the release into the binary, as k/k's hack/lib/version.sh does.

    Without these, /version reports v0.0.0-master and emulation-version logic and
    helm's kubeVersion checks misbehave.
    """
    major, minor = version.removeprefix("v").split(".")[:2]
    build_date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    flags = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate={build_date}",
        ]
    return tuple(flags)


def helm_ldflags(helm_version: str, kubernetes_version: str) -> tuple[str, ...]:
    """Stamp helm's version, and the Kubernetes minor it assumes when rendering offline.

    Without the second part ``helm template`` claims Kubernetes 1.20 (helm's Makefile sets
    the same variables from its go.mod).
    """
    minor = kubernetes_version.split(".")[1]
    flags = [f"-X helm.sh/helm/v3/internal/version.version={helm_version}",
             "-X helm.sh/helm/v3/internal/version.gitTreeState=clean"]
    for pkg in ("helm.sh/helm/v3/pkg/chartutil", "helm.sh/helm/v3/pkg/lint/rules"):
        flags += [f"-X {pkg}.k8sVersionMajor=1", f"-X {pkg}.k8sVersionMinor={minor}"]
    return tuple(flags)


#: Run as processes by ``demo --gitops`` and the GitOps tests (devcluster/flux.py).
FLUX_CONTROLLERS = ("source-controller", "kustomize-controller")
#: Run as Pods on the node (devcluster/fluxpods.py): helm-controller installs the chart.
FLUX_POD_CONTROLLERS = (*FLUX_CONTROLLERS, "helm-controller")
#: What ``fluxsupport devcluster up --node`` needs besides etcd and kube-apiserver.
NODE_TOOLS = ("kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl",
              "pause")
#: Names that ``build_all`` and ``fluxsupport devcluster build`` accept for a set of tools.
GROUPS = {"node": ("etcd", "kube-apiserver", *NODE_TOOLS),
          "flux": FLUX_POD_CONTROLLERS}


def _source_version(folder: pathlib.Path) -> str:
    """A version for a program of this repository: the hash of its sources, so that a change
    builds a new binary instead of reusing the cached one."""
    digest = hashlib.sha256()
    for path in [*sorted(folder.glob("*.go")), folder / "go.mod"]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return f"src-{digest.hexdigest()[:12]}"


def tools() -> dict[str, Tool]:
    pinned = versions()
    kubernetes = pinned["kubernetes"]
    flux = versions("flux")
    # The wrapper module's only job is to make `go build <controller module>` resolve with
    # the controller's own replaces: its main package is the module root.
    controllers = {name: Tool(name, name, f"github.com/fluxcd/{name}", flux[name], group="flux")
                   for name in FLUX_POD_CONTROLLERS}
    # kube-apiserver's module also builds the node's binaries (hack/controlplane/generate.py).
    kubernetes_tools = {name: Tool(name, "apiserver", f"k8s.io/kubernetes/cmd/{name}",
                                   kubernetes, kubernetes_version_ldflags(kubernetes))
                        for name in ("kube-apiserver", *NODE_TOOLS) if name != "pause"}
    pause = modules_dir() / "pause"
    return {
        **kubernetes_tools,
        "etcd": Tool("etcd", "etcd", "go.etcd.io/etcd/server/v3", pinned["etcd"]),
        "helm": Tool("helm", "helm", "helm.sh/helm/v3/cmd/helm", pinned["helm"],
                     helm_ldflags(pinned["helm"], kubernetes)),
        "pause": Tool("pause", "pause", "fluxsupport.local/controlplane/pause",
                      _source_version(pause)),
        **controllers,
    }


def expand(names: tuple[str, ...]) -> tuple[str, ...]:
    """Tool names with the group names of GROUPS replaced by their tools, in order, once."""
    expanded = [tool for name in names for tool in GROUPS.get(name, (name,))]
    return tuple(dict.fromkeys(expanded))


def bin_dir() -> pathlib.Path:
    return paths.cache_dir() / "bin"


def binary_path(name: str) -> pathlib.Path:
    return bin_dir() / tools()[name].binary_name


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"CGO_ENABLED": "0", "GOWORK": "off", "GOFLAGS": "-mod=readonly",
                "GOTOOLCHAIN": env.get("GOTOOLCHAIN", "local")})
    return env


@contextmanager
def build_lock() -> Iterator[None]:
    """Serialise builds: a test run and a demo started together must not race."""
    bin_dir().mkdir(parents=True, exist_ok=True)
    with (bin_dir() / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


Reporter = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _count_packages(tool: Tool, moddir: pathlib.Path) -> int:
    listed = subprocess.run(
        ["go", "list", "-deps", tool.package], cwd=moddir, env=go_env(),
        capture_output=True, text=True, check=False,
    )
    if listed.returncode != 0:
        raise BuildError(f"go list {tool.package} failed in {moddir}:\n{listed.stderr.strip()}")
    return len(listed.stdout.split())


def build_tool(tool: Tool, report: Reporter = _stderr) -> pathlib.Path:
    """Build one tool unless the cache already has it; return the binary's path."""
    target = bin_dir() / tool.binary_name
    if target.exists():
        return target
    if shutil.which("go") is None:
        raise BuildError(
            f"{tool.name} {tool.version} is not in {bin_dir()} and the Go toolchain is not "
            "on PATH. Install Go 1.26 or newer (https://go.dev/dl/), then run this again."
        )
    moddir = modules_dir(tool.group) / tool.module
    with build_lock():
        if target.exists():
            return target
        started = time.monotonic()
        report(f"Building {tool.name} {tool.version} into {target} (once; cached afterwards)")
        report(f"  resolving packages of {tool.package} ...")
        total = _count_packages(tool, moddir)
        partial = target.with_suffix(".partial")
        command = ["go", "build", "-v", "-trimpath", "-ldflags", " ".join(("-s", "-w",
                   *tool.ldflags)), "-o", str(partial), tool.package]
        process = subprocess.Popen(command, cwd=moddir, env=go_env(), text=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert process.stderr is not None
        compiled, next_step, errors = 0, 0.0, []
        for raw in process.stderr:
            line = raw.rstrip()
            if " " in line or line.startswith("#"):
                errors.append(line)
                continue
            compiled += 1
            share = compiled / max(total, 1)
            if share >= next_step:
                elapsed = time.monotonic() - started
                report(f"  {tool.name}: {compiled}/{total} packages compiled "
                       f"({share:.0%}, {elapsed:.0f}s) {line}")
                next_step = share + 0.05
        if process.wait() != 0:
            partial.unlink(missing_ok=True)
            raise BuildError(f"go build {tool.package} failed:\n" + "\n".join(errors[-40:]))
        partial.replace(target)
        size_mb = target.stat().st_size / 1e6
        report(f"  built {tool.name} in {time.monotonic() - started:.0f}s ({size_mb:.0f} MB)")
        return target


def build_all(names: tuple[str, ...] = ("etcd", "kube-apiserver", "helm"),
              report: Reporter = _stderr) -> dict[str, pathlib.Path]:
    known = tools()
    return {name: build_tool(known[name], report) for name in expand(names)}
