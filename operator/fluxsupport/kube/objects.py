"""Typed operations on the API server's objects: where each kind lives, and what a read, a
create, a replace or a delete answered. No other layer builds a URL or reads an HTTP status.

The answers the operator acts on have a type of their own, subclasses of api.ApiError so that
the write path and the schedulers treat them as before:

- a create of a name that exists returns None (it was made before: by a crash's predecessor,
  another replica, a person), not an error;
- a delete of an object that is gone returns False;
- ``NotFound`` (404), ``Conflict`` (409: a stale resourceVersion, a concurrent write) and
  ``Invalid`` (400, 422: the object itself is refused) otherwise.

Any other failure is an api.ApiError as the client raised it, or one of api.TRANSPORT_ERRORS.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Callable
from typing import Any

from fluxsupport import constants
from fluxsupport.kube import api, reflector


class NotFound(api.ApiError):
    """404: no such object (or no such kind: a CRD that is not installed)."""


class Conflict(api.ApiError):
    """409: the object changed since it was read, or another write won."""


class Invalid(api.ApiError):
    """400 or 422: the API server refuses the object itself (schema, CEL rules)."""


_TYPED: dict[int, type[api.ApiError]] = {404: NotFound, 409: Conflict, 400: Invalid,
                                         422: Invalid}


def typed(error: api.ApiError) -> api.ApiError:
    """``error`` as its subclass above, when it has one."""
    cls = _TYPED.get(error.status)
    if cls is None or isinstance(error, cls):
        return error
    return cls(error.status, error.message)


@dataclasses.dataclass(frozen=True)
class Kind:
    """A resource type and where its objects live."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        """The collection (``name`` None) or the object; ``namespace`` None for a
        cluster-scoped kind, or for the objects of every namespace."""
        prefix = "/api/" if "/" not in self.api_version else "/apis/"
        scope = f"/namespaces/{namespace}" if namespace else ""
        return f"{prefix}{self.api_version}{scope}/{self.plural}" + (f"/{name}" if name else "")

    def ref(self, name: str, namespace: str | None = None, uid: str | None = None
            ) -> api.ObjectRef:
        """What status writes and Events name the object by."""
        return api.ObjectRef(self.api_version, self.kind, self.plural, name,
                             namespace if self.namespaced else None, uid)


CONFIGMAPS = Kind("v1", "ConfigMap", "configmaps")
SECRETS = Kind("v1", "Secret", "secrets")
EVENTS = Kind("v1", "Event", "events")
PODS = Kind("v1", "Pod", "pods")
DEPLOYMENTS = Kind("apps/v1", "Deployment", "deployments")
SUPPORTCASES = Kind(constants.API_VERSION, constants.SUPPORTCASE_KIND,
                    constants.SUPPORTCASE_PLURAL)
BULLETINS = Kind(constants.API_VERSION, constants.BULLETIN_KIND, constants.BULLETIN_PLURAL,
                 namespaced=False)
UPDATECHECKS = Kind(constants.API_VERSION, constants.UPDATECHECK_KIND,
                    constants.UPDATECHECK_PLURAL, namespaced=False)
#: The Flux Operator's report and instance (optional: absent without the Flux Operator).
FLUXREPORTS = Kind("fluxcd.controlplane.io/v1", "FluxReport", "fluxreports")
FLUXINSTANCES = Kind("fluxcd.controlplane.io/v1", "FluxInstance", "fluxinstances")
#: The Flux sources whose artifacts the operator reads, by kind (``sourceRef.kind``).
FLUX_SOURCES = {kind.kind: kind for kind in (
    Kind("source.toolkit.fluxcd.io/v1", "GitRepository", "gitrepositories"),
    Kind("source.toolkit.fluxcd.io/v1", "OCIRepository", "ocirepositories"))}
#: kopf's peering object (kopf.dev, cluster-wide peering).
PEERINGS = Kind("kopf.dev/v1", "ClusterKopfPeering", "clusterkopfpeerings", namespaced=False)


class Objects:
    """The objects of one kind in one namespace; ``namespace`` None for a cluster-scoped
    kind, or (reads and watches) for every namespace of a namespaced one."""

    def __init__(self, client: api.KubeClient, kind: Kind, namespace: str | None = None
                 ) -> None:
        self.client = client
        self.kind = kind
        self.namespace = namespace

    def path(self, name: str | None = None) -> str:
        return self.kind.path(self.namespace, name)

    def ref(self, name: str, uid: str | None = None) -> api.ObjectRef:
        return self.kind.ref(name, self.namespace, uid)

    async def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        try:
            return await self.client.request(method, path, body)
        except api.ApiError as error:
            converted = typed(error)
            if converted is error:
                raise
            raise converted from error

    async def get(self, name: str) -> dict[str, Any]:
        return await self._call("GET", self.path(name))

    async def list(self, label_selector: str = "") -> list[dict[str, Any]]:
        """Every object, or those ``label_selector`` (``key=value``, ``key!=value``) selects."""
        query = f"?{urllib.parse.urlencode({'labelSelector': label_selector})}" \
            if label_selector else ""
        listing = await self._call("GET", self.path() + query)
        return list(listing.get("items") or [])

    async def create(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The object as stored, or None if one of that name exists already."""
        try:
            return await self._call("POST", self.path(), body)
        except Conflict:
            return None

    async def replace(self, body: dict[str, Any]) -> dict[str, Any]:
        """Write the whole object; its resourceVersion is the precondition (Conflict when
        the object changed since it was read)."""
        return await self._call("PUT", self.path(body["metadata"]["name"]), body)

    async def delete(self, name: str) -> bool:
        """Whether the object was there to delete."""
        try:
            await self._call("DELETE", self.path(name))
        except NotFound:
            return False
        return True

    def watch(self, on_change: Callable[[], None], *, label_selector: str = "",
              **options: Any) -> reflector.Watch:
        """A list+watch of these objects (reflector.Watch, with its ``options``)."""
        query = f"?{urllib.parse.urlencode({'labelSelector': label_selector})}" \
            if label_selector else ""
        return reflector.Watch(self.client, self.path() + query, on_change, **options)


async def server_version(client: api.KubeClient) -> dict[str, Any]:
    """The API server's /version: ``gitVersion`` and the Go build it runs."""
    return await client.request("GET", "/version")
