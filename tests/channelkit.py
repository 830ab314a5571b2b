"""The support channels' controller in-process, for tests that need no API server: a real
CaseController and SubmissionController on the fake API server (tests/fakes.py) holding the
channels' Secret, and an RT look-alike on loopback that can refuse.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from fluxsupport import constants
from fluxsupport.controllers.submission import SubmissionController
from fluxsupport.controllers.supportcase import CaseController, CaseKey
from fluxsupport.domain import policy as policy_module
from tests import fakes

NAMESPACE = "fluxsupport-system"
#: An RT auth token of user 14 (the operator's), as RT::AuthToken makes them.
TOKEN = "1-14-" + "0123456789abcdef" * 2
CREATED = "2026-12-07T09:00:00Z"


def fake_kube(token: str = TOKEN) -> fakes.FakeClient:
    """The fake API server with the channels' Secret; its status writes fail with a 409
    while ``failures`` is above 0, as during an API server blip."""
    kube = fakes.FakeClient()
    kube.add_secret(NAMESPACE, "fluxsupport-channels", {"portal-token": token})
    return kube


def policy(url: str, *, sync_interval: str = "1s", timeout: str = "10s") -> policy_module.Policy:
    return policy_module.Policy.model_validate({
        "timezone": "UTC", "holidays": "", "businessHours": {"alwaysOpen": True},
        "channels": {"portal": {"enabled": True, "url": url, "queue": "FluxSupport",
                                "syncInterval": sync_interval, "timeout": timeout}}})


def controllers(kube: fakes.FakeClient, url: str, *, listed: asyncio.Event | None = None,
                channels: policy_module.Channels | None = None, timeout: str = "10s"
                ) -> tuple[CaseController, SubmissionController]:
    rules = policy(url, timeout=timeout)
    cases = CaseController(rules, kube)
    submissions = SubmissionController(cases, channels or rules.channels, kube, NAMESPACE,
                                       listed=listed)
    return cases, submissions


def uid(name: str) -> str:
    """The uid of the case ``name`` (a uuid, as the tag pattern wants)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def case_body(name: str, *, ticket: str | None = None,
              comments: Mapping[str, str] | None = None, severity: str = "High",
              namespace: str = "team-a") -> dict[str, Any]:
    """A case; with ``ticket``, one the portal already has; ``comments`` by id (time-hex)."""
    status: dict[str, Any] = {}
    if ticket is not None:
        status["submission"] = {"channel": "portal", "ticketId": ticket,
                                "url": f"http://rt.invalid/Ticket/Display.html?id={ticket}",
                                "submittedAt": CREATED, "attempts": 1, "level": 2}
    return {
        "metadata": {"namespace": namespace, "name": name, "uid": uid(name),
                     "resourceVersion": "1", "generation": 1, "creationTimestamp": CREATED,
                     "annotations": {f"{constants.GROUP}/comment-{key}": text
                                     for key, text in (comments or {}).items()}},
        "spec": {"title": "HelmReleases stuck", "description": "Upgrades hang.",
                 "severity": severity, "component": "helm-controller", "category": "incident",
                 "impact": {"statement": "Deploys blocked", "environment": "production",
                            "outage": "partial", "businessCritical": True}},
        "status": status,
    }


async def add(cases: CaseController, body: Mapping[str, Any]) -> CaseKey:
    """What the case watch does with a new case: observe it and store its first status
    (on top of the status it came with, as the API server holds it)."""
    kube = cases.client
    assert isinstance(kube, fakes.FakeClient)
    kube.status[body["metadata"]["uid"]] = json.loads(json.dumps(body.get("status") or {}))
    key, _ = cases.observe(body)
    await cases.reconcile(key)
    return key


def submission(cases: CaseController, key: CaseKey) -> dict[str, Any]:
    return dict(cases.cases[key].status.get("submission") or {})


def condition(cases: CaseController, key: CaseKey, kind: str) -> dict[str, Any] | None:
    for item in cases.cases[key].status.get("conditions") or []:
        if item.get("type") == kind:
            return dict(item)
    return None


