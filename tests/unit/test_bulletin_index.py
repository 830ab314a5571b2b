"""The bulletin path at scale: OpenVEX documents parsed and indexed once per text,
fix digests indexed across bulletins, and an inventory change re-evaluating only the
bulletins that concern the changed component. Verdicts stay those of the full evaluation."""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import json
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from packageurl import PackageURL

from fluxsupport.controllers import bulletin as bulletin_controller
from fluxsupport.controllers.bulletin import BulletinController
from fluxsupport.domain import bulletin, inventory, vex
from fluxsupport.kube import reflector
from fluxsupport.sources.inventory import Inventory
from tests import fakes, fixtures

PRE = fixtures.images(fixtures.PRE_FIX_V275)
FIX = fixtures.images(fixtures.FIX_V275)
RELEASES = [fixtures.release_images(version, variant)
            for version in ("v2.7.5", "v2.8.8", "v2.9.4")
            for variant in ("enterprise-distroless", "upstream-alpine")]
VEX_TEXTS = {name: (fixtures.UPSTREAM / "vex" / f"{name}.json").read_text()
             for name in ("v2.7", "v2.8", "v2.9")}
REAL_VEX = [vex.parse_document(text, name) for name, text in VEX_TEXTS.items()]
NAMESPACE = "fluxsupport-system"
NOW = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)


def make(body: dict[str, Any]) -> bulletin.Bulletin:
    return bulletin.Bulletin(body["metadata"]["name"],
                             bulletin.BulletinSpec.model_validate(body["spec"]))


def components_of(entries: dict[str, dict[str, str]]) -> list[inventory.RunningComponent]:
    return inventory.build_inventory(fixtures.deployments_running(entries, "v2.7.5"))


# ---- the OpenVEX index ---------------------------------------------------------------------

def _candidates(documents: list[vex.Document]) -> list[PackageURL]:
    """Every product purl of the documents, with and without a digest, and the running
    images of the fixtures' releases."""
    found: list[PackageURL] = []
    for document in documents:
        for statement in document.statements:
            for product in statement.products:
                found += vex.product_purls(product)
    for entries in [PRE, FIX, *RELEASES]:
        for entry in entries.values():
            for digest in (entry["digest"], None):
                found.append(vex.image_purl(entry["name"], digest=digest,
                                            repository_url=entry["name"], tag=entry["newTag"]))
    return found


def test_an_indexed_document_gives_the_statement_the_whole_document_gives() -> None:
    """Every CVE of the real documents (and one in no document, and a case variant) against
    every product they name and the real images, with and without a filter that leaves
    statements out: the same answer from the index as from reading every statement."""
    indexed = [vex.index_document(d) for d in REAL_VEX]
    images = [vex.index_document(d, purl_types=("oci",)) for d in REAL_VEX]
    cves = {s.vulnerability.name for d in REAL_VEX for s in d.statements}
    cves |= {"CVE-2000-0001", "cve-2026-47680", " CVE-2025-66506 "}
    filters: list[Callable[[vex.Effective], bool] | None] = [
        None, lambda e: e.status != "fixed", lambda e: e.digest_specific]
    checked = found = 0
    for cve, candidate, considered in itertools.product(sorted(cves), _candidates(REAL_VEX),
                                                        filters):
        for order in ((0, 1, 2), (2, 1, 0)):
            plain = vex.effective_statement([REAL_VEX[i] for i in order], cve, candidate,
                                            considered)
            fast = vex.effective_statement([indexed[i] for i in order], cve, candidate,
                                           considered)
            assert fast == plain, (cve, candidate.to_string())
            if candidate.type == "oci":
                assert vex.effective_statement([images[i] for i in order], cve, candidate,
                                               considered) == plain
            checked += 1
            found += plain is not None
    assert found > 50, "the comparison covers matches"
    assert checked > found, "and misses"
    kept = sum(len(d.statements) for d in images)
    assert 0 < kept < sum(len(d.statements) for d in REAL_VEX), "packages are left out"
    with pytest.raises(ValueError, match="only oci products"):
        vex.effective_statement(images, "CVE-2025-9230",
                                PackageURL.from_string("pkg:apk/alpine/libssl3@3.5.1-r0"))


