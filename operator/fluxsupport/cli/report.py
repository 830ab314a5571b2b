"""``fluxsupport report``: every case and every bulletin verdict in the cluster, in one view.

The report is meant to be shared (pasted into a ticket), so bulletins under embargo are left
out unless asked for, and then marked. A kind the user may not read (a namespace user may read
cases but not bulletins) is left out and named, rather than failing the whole report.
"""

from __future__ import annotations

import datetime
import pathlib
import zoneinfo
from collections import Counter
from typing import Annotated, Any

import typer
import yaml

from fluxsupport import constants
from fluxsupport.cli import bulletin_list, output, sla
from fluxsupport.cli import case as case_command
from fluxsupport.domain import calendar as calendar_module
from fluxsupport.domain import casestatus, timing
from fluxsupport.domain import policy as policy_module
from fluxsupport.kube import blocking

#: Exit code when part of the report could not be read: the rest is printed.
PARTIAL = 3


def _list(api: blocking.CustomObjects, plural: str, namespace: str | None,
          unreadable: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The objects of one kind, or None when the API server forbids listing them (recorded
    in ``unreadable``). Any other error fails the report."""
    try:
        listing = api.list(plural, namespace)
    except blocking.CLIENT_ERRORS as error:
        if getattr(error, "status", None) != 403:
            raise
        unreadable.append({"resource": plural, "namespace": namespace or "",
                           "status": 403, "message": blocking.api_message(error)})
        return None
    return list(listing.get("items") or [])


def embargoed(item: dict[str, Any], now: datetime.datetime) -> bool:
    """Whether a bulletin is under embargo: as its status says (the operator's word), or
    as its spec says (a bulletin the operator has not seen yet). An embargoUntil that cannot
    be read counts as an embargo."""
    if (item.get("status") or {}).get("embargoed") is True:
        return True
    until = (item.get("spec") or {}).get("embargoUntil")
    if not until:
        return False
    try:
        return now < timing.parse_time(str(until))
    except ValueError:
        return True


def collect(api: blocking.CustomObjects, policy: policy_module.Policy, now: datetime.datetime,
            namespace: str | None = None, include_embargoed: bool = False) -> dict[str, Any]:
    """The report as data: what ``-o json`` prints and the tables show."""
    return collect_counted(api, policy, now, namespace, include_embargoed)[0]


def collect_counted(api: blocking.CustomObjects, policy: policy_module.Policy,
                    now: datetime.datetime,
                    namespace: str | None = None, include_embargoed: bool = False
                    ) -> tuple[dict[str, Any], int]:
    """The report as data, and how many bulletins under embargo it leaves out. A kind that
    may not be read is None, and listed in ``unreadable``. Bulletins under embargo are left
    out unless ``include_embargoed``; the count is apart from the data, so that nothing in
    a shared report shows that one exists."""
    unreadable: list[dict[str, Any]] = []
    cases = _list(api, constants.SUPPORTCASE_PLURAL, namespace, unreadable)
    bulletins = _list(api, constants.BULLETIN_PLURAL, None, unreadable)
    data: dict[str, Any] = {
        "generatedAt": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "timezone": policy.timezone,
        "preset": policy.preset, "region": policy.region or "",
        "cases": None if cases is None else case_rows_with_time(cases, policy, now),
        "compliance": None if cases is None else monthly_compliance(cases, policy),
        "bulletins": None, "unreadable": unreadable}
    if bulletins is None:
        return data, 0
    shown = [b for b in bulletins if include_embargoed or not embargoed(b, now)]
    rows = bulletin_list.bulletin_rows(shown)
    for row, item in zip(rows, shown, strict=True):
        row["embargoed"] = embargoed(item, now)
        row["embargoUntil"] = (item.get("spec") or {}).get("embargoUntil") or ""
    data["bulletins"] = rows
    return data, len(bulletins) - len(shown)


def case_rows_with_time(cases: list[dict[str, Any]], policy: policy_module.Policy,
                        now: datetime.datetime) -> list[dict[str, Any]]:
    """The case rows with the business time left until each open deadline."""
    calendar = calendar_module.BusinessCalendar(policy)
    rows = case_command.case_rows(cases)
    for row, item in zip(rows, cases, strict=True):
        level = row["level"] if isinstance(row["level"], int) else None
        open_clock = row["state"] in ("Pending", "AtRisk", "Breached")
        row["remaining"] = sla.remaining(row["deadline"], now, calendar, level) \
            if row["deadline"] and open_clock else ""
        resolution = (item.get("status") or {}).get("resolution") or {}
        row["resolutionState"] = resolution.get("state", "")
        row["resolutionDeadline"] = resolution.get("deadline", "")
        row["resolutionRemaining"] = sla.remaining(resolution["deadline"], now, calendar, level) \
            if resolution.get("deadline") and resolution.get("state") in (
                "Pending", "AtRisk", "Breached") else ""
    return rows


def monthly_compliance(cases: list[dict[str, Any]],
                       policy: policy_module.Policy) -> list[dict[str, Any]]:
    """Per calendar month of creation (the policy's zone), newest first: the cases that met
    all their targets, missed one, or are not decided yet; the ratio is met / decided."""
    zone = zoneinfo.ZoneInfo(policy.timezone)
    counts: dict[str, Counter[str]] = {}
    for item in cases:
        outcome = casestatus.compliance_outcome(item.get("status") or {})
        created = (item.get("metadata") or {}).get("creationTimestamp")
        if outcome is None or not created:
            continue
        month = timing.parse_time(created).astimezone(zone).strftime("%Y-%m")
        counts.setdefault(month, Counter())[outcome] += 1
    rows = []
    for month in sorted(counts, reverse=True):
        met, missed = counts[month]["met"], counts[month]["missed"]
        ratio = met / (met + missed) if met + missed else None
        rows.append({"month": month, "met": met, "missed": missed,
                     "pending": counts[month]["pending"], "ratio": ratio,
                     "target": policy.compliance_target,
                     "belowTarget": ratio is not None and ratio < policy.compliance_target})
    return rows


def render(data: dict[str, Any]) -> None:
    if data["cases"] is not None:
        _render_cases(data)
    else:
        typer.echo(f"Support cases: {_not_readable(data, constants.SUPPORTCASE_PLURAL)}")
    if data["bulletins"] is not None:
        _render_bulletins(data["bulletins"])
    else:
        typer.echo(f"Security bulletin verdicts: "
                   f"{_not_readable(data, constants.BULLETIN_PLURAL)}")


def _not_readable(data: dict[str, Any], plural: str) -> str:
    """What stands in a pasted report for a section the user may not read."""
    entry = next(u for u in data["unreadable"] if u["resource"] == plural)
    where = f" in namespace {entry['namespace']}" if entry["namespace"] else ""
    return f"not readable with these credentials{where} (HTTP {entry['status']}); left out."


def _render_cases(data: dict[str, Any]) -> None:
    output.table([("NAMESPACE", "namespace"), ("CASE", "name"), ("LEVEL", "level"),
                  ("ASSESSED", "assessedLevel"), ("COMPONENT", "component"),
                  ("STATE", "state"), ("DUE (UTC)", "deadline"),
                  ("BUSINESS TIME LEFT", "remaining"), ("IN SCOPE", "scopeReason"),
                  ("SEVERITY CHECK", "severityReason"), ("TICKET", "ticket"),
                  ("TICKET STATE", "ticketState")],
                 data["cases"], title=f"Support cases (business time in {data['timezone']})")
    resolutions = [row for row in data["cases"] if row.get("resolutionDeadline")]
    if resolutions:
        output.table([("NAMESPACE", "namespace"), ("CASE", "name"), ("LEVEL", "level"),
                      ("RESOLUTION", "resolutionState"),
                      ("RESOLVE BY (UTC)", "resolutionDeadline"),
                      ("BUSINESS TIME LEFT", "resolutionRemaining")],
                     resolutions, title="Resolution targets")
    compliance = [{**row, "share": "" if row["ratio"] is None else f"{row['ratio']:.1%}",
                   "goal": f"{row['target']:.0%}",
                   "verdict": "" if row["ratio"] is None else
                   ("below target" if row["belowTarget"] else "on target")}
                  for row in data.get("compliance") or []]
    output.table([("MONTH", "month"), ("MET", "met"), ("MISSED", "missed"),
                  ("PENDING", "pending"), ("COMPLIANCE", "share"), ("TARGET", "goal"),
                  ("VERDICT", "verdict")], compliance,
                 title="Monthly compliance (cases opened per month that met their targets)")


def _render_bulletins(bulletins: list[dict[str, Any]]) -> None:
    """With --include-embargoed, a bulletin under embargo is marked where it is named: its
    rows (EMBARGOED next to the CVE ids, and the end of the embargo), the table's title and
    a remediation block of its own."""
    verdicts = []
    for item in bulletins:
        mark = "EMBARGOED " if item["embargoed"] else ""
        for c in item["components"]:
            cves = ", ".join(f"{v['id']} {v['verdict']}" for v in c.get("cves") or [])
            verdicts.append({
                "bulletin": item["name"], **c, "embargoed": item["embargoed"],
                "until": item["embargoUntil"] if item["embargoed"] else "",
                "digest": ", ".join(d[:19] + "…" for d in c.get("digests") or []),
                "cveVerdicts": mark + cves})
    columns = [("BULLETIN", "bulletin"), ("NAMESPACE", "namespace"),
               ("COMPONENT", "component"), ("VERSION", "version"), ("DIGEST", "digest"),
               ("VERDICT", "verdict"), ("REASON", "reason"), ("CVES", "cveVerdicts")]
    under_embargo = sum(1 for b in bulletins if b["embargoed"])
    title = "Security bulletin verdicts"
    if under_embargo:
        columns.insert(1, ("EMBARGOED UNTIL", "until"))
        title += f" ({under_embargo} bulletin(s) under EMBARGO: do not share those rows)"
    output.table(columns, verdicts, title=title)
    _remediation([c for c in verdicts if not c["embargoed"]],
                 "Remediation (paste into your kustomization or FluxInstance patch):")
    _remediation([c for c in verdicts if c["embargoed"]],
                 "Remediation from bulletins under EMBARGO (install it; do not share it before "
                 "the embargo ends):")


def _remediation(verdicts: list[dict[str, Any]], heading: str) -> None:
    fixes = [{key: c["remediation"][key] for key in ("name", "newTag", "digest")}
             for c in verdicts if c.get("remediation")]
    if fixes:
        typer.echo(f"\n{heading}")
        typer.echo(yaml.safe_dump({"images": fixes}, sort_keys=False).rstrip())


def report(
    fmt: Annotated[output.Format, output.OutputOption] = output.Format.table,
    policy: Annotated[pathlib.Path | None, typer.Option(
        help="Policy YAML, for the business time left; the published defaults otherwise.")
    ] = None,
    namespace: Annotated[str | None, typer.Option(
        "--namespace", "-n", help="Only the cases of this namespace (a namespace user may "
                                  "not list them in every namespace).")] = None,
    include_embargoed: Annotated[bool, typer.Option(
        "--include-embargoed", help="Show bulletins under embargo too, marked EMBARGOED "
                                    "(embargoed: true in -o json).")] = False,
    kubeconfig: case_command.Kubeconfig = None,
) -> None:
    """Cluster-wide table of SupportCases and SecurityBulletin verdicts.

    Bulletins under embargo are left out, since the report is meant to be shared; with
    --include-embargoed they are shown and marked. What the credentials may not read
    (HTTP 403) is left out and named, and the rest is printed.

    Exit codes: 0 the whole report, 3 a part was not readable (named on stderr and in the
    report), 1 nothing readable or the cluster unreachable, 2 invalid input.

    Example: fluxsupport report -o json
    """
    try:
        loaded = policy_module.load_policy(policy.read_text() if policy else "",
                                           str(policy or "defaults"))
    except (OSError, policy_module.PolicyError) as error:
        raise typer.BadParameter(str(error), param_hint="--policy") from error
    api = case_command.custom_api(kubeconfig)
    now = datetime.datetime.now(datetime.UTC)
    try:
        data, left_out = collect_counted(api, loaded, now, namespace, include_embargoed)
    except case_command.CLIENT_ERRORS as error:
        raise case_command.api_error(error, "report") from error
    unreadable = data["unreadable"]
    if data["cases"] is None and data["bulletins"] is None:
        raise output.fail("nothing in the report is readable with these credentials: "
                          + "; ".join(u["message"] for u in unreadable), 1)
    if fmt is output.Format.table:
        render(data)
    else:
        output.emit(data, fmt)
    if left_out:
        typer.echo(f"note: {left_out} bulletin(s) under embargo left out; "
                   "--include-embargoed shows them, marked", err=True)
    for entry in unreadable:
        typer.echo(f"warning: {entry['resource']} left out: {entry['message']}", err=True)
    if unreadable:
        raise typer.Exit(PARTIAL)
