"""Embargo leak scan: several embargoed bulletins, and nothing of them in Events, logs or metrics.

Four bulletins are under embargo, with CVE ids, titles and summaries made of random tokens.
They produce verdict Events and, for one of them, an InvalidVex Event about OpenVEX documents
that quote its details the ways a string filter misses: the id in lower case, with full-width
letters (shown JSON-escaped), a title cut in the middle, a ConfigMap named after the id. The
fourth lists the build that runs as its fix, a rebuild that a public bulletin published
earlier would credit if it counted. While the embargo holds, every Event in the cluster, the
whole operator log and /metrics are scanned (JSON escapes decoded, full-width letters folded,
case-insensitively) for every secret; the embargoed bulletins' names may appear only on
their own Events and metric series, nowhere in a message or in the public bulletin; and every
Event message of theirs is one of the fixed texts. After the embargo lifts, the same scan must
find the CVE ids in the Events (the EmbargoLifted disclosure) and the rebuild's name in the
public bulletin: proof that the scan reads what it should. Titles and summaries are never put
in Events, logs or metrics, embargo or not, so they stay absent; CVE ids stay out of the log and
/metrics for good as well.
"""

from __future__ import annotations

import datetime
import json
import re
import secrets
import time
import unicodedata
from collections.abc import Callable
from typing import Any

import kubernetes

from fluxsupport.domain import securitybulletin
from tests import fixtures, harness
from tests.unit.test_bulletin_embargo import VERDICT_EVENT

PRE = fixtures.images(fixtures.PRE_FIX_V275)
FIX = fixtures.images(fixtures.FIX_V275)
OPERATOR_NAMESPACE = "fluxsupport-system"
EMBARGO_S = 20.0


def token() -> str:
    return secrets.token_hex(5)


def word() -> str:
    """Ten letters none of which is a hex digit: a piece of it cannot turn up in a digest."""
    return "".join(secrets.choice("ghjkmnpqrstvwxyz") for _ in range(10))


def ghsa() -> str:
    alphabet = "23456789cfghjmpqrvwx"
    return "GHSA-" + "-".join("".join(secrets.choice(alphabet) for _ in range(4))
                              for _ in range(3))


def embargoed_bulletins(until: datetime.datetime) -> list[dict[str, Any]]:
    """Four bulletins; each CVE id, title and summary holds a random token. The last one
    lists the running source-controller build (PRE) as its fix."""
    bulletins = []
    for components, fixed in ((["source-controller"], FIX),
                              (["helm-controller", "kustomize-controller"], FIX),
                              (["notification-controller"], FIX),
                              (["source-controller"], PRE)):
        cve = f"CVE-2026-{secrets.randbelow(900000) + 100000}"
        body = fixtures.bulletin_for(f"emb-{token()}", cve, components[0],
                                     fixed[components[0]],
                                     embargoUntil=until.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                     summary=f"Bulletin summary {token()}")
        body["spec"]["title"] = f"Embargoed flaw {word()}"
        body["spec"]["vulnerabilities"] = [
            {"id": cve, "components": components, "summary": f"CVE summary {token()}"},
            {"id": ghsa(), "components": components}]
        body["spec"]["fixes"] = [{"component": c, "version": fixed[c]["newTag"],
                                  "images": [{"repository": fixed[c]["name"],
                                              "digest": fixed[c]["digest"]}]}
                                 for c in components]
        bulletins.append(body)
    # The first one also cites OpenVEX documents that quote its details.
    bulletins[0]["spec"]["vex"] = [{"configMapKeyRef": {"name": name, "key": "vex.json"}}
                                   for name in [*hostile_vex(bulletins[0]), missing(bulletins[0])]]
    return bulletins


def public_bulletin() -> dict[str, Any]:
    """Published before the embargoed ones, with the fix FIX for source-controller: the
    running PRE build is pre-fix, unless the embargoed rebuild counted."""
    return fixtures.bulletin_for(f"public-{token()}", "CVE-2026-47680", "source-controller",
                                 FIX["source-controller"], published="2026-01-10T00:00:00Z")


def missing(bulletin: dict[str, Any]) -> str:
    """A ConfigMap that does not exist, named after the CVE id."""
    return f"{bulletin['spec']['vulnerabilities'][0]['id'].lower()}-vex"


def cut_title(bulletin: dict[str, Any]) -> str:
    """The title cut in the middle of its random word."""
    return str(bulletin["spec"]["title"])[:-3]


