"""The SLA policy: calendar, targets per level and the warning point.

One operator-wide policy, read from YAML (a file, a ConfigMap key or Helm values). A
``preset`` supplies every value of one published support policy: the Technical Support
Policy (the default, so an empty document is valid) or the Support Policy 2026 with its
``region``. Keys written in the document override the preset's values (docs/sla-policy.md).
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import importlib.metadata
import ipaddress
import re
import urllib.parse
import zoneinfo
from typing import Annotated, Any, Literal

import holidays
import pydantic

from fluxsupport.domain import holidaycountries

#: Severity names as the CRD spells them, with their level.
LEVELS: dict[str, int] = {"Urgent": 1, "High": 2, "Medium": 3, "Low": 4}
LEVEL_NAMES: dict[int, str] = {level: name for name, level in LEVELS.items()}

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

_ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")
#: A component name as the CRDs spell it: a DNS label.
_COMPONENT = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_DURATION = re.compile(r"^(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")


class PolicyError(ValueError):
    """The policy document is invalid; the message names the field and what to fix."""


def parse_duration(value: Any) -> int:
    """Seconds from ``4h``, ``1h30m``, ``45s``, ``2d`` (24-hour days) or a plain number."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 4h or 30s, got {value!r}")
    if isinstance(value, int | float):
        seconds = int(value)
    else:
        match = _DURATION.match(str(value).strip())
        if not match or not any(match.groupdict().values()):
            raise ValueError(f"expected a duration such as 4h, 1h30m or 30s, got {value!r}")
        parts = {key: int(number or 0) for key, number in match.groupdict().items()}
        seconds = parts["d"] * 86400 + parts["h"] * 3600 + parts["m"] * 60 + parts["s"]
    if seconds <= 0:
        raise ValueError(f"a target must be positive, got {value!r}")
    return seconds


def _time_of_day(value: Any) -> datetime.time | None:
    """``HH:MM``; ``24:00`` means the end of the day and is returned as None."""
    text = str(value).strip()
    if text == "24:00":
        return None
    try:
        return datetime.time.fromisoformat(text)
    except ValueError as error:
        raise ValueError(f"expected a time of day such as 09:00, got {value!r}") from error


Seconds = Annotated[int, pydantic.BeforeValidator(parse_duration)]


class BusinessHours(pydantic.BaseModel):
    """Weekly opening hours in the policy's time zone. ``alwaysOpen`` means 24x7."""

    model_config = pydantic.ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    always_open: bool = pydantic.Field(False, alias="alwaysOpen")
    days: tuple[str, ...] = ("Mon", "Tue", "Wed", "Thu", "Fri")
    start: str = "09:00"
    end: str = "18:00"

    @pydantic.field_validator("start", "end", mode="before")
    @classmethod
    def _sexagesimal(cls, value: Any) -> Any:
        """YAML 1.1 reads an unquoted 17:00 as the number 1020 (base 60): take it back."""
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 1440:
            return f"{value // 60:02d}:{value % 60:02d}"
        return value

    @pydantic.field_validator("days")
    @classmethod
    def _known_days(cls, days: tuple[str, ...]) -> tuple[str, ...]:
        normalised = tuple(day[:3].capitalize() for day in days)
        unknown = [day for day in normalised if day not in WEEKDAYS]
        if unknown:
            raise ValueError(f"unknown weekday {unknown[0]!r}; use Mon, Tue, ... Sun")
        if not normalised:
            raise ValueError("at least one business day is needed")
        return tuple(sorted(set(normalised), key=WEEKDAYS.index))

    @pydantic.model_validator(mode="after")
    def _start_before_end(self) -> BusinessHours:
        start, end = _time_of_day(self.start), _time_of_day(self.end)
        if start is None:
            raise ValueError("start must be before 24:00")
        if end is not None and end <= start:
            raise ValueError(f"end {self.end} must be after start {self.start}; "
                             "windows that cross midnight are not supported")
        return self

    @property
    def weekdays(self) -> frozenset[int]:
        return frozenset(WEEKDAYS.index(day) for day in self.days)

    @property
    def opening(self) -> datetime.time:
        opening = _time_of_day(self.start)
        assert opening is not None
        return opening

    @property
    def closing(self) -> datetime.time | None:
        """None means midnight at the end of the day."""
        return _time_of_day(self.end)


