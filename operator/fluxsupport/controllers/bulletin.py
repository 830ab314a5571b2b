"""Reconcile SecurityBulletins against the live inventory and the OpenVEX ConfigMaps."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import itertools
import logging
import time
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

import pydantic

from fluxsupport import constants
from fluxsupport.controllers import writes
from fluxsupport.controllers.scheduler import Scheduler
from fluxsupport.controllers.writes import newer_or_equal
from fluxsupport.domain import bulletin as domain
from fluxsupport.domain import conditions, timing, vex
from fluxsupport.domain.inventory import RunningComponent
from fluxsupport.kube import api, reflector
from fluxsupport.kube.events import EventPoster
from fluxsupport.sources.inventory import Inventory

logger = logging.getLogger(__name__)


#: How long re-checks caused by another bulletin's arrival wait, so that a burst of arrivals
#: (a restart lists them all) re-checks each bulletin once rather than once per arrival.
COALESCE_S = 1.0


@dataclasses.dataclass
class BulletinSnapshot:
    name: str
    uid: str
    resource_version: str
    generation: int
    spec: dict[str, Any]
    status: dict[str, Any]
    #: The validated spec, or why it is invalid: carried over to the next snapshot while the
    #: spec stays the same, so that a status echo or a label edit is not validated again.
    parsed: domain.BulletinSpec | pydantic.ValidationError | None = dataclasses.field(
        default=None, repr=False)

    def validated(self) -> domain.BulletinSpec | pydantic.ValidationError:
        if self.parsed is None:
            try:
                self.parsed = domain.BulletinSpec.model_validate(self.spec)
            except pydantic.ValidationError as error:
                self.parsed = error
        return self.parsed

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> BulletinSnapshot:
        metadata = body.get("metadata") or {}
        return cls(metadata["name"], metadata.get("uid", ""),
                   metadata.get("resourceVersion", ""), int(metadata.get("generation") or 0),
                   dict(body.get("spec") or {}), dict(body.get("status") or {}))

    @property
    def ref(self) -> api.ObjectRef:
        return api.ObjectRef(constants.API_VERSION, constants.BULLETIN_KIND,
                             constants.BULLETIN_PLURAL, self.name, None, self.uid)


@dataclasses.dataclass(frozen=True)
class ParsedVex:
    """One ConfigMap key's OpenVEX document, parsed, checked and indexed once per text."""

    text: str
    document: vex.IndexedDocument | None
    problem: str | None
    #: Products that can match nothing (vex.product_problems).
    warnings: tuple[str, ...]
    #: Deviations from OpenVEX v0.2.0 read leniently (vex.Document.warnings).
    deviations: tuple[str, ...] = ()


def vex_warning(cited: int, deviations: list[str]) -> conditions.Condition:
    """VexWarning: True when a cited OpenVEX document was read although it deviates from
    OpenVEX v0.2.0 (as go-vex reads it); the message names each deviation by ConfigMap, key
    and JSON path. Its verdicts count; the publisher should fix the document."""
    if deviations:
        return conditions.Condition(
            type="VexWarning", status="True", reason="NonConformingVex",
            message="; ".join(deviations) + ". These documents count as read; ask their "
                    "publisher to conform to OpenVEX v0.2.0.")
    if not cited:
        return conditions.Condition(type="VexWarning", status="False", reason="NoVexDocuments",
                                    message="The bulletin cites no OpenVEX document.")
    return conditions.Condition(type="VexWarning", status="False", reason="ConformingVex",
                                message="Every readable OpenVEX document the bulletin cites "
                                        "conforms to OpenVEX v0.2.0.")


def _by_component(components: list[RunningComponent]
                  ) -> dict[str, tuple[RunningComponent, ...]]:
    grouped: dict[str, list[RunningComponent]] = {}
    for component in components:
        grouped.setdefault(component.component, []).append(component)
    return {name: tuple(items) for name, items in grouped.items()}


