"""The helpdesks the portal channel can talk to, by ``channels.portal.type`` of the policy.

Each one is a module beside ``rt.py`` that implements ``portal.Portal`` and is made from the
policy's portal settings and the Secret's ``portal-token``. Adding one is that module, its
line in PORTALS, and its name in ``domain/policy.py``'s ``Portal.type`` and in the chart's
values schema (the policy is checked offline, without this package);
``tests/unit/test_portals.py`` checks that the three lists agree.
"""

from __future__ import annotations

from collections.abc import Callable

from fluxsupport.channels import portal, rt
from fluxsupport.domain import policy

#: Makes the client of one helpdesk from the portal settings and the token.
Connect = Callable[[policy.Portal, str], portal.Portal]

PORTALS: dict[str, Connect] = {
    "rt": rt.RequestTracker.connect,
}


def connect(config: policy.Portal, token: str) -> portal.Portal:
    """The client of the helpdesk ``config.type`` names."""
    return PORTALS[config.type](config, token)