def hostile_vex(bulletin: dict[str, Any]) -> dict[str, str]:
    """ConfigMap name -> an OpenVEX text that quotes the bulletin's details the ways an exact,
    case-sensitive replace misses."""
    cve = bulletin["spec"]["vulnerabilities"][0]["id"]
    wide = "".join(chr(ord(c) + 0xFEE0) for c in "cve") + cve[3:]

    def document(statement: dict[str, Any]) -> str:
        broken = json.loads((fixtures.UPSTREAM / "vex" / "v2.7.json").read_text())
        broken["statements"][0].update(statement)
        return json.dumps(broken)

    return {
        "embargo-vex": document({"vulnerability": {"name": cve, "aliases": cve}}),
        "embargo-vex-lower": document({"status": f"{cve.lower()} is not reachable: "
                                                 f"{cut_title(bulletin)}"}),
        "embargo-vex-wide": document({"vulnerability": {"name": cve, "aliases": wide}}),
        "embargo-vex-text": f"{cve.lower()} is not reachable: {cut_title(bulletin)}",
    }


def secrets_of(bulletin: dict[str, Any]) -> dict[str, list[str]]:
    spec = bulletin["spec"]
    return {"ids": [v["id"] for v in spec["vulnerabilities"]],
            "texts": [spec["title"], spec["summary"],
                      *(v["summary"] for v in spec["vulnerabilities"] if v.get("summary"))]}


def normalised(text: str) -> str:
    """JSON escapes decoded, compatibility forms folded (full-width letters), case folded."""
    decoded = re.sub(r"\\+u([0-9a-fA-F]{4})", lambda m: chr(int(m[1], 16)), text)
    return unicodedata.normalize("NFKC", decoded).casefold()


def all_events(api: harness.Api) -> list[dict[str, Any]]:
    serializer = kubernetes.client.ApiClient().sanitize_for_serialization
    return [serializer(event) for event in api.core.list_event_for_all_namespaces().items]


def everything_said(api: harness.Api, operator: harness.OperatorProcess) -> dict[str, str]:
    """What the operator has said: all Events in the cluster, its log, its /metrics."""
    return {"events": normalised(json.dumps(all_events(api), ensure_ascii=False)),
            "log": normalised(operator.log_text()), "metrics": normalised(operator.metrics())}


def found(said: dict[str, str], words: list[str]) -> dict[str, list[str]]:
    return {where: hits for where, text in said.items()
            if (hits := [word for word in words if normalised(word) in text])}


def where_named(api: harness.Api, operator: harness.OperatorProcess, names: list[str],
                public: str) -> dict[str, list[str]]:
    """Where the embargoed bulletins' names show outside their own Events and series: any
    Event message, any Event about another object, the public bulletin, /metrics."""
    events = all_events(api)
    said = {
        "event messages": json.dumps([e.get("message") for e in events]),
        "other Events": json.dumps([e for e in events
                                    if e["involvedObject"].get("name") not in names]),
        "public bulletin": json.dumps(api.get_bulletin(public)),
        "metrics": re.sub(r'bulletin="[^"]*"', "", operator.metrics()),
    }
    return {where: hits for where, text in said.items()
            if (hits := [name for name in names if name in text])}


def reported(api: harness.Api, names: list[str]) -> bool:
    """Every embargoed bulletin evaluated, with the Events expected."""
    for name in names:
        status = api.get_bulletin(name).get("status") or {}
        if status.get("embargoed") is not True or not status.get("components"):
            return False
    reasons = {e.reason for e in api.core.list_namespaced_event("default").items
               if e.involved_object.name in names}
    return {"VerdictVulnerable", "VerdictFixed", "InvalidVex"} <= reasons


def not_fixed_texts(events: list[dict[str, Any]]) -> list[str]:
    """The messages of embargoed bulletins' Events that are not one of the fixed texts."""
    wrong = []
    for event in events:
        message = event.get("message") or ""
        if event["reason"].startswith("Verdict"):
            if not VERDICT_EVENT.fullmatch(message):
                wrong.append(message)
        elif message != securitybulletin.WITHHELD.get(event["reason"],
                                                      securitybulletin.WITHHELD_DEFAULT):
            wrong.append(message)
    return wrong


