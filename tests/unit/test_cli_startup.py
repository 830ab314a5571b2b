"""CLI start-up: the offline commands and --help load no cluster client, and the one-line help
that --help shows for a lazily imported command is that command's own."""

from __future__ import annotations

import importlib.resources
import pathlib
import re
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from fluxsupport import cli
from fluxsupport.cli import bulletin, case
from fluxsupport.cli.lazy import Lazy, LazyGroup

#: What an offline command must not load: the cluster clients and the layer that uses them.
FORBIDDEN = ("kopf", "kubernetes", "aiohttp", "fluxsupport.kube")
DEMO = pathlib.Path(str(importlib.resources.files("fluxsupport") / "demo"))


def imported_modules(*args: str, cwd: pathlib.Path
                     ) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    """Every module the command imports, from `python -X importtime` (stderr, one per line)."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "fluxsupport", *args],
                            capture_output=True, text=True, timeout=120, check=False, cwd=cwd)
    modules = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
               if line.startswith("import time:")}
    return modules, result


def images_file(folder: pathlib.Path) -> pathlib.Path:
    path = folder / "images.yaml"
    path.write_text(yaml.safe_dump({"images": [{
        "name": "ghcr.io/controlplaneio-fluxcd/distroless/source-controller",
        "newTag": "v1.7.4", "digest": "sha256:" + "1" * 64}]}))
    return path


OFFLINE = {
    "help": (["--help"], 0),
    "sla-help": (["sla", "--help"], 0),
    "bulletin-help": (["bulletin", "--help"], 0),
    "sla-due": (["sla", "due", "--level", "1", "--opened", "2026-12-04T16:00:00Z"], 0),
    "bulletin-check": (["bulletin", "check", str(DEMO / "bulletin.yaml"), "--inventory",
                        str(DEMO / "flux-system.yaml"), "--vex", str(DEMO / "vex.json")], 1),
    "bulletin-check-json": (["bulletin", "check", str(DEMO / "bulletin.yaml"), "--inventory",
                             str(DEMO / "flux-system.yaml"), "-o", "json"], 1),
    "bulletin-import": (["bulletin", "import", "--images", "{images}", "--cve",
                         "CVE-2026-47680", "--name", "cpsb-x"], 0),
    "bulletin-import-osv": (["bulletin", "import", "--from", "osv",
                             str(pathlib.Path(__file__).parents[1] / "data" / "upstream"
                                 / "advisories"), "-o", "{tmp}/bulletins"], 0),
    # Scores CVSS vectors and computes the vendor's remediation deadlines.
    "bulletin-import-osv-policy": (["bulletin", "import", "--from", "osv",
                                    str(pathlib.Path(__file__).parents[1] / "data" / "upstream"
                                        / "advisories"), "--policy", "{policy}"], 0),
    "sla-due-paused": (["sla", "due", "--level", "1", "--opened", "2026-12-04T16:00:00Z",
                        "--paused", "2026-12-07T09:00:00Z/2026-12-07T10:00:00Z"], 0),
    # The demo's flux-system runs v2.7.5: two minors behind, still supported.
    "updates-check": (["updates", "check", "--releases",
                       str(pathlib.Path(__file__).parents[1] / "data" / "upstream"),
                       "--inventory", str(DEMO / "flux-system.yaml")], 0),
}


@pytest.mark.parametrize("case", OFFLINE)
def test_offline_commands_import_no_cluster_client(case: str, tmp_path: pathlib.Path) -> None:
    args, code = OFFLINE[case]
    policy = tmp_path / "policy.yaml"
    policy.write_text("preset: support-policy-2026\nregion: EMEA\n")
    args = [a.replace("{images}", str(images_file(tmp_path))).replace("{tmp}", str(tmp_path))
            .replace("{policy}", str(policy)) for a in args]
    modules, result = imported_modules(*args, cwd=tmp_path)
    assert result.returncode == code, result.stderr[-2000:]
    assert "fluxsupport.cli" in modules  # the parse saw the command run
    loaded = sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))
    assert not loaded, f"{' '.join(args)} imported {loaded[:10]}"


def test_sla_due_imports_one_holiday_country_and_no_yaml(tmp_path: pathlib.Path) -> None:
    """python-holidays' package __init__ imports all 250 countries; loading a calendar defers
    it first (domain/holidaycountries.py). The default policy needs no YAML parser, and the
    deadline arithmetic (domain/timing.py) not the rest of a case's status. holidays imports
    the country with importlib.import_module, which -X importtime does not list: sys.modules
    at exit does."""
    code = ("import atexit, runpy, sys\n"
            "atexit.register(lambda: print(*sys.modules, file=sys.stderr))\n"
            "sys.argv = ['fluxsupport', *sys.argv[1:]]\n"
            "runpy.run_module('fluxsupport', run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", code, *OFFLINE["sla-due"][0]],
                            capture_output=True, text=True, timeout=120, check=False,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == "2026-12-07T11:00:00+00:00\n"
    modules = result.stderr.split()
    countries = sorted(m for m in modules if m.startswith("holidays.countries."))
    assert countries == ["holidays.countries.united_kingdom"]
    assert "yaml" not in modules
    assert "fluxsupport.domain.supportcase" not in modules


def test_the_deferred_holiday_countries_still_load_in_full() -> None:
    """After a calendar deferred holidays.countries, reading a name from the package itself
    runs its __init__, and the calendars are python-holidays' own."""
    code = """
import sys
from fluxsupport.domain import policy
gb = policy.holiday_calendar("GB-ENG", 2026)
assert "holidays.countries.germany" not in sys.modules
import holidays, holidays.countries
from holidays.countries import Germany
assert not hasattr(holidays.countries, "NoSuchCountry")
assert dict(gb) == dict(holidays.UnitedKingdom(subdiv="ENG", years=2026, language="en_US"))
assert sorted(Germany(years=2026)) == sorted(holidays.country_holidays("DE", years=2026))
print(sum(m.startswith("holidays.countries.") for m in sys.modules))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout) > 200  # the whole package ran once asked for


def test_an_online_command_does_load_the_client(tmp_path: pathlib.Path) -> None:
    """The check above can fail: `bulletin list --help` imports its module, and so kubernetes."""
    modules, result = imported_modules("bulletin", "list", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "kubernetes" in modules


GROUPS: list[type[LazyGroup]] = [cli._Root, bulletin._Group, case._Group]


@pytest.mark.parametrize(("group", "name"), [(g, n) for g in GROUPS for n in g.lazy],
                         ids=lambda v: getattr(v, "__name__", v))
def test_listed_help_is_the_commands_own(group: type[LazyGroup], name: str) -> None:
    entry = group.lazy[name]
    command = entry.load(name)
    assert command.name == name
    assert entry.short_help == command.get_short_help_str(limit=1000)


def test_help_lists_every_command_in_order(tmp_path: pathlib.Path) -> None:
    _, result = imported_modules("--help", cwd=tmp_path)
    listed = [m.group(1) for m in re.finditer(r"^│ ([a-z]\S*)  ", result.stdout, re.M)]
    assert listed == list(cli._Root.lazy)


def test_a_command_whose_module_is_missing_says_so_without_a_traceback(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The wheel and the image leave out what only the development tools import."""
    (tmp_path / "fluxsupport_needs_missing.py").write_text(
        "import fluxsupport_not_installed_anywhere\napp = None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli._Root, "lazy", {
        **cli._Root.lazy, "tool": Lazy("fluxsupport_needs_missing:app", "A tool.")})
    result = CliRunner().invoke(cli.app, ["tool", "--help"])
    assert result.exit_code == 1
    assert "`fluxsupport tool` needs the Python module 'fluxsupport_not_installed_anywhere'" \
        in result.output
    assert not isinstance(result.exception, ModuleNotFoundError)