class LoopbackRT:
    """The few REST 2.0 endpoints the operator calls, as RT 5 answers them, on 127.0.0.1.

    ``refused`` maps ticket ids to the status their history and comments answer (404: the
    ticket was deleted; 403: moved to a queue the operator may not see); ``delay`` holds
    those answers back (a slow RT). Every request is counted by ticket id.
    """

    def __init__(self) -> None:
        self.refused: dict[str, int] = {}
        self.delay = 0.0
        self.tickets: dict[str, dict[str, Any]] = {}
        self.comments: dict[str, list[str]] = collections.defaultdict(list)
        #: Priority, FinalPriority and Due of tickets not in ``tickets``.
        self.fields: dict[str, dict[str, Any]] = collections.defaultdict(dict)
        self.requests: collections.Counter[str] = collections.Counter()
        self.url = ""
        self._next_id = 100
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/REST/2.0/user/{id}", self._user)
        app.router.add_get("/REST/2.0/tickets", self._search)
        app.router.add_post("/REST/2.0/ticket", self._create)
        app.router.add_get("/REST/2.0/ticket/{id}", self._ticket)
        app.router.add_put("/REST/2.0/ticket/{id}", self._update)
        app.router.add_get("/REST/2.0/ticket/{id}/history", self._history)
        app.router.add_get("/REST/2.0/ticket/{id}/attachments", self._attachments)
        app.router.add_post("/REST/2.0/ticket/{id}/comment", self._comment)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def add_ticket(self, ticket_id: str, subject: str) -> None:
        self.tickets[ticket_id] = {"id": ticket_id, "Subject": subject, "Status": "open",
                                   "LastUpdated": CREATED, "Requestor": []}

    async def _user(self, request: web.Request) -> web.Response:
        self.requests["user"] += 1
        return web.json_response({"id": request.match_info["id"],
                                  "Name": "fluxsupport-operator"})

    async def _search(self, request: web.Request) -> web.Response:
        self.requests["search"] += 1
        query = request.query.get("query", "")
        wanted = query.split("'")[1] if "'" in query else ""
        items = [t for t in self.tickets.values() if wanted.lower() in t["Subject"].lower()]
        return web.json_response({"items": items, "pages": 1, "count": len(items)})

    async def _create(self, request: web.Request) -> web.Response:
        self.requests["create"] += 1
        body = await request.json()
        self._next_id += 1
        ticket_id = str(self._next_id)
        self.add_ticket(ticket_id, body["Subject"])
        return web.json_response({"id": ticket_id}, status=201)

    async def _ticket(self, request: web.Request) -> web.Response:
        ticket_id = request.match_info["id"]
        self.requests[ticket_id] += 1
        if ticket_id in self.tickets:
            return web.json_response(self.tickets[ticket_id])
        if ticket_id in self.refused or ticket_id not in self.comments:
            return web.json_response({"message": "Resource does not exist"}, status=404)
        # A ticket the test put only in a case's status, then commented on: its fields.
        return web.json_response({"id": ticket_id, **self.fields[ticket_id]})

    async def _update(self, request: web.Request) -> web.Response:
        """Priority, FinalPriority and Due (set_sla), as RT stores them."""
        ticket_id = request.match_info["id"]
        refusal = await self._refusal(ticket_id)
        if refusal is not None:
            return refusal
        body = await request.json()
        if "Due" in body:  # written as "2026-12-07 17:00:00" (UTC), read as RFC 3339
            body["Due"] = body["Due"].replace(" ", "T") + "Z"
        held = self.tickets.get(ticket_id, self.fields[ticket_id])
        held.update(body)
        return web.json_response([f"Ticket {ticket_id}: {key} changed" for key in body])

    async def _refusal(self, ticket_id: str) -> web.Response | None:
        self.requests[ticket_id] += 1
        status = self.refused.get(ticket_id)
        if status is None:
            return None
        await asyncio.sleep(self.delay)
        message = "Resource does not exist" if status == 404 else "Forbidden"
        return web.json_response({"message": message}, status=status)

    async def _history(self, request: web.Request) -> web.Response:
        ticket_id = request.match_info["id"]
        refusal = await self._refusal(ticket_id)
        if refusal is not None:
            return refusal
        items = [{"id": str(n), "Type": "Comment", "Created": CREATED,
                  "Creator": {"Name": "fluxsupport-operator"}}
                 for n, _ in enumerate(self.comments[ticket_id], start=1)]
        return web.json_response({"items": items, "pages": 1, "count": len(items)})

    async def _attachments(self, request: web.Request) -> web.Response:
        ticket_id = request.match_info["id"]
        refusal = await self._refusal(ticket_id)
        if refusal is not None:
            return refusal
        items = [{"TransactionId": str(n), "ContentType": "text/plain", "Content": text}
                 for n, text in enumerate(self.comments[ticket_id], start=1)]
        return web.json_response({"items": items, "pages": 1, "count": len(items)})

    async def _comment(self, request: web.Request) -> web.Response:
        ticket_id = request.match_info["id"]
        refusal = await self._refusal(ticket_id)
        if refusal is not None:
            return refusal
        self.comments[ticket_id].append(str((await request.json())["Content"]))
        return web.json_response(["Comments added"], status=201)


async def closing_server() -> tuple[asyncio.Server, str, list[float]]:
    """A portal that refuses every request: it accepts the connection and closes it at once.
    Returns the server, its URL and the times of the connections."""
    connections: list[float] = []

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(time.monotonic())
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/", connections
