"""``fluxsupport case show``: a case's ticket and its thread, read from the support portal,
with what the case's status says of its escalation, its root-cause analysis and its waits on
the customer.

Registered lazily by :mod:`fluxsupport.cli.case`. The case comes from the cluster (the CLI's
client); the portal's URL, queue and timeout from the operator's policy (its ConfigMap, as the
chart installs it, or a file); the token, as the operator reads it, from the Secret
``channels.secretName`` in the operator's namespace, unless ``FLUXSUPPORT_PORTAL_TOKEN`` or
``--token-file`` gives one (for a user who may not read that Secret). Reading changes nothing
in the portal.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
from collections.abc import Mapping
from typing import Annotated, Any

import typer

from fluxsupport import constants
from fluxsupport.channels import portal, rt
from fluxsupport.cli import output
from fluxsupport.cli.case import CLIENT_ERRORS, Kubeconfig, Namespace, api_error, custom_api
from fluxsupport.domain import conversation
from fluxsupport.domain.conditions import rfc3339
from fluxsupport.domain.policy import Channels, PolicyError
from fluxsupport.kube import blocking
from fluxsupport.sources import policy as policy_source

TOKEN_ENV = "FLUXSUPPORT_PORTAL_TOKEN"


def show(
    name: str,
    namespace: Namespace = "default",
    policy_file: Annotated[pathlib.Path | None, typer.Option(
        "--policy", envvar="FLUXSUPPORT_POLICY",
        help="The operator's policy file; else its ConfigMap (--policy-configmap).")] = None,
    policy_configmap: Annotated[str, typer.Option(
        envvar="FLUXSUPPORT_POLICY_CONFIGMAP",
        help="ConfigMap in --operator-namespace with the policy (key policy.yaml); the "
             "chart's is <release>-policy.")] = "fluxsupport-policy",
    operator_namespace: Annotated[str, typer.Option(
        envvar="FLUXSUPPORT_NAMESPACE",
        help="The operator's namespace: its policy ConfigMap and channels Secret.")
    ] = "fluxsupport-system",
    token_file: Annotated[pathlib.Path | None, typer.Option(
        help=f"File with the RT auth token; else ${TOKEN_ENV}; else the channels Secret.")
    ] = None,
    fmt: Annotated[output.Format, output.OutputOption] = output.Format.table,
    kubeconfig: Kubeconfig = None,
) -> None:
    """Print a case's ticket and its thread from the support portal.

    The thread is what the customer may read: the case as filed, the replies of both sides
    and the operator's updates, not the support team's internal comments. The case's
    escalation tiers, root-cause analysis and waits on the customer come from its status,
    where it has them.

    Example: fluxsupport case show stuck -n team-a
    """
    what = f"supportcase {namespace}/{name}"
    try:
        case = custom_api(kubeconfig).get(constants.SUPPORTCASE_PLURAL, name, namespace)
    except CLIENT_ERRORS as error:
        raise api_error(error, what) from error
    ticket_id = str(((case.get("status") or {}).get("submission") or {}).get("ticketId") or "")
    if not ticket_id:
        raise output.fail(f"{what} has no ticket in the portal yet (`kubectl describe` shows "
                          "its Submitted condition)", 1)
    channels = _channels(policy_file, operator_namespace, policy_configmap, kubeconfig)
    token = _token(token_file, channels, operator_namespace, kubeconfig)
    try:
        ticket, history, own = asyncio.run(_read(channels, token, ticket_id))
    except portal.PortalError as error:
        raise output.fail(f"ticket {ticket_id}: {error}", 1) from error
    customers = (*ticket.requestors, *ticket.ccs, channels.email.sender)
    people = conversation.People.of(_operator(history, own, customers), customers)
    data = _view(what, ticket, conversation.summarize(history, people),
                 conversation.thread(history, people), case.get("status") or {})
    if fmt is output.Format.table:
        _print(data)
    else:
        output.emit(data, fmt)


def _channels(policy_file: pathlib.Path | None, namespace: str, configmap: str,
              kubeconfig: pathlib.Path | None) -> Channels:
    try:
        if policy_file is not None:
            policy = policy_source.from_file(policy_file)
        else:
            policy = policy_source.from_configmap(namespace, configmap, kubeconfig=kubeconfig)
    except PolicyError as error:
        raise output.fail(f"the operator's policy: {error} (--policy FILE, or "
                          "--policy-configmap and --operator-namespace)", 1) from error
    if not policy.channels.portal.enabled:
        raise output.fail("the policy does not enable the portal (channels.portal.enabled)", 1)
    return policy.channels


def _token(path: pathlib.Path | None, channels: Channels, namespace: str,
           kubeconfig: pathlib.Path | None) -> str:
    if path is not None:
        try:
            token = path.read_text().strip()
        except OSError as error:
            raise output.fail(f"cannot read {path}: {error.strerror}") from error
    elif os.environ.get(TOKEN_ENV, "").strip():
        token = os.environ[TOKEN_ENV].strip()
    else:
        try:
            token = blocking.read_secret_data(namespace, channels.secret_name,
                                              kubeconfig).get("portal-token", "").strip()
        except LookupError as error:
            raise output.fail(f"{error}; give the RT token with --token-file or "
                              f"${TOKEN_ENV} instead", 1) from error
    if not token:
        raise output.fail("the RT token is empty (Secret key portal-token, --token-file or "
                          f"${TOKEN_ENV})", 1)
    return token


async def _read(channels: Channels, token: str, ticket_id: str
                ) -> tuple[portal.Ticket, list[portal.Transaction], str]:
    # The only portal type today; the policy's `type` will choose among several.
    helpdesk: portal.Portal = rt.RequestTracker(
        channels.portal.base_url, channels.portal.queue, token,
        timeout=channels.portal.timeout)
    try:
        return (await helpdesk.ticket(ticket_id), await helpdesk.history(ticket_id),
                await helpdesk.whoami())
    finally:
        await helpdesk.close()


def _operator(history: list[portal.Transaction], own: str, customers: tuple[str, ...]) -> str:
    """The operator's RT login: the ticket's creator, unless the customer made it (a case
    that went by email); else the token's own user. A person may read with a token of their
    own, and the operator's transactions are still the operator's."""
    created = next((item for item in history if item.type == "Create"), None)
    if created is None or conversation.side(
            created, conversation.People.of(own, customers)) is not conversation.Side.SUPPORT:
        return own
    return created.creator


def _time(moment: Any) -> str | None:
    return rfc3339(moment) if moment is not None else None


def _view(what: str, ticket: portal.Ticket, summary: conversation.Summary,
          thread: list[conversation.Message], status: Mapping[str, Any]) -> dict[str, Any]:
    """What the command prints, as plain data (the JSON and YAML output). ``escalation``,
    ``rootCauseAnalysis`` and ``pauses`` are the status's blocks as stored: None (no
    pauses: an empty list) where the status has none."""
    last = summary.last_reply
    waiting = summary.pauses[-1] if summary.pauses and summary.pauses[-1].end is None else None
    rejection = summary.rejection
    return {
        "case": what,
        "ticket": {"id": ticket.id, "url": ticket.url, "status": ticket.status,
                   "priority": ticket.priority, "due": _time(ticket.due)},
        "waitsOn": str(summary.waits_on),
        "waitingSince": _time(waiting.start) if waiting else None,
        "replies": summary.reply_count,
        "lastReply": {"at": _time(last.at), "by": last.author} if last else None,
        "reopened": summary.reopened,
        "rejection": {"at": _time(rejection.at), "by": rejection.by,
                      "reason": rejection.reason} if rejection else None,
        "rootCauseAnalysisAt": _time(summary.rca_delivery.at) if summary.rca_delivery
        else None,
        "thread": [{"id": m.id, "at": _time(m.at), "side": str(m.side), "author": m.author,
                    "kind": m.kind, "subject": m.subject, "attachments": list(m.attachments),
                    "text": m.text} for m in thread],
        "escalation": _block(status.get("escalation")),
        "rootCauseAnalysis": _block(status.get("rootCauseAnalysis")),
        "pauses": [dict(item) for item in status.get("pauses") or []
                   if isinstance(item, Mapping)],
    }


def _block(value: Any) -> dict[str, Any] | None:
    return dict(value) if isinstance(value, Mapping) and value else None


def _print(data: dict[str, Any]) -> None:
    ticket = data["ticket"]
    echo = typer.echo
    echo(f"{data['case']}: ticket {ticket['id']} ({ticket['status']}) {ticket['url']}")
    echo(f"priority {ticket['priority'] if ticket['priority'] is not None else '-'}, "
         f"due {ticket['due'] or '-'}")
    waits = f"waits on {data['waitsOn']}"
    if data["waitingSince"]:
        waits += f" (stalled since {data['waitingSince']})"
    last = data["lastReply"]
    replies = f"{data['replies']} support repl{'y' if data['replies'] == 1 else 'ies'}"
    if last:
        replies += f", the last at {last['at']} by {last['by']}"
    echo(f"{waits}; {replies}")
    if data["reopened"]:
        echo(f"reopened {data['reopened']} time{'s' if data['reopened'] > 1 else ''}")
    if data["rejection"]:
        rejection = data["rejection"]
        echo(f"rejected at {rejection['at']} by {rejection['by']}: "
             f"{rejection['reason'] or '(no reason given)'}")
    if data["rootCauseAnalysis"]:
        echo(_rca_line(data["rootCauseAnalysis"]))
    elif data["rootCauseAnalysisAt"]:
        echo(f"root-cause analysis delivered at {data['rootCauseAnalysisAt']}")
    if data["escalation"]:
        for line in _escalation_lines(data["escalation"]):
            echo(line)
    for line in _pause_lines(data["pauses"]):
        echo(line)
    for message in data["thread"]:
        echo("")
        head = f"#{message['id']} {message['at']} {message['side']} {message['author']}"
        echo(f"{head} ({message['kind']})" + (f": {message['subject']}"
                                             if message["subject"] else ""))
        if message["attachments"]:
            echo(f"    files: {', '.join(message['attachments'])}")
        for line in message["text"].rstrip().splitlines():
            echo(f"    {line}".rstrip())


def _rca_line(block: Mapping[str, Any]) -> str:
    """``root-cause analysis Pending, due ...`` or ``... Delivered at ... by ... (portal),
    due ...``: the fields the status has."""
    line = f"root-cause analysis {block.get('state', '?')}"
    if block.get("deliveredAt"):
        line += f" at {block['deliveredAt']}"
        if block.get("deliveredBy"):
            line += f" by {block['deliveredBy']}"
        if block.get("source"):
            line += f" ({block['source']})"
    if block.get("dueAt"):
        line += f", due {block['dueAt']}"
    return line


def _escalation_lines(block: Mapping[str, Any]) -> list[str]:
    tiers = [item for item in block.get("tiers") or [] if isinstance(item, Mapping)]
    if not tiers:
        return ["escalation: no tier reached"]
    lines = [f"escalation: tier {block.get('tier', tiers[-1].get('tier'))}"]
    for item in tiers:
        line = f"  tier {item.get('tier')}"
        if item.get("contact"):
            line += f" ({item['contact']})"
        line += f" reached at {item.get('reachedAt', '?')}"
        if item.get("trigger"):
            line += f", {item['trigger']}"
        if item.get("detail"):
            line += f": {item['detail']}"
        lines.append(line)
    return lines


def _pause_lines(pauses: list[Mapping[str, Any]]) -> list[str]:
    if not pauses:
        return []
    lines = [f"waited on the customer {len(pauses)} time{'s' if len(pauses) > 1 else ''}"]
    for item in pauses:
        span = (f"{item.get('start', '?')} to {item['end']}" if item.get("end")
                else f"since {item.get('start', '?')}")
        lines.append(f"  {span}" + (f" ({item['source']})" if item.get("source") else ""))
    return lines
