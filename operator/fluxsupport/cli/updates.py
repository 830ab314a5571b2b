"""``fluxsupport updates check``: how far the running Flux is behind the distribution, offline.

Runs in CI pipelines without a cluster, so this module imports nothing that talks to one.

Exit codes: 0 the running release is supported (behind or not), 1 it is not, 2 invalid input.
"""

from __future__ import annotations

import pathlib
from typing import Annotated, Any

import typer

from fluxsupport.cli import output
from fluxsupport.cli.bulletin import load_inventory
from fluxsupport.domain import updates

app = typer.Typer(help="Compare the running Flux with the distribution's releases.",
                  no_args_is_help=True)


def load_releases(directory: pathlib.Path) -> updates.ReleaseData:
    """``DIR/images/VERSION`` and ``DIR/images/<version>/<variant>.yaml``; DIR may also be the
    ``images`` directory itself."""
    images = directory / "images"
    if not images.is_dir() and (directory / "VERSION").is_file():
        images = directory
    version_file = images / "VERSION"
    if not version_file.is_file():
        raise output.fail(f"{directory}: no images/VERSION; expected the distribution's layout, "
                          "images/VERSION and images/<version>/<variant>.yaml")
    try:
        version_text = version_file.read_text()
        files = {(path.parent.name, path.stem): path.read_text()
                 for path in sorted(images.glob("*/*.yaml")) if path.is_file()}
    except OSError as error:
        raise output.fail(f"{error.filename}: cannot read: {error.strerror}") from error
    try:
        return updates.parse_release_data(version_text, files)
    except updates.ReleaseDataError as error:
        raise output.fail(f"{images}: {error}") from error


def report_json(report: updates.UpdateReport) -> dict[str, Any]:
    return report.model_dump(mode="json", by_alias=True)


@app.command()
def check(
    releases: Annotated[pathlib.Path, typer.Option(
        "--releases", help="A directory with the distribution's images/ layout: images/VERSION "
                           "and images/<version>/<variant>.yaml.", show_default=False)],
    inventory_files: Annotated[list[pathlib.Path], typer.Option(
        "--inventory", help="`kubectl get deploy,pods -n flux-system -o yaml` output, or "
                            "multi-document YAML.", show_default=False)],
    supported_minors: Annotated[int, typer.Option(
        help="How many of the most recent minors are supported.", min=1)
    ] = updates.DEFAULT_SUPPORTED_MINORS,
    fmt: Annotated[output.Format, output.OutputOption] = output.Format.table,
) -> None:
    """Say how far the running Flux is behind the latest release, offline (for CI pipelines).

    Example: fluxsupport updates check --releases distribution/ --inventory flux.yaml -o json

    Exit codes: 0 the running release is supported (behind or not), 1 it is not, 2 invalid input.
    """
    data = load_releases(releases)
    components = load_inventory(inventory_files)
    try:
        report = updates.check(components, data, supported_minors)
    except updates.ReleaseDataError as error:
        raise output.fail(str(error)) from error
    title = (f"Flux {report.running} ({report.variant}): latest {report.latest}, "
             f"{report.minors_behind} minor(s) behind, "
             f"{'supported' if report.supported else 'NOT supported'} "
             f"(supported minors: {', '.join(report.supported_minors)})")
    rows = [{"name": c.name, "running": c.running or "", "digest": ",".join(c.digests),
             "newestPatch": c.newest_patch or "-", "latest": c.latest or "-",
             "newerBuild": {True: "yes", False: "no", None: "unknown"}[c.newer_build]}
            for c in report.components]
    output.emit(report_json(report), fmt,
                [("COMPONENT", "name"), ("RUNNING", "running"), ("DIGEST", "digest"),
                 ("NEWEST PATCH", "newestPatch"), ("LATEST", "latest"),
                 ("NEWER BUILD", "newerBuild")], rows, title)
    if not report.supported:
        raise typer.Exit(1)