def test_the_index_matches_aliases_ids_qualifiers_and_skips_subcomponent_products() -> None:
    statements = [
        {"vulnerability": {"name": "GHSA-aaaa", "@id": "https://x/CVE-2026-1",
                           "aliases": ["CVE-2026-2"]},
         "products": [{"@id": "pkg:oci/source-controller?repository_url=ghcr.io/fluxcd"}],
         "status": "not_affected", "justification": "component_not_present"},
        {"vulnerability": {"name": "CVE-2026-2"},
         "products": [{"@id": "pkg:oci/source-controller",
                       "subcomponents": [{"@id": "pkg:golang/x/y@1"}]}],
         "status": "affected", "action_statement": "upgrade",
         "timestamp": "2027-01-01T00:00:00Z"},
        {"vulnerability": {"name": "CVE-2026-2"},
         "products": [{"identifiers": {"purl": "pkg:OCI/Source-Controller"}}],
         "status": "fixed", "timestamp": "2020-01-01T00:00:00Z"},
    ]
    document = vex.parse_document(json.dumps({
        "@context": vex.CONTEXT, "@id": "x", "author": "a", "timestamp": "2026-01-01T00:00:00Z",
        "version": 1, "statements": statements}), "test")
    indexed = vex.index_document(document)
    for name in ("GHSA-AAAA", "https://x/CVE-2026-1", "cve-2026-2", "CVE-2026-3"):
        for repository in ("ghcr.io/fluxcd", "ghcr.io/other", None):
            candidate = vex.image_purl("source-controller", repository_url=repository)
            assert vex.effective_statement([indexed], name, candidate) == \
                vex.effective_statement([document], name, candidate), (name, repository)
    found = vex.effective_statement([indexed], "CVE-2026-2",
                                    vex.image_purl("source-controller",
                                                   repository_url="ghcr.io/fluxcd"))
    assert found is not None
    assert found.statement_index == 0, "not the subcomponent statement"


# ---- the fix index and the full evaluation -------------------------------------------------

def _bulletins() -> list[bulletin.Bulletin]:
    """Bulletins on the real images: fixes at the fixed and the pre-fix digest, in several
    orders of publication, some with the same name published earlier (no rebuild of itself)."""
    bodies = [
        fixtures.bulletin_for("fix", "CVE-2026-47680", "source-controller",
                              FIX["source-controller"], published="2026-06-02T12:00:00Z"),
        fixtures.bulletin_for("pre", "CVE-2026-47680", "source-controller",
                              PRE["source-controller"], published="2026-05-01T12:00:00Z"),
        fixtures.bulletin_for("rebuild-a", "CVE-2026-1", "source-controller",
                              FIX["source-controller"], published="2026-07-01T12:00:00Z"),
        fixtures.bulletin_for("rebuild-b", "CVE-2026-2", "source-controller",
                              FIX["source-controller"], published="2026-08-01T12:00:00Z"),
        fixtures.bulletin_for("kustomize", "CVE-2026-3", "kustomize-controller",
                              PRE["kustomize-controller"], published="2026-04-01T12:00:00Z",
                              vex=[]),
        fixtures.bulletin_for("old-line", "CVE-2026-4", "helm-controller",
                              {**FIX["helm-controller"], "newTag": "v1.2.0"},
                              published="2025-01-01T12:00:00Z"),
    ]
    multi = copy.deepcopy(bodies[0])
    multi["metadata"]["name"] = "multi"
    multi["spec"]["vulnerabilities"].append(
        {"id": "CVE-2025-66506", "components": ["source-controller", "kustomize-controller"]})
    multi["spec"]["publishedAt"] = "2026-06-02T12:00:00Z"
    return [make(body) for body in [*bodies, multi]]


