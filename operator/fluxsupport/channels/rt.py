"""Request Tracker 5 as the support portal, over its REST 2.0 API (``{url}REST/2.0/``).

Plain aiohttp and a handful of endpoints: ``POST ticket``, ``GET tickets?query=`` (TicketSQL,
one batched search per sync), ``GET ticket/N/history`` and ``ticket/N/attachments`` (the texts
of a whole ticket in one request), ``POST ticket/N/comment``. Every failure becomes a
PortalError; ``transient`` tells the controller whether retrying can help.
"""

from __future__ import annotations

import datetime
import json
import re
import ssl
from typing import Any

import aiohttp

from fluxsupport.channels.portal import NewTicket, PortalError, Ticket, Transaction

#: Page size of searches and histories (REST 2.0 caps it at 100).
PER_PAGE = 100
#: Texts longer than this are cut: the reply classification needs the start only, and an
#: update's marker opens its text.
CONTENT_LIMIT = 4000
#: RT reads a TicketSQL date in the RT user's own time zone, whatever it says, so
#: updated_since asks for this much more (the furthest time zone west of UTC) and filters
#: on the UTC times RT returns.
TIMEZONE_MARGIN = datetime.timedelta(hours=12)
_FIELDS = "Subject,Status,LastUpdated,Requestor"
#: Transaction types whose attachment is the text someone wrote.
_TEXT_TYPES = frozenset({"Create", "Correspond", "Comment"})


class RequestTracker:
    """One RT instance, one queue, one auth token (of the operator's own RT user)."""

    def __init__(self, url: str, queue: str, token: str, *, timeout: float = 10.0,
                 ca_bundle: str = "") -> None:
        self.base = url if url.endswith("/") else url + "/"
        self.queue = queue
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        #: Verification against the policy's CA bundle, else the system's CAs (aiohttp's).
        self._ssl: ssl.SSLContext | bool = True
        if ca_bundle:
            try:
                self._ssl = ssl.create_default_context(cadata=ca_bundle)
            except (ssl.SSLError, ValueError) as error:
                raise PortalError(f"portal.caBundle is not usable: {error}",
                                  transient=False) from error
        self._session: aiohttp.ClientSession | None = None
        self._login: str | None = None

    # -- Portal -----------------------------------------------------------------------------

    async def whoami(self) -> str:
        """RT 5.0 has no "current user" endpoint; an auth token reads ``1-<user id>-<hex>``
        (RT::AuthToken), and any user may read their own record."""
        if self._login is None:
            parts = self._token.split("-")
            if len(parts) != 3 or not parts[1].isdigit():
                raise PortalError("the portal token is not an RT auth token (1-<user id>-<hex>):"
                                  " create one under Logged in as > Settings > Auth Tokens",
                                  transient=False)
            user = await self._request("GET", f"user/{parts[1]}")
            self._login = str(user["Name"])
        return self._login

    async def find(self, tag: str) -> Ticket | None:
        tickets = await self._search(f"Subject LIKE {_quote(tag)}")
        matching = [t for t in tickets if tag.lower() in t.subject.lower()]
        return min(matching, key=lambda t: int(t.id), default=None)

    async def create(self, ticket: NewTicket) -> Ticket:
        body: dict[str, Any] = {"Queue": self.queue, "Subject": ticket.subject,
                                "Content": ticket.body, "ContentType": "text/plain"}
        if ticket.requestor:
            body["Requestor"] = ticket.requestor
        try:
            created = await self._request("POST", "ticket", json_body=body)
        except PortalError as error:
            if not error.transient:
                await self._explain_queue(error)
            raise
        try:
            return await self.ticket(str(created["id"]))
        except PortalError as error:
            error.uncertain = True  # the ticket exists; the next find links it
            raise

    async def ticket(self, ticket_id: str) -> Ticket:
        record = await self._request("GET", f"ticket/{ticket_id}")
        return self._ticket(record)

    async def updated_since(self, tag_prefix: str,
                            since: datetime.datetime | None) -> list[Ticket]:
        query = f"Subject LIKE {_quote(tag_prefix)}"
        if since is not None:
            since = since.astimezone(datetime.UTC)
            wider = (since - TIMEZONE_MARGIN).strftime("%Y-%m-%d %H:%M:%S")
            query += f" AND LastUpdated > '{wider}'"
        tickets = await self._search(query)
        return [t for t in tickets if tag_prefix.lower() in t.subject.lower()
                and (since is None or t.last_updated is None or t.last_updated >= since)]

    async def history(self, ticket_id: str) -> list[Transaction]:
        """Transactions the operator's user may see, oldest first, with the text of each
        Create, Correspond and Comment from one attachments request for the whole ticket,
        and the new value of each change (a Status transaction's new status)."""
        items = await self._pages(f"ticket/{ticket_id}/history",
                                  {"fields": "Type,Creator,Created,Field,NewValue",
                                   "fields[Creator]": "Name,EmailAddress"})
        texts: dict[str, str] = {}
        if any(item.get("Type") in _TEXT_TYPES for item in items):
            for part in await self._pages(f"ticket/{ticket_id}/attachments",
                                          {"fields": "TransactionId,ContentType,Content"}):
                txn = str(part.get("TransactionId", ""))
                if part.get("ContentType") == "text/plain" and txn not in texts:
                    texts[txn] = str(part.get("Content") or "")[:CONTENT_LIMIT]
        transactions = []
        for item in items:
            creator = item.get("Creator") or {}
            transactions.append(Transaction(
                id=str(item["id"]), type=str(item.get("Type", "")),
                creator=str(creator.get("Name") or creator.get("id") or ""),
                creator_email=str(creator.get("EmailAddress") or ""),
                created=_time(item.get("Created")) or datetime.datetime.min.replace(
                    tzinfo=datetime.UTC),
                content=texts.get(str(item["id"]), ""),
                new_value=str(item.get("NewValue") or "")))
        transactions.sort(key=lambda t: int(t.id))
        return transactions

    async def comment(self, ticket_id: str, text: str) -> None:
        await self._request("POST", f"ticket/{ticket_id}/comment",
                            json_body={"Content": text, "ContentType": "text/plain"})

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # -- HTTP -------------------------------------------------------------------------------

    def url(self, ticket_id: str) -> str:
        return f"{self.base}Ticket/Display.html?id={ticket_id}"

    def _ticket(self, record: dict[str, Any]) -> Ticket:
        requestors = tuple(str(r.get("EmailAddress") or r.get("id"))
                           for r in record.get("Requestor") or () if isinstance(r, dict))
        ticket_id = str(record["id"])
        return Ticket(id=ticket_id, url=self.url(ticket_id),
                      subject=str(record.get("Subject") or ""),
                      status=str(record.get("Status") or "").lower(),
                      last_updated=_time(record.get("LastUpdated")), requestors=requestors)

    async def _search(self, query: str) -> list[Ticket]:
        items = await self._pages("tickets", {"query": query, "orderby": "id", "order": "ASC",
                                              "fields": _FIELDS,
                                              "fields[Requestor]": "EmailAddress"})
        return [self._ticket(item) for item in items]

    async def _pages(self, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
        """Every item of a REST 2.0 collection. Some (attachments) report no page count,
        so a short page ends it too."""
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            result = await self._request("GET", path, params={
                **params, "per_page": str(PER_PAGE), "page": str(page)})
            batch = result.get("items") or []
            items += batch
            pages = result.get("pages")
            if len(batch) < PER_PAGE or (pages is not None and page >= int(pages)):
                return items
            page += 1

    async def _request(self, method: str, path: str, *, params: dict[str, str] | None = None,
                       json_body: Any = None) -> Any:
        status, text = await self._call(method, path, params=params, json_body=json_body)
        if status >= 400:
            raise _refusal(status, _message(text), method, path, self.base)
        try:
            return json.loads(text) if text.strip() else {}
        except ValueError as error:
            raise PortalError(f"RT answered {method} {path} with no JSON "
                              f"(is {self.base} RT's base URL?): {text[:200]!r}") from error

    async def _call(self, method: str, path: str, *, params: dict[str, str] | None = None,
                    json_body: Any = None) -> tuple[int, str]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl),
                timeout=self._timeout,
                headers={"Authorization": f"token {self._token}",
                         "Accept": "application/json"})
        try:
            async with self._session.request(method, f"{self.base}REST/2.0/{path}",
                                              params=params, json=json_body) as response:
                return response.status, await response.text()
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            # Only a connection that was never made certainly carried nothing to RT.
            raise PortalError(f"RT at {self.base} is unreachable: "
                              f"{type(error).__name__}: {error}",
                              uncertain=not isinstance(error, aiohttp.ClientConnectorError)
                              ) from error

    async def _explain_queue(self, error: PortalError) -> None:
        """RT answers 403 for a queue that does not exist as for one the user may not use (and
        so does ``GET queue/<name>``); the list of queues the user can see tells them apart."""
        try:
            queues = await self._pages("queues/all", {"fields": "Name"})
        except PortalError:
            return
        if all(q.get("Name") != self.queue for q in queues):
            error.args = (f"RT has no queue {self.queue!r} that the operator's user can see: "
                          f"set channels.portal.queue to an existing queue, or grant the user "
                          f"SeeQueue on it ({error})",)


