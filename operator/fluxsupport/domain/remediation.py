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


def base_score(vector: str) -> float:
    """The CVSS base score of a v3.0, v3.1 or v4.0 vector, 0.0 to 10.0."""
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


def bulletin_dues(spec: bulletin.BulletinSpec, framework: Framework, policy: Policy,
                  calendar: BusinessCalendar) -> dict[str, Due | None]:
    """The vendor's deadline per vulnerability id of a bulletin, None where none runs; none
    for a withdrawn advisory, which no longer stands."""
    dues: dict[str, Due | None] = {}
    for vulnerability in spec.vulnerabilities:
        if spec.withdrawn_at is not None:
            dues[vulnerability.id] = None
            continue
        start = clock_start(framework, vulnerability, spec.published_at)
        score = vulnerability.cvss_score
        if score is None and vulnerability.cvss_vector is not None:
            try:
                score = base_score(vulnerability.cvss_vector)
            except CvssError:
                score = None  # the severity decides; the bulletin's reader reports the vector
        dues[vulnerability.id] = None if start is None else due(
            framework, start, score, vulnerability.severity or spec.severity, policy, calendar)
    return dues


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