def test_evaluating_with_the_shared_indexes_gives_the_verdicts_of_the_full_evaluation() -> None:
    """The operator's path (one FixIndex for every bulletin, indexed documents) against the
    plain one (the list of every bulletin, parsed documents) on the real release data."""
    bulletins = _bulletins()
    index = bulletin.FixIndex(bulletins)
    indexed = [vex.index_document(d) for d in REAL_VEX]
    reasons = set()
    for entries in [PRE, FIX, *RELEASES]:
        components = components_of(entries)
        for item, documents in itertools.product(bulletins, ([], [0], [0, 1, 2], [2, 0])):
            plain = bulletin.evaluate(item, components, bulletins,
                                      [REAL_VEX[i] for i in documents], now=NOW)
            fast = bulletin.evaluate(item, components, index, [indexed[i] for i in documents],
                                     now=NOW)
            assert fast == plain, item.name
            reasons |= {v.reason for v in plain}
    assert {"DigestListed", "RebuiltIn:fix", "DigestNotListed",
            "NewerLine"} <= reasons, reasons


def test_the_first_later_bulletin_in_order_is_the_rebuild() -> None:
    bulletins = _bulletins()
    fix = next(b for b in bulletins if b.name == "pre")
    [verdict] = bulletin.evaluate(fix, components_of(FIX), bulletin.FixIndex(bulletins),
                                  now=NOW)
    # fix, rebuild-a, rebuild-b and multi list the running digest; "fix" comes first and is
    # published after "pre".
    assert verdict.reason == "RebuiltIn:fix"
    later_only = bulletin.evaluate(next(b for b in bulletins if b.name == "rebuild-a"),
                                   components_of(PRE), bulletin.FixIndex(bulletins), now=NOW)
    assert [v.reason for v in later_only] == ["DigestNotListed"], "no later one lists PRE"


# ---- the controller ------------------------------------------------------------------------

def _body(name: str, component: str, fixed: dict[str, str], version: int = 1,
          **spec: Any) -> dict[str, Any]:
    body = fixtures.bulletin_for(name, f"CVE-2026-{zlib.crc32(name.encode()) % 90000 + 10000}",
                                 component, fixed, **spec)
    body["metadata"].update({"uid": f"uid-{name}", "resourceVersion": str(version),
                             "generation": version})
    return body


