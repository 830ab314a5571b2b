"""A case's diagnostics as a shared snapshot: the full inventory once, a summary in each case.

Cases opened while Flux runs unchanged see the same controllers, images and digests: about
2.5 KB that every case carried in its status, and that the API server decoded, patched and
encoded again at every write of the case (a wave of breaches is bounded by exactly that). The
full inventory goes into one immutable ConfigMap named after its content, which every such case
references; the case keeps what a reader needs at a glance (versions and readiness per
controller), and the portal submission carries the full inventory as before.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

PREFIX = "fluxsupport-diagnostics-"
#: The ConfigMap key holding the snapshot as JSON.
KEY = "diagnostics.json"
#: The parts of the collected block that describe the cluster (not when or why it was taken).
CONTENT = ("kubernetesVersion", "fluxVersion", "components")


def content(collected: Mapping[str, Any]) -> dict[str, Any]:
    return {key: collected.get(key) for key in CONTENT if key in collected}


def snapshot_name(collected: Mapping[str, Any]) -> str:
    """Derived from the content: equal inventories share one snapshot, and creating it again
    after a crash is a no-op (409) rather than a second object."""
    canonical = json.dumps(content(collected), sort_keys=True, separators=(",", ":"))
    return PREFIX + hashlib.sha256(canonical.encode()).hexdigest()[:20]


def snapshot_data(collected: Mapping[str, Any]) -> dict[str, str]:
    return {KEY: json.dumps(content(collected), sort_keys=True, indent=1)}


def summary_line(component: Mapping[str, Any]) -> str:
    """``source-controller v1.7.4``, with `` (not ready)`` when it is not."""
    line = f"{component.get('name', '')} {component.get('version') or '(no tag)'}"
    return line if component.get("ready") else f"{line} (not ready)"


def referencing(collected: Mapping[str, Any], snapshot: str) -> dict[str, Any]:
    """The case's ``status.diagnostics`` that points at ``snapshot`` instead of holding it."""
    block = {key: collected[key] for key in ("request", "collectedAt", "kubernetesVersion",
                                             "fluxVersion") if key in collected}
    block["snapshot"] = snapshot
    block["summary"] = [summary_line(c) for c in collected.get("components") or []]
    return block
