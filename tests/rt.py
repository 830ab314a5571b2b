"""The real Request Tracker 5 and a loopback SMTP server, for the tests of the support channels.

Plain classes, no fixtures: conftest wires them in. Everything listens on 127.0.0.1, lives in
the caller's temporary folder and dies with the test process (PR_SET_PDEATHSIG), so nothing
survives a run, a Ctrl-C or a crash. RT comes from Debian's packages (``make rt``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import email
import email.policy
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

RT_SHARE = pathlib.Path("/usr/share/request-tracker5")
RT_LIB = RT_SHARE / "lib"
RT_SERVER = RT_SHARE / "libexec" / "rt-server"
RT_SETUP_DATABASE = pathlib.Path("/usr/sbin/rt-setup-database-5")
RT_MAILGATE = pathlib.Path(shutil.which("rt-mailgate") or "/usr/bin/rt-mailgate")
CACHE = pathlib.Path(os.environ.get("FLUXSUPPORT_CACHE",
                                    pathlib.Path.home() / ".cache" / "fluxsupport")) / "rt"

#: Seconds `apt-get install --no-install-recommends request-tracker5 rt5-db-sqlite
#: rt5-standalone rt5-clients` took on a fresh machine of this kind (mk/rt.mk prints its own).
INSTALL_SECONDS = 54.0

#: RT's $rtname: the name in the subject tags of its mail, "[fluxsupport.test #42]".
RTNAME = "fluxsupport.test"
CORRESPOND = "support@fluxsupport.test"
COMMENT = "support-comment@fluxsupport.test"
OPERATOR = "fluxsupport-operator"
OPERATOR_EMAIL = "fluxsupport-operator@fluxsupport.test"
SUPPORT = "alice"
SUPPORT_EMAIL = "alice@support.fluxsupport.test"

#: Rights on the queue. The operator files, reads, updates and comments on its tickets; alice
#: is the support team (she replies and resolves); Everyone is the mail gateway: a ticket made
#: from an email is created by its (unprivileged, auto-created) sender.
OPERATOR_RIGHTS = ("SeeQueue", "CreateTicket", "ShowTicket", "ModifyTicket", "CommentOnTicket",
                   "ShowTicketComments")
SUPPORT_RIGHTS = ("SeeQueue", "ShowTicket", "ModifyTicket", "ReplyToTicket", "CommentOnTicket",
                  "ShowTicketComments", "OwnTicket", "ShowOutgoingEmail")
EVERYONE_RIGHTS = ("CreateTicket", "ReplyToTicket")
#: victor may read the queue's tickets and change nothing: a person reading a thread with a
#: token of their own, or an operator user that lacks ModifyTicket.
VIEWER = "victor"
VIEWER_RIGHTS = ("SeeQueue", "ShowTicket", "ShowTicketComments")

_PR_SET_PDEATHSIG = 1
#: Loaded here, not in the forked child: dlopen after fork in a threaded process can hang.
_LIBC = ctypes.CDLL(None, use_errno=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when the test process dies, however it dies."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def rt_version() -> str:
    text = (RT_LIB / "RT" / "Generated.pm").read_text()
    return text.split("our $VERSION = '", 1)[1].split("'", 1)[0]


# Runs once per start against the copied database, before the server: queue, users, rights and
# tokens in one Perl process (about 2 s, most of it loading RT).
_SETUP_PERL = r"""
use strict; use warnings;
use RT; RT::LoadConfig(); RT::Init();
my ($qname, $rights) = @ARGV;
my %rights = %{ JSON::decode_json($rights) };
my $sys = RT->SystemUser;
my $queue = RT::Queue->new($sys);
$queue->Load($qname);
unless ($queue->id) {
    my ($id, $msg) = $queue->Create(Name => $qname, Description => 'fluxsupport tests');
    die "queue: $msg" unless $id;
}
my %token;
for my $who (['operator', 'fluxsupport-operator', $ENV{OPERATOR_EMAIL}, 'FluxSupport Operator'],
             ['support', 'alice', $ENV{SUPPORT_EMAIL}, 'Alice Support'],
             ['viewer', 'victor', 'victor@support.fluxsupport.test', 'Victor Viewer'],
             ['admin', 'root', undef, undef]) {
    my ($key, $name, $mail, $real) = @$who;
    my $user = RT::User->new($sys);
    $user->Load($name);
    unless ($user->id) {
        my ($id, $msg) = $user->Create(Name => $name, EmailAddress => $mail, RealName => $real,
                                       Privileged => 1, Password => "$name-password");
        die "user $name: $msg" unless $id;
    }
    for my $right (@{ $rights{$key} || [] }) {
        my ($ok, $msg) = $user->PrincipalObj->GrantRight(Right => $right, Object => $queue);
        die "grant $right to $name: $msg" unless $ok;
    }
    my $token = RT::AuthToken->new($sys);
    my ($ok, $msg, $auth) = $token->Create(Owner => $user->id, Description => 'fluxsupport tests');
    die "token for $name: $msg" unless $ok;
    $token{$key} = $auth;
}
my $everyone = RT::Group->new($sys);
$everyone->LoadSystemInternalGroup('Everyone');
for my $right (@{ $rights{everyone} }) {
    my ($ok, $msg) = $everyone->PrincipalObj->GrantRight(Right => $right, Object => $queue);
    die "grant $right to Everyone: $msg" unless $ok;
}
print JSON::encode_json(\%token), "\n";
"""


class RequestTracker:
    """One RT 5 instance: its own SQLite database, Mason cache, sessions, log and config."""

    def __init__(self, *, queue: str = "FluxSupport", smtp_port: int | None = None) -> None:
        self.queue = queue
        #: Where RT hands its outgoing mail (a MailGateway); None: RT keeps it in an mbox file.
        self.smtp_port = smtp_port
        self.correspond_address = CORRESPOND
        self.comment_address = COMMENT
        self.operator = OPERATOR
        self.support = SUPPORT
        self.workdir = pathlib.Path()
        self.port = 0
        self.url = ""
        self.operator_token = ""
        self.support_token = ""
        self.viewer_token = ""
        self.admin_token = ""
        #: Measured seconds: "install" (recorded), "db_init" (0 when the cached copy served),
        #: "db_copy", "setup" (queue/users/rights/tokens), "startup" (spawn to first answer).
        self.timings: dict[str, float] = {"install": INSTALL_SECONDS}
        self._process: subprocess.Popen[bytes] | None = None

    # -- life cycle -------------------------------------------------------------------------

    def start(self, workdir: pathlib.Path) -> None:
        if not RT_SERVER.exists():
            raise RuntimeError(f"{RT_SERVER} is missing: run `make rt` (Debian's request-tracker5)")
        self.workdir = workdir
        for sub in ("etc", "mason", "sessions", "log", "var"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self._write_config()
        pristine = self._pristine_database()
        started = time.monotonic()
        shutil.copyfile(pristine, workdir / "rt.db")
        self.timings["db_copy"] = time.monotonic() - started
        self._setup()
        self._spawn()

    def start_again(self) -> None:
        """Restart after stop(): same database, same port (an outage, not a new RT)."""
        self._spawn()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def _env(self) -> dict[str, str]:
        return {**os.environ, "RT_SITE_CONFIG": str(self.workdir / "etc" / "RT_SiteConfig.pm"),
                "RT_SITE_CONFIG_DIR": str(self.workdir / "etc" / "RT_SiteConfig.d"),
                "PERL5LIB": str(RT_LIB), "OPERATOR_EMAIL": OPERATOR_EMAIL,
                "SUPPORT_EMAIL": SUPPORT_EMAIL}

    def _write_config(self) -> None:
        etc = self.workdir / "etc"
        (etc / "RT_SiteConfig.d").mkdir(exist_ok=True)  # empty: not the package's /etc ones
        w = self.workdir
        if self.smtp_port is None:
            mail = "Set($MailCommand, 'mbox');"
        else:
            # RT 5.0 has no 'smtp' MailCommand any more; a code reference is its hook for
            # "send it yourself" (RT::Test does the same). Loopback only, to the MailGateway.
            mail = _SMTP_MAIL_COMMAND.replace("SMTP_PORT", str(self.smtp_port))
        (etc / "RT_SiteConfig.pm").write_text(f"""
