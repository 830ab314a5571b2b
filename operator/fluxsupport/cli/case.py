"""``fluxsupport case``: file and follow SupportCases in the cluster."""

from __future__ import annotations

import datetime
import pathlib
import secrets
import time
from typing import Annotated, Any, ClassVar

import typer

from fluxsupport import constants
from fluxsupport.cli import output
from fluxsupport.cli.lazy import Lazy, LazyGroup
from fluxsupport.domain import caselifecycle, conditions, timing
from fluxsupport.kube import blocking

#: What a failed API call raises: an HTTP error, or urllib3's give-up after its retries.
CLIENT_ERRORS = blocking.CLIENT_ERRORS
PLURAL = constants.SUPPORTCASE_PLURAL


class _Group(LazyGroup):
    lazy: ClassVar = {"show": Lazy("fluxsupport.cli.case_show:show",
                                   "Print a case's ticket and its thread from the support "
                                   "portal.")}


app = typer.Typer(cls=_Group, help="Create, answer, close and list SupportCases.",
                  no_args_is_help=True)

Kubeconfig = Annotated[pathlib.Path | None, typer.Option(
    "--kubeconfig", envvar="KUBECONFIG", help="Kubeconfig file (like kubectl).")]
Namespace = Annotated[str, typer.Option("--namespace", "-n", help="The case's namespace.")]
At = Annotated[str | None, typer.Option(
    "--at", help="RFC 3339 time with offset; now when omitted.")]
By = Annotated[str | None, typer.Option("--by", help="Who did it (free text).")]


def custom_api(kubeconfig: pathlib.Path | None) -> blocking.CustomObjects:
    if kubeconfig is not None and not kubeconfig.exists():
        raise output.fail(f"kubeconfig {kubeconfig} does not exist")
    try:
        return blocking.custom_objects(kubeconfig)
    except blocking.ConfigError as error:
        raise output.fail(f"no usable kubeconfig: {error}", 1) from error


def api_error(error: Exception, what: str) -> typer.Exit:
    if isinstance(error, blocking.ApiError):
        if error.status == 404:
            return output.fail(f"{what} not found")
        if error.status == 422:
            return output.fail(f"{what} rejected by the API server: {blocking.api_message(error)}")
        return output.fail(f"{what}: HTTP {error.status} {blocking.api_message(error)}", 1)
    return output.fail(f"{what}: cannot reach the cluster ({error})", 1)


def _time(value: str | None) -> str:
    now = datetime.datetime.now(datetime.UTC)
    if value is None:
        return conditions.rfc3339(now)
    try:
        moment = timing.parse_time(value)
    except timing.TimeOutOfRange as error:
        raise typer.BadParameter(f"{value!r} is out of range: {error}",
                                 param_hint="--at") from error
    except ValueError as error:
        raise typer.BadParameter(f"{value!r} is not an RFC 3339 time with an offset ({error})",
                                 param_hint="--at") from error
    if moment > now + caselifecycle.CLOCK_SKEW:
        # The operator would ignore it (AnnotationInFuture): refuse it here already.
        raise typer.BadParameter(f"{value!r} is in the future; it must be when it happened",
                                 param_hint="--at")
    return conditions.rfc3339(moment)


def _patch(api: blocking.CustomObjects, namespace: str, name: str, metadata: dict[str, Any],
           verb: str) -> None:
    try:
        api.patch(PLURAL, name, {"metadata": metadata}, namespace)
    except CLIENT_ERRORS as error:
        if isinstance(error, blocking.ApiError) and error.status == 409:
            raise output.fail(f"supportcase {namespace}/{name} changed while it was being "
                              f"{verb}; run the command again", 1) from error
        raise api_error(error, f"supportcase {namespace}/{name}") from error
    typer.echo(f"supportcase {namespace}/{name} {verb}")


def _annotate(kubeconfig: pathlib.Path | None, namespace: str, name: str,
              annotations: dict[str, str | None], verb: str) -> None:
    # An option left out writes nothing: null in a merge patch would delete what is there.
    given = {key: value for key, value in annotations.items() if value is not None}
    _patch(custom_api(kubeconfig), namespace, name, {"annotations": given}, verb)