@dataclasses.dataclass(frozen=True)
class BulletinView:
    """What the metrics collector reads."""

    counts: dict[str, int]
    vulnerable: tuple[tuple[str, str, bool], ...]  # namespace, component, vulnerable
    patch_overdue: bool


def _validation_message(error: pydantic.ValidationError) -> str:
    return "; ".join(f"spec.{'.'.join(str(p) for p in item['loc'])}: {item['msg']}"
                     for item in error.errors())


def too_large(error: api.ApiError) -> bool:
    """The write would make the object exceed the size limit: etcd's 1.5 MiB by default,
    reported as a 500 "etcdserver: request is too large", or the API server's 413."""
    return error.status == 413 or "request is too large" in str(error)


#: Ready when the full status does not fit (see BulletinController._oversized).
TOO_LARGE_MESSAGE = (
    "With per-CVE verdicts the status would push the bulletin past the API server's object size "
    "limit (etcd's, 1.5 MiB by default), so status.components[].cves and .message are left "
    "out; the component verdicts, counts and remediation are complete. Shorten the summaries "
    "or split the bulletin to get them back.")


#: Condition messages of a bulletin under embargo, by reason. Fixed texts: a message built
#: from the spec or an OpenVEX document cannot be filtered reliably (a CVE id in lower case or
#: JSON-escaped, a title cut in the middle, a ConfigMap named after the advisory), so none is
#: used. They point to where the details can be read by those allowed to: the bulletin and
#: its documents, checked offline with ``fluxsupport bulletin check``.
WITHHELD = {
    "InvalidSpec": "The spec does not match what the operator reads. The details are withheld "
                   "while the bulletin is under embargo: `fluxsupport bulletin check` on the "
                   "manifest names the field.",
    "InvalidVex": "An OpenVEX document that spec.vex references is missing, invalid, or names "
                  "products that can match nothing; verdicts ignore what cannot be used. The "
                  "details are withheld while the bulletin is under embargo: `fluxsupport "
                  "bulletin check --vex FILE` on each document names the problem.",
    "PatchByPassed": "patchBy has passed and a component is still vulnerable.",
    "NotOverdue": "patchBy has not passed, or no component is vulnerable.",
}
#: For a reason not listed above (a condition added later, say).
WITHHELD_DEFAULT = "The details are withheld while the bulletin is under embargo."
#: Reasons whose messages hold nothing of the bulletin, only counts and what the operator
#: itself reads (its Flux namespaces, the API server's answers): kept under embargo.
OWN_WORDS = frozenset({"Evaluated", "InventoryUnavailable", "NoFluxComponents",
                       "VulnerableComponents", "UnknownDigests", "NoVulnerableComponents",
                       "NoPatchBy", "StatusTooLarge"})


def withheld(condition: conditions.Condition) -> conditions.Condition:
    """``condition`` as a bulletin under embargo shows it: its message a fixed text."""
    if condition.reason in OWN_WORDS:
        return condition
    message = WITHHELD.get(condition.reason, WITHHELD_DEFAULT)
    return condition.model_copy(update={"message": message})


def embargo_until(spec: Mapping[str, Any]) -> datetime.datetime | None:
    """The embargoUntil of a spec that did not validate; one that cannot be read is taken as
    an embargo without end, since nothing says it is over."""
    until = spec.get("embargoUntil")
    if until is None:
        return None
    try:
        return timing.parse_time(str(until))
    except ValueError:
        return datetime.datetime.max.replace(tzinfo=datetime.UTC)


def reason_kind(reason: str) -> str:
    """The reason without what follows a colon: a bulletin name (RebuiltIn:) or an OpenVEX
    justification (VexNotAffected:) is user-supplied text."""
    return reason.split(":", 1)[0]


#: Fields of status.components[] that name the component and its verdict. The others (what
#: runs, the reason, the per-CVE verdicts, the remediation, the message) are its details.
VERDICT_FIELDS = ("namespace", "name", "component", "verdict")


