"""The vendor's remediation deadline for a CVE, and the CVSS base score that picks it.

The Support Policy 2026 promises a fix within a time that depends on the CVSS base score and on
one of two frameworks; the subscription says which applies (the policy's
``remediationFramework``):

* **standard**: critical (CVSS 9.0-10.0) 72 hours, wall-clock; high, medium and low (0.1-8.9)
  5 Support Days, counted like the case budgets: 5 full business days of the policy's calendar
  (40 Support Hours on 09:00-17:00), from the moment the vendor identified the vulnerability or
  received a report of it.
* **upstream-patch**: critical 7 calendar days, others 14, from the moment a qualifying patch (a
  public upstream release that fully mitigates it) became available. A calendar day ends at the
  same wall-clock time in the policy's zone, whatever DST does in between.

A score of 0.0 (CVSS "None") is no vulnerability to remediate: no deadline. Without a score the
vulnerability's severity decides: Critical is critical, anything else is not.

Scores come from the vector with Red Hat Product Security's ``cvss`` library, imported only when
a vector is scored: the base score (CVSS-B for v4.0, whatever threat or environmental metrics
the vector also carries). Of an advisory's vectors, CVSS v4.0 is preferred to v3.x, and a
vector the library refuses gives way to the next one.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import functools
import zoneinfo
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from fluxsupport.domain import bulletin

if TYPE_CHECKING:
    # Annotations only: the advisory import reaches this module, and `bulletin check` and
    # `bulletin import` without --policy need no holiday calendars.
    from fluxsupport.domain.calendar import BusinessCalendar
    from fluxsupport.domain.policy import Policy

Framework = Literal["standard", "upstream-patch"]
Band = Literal["critical", "other"]

#: The lowest critical base score (CVSS v3.x and v4.0 rate 9.0-10.0 Critical).
CRITICAL_SCORE = 9.0
STANDARD_CRITICAL = datetime.timedelta(hours=72)
STANDARD_SUPPORT_DAYS = 5
UPSTREAM_PATCH_DAYS: Mapping[Band, int] = {"critical": 7, "other": 14}
_V4_BASE_METRICS = ("AV", "AC", "AT", "PR", "UI", "VC", "VI", "VA", "SC", "SI", "SA")
#: OSV severity types, most preferred first.
_OSV_TYPES = ("CVSS_V4", "CVSS_V3")


class CvssError(ValueError):
    """A vector the CVSS library cannot score; the message says why."""


@functools.lru_cache(maxsize=4096)
def base_score(vector: str) -> float:
    """The CVSS base score of a v3.0, v3.1 or v4.0 vector, 0.0 to 10.0. Cached: the operator
    scores a bulletin's vectors at each of its evaluations."""
    import cvss  # only where a vector is scored: `sla due` and `bulletin check` need none

    text = vector.strip()
    try:
        if text.startswith("CVSS:4.0/"):
            # The library scores every metric a v4.0 vector carries (CVSS-BT, CVSS-BE); the
            # policy speaks of the base score (CVSS-B): score the base metrics alone.
            parsed = cvss.CVSS4(text)
            base = "/".join(f"{name}:{parsed.metrics[name]}" for name in _V4_BASE_METRICS)
            score = cvss.CVSS4(f"CVSS:4.0/{base}").base_score
        elif text.startswith(("CVSS:3.0/", "CVSS:3.1/")):
            score = cvss.CVSS3(text).base_score
        else:
            raise CvssError(f"{vector!r} is not a CVSS v3.0, v3.1 or v4.0 vector")
    except cvss.CVSSError as error:
        raise CvssError(f"{vector!r}: {error}") from error
    return float(decimal.Decimal(str(score)).quantize(decimal.Decimal("0.1")))


@dataclasses.dataclass(frozen=True)
class Scored:
    vector: str
    #: None when the library refuses every vector; ``problem`` then says why.
    score: float | None
    problem: str | None = None


def osv_score(advisory: Mapping[str, Any]) -> Scored | None:
    """The base score of an OSV advisory's CVSS vectors (its top-level ``severity``); None
    when it has none."""
    entries = [entry for entry in advisory.get("severity") or []
               if isinstance(entry, Mapping) and isinstance(entry.get("score"), str)]
    vectors = [entry["score"] for kind in _OSV_TYPES for entry in entries
               if entry.get("type") == kind]
    problems = []
    for vector in vectors:
        try:
            return Scored(vector, base_score(vector))
        except CvssError as error:
            problems.append(str(error))
    return Scored(vectors[0], None, "; ".join(problems)) if vectors else None


def band(score: float | None, severity: str | None) -> Band | None:
    """Critical or other, by the score, else by the severity; None for a 0.0 score or when
    neither is known."""
    if score is not None:
        if score <= 0:
            return None
        return "critical" if score >= CRITICAL_SCORE else "other"
    if severity is None:
        return None
    return "critical" if severity == "Critical" else "other"


def support_day_seconds(policy: Policy) -> int:
    """The length of one business day of the policy: 8 hours on 09:00-17:00, 24 when open
    around the clock."""
    hours = policy.business_hours
    if hours.always_open:
        return 86400
    closing = hours.closing
    end = 86400 if closing is None else _seconds(closing)
    return end - _seconds(hours.opening)


