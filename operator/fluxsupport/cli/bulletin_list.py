"""``fluxsupport bulletin list``: the SecurityBulletins in the cluster, with verdict counts.

Registered lazily by :mod:`fluxsupport.cli.bulletin`, whose offline commands must not pay for
(or need) the kubernetes client that this one uses.
"""

from __future__ import annotations

from typing import Annotated, Any

from fluxsupport import constants
from fluxsupport.cli import output
from fluxsupport.cli.case import CLIENT_ERRORS, Kubeconfig, api_error, custom_api


def bulletin_rows(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for item in items:
        status = item.get("status") or {}
        counts = status.get("counts") or {}
        compliant = next((c.get("status") for c in status.get("conditions") or []
                          if c.get("type") == "Compliant"), "")
        rows.append({"name": item["metadata"]["name"],
                     "severity": (item.get("spec") or {}).get("severity", ""),
                     "vulnerable": counts.get("vulnerable", ""),
                     "notAffected": counts.get("notAffected", ""),
                     "fixed": counts.get("fixed", ""), "compliant": compliant,
                     "embargoed": status.get("embargoed", ""),
                     "components": status.get("components") or []})
    return rows


def list_bulletins(
    fmt: Annotated[output.Format, output.OutputOption] = output.Format.table,
    kubeconfig: Kubeconfig = None,
) -> None:
    """List SecurityBulletins with their verdict counts."""
    api = custom_api(kubeconfig)
    try:
        listing = api.list(constants.BULLETIN_PLURAL)
    except CLIENT_ERRORS as error:
        raise api_error(error, "securitybulletins") from error
    rows = bulletin_rows(listing.get("items") or [])
    output.emit([{k: v for k, v in r.items() if k != "components"} for r in rows], fmt,
                [("NAME", "name"), ("SEVERITY", "severity"), ("VULNERABLE", "vulnerable"),
                 ("NOTAFFECTED", "notAffected"), ("FIXED", "fixed"),
                 ("COMPLIANT", "compliant")], rows)
