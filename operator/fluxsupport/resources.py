"""Files shipped inside the package: the CRDs, the demo data and the OSV JSON schema.

They are package data, not files of the checkout, so that the offline commands work from an
installed wheel or the container image. The top-level ``crds/`` is a link to the same folder,
and the chart's copies are generated from it (``make chart-sync``).
"""

from __future__ import annotations

import importlib.resources
import json
from importlib.resources.abc import Traversable
from typing import Any

import yaml


def crd_files() -> list[Traversable]:
    folder = importlib.resources.files("fluxsupport") / "crds"
    return sorted((item for item in folder.iterdir() if item.name.endswith(".yaml")),
                  key=lambda item: item.name)


def crd_documents() -> list[dict[str, Any]]:
    return [yaml.safe_load(item.read_text()) for item in crd_files()]


def osv_schema() -> dict[str, Any]:
    """The OSV JSON schema (schemas/README.md has its provenance), for `bulletin import`."""
    text = (importlib.resources.files("fluxsupport") / "schemas" / "osv-schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def demo_text(name: str) -> str:
    return (importlib.resources.files("fluxsupport") / "demo" / name).read_text()