class Harness:
    """A BulletinController on fakes: the inventory's and ConfigMaps' watches hold objects
    set by the test, and every evaluation is recorded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fake = fakes.FakeClient()
        self.inventory = Inventory(self.fake, ("flux-system",))
        self.deployments = {d["metadata"]["name"]: d
                            for d in fixtures.deployments_running(FIX, "v2.7.5")}
        self.inventory.deployments["flux-system"].objects = self.deployments
        self.configmaps = reflector.Watch(self.fake, "/unused", lambda: None)
        self.controller = BulletinController(self.fake, self.inventory, self.configmaps,
                                             NAMESPACE)
        self.evaluated: list[str] = []
        self.parses = 0
        evaluate = self.controller._evaluate
        parse = vex.parse_document

        def recording(snapshot: Any, now: Any) -> Any:
            self.evaluated.append(snapshot.name)
            return evaluate(snapshot, now)

        def counting(data: str | bytes, source: str) -> vex.Document:
            self.parses += 1
            return parse(data, source)

        monkeypatch.setattr(self.controller, "_evaluate", recording)
        monkeypatch.setattr(vex, "parse_document", counting)

    def run_image(self, component: str, entry: dict[str, str]) -> None:
        container = self.deployments[component]["spec"]["template"]["spec"]["containers"][0]
        container["image"] = f"{entry['name']}:{entry['newTag']}@{entry['digest']}"
        self.inventory.deployments["flux-system"].on_change()

    def configmap(self, name: str, text: str) -> None:
        self.configmaps.objects[name] = {"metadata": {"name": name}, "data": {"vex.json": text}}

    async def drain(self, low: bool = True) -> list[str]:
        """Run what is requested, then (``low``) the low-priority instants, as the scheduler
        would; the names evaluated, once per evaluation (a deferred write evaluates twice)."""
        self.evaluated = []
        scheduler = self.controller.scheduler
        while self.controller._requested or (low and scheduler._low_due):
            for name in sorted(self.controller._requested):
                await self.controller.reconcile(name)
            if not self.controller._requested and low:
                for key in sorted(scheduler._low_due, key=str):
                    del scheduler._low_due[key]
                    await self.controller.reconcile(str(key))
        return sorted(set(self.evaluated))

    def verdict(self, name: str, component: str = "source-controller") -> str:
        return str(next(c["verdict"] for c in self.fake.status[name]["components"]
                        if c["component"] == component))


def test_an_image_change_re_evaluates_only_the_bulletins_of_that_component(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        h = Harness(monkeypatch)
        h.inventory.deployments["flux-system"].on_change()  # the first list
        for index in range(6):
            h.controller.observe(_body(f"source-{index}", "source-controller",
                                       FIX["source-controller"]))
        for component in ("kustomize-controller", "helm-controller"):
            for index in range(3):
                h.controller.observe(_body(f"{component}-{index}", component, FIX[component]))
        assert len(await h.drain()) == 12
        assert h.verdict("source-0") == "Fixed"

        h.run_image("source-controller", PRE["source-controller"])
        assert await h.drain() == [f"source-{i}" for i in range(6)]
        assert {h.verdict(f"source-{i}") for i in range(6)} == {"Vulnerable"}
        assert h.verdict("kustomize-controller-0", "kustomize-controller") == "Fixed"

        h.run_image("kustomize-controller", RELEASES[2]["kustomize-controller"])  # v2.8.8
        assert await h.drain() == [f"kustomize-controller-{i}" for i in range(3)]

        h.inventory.deployments["flux-system"].on_change()  # nothing changed
        assert await h.drain() == []

        # A watch that cannot list shows in every bulletin's Ready condition.
        h.inventory.watches[1].error = "403 Forbidden"
        h.inventory.watches[1].on_change()
        assert len(await h.drain()) == 12
        ready = next(c for c in h.fake.status["helm-controller-0"]["conditions"]
                     if c["type"] == "Ready")
        assert ready["reason"] == "InventoryUnavailable"

    asyncio.run(scenario())


def test_a_new_bulletin_re_checks_only_the_bulletins_of_the_components_it_fixes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The rebuild rule: a later bulletin listing the running digest makes an earlier one
    Fixed, RebuiltIn; bulletins about other components, or a bulletin listing a build that
    does not run, cannot change another's verdict."""
    async def scenario() -> None:
        h = Harness(monkeypatch)
        h.run_image("source-controller", PRE["source-controller"])
        h.controller.observe(_body("early", "source-controller", FIX["source-controller"],
                                   published="2026-06-01T00:00:00Z"))
        h.controller.observe(_body("other", "helm-controller", FIX["helm-controller"]))
        await h.drain()
        assert h.verdict("early") == "Vulnerable"

        # A fix digest that does not run changes no other bulletin's verdict.
        h.controller.observe(_body("elsewhere", "source-controller", FIX["source-controller"],
                                   published="2026-08-01T00:00:00Z"))
        assert await h.drain() == ["elsewhere"]
        h.controller.observe(_body("later", "source-controller", PRE["source-controller"],
                                   published="2026-07-01T00:00:00Z"))
        assert await h.drain() == ["early", "elsewhere", "later"]
        status = h.fake.status["early"]["components"][0]
        assert (status["verdict"], status["reason"]) == ("Fixed", "RebuiltIn:later")

        h.controller.forget("later")
        assert await h.drain() == ["early", "elsewhere"]
        assert h.verdict("early") == "Vulnerable"

    asyncio.run(scenario())


def test_a_spec_is_validated_once_per_content_and_again_when_it_changes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch)
    body = _body("b", "source-controller", FIX["source-controller"])
    h.controller.observe(body)
    first = h.controller.bulletins["b"].validated()
    echo = {**body, "metadata": {**body["metadata"], "resourceVersion": "2"},
            "status": {"observedGeneration": 1}}
    h.controller.observe(echo)
    assert h.controller.bulletins["b"].validated() is first, "status echo: not validated again"
    changed = copy.deepcopy(echo)
    changed["metadata"].update({"resourceVersion": "3", "generation": 2})
    changed["spec"]["severity"] = "Critical"
    h.controller.observe(changed)
    second = h.controller.bulletins["b"].validated()
    assert isinstance(second, bulletin.BulletinSpec)
    assert second.severity == "Critical"


