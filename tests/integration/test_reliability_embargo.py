"""Embargo leak scan: several embargoed bulletins, and nothing of them in Events, logs or metrics.

Three bulletins are under embargo, with CVE ids, titles and summaries made of random tokens.
They produce verdict Events and, for one of them, an InvalidVex Event about a VEX document that
quotes its CVE id in a wrong-typed field. While the embargo holds, every Event in the cluster,
the whole operator log and /metrics are scanned (case-insensitively) for every secret. After
the embargo lifts the same scan must find the CVE ids in the Events (the EmbargoLifted
disclosure): proof that the scan reads what it should. Titles and summaries are never put in
Events, logs or metrics, embargo or not, so they stay absent; CVE ids stay out of the log and
/metrics for good as well.
"""

from __future__ import annotations

import datetime
import json
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest

from tests import fixtures, harness

PRE = fixtures.images(fixtures.PRE_FIX_V275)
FIX = fixtures.images(fixtures.FIX_V275)
OPERATOR_NAMESPACE = "fluxsupport-system"
EMBARGO_S = 20.0


@pytest.fixture(scope="module")
def flux(api: harness.Api) -> Iterator[list[dict[str, Any]]]:
    with harness.flux_inventory(api, PRE) as deployments:
        yield deployments


def token() -> str:
    return secrets.token_hex(5)


def ghsa() -> str:
    alphabet = "23456789cfghjmpqrvwx"
    return "GHSA-" + "-".join("".join(secrets.choice(alphabet) for _ in range(4))
                              for _ in range(3))


def embargoed_bulletins(until: datetime.datetime) -> list[dict[str, Any]]:
    """Three bulletins; each CVE id, title and summary holds a random token."""
    bulletins = []
    for components in (["source-controller"], ["helm-controller", "kustomize-controller"],
                       ["notification-controller"]):
        cve = f"CVE-2026-{secrets.randbelow(900000) + 100000}"
        body = fixtures.bulletin_for(f"emb-{token()}", cve, components[0],
                                     FIX[components[0]],
                                     embargoUntil=until.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                     summary=f"Bulletin summary {token()}")
        body["spec"]["title"] = f"Embargoed flaw {token()}"
        body["spec"]["vulnerabilities"] = [
            {"id": cve, "components": components, "summary": f"CVE summary {token()}"},
            {"id": ghsa(), "components": components}]
        body["spec"]["fixes"] = [{"component": c, "version": FIX[c]["newTag"],
                                  "images": [{"repository": FIX[c]["name"],
                                              "digest": FIX[c]["digest"]}]}
                                 for c in components]
        bulletins.append(body)
    # The first one also cites a broken VEX document that quotes its CVE id.
    bulletins[0]["spec"]["vex"] = [{"configMapKeyRef": {"name": "embargo-vex",
                                                        "key": "vex.json"}}]
    return bulletins


def secrets_of(bulletin: dict[str, Any]) -> dict[str, list[str]]:
    spec = bulletin["spec"]
    return {"ids": [v["id"] for v in spec["vulnerabilities"]],
            "texts": [spec["title"], spec["summary"],
                      *(v["summary"] for v in spec["vulnerabilities"] if v.get("summary"))]}


def everything_said(api: harness.Api, operator: harness.OperatorProcess) -> dict[str, str]:
    """What the operator has said: all Events in the cluster, its log, its /metrics."""
    serializer = kubernetes.client.ApiClient().sanitize_for_serialization
    events = [serializer(event) for event in api.core.list_event_for_all_namespaces().items]
    return {"events": json.dumps(events).lower(), "log": operator.log_text().lower(),
            "metrics": operator.metrics().lower()}


def found(said: dict[str, str], words: list[str]) -> dict[str, list[str]]:
    return {where: hits for where, text in said.items()
            if (hits := [word for word in words if word.lower() in text])}


def test_embargoed_details_never_leak_and_are_disclosed_at_the_lift(
        api: harness.Api, operator: harness.OperatorProcess,
        flux: list[dict[str, Any]], figures: Callable[[str], None]) -> None:
    until = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=EMBARGO_S)
             ).replace(microsecond=0)
    bulletins = embargoed_bulletins(until)
    ids = [i for b in bulletins for i in secrets_of(b)["ids"]]
    texts = [t for b in bulletins for t in secrets_of(b)["texts"]]
    names = [b["metadata"]["name"] for b in bulletins]
    broken = json.loads((fixtures.UPSTREAM / "vex" / "v2.7.json").read_text())
    broken["statements"][0]["vulnerability"] = {"name": ids[0], "aliases": ids[0]}
    api.core.create_namespaced_config_map(OPERATOR_NAMESPACE, {
        "metadata": {"name": "embargo-vex"}, "data": {"vex.json": json.dumps(broken)}})
    try:
        for body in bulletins:
            api.create_bulletin(body)

        def reported() -> bool:
            for name in names:
                status = api.get_bulletin(name).get("status") or {}
                if status.get("embargoed") is not True or not status.get("components"):
                    return False
            reasons = {e.reason for e in api.core.list_namespaced_event("default").items
                       if e.involved_object.name in names}
            return {"VerdictVulnerable", "VerdictFixed", "InvalidVex"} <= reasons

        harness.wait_for(reported, timeout=EMBARGO_S / 2, what="verdicts and their Events")
        assert time.time() < until.timestamp(), "the scan must happen under embargo"
        said = everything_said(api, operator)
        leaks = found(said, ids + texts)
        invalid_vex = [e.message for e in api.core.list_namespaced_event("default").items
                       if e.involved_object.name == names[0] and e.reason == "InvalidVex"]
        event_count = said["events"].count('"involvedobject"')
        figures(f"embargo: scanned {event_count} Events, {len(said['log'])} bytes of "
                f"operator log and {len(said['metrics'])} bytes of /metrics for {len(ids)} ids "
                f"and {len(texts)} titles/summaries: {leaks or 'nothing found'}")
        assert leaks == {}
        assert "[embargoed]" in invalid_vex[0], invalid_vex  # it did quote the id, redacted

        # The lift: on time, and the ids are disclosed in Events.
        def lifted() -> bool:
            return all(api.get_bulletin(n)["status"]["embargoed"] is False for n in names)

        harness.wait_for(lifted, timeout=EMBARGO_S + 20, interval=0.1, what="the lift")
        lag = time.time() - until.timestamp()
        harness.wait_for(lambda: sorted(found(everything_said(api, operator), ids).get(
            "events", [])) == sorted(ids), timeout=10, what="every id disclosed in Events")
        after = everything_said(api, operator)
        disclosed = found(after, ids)
        figures(f"embargo: after the lift ({lag:.2f}s after embargoUntil): ids found in "
                f"{sorted(disclosed)}; titles and summaries found in "
                f"{sorted(found(after, texts)) or 'nothing (never emitted)'}")
        assert sorted(disclosed["events"]) == sorted(ids)
        assert "log" not in disclosed
        assert "metrics" not in disclosed
        assert found(after, texts) == {}
        assert lag < 3
    finally:
        for name in names:
            api.delete_bulletin(name)
        api.core.delete_namespaced_config_map("embargo-vex", OPERATOR_NAMESPACE)