def details_only(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether ``desired`` differs from ``current`` only in the details of its components:
    the same components with the same verdicts, and the counts and conditions as they are."""
    def verdicts(status: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        return [tuple(item.get(key) for key in VERDICT_FIELDS)
                for item in status.get("components") or []]

    others = {key for key in current if key != writes.PENDING} | set(desired)
    return (current.get("components") != desired.get("components")
            and verdicts(current) == verdicts(desired)
            and all(current.get(key) == desired.get(key) for key in others - {"components"}))


class EmbargoedError(Exception):
    """Stands for an error in the reconcile of a bulletin under embargo, in its Ready
    condition and the log: the error's text may quote the bulletin. Only its type is kept."""

    def __init__(self, error: Exception) -> None:
        super().__init__(f"{type(error).__name__}; the details are withheld while the "
                         "bulletin is under embargo")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class BulletinController:
    def __init__(self, client: api.KubeClient, inventory: Inventory,
                 configmaps: reflector.Watch, operator_namespace: str,
                 gate: asyncio.Event | None = None, poster: EventPoster | None = None) -> None:
        self.client = client
        self.inventory = inventory
        self.configmaps = configmaps
        self.operator_namespace = operator_namespace
        self.scheduler = Scheduler(self._scheduled, gate=gate, kind=constants.BULLETIN_KIND,
                                   on_error=self._report_error)
        # Nothing kept: every field is computed again, so a spec that became invalid leaves
        # no verdicts, counts or metrics of the spec before.
        self.writer = writes.StatusWriter(client, poster or EventPoster(client), self.scheduler,
                                          constants.BULLETIN_KIND, logger)
        self.bulletins: dict[str, BulletinSnapshot] = {}
        self.views: dict[str, BulletinView] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        #: Bulletins whose status write waits for the writes that change a verdict.
        self._deferred: set[str] = set()
        #: Bulletins whose inputs (inventory, VEX, other bulletins) changed since their last
        #: evaluation started. One that changes during an evaluation is evaluated again.
        self._requested: set[str] = set()
        #: Bulletins so large (a spec near the size limit) that the full status was refused:
        #: they get a compact one, until their spec changes.
        self._oversized: set[str] = set()
        #: The fix digests of every valid bulletin (the rebuild rule), in the order of
        #: ``bulletins``, and per component the valid bulletins that concern it: updated one
        #: spec at a time, since a thousand bulletins arrive one by one at start-up.
        self._fixes = domain.FixIndex()
        self._concerned_by: dict[str, set[str]] = {}
        #: Each bulletin's place in ``bulletins``, which orders the FixIndex as it orders
        #: the dict: given when a name enters it, kept while it stays.
        self._positions: dict[str, int] = {}
        self._next_position = itertools.count()
        #: By (ConfigMap, key): a document of up to 1 MiB takes longer to parse than the rest
        #: of an evaluation, and many bulletins share one.
        self._vex: dict[tuple[str, str], ParsedVex] = {}
        #: Inventory problems and running components by name, as of the last notification.
        self._inventory_seen: tuple[tuple[str, ...],
                                    dict[str, tuple[RunningComponent, ...]]] | None = None
        inventory.subscribe(self.inventory_changed)

    def observe(self, body: Mapping[str, Any]) -> tuple[str, bool]:
        """Keep the newest body; say whether it is news (not the echo of our own write)."""
        snapshot = BulletinSnapshot.from_body(body)
        held = self.bulletins.get(snapshot.name)
        if held is not None and held.uid == snapshot.uid and (
                held.resource_version == snapshot.resource_version
                or not newer_or_equal(snapshot.resource_version, held.resource_version)):
            return snapshot.name, False
        self.bulletins[snapshot.name] = snapshot
        if held is None:
            self._positions[snapshot.name] = next(self._next_position)
        if held is None or held.spec != snapshot.spec:
            self._oversized.discard(snapshot.name)
            self._index(snapshot, held)
            # Verdicts depend on other bulletins (later rebuilds): re-check those that concern
            # a component this bulletin lists (or listed) the running build of.
            rebuilt = self._rebuilt_components(snapshot)
            if held is not None:
                rebuilt |= self._rebuilt_components(held)
            self._reconcile_soon({snapshot.name})
            # Coalesced: a thousand bulletins listed at a start would each re-check all the
            # others, a thousand times over.
            self._reconcile_soon(self._concerning(rebuilt) - {snapshot.name},
                                 COALESCE_S)
        else:
            snapshot.parsed = held.parsed
        return snapshot.name, True

    def forget(self, name: str) -> None:
        held = self.bulletins.pop(name, None)
        if held is not None:
            self._index(None, held)
        self._positions.pop(name, None)
        self.views.pop(name, None)
        self._locks.pop(name, None)
        self._requested.discard(name)
        self._deferred.discard(name)
        self._oversized.discard(name)
        self.scheduler.cancel(name)
        self.writer.forget(name)
        if held is not None:
            self._reconcile_soon(self._concerning(self._rebuilt_components(held)))

    def reconcile_all_soon(self) -> None:
        """Re-check every bulletin (an OpenVEX ConfigMap changed, for one)."""
        self._prune_vex()
        self._reconcile_soon(self.bulletins)

    def inventory_changed(self) -> None:
        """Re-check the bulletins that concern a component whose running builds changed: a
        Pod event must not re-evaluate a thousand bulletins about other components. All of
        them when what every status shows changed: a watch that cannot list (Ready), or no
        Flux component found or found again (Compliant)."""
        problems = tuple(self.inventory.problems())
        running = _by_component(self.inventory.components())
        before, self._inventory_seen = self._inventory_seen, (problems, running)
        if before is None or before[0] != problems or bool(before[1]) != bool(running):
            self.reconcile_all_soon()
            return
        changed = {name for name in before[1].keys() | running.keys()
                   if before[1].get(name) != running.get(name)}
        self._reconcile_soon(self._concerning(changed))

    def _reconcile_soon(self, names: Iterable[str], delay: float = 0.0) -> None:
        now = time.time() + delay
        for name in names:
            self._requested.add(name)
            self.scheduler.schedule(name, now)

    def _rebuilt_components(self, snapshot: BulletinSnapshot) -> set[str]:
        """The components whose running digest the bulletin lists as a fix: only for those
        can it make another bulletin's verdict RebuiltIn. A digest that does not run changes
        no verdict; once it runs, inventory_changed re-checks that component's bulletins.
        A bulletin under embargo changes none either (the rebuild rule leaves it out): at
        the lift, _reconcile re-checks those bulletins."""
        spec = snapshot.validated()
        if isinstance(spec, pydantic.ValidationError) or spec.embargoed(_now()):
            return set()
        running = {(c.component, digest) for c in self.inventory.components()
                   for digest in c.digests}
        return {fix.component for fix in spec.fixes for image in fix.images
                if (fix.component, image.digest) in running}

    def _concerning(self, components: Iterable[str]) -> set[str]:
        return {name for component in components
                for name in self._concerned_by.get(component, ())}

    def _index(self, new: BulletinSnapshot | None, old: BulletinSnapshot | None) -> None:
        """Replace ``old``'s spec by ``new``'s in the shared indexes. An invalid spec has no
        verdicts, so nothing to depend on or to be depended on: it is in neither."""
        for snapshot, adding in ((old, False), (new, True)):
            spec = snapshot.validated() if snapshot is not None else None
            if snapshot is None or not isinstance(spec, domain.BulletinSpec):
                continue
            for component in domain.concerned_components(spec):
                names = self._concerned_by.setdefault(component, set())
                if adding:
                    names.add(snapshot.name)
                else:
                    names.discard(snapshot.name)
            if adding:
                self._fixes.add(domain.Bulletin(snapshot.name, spec),
                                self._positions[snapshot.name])
            else:
                self._fixes.remove(snapshot.name)

    async def _scheduled(self, key: Hashable) -> None:
        assert isinstance(key, str)
        await self._locked(key)

    async def reconcile(self, name: str) -> None:
        """Reconcile now (from a watch event); a failure is retried like a scheduled one."""
        try:
            await self._locked(name)
        except Exception as error:  # retried with backoff and shown in Ready
            await self.scheduler.failed(name, error)

    async def _locked(self, name: str) -> None:
        async with self._locks.setdefault(name, asyncio.Lock()):
            try:
                await self._reconcile(name)
            except Exception as error:
                # The scheduler logs the error with its traceback, which may quote the spec.
                snapshot = self.bulletins.get(name)
                if snapshot is not None and self._embargoed(snapshot, _now()):
                    raise EmbargoedError(error) from None
                raise

    async def _report_error(self, key: Hashable, error: Exception) -> None:
        assert isinstance(key, str)
        async with self._locks.setdefault(key, asyncio.Lock()):
            snapshot = self.bulletins.get(key)
            if snapshot is None:
                return
            if self._embargoed(snapshot, _now()) and not isinstance(error, EmbargoedError):
                error = EmbargoedError(error)
            result = await self.writer.write_error(key, snapshot.ref, snapshot.status,
                                                   snapshot.resource_version,
                                                   snapshot.generation, error)
            if result.outcome is writes.Outcome.WRITTEN:
                self._stored(snapshot, result)

    @staticmethod
    def _embargoed(snapshot: BulletinSnapshot, now: datetime.datetime) -> bool:
        spec = snapshot.validated()
        if isinstance(spec, pydantic.ValidationError):
            until = embargo_until(snapshot.spec)
            return until is not None and now < until
        return spec.embargoed(now)

    @staticmethod
    def _stored(snapshot: BulletinSnapshot, result: writes.Result) -> None:
        snapshot.status = result.status or {}
        snapshot.resource_version = result.resource_version or snapshot.resource_version

    def _vex_documents(self, spec: domain.BulletinSpec
                       ) -> tuple[list[vex.IndexedDocument], list[str], list[str], list[str]]:
        """The usable documents; the problems of the unusable ones; the products of usable
        ones that can match nothing (a bad digest), which the Ready condition names; and what
        usable ones deviate from OpenVEX v0.2.0, which the VexWarning condition names."""
        documents, problems, warnings, deviations = [], [], [], []
        for ref in spec.vex:
            name, key = ref.config_map_key_ref.name, ref.config_map_key_ref.key
            where = f"ConfigMap {self.operator_namespace}/{name}"
            configmap = self.configmaps.objects.get(name)
            if configmap is None:
                problems.append(f"{where} not found; create it in the operator's namespace")
                continue
            data = (configmap.get("data") or {}).get(key)
            if data is None:
                problems.append(f"{where} has no key {key!r}")
                continue
            parsed = self._vex.get((name, key))
            if parsed is None or not (parsed.text is data or parsed.text == data):
                parsed = self._parse_vex(data, f"{where} key {key}")
            elif parsed.text is not data:  # the same text, listed again: keep one copy
                parsed = dataclasses.replace(parsed, text=data)
            self._vex[(name, key)] = parsed
            if parsed.document is None:
                problems.append(parsed.problem or "")
                continue
            documents.append(parsed.document)
            warnings += [f"{where} key {key}: {problem}" for problem in parsed.warnings]
            deviations += [f"{where} key {key}: {line}" for line in parsed.deviations]
        return documents, problems, warnings, deviations

    @staticmethod
    def _parse_vex(data: str, source: str) -> ParsedVex:
        try:
            document = vex.parse_document(data, source=source)
        except vex.VexError as error:
            return ParsedVex(data, None, str(error), ())
        # Verdicts only ask about running images (vex.image_purl): statements about other
        # products (packages inside images, Go modules) need no memory.
        return ParsedVex(data, vex.index_document(document, purl_types=("oci",)), None,
                         tuple(vex.product_problems(document)), document.warnings)

    def _prune_vex(self) -> None:
        """Drop the documents whose ConfigMap key is gone or holds another text now."""
        for (name, key), parsed in list(self._vex.items()):
            data = ((self.configmaps.objects.get(name) or {}).get("data") or {}).get(key)
            if data is None or not (data is parsed.text or data == parsed.text):
                del self._vex[(name, key)]

    async def _reconcile(self, name: str) -> None:
        snapshot = self.bulletins.get(name)
        if snapshot is None:
            self.writer.forget(name)
            return
        self._requested.discard(name)  # this evaluation sees every change made so far
        now = _now()
        desired, events, next_transition, view = self._evaluate(snapshot, now)
        if snapshot.status.get("embargoed") and desired.get("embargoed") is False:
            # The lift: from now on the rebuild rule counts this bulletin for the others.
            self._reconcile_soon(self._concerning(self._rebuilt_components(snapshot)) - {name})
        if view is not None:
            self.views[name] = view
        else:
            # An invalid spec: no verdicts, so no metrics of the spec before either.
            self.views.pop(name, None)
        if name not in self._deferred and not events and details_only(snapshot.status, desired):
            # No verdict changed, only what runs and why (digest, reason, per-CVE verdicts):
            # an image change rewrites every bulletin about that component (a thousand
            # bulletins: a hundred writes), and the writes that change a verdict, which the
            # counts, the conditions and the alerts follow, go first. Low instants start
            # once no ordinary one is due or running; that run writes whatever it finds.
            self._deferred.add(name)
            self.scheduler.schedule_low(name, time.time())
            return
        self._deferred.discard(name)
        result = await self.writer.write(name, snapshot.ref, snapshot.status, desired,
                                         snapshot.resource_version, events, now=now,
                                         refused=lambda error: self._too_large(name, error))
        if result.outcome is writes.Outcome.GONE:
            self.forget(name)
            return
        if result.outcome in (writes.Outcome.FAILED, writes.Outcome.HANDLED):
            return
        if result.outcome is writes.Outcome.WRITTEN:
            self._stored(snapshot, result)
            logger.debug("SecurityBulletin %s: status written", name)
        if name in self._requested:
            # An input changed while the status write was in flight: the evaluation above may
            # have missed it (a bulletin published meanwhile, a new image). replace() would
            # drop the request reconcile_all_soon() queued; evaluate again instead.
            self.scheduler.schedule(name, time.time())
        else:
            self.scheduler.replace(name,
                                   next_transition.timestamp() if next_transition else None)
        self.writer.clear_later(name)

    def _too_large(self, name: str, error: api.ApiError) -> bool:
        """Retried as is, a status too large to store would fail for ever and the bulletin
        would never get a condition: write a compact status instead, at once."""
        if not too_large(error) or name in self._oversized:
            return False
        logger.warning("SecurityBulletin %s: the full status does not fit (%s); "
                       "writing it without per-CVE details", name, error)
        self._oversized.add(name)
        self.scheduler.schedule(name, time.time())
        return True

    def _evaluate(self, snapshot: BulletinSnapshot, now: datetime.datetime
                  ) -> tuple[dict[str, Any], list[tuple[str, str, str]],
                             datetime.datetime | None, BulletinView | None]:
        old_conditions = list(snapshot.status.get("conditions") or [])
        generation = snapshot.generation
        spec = snapshot.validated()
        if isinstance(spec, pydantic.ValidationError):
            ready = conditions.Condition(type="Ready", status="False", reason="InvalidSpec",
                                         message=_validation_message(spec))
            until = embargo_until(snapshot.spec)
            lifts = until if until is not None and now < until else None
            if lifts is not None:
                ready = withheld(ready)
            invalid = {"observedGeneration": generation,
                       "conditions": conditions.merge(old_conditions, [ready], generation, now)}
            return invalid, [("Warning", "InvalidSpec", ready.message)], lifts, None
        bulletin = domain.Bulletin(snapshot.name, spec)
        documents, vex_problems, vex_warnings, vex_deviations = self._vex_documents(spec)
        verdicts = domain.evaluate(bulletin, self.inventory.components(),
                                   self._fixes, documents, now=now)
        embargoed = spec.embargoed(now)
        counts = {"vulnerable": 0, "notAffected": 0, "fixed": 0, "unknown": 0}
        field = {"Vulnerable": "vulnerable", "NotAffected": "notAffected", "Fixed": "fixed",
                 "Unknown": "unknown"}
        for verdict in verdicts:
            counts[field[verdict.verdict]] += 1
        overdue = bool(spec.patch_by and now >= spec.patch_by and counts["vulnerable"])

        inventory_problems = self.inventory.problems()
        current = [self._ready(vex_problems + inventory_problems, vex_warnings, verdicts),
                   self._compliant(counts, bool(self.inventory.components())),
                   self._patch_overdue(spec, overdue, counts),
                   vex_warning(len(spec.vex), vex_deviations)]
        if embargoed:
            current = [withheld(condition) for condition in current]
        components = [self._component_status(v) for v in verdicts]
        written = components
        if snapshot.name in self._oversized:
            written = [{key: value for key, value in item.items()
                        if key not in ("cves", "message")} for item in components]
            ready = current[0]
            current[0] = conditions.Condition(
                type="Ready", status="False",
                reason=ready.reason if ready.status == "False" else "StatusTooLarge",
                message=(ready.message + " " if ready.status == "False" else "")
                + TOO_LARGE_MESSAGE)
        status: dict[str, Any] = {
            "observedGeneration": generation, "embargoed": embargoed, "counts": counts,
            "components": written,
            "conditions": conditions.merge(old_conditions, current, generation, now),
        }
        events = self._events(snapshot, spec, components, current, embargoed)
        upcoming = [t for t in (spec.embargo_until, spec.patch_by) if t and t > now]
        view = BulletinView(
            counts={label: counts[key] for label, key in field.items()},
            vulnerable=tuple((v.component.namespace, v.component.component,
                              v.verdict == "Vulnerable") for v in verdicts),
            patch_overdue=overdue)
        return status, events, min(upcoming) if upcoming else None, view

    @staticmethod
    def _component_status(verdict: domain.ComponentVerdict) -> dict[str, Any]:
        component = verdict.component
        item: dict[str, Any] = {
            "namespace": component.namespace, "name": component.name,
            "component": component.component, "image": component.image,
            "version": component.tag or "", "digests": list(component.digests),
            "verdict": verdict.verdict, "reason": verdict.reason, "message": verdict.message,
            "cves": [{"id": c.id, "verdict": c.verdict, "reason": c.reason}
                     for c in verdict.cves],
        }
        if verdict.remediation is not None:
            item["remediation"] = verdict.remediation.as_kustomize_image()
        return item

    def _ready(self, problems: list[str], warnings: list[str],
               verdicts: list[domain.ComponentVerdict]) -> conditions.Condition:
        if any(problem.startswith("cannot list") for problem in problems):
            return conditions.Condition(
                type="Ready", status="False", reason="InventoryUnavailable",
                message="; ".join(problems) + ". Check the operator's RBAC and --flux-namespace "
                "(now: " + ", ".join(self.inventory.namespaces) + ").")
        if problems or warnings:
            message = ""
            if problems:
                message = "; ".join(problems) + ". Verdicts ignore that document until fixed."
            if warnings:
                message += (" " if message else "") + "; ".join(warnings) + (
                    ". The rest of that document counts; fix the product to make it match.")
            return conditions.Condition(type="Ready", status="False", reason="InvalidVex",
                                        message=message)
        return conditions.Condition(
            type="Ready", status="True", reason="Evaluated",
            message=f"Checked {len(verdicts)} running component(s) concerned by the bulletin.")

    def _compliant(self, counts: dict[str, int], inventory_found: bool) -> conditions.Condition:
        if not inventory_found:
            return conditions.Condition(
                type="Compliant", status="Unknown", reason="NoFluxComponents",
                message="No Flux Deployment was found in " + ", ".join(self.inventory.namespaces)
                + "; nothing could be checked.")
        if counts["vulnerable"]:
            return conditions.Condition(
                type="Compliant", status="False", reason="VulnerableComponents",
                message=f"{counts['vulnerable']} component(s) run a vulnerable image; "
                        "see status.components[].remediation.")
        if counts["unknown"]:
            return conditions.Condition(
                type="Compliant", status="Unknown", reason="UnknownDigests",
                message=f"{counts['unknown']} component(s) could not be checked.")
        return conditions.Condition(type="Compliant", status="True",
                                    reason="NoVulnerableComponents",
                                    message="No running component is vulnerable.")

    @staticmethod
    def _patch_overdue(spec: domain.BulletinSpec, overdue: bool,
                       counts: dict[str, int]) -> conditions.Condition:
        if overdue:
            assert spec.patch_by is not None
            return conditions.Condition(
                type="PatchOverdue", status="True", reason="PatchByPassed",
                message=f"patchBy {conditions.rfc3339(spec.patch_by)} has passed and "
                        f"{counts['vulnerable']} component(s) are still vulnerable.")
        if spec.patch_by is None:
            return conditions.Condition(type="PatchOverdue", status="False", reason="NoPatchBy",
                                        message="The bulletin sets no patchBy time.")
        return conditions.Condition(
            type="PatchOverdue", status="False", reason="NotOverdue",
            message=f"patchBy {conditions.rfc3339(spec.patch_by)}.")

    @staticmethod
    def _events(snapshot: BulletinSnapshot, spec: domain.BulletinSpec,
                components: list[dict[str, Any]], current: list[conditions.Condition],
                embargoed: bool) -> list[tuple[str, str, str]]:
        """Events name components and verdicts. Under embargo they hold nothing the bulletin
        or its documents supplied (no CVE id, reason detail, fixed version or digest), only
        what runs in the cluster and fixed words; the condition messages are fixed texts."""
        events = []
        before = {(c.get("namespace"), c.get("component")): c.get("verdict")
                  for c in snapshot.status.get("components") or []}
        for item in components:
            old = before.get((item["namespace"], item["component"]))
            if old == item["verdict"]:
                continue
            reason = reason_kind(item["reason"]) if embargoed else item["reason"]
            text = (f"{item['namespace']}/{item['component']}: {old or 'new'} -> "
                    f"{item['verdict']} ({reason})")
            if not embargoed:
                ids = ", ".join(c["id"] for c in item["cves"])
                text += f"; {ids}"
            if item["verdict"] == "Vulnerable" and "remediation" in item:
                if embargoed:
                    text += "; the fix is in the bulletin's status.components[].remediation"
                else:
                    fix = item["remediation"]
                    text += f"; fix: {fix['name']}:{fix['newTag']}@{fix['digest']}"
            events.append(("Warning" if item["verdict"] == "Vulnerable" else "Normal",
                           f"Verdict{item['verdict']}", text))
        if snapshot.status.get("embargoed") and not embargoed:
            ids = ", ".join(v.id for v in spec.vulnerabilities)
            events.append(("Normal", "EmbargoLifted", f"Disclosed: {ids}"))
        old_ready: dict[str, Any] = next((c for c in snapshot.status.get("conditions") or []
                          if c.get("type") == "Ready"), {})
        ready = current[0]
        if ready.status == "False" and old_ready.get("message") != ready.message:
            events.append(("Warning", ready.reason, ready.message))
        return events
