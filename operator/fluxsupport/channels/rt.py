"""Request Tracker 5 as the support portal, over its REST 2.0 API (``{url}REST/2.0/``).

Plain aiohttp and a handful of endpoints: ``POST ticket``, ``GET tickets?query=`` (TicketSQL,
one batched search per sync), ``GET ticket/N/history`` and ``ticket/N/attachments`` (the
messages of a whole ticket in a few requests), ``PUT ticket/N`` (Priority and Due, only when
they change), ``POST ticket/N/comment``. Every failure becomes a PortalError; ``transient``
tells the controller whether retrying can help.

RT 5 tells a user who is not a SuperUser neither the size of a collection nor its page count,
and leaves out of each page the rows that user may not see (the EmailRecord of every mail RT
sent, without ShowOutgoingEmail). A short page is then no sign of the last one. So every
collection read here asks, in its query, only for rows the operator's user may see: the
history for the types of transaction it needs, the attachments for the transactions it has
read. A short page then is the last one.
"""

from __future__ import annotations

import datetime
import html.parser
import json
import re
import ssl
from collections.abc import Iterable
from typing import Any

import aiohttp

from fluxsupport.channels.portal import NewTicket, PortalError, Ticket, Transaction
from fluxsupport.domain import policy
from fluxsupport.domain.ticketsla import SlaFields

#: Page size of searches and histories (REST 2.0 caps it at 100).
PER_PAGE = 100
#: Texts longer than this are cut: the reply classification needs the start only, and an
#: update's marker opens its text.
CONTENT_LIMIT = 4000
#: RT reads a TicketSQL date in the RT user's own time zone, whatever it says, so
#: updated_since asks for this much more (the furthest time zone west of UTC) and filters
#: on the UTC times RT returns.
TIMEZONE_MARGIN = datetime.timedelta(hours=12)
_FIELDS = "Subject,Status,LastUpdated,Requestor,Cc"
#: Transaction types whose attachment is the text someone wrote.
_TEXT_TYPES = ("Create", "Correspond", "Comment")
#: The history the operator reads: the messages and the changes of status. Every other type
#: is left out by the query, among them those the operator's user may not see.
HISTORY_TYPES = (*_TEXT_TYPES, "Status")
#: Transactions (or attachments) named per request in an ``IN`` query: about 1.5 kB of URL,
#: well within what web servers and proxies in front of RT accept (8 kB).
IDS_PER_QUERY = 100
#: RT's "not set" for a date.
_UNSET = "1970-01-01 00:00:00"


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

    @classmethod
    def connect(cls, config: policy.Portal, token: str) -> RequestTracker:
        """The client of ``channels.portal`` (type ``rt``) with the Secret's portal-token."""
        return cls(config.base_url, config.queue, token, timeout=config.timeout,
                   ca_bundle=config.ca_bundle)

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
        """Transactions the operator's user may see, oldest first: each message (Create,
        Correspond, Comment) with its subject, the start of its text and the names of its
        files, and each change of status with the old and the new status."""
        items = await self._pages(f"ticket/{ticket_id}/history", {
            "fields": "Type,Creator,Created,Field,OldValue,NewValue,Data",
            "fields[Creator]": "Name,EmailAddress",
            "query": _any_of("Type", HISTORY_TYPES)})
        messages = [str(item["id"]) for item in items if item.get("Type") in _TEXT_TYPES]
        texts, files = await self._messages(ticket_id, messages)
        transactions = []
        for item in items:
            creator = item.get("Creator") or {}
            txn = str(item["id"])
            message = item.get("Type") in _TEXT_TYPES
            transactions.append(Transaction(
                id=txn, type=str(item.get("Type", "")),
                creator=str(creator.get("Name") or creator.get("id") or ""),
                creator_email=str(creator.get("EmailAddress") or ""),
                created=_time(item.get("Created")) or datetime.datetime.min.replace(
                    tzinfo=datetime.UTC),
                content=texts.get(txn, ""),
                new_value=str(item.get("NewValue") or ""),
                old_value=str(item.get("OldValue") or ""),
                subject=_subject(item) if message else "",
                attachments=tuple(files.get(txn, ()))))
        transactions.sort(key=lambda t: int(t.id))
        return transactions

    async def _messages(self, ticket_id: str, transactions: list[str]
                        ) -> tuple[dict[str, str], dict[str, list[str]]]:
        """The text (the start of it) and the file names of each of ``transactions``: first
        the list of their attachments without content, then the content of each message's
        body only, so that no file (a PDF, a log archive) is ever downloaded."""
        parts: dict[str, list[tuple[str, str]]] = {}  # transaction: (attachment id, type)
        files: dict[str, list[str]] = {}
        for chunk in _chunks(transactions):
            for part in await self._pages(f"ticket/{ticket_id}/attachments", {
                    "fields": "TransactionId,ContentType,Filename",
                    "query": _any_of("TransactionId", chunk)}):
                txn = str(part.get("TransactionId", ""))
                kind = str(part.get("ContentType") or "").lower()
                if part.get("Filename"):
                    files.setdefault(txn, []).append(str(part["Filename"]))
                elif kind in ("text/plain", "text/html"):
                    parts.setdefault(txn, []).append((str(part["id"]), kind))
        # A message's body is its plain text, or its HTML when it has no plain text.
        bodies: dict[str, tuple[str, bool]] = {}  # attachment id: (transaction, HTML)
        for txn, found in parts.items():
            plain = [attachment for attachment, kind in found if kind == "text/plain"]
            bodies[plain[0] if plain else found[0][0]] = (txn, not plain)
        texts: dict[str, str] = {}
        for chunk in _chunks(list(bodies)):
            for part in await self._pages(f"ticket/{ticket_id}/attachments", {
                    "fields": "Content", "query": _any_of("id", chunk)}):
                txn, html = bodies[str(part["id"])]
                content = str(part.get("Content") or "")
                texts[txn] = (_html_text(content) if html else content)[:CONTENT_LIMIT]
        return texts, files

    async def set_sla(self, ticket_id: str, fields: SlaFields) -> bool:
        """Priority, FinalPriority and Due as ``fields`` says, with one ``PUT`` of the fields
        that differ, and none when all agree: setting the same values again leaves no
        transaction in the ticket. FinalPriority equals Priority, so that RT's escalation
        tools (``rt-crontool`` with LinearEscalate) leave the priority alone."""
        wanted = {"Priority": fields.priority, "FinalPriority": fields.priority,
                  "Due": _rt_time(fields.due)}
        current = _sla(await self._request("GET", f"ticket/{ticket_id}"))
        changes = {key: value for key, value in wanted.items() if current[key] != value}
        if not changes:
            return False
        # RT answers 200 with a message per field, "Permission Denied" included: what it did
        # is what the ticket says afterwards.
        said = await self._request("PUT", f"ticket/{ticket_id}", json_body=changes)
        after = _sla(await self._request("GET", f"ticket/{ticket_id}"))
        kept = [key for key, value in changes.items() if after[key] != value]
        if kept:
            answer = "; ".join(map(str, said)) if isinstance(said, list) else str(said)
            raise PortalError(f"RT did not set {', '.join(kept)} of ticket {ticket_id} "
                              f"({answer[:300]}): grant the operator's RT user ModifyTicket "
                              f"on the queue", transient=False)
        return True

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
        ticket_id = str(record["id"])
        return Ticket(id=ticket_id, url=self.url(ticket_id),
                      subject=str(record.get("Subject") or ""),
                      status=str(record.get("Status") or "").lower(),
                      last_updated=_time(record.get("LastUpdated")),
                      requestors=_addresses(record.get("Requestor")),
                      ccs=_addresses(record.get("Cc")),
                      priority=_int(record.get("Priority")), due=_time(record.get("Due")))

    async def _search(self, query: str) -> list[Ticket]:
        items = await self._pages("tickets", {"query": query, "orderby": "id", "order": "ASC",
                                              "fields": _FIELDS,
                                              "fields[Requestor]": "EmailAddress",
                                              "fields[Cc]": "EmailAddress"})
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