def test_embargoed_details_never_leak_and_are_disclosed_at_the_lift(
        api: harness.Api, operator: harness.OperatorProcess,
        flux: list[dict[str, Any]], figures: Callable[[str], None]) -> None:
    until = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=EMBARGO_S)
             ).replace(microsecond=0)
    bulletins = embargoed_bulletins(until)
    ids = [i for b in bulletins for i in secrets_of(b)["ids"]]
    texts = [t for b in bulletins for t in secrets_of(b)["texts"]]
    # Pieces of the first bulletin's title and the ConfigMap named after its id, as the
    # hostile documents quote them.
    pieces = [cut_title(bulletins[0]), str(bulletins[0]["spec"]["title"]).split()[-1][:7],
              missing(bulletins[0])]
    names = [b["metadata"]["name"] for b in bulletins]
    public = public_bulletin()
    configmaps = hostile_vex(bulletins[0])
    for name, text in configmaps.items():
        api.core.create_namespaced_config_map(OPERATOR_NAMESPACE, {
            "metadata": {"name": name}, "data": {"vex.json": text}})
    try:
        for body in bulletins:
            api.create_bulletin(body)
        harness.wait_for(lambda: reported(api, names), timeout=EMBARGO_S / 2,
                         what="verdicts and their Events")
        # The public bulletin comes after the rebuild is known: its first verdict and Event
        # are the ones that would name it.
        api.create_bulletin(public)
        harness.wait_for(lambda: api.events_for("default", public["metadata"]["name"]),
                         timeout=EMBARGO_S / 4, what="the public bulletin's verdict Event")
        assert time.time() < until.timestamp(), "the scan must happen under embargo"
        said = everything_said(api, operator)
        leaks = found(said, ids + texts + pieces)
        named = where_named(api, operator, names, public["metadata"]["name"])
        own = [e for e in all_events(api) if e["involvedObject"].get("name") in names]
        assert own
        event_count = said["events"].count('"involvedobject"')
        figures(f"embargo: scanned {event_count} Events, {len(said['log'])} bytes of "
                f"operator log and {len(said['metrics'])} bytes of /metrics for {len(ids)} ids, "
                f"{len(texts)} titles/summaries and {len(pieces)} quoted pieces: "
                f"{leaks or 'nothing found'}; embargoed names outside their own Events and "
                f"series: {named or 'none'}")
        assert leaks == {}
        assert named == {}
        assert not_fixed_texts(own) == []
        [component] = api.get_bulletin(public["metadata"]["name"])["status"]["components"]
        assert (component["verdict"], component["reason"]) == ("Vulnerable", "DigestNotListed")

        # The lift: on time, and the ids are disclosed in Events.
        def lifted() -> bool:
            return all(api.get_bulletin(n)["status"]["embargoed"] is False for n in names)

        harness.wait_for(lifted, timeout=EMBARGO_S + 20, interval=0.1, what="the lift")
        lag = time.time() - until.timestamp()
        harness.wait_for(lambda: sorted(found(everything_said(api, operator), ids).get(
            "events", [])) == sorted(ids), timeout=10, what="every id disclosed in Events")
        # The rebuild counts from the lift on: the public bulletin is checked again.
        rebuilt = harness.wait_for(
            lambda: (c := api.get_bulletin(public["metadata"]["name"])["status"]["components"][
                0])["verdict"] == "Fixed" and c, timeout=10, what="the public bulletin Fixed")
        credited = time.time() - until.timestamp()
        after = everything_said(api, operator)
        disclosed = found(after, ids)
        figures(f"embargo: after the lift ({lag:.2f}s after embargoUntil): ids found in "
                f"{sorted(disclosed)}; titles and summaries found in "
                f"{sorted(found(after, texts)) or 'nothing (never emitted)'}; the public "
                f"bulletin credited the rebuild {credited:.2f}s after embargoUntil")
        assert sorted(disclosed["events"]) == sorted(ids)
        assert "log" not in disclosed
        assert "metrics" not in disclosed
        assert found(after, texts) == {}
        assert rebuilt["reason"] == f"RebuiltIn:{names[-1]}"
        assert names[-1] in where_named(api, operator, names, public["metadata"]["name"])[
            "public bulletin"]
        assert lag < 3
    finally:
        for name in [*names, public["metadata"]["name"]]:
            api.delete_bulletin(name)
        for name in configmaps:
            api.core.delete_namespaced_config_map(name, OPERATOR_NAMESPACE)
