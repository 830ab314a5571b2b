"""`make chart-sync` generates the chart's CRDs and rules from their one source: the package
data (operator/fluxsupport/crds/, what the wheel ships) and alerts/fluxsupport.rules.yaml."""

from __future__ import annotations

import pathlib
import shutil
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCE = ROOT / "operator" / "fluxsupport" / "crds"


def test_chart_sync_copies_the_package_crds_and_drops_stale_ones(tmp_path: pathlib.Path) -> None:
    chart = tmp_path / "chart"
    shutil.copytree(ROOT / "charts" / "fluxsupport", chart)
    (chart / "crds" / "supportcases.yaml").write_text("stale: true\n")
    (chart / "crds" / "removed-kind.yaml").write_text("stale: true\n")
    result = subprocess.run(["make", "--no-print-directory", "chart-sync",
                             f"CHART_DIR={chart}"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    shipped = sorted(p.name for p in (chart / "crds").iterdir())
    assert shipped == sorted(p.name for p in SOURCE.glob("*.yaml"))
    for name in shipped:
        assert (chart / "crds" / name).read_bytes() == (SOURCE / name).read_bytes()
    assert (chart / "files" / "fluxsupport.rules.yaml").read_bytes() == \
        (ROOT / "alerts" / "fluxsupport.rules.yaml").read_bytes()
