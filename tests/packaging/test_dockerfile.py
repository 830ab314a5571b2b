"""The Dockerfile: hadolint accepts it, its shape is the hardened one, and its build stage is
replayed (COPY, ENV, WORKDIR, RUN as written) into a fresh directory on this machine's Python, and
the resulting `fluxsupport` is run the way the final stage runs it. test_image.py builds and runs
the real image."""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


@dataclasses.dataclass
class Instruction:
    keyword: str
    value: str


@dataclasses.dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[str]:
        return [i.value for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for line in self.all("ENV"):
            for word in shlex.split(line):
                key, _, value = word.partition("=")
                values[key] = value
        return values


def substitute(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], value)


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARGs and the stages; continuation lines joined, comments dropped."""
    logical, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # also inside a continuation, as Docker does
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, value = line.partition(" ")
        keyword, value = keyword.upper(), value.strip()
        if keyword == "ARG" and not stages:
            name, _, default = value.partition("=")
            args[name] = substitute(default, args)
        elif keyword == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", value, re.IGNORECASE)
            assert match, line
            stages.append(Stage(substitute(match.group(1), args), match.group(2), []))
        else:
            assert stages, f"{keyword} before FROM"
            stages[-1].instructions.append(Instruction(keyword, value))
    return args, stages


ARGS, STAGES = parse(DOCKERFILE.read_text())
BUILD, FINAL = STAGES[0], STAGES[-1]


def test_hadolint_passes() -> None:
    hadolint = pathlib.Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True,
                            text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_multi_stage_on_a_slim_python_311_base() -> None:
    assert len(STAGES) == 2
    assert BUILD.name == "build"
    for stage in STAGES:
        assert re.fullmatch(r"python:3\.11-slim(-\w+)?", stage.base), stage.base
    # `make image` gives the final stage a base of its own (no venv module, no pip wheel).
    assert set(ARGS) == {"PYTHON_IMAGE", "RUNTIME_IMAGE"}
    assert ARGS["RUNTIME_IMAGE"] == ARGS["PYTHON_IMAGE"]


def test_final_stage_runs_as_a_numeric_non_root_user_with_nothing_but_the_venv() -> None:
    [user] = FINAL.all("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), user
    assert gid.isdigit(), user
    assert int(uid) > 0
    assert int(gid) > 0
    # No RUN in the final stage: nothing is installed there (no compilers, no apt-get).
    assert FINAL.all("RUN") == []
    [copy] = FINAL.all("COPY")
    venv = BUILD.env()["VIRTUAL_ENV"]
    assert copy == f"--from={BUILD.name} {venv} {venv}", "the venv must keep its path"
    assert FINAL.env()["VIRTUAL_ENV"] == venv
    assert FINAL.env()["PATH"].startswith(f"{venv}/bin:")
    assert FINAL.all("ENTRYPOINT") == ['["fluxsupport"]']
    assert FINAL.all("CMD") == ['["run", "--metrics-port", "8080"]']
    assert FINAL.all("EXPOSE") == ["8080"]
    # The chart's pod securityContext uses the same IDs.
    values = (ROOT / "charts" / "fluxsupport" / "values.yaml").read_text()
    assert f"runAsUser: {uid}" in values
    assert f"runAsGroup: {gid}" in values


def test_dependencies_come_from_constraints_as_wheels_only() -> None:
    [run] = BUILD.all("RUN")
    installs = [part for part in run.split("&&") if " install " in part]
    assert len(installs) == 1
    assert "-c constraints.txt" in installs[0]
    assert "--only-binary=:all:" in installs[0], "no compiler may ever be needed"
    assert "--no-cache-dir" in installs[0]
    # pip and setuptools leave the venv once the install is done.
    assert any(re.search(r"/pip\" uninstall .*\bpip setuptools$", part.strip())
               for part in run.split("&&"))


def copy_sources() -> list[str]:
    sources = []
    for line in BUILD.all("COPY"):
        words = line.split()
        assert not words[0].startswith("--"), line
        sources.extend(words[:-1])
    return sources


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*"
    included = sorted(line[1:] for line in lines if line.startswith("!"))
    assert included == sorted(copy_sources())


def dockerignore_excludes() -> list[str]:
    return [line.strip().removeprefix("**/") for line in
            (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("**/")]


@dataclasses.dataclass
class Replay:
    venv: pathlib.Path
    env: dict[str, str]  # the build stage's environment on this machine


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Replay:
    """Replays the build stage outside Docker: the same COPY, ENV, WORKDIR and RUN lines."""
    tmp_path = tmp_path_factory.mktemp("replay")
    venv = tmp_path / "venv"
    # The image's `python` is Python 3.11, like the interpreter running these tests.
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "python").symlink_to(getattr(sys, "_base_executable", sys.executable))
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(BUILD.env())
    env.update(VIRTUAL_ENV=str(venv), PATH=f"{shims}:{env['PATH']}")
    [workdir] = BUILD.all("WORKDIR")
    context = tmp_path / workdir.lstrip("/")
    context.mkdir(parents=True)
    ignore = shutil.ignore_patterns(*dockerignore_excludes())
    for line in BUILD.all("COPY"):
        *sources, target = line.split()
        for source in sources:
            origin = ROOT / source
            destination = context / target
            if origin.is_dir():
                shutil.copytree(origin, destination, ignore=ignore, dirs_exist_ok=True)
            else:
                destination.mkdir(parents=True, exist_ok=True)
                shutil.copy(origin, destination / origin.name)
    assert not [p for p in context.rglob("*")
                if any(fnmatch.fnmatch(p.name, pat) for pat in dockerignore_excludes())]
    for run in BUILD.all("RUN"):
        result = subprocess.run(["/bin/sh", "-c", run], cwd=context, env=env,
                                capture_output=True, text=True, check=False, timeout=540)
        assert result.returncode == 0, f"RUN {run}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    return Replay(venv, env)


def test_the_build_stage_installs_the_pins_and_leaves_pip_out(replayed: Replay) -> None:
    # Every installed distribution has the version constraints.txt pins; pip and setuptools
    # are gone, and so is the kubernetes client's asyncio copy.
    venv = replayed.venv
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    listed = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "from importlib import metadata; "
         "print('\\n'.join(f\"{d.name}=={d.version}\" for d in metadata.distributions()))"],
        capture_output=True, text=True, check=True, timeout=120).stdout
    installed = {re.sub(r"[-_.]+", "-", name).lower(): version
                 for name, _, version in (line.partition("==") for line in listed.split())}
    assert "kopf" in installed
    assert "pip" not in installed
    assert "setuptools" not in installed
    assert "cryptography" not in installed, "only the development tools use it"
    for name, version in installed.items():
        if name == "fluxsupport":
            continue
        assert pins.get(name) == version, f"{name}=={version} is not the pinned {pins.get(name)}"
    [site] = (venv / "lib").glob("python3.*/site-packages")
    assert (site / "kubernetes" / "client").is_dir()
    assert not (site / "kubernetes" / "aio").exists()
    assert not list((venv / "bin").glob("pip*"))
    # Bytecode for what the package imports, none for what it never loads; unchecked-hash
    # .pyc files (flags 0b01), which mtimes rounded by a layer tar cannot make stale.
    [kopf] = (site / "kopf" / "__pycache__").glob("__init__.*.pyc")
    assert int.from_bytes(kopf.read_bytes()[4:8], "little") == 0b01
    assert not (site / "pygments" / "lexers" / "__pycache__").exists()


def test_the_build_stage_installs_a_working_fluxsupport(replayed: Replay,
                                                       tmp_path: pathlib.Path) -> None:
    # The final stage: PATH with the venv first, ENTRYPOINT ["fluxsupport"].
    venv, env = replayed.venv, replayed.env
    image_venv = BUILD.env()["VIRTUAL_ENV"]
    final_env = {**env, **FINAL.env()}
    final_env["PATH"] = final_env["PATH"].replace("$PATH", env["PATH"]).replace(
        image_venv, str(venv))
    final_env.pop("VIRTUAL_ENV")
    entrypoint = shutil.which("fluxsupport", path=final_env["PATH"])
    assert entrypoint == str(venv / "bin" / "fluxsupport")
    for args in (["--help"], ["run", "--metrics-port", "8080", "--help"]):
        shown = subprocess.run([entrypoint, *args], env=final_env, capture_output=True,
                               text=True, check=False, timeout=60, cwd=tmp_path)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert "Usage: fluxsupport" in shown.stdout


def test_parser_reads_what_the_tests_assert_on() -> None:
    args, stages = parse(
        "ARG BASE=python:3.11-slim\n# comment\nFROM ${BASE} AS build\n"
        "ENV A=1 \\\n    B=\"two words\"\nRUN a \\\n # inner comment\n && b\n"
        "FROM ${BASE}\nUSER 1:2\n")
    assert args == {"BASE": "python:3.11-slim"}
    assert [(s.base, s.name) for s in stages] == [("python:3.11-slim", "build"),
                                                  ("python:3.11-slim", None)]
    assert stages[0].env() == {"A": "1", "B": "two words"}
    assert stages[0].all("RUN") == ["a && b"]
    assert stages[1].all("USER") == ["1:2"]