def _refusal(status: int, message: str, method: str, path: str, base: str) -> PortalError:
    what = f"RT refused {method} {path} ({status}: {message})"
    if status == 401:
        return PortalError(f"{what}: the portal token is wrong, expired or its user disabled; "
                           f"put a valid RT auth token in the Secret's portal-token key",
                           transient=False)
    if status == 403:
        return PortalError(f"{what}: grant the operator's RT user SeeQueue, CreateTicket, "
                           f"ShowTicket, ModifyTicket, CommentOnTicket and ShowTicketComments "
                           f"on the queue", transient=False)
    if status == 404:
        return PortalError(f"{what}: check channels.portal.url ({base}) and that the ticket "
                           f"or queue exists", transient=False)
    if status in (408, 429) or status >= 500:
        # A 5xx may come from a proxy that gave up while RT carried the request out.
        return PortalError(what, uncertain=status >= 500)
    return PortalError(what, transient=False)


def _message(text: str) -> str:
    try:
        body = json.loads(text)
    except ValueError:
        return re.sub(r"\s+", " ", text)[:200]
    if isinstance(body, dict):
        return str(body.get("message", body))[:300]
    return str(body)[:300]


def _quote(value: str) -> str:
    """A TicketSQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _time(value: Any) -> datetime.datetime | None:
    """RT 5 REST times are UTC, 'YYYY-MM-DDTHH:MM:SSZ'; unset ones are '1970-01-01...'."""
    if not value or not isinstance(value, str) or value.startswith("1970-01-01"):
        return None
    try:
        return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.UTC)
    except ValueError:
        return None