def _seconds(moment: datetime.time) -> int:
    return moment.hour * 3600 + moment.minute * 60 + moment.second


@dataclasses.dataclass(frozen=True)
class Due:
    framework: Framework
    band: Band
    started_at: datetime.datetime
    due_at: datetime.datetime
    #: The promise in words, such as "72 hours" or "5 Support Days".
    budget: str


def due(framework: Framework, started_at: datetime.datetime, score: float | None,
        severity: str | None, policy: Policy, calendar: BusinessCalendar) -> Due | None:
    """When the vendor's fix is due, or None for a vulnerability with no deadline."""
    rank = band(score, severity)
    if rank is None:
        return None
    start = started_at.astimezone(datetime.UTC)
    if framework == "upstream-patch":
        days = UPSTREAM_PATCH_DAYS[rank]
        return Due(framework, rank, start, calendar_days(start, days, policy.timezone),
                   f"{days} calendar days")
    if rank == "critical":
        return Due(framework, rank, start, start + STANDARD_CRITICAL, "72 hours")
    seconds = STANDARD_SUPPORT_DAYS * support_day_seconds(policy)
    return Due(framework, rank, start, calendar.add(start, seconds),
               f"{STANDARD_SUPPORT_DAYS} Support Days")


def calendar_days(start: datetime.datetime, days: int, zone_name: str) -> datetime.datetime:
    """The same wall-clock time ``days`` later in the zone; a time the clock skips is read
    with the offset before the jump (an hour later on the clock), a repeated one at its first
    reading."""
    zone = zoneinfo.ZoneInfo(zone_name)
    local = start.astimezone(zone).replace(tzinfo=None) + datetime.timedelta(days=days)
    return local.replace(tzinfo=zone).astimezone(datetime.UTC)


def clock_start(framework: Framework, vulnerability: bulletin.Vulnerability,
                published_at: datetime.datetime) -> datetime.datetime | None:
    """When the framework's clock starts for ``vulnerability``: identifiedAt (else the
    bulletin's publishedAt: the vendor knew by then) or patchAvailableAt (else not yet)."""
    if framework == "upstream-patch":
        return vulnerability.patch_available_at
    return vulnerability.identified_at or published_at


def score_of(vulnerability: bulletin.Vulnerability) -> float | None:
    """The vulnerability's cvssScore, else the score of its cvssVector; None when neither
    gives one (the severity then decides; ``bulletin import`` reports the vector)."""
    if vulnerability.cvss_score is not None or vulnerability.cvss_vector is None:
        return vulnerability.cvss_score
    try:
        return base_score(vulnerability.cvss_vector)
    except CvssError:
        return None


def countable(moment: datetime.datetime) -> bool:
    """Whether the calendar counts from ``moment``: its years are those of the case clocks
    (timing.MIN_YEAR to MAX_YEAR, with the year after for the deadline)."""
    from fluxsupport.domain import timing  # with the policy and calendar, already loaded

    return timing.MIN_YEAR <= moment.astimezone(datetime.UTC).year < timing.MAX_YEAR


def bulletin_dues(spec: bulletin.BulletinSpec, framework: Framework, policy: Policy,
                  calendar: BusinessCalendar) -> dict[str, Due | None]:
    """The vendor's deadline per vulnerability id of a bulletin, None where none runs; none
    for a withdrawn advisory, which no longer stands."""
    dues: dict[str, Due | None] = {}
    for vulnerability in spec.vulnerabilities:
        start = clock_start(framework, vulnerability, spec.published_at)
        if spec.withdrawn_at is not None or start is None or not countable(start):
            dues[vulnerability.id] = None
            continue
        dues[vulnerability.id] = due(framework, start, score_of(vulnerability),
                                     vulnerability.severity or spec.severity, policy, calendar)
    return dues


# --- the clock of a bulletin, as its status shows it ----------------------------------------

State = Literal["Pending", "Overdue", "Met", "Late", "FixListed", "NoDeadline"]
#: Why a vulnerability has no deadline (state NoDeadline).
NoDeadlineReason = Literal["AdvisoryWithdrawn", "CvssNone", "NoPatchAvailable",
                           "ClockStartOutOfRange"]


@dataclasses.dataclass(frozen=True)
class Clock:
    """The vendor's remediation clock as the operator's policy sets it (remediationFramework,
    with the policy's calendar for Support Days)."""

    framework: Framework
    policy: Policy
    calendar: BusinessCalendar

    @classmethod
    def of(cls, policy: Policy) -> Clock | None:
        """The clock the policy's remediationFramework names; None without one."""
        if policy.remediation_framework is None:
            return None
        from fluxsupport.domain.calendar import BusinessCalendar  # see the imports above
        return cls(policy.remediation_framework, policy, BusinessCalendar(policy))


