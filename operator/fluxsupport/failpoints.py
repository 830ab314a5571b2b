"""Crash points for the tests of exactly-once side effects.

With ``FLUXSUPPORT_FAILPOINT=<name>`` in its environment the operator SIGKILLs itself when it
reaches the step ``name``: the crashes the exactly-once design is about. The steps:

- ``before-ticket-create``: the attempt is recorded, the portal is not asked yet;
- ``after-ticket-create``: the portal made the ticket, status does not say so yet;
- ``before-email-send``: the Message-ID is recorded, the email is not sent yet;
- ``after-email-send``: the SMTP server took it, status does not say so yet;
- ``before-update-post`` and ``after-update-post``: around the comment of a ticket update
  (an escalation tier's comment is one);
- ``before-escalation-email-send``: an escalation email's intent is recorded, it is not sent
  (a case's or a SecurityBulletin's).

With ``FLUXSUPPORT_FAILPOINT_CASE=<namespace>/<name>`` (a bulletin: ``<name>``) as well, only
that object's step counts: a test's operator also acts on the objects other tests left.

Unset (always, outside the tests) it costs one dictionary lookup per step.
"""

from __future__ import annotations

import os
import signal

#: The environment variable that names the step to crash at.
VARIABLE = "FLUXSUPPORT_FAILPOINT"
#: The one that limits it to one case, ``<namespace>/<name>``.
CASE_VARIABLE = "FLUXSUPPORT_FAILPOINT_CASE"


def reach(step: str, case: tuple[str, ...]) -> None:
    """Die here, at once and without cleanup, if the environment names ``step`` (and, if it
    names one, ``case``: namespace and name, or a cluster-scoped object's name)."""
    if os.environ.get(VARIABLE) != step:
        return
    only = os.environ.get(CASE_VARIABLE)
    if only and only != "/".join(case):
        return
    os.kill(os.getpid(), signal.SIGKILL)