@app.command()
def respond(name: str, namespace: Namespace = "default", at: At = None, by: By = None,
            force: Annotated[bool, typer.Option(
                "--force", help="Replace a first response that is already recorded.")] = False,
            kubeconfig: Kubeconfig = None) -> None:
    """Record the first response (annotation support.fluxcd.controlplane.io/responded-at).

    The first response is written once: a second call exits 1 unless --force. Without --by
    an earlier responded-by is kept.

    Example: fluxsupport case respond helmreleases-stuck -n team-a --by alice
    """
    when = _time(at)
    api = custom_api(kubeconfig)
    what = f"supportcase {namespace}/{name}"
    try:
        obj = api.get(PLURAL, name, namespace)
    except CLIENT_ERRORS as error:
        raise api_error(error, what) from error
    metadata = obj.get("metadata") or {}
    try:
        written = caselifecycle.first_response_annotations(
            metadata.get("annotations") or {}, when, by, force)
    except caselifecycle.AlreadyResponded as error:
        raise output.fail(f"{what}: {error}", 1) from error
    # The resourceVersion makes the check and the write one step: a response recorded by
    # someone else in between turns this patch into a 409 instead of overwriting theirs.
    _patch(api, namespace, name,
           {"annotations": written, "resourceVersion": metadata.get("resourceVersion")},
           "responded")


@app.command()
def resolve(name: str, namespace: Namespace = "default", at: At = None, by: By = None,
            kubeconfig: Kubeconfig = None) -> None:
    """Record the resolution (it also counts as the first response if none was recorded)."""
    _annotate(kubeconfig, namespace, name,
              {constants.RESOLVED_AT: _time(at), constants.RESOLVED_BY: by}, "resolved")


@app.command()
def dismiss(name: str, namespace: Namespace = "default", at: At = None, by: By = None,
            reason: Annotated[str | None, typer.Option(help="Why, e.g. third-party tool.")
                              ] = None,
            kubeconfig: Kubeconfig = None) -> None:
    """Dismiss the case (out of scope, duplicate...); the SLA clock stops."""
    _annotate(kubeconfig, namespace, name,
              {constants.DISMISSED_AT: _time(at), constants.DISMISSED_BY: by,
               constants.DISMISS_REASON: reason}, "dismissed")


@app.command()
def create(
    name: str,
    title: Annotated[str, typer.Option(help="One line naming the problem.")],
    statement: Annotated[str, typer.Option(help="Impact statement: who is affected, how.")],
    description: Annotated[str | None, typer.Option(help="Details; the title if omitted.")
                           ] = None,
    severity: Annotated[str, typer.Option(help="Urgent, High, Medium or Low.")] = "Low",
    environment: Annotated[str, typer.Option(help="production, staging or development.")
                           ] = "production",
    outage: Annotated[str, typer.Option(help="full, partial, degraded or none.")] = "none",
    business_critical: Annotated[bool, typer.Option(help="The service is business-critical.")
                                 ] = False,
    component: Annotated[str, typer.Option(help="e.g. helm-controller, flux-operator, other.")
                         ] = "other",
    category: Annotated[str, typer.Option(help="incident, question, upgrade, ...")] = "question",
    contact_name: Annotated[str | None, typer.Option()] = None,
    contact_email: Annotated[str | None, typer.Option()] = None,
    requires_infrastructure_access: Annotated[bool, typer.Option()] = False,
    namespace: Namespace = "default",
    dry_run: Annotated[bool, typer.Option(help="Print the manifest instead of creating it.")
                       ] = False,
    wait: Annotated[float, typer.Option(
        help="Seconds to wait for the operator to submit the case and print its ticket; "
             "0 to return at once.")] = 5,
    kubeconfig: Kubeconfig = None,
) -> None:
    """Create a SupportCase; the API server validates it against the CRD schema.

    Example: fluxsupport case create stuck -n team-a --title "HelmReleases stuck"
    --statement "Prod deploys blocked" --severity High --outage partial
    --business-critical --component helm-controller --category incident
    """
    body: dict[str, Any] = {
        "apiVersion": constants.API_VERSION, "kind": constants.SUPPORTCASE_KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "title": title, "description": description or title, "severity": severity,
            "impact": {"statement": statement, "environment": environment, "outage": outage,
                       "businessCritical": business_critical},
            "component": component, "category": category,
            "requiresInfrastructureAccess": requires_infrastructure_access,
        },
    }
    contact = {k: v for k, v in (("name", contact_name), ("email", contact_email)) if v}
    if contact:
        body["spec"]["contact"] = contact
    if dry_run:
        output.emit(body, output.Format.yaml)
        return
    api = custom_api(kubeconfig)
    try:
        api.create(PLURAL, body, namespace)
    except CLIENT_ERRORS as error:
        raise api_error(error, f"supportcase {namespace}/{name}") from error
    typer.echo(f"supportcase {namespace}/{name} created")
    if wait > 0:
        _show_submission(api, namespace, name, wait)