@dataclasses.dataclass(frozen=True)
class Tracked:
    """One vulnerability's remediation clock at an instant.

    * Pending: no fix listed, due ahead. Overdue: no fix listed, due passed.
    * Met: the fix was first seen listed at or before the due time; Late: after it.
    * FixListed: the fix was listed when the operator first saw the vulnerability, after its
      due time: when it was listed is unknown, so neither Met nor Late is claimed.
    * NoDeadline: no clock runs (``no_deadline`` says why).
    """

    id: str
    state: State
    score: float | None = None
    due: Due | None = None
    #: When the operator first saw a fixed digest listed for every component of the
    #: vulnerability (Met, Late).
    fix_listed_at: datetime.datetime | None = None
    no_deadline: NoDeadlineReason | None = None
    #: The components the bulletin lists no fixed digest for.
    unfixed: tuple[str, ...] = ()

    @property
    def open(self) -> bool:
        """The deadline runs or has passed and no fix is listed."""
        return self.state in ("Pending", "Overdue")


def unfixed_components(spec: bulletin.BulletinSpec,
                       vulnerability: bulletin.Vulnerability) -> tuple[str, ...]:
    """The components of ``vulnerability`` the bulletin lists no fixed image digest for. The
    vendor's fix is listed when there is none left: a ``fixes`` entry per component (each
    holds at least one digest). A fixed version in ``affectedVersions`` is the upstream
    release, not the vendor's build."""
    fixed = {fix.component for fix in spec.fixes if fix.images}
    return tuple(name for name in vulnerability.components if name not in fixed)


def track(spec: bulletin.BulletinSpec, clock: Clock,
          previous: Mapping[str, Mapping[str, Any]],
          now: datetime.datetime) -> list[Tracked]:
    """Each vulnerability's clock under ``clock`` at ``now``. ``previous``: the entries of
    the stored status by vulnerability id, whose ``fixListedAt`` and ``state`` say what the
    operator saw before (the bulletin records no time for its fixes)."""
    found = []
    for vulnerability in spec.vulnerabilities:
        score = score_of(vulnerability)
        unfixed = unfixed_components(spec, vulnerability)
        start = clock_start(clock.framework, vulnerability, spec.published_at)
        reason: NoDeadlineReason | None = None
        deadline = None
        if spec.withdrawn_at is not None:
            reason = "AdvisoryWithdrawn"
        elif start is None:
            reason = "NoPatchAvailable"
        elif not countable(start):
            reason = "ClockStartOutOfRange"
        else:
            deadline = due(clock.framework, start, score,
                           vulnerability.severity or spec.severity, clock.policy, clock.calendar)
            if deadline is None:
                reason = "CvssNone"
        if deadline is None:
            found.append(Tracked(vulnerability.id, "NoDeadline", score, None, None, reason,
                                 unfixed))
            continue
        if unfixed:
            state: State = "Overdue" if now >= deadline.due_at else "Pending"
            found.append(Tracked(vulnerability.id, state, score, deadline, None, None, unfixed))
            continue
        listed_at = _fix_listed_at(previous.get(vulnerability.id) or {}, deadline, now)
        if listed_at is None:
            found.append(Tracked(vulnerability.id, "FixListed", score, deadline))
        else:
            found.append(Tracked(vulnerability.id,
                                 "Met" if listed_at <= deadline.due_at else "Late", score,
                                 deadline, listed_at))
    return found


def _fix_listed_at(before: Mapping[str, Any], deadline: Due,
                   now: datetime.datetime) -> datetime.datetime | None:
    """When the fix was first seen listed: as stored, else now if the operator saw the
    vulnerability without its fix before or ``now`` is still in time; None when it was
    listed at the first sight, after the due time (FixListed: when is unknown)."""
    from fluxsupport.domain import timing  # with the policy and calendar, already loaded

    stored = before.get("fixListedAt")
    if isinstance(stored, str):
        try:
            return timing.parse_time(stored)
        except ValueError:
            pass  # not ours: decided again below
    if before.get("state") == "FixListed":
        return None
    if before.get("state") in ("Pending", "Overdue", "NoDeadline") or now <= deadline.due_at:
        return now
    return None


# --- what an OSV advisory tells about the clock ---------------------------------------------

def record_osv_facts(spec: dict[str, Any], advisory: Mapping[str, Any]) -> None:
    """Write into each vulnerability of an imported bulletin ``spec`` its CVSS vector and base
    score, and the clock starts the advisory gives: ``identifiedAt`` is the advisory's
    ``published`` (the latest moment the vendor can have learnt of it), ``patchAvailableAt``
    the same when a fixed version is listed (Flux publishes its advisories with the fixed
    release; the distribution's release data has no release dates)."""
    facts: dict[str, Any] = {}
    scored = osv_score(advisory)
    if scored is not None:
        facts["cvssVector"] = scored.vector
        if scored.score is not None:
            facts["cvssScore"] = scored.score
    published = advisory.get("published")
    if published:
        facts["identifiedAt"] = published
        if _lists_a_fix(spec.get("affectedVersions") or []):
            facts["patchAvailableAt"] = published
    for vulnerability in spec.get("vulnerabilities") or []:
        vulnerability.update(facts)


def _lists_a_fix(affected: Sequence[Mapping[str, Any]]) -> bool:
    return any("fixed" in version_range for entry in affected
               for version_range in entry.get("ranges") or [])
