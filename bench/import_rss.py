"""``python -m bench.import_rss``: what the idle operator's memory is made of (bench/memory.md).

1. The idle operator: ``fluxsupport run`` against a fresh local control plane (etcd and
   kube-apiserver, our CRDs, no objects of ours), its VmRSS once /readyz answers and the
   process has been idle for ``--settle`` seconds; one new operator process per trial.
   A hook (a ``sitecustomize`` on the operator's PYTHONPATH, nothing in the package) writes
   the modules the idle operator has loaded and, in one extra traced run, a tracemalloc
   snapshot of where its Python objects were allocated.
2. The imports: fresh interpreters that import, stage by stage and cumulatively, exactly the
   modules the idle operator has loaded, grouped by the package that brings them, in the
   order the operator imported them. A stage's figure is what it adds to the stages before
   it, so a dependency two packages share counts for the first that loads it.
3. The remainder, idle RSS minus all imports, is what running adds: connections, the
   watch streams, kopf's and asyncio's state, freed memory that malloc keeps.

Writes ``rss_idle_breakdown`` into bench/results/latest.json (read, update that key, write;
the other keys stay). From another benchmark with a control plane already running:
``await import_rss.measure(kubeconfig, workdir)`` returns the same dictionary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterable
from typing import Any

from tests import harness

ROOT = pathlib.Path(__file__).resolve().parents[1]

#: The stages, in the order they are added; each lists the top-level modules it brings. A
#: package comes after what it imports (prometheus_client.aiohttp imports aiohttp, kopf the
#: kubernetes client). What the idle operator loads from packages named nowhere here lands
#: in "stdlib: the rest" or "other".
GROUPS: list[tuple[str, tuple[str, ...]]] = [
    ("stdlib: ssl, hashlib", ("ssl", "_ssl", "hashlib", "_hashlib", "hmac")),
    ("stdlib: asyncio", ("asyncio", "_asyncio", "selectors", "socket", "_socket", "select",
                         "concurrent")),
    ("stdlib: the rest", ()),
    ("yaml", ("yaml", "_yaml")),
    ("pydantic", ("pydantic", "pydantic_core", "annotated_types", "typing_extensions",
                  "typing_inspection")),
    ("holidays", ("holidays", "dateutil", "six")),
    ("aiohttp", ("aiohttp", "multidict", "yarl", "frozenlist", "aiosignal", "propcache",
                 "aiohappyeyeballs", "attr", "attrs", "idna")),
    ("prometheus_client", ("prometheus_client",)),
    ("kubernetes", ("kubernetes", "urllib3", "certifi", "requests", "requests_oauthlib",
                    "oauthlib", "websocket", "google", "durationpy", "charset_normalizer",
                    "rsa", "pyasn1", "pyasn1_modules", "cachetools")),
    ("kopf", ("kopf", "iso8601", "python_json_logger", "pythonjsonlogger")),
    ("typer", ("typer", "click", "rich", "shellingham", "markdown_it", "mdurl", "pygments",
               "annotated_doc")),
    ("jsonschema", ("jsonschema", "jsonschema_specifications", "referencing", "rpds")),
    ("other", ()),
    ("fluxsupport", ("fluxsupport",)),
]

#: Written into a temporary directory put first on the operator's PYTHONPATH.
HOOK = textwrap.dedent('''
    """bench/import_rss.py: on SIGUSR1, write what this process has loaded."""
    import json, os, signal, sys

    def _dump(signum, frame):
        data = {"modules": list(sys.modules)}
        import tracemalloc
        if tracemalloc.is_tracing():
            snapshot = tracemalloc.take_snapshot()
            data["traced_mb"] = tracemalloc.get_traced_memory()[0] / 2**20
            data["by_file"] = [[s.traceback[0].filename, s.size]
                               for s in snapshot.statistics("filename")[:400]]
        path = os.environ["FLUXSUPPORT_RSS_DUMP"]
        with open(path + ".part", "w") as out:
            json.dump(data, out)
        os.replace(path + ".part", path)

    if os.environ.get("FLUXSUPPORT_RSS_DUMP"):
        signal.signal(signal.SIGUSR1, _dump)
''')

#: Run in a fresh interpreter: import the modules named on stdin, print VmRSS and friends.
PROBE = textwrap.dedent('''
    import importlib, json, sys, tracemalloc
    names = json.loads(sys.stdin.read())
    if sys.argv[1] == "traced":
        tracemalloc.start()
    failed = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:
            failed.append(name)
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    kb = {k: int(status[k].split()[0]) for k in ("VmRSS", "RssAnon", "RssFile")}
    print(json.dumps({**kb, "traced": tracemalloc.get_traced_memory()[0], "failed": failed}))
''')


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def group_of(module: str) -> str:
    top = _top(module)
    for group, packages in GROUPS:
        if top in packages:
            return group
    return "stdlib: the rest" if top in sys.stdlib_module_names else "other"


def importable(modules: Iterable[str]) -> list[str]:
    """What a fresh interpreter can import by name, in the operator's order. Not: __main__
    and the command's own entry, and holidays' countries, whose package the first calendar
    defers (domain/holidaycountries.py): importing them by name would run the deferred
    __init__."""
    skipped = ("__main__", "__mp_main__", "sitecustomize", "fluxsupport.__main__")
    return [m for m in modules if m not in skipped and not m.startswith("holidays.countries")]


def probe(names: list[str], traced: bool = False) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, "traced" if traced else "rss"], input=json.dumps(names),
        capture_output=True, text=True, timeout=300, check=True, cwd=ROOT)
    data: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return data


def import_stages(modules: list[str], runs: int = 3) -> list[dict[str, Any]]:
    """Cumulative stages of the idle operator's modules, each measured in ``runs`` fresh
    interpreters (median) and once more under tracemalloc."""
    names = importable(modules)
    stages: list[dict[str, Any]] = []
    loaded: list[str] = []
    previous: dict[str, float] = {"VmRSS": 0.0, "RssAnon": 0.0, "RssFile": 0.0, "traced": 0.0}
    for group, _ in [("interpreter", ()), *GROUPS]:
        added = [m for m in names if group_of(m) == group] if group != "interpreter" else []
        if group != "interpreter" and not added:
            continue
        loaded += added
        trials = [probe(loaded) for _ in range(runs)]
        traced = probe(loaded, traced=True)
        figures = {k: statistics.median(t[k] for t in trials) / 1024
                   for k in ("VmRSS", "RssAnon", "RssFile")}
        figures["traced"] = traced["traced"] / 2**20
        stages.append({
            "stage": group,
            "modules": len(added),
            "packages": sorted({_top(m) for m in added}),
            "rss_mb": round(figures["VmRSS"], 1),
            "added_mb": round(figures["VmRSS"] - previous["VmRSS"], 1),
            "added_anon_mb": round(figures["RssAnon"] - previous["RssAnon"], 1),
            "added_file_mb": round(figures["RssFile"] - previous["RssFile"], 1),
            "added_traced_mb": round(figures["traced"] - previous["traced"], 1),
            "trials_mb": [round(t["VmRSS"] / 1024, 1) for t in trials],
            "failed_imports": trials[0]["failed"][:20],
        })
        previous = figures
    return stages


def holiday_calendars(runs: int = 3) -> dict[str, float]:
    """What the first SupportCase adds: the GB-ENG calendar, with the country package
    deferred (now), and what running it in full costs on top (before: python-holidays
    imported all 250 countries for any one)."""
    code = textwrap.dedent('''
        import re, sys
        def rss(): return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read())[1])
        if sys.argv[1] == "all":
            import holidays.countries
        from fluxsupport.domain import policy
        before = rss()
        policy.holiday_calendar("GB-ENG", range(2025, 2028))
        print(before, rss())
    ''')
    kb: dict[str, list[tuple[int, int]]] = {}
    for mode in ("one", "all"):
        kb[mode] = []
        for _ in range(runs):
            out = subprocess.run([sys.executable, "-c", code, mode], capture_output=True,
                                 text=True, timeout=120, check=True, cwd=ROOT).stdout.split()
            kb[mode].append((int(out[0]), int(out[1])))
    one = statistics.median(after - before for before, after in kb["one"])
    everything = statistics.median(after for _, after in kb["all"])
    return {"one_country_mb": round(one / 1024, 1),
            "all_countries_extra_mb": round(
                (everything - statistics.median(a for _, a in kb["one"])) / 1024, 1)}


def kubernetes_split(runs: int = 3) -> dict[str, float]:
    """The kubernetes client's two halves: the generated models and the generated API
    classes. Measurement only: its package __init__ imports both, so the probe registers
    the two packages without running their __init__ to import one half at a time."""
    code = textwrap.dedent('''
        import importlib.util, re, sys
        def rss(): return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read())[1])
        import yaml, urllib3, six, dateutil.parser, ssl, json, certifi, logging, multiprocessing
        for name in ("kubernetes", "kubernetes.client"):
            spec = importlib.util.find_spec(name)
            sys.modules[name] = importlib.util.module_from_spec(spec)
        start = rss()
        import kubernetes.client.models
        models = rss()
        import kubernetes.client.api
        apis = rss()
        print(models - start, apis - models)
    ''')
    trials = [[int(v) for v in subprocess.run([sys.executable, "-c", code], capture_output=True,
                                               text=True, timeout=120, check=True
                                               ).stdout.split()] for _ in range(runs)]
    return {"models_mb": round(statistics.median(t[0] for t in trials) / 1024, 1),
            "apis_mb": round(statistics.median(t[1] for t in trials) / 1024, 1)}


def _rss_mb(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


async def _idle_run(kubeconfig: pathlib.Path, workdir: pathlib.Path, hook: pathlib.Path,
                    settle_s: float, traced: bool) -> dict[str, Any]:
    dump = workdir / f"dump-{time.monotonic_ns()}.json"
    policy = workdir / "policy.yaml"
    policy.write_text("")
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(hook),
                                                       os.environ.get("PYTHONPATH")])),
           "FLUXSUPPORT_RSS_DUMP": str(dump)}
    if traced:
        env["PYTHONTRACEMALLOC"] = "1"
    operator = harness.OperatorProcess(kubeconfig, workdir, extra_args=("--policy", str(policy)),
                                       env=env, verbose=False, name="rss-operator")
    await asyncio.to_thread(operator.start)
    try:
        assert operator.pid is not None
        await asyncio.sleep(settle_s)
        rss = _rss_mb(operator.pid)
        threads = len(os.listdir(f"/proc/{operator.pid}/task"))
        os.kill(operator.pid, signal.SIGUSR1)
        # A snapshot of a traced process takes a while on a loaded machine.
        deadline = time.monotonic() + 180
        while not dump.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        if not dump.exists():
            raise RuntimeError(f"the operator wrote no {dump.name}:\n{operator.log_tail()}")
        data: dict[str, Any] = json.loads(dump.read_text())
    finally:
        await asyncio.to_thread(operator.stop)
    return {"rss_mb": rss, "threads": threads, **data}


def _by_package(by_file: list[list[Any]], limit: int = 12) -> list[dict[str, Any]]:
    """tracemalloc's sizes per file, summed per package (site-packages/<pkg>/, the standard
    library's module, or the importer for code objects read while importing)."""
    sums: dict[str, int] = {}
    for filename, size in by_file:
        path = pathlib.PurePath(filename)
        if "site-packages" in path.parts:
            key = path.parts[path.parts.index("site-packages") + 1]
        elif "fluxsupport" in path.parts:
            key = "fluxsupport/" + "/".join(path.parts[path.parts.index("fluxsupport") + 1:])
        elif filename.startswith("<frozen importlib"):
            key = "importing (code objects, module dicts)"
        else:
            key = "stdlib " + path.name
        sums[key] = sums.get(key, 0) + size
    ranked = sorted(sums.items(), key=lambda item: -item[1])[:limit]
    return [{"where": key.removesuffix(".py"), "mb": round(size / 2**20, 2)}
            for key, size in ranked]


