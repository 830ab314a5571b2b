"""The ``fluxsupport`` command.

Exit codes: 0 success, 1 a failure while doing the work (cluster unreachable, build
failed), 2 bad input (unknown option, malformed value, missing object).
"""

from __future__ import annotations

import typer

from fluxsupport.cli import demo, devcluster, operator_cmd

app = typer.Typer(
    name="fluxsupport",
    help="Business-hours support SLAs and security-bulletin verdicts for Flux CD.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("run")(operator_cmd.run)
app.command("demo")(demo.demo)
app.add_typer(devcluster.app, name="devcluster")


def main() -> None:
    app()