Set($rtname, '{RTNAME}');
Set($Organization, 'fluxsupport.test');
Set($Timezone, 'UTC');
Set($DatabaseType, 'SQLite');
Set($DatabaseName, '{w}/rt.db');
Set($WebPort, {self.port});
Set($WebDomain, '127.0.0.1');
Set($WebBaseURL, 'http://127.0.0.1:{self.port}');
Set($WebPath, '');
Set($CorrespondAddress, '{CORRESPOND}');
Set($CommentAddress, '{COMMENT}');
Set($OwnerEmail, 'root@fluxsupport.test');
Set($LogToSTDERR, 'warning');
Set($LogToSyslog, undef);
Set($LogDir, '{w}/log');
Set($LogToFile, 'info');
Set($LogToFileNamed, 'rt.log');
Set($HTMLFormatter, 'core');
Set(@ReferrerWhitelist, qw(127.0.0.1:{self.port}));
{mail}
$RT::MasonDataDir = '{w}/mason';
$RT::MasonSessionDir = '{w}/sessions';
$RT::VarPath = '{w}/var';
1;
""")

    def _pristine_database(self) -> pathlib.Path:
        """A freshly initialised database, made once per RT version (about 4 s) and copied."""
        cached = CACHE / f"rt-{rt_version()}.sqlite"
        if cached.exists():
            self.timings["db_init"] = 0.0
            return cached
        CACHE.mkdir(parents=True, exist_ok=True)
        target = self.workdir / "rt.db"
        started = time.monotonic()
        subprocess.run([str(RT_SETUP_DATABASE), "--action", "init", "--skip-create"],
                       env=self._env(), check=True, capture_output=True, timeout=300)
        self.timings["db_init"] = time.monotonic() - started
        partial = cached.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(target, partial)
        partial.replace(cached)
        return cached

    def _setup(self) -> None:
        started = time.monotonic()
        rights = {"operator": OPERATOR_RIGHTS, "support": SUPPORT_RIGHTS,
                  "viewer": VIEWER_RIGHTS, "everyone": EVERYONE_RIGHTS}
        done = subprocess.run(["perl", f"-I{RT_LIB}", "-MJSON", "-e", _SETUP_PERL, self.queue,
                               json.dumps(rights)], env=self._env(), check=True,
                              capture_output=True, timeout=120)
        tokens = json.loads(done.stdout.decode().strip().splitlines()[-1])
        self.operator_token = tokens["operator"]
        self.support_token = tokens["support"]
        self.viewer_token = tokens["viewer"]
        self.admin_token = tokens["admin"]
        self.timings["setup"] = time.monotonic() - started

    def _spawn(self) -> None:
        log = (self.workdir / "log" / "rt-server.log").open("ab")
        started = time.monotonic()
        # Standalone (HTTP::Server::PSGI) is one process, so the death signal reaches all of
        # RT; Starlet's forked workers would outlive a killed test process.
        self._process = subprocess.Popen(
            ["perl", str(RT_SERVER), "--server", "Standalone", "--host", "127.0.0.1",
             "--port", str(self.port)],
            env=self._env(), cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl runs
            start_new_session=True)
        log.close()
        deadline = started + 120
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"rt-server exited with {self._process.returncode}: "
                                   f"{self.server_log()[-3000:]}")
            try:
                self.rest("GET", "queues/all", token=self.admin_token, timeout=5)
                break
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("rt-server did not answer in 120 s: "
                                       + self.server_log()[-3000:]) from None
                time.sleep(0.2)
        self.timings["startup"] = time.monotonic() - started

    def server_log(self) -> str:
        path = self.workdir / "log" / "rt-server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- REST 2.0 as the support team or the administrator -----------------------------------

    def rest(self, method: str, path: str, body: Any = None, *, token: str | None = None,
             timeout: float = 30) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}REST/2.0/{path}", data=data, method=method,
            headers={"Authorization": f"token {token or self.admin_token}",
                     "Content-Type": "application/json", "Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def reply_as_support(self, ticket_id: str | int, text: str) -> Any:
        """A Correspond transaction by alice (RT mails it to the requestors)."""
        return self.rest("POST", f"ticket/{ticket_id}/correspond",
                         {"Content": text, "ContentType": "text/plain"},
                         token=self.support_token)

    def resolve(self, ticket_id: str | int) -> Any:
        return self.rest("PUT", f"ticket/{ticket_id}", {"Status": "resolved"},
                         token=self.support_token)

    def ticket(self, ticket_id: str | int) -> dict[str, Any]:
        result: dict[str, Any] = self.rest("GET", f"ticket/{ticket_id}")
        return result

    def tickets(self, query: str) -> list[tuple[str, str]]:
        """(id, subject) of every ticket the TicketSQL ``query`` matches, by id."""
        found: list[tuple[str, str]] = []
        page = 1
        while True:
            params = urllib.parse.urlencode({"query": query, "fields": "Subject",
                                             "orderby": "id", "per_page": 100, "page": page})
            result = self.rest("GET", f"tickets?{params}")
            found += [(str(item["id"]), item.get("Subject", "")) for item in result["items"]]
            if page >= int(result.get("pages") or 1):
                return found
            page += 1

    def ticket_text(self, ticket_id: str | int) -> str:
        """Every text attachment of the ticket (its body, replies, comments), joined."""
        params = urllib.parse.urlencode({"fields": "Content,ContentType", "per_page": 100})
        result = self.rest("GET", f"ticket/{ticket_id}/attachments?{params}")
        texts = [str(item.get("Content") or "") for item in result["items"]
                 if item.get("ContentType") == "text/plain"]
        return "\n".join(texts)

    def history(self, ticket_id: str | int) -> list[dict[str, Any]]:
        """Every transaction as the administrator sees it: id, Type, Creator, Created."""
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            params = urllib.parse.urlencode({"fields": "Type,Creator,Created,Field,NewValue",
                                             "fields[Creator]": "Name,EmailAddress",
                                             "per_page": 100, "page": page})
            result = self.rest("GET", f"ticket/{ticket_id}/history?{params}")
            items += result["items"]
            if page >= int(result.get("pages") or 1):
                return items
            page += 1


_SMTP_MAIL_COMMAND = r"""
Set($MailCommand, sub {
    my $entity = shift;
    require Net::SMTP;
    require Email::Address;
    my $head = $entity->head;
    my ($from) = map { $_->address } Email::Address->parse($head->get('From') // '');
    my @to = map { $_->address } map { Email::Address->parse($head->get($_) // '') }
             qw(To Cc Bcc);
    $head->delete('Bcc');
    return 1 unless @to;
    my $smtp = Net::SMTP->new('127.0.0.1', Port => SMTP_PORT, Timeout => 30)
        or do { $RT::Logger->crit("SMTP 127.0.0.1:SMTP_PORT: $@"); return 0 };
    my $ok = $smtp->mail($from || 'rt@fluxsupport.test')
        && $smtp->to(@to) && $smtp->data($entity->stringify);
    $RT::Logger->crit('SMTP refused: ' . $smtp->message) unless $ok;
    $smtp->quit;
    return $ok ? 1 : 0;
});
"""


class MailGateway:
    """An SMTP server on loopback that keeps every message and hands the ones addressed to RT
    to ``rt-mailgate``, as a site's MTA would: RT then makes (or updates) the ticket."""

    def __init__(self, *, correspond_address: str = CORRESPOND, queue: str = "FluxSupport",
                 rt_url: str = "") -> None:
        self.correspond_address = correspond_address
        self.queue = queue
        #: Set once RT runs (RT needs the gateway's port first, the gateway RT's URL later).
        self.rt_url = rt_url
        self.port = 0
        #: (envelope sender, recipients, the message as received), in arrival order.
        self.messages: list[tuple[str, list[str], bytes]] = []
        #: (exit code, output) of each rt-mailgate run.
        self.mailgate_runs: list[tuple[int, str]] = []
        #: Messages for RT that rt-mailgate could not hand over (RT down): see redeliver().
        self.deferred: list[bytes] = []
        #: Messages to refuse with 554 before taking them, as a server that refuses a message
        #: does: a byte string the message contains, and how many more times to refuse it.
        self.refuse: dict[bytes, int] = {}
        #: The messages refused so far.
        self.refused: list[bytes] = []
        self._changed = threading.Condition()
        self._controller: Any = None

    def start(self) -> None:
        from aiosmtpd.controller import Controller

        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """aiosmtpd's hook. Awaits rt-mailgate without blocking the loop: while RT handles
        the message it sends its autoreply back to this same server."""
        data: bytes = envelope.original_content or envelope.content
        for marker, left in self.refuse.items():
            if left and marker in data:
                self.refuse[marker] = left - 1
                self.refused.append(data)
                return "554 5.7.1 message refused"
        recipients = [str(r) for r in envelope.rcpt_tos]
        reply = "250 OK"
        if self.rt_url and any(r.lower() == self.correspond_address for r in recipients):
            code, output = await self._mailgate(data)
            self.mailgate_runs.append((code, output))
            if code != 0:
                # As an MTA does: accepted, queued, delivered to RT on the next queue run.
                self.deferred.append(data)
                reply = "250 OK queued"
        with self._changed:
            self.messages.append((str(envelope.mail_from), recipients, data))
            self._changed.notify_all()
        return reply

    def redeliver(self) -> int:
        """A queue run (``exim -qff``): hand the deferred messages to RT again; returns how
        many are still deferred."""
        waiting, self.deferred = self.deferred, []
        for data in waiting:
            done = subprocess.run(
                [str(RT_MAILGATE), "--queue", self.queue, "--action", "correspond",
                 "--url", self.rt_url, "--timeout", "60"], input=data, capture_output=True,
                timeout=90, check=False)
            self.mailgate_runs.append((done.returncode, done.stdout.decode(errors="replace")))
            if done.returncode != 0:
                self.deferred.append(data)
        return len(self.deferred)

    async def _mailgate(self, data: bytes) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            str(RT_MAILGATE), "--queue", self.queue, "--action", "correspond",
            "--url", self.rt_url, "--timeout", "60", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_die_with_parent)
        output, _ = await process.communicate(data)
        return process.returncode or 0, output.decode(errors="replace")

    def wait_for(self, predicate: Callable[[email.message.EmailMessage], bool],
                 timeout: float = 30) -> email.message.EmailMessage:
        """The first message received (already or within ``timeout``) that ``predicate``
        accepts, parsed."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for _, _, data in self.messages:
                    message = email.message_from_bytes(data, policy=email.policy.default)
                    assert isinstance(message, email.message.EmailMessage)
                    if predicate(message):
                        return message
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no matching message in {timeout} s; got "
                                       f"{[(f, t) for f, t, _ in self.messages]}")
                self._changed.wait(left)


class PortalProxy:
    """An HTTP proxy on loopback in front of RT that loses, delays or holds its answers, as a
    load balancer in front of an overloaded RT does. It runs aiohttp on a thread of its own;
    the test sets the modes below between requests.

    - ``swallow_creates``: the next N ``POST ticket`` reach RT (which makes the ticket), and
      their answer never comes back: the operator's request times out; from then on the
      proxy stalls (below), as if RT had stopped answering.
    - ``hold_creates``: the next N ``POST ticket`` wait here, not yet at RT, until release().
    - ``delay_creates``: every ``POST ticket`` reaches RT this many seconds late.
    - ``stall``: every request waits without an answer until heal(), then gets a 503; none
      of them reaches RT, and no answer RT gives after the stall began is passed on.
    - ``unavailable``: every request gets a 503 at once, as from a proxy whose backend is
      down.
    """

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.swallow_creates = 0
        self.hold_creates = 0
        self.delay_creates = 0.0
        self.stall = False
        self.unavailable = False
        #: (method, path) of every request, in arrival order.
        self.requests: list[tuple[str, str]] = []
        #: Creates forwarded to RT, and their HTTP status from RT.
        self.creates: list[int] = []
        #: Creates waiting for release().
        self.held = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._released: asyncio.Event | None = None
        self._healed: asyncio.Event | None = None
        self._session: Any = None

    def start(self) -> None:
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True,
                                        name="portal-proxy")
        self._thread.start()
        if not started.wait(30):
            raise RuntimeError("the portal proxy did not start")

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(30)

    def release(self) -> None:
        """Let the held creates go on to RT."""
        self._set("_released")

    def heal(self) -> None:
        """End ``stall`` and ``unavailable``: requests reach RT again."""
        self.stall = self.unavailable = False
        self._set("_healed")

    def _set(self, name: str) -> None:
        loop = self._loop
        event = getattr(self, name)
        if loop is not None and event is not None:
            loop.call_soon_threadsafe(event.set)

    def _run(self, started: threading.Event) -> None:
        from aiohttp import web

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._released, self._healed = asyncio.Event(), asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        started.set()
        try:
            loop.run_forever()
        finally:
            waiting = asyncio.all_tasks(loop)  # the swallowed and stalled requests
            for task in waiting:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*waiting, return_exceptions=True))
            if self._session is not None:
                loop.run_until_complete(self._session.close())
            loop.run_until_complete(runner.cleanup())
            loop.close()

    async def _handle(self, request: Any) -> Any:
        from aiohttp import web

        body = await request.read()
        self.requests.append((request.method, request.path))
        if self.unavailable:
            return web.Response(status=503, text="no backend")
        if self.stall:
            return await self._stalled()
        create = request.method == "POST" and request.path.rstrip("/").endswith(
            "/REST/2.0/ticket")
        if create and self.hold_creates:
            self.hold_creates -= 1
            self.held += 1
            assert self._released is not None
            await self._released.wait()
            self.held -= 1
        if create and self.delay_creates:
            await asyncio.sleep(self.delay_creates)
        status, data, content_type = await self._forward(request, body)
        if create:
            self.creates.append(status)
            if self.swallow_creates:
                self.swallow_creates -= 1
                self.stall = True
        if self.stall:
            return await self._stalled()
        return web.Response(status=status, body=data, content_type=content_type)

    async def _forward(self, request: Any, body: bytes) -> tuple[int, bytes, str]:
        from aiohttp import ClientSession, ClientTimeout

        if self._session is None:
            self._session = ClientSession(timeout=ClientTimeout(total=120))
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length", "transfer-encoding")}
        async with self._session.request(request.method, self.target + request.path_qs,
                                         data=body or None, headers=headers) as answer:
            return answer.status, await answer.read(), answer.content_type

    async def _stalled(self) -> Any:
        from aiohttp import web

        assert self._healed is not None
        self._healed.clear()
        await self._healed.wait()
        return web.Response(status=503, text="stalled")
