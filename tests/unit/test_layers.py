"""Rules of the layout that import-linter cannot see: strings, not imports."""

from __future__ import annotations

import pathlib
import re

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "operator" / "fluxsupport"
#: A path of the API server's REST API in a string.
API_PATH = re.compile(r"""["'][^"'\n]*/apis?/""")
#: The local control plane and node wait for the processes they start to serve before any
#: client exists (and import no kube/ module, so that ``devcluster up`` loads no client).
OUTSIDE_THE_OPERATOR = ("devcluster",)


def test_no_module_outside_kube_builds_an_api_server_url() -> None:
    """Only kube/ knows where objects live (kube/objects.py): a controller, a source or the
    run loop names a kind, never a path."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in ("kube", *OUTSIDE_THE_OPERATOR):
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if API_PATH.search(line):
                found.append(f"{relative}:{number}: {line.strip()}")
    assert found == []
