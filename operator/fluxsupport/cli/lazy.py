"""Command groups whose subcommands are imported only when one of them runs.

``fluxsupport sla due`` must start in a fraction of a second, and the online commands pull in
kopf and the kubernetes client (about 1 s of imports). A group names each lazy subcommand by
``module:attribute`` and keeps its one-line help here, so that ``--help`` lists every command
without importing any of them. ``tests/unit/test_cli_startup.py`` checks that these lines equal
the commands' own help and that the offline commands import no kube layer.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from typing import Any, ClassVar

import typer
from typer import core

# typer carries its own copy of click; its group methods are typed with that copy's classes.
from typer._click import Context, HelpFormatter

_LISTING = "fluxsupport.cli.lazy.listing"


@dataclasses.dataclass(frozen=True)
class Lazy:
    """Where a subcommand lives and the line ``--help`` shows for it."""

    target: str  # "module:attribute": a Typer app or a command function
    short_help: str

    def load(self, name: str) -> core.TyperCommand | core.TyperGroup:
        module, _, attribute = self.target.partition(":")
        try:
            found: Any = getattr(importlib.import_module(module), attribute)
        except ModuleNotFoundError as error:
            # The wheel and the image leave out what only the development tools use
            # (cryptography for devcluster and demo): say so instead of a traceback.
            typer.echo(f"error: `fluxsupport {name}` needs the Python module {error.name!r}, "
                       "which this installation does not have; the development commands "
                       "(devcluster, demo) run from a checkout's `make venv` "
                       "(pip install -e '.[dev]')", err=True)
            raise typer.Exit(1) from error
        command: core.TyperCommand | core.TyperGroup
        if isinstance(found, typer.Typer):
            # A group even with one command (`sla due`), as when it was added with add_typer.
            command = typer.main.get_group(found)
        else:
            single = typer.Typer(add_completion=False)
            single.command(name)(found)
            made = typer.main.get_command(single)
            assert isinstance(made, core.TyperCommand)
            command = made
        command.name = name
        return command


class LazyGroup(core.TyperGroup):
    """A Typer group with subcommands from :attr:`lazy` besides those registered eagerly."""

    lazy: ClassVar[Mapping[str, Lazy]] = {}

    def list_commands(self, ctx: Context) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in self.lazy if n not in self.commands)]

    def get_command(self, ctx: Context, cmd_name: str) -> Any:
        found = super().get_command(ctx, cmd_name)
        entry = self.lazy.get(cmd_name)
        if found is not None or entry is None:
            return found
        if ctx.meta.get(_LISTING):
            # Only the name and the line are shown: a stand-in spares the import.
            return core.TyperCommand(name=cmd_name, short_help=entry.short_help,
                                     help=entry.short_help)
        command = entry.load(cmd_name)
        self.commands[cmd_name] = command
        return command

    def format_help(self, ctx: Context, formatter: HelpFormatter) -> None:
        ctx.meta[_LISTING] = True
        try:
            super().format_help(ctx, formatter)
        finally:
            del ctx.meta[_LISTING]
