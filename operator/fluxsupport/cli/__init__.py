"""The ``fluxsupport`` command.

Exit codes: 0 success, 1 a failure while doing the work (cluster unreachable, build
failed), 2 bad input (unknown option, malformed value, missing object).

Every command is imported only when it runs (see :mod:`fluxsupport.cli.lazy`): the offline
ones (``sla``, ``bulletin check``, ``bulletin import``, ``updates check``, ``--help``) never
load kopf or the kubernetes client.
"""

from __future__ import annotations

from typing import ClassVar

import typer

from fluxsupport.cli.lazy import Lazy, LazyGroup


class _Root(LazyGroup):
    lazy: ClassVar = {
        "run": Lazy("fluxsupport.cli.operator_cmd:run",
                    "Run the operator against the cluster of the current kubeconfig."),
        "demo": Lazy("fluxsupport.cli.demo:demo",
                     "Start a local control plane, a realistic flux-system, the operator and "
                     "samples; report."),
        "report": Lazy("fluxsupport.cli.report:report",
                       "Cluster-wide table of SupportCases and SecurityBulletin verdicts."),
        "devcluster": Lazy("fluxsupport.cli.devcluster:app",
                           "Build and run a local Kubernetes control plane (etcd + "
                           "kube-apiserver)."),
        "case": Lazy("fluxsupport.cli.case:app", "Create, answer, close and list SupportCases."),
        "sla": Lazy("fluxsupport.cli.sla:app", "Business-hours SLA arithmetic."),
        "bulletin": Lazy("fluxsupport.cli.bulletin:app",
                         "Check, build and list SecurityBulletins."),
        "updates": Lazy("fluxsupport.cli.updates:app",
                        "Compare the running Flux with the distribution's releases."),
    }


app = typer.Typer(
    name="fluxsupport",
    cls=_Root,
    help="Business-hours support SLAs and security-bulletin verdicts for Flux CD.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    # Typer builds a group only for an app with commands or a callback; the commands are lazy.
    pass


def main() -> None:
    app()
