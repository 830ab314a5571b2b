"""``python -m bench.cli_startup`` (``make bench-cli``): how long the offline commands take to
start, against ``python -c pass`` measured in the same run (interleaved, so that load from
other work on the machine hits both alike).

Writes ``cli_start_s`` (median wall time of ``fluxsupport sla due``), ``cli_start_baseline_s``,
``cli_start_ratio`` and the other commands' medians into bench/results/latest.json, keeping the
figures already there; ``python -m bench`` measures the same as part of its run. This command
also counts the instructions of ``sla due`` when valgrind is installed
(``cli_start_instructions``), a figure that load on the machine does not move.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEMO = ROOT / "operator" / "fluxsupport" / "demo"
#: The start-up target on these 2-core machines.
TARGET_S = 0.3

COMMANDS = {
    "sla_due": ["sla", "due", "--level", "1", "--opened", "2026-12-04T16:00:00Z"],
    "help": ["--help"],
    "bulletin_check": ["bulletin", "check", str(DEMO / "bulletin.yaml"), "--inventory",
                       str(DEMO / "flux-system.yaml"), "--vex", str(DEMO / "vex.json"),
                       "-o", "json"],
}


def command_env() -> dict[str, str]:
    """The environment of every timed run. Without PYTHONDONTWRITEBYTECODE (set on some
    machines), so that the warm-up run leaves the checkout's .pyc files behind as any
    developer's first run does and an installed wheel has them: otherwise each run compiles
    the package's modules again (0.06-0.1 s of `sla due` on a loaded 2-core machine)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def wall_time(args: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
                   timeout=60, env=command_env())
    return time.perf_counter() - began


def measure(runs: int = 15) -> dict[str, Any]:
    baseline: list[float] = []
    commands: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for args in COMMANDS.values():  # warm the file cache and the .pyc files once
        wall_time([sys.executable, "-m", "fluxsupport", *args])
    for _ in range(runs):
        baseline.append(wall_time([sys.executable, "-c", "pass"]))
        for name, args in COMMANDS.items():
            commands[name].append(wall_time([sys.executable, "-m", "fluxsupport", *args]))
    base = statistics.median(baseline)
    start = statistics.median(commands["sla_due"])
    return {
        "cli_start_s": round(start, 4),
        "cli_start_baseline_s": round(base, 4),
        "cli_start_ratio": round(start / base, 1),
        "cli_start_over_baseline_s": round(start - base, 4),
        "cli_start_by_command_s": {n: round(statistics.median(t), 4)
                                   for n, t in commands.items()},
        "cli_start_trials": {"python -c pass": [round(t, 4) for t in baseline],
                             **{n: [round(x, 4) for x in t] for n, t in commands.items()}},
    }


def instructions() -> dict[str, int]:
    """Instructions executed by ``python -c pass`` and by ``sla due`` (valgrind's callgrind,
    one run each): unlike wall time, the same on a loaded machine, so that a change can be
    judged while others run tests. {} without valgrind. On these machines about 2.5e9
    instructions make one second of CPU."""
    if shutil.which("valgrind") is None:
        return {}
    counted: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, args in (("python -c pass", ["-c", "pass"]),
                           ("sla_due", ["-m", "fluxsupport", *COMMANDS["sla_due"]])):
            result = subprocess.run(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={folder}/out",
                 sys.executable, *args], capture_output=True, text=True, timeout=600,
                check=False, env=command_env())
            found = re.search(r"Collected : (\d+)", result.stderr)
            if found:
                counted[name] = int(found[1])
    return counted


def print_figures(figures: dict[str, Any]) -> None:
    met = "ok" if figures["cli_start_s"] < TARGET_S else "MISSED"
    print(f"{'cli_start_s (sla due)':<26}{figures['cli_start_s']:>14.3f}  < {TARGET_S}  {met}")
    print(f"{'python -c pass':<26}{figures['cli_start_baseline_s']:>14.3f}  same run")
    print(f"{'ratio':<26}{figures['cli_start_ratio']:>14.1f}")
    for name, value in figures["cli_start_by_command_s"].items():
        print(f"{'  ' + name:<26}{value:>14.3f}")
    for name, value in figures.get("cli_start_instructions", {}).items():
        print(f"{'instructions ' + name:<26}{value / 1e6:>13.0f}M")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--output", type=pathlib.Path,
                        default=ROOT / "bench" / "results" / "latest.json")
    args = parser.parse_args()
    figures = measure(args.runs)
    counted = instructions()
    if counted:
        figures["cli_start_instructions"] = counted
    results = json.loads(args.output.read_text()) if args.output.exists() else {}
    results.update(figures)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print_figures(figures)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
