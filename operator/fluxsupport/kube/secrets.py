"""Secrets, read with the operator's identity: the chart grants each one it needs by name."""

from __future__ import annotations

import base64

from fluxsupport.kube import api, objects


async def read(client: api.KubeClient, namespace: str, name: str) -> dict[str, str]:
    """The Secret's data, decoded. Raises api.ApiError (403: not granted, objects.NotFound:
    missing) or one of api.TRANSPORT_ERRORS; the caller says what to fix, since it knows what
    the Secret is for."""
    body = await objects.Objects(client, objects.SECRETS, namespace).get(name)
    return {key: base64.b64decode(value).decode()
            for key, value in (body.get("data") or {}).items()}