async def measure(kubeconfig: pathlib.Path, workdir: pathlib.Path, *, trials: int = 3,
                  settle_s: float = 15.0, runs: int = 3) -> dict[str, Any]:
    """The breakdown of the idle operator's RSS, against a control plane already running."""
    hook = workdir / "rss-hook"
    hook.mkdir(parents=True, exist_ok=True)
    (hook / "sitecustomize.py").write_text(HOOK)
    load_before = os.getloadavg()
    idle = [await _idle_run(kubeconfig, workdir, hook, settle_s, traced=False)
            for _ in range(trials)]
    traced = await _idle_run(kubeconfig, workdir, hook, settle_s, traced=True)
    modules = idle[0]["modules"]
    stages = await asyncio.to_thread(import_stages, modules, runs)
    rss = [run["rss_mb"] for run in idle]
    median = statistics.median(rss)
    imports = stages[-1]["rss_mb"]
    return {
        "rss_idle_mb": round(median, 1),
        "rss_idle_min_mb": round(min(rss), 1),
        "rss_idle_max_mb": round(max(rss), 1),
        "rss_idle_trials_mb": [round(v, 1) for v in rss],
        "settle_s": settle_s,
        "threads": idle[0]["threads"],
        "modules": len(modules),
        "imports_mb": imports,
        "running_mb": round(median - imports, 1),
        "stages": stages,
        "first_case_holidays": await asyncio.to_thread(holiday_calendars, runs),
        "kubernetes_client": await asyncio.to_thread(kubernetes_split, runs),
        "traced_idle_mb": round(traced["traced_mb"], 1),
        "traced_idle_top": _by_package(traced["by_file"]),
        "load_average": [round(v, 2) for v in (*load_before, *os.getloadavg())],
    }


