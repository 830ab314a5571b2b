"""The vendored upstream data is what its provenance says: the files SHA256SUMS lists, unchanged."""

from __future__ import annotations

import hashlib

from tests import fixtures


def test_vendored_upstream_files_match_their_recorded_checksums() -> None:
    listed = {}
    for line in (fixtures.UPSTREAM / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        listed[name.removeprefix("./")] = digest
    present = {str(p.relative_to(fixtures.UPSTREAM)) for p in fixtures.UPSTREAM.rglob("*")
               if p.is_file() and p.name not in ("README.md", "SHA256SUMS")}
    assert present == set(listed), "a vendored file is missing from SHA256SUMS or from disk"
    assert len(listed) >= 20
    for name, digest in listed.items():
        assert hashlib.sha256((fixtures.UPSTREAM / name).read_bytes()).hexdigest() == digest, name
