"""Where fluxsupport keeps built tools and finds the files of its source checkout."""

import os
import pathlib


def cache_dir() -> pathlib.Path:
    """The build cache for the local control plane (``FLUXSUPPORT_CACHE`` overrides it)."""
    override = os.environ.get("FLUXSUPPORT_CACHE")
    if override:
        return pathlib.Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = pathlib.Path(xdg) if xdg else pathlib.Path.home() / ".cache"
    return base / "fluxsupport"


def source_root() -> pathlib.Path:
    """The checkout holding ``hack/`` (the Go tool modules).

    The development tools (devcluster, demo) need files that are not part of the wheel.
    ``FLUXSUPPORT_SOURCE`` points at a checkout when the package is not installed from one.
    """
    override = os.environ.get("FLUXSUPPORT_SOURCE")
    if override:
        return pathlib.Path(override).expanduser().resolve()
    # operator/fluxsupport/devcluster/paths.py -> the checkout is four levels up.
    return pathlib.Path(__file__).resolve().parents[3]
