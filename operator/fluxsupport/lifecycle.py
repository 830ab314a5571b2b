"""What every long-running part of the operator offers the run loop (app/runner.py): start and
stop. The run loop builds the list of its components, starts them in order, runs kopf (peering
keep-alive, login) until the process is told to stop, and stops them in reverse order."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Protocol


class Component(Protocol):
    async def start(self) -> None:
        """Start the background work and return: at once, or once what the rest needs
        first is done (the API server's version, say)."""

    async def stop(self) -> None:
        """End the background work and let go of what it holds (connections). Safe to call
        when it never started."""


class Tasks:
    """The background tasks of one component, cancelled together."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []

    def spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coroutine, name=name))

    async def cancel(self) -> None:
        """Cancel every task and wait until they have ended."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