class Targets(pydantic.BaseModel):
    """First-response budgets in business time, per level."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    Urgent: Seconds = 4 * 3600
    High: Seconds = 8 * 3600
    Medium: Seconds = 12 * 3600
    Low: Seconds = 24 * 3600

    def for_level(self, level: int) -> int:
        seconds: int = getattr(self, LEVEL_NAMES[level])
        return seconds


class ResolutionTargets(pydantic.BaseModel):
    """Resolution budgets per level; None where the policy defines none."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    Urgent: Seconds | None = None
    High: Seconds | None = None
    Medium: Seconds | None = None
    Low: Seconds | None = None

    def for_level(self, level: int) -> int | None:
        seconds: int | None = getattr(self, LEVEL_NAMES[level])
        return seconds


class Portal(pydantic.BaseModel):
    """The helpdesk's API: the primary channel."""

    model_config = pydantic.ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    enabled: bool = False
    type: Literal["rt"] = "rt"
    #: Base URL of the helpdesk's web interface (RT: its WebBaseURL plus WebPath).
    url: str = ""
    queue: str = "General"
    sync_interval: Seconds = pydantic.Field(60, alias="syncInterval")
    timeout: Seconds = 10
    #: PEM certificates of the CA that signed the portal's https certificate, for a helpdesk
    #: behind a private CA; empty: the system's trusted CAs.
    ca_bundle: str = pydantic.Field("", alias="caBundle")

    @pydantic.model_validator(mode="after")
    def _url_when_enabled(self) -> Portal:
        if self.enabled and not re.match(r"^https?://[^/\s]+", self.url):
            raise ValueError("an enabled portal needs url: http(s)://host[:port]/[path/]")
        if self.ca_bundle and not self.url.startswith("https://"):
            raise ValueError("caBundle is for an https:// url")
        return self

    @pydantic.field_validator("ca_bundle")
    @classmethod
    def _pem(cls, bundle: str) -> str:
        if bundle and "-----BEGIN CERTIFICATE-----" not in bundle:
            raise ValueError("caBundle holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
        return bundle

    @pydantic.field_validator("url")
    @classmethod
    def _safe_url(cls, url: str) -> str:
        if url:
            _check_portal_url(url)
        return url

    @property
    def base_url(self) -> str:
        return self.url if self.url.endswith("/") else self.url + "/"


def _check_portal_url(url: str) -> None:
    """Refuse a URL that would expose the RT token or a password. The URL is written into
    every case's status (its ticket's address), into errors and Events: credentials in it
    are refused, and the message does not repeat them. Plain http carries the token in
    clear, so it is for a portal on the same host only (a loopback address), as
    email.tls: none is for a relay there."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - parsing it raises for a port that is not a number
    except ValueError as error:
        raise ValueError(f"url is not a URL ({error})") from None
    if parts.username is not None or parts.password is not None:
        raise ValueError("url holds credentials (user:password@): they would be written "
                         "into every case's status and Events; remove them, the operator "
                         "authenticates with the Secret's portal-token")
    if parts.scheme == "http" and not _loopback(host):
        raise ValueError(f"url uses http://, which sends the RT token in clear to {host}: "
                         "use https://, or http:// only to a loopback address "
                         "(127.0.0.1, [::1], localhost)")


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Email(pydantic.BaseModel):
    """SMTP submission: the fallback in an emergency when the portal cannot be reached."""

    model_config = pydantic.ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    enabled: bool = False
    host: str = ""
    port: int = pydantic.Field(587, ge=1, le=65535)
    #: STARTTLS after connecting, TLS from the first byte (port 465), or none (for a relay on
    #: the same host or node: the password would cross the network in clear).
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    sender: str = pydantic.Field("", alias="from")
    to: str = ""
    timeout: Seconds = 10

    @pydantic.model_validator(mode="after")
    def _complete_when_enabled(self) -> Email:
        if self.enabled:
            missing = [name for name, value in (("host", self.host), ("from", self.sender),
                                                ("to", self.to)) if not value]
            if missing:
                raise ValueError(f"enabled email needs {', '.join(missing)}")
            for name, value in (("from", self.sender), ("to", self.to)):
                if not _ADDRESS.match(value):
                    raise ValueError(f"{name}: {value!r} is not an email address")
        return self


class Fallback(pydantic.BaseModel):
    """When a case may go by email instead of the portal."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    #: The policy's emergencies: Level 1 and 2.
    levels: tuple[int, ...] = (1, 2)
    #: The portal has been failing for this long since the first attempt, ...
    after: Seconds = 300
    #: ... or this many attempts failed, whichever comes first.
    attempts: int = pydantic.Field(3, ge=1)

    @pydantic.field_validator("levels")
    @classmethod
    def _known_levels(cls, levels: tuple[int, ...]) -> tuple[int, ...]:
        unknown = [level for level in levels if level not in LEVEL_NAMES]
        if unknown:
            raise ValueError(f"unknown level {unknown[0]}; levels are 1 to 4")
        return levels


class Channels(pydantic.BaseModel):
    """Where cases go: the portal first, email as the fallback. Both off by default."""

    model_config = pydantic.ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    #: The cluster's name in every submission, so the support team knows where it is from.
    cluster: str = ""
    #: Secret in the operator's namespace with portal-token, smtp-username, smtp-password.
    secret_name: str = pydantic.Field("fluxsupport-channels", alias="secretName")
    portal: Portal = pydantic.Field(default_factory=Portal)
    email: Email = pydantic.Field(default_factory=Email)
    fallback: Fallback = pydantic.Field(default_factory=Fallback)

    @property
    def enabled(self) -> bool:
        return self.portal.enabled or self.email.enabled


class SourceRef(pydantic.BaseModel):
    """A Flux source whose artifact holds the release data: Flux does the fetching, so a
    mirror in an air-gapped cluster works the same."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    kind: Literal["GitRepository", "OCIRepository"]
    name: str = pydantic.Field(min_length=1, max_length=253)
    #: One of the operator's --flux-namespace namespaces (it may read sources there only);
    #: empty means the first of them.
    namespace: str = ""


class Updates(pydantic.BaseModel):
    """Where the operator finds the distribution's release data for the FluxUpdateCheck:
    exactly one of configMap and sourceRef."""

    model_config = pydantic.ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    #: ConfigMap in the operator's namespace: key VERSION, and one key
    #: ``<version>-<variant>.yaml`` per file of images/<version>/<variant>.yaml (docs/updates.md).
    config_map: str | None = pydantic.Field(None, alias="configMap", min_length=1,
                                            max_length=253,
                                            pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    source_ref: SourceRef | None = pydantic.Field(None, alias="sourceRef")
    #: The directory of the artifact holding VERSION and <version>/<variant>.yaml.
    path: str = "images"
    #: The 2026 policy backports fixes to the three most recent minors.
    supported_minors: int = pydantic.Field(3, alias="supportedMinors", ge=1)

    @pydantic.model_validator(mode="after")
    def _one_source(self) -> Updates:
        if (self.config_map is None) == (self.source_ref is None):
            raise ValueError("set exactly one of configMap and sourceRef")
        return self


class Advisories(pydantic.BaseModel):
    """The advisory feed: public OSV advisories in a Flux source artifact become
    SecurityBulletins without a person (docs/advisories.md)."""

    model_config = pydantic.ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    source_ref: SourceRef = pydantic.Field(alias="sourceRef")
    #: The artifact's directory searched for ``*.json`` at any depth, as the GitHub Advisory
    #: Database keeps them (advisories/github-reviewed/<year>/<month>/<id>/<id>.json);
    #: ``.`` is the whole artifact.
    path: str = "advisories"


class EscalationContacts(pydantic.BaseModel):
    """Who is told, by email, when a case or bulletin reaches a tier; empty: nobody."""

    model_config = pydantic.ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    #: Tier 1: a response or resolution target is at risk.
    account_manager: tuple[str, ...] = pydantic.Field((), alias="accountManager",
                                                      max_length=20)
    #: Tier 2: a case is not progressing.
    head_of_customer_success: tuple[str, ...] = pydantic.Field(
        (), alias="headOfCustomerSuccess", max_length=20)
    #: Tier 3: repeated Severity 1 cases, or an unmitigated critical vulnerability.
    executive_sponsor: tuple[str, ...] = pydantic.Field((), alias="executiveSponsor",
                                                        max_length=20)

    @pydantic.field_validator("account_manager", "head_of_customer_success",
                              "executive_sponsor")
    @classmethod
    def _addresses(cls, addresses: tuple[str, ...]) -> tuple[str, ...]:
        for address in addresses:
            if not _ADDRESS.match(address):
                raise ValueError(f"{address!r} is not an email address")
        return addresses

    def for_tier(self, tier: int) -> tuple[str, ...]:
        return {1: self.account_manager, 2: self.head_of_customer_success,
                3: self.executive_sponsor}[tier]

    @property
    def any(self) -> bool:
        return bool(self.account_manager or self.head_of_customer_success
                    or self.executive_sponsor)


class RepeatedSeverity1(pydantic.BaseModel):
    """Tier 3 for repeated Severity 1 cases: ``count`` opened within ``window``."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    #: Severity 1 cases, this one included; 2 is the least that is "repeated".
    count: int = pydantic.Field(2, ge=2, le=100)
    #: Wall-clock time (``30d`` is 30 days of 24 hours), not business time.
    window: Seconds = 30 * 86400
    #: Which cases count together: every case the operator sees (``cluster``), or those of
    #: the case's namespace.
    scope: Literal["cluster", "namespace"] = "cluster"


class Escalation(pydantic.BaseModel):
    """The 2026 policy's three escalation tiers (domain/escalation.py, docs/sla-policy.md).
    The defaults are the ``support-policy-2026`` preset's."""

    model_config = pydantic.ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    #: False turns the tiers off, for example those of the 2026 preset.
    enabled: bool = True
    #: Tier 2: business time on the policy's calendar (Support Hours) without a reply from
    #: support after the first response, time waiting on the customer excluded.
    not_progressing_after: Seconds = pydantic.Field(2 * 8 * 3600, alias="notProgressingAfter")
    repeated_severity1: RepeatedSeverity1 = pydantic.Field(default_factory=RepeatedSeverity1,
                                                           alias="repeatedSeverity1")
    contacts: EscalationContacts = pydantic.Field(default_factory=EscalationContacts)
    #: Post a comment (visible to support, not to the requestor) on the ticket per tier reached.
    comment_on_ticket: bool = pydantic.Field(True, alias="commentOnTicket")


class RootCauseAnalysis(pydantic.BaseModel):
    """A written root-cause analysis owed after the resolution (domain/rca.py)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    #: The levels that are owed one (Severity 1 and 2 in the 2026 policy).
    levels: tuple[int, ...] = (1, 2)
    #: Calendar days after the resolution, at the same wall-clock time in the policy's zone.
    days: int = pydantic.Field(10, ge=1, le=365)

    @pydantic.field_validator("levels")
    @classmethod
    def _known_levels(cls, levels: tuple[int, ...]) -> tuple[int, ...]:
        unknown = [level for level in levels if level not in LEVEL_NAMES]
        if unknown:
            raise ValueError(f"unknown level {unknown[0]}; levels are 1 to 4")
        if not levels:
            raise ValueError("at least one level; leave rootCauseAnalysis out for none")
        return tuple(sorted(set(levels)))


Preset = Literal["technical-support-policy", "support-policy-2026"]
DEFAULT_PRESET: Preset = "technical-support-policy"
PRESET_2026: Preset = "support-policy-2026"
Region = Literal["AMER", "EMEA", "APAC"]
RemediationFramework = Literal["standard", "upstream-patch"]

#: The zone and holiday calendar of each region of the 2026 policy. The page names zones by
#: abbreviation (EST, GMT or CET, AEST); customers mean the local civil time with its DST.
REGIONS: dict[str, dict[str, str]] = {
    "AMER": {"timezone": "America/New_York", "holidays": "US"},
    "EMEA": {"timezone": "Europe/London", "holidays": "GB-ENG"},
    "APAC": {"timezone": "Australia/Sydney", "holidays": "AU-NSW"},
}

#: One Support Day is one full 09:00-17:00 Support-Hours day: 8 Support Hours.
SUPPORT_DAY = 8 * 3600


def preset_values(preset: str, region: str | None) -> dict[str, Any]:
    """The policy document a preset stands for (aliases as keys); {} for the default, whose
    values are the model's defaults."""
    if preset != PRESET_2026:
        return {}
    if region is None:
        raise ValueError(f"preset {PRESET_2026} needs region: AMER, EMEA or APAC")
    return {
        **REGIONS[region],
        "businessHours": {"alwaysOpen": False, "days": list(WEEKDAYS[:5]),
                          "start": "09:00", "end": "17:00"},
        "targets": {"Urgent": 3600, "High": 4 * 3600, "Medium": SUPPORT_DAY,
                    "Low": 2 * SUPPORT_DAY},
        "resolutionTargets": {"Urgent": 4 * 3600, "High": 8 * 3600, "Medium": 2 * SUPPORT_DAY,
                              "Low": 5 * SUPPORT_DAY},
        "alwaysOpenLevels": [1],
        "complianceTarget": 0.95,
        "workaroundLowersSeverity": True,
        # The page's headline commitment, "72 hours to remediate a critical vulnerability".
        "remediationFramework": "standard",
        # The three tiers of the page's escalation path, with the defaults of the model
        # (docs/sla-policy.md, "Escalation"); contacts are the customer's to write.
        "escalation": {"enabled": True},
        # "For every confirmed Severity 1 and Severity 2 incident ... within ten calendar days".
        "rootCauseAnalysis": {"levels": [1, 2], "days": 10},
        # The distribution bundles the Flux Operator's MCP server (domain/scope.py).
        "addOns": ["flux-operator-mcp"],
    }


class Policy(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    #: Which published policy supplies the values of the keys the document leaves out.
    preset: Preset = DEFAULT_PRESET
    #: The customer's region under the 2026 preset: its zone and holiday calendar.
    region: Region | None = None
    timezone: str = "Europe/London"
    #: python-holidays country and optional subdivision, ``GB-ENG``; empty for none.
    holidays: str = "GB-ENG"
    closed_dates: tuple[datetime.date, ...] = pydantic.Field((), alias="closedDates")
    business_hours: BusinessHours = pydantic.Field(default_factory=BusinessHours,
                                                   alias="businessHours")
    targets: Targets = pydantic.Field(default_factory=Targets)
    resolution_targets: ResolutionTargets = pydantic.Field(default_factory=ResolutionTargets,
                                                           alias="resolutionTargets")
    #: Levels whose clocks run 24x7 whatever the business hours (Severity 1 in 2026).
    always_open_levels: tuple[int, ...] = pydantic.Field((), alias="alwaysOpenLevels")
    #: Share of a month's cases that must meet their targets.
    compliance_target: float = pydantic.Field(0.95, alias="complianceTarget", gt=0, le=1)
    #: A Level 2 case with spec.workaround true is handled as Level 3.
    workaround_lowers_severity: bool = pydantic.Field(False, alias="workaroundLowersSeverity")
    #: Share of the budget after which a case is at risk.
    warning_ratio: float = pydantic.Field(0.75, alias="warningRatio", gt=0, lt=1)
    channels: Channels = pydantic.Field(default_factory=Channels)
    #: The product-updates check; None leaves it off (no FluxUpdateCheck is written).
    updates: Updates | None = None
    #: The advisory feed; None leaves it off (no bulletin is written without a person).
    advisories: Advisories | None = None
    #: Which of the 2026 policy's CVE remediation frameworks the subscription names
    #: (domain/remediation.py); None: the vendor's remediation times are not tracked.
    remediation_framework: RemediationFramework | None = pydantic.Field(
        None, alias="remediationFramework")
    #: The escalation tiers (domain/escalation.py); None: no case or bulletin escalates.
    escalation: Escalation | None = None
    #: Root-cause analyses owed after resolution (domain/rca.py); None: none are tracked.
    root_cause_analysis: RootCauseAnalysis | None = pydantic.Field(None,
                                                                   alias="rootCauseAnalysis")
    #: Components beyond the distribution's controllers and the Flux Operator that cases may
    #: be about (domain/scope.py): the add-ons the policy covers.
    add_ons: tuple[Annotated[str, pydantic.Field(max_length=63, pattern=_COMPONENT)], ...] = \
        pydantic.Field((), alias="addOns", max_length=64)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        """The preset's values under the document's own: a key written wins, and a mapping
        written (businessHours, targets, resolutionTargets) wins key by key."""
        if not isinstance(data, dict):
            return data
        written = dict(data)
        for name, field in cls.model_fields.items():
            if field.alias and name in written and field.alias not in written:
                written[field.alias] = written.pop(name)
        preset, region = written.get("preset", DEFAULT_PRESET), written.get("region")
        if preset not in (DEFAULT_PRESET, PRESET_2026) or (
                region is not None and region not in REGIONS):
            return written  # the field validators say what is wrong
        if region is not None and preset != PRESET_2026:
            raise ValueError(f"region applies to preset {PRESET_2026} only")
        merged = preset_values(preset, region)
        for key, value in written.items():
            base = merged.get(key)
            merged[key] = {**base, **value} if isinstance(base, dict) and isinstance(
                value, dict) else value
        return merged

    @pydantic.field_validator("add_ons")
    @classmethod
    def _not_other(cls, add_ons: tuple[str, ...]) -> tuple[str, ...]:
        if "other" in add_ons:
            raise ValueError("other marks third-party tools, which no policy covers")
        return tuple(dict.fromkeys(add_ons))

    @pydantic.model_validator(mode="after")
    def _contacts_need_email(self) -> Policy:
        if (self.escalation is not None and self.escalation.enabled
                and self.escalation.contacts.any and not self.channels.email.enabled):
            raise ValueError(
                "escalation.contacts are emailed through channels.email: enable it (with the "
                "portal enabled, channels.fallback.levels: [] still keeps cases off email), "
                "or leave the contacts out")
        return self

    @pydantic.field_validator("always_open_levels")
    @classmethod
    def _known_open_levels(cls, levels: tuple[int, ...]) -> tuple[int, ...]:
        unknown = [level for level in levels if level not in LEVEL_NAMES]
        if unknown:
            raise ValueError(f"unknown level {unknown[0]}; levels are 1 to 4")
        return tuple(sorted(set(levels)))

    @pydantic.field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        try:
            zoneinfo.ZoneInfo(zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"unknown IANA time zone {zone!r}, e.g. Europe/London") from error
        return zone

    @pydantic.field_validator("holidays")
    @classmethod
    def _known_calendar(cls, code: str) -> str:
        if code:
            holiday_calendar(code, 2026)
        return code

    def fingerprint(self) -> str:
        """Short hash of everything that moves a case's deadline, plus the holidays release.

        The keys added with the presets count only when they differ from their defaults, so
        that the default policy keeps the fingerprint its cases were stored with. The
        remediation framework moves bulletins' deadlines, never a case's: it is left out,
        and so are the escalation tiers, the root-cause analyses and the add-ons in scope,
        which read the deadlines but move none.
        """
        unset = {name for name in _PRESET_KEYS
                 if getattr(self, name) == type(self).model_fields[name].get_default(
                     call_default_factory=True)}
        return _fingerprint(self.model_dump_json(
            by_alias=True, exclude={"channels", "compliance_target", "updates", "advisories",
                                     "remediation_framework", "escalation",
                                     "root_cause_analysis", "add_ons", *unset}))


_PRESET_KEYS = ("preset", "region", "resolution_targets", "always_open_levels",
                "workaround_lowers_severity")


@functools.lru_cache(maxsize=16)
def _fingerprint(policy_json: str) -> str:
    # A holidays upgrade can add holidays and so move deadlines: it is part of the calendar.
    material = policy_json + importlib.metadata.version("holidays")
    return hashlib.sha256(material.encode()).hexdigest()[:12]


def holiday_calendar(code: str, years: int | range) -> holidays.HolidayBase:
    """python-holidays for ``CC`` or ``CC-SUBDIV``; ValueError names what is unknown."""
    holidaycountries.defer_index()
    country, _, subdivision = code.partition("-")
    try:
        return holidays.country_holidays(country.upper(), subdiv=subdivision or None,
                                         years=years, observed=True, language="en_US")
    except NotImplementedError as error:
        raise ValueError(f"unknown holiday country {country!r} (ISO 3166-1 alpha-2, "
                         "e.g. GB, US, DE)") from error
    except ValueError as error:
        raise ValueError(f"unknown holiday calendar {code!r}: {error}") from error


def load_policy(text: str, source: str = "policy") -> Policy:
    """Parse a YAML policy; PolicyError says which field is wrong and why."""
    data: Any = {}
    if text.strip():
        import yaml  # only for a written policy: `sla due` with the defaults starts faster

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise PolicyError(f"{source}: not valid YAML: {error}") from error
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyError(
            f"{source}: expected a mapping of policy fields, got {type(data).__name__}")
    return validate_policy(data, source)


def validate_policy(data: dict[str, Any], source: str = "policy") -> Policy:
    """The policy of a parsed document; PolicyError says which field is wrong and why."""
    try:
        return Policy.model_validate(data)
    except pydantic.ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or '(root)'}: {item['msg']}"
            for item in error.errors())
        raise PolicyError(f"{source}: {problems}") from error
