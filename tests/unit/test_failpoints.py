"""The crash points of the exactly-once tests: a step, and optionally one case."""

from __future__ import annotations

import os

import pytest

from fluxsupport import failpoints


@pytest.mark.parametrize(("step", "only", "killed"), [
    ("after-update-post", None, [("team-a", "one"), ("team-b", "two")]),
    ("after-update-post", "team-b/two", [("team-b", "two")]),
    ("before-update-post", None, []),
])
def test_a_step_kills_for_every_case_or_only_the_one_named(
        monkeypatch: pytest.MonkeyPatch, step: str, only: str | None,
        killed: list[tuple[str, str]]) -> None:
    monkeypatch.setenv(failpoints.VARIABLE, step)
    if only is not None:
        monkeypatch.setenv(failpoints.CASE_VARIABLE, only)
    kills: list[tuple[str, str]] = []
    reached: tuple[str, str] = ("", "")
    monkeypatch.setattr(os, "kill", lambda pid, sig: kills.append(reached))
    for reached in (("team-a", "one"), ("team-b", "two")):
        failpoints.reach("after-update-post", reached)
    assert kills == killed
