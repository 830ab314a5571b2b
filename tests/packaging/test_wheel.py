"""The wheel works where CI users run it: installed in a fresh venv, outside the checkout.

`bulletin check` and `bulletin import` read the CRDs from the installed package, so they work
from a wheel or the container image, not only from the checkout. The wheel is built from a copy
of the sources, installed with the pinned dependencies (constraints.txt) into a venv under
~/.cache/fluxsupport (reused
while constraints.txt, the dependencies and the Python version are the same; only the wheel is
reinstalled), and the offline commands run from a directory outside the checkout, with no
PYTHONPATH, so nothing of the checkout can be found.

Never skipped: pip reaches PyPI (or its wheel cache) on every machine that runs `make test`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator

import pytest
import yaml

from fluxsupport.devcluster import paths

ROOT = pathlib.Path(__file__).resolve().parents[2]


def run(*args: str | pathlib.Path, cwd: pathlib.Path, timeout: float = 600
        ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def checked(*args: str | pathlib.Path, cwd: pathlib.Path, timeout: float = 600) -> str:
    result = run(*args, cwd=cwd, timeout=timeout)
    assert result.returncode == 0, f"{args}: {result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def build_wheel(work: pathlib.Path) -> pathlib.Path:
    """Build from a copy of what the sdist would hold, so the checkout gets no build/ folder
    and two test runs at once do not share one."""
    source = work / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "operator", source / "operator",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    checked(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", work / "dist",
            source, cwd=work)
    (wheel,) = (work / "dist").glob("fluxsupport-*.whl")
    return wheel


def requirements_of(wheel: pathlib.Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(metadata).decode()
    return sorted(line for line in text.splitlines() if line.startswith("Requires-Dist:")
                  and "extra ==" not in line)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pathlib.Path]:
    """The venv's bin/ with this checkout's wheel installed; locked while the tests use it."""
    work = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(work)
    key = hashlib.sha256("\n".join([
        (ROOT / "constraints.txt").read_text(), *requirements_of(wheel), sys.version,
    ]).encode()).hexdigest()[:16]
    venv = paths.cache_dir() / f"wheel-venv-{key}"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with (venv.parent / f"wheel-venv-{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pip = [venv / "bin" / "python", "-m", "pip", "--disable-pip-version-check"]
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            checked(sys.executable, "-m", "venv", venv, cwd=work)
            checked(*pip, "install", "--quiet", "-c", ROOT / "constraints.txt", wheel, cwd=work)
            (venv / ".complete").touch()
        else:
            checked(*pip, "install", "--quiet", "--no-deps", "--force-reinstall", wheel,
                    cwd=work)
        checked(*pip, "check", cwd=work)
        yield venv / "bin"


@pytest.fixture
def outside(tmp_path: pathlib.Path) -> pathlib.Path:
    assert not tmp_path.resolve().is_relative_to(ROOT)
    return tmp_path


def shipped_demo(bin_dir: pathlib.Path, cwd: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(checked(bin_dir / "python", "-c",
                                "import importlib.resources as r; print(r.files('fluxsupport'))",
                                cwd=cwd).strip()) / "demo"


def test_the_wheel_carries_the_crds_and_the_demo_data(installed: pathlib.Path,
                                                      outside: pathlib.Path) -> None:
    package = shipped_demo(installed, outside).parent
    assert package.is_relative_to(installed.parent), f"fluxsupport imported from {package}"
    names = sorted(p.name for p in (package / "crds").iterdir())
    assert names == sorted(p.name for p in (ROOT / "operator/fluxsupport/crds").glob("*.yaml"))
    for name in names:
        assert (package / "crds" / name).read_bytes() == \
            (ROOT / "operator/fluxsupport/crds" / name).read_bytes()
    assert {"bulletin.yaml", "cases.yaml", "flux-system.yaml", "vex.json"} <= {
        p.name for p in (package / "demo").iterdir()}


def test_sla_due_runs_from_the_wheel(installed: pathlib.Path, outside: pathlib.Path) -> None:
    out = checked(installed / "fluxsupport", "sla", "due", "--level", "1", "--opened",
                  "2026-12-04T16:00:00Z", cwd=outside)
    assert out == "2026-12-07T11:00:00+00:00\n"


def test_bulletin_check_runs_from_the_wheel_on_the_shipped_demo_data(
        installed: pathlib.Path, outside: pathlib.Path) -> None:
    demo = shipped_demo(installed, outside)
    result = run(installed / "fluxsupport", "bulletin", "check", demo / "bulletin.yaml",
                 "--inventory", demo / "flux-system.yaml", "--vex", demo / "vex.json",
                 "-o", "json", cwd=outside)
    # The demo runs source-controller from before the fix: exit 1 means "vulnerable found".
    assert result.returncode == 1, result.stderr
    (bulletin,) = json.loads(result.stdout)["bulletins"]
    verdicts = {c["component"]: c["verdict"] for c in bulletin["components"]}
    assert verdicts == {"source-controller": "Vulnerable"}


def test_bulletin_check_validates_against_the_shipped_crd(installed: pathlib.Path,
                                                          outside: pathlib.Path) -> None:
    demo = shipped_demo(installed, outside)
    bad = yaml.safe_load((demo / "bulletin.yaml").read_text())
    bad["spec"]["severity"] = "Catastrophic"
    (outside / "bad.yaml").write_text(yaml.safe_dump(bad))
    result = run(installed / "fluxsupport", "bulletin", "check", "bad.yaml", "--inventory",
                 demo / "flux-system.yaml", cwd=outside)
    assert result.returncode == 2
    assert "spec.severity" in result.stderr


def test_bulletin_import_runs_from_the_wheel(installed: pathlib.Path,
                                             outside: pathlib.Path) -> None:
    (outside / "images.yaml").write_text(yaml.safe_dump({"images": [{
        "name": "ghcr.io/controlplaneio-fluxcd/distroless/source-controller",
        "newTag": "v1.7.4", "digest": "sha256:" + "1" * 64}]}))
    out = checked(installed / "fluxsupport", "bulletin", "import", "--images", "images.yaml",
                  "--cve", "CVE-2026-47680", "--name", "cpsb-wheel",
                  "--published", "2026-06-02T12:00:00Z", cwd=outside)
    manifest = yaml.safe_load(out)
    assert manifest["kind"] == "SecurityBulletin"
    assert manifest["metadata"]["name"] == "cpsb-wheel"
    assert manifest["spec"]["fixes"] == [{
        "component": "source-controller", "version": "v1.7.4",
        "images": [{"repository": "ghcr.io/controlplaneio-fluxcd/distroless/source-controller",
                    "digest": "sha256:" + "1" * 64}]}]


def test_updates_check_runs_from_the_wheel(installed: pathlib.Path,
                                           outside: pathlib.Path) -> None:
    # The distribution's real release data, copied next to the run; the demo's flux-system
    # runs v2.7.5 with a source-controller build from before the CVE-2026-47680 rebuild.
    shutil.copytree(ROOT / "tests/data/upstream/images", outside / "images")
    demo = shipped_demo(installed, outside)
    result = run(installed / "fluxsupport", "updates", "check", "--releases", ".",
                 "--inventory", demo / "flux-system.yaml", "-o", "json", cwd=outside)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["running"], report["latest"], report["minorsBehind"], report["supported"]) \
        == ("v2.7.5", "v2.9.4", 2, True)
    newer = {c["name"] for c in report["components"] if c["newerBuild"]}
    assert newer == {"source-controller"}


def test_osv_import_runs_from_the_wheel(installed: pathlib.Path, outside: pathlib.Path) -> None:
    """The OSV schema is package data: the import validates against it outside the checkout."""
    shutil.copytree(ROOT / "tests/data/upstream/advisories", outside / "advisories")
    result = run(installed / "fluxsupport", "bulletin", "import", "--from", "osv", "advisories",
                 "-o", "bulletins", cwd=outside)
    assert result.returncode == 0, result.stderr
    written = sorted(path.name for path in (outside / "bulletins").glob("*.yaml"))
    assert written, result.stderr
    assert all(name.startswith("ghsa-") for name in written)
