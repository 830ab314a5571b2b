#!/usr/bin/env python3
"""Regenerate the Go tool modules that build the local control plane.

k8s.io/kubernetes requires its staging modules at the placeholder v0.0.0 and maps
them to ./staging/src in its own go.mod. A consumer must replace each one with the
published k8s.io/<name> v0.<minor>.<patch>. The list changes between minors, so it
is read from k/k's own go.mod instead of being typed by hand.

Usage: hack/controlplane/generate.py [--kubernetes v1.36.3] [--etcd v3.6.16] [--helm v3.22.0]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess

HERE = pathlib.Path(__file__).resolve().parent
#: The main packages under k8s.io/kubernetes/cmd built from the apiserver module: the control
#: plane, and the node of `fluxsupport devcluster up --node` (devcluster/node.py).
KUBERNETES_TOOLS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet",
                    "kube-proxy", "kubectl")


def go(*args: str, cwd: pathlib.Path) -> str:
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOWORK": "off"}
    return subprocess.run(["go", *args], cwd=cwd, env=env, check=True,
                          capture_output=True, text=True).stdout


def kubernetes_gomod(version: str) -> dict:
    info = json.loads(go("mod", "download", "-json", f"k8s.io/kubernetes@{version}", cwd=HERE))
    return json.loads(go("mod", "edit", "-json", info["GoMod"], cwd=HERE))


def write_module(name: str, go_line: str, godebug: str | None) -> pathlib.Path:
    moddir = HERE / name
    moddir.mkdir(exist_ok=True)
    for stale in ("go.mod", "go.sum"):
        (moddir / stale).unlink(missing_ok=True)
    go("mod", "init", f"fluxsupport.local/controlplane/{name}", cwd=moddir)
    go("mod", "edit", f"-go={go_line}", cwd=moddir)
    if godebug:
        go("mod", "edit", f"-godebug={godebug}", cwd=moddir)
    return moddir


def generate_apiserver(version: str) -> None:
    upstream = kubernetes_gomod(version)
    staging = sorted(r["Old"]["Path"] for r in upstream["Replace"]
                     if r["New"]["Path"].startswith("./staging/"))
    minor, patch = version.removeprefix("v1.").split(".")
    godebug = next((f"{g['Key']}={g['Value']}" for g in upstream.get("Godebug") or []
                    if g["Key"] == "default"), None)
    moddir = write_module("apiserver", upstream["Go"], godebug)
    edits = [f"-replace={path}={path}@v0.{minor}.{patch}" for path in staging]
    go("mod", "edit", f"-require=k8s.io/kubernetes@{version}", *edits, cwd=moddir)
    # The node's binaries come from the same module: they only add requirements, so no
    # version that kube-apiserver builds with changes.
    go("get", "-tool", *(f"k8s.io/kubernetes/cmd/{name}@{version}" for name in KUBERNETES_TOOLS),
       cwd=moddir)
    go("mod", "tidy", cwd=moddir)
    print(f"apiserver: k8s.io/kubernetes {version}, {len(staging)} staging replaces, "
          f"tools {', '.join(KUBERNETES_TOOLS)}")


def generate_etcd(version: str) -> None:
    # A module of its own: etcd at a newer patch would raise grpc and otel for the
    # apiserver too under minimal version selection.
    moddir = write_module("etcd", "1.25.0", None)
    go("get", "-tool", f"go.etcd.io/etcd/server/v3@{version}", cwd=moddir)
    go("mod", "tidy", cwd=moddir)
    print(f"etcd: go.etcd.io/etcd/server/v3 {version}")


def generate_helm(version: str) -> None:
    moddir = write_module("helm", "1.26.0", None)
    go("get", "-tool", f"helm.sh/helm/v3/cmd/helm@{version}", cwd=moddir)
    go("mod", "tidy", cwd=moddir)
    print(f"helm: helm.sh/helm/v3 {version}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubernetes", default="v1.36.3")
    parser.add_argument("--etcd", default="v3.6.16")
    parser.add_argument("--helm", default="v3.22.0")
    args = parser.parse_args()
    generate_apiserver(args.kubernetes)
    generate_etcd(args.etcd)
    generate_helm(args.helm)
    (HERE / "versions.json").write_text(json.dumps(
        {"kubernetes": args.kubernetes, "etcd": args.etcd, "helm": args.helm}, indent=2) + "\n")


if __name__ == "__main__":
    main()
