"""Embargo: a bulletin under embargo shows through no other bulletin (the rebuild rule leaves it
out until the lift), and its own conditions and Events carry fixed texts, whatever its spec
and OpenVEX documents hold (lower-case ids, JSON escapes, cut titles, full-width letters)."""

from __future__ import annotations

import asyncio
import datetime
import json
import re
import traceback
import unicodedata
from typing import Any

import pytest

from fluxsupport.controllers import bulletin as controller
from fluxsupport.domain import bulletin, inventory, securitybulletin, vex
from tests import fixtures
from tests.unit.test_bulletin_index import Harness, make

PRE = fixtures.images(fixtures.PRE_FIX_V275)
FIX = fixtures.images(fixtures.FIX_V275)
UNTIL = datetime.datetime(2026, 7, 1, tzinfo=datetime.UTC)


def public_and_embargoed(until: datetime.datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    """A public bulletin whose fix is FIX, and a later one under embargo that lists the PRE
    build (the same version) as its fix: a rebuild, if it counted."""
    public = fixtures.bulletin_for("cpsb-public", "CVE-2026-47680", "source-controller",
                                   FIX["source-controller"], published="2026-01-10T00:00:00Z")
    hidden = fixtures.bulletin_for("ghsa-embargoed-rebuild", "CVE-2026-50001",
                                   "source-controller", PRE["source-controller"],
                                   published="2026-06-02T00:00:00Z",
                                   embargoUntil=until.strftime("%Y-%m-%dT%H:%M:%SZ"))
    for body in (public, hidden):
        name = body["metadata"]["name"]
        body["metadata"].update({"uid": f"uid-{name}", "resourceVersion": "1",
                                 "generation": 1})
    return public, hidden


def running_pre() -> list[inventory.RunningComponent]:
    return inventory.build_inventory(fixtures.deployments_running(PRE, "v2.7.5"))


def test_an_embargoed_later_bulletin_counts_as_a_rebuild_only_after_its_lift() -> None:
    public, hidden = (make(body) for body in public_and_embargoed(UNTIL))
    during = UNTIL - datetime.timedelta(days=1)
    [alone] = bulletin.evaluate(public, running_pre(), [public], now=during)
    [under] = bulletin.evaluate(public, running_pre(), [public, hidden], now=during)
    # As if the embargoed bulletin did not exist: any other answer would tell the public
    # bulletin's readers that a hidden bulletin lists the running build.
    assert under == alone
    assert (under.verdict, under.reason) == ("Vulnerable", "DigestNotListed")
    [after] = bulletin.evaluate(public, running_pre(), bulletin.FixIndex([public, hidden]),
                                now=UNTIL)
    assert (after.verdict, after.reason) == ("Fixed", "RebuiltIn:ghsa-embargoed-rebuild")


def test_the_public_bulletin_shows_nothing_of_the_embargoed_one_and_changes_at_the_lift(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        now = datetime.datetime.now(datetime.UTC)
        public, hidden = public_and_embargoed(now + datetime.timedelta(days=1))
        h = Harness(monkeypatch)
        h.run_image("source-controller", PRE["source-controller"])
        h.controller.observe(public)
        h.controller.observe(hidden)
        await h.drain()
        shown = json.dumps(h.fake.status["cpsb-public"])
        assert "embargoed-rebuild" not in shown
        assert h.verdict("cpsb-public") == "Vulnerable"
        assert h.fake.status["ghsa-embargoed-rebuild"]["embargoed"] is True

        # The lift, at embargoUntil: the public bulletin is checked again and credits it.
        monkeypatch.setattr(controller, "_now", lambda: now + datetime.timedelta(days=2))
        h.controller._reconcile_soon({"ghsa-embargoed-rebuild"})
        assert await h.drain() == ["cpsb-public", "ghsa-embargoed-rebuild"]
        [component] = h.fake.status["cpsb-public"]["components"]
        assert (component["verdict"], component["reason"]) == (
            "Fixed", "RebuiltIn:ghsa-embargoed-rebuild")
        assert h.fake.status["ghsa-embargoed-rebuild"]["embargoed"] is False

    asyncio.run(scenario())


# ---- fixed texts under embargo, with hostile input ------------------------------------------

CVE = "CVE-2026-50001"
TITLE = "Heap overflow in the zebra-kettle parser"
#: What must not show, in any case, escape or width: the id, pieces of the title, the
#: ConfigMap named after the advisory.
PROBES = ["cve-2026-50001", "zebra-kettle", "heap overflow", "zebra-ke", "cve-2026-50001-vex"]


def vex_text(statement: dict[str, Any]) -> str:
    return json.dumps({"@context": vex.CONTEXT, "@id": "https://example.com/vex",
                       "author": "vendor", "timestamp": "2026-06-01T00:00:00Z", "version": 1,
                       "statements": [{"products": [{"@id": "pkg:oci/source-controller"}],
                                       **statement}]})


#: The id with its letters full-width, and a piece of the title.
FULL_WIDTH_ID = "\uff43\uff56\uff45-2026-50001 zebra-kettle"
#: ConfigMap name -> a document that quotes the embargoed details in a way an exact,
#: case-sensitive replace misses.
HOSTILE_VEX = {
    # Not JSON at all: the pasted text of an e-mail, the id in lower case.
    "lower-case": "cve-2026-50001 is not reachable: Heap overflow in the zebra-ke",
    # An unknown status that quotes the id in lower case.
    "bad-status": vex_text({"vulnerability": {"name": CVE},
                            "status": "cve-2026-50001 is not reachable"}),
    # Full-width letters, which the error shows JSON-escaped.
    "full-width": vex_text({"vulnerability": {"name": CVE, "aliases": FULL_WIDTH_ID},
                            "status": "not_affected",
                            "justification": "component_not_present"}),
    # A product that can match nothing, named after the flaw: a warning that quotes it.
    "bad-product": json.dumps({
        "@context": vex.CONTEXT, "@id": "https://example.com/vex", "author": "vendor",
        "timestamp": "2026-06-01T00:00:00Z", "version": 1,
        "statements": [{"vulnerability": {"name": CVE}, "status": "not_affected",
                        "justification": "component_not_present",
                        "products": [{"@id": "pkg:oci/zebra-kettle@sha256:cve-2026-50001"}]}]}),
}


def hostile_bulletin(name: str, embargo: datetime.datetime | None) -> dict[str, Any]:
    refs = [{"configMapKeyRef": {"name": cm, "key": "vex.json"}} for cm in HOSTILE_VEX]
    refs.append({"configMapKeyRef": {"name": "cve-2026-50001-vex", "key": "vex.json"}})
    spec: dict[str, Any] = {"vex": refs, "patchBy": "2026-01-02T00:00:00Z",
                            "summary": "A quote cut in the middle: \"Heap overflow in the zeb"}
    if embargo is not None:
        spec["embargoUntil"] = embargo.strftime("%Y-%m-%dT%H:%M:%SZ")
    body = fixtures.bulletin_for(name, CVE, "source-controller", FIX["source-controller"],
                                 published="2026-01-01T00:00:00Z", **spec)
    body["spec"]["title"] = TITLE
    body["metadata"].update({"uid": f"uid-{name}", "resourceVersion": "1", "generation": 1})
    return body


def invalid_bulletin(name: str, embargo: datetime.datetime | None) -> dict[str, Any]:
    """A spec the operator refuses, with an error that quotes the id in lower case."""
    body = hostile_bulletin(name, embargo)
    body["spec"]["affectedVersions"] = [{"component": "source-controller",
                                         "ranges": [{"fixed": "cve-2026-50001"}]}]
    return body


def normalised(text: str) -> str:
    """JSON escapes decoded, compatibility forms folded (full-width letters), case folded."""
    decoded = re.sub(r"\\+u([0-9a-fA-F]{4})", lambda m: chr(int(m[1], 16)), text)
    return unicodedata.normalize("NFKC", decoded).casefold()


def messages(status: dict[str, Any]) -> dict[str, str]:
    """The condition and Event messages of a status, by reason."""
    found = {c["reason"]: c["message"] for c in status.get("conditions") or []}
    found |= {e["reason"]: e["message"] for e in status.get("pendingEvents") or []}
    return found


VERDICT_EVENT = re.compile(
    r"flux-system/[a-z-]+: (new|Vulnerable|Fixed|NotAffected|Unknown) -> "
    r"(Vulnerable|Fixed|NotAffected|Unknown) \([A-Za-z]+\)"
    r"(; the fix is in the bulletin's status\.components\[\]\.remediation)?")


def test_an_embargoed_bulletin_says_only_fixed_texts_whatever_its_input_holds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        now = datetime.datetime.now(datetime.UTC)
        h = Harness(monkeypatch)
        h.run_image("source-controller", PRE["source-controller"])
        for name, text in HOSTILE_VEX.items():
            h.configmap(name, text)
        until = now + datetime.timedelta(days=1)
        for body in [hostile_bulletin("open", None), invalid_bulletin("open-invalid", None),
                     hostile_bulletin("emb", until), invalid_bulletin("emb-invalid", until)]:
            h.controller.observe(body)
        await h.drain()

        def leaked(name: str) -> list[str]:
            said = normalised(json.dumps(messages(h.fake.status[name]), ensure_ascii=False))
            return [probe for probe in PROBES if probe in said]

        # Without embargo the same input does reach the messages: the probes are real.
        assert set(leaked("open")) >= {"cve-2026-50001", "zebra-kettle", "zebra-ke",
                                       "cve-2026-50001-vex"}, messages(h.fake.status["open"])
        assert "cve-2026-50001" in leaked("open-invalid")
        for name in ("emb", "emb-invalid"):
            said = messages(h.fake.status[name])
            assert leaked(name) == [], said
            assert h.fake.status[name].get("pendingEvents"), "Events were owed"
            for reason, message in said.items():
                if reason.startswith("Verdict"):
                    assert VERDICT_EVENT.fullmatch(message), message
                elif reason not in securitybulletin.OWN_WORDS:
                    assert message == securitybulletin.WITHHELD.get(
                        reason, securitybulletin.WITHHELD_DEFAULT), (reason, message)
        assert {"InvalidVex", "PatchByPassed", "VerdictVulnerable"} <= set(
            messages(h.fake.status["emb"]))
        assert "InvalidSpec" in messages(h.fake.status["emb-invalid"])

        # A reconcile that fails shows its error type only, in Ready and in the log.
        def failing(snapshot: Any, at: Any) -> Any:
            raise ValueError("cve-2026-50001 broke the evaluation")

        monkeypatch.setattr(h.controller, "_evaluate", failing)
        logged = {}
        for name in ("open", "emb"):
            with pytest.raises((ValueError, controller.EmbargoedError)) as raised:
                await h.controller._locked(name)
            # What the scheduler logs (exc_info) and shows in Ready.
            logged[name] = "".join(traceback.format_exception(raised.value))
            await h.controller._report_error(name, raised.value)
        ready = {name: next(c["message"] for c in h.fake.status[name]["conditions"]
                            if c["type"] == "Ready") for name in ("open", "emb")}
        assert "cve-2026-50001" in ready["open"]
        assert "cve-2026-50001" in logged["open"]
        assert "cve-2026-50001" not in ready["emb"] + logged["emb"]
        assert "ValueError" in ready["emb"]

    asyncio.run(scenario())

