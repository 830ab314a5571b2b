"""A support mailbox on loopback for the demo: an SMTP server that keeps what it receives.

aiosmtpd is a development dependency (the ``dev`` extra that ``make demo`` installs); an
operator installed from the wheel alone never starts a mail server.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import threading
from typing import Any

from fluxsupport.devcluster import cluster


class Mailbox:
    def __init__(self) -> None:
        self.port = 0
        self.messages: list[email.message.EmailMessage] = []
        self._lock = threading.Lock()
        self._controller: Any = None

    def start(self) -> None:
        from aiosmtpd.controller import Controller

        self.port = cluster.free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.original_content or envelope.content,
                                           policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        with self._lock:
            self.messages.append(message)
        return "250 OK"
