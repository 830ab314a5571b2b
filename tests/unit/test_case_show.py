"""`fluxsupport case show` with the cluster and the portal faked: the case's escalation,
root-cause analysis and waits on the customer come from its status, printed where the status
has them and left out where it has not. tests/integration/test_case_show.py runs the command
against the real API server and RT."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from typer.testing import CliRunner

from fluxsupport.channels import portal
from fluxsupport.cli import case as case_cli
from fluxsupport.cli import case_show
from fluxsupport.domain import policy
from fluxsupport.domain.submission import Transaction

TICKET = portal.Ticket("7", "https://rt.example/Ticket/Display.html?id=7",
                       "[fluxsupport:0c6f] Level 2 (High): HelmReleases stuck", "open",
                       requestors=("oncall@customer.example",), priority=75)
HISTORY = [
    Transaction("501", "Create", "fluxsupport", datetime.datetime(2026, 11, 30, 10, 0,
                                                                   tzinfo=datetime.UTC),
                content="Level 2 (High) support case."),
    Transaction("507", "Correspond", "alice", datetime.datetime(2026, 11, 30, 11, 0,
                                                                 tzinfo=datetime.UTC),
                content="Please send the output of flux check."),
]
STATUS = {
    "level": 2,
    "submission": {"channel": "portal", "ticketId": "7"},
    "escalation": {"tier": 2, "tiers": [
        {"tier": 1, "contact": "account manager", "reachedAt": "2026-11-30T13:00:00Z",
         "trigger": "TargetAtRisk",
         "detail": "the first response target is at risk since 2026-11-30T13:00:00Z"},
        {"tier": 2, "contact": "head of customer success",
         "reachedAt": "2026-12-02T11:00:00Z", "trigger": "NotProgressing",
         "detail": "no reply from support for 16h"}]},
    "rootCauseAnalysis": {"state": "Late", "dueAt": "2026-12-13T10:00:00Z",
                          "deliveredAt": "2026-12-14T09:00:00Z", "deliveredBy": "bob",
                          "source": "portal"},
    "pauses": [{"start": "2026-12-01T09:00:00Z", "end": "2026-12-01T15:00:00Z",
                "source": "portal"},
               {"start": "2026-12-03T08:00:00Z", "source": "annotation"}],
}


class FakeCases:
    def __init__(self, status: dict[str, Any]) -> None:
        self.status = status

    def get(self, plural: str, name: str, namespace: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": namespace}, "status": self.status}


def show(monkeypatch: pytest.MonkeyPatch, status: dict[str, Any], *args: str) -> str:
    """The output of ``case show stuck -n team-a ARGS`` for a case with ``status``."""

    async def read(channels: policy.Channels, token: str, ticket_id: str
                   ) -> tuple[portal.Ticket, list[Transaction], str]:
        assert ticket_id == "7"
        return TICKET, HISTORY, "fluxsupport"

    channels = policy.Channels.model_validate({"portal": {
        "enabled": True, "url": "https://rt.example/", "queue": "FluxSupport"}})
    monkeypatch.setattr(case_show, "custom_api", lambda kubeconfig: FakeCases(status))
    monkeypatch.setattr(case_show, "_channels", lambda *_: channels)
    monkeypatch.setattr(case_show, "_token", lambda *_: "token")
    monkeypatch.setattr(case_show, "_read", read)
    result = CliRunner().invoke(case_cli.app, ["show", "stuck", "-n", "team-a", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_case_show_prints_the_escalation_the_rca_and_the_waits_of_the_status(
        monkeypatch: pytest.MonkeyPatch) -> None:
    lines = show(monkeypatch, STATUS).splitlines()
    assert lines[:3] == [
        "supportcase team-a/stuck: ticket 7 (open) https://rt.example/Ticket/Display.html?id=7",
        "priority 75, due -",
        "waits on customer; 1 support reply, the last at 2026-11-30T11:00:00Z by alice"]
    assert lines[3:11] == [
        "root-cause analysis Late at 2026-12-14T09:00:00Z by bob (portal), "
        "due 2026-12-13T10:00:00Z",
        "escalation: tier 2",
        "  tier 1 (account manager) reached at 2026-11-30T13:00:00Z, TargetAtRisk: the first "
        "response target is at risk since 2026-11-30T13:00:00Z",
        "  tier 2 (head of customer success) reached at 2026-12-02T11:00:00Z, NotProgressing: "
        "no reply from support for 16h",
        "waited on the customer 2 times",
        "  2026-12-01T09:00:00Z to 2026-12-01T15:00:00Z (portal)",
        "  since 2026-12-03T08:00:00Z (annotation)",
        ""]
    assert lines[11].startswith("#501 2026-11-30T10:00:00Z customer fluxsupport (opened)")


def test_case_show_gives_the_status_blocks_as_data(monkeypatch: pytest.MonkeyPatch) -> None:
    data = json.loads(show(monkeypatch, STATUS, "-o", "json"))
    assert data["escalation"] == STATUS["escalation"]
    assert data["rootCauseAnalysis"] == STATUS["rootCauseAnalysis"]
    assert data["pauses"] == STATUS["pauses"]
    assert [message["id"] for message in data["thread"]] == ["501", "507"]


def test_case_show_prints_nothing_for_blocks_the_status_lacks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    bare = {"level": 2, "submission": {"channel": "portal", "ticketId": "7"}}
    text = show(monkeypatch, bare)
    for absent in ("escalation", "root-cause analysis", "waited on the customer"):
        assert absent not in text
    assert "    Please send the output of flux check." in text.splitlines()
    data = json.loads(show(monkeypatch, bare, "-o", "json"))
    assert (data["escalation"], data["rootCauseAnalysis"], data["pauses"]) == (None, None, [])
    # The policy has escalation tiers and none is reached yet: said so.
    pending = show(monkeypatch, {**bare, "escalation": {"tier": 0, "tiers": []}})
    assert "escalation: no tier reached" in pending.splitlines()
