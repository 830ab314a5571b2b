"""Files shipped inside the package: the CRDs and the demo data.

They are package data, not files of the checkout, so that the offline commands work from an
installed wheel or the container image. The top-level ``crds/`` is a link to the same folder,
and the chart's copies are generated from it (``make chart-sync``).
"""

from __future__ import annotations

import importlib.resources
from importlib.resources.abc import Traversable
from typing import Any

import yaml


def crd_files() -> list[Traversable]:
    folder = importlib.resources.files("fluxsupport") / "crds"
    return sorted((item for item in folder.iterdir() if item.name.endswith(".yaml")),
                  key=lambda item: item.name)


def crd_documents() -> list[dict[str, Any]]:
    return [yaml.safe_load(item.read_text()) for item in crd_files()]


def demo_text(name: str) -> str:
    return (importlib.resources.files("fluxsupport") / "demo" / name).read_text()
