"""Output in the formats every command offers: a table for people, JSON and YAML for scripts."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from typing import Any

import typer
import yaml


class Format(enum.StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


OutputOption = typer.Option("--output", "-o", help="table, json or yaml.")


def emit(data: Any, fmt: Format, columns: Sequence[tuple[str, str]] = (),
         rows: Sequence[Mapping[str, Any]] = (), title: str | None = None) -> None:
    if fmt is Format.json:
        typer.echo(json.dumps(data, indent=2, sort_keys=False))
    elif fmt is Format.yaml:
        typer.echo(yaml.safe_dump(data, sort_keys=False).rstrip())
    else:
        table(columns, rows, title)


def table(columns: Sequence[tuple[str, str]], rows: Sequence[Mapping[str, Any]],
          title: str | None = None) -> None:
    # rich costs a tenth of a second to import; JSON and YAML output never need it.
    from rich.console import Console
    from rich.table import Table

    grid = Table(title=title, title_justify="left", show_edge=False, header_style="bold")
    for header, _ in columns:
        grid.add_column(header, overflow="fold")
    for row in rows:
        grid.add_row(*(str(row.get(key, "")) for _, key in columns))
    Console(width=200 if not Console().is_terminal else None).print(grid)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` to stderr and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)
