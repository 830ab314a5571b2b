"""``fluxsupport report``: every case and every bulletin verdict in the cluster, in one view."""

from __future__ import annotations

import datetime
import pathlib
import zoneinfo
from collections import Counter
from typing import Annotated, Any

import typer
import yaml

from fluxsupport import constants
from fluxsupport.cli import output
from fluxsupport.cli.bulletin_list import bulletin_rows
from fluxsupport.cli.case import CLIENT_ERRORS, Kubeconfig, api_error, case_rows, custom_api
from fluxsupport.cli.sla import remaining
from fluxsupport.domain.calendar import BusinessCalendar
from fluxsupport.domain.policy import Policy, PolicyError, load_policy
from fluxsupport.domain.supportcase import compliance_outcome
from fluxsupport.domain.timing import parse_time


def collect(api: Any, policy: Policy, now: datetime.datetime) -> dict[str, Any]:
    """The report as data: what ``-o json`` prints and the tables show."""
    cases = api.list_cluster_custom_object(constants.GROUP, constants.VERSION,
                                           constants.SUPPORTCASE_PLURAL).get("items") or []
    bulletins = api.list_cluster_custom_object(constants.GROUP, constants.VERSION,
                                               constants.BULLETIN_PLURAL).get("items") or []
    calendar = BusinessCalendar(policy)
    rows = case_rows(cases)
    for row, item in zip(rows, cases, strict=True):
        level = row["level"] if isinstance(row["level"], int) else None
        open_clock = row["state"] in ("Pending", "AtRisk", "Breached")
        row["remaining"] = remaining(row["deadline"], now, calendar, level) \
            if row["deadline"] and open_clock else ""
        resolution = (item.get("status") or {}).get("resolution") or {}
        row["resolutionState"] = resolution.get("state", "")
        row["resolutionDeadline"] = resolution.get("deadline", "")
        row["resolutionRemaining"] = remaining(resolution["deadline"], now, calendar, level) \
            if resolution.get("deadline") and resolution.get("state") in (
                "Pending", "AtRisk", "Breached") else ""
    return {"generatedAt": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "timezone": policy.timezone,
            "preset": policy.preset, "region": policy.region or "",
            "cases": rows, "compliance": monthly_compliance(cases, policy),
            "bulletins": bulletin_rows(bulletins)}


def monthly_compliance(cases: list[dict[str, Any]], policy: Policy) -> list[dict[str, Any]]:
    """Per calendar month of creation (the policy's zone), newest first: the cases that met
    all their targets, missed one, or are not decided yet; the ratio is met / decided."""
    zone = zoneinfo.ZoneInfo(policy.timezone)
    counts: dict[str, Counter[str]] = {}
    for item in cases:
        outcome = compliance_outcome(item.get("status") or {})
        created = (item.get("metadata") or {}).get("creationTimestamp")
        if outcome is None or not created:
            continue
        month = parse_time(created).astimezone(zone).strftime("%Y-%m")
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
    verdicts = [{"bulletin": b["name"], **c,
                 "digest": ", ".join(d[:19] + "…" for d in c.get("digests") or []),
                 "cveVerdicts": ", ".join(f"{v['id']} {v['verdict']}" for v in c.get("cves") or [])}
                for b in data["bulletins"] for c in b["components"]]
    output.table([("BULLETIN", "bulletin"), ("NAMESPACE", "namespace"),
                  ("COMPONENT", "component"), ("VERSION", "version"), ("DIGEST", "digest"),
                  ("VERDICT", "verdict"), ("REASON", "reason"), ("CVES", "cveVerdicts")],
                 verdicts, title="Security bulletin verdicts")
    fixes = [{key: c["remediation"][key] for key in ("name", "newTag", "digest")}
             for c in verdicts if c.get("remediation")]
    if fixes:
        typer.echo("\nRemediation (paste into your kustomization or FluxInstance patch):")
        typer.echo(yaml.safe_dump({"images": fixes}, sort_keys=False).rstrip())


def report(
    fmt: Annotated[output.Format, output.OutputOption] = output.Format.table,
    policy: Annotated[pathlib.Path | None, typer.Option(
        help="Policy YAML, for the business time left; the published defaults otherwise.")
    ] = None,
    kubeconfig: Kubeconfig = None,
) -> None:
    """Cluster-wide table of SupportCases and SecurityBulletin verdicts.

    Example: fluxsupport report -o json
    """
    try:
        loaded = load_policy(policy.read_text() if policy else "", str(policy or "defaults"))
    except (OSError, PolicyError) as error:
        raise typer.BadParameter(str(error), param_hint="--policy") from error
    api = custom_api(kubeconfig)
    try:
        data = collect(api, loaded, datetime.datetime.now(datetime.UTC))
    except CLIENT_ERRORS as error:
        raise api_error(error, "report") from error
    if fmt is output.Format.table:
        render(data)
    else:
        output.emit(data, fmt)
