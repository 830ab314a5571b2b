"""The operator's notices to people (a bulletin's escalation contacts) through the email
channel, with the SMTP credentials of the channels' Secret when it has them."""

from __future__ import annotations

import email.message
import time
from collections.abc import Sequence

from fluxsupport.channels import mail
from fluxsupport.domain import policy as policy_module
from fluxsupport.kube import api, secrets

#: How long the Secret read is reused: a rotated password is picked up within this time.
SECRET_TTL_S = 60.0


class Notices:
    def __init__(self, client: api.KubeClient, channels: policy_module.Channels,
                 namespace: str) -> None:
        self.client = client
        self.channels = channels
        self.namespace = namespace
        self._secret: tuple[float, dict[str, str]] | None = None

    @property
    def enabled(self) -> bool:
        return self.channels.email.enabled

    @property
    def cluster(self) -> str:
        return self.channels.cluster

    def build(self, subject: str, body: str, message_id: str,
              recipients: Sequence[str]) -> email.message.EmailMessage:
        """Raises ValueError or TypeError for what the email library refuses."""
        return mail.build_notice(self.channels.email, subject, body, message_id, recipients)

    async def send(self, message: email.message.EmailMessage,
                   recipients: Sequence[str]) -> None:
        """Raises mail.EmailError; a Secret that cannot be read is a refusal (nothing left)."""
        credentials = await self._credentials()
        await mail.send(self.channels.email, message, credentials.get("smtp-username"),
                        credentials.get("smtp-password"), recipients=recipients)

    async def _credentials(self) -> dict[str, str]:
        """No Secret, or one the operator may not read, means no SMTP authentication (an
        internal relay), as for the case's own email."""
        if self._secret is not None and time.monotonic() - self._secret[0] < SECRET_TTL_S:
            return self._secret[1]
        name = self.channels.secret_name
        try:
            data = await secrets.read(self.client, self.namespace, name)
        except api.ApiError as error:
            if error.status not in (403, 404):
                raise mail.EmailError(f"reading Secret {self.namespace}/{name}: {error}") \
                    from error
            data = {}
        except api.TRANSPORT_ERRORS as error:
            raise mail.EmailError(f"reading Secret {self.namespace}/{name}: {error}") \
                from error
        self._secret = (time.monotonic(), data)
        return data