def _any_of(field: str, values: Iterable[str]) -> str:
    """A REST 2.0 JSON query (``query=[...]``) for rows whose ``field`` is one of
    ``values``: about 8 characters of URL per id."""
    return json.dumps([{"field": field, "operator": "IN", "value": list(values)}],
                      separators=(",", ":"))


def _chunks(ids: list[str]) -> list[list[str]]:
    return [ids[start:start + IDS_PER_QUERY] for start in range(0, len(ids), IDS_PER_QUERY)]


def _subject(item: dict[str, Any]) -> str:
    """RT keeps a message's subject in its transaction's Data, and "No Subject" for a
    message that had none."""
    subject = str(item.get("Data") or "").strip()
    return "" if subject == "No Subject" else subject


def _addresses(people: Any) -> tuple[str, ...]:
    return tuple(str(p.get("EmailAddress") or p.get("id"))
                 for p in people or () if isinstance(p, dict))


def _sla(record: dict[str, Any]) -> dict[str, Any]:
    """A ticket's Priority, FinalPriority and Due as set_sla compares them."""
    return {"Priority": _int(record.get("Priority")),
            "FinalPriority": _int(record.get("FinalPriority")),
            "Due": _rt_time(_time(record.get("Due")))}


def _int(value: Any) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def _rt_time(moment: datetime.datetime | None) -> str:
    """A date as RT stores it (UTC, whole seconds), or RT's "not set"."""
    if moment is None:
        return _UNSET
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


class _Text(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _html_text(markup: str) -> str:
    """The text of an HTML message (RT's web editor writes HTML), tags left out: enough to
    see the marks that open a reply, which is all the operator reads it for."""
    parser = _Text()
    parser.feed(markup[:CONTENT_LIMIT * 4])
    parser.close()
    return "".join(parser.parts).strip()


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