def print_breakdown(breakdown: dict[str, Any]) -> None:
    print(f"idle operator RSS {breakdown['rss_idle_mb']:.1f} MB (trials "
          f"{breakdown['rss_idle_trials_mb']}, {breakdown['modules']} modules, "
          f"{breakdown['threads']} threads)")
    print(f"{'stage':<20}{'adds MB':>8}{'anon':>7}{'file':>7}{'traced':>8}{'total':>8}"
          f"{'modules':>9}  packages")
    for stage in breakdown["stages"]:
        print(f"{stage['stage']:<20}{stage['added_mb']:>8.1f}{stage['added_anon_mb']:>7.1f}"
              f"{stage['added_file_mb']:>7.1f}{stage['added_traced_mb']:>8.1f}"
              f"{stage['rss_mb']:>8.1f}{stage['modules']:>9}  "
              f"{' '.join(stage['packages'])[:60]}")
    print(f"{'running (idle - imports)':<20}{breakdown['running_mb']:>8.1f}")
    holidays = breakdown["first_case_holidays"]
    print(f"first case, GB-ENG calendar: {holidays['one_country_mb']} MB "
          f"(the other 249 countries would add {holidays['all_countries_extra_mb']} MB)")
    split = breakdown["kubernetes_client"]
    print(f"kubernetes.client: models {split['models_mb']} MB, APIs {split['apis_mb']} MB")
    print(f"tracemalloc, idle: {breakdown['traced_idle_mb']} MB of Python objects; largest:")
    for entry in breakdown["traced_idle_top"]:
        print(f"  {entry['mb']:>6.2f} MB  {entry['where']}")
    print(f"load average before/after: {breakdown['load_average']}")


async def _main_async(args: argparse.Namespace) -> dict[str, Any]:
    from bench import scenarios  # the control plane; only for this command

    with tempfile.TemporaryDirectory(prefix="fluxsupport-rss-") as folder:
        workdir = pathlib.Path(folder)
        async with scenarios.control_plane(workdir) as setup:
            return await measure(setup.plane.kubeconfig, workdir, trials=args.trials,
                                 settle_s=args.settle, runs=args.runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3, help="idle operators to start")
    parser.add_argument("--settle", type=float, default=15.0,
                        help="seconds idle after /readyz before reading RSS")
    parser.add_argument("--runs", type=int, default=3, help="fresh interpreters per stage")
    parser.add_argument("--output", type=pathlib.Path,
                        default=ROOT / "bench" / "results" / "latest.json")
    args = parser.parse_args()
    breakdown = asyncio.run(_main_async(args))
    results = json.loads(args.output.read_text()) if args.output.exists() else {}
    results["rss_idle_breakdown"] = breakdown
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print_breakdown(breakdown)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