def test_an_openvex_document_is_parsed_once_per_text_for_every_bulletin(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        h = Harness(monkeypatch)
        h.configmap("flux-vex", VEX_TEXTS["v2.7"])
        ref = [{"configMapKeyRef": {"name": "flux-vex", "key": "vex.json"}}]
        h.inventory.deployments["flux-system"].on_change()
        for index in range(5):
            h.controller.observe(_body(f"b-{index}", "source-controller",
                                       FIX["source-controller"], vex=ref))
        await h.drain()
        h.run_image("source-controller", PRE["source-controller"])
        await h.drain()
        assert h.parses == 1, "five bulletins, two evaluations each, one document"

        # A new text: parsed once more; a broken one is reported, then the good one again.
        h.configmap("flux-vex", VEX_TEXTS["v2.8"])
        h.controller.reconcile_all_soon()
        await h.drain()
        assert h.parses == 2
        h.configmap("flux-vex", "{not json")
        h.controller.reconcile_all_soon()
        await h.drain()
        ready = next(c for c in h.fake.status["b-3"]["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "InvalidVex"
        assert "not valid JSON" in ready["message"]
        assert h.parses == 3
        del h.configmaps.objects["flux-vex"]
        h.controller.reconcile_all_soon()
        assert not h.controller._vex, "the cache keeps no document whose ConfigMap is gone"
        await h.drain()
        ready = next(c for c in h.fake.status["b-3"]["conditions"] if c["type"] == "Ready")
        assert "not found" in ready["message"]

    asyncio.run(scenario())


def test_the_cached_document_gives_the_verdicts_of_a_fresh_parse(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The real v2.7 document through the controller (cached, indexed) and through the plain
    domain path: the same components in the status."""
    async def scenario() -> None:
        h = Harness(monkeypatch)
        h.configmap("flux-vex", VEX_TEXTS["v2.7"])
        h.run_image("source-controller", PRE["source-controller"])
        ref = [{"configMapKeyRef": {"name": "flux-vex", "key": "vex.json"}}]
        body = fixtures.bulletin_for("cpsb", "CVE-2025-66506", "source-controller",
                                     FIX["source-controller"], vex=ref)
        body["spec"]["vulnerabilities"].append(
            {"id": "CVE-2026-47680", "components": ["source-controller"]})
        body["metadata"].update({"uid": "u", "resourceVersion": "1", "generation": 1})
        h.controller.observe(body)
        await h.drain()
        [expected] = bulletin.evaluate(make(body), h.inventory.components(), [make(body)],
                                       [REAL_VEX[0]], now=datetime.datetime.now(datetime.UTC))
        [stored] = h.fake.status["cpsb"]["components"]
        assert (stored["verdict"], stored["reason"]) == (expected.verdict, expected.reason)
        assert stored["cves"] == [{"id": c.id, "verdict": c.verdict, "reason": c.reason}
                                  for c in expected.cves]
        assert {c["id"]: c["reason"] for c in stored["cves"]}["CVE-2025-66506"].startswith(
            "VexNotAffected")

    asyncio.run(scenario())


def test_the_shared_fix_index_follows_every_spec_change_in_the_order_of_the_bulletins(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Updated one spec at a time, it lists what a FixIndex of the valid bulletins, in the
    controller's order, lists: after adds, edits, an invalid spec and its repair, a delete and
    a re-create."""
    h = Harness(monkeypatch)
    digest = FIX["source-controller"]
    for name in ("a", "b", "c", "d"):
        h.controller.observe(_body(name, "source-controller", digest))

    def edit(name: str, version: int, **spec: Any) -> None:
        body = _body(name, "source-controller", digest, version=version)
        body["spec"].update(spec)
        h.controller.observe(body)

    edit("b", 2, publishedAt="not a time")  # invalid: out of the index
    edit("a", 2, severity="Low")  # replaced in place
    h.controller.forget("c")
    h.controller.observe(_body("c", "source-controller", digest))  # back, at the end
    edit("b", 3)  # valid again, at its old place
    valid = [bulletin.Bulletin(s.name, spec) for s in h.controller.bulletins.values()
             if isinstance(spec := s.validated(), bulletin.BulletinSpec)]
    assert [b.name for b in valid] == ["a", "b", "d", "c"]
    key = ("source-controller", bulletin.version_tuple(digest["newTag"]), digest["digest"])
    assert [b.name for b in h.controller._fixes.listed(*key)] == \
        [b.name for b in bulletin.FixIndex(valid).listed(*key)] == ["a", "b", "d", "c"]
    assert h.controller._concerning(["source-controller"]) == {"a", "b", "c", "d"}


def test_writes_that_change_a_verdict_go_before_those_that_only_show_the_new_digest(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An image change rewrites every bulletin about the component (its status shows the
    digest); the bulletins whose verdict does not change wait for those whose verdict does."""
    async def scenario() -> None:
        h = Harness(monkeypatch)
        old_line = {**FIX["source-controller"], "newTag": "v0.9.0",
                    "digest": "sha256:" + "0" * 64}
        for index in range(3):
            h.controller.observe(_body(f"old-{index}", "source-controller", old_line))
            h.controller.observe(_body(f"fix-{index}", "source-controller",
                                       FIX["source-controller"]))
        await h.drain()
        written: list[str] = []
        patch = h.fake.patch_status

        async def recording(ref: Any, status: Any, version: Any) -> Any:
            written.append(ref.name)
            return await patch(ref, status, version)

        monkeypatch.setattr(h.fake, "patch_status", recording)
        h.run_image("source-controller", PRE["source-controller"])
        await h.drain(low=False)
        assert sorted(written) == ["fix-0", "fix-1", "fix-2"], "verdict changes first"
        old = h.fake.status["old-0"]["components"][0]
        assert (old["verdict"], old["reason"]) == ("Fixed", "NewerLine")
        assert old["digests"] == [FIX["source-controller"]["digest"]], "not written yet"
        await h.drain()
        assert sorted(written[3:]) == ["old-0", "old-1", "old-2"]
        old = h.fake.status["old-0"]["components"][0]
        assert old["digests"] == [PRE["source-controller"]["digest"]]
        assert PRE["source-controller"]["digest"] in old["message"]

    asyncio.run(scenario())


def test_only_a_changed_verdict_count_or_condition_makes_a_write_urgent() -> None:
    """What the counts, the conditions and the alerts follow is urgent; what runs and why
    (digest, reason, per-CVE verdicts, remediation) may wait for those writes."""
    item = {"namespace": "flux-system", "name": "source-controller",
            "component": "source-controller", "verdict": "Vulnerable",
            "reason": "DigestNotFixed", "digests": ["sha256:" + "1" * 64],
            "cves": [{"id": "CVE-2026-10001", "verdict": "Vulnerable",
                      "reason": "DigestNotFixed"}], "message": "runs 1111"}
    current = {"observedGeneration": 1, "counts": {"vulnerable": 1},
               "conditions": [{"type": "Ready", "status": "True"}], "components": [item],
               "pendingEvents": [{"name": "posted"}]}
    details = {**item, "reason": "NoFixForVersion", "digests": ["sha256:" + "2" * 64],
               "cves": [{"id": "CVE-2026-10001", "verdict": "Vulnerable",
                         "reason": "NoFixForVersion"}], "message": "runs 2222"}
    desired = {key: value for key, value in current.items() if key != "pendingEvents"}
    assert bulletin_controller.details_only(
        current, {**desired, "components": [details]})
    assert not bulletin_controller.details_only(current, desired), "nothing to write"
    assert not bulletin_controller.details_only(
        current, {**desired, "components": [{**details, "verdict": "Fixed"}]})
    assert not bulletin_controller.details_only(
        current, {**desired, "components": [details, {**details, "name": "other"}]})
    assert not bulletin_controller.details_only(
        current, {**desired, "components": [details], "counts": {"vulnerable": 2}})
    assert not bulletin_controller.details_only(
        current, {**desired, "components": [details], "conditions": []})