def _show_submission(api: blocking.CustomObjects, namespace: str, name: str,
                     wait: float) -> None:
    """Print the ticket once the operator has submitted the case, or why it has not."""
    deadline = time.monotonic() + wait
    reason, message = "", "the operator has not reconciled the case yet"
    while True:
        try:
            status = api.get(PLURAL, name, namespace).get("status") or {}
        except CLIENT_ERRORS:
            status = {}
        submission = status.get("submission") or {}
        submitted = {c.get("type"): c for c in status.get("conditions") or []}.get("Submitted")
        if submission.get("url") or submission.get("ticketId"):
            typer.echo(f"ticket {submission.get('ticketId', '')}: {submission.get('url', '')}")
            return
        if submitted:
            reason, message = submitted.get("reason", ""), submitted.get("message", "")
            if reason in ("SubmittedByEmail", "EmailUncertain", "ChannelDisabled", "Failed"):
                break
        if time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    typer.echo(f"not in the portal yet ({reason or 'Unknown'}): {message}")


def case_rows(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for item in items:
        status = item.get("status") or {}
        first = status.get("firstResponse") or {}
        by_type = {c.get("type"): c for c in status.get("conditions") or []}
        scope = by_type.get("InScope", {})
        severity = by_type.get("SeverityConsistent", {})
        submission = status.get("submission") or {}
        submitted = by_type.get("Submitted", {})
        rows.append({
            "namespace": item["metadata"]["namespace"], "name": item["metadata"]["name"],
            "ticket": submission.get("ticketId", ""), "ticketUrl": submission.get("url", ""),
            "channel": submission.get("channel", ""),
            "ticketState": submission.get("ticketStatus") or submitted.get("reason", ""),
            "level": status.get("level", ""), "assessedLevel": status.get("assessedLevel", ""),
            "component": (item.get("spec") or {}).get("component", ""),
            "state": first.get("state", ""), "deadline": first.get("deadline", ""),
            "inScope": scope.get("status", ""), "scopeReason": scope.get("reason", ""),
            "severityConsistent": severity.get("status", ""),
            "severityReason": severity.get("reason", ""),
        })
    return rows


@app.command("list")
def list_cases(
    namespace: Annotated[str | None, typer.Option("--namespace", "-n")] = None,
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A")] = False,
    fmt: Annotated[output.Format, output.OutputOption] = output.Format.table,
    kubeconfig: Kubeconfig = None,
) -> None:
    """List SupportCases with level, state and deadline."""
    api = custom_api(kubeconfig)
    try:
        listing = api.list(PLURAL, None if all_namespaces else namespace)
    except CLIENT_ERRORS as error:
        raise api_error(error, "supportcases") from error
    rows = case_rows(listing.get("items") or [])
    output.emit(rows, fmt, [("NAMESPACE", "namespace"), ("NAME", "name"), ("LEVEL", "level"),
                            ("COMPONENT", "component"), ("STATE", "state"),
                            ("DUE", "deadline"), ("IN SCOPE", "inScope"),
                            ("TICKET", "ticket"), ("TICKET STATE", "ticketState")], rows)


@app.command()
def comment(name: str, text: str, namespace: Namespace = "default",
            kubeconfig: Kubeconfig = None) -> None:
    """Add a comment for the support team; the operator posts it to the case's ticket once.

    Stored as an annotation support.fluxcd.controlplane.io/comment-<time>-<id>.

    Example: fluxsupport case comment stuck -n team-a "Rolled back to v2.6.0, still stuck"
    """
    if not text.strip():
        raise typer.BadParameter("the comment is empty", param_hint="TEXT")
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dt%H%M%Sz")
    key = f"{constants.GROUP}/comment-{stamp}-{secrets.token_hex(2)}"
    _annotate(kubeconfig, namespace, name, {key: text}, "commented")
