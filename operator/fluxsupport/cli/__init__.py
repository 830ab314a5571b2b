"""The ``fluxsupport`` command.

Exit codes: 0 success, 1 a failure while doing the work (cluster unreachable, build
failed), 2 bad input (unknown option, malformed value, missing object).
"""

from __future__ import annotations

import typer

from fluxsupport.cli import bulletin, case, demo, devcluster, operator_cmd, report, sla

app = typer.Typer(
    name="fluxsupport",
    help="Business-hours support SLAs and security-bulletin verdicts for Flux CD.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("run")(operator_cmd.run)
app.command("demo")(demo.demo)
app.command("report")(report.report)
app.add_typer(devcluster.app, name="devcluster")
app.add_typer(case.app, name="case")
app.add_typer(sla.app, name="sla")
app.add_typer(bulletin.app, name="bulletin")


def main() -> None:
    app()
