"""`fluxsupport run` names what failed: only a failed bind of the metrics port is reported as
"cannot serve metrics"; a refused connection or a missing file says what it is.

The errors are real ones: aiohttp binding an occupied port, and aiohttp connecting to a closed
one. Only the operator loop is replaced, so that it raises them.
"""

from __future__ import annotations

import asyncio
import pathlib
import socket
from collections.abc import Iterator

import aiohttp
import pytest
from typer.testing import CliRunner

from fluxsupport import cli
from fluxsupport.cli import operator_cmd
from fluxsupport.observability import endpoints


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bind_error(port: int) -> OSError:
    async def start() -> None:
        runner = await endpoints.start("127.0.0.1", port, endpoints.HealthState())
        await runner.cleanup()
    with pytest.raises(OSError, match="address already in use") as caught:
        asyncio.run(start())
    return caught.value


def connect_error(port: int) -> OSError:
    async def connect() -> None:
        async with aiohttp.ClientSession() as session:
            await session.get(f"http://127.0.0.1:{port}/version")
    with pytest.raises(OSError, match="Cannot connect to host") as caught:
        asyncio.run(connect())
    return caught.value


def run_failing_with(error: OSError, monkeypatch: pytest.MonkeyPatch, port: int) -> str:
    def fail(*_: object, **__: object) -> None:
        raise error
    monkeypatch.setattr(operator_cmd.runner, "run", fail)
    result = CliRunner().invoke(cli.app, ["run", "--metrics-host", "127.0.0.1",
                                          "--metrics-port", str(port)])
    assert result.exit_code == 1, result.output
    return result.output


def test_a_busy_metrics_port_says_cannot_serve_metrics(busy_port: int,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    output = run_failing_with(bind_error(busy_port), monkeypatch, busy_port)
    assert f"error: cannot serve metrics on 127.0.0.1:{busy_port}:" in output


def test_a_refused_api_connection_is_not_a_metrics_error(monkeypatch: pytest.MonkeyPatch) -> None:
    error = connect_error(closed_port())
    assert not isinstance(error, ConnectionError)  # aiohttp's own class: errno decides
    output = run_failing_with(error, monkeypatch, 8080)
    assert "cannot serve metrics" not in output
    assert "error: cannot reach the Kubernetes API server:" in output
    assert "Cannot connect to host 127.0.0.1" in output


def test_a_missing_file_is_not_a_metrics_error(tmp_path: pathlib.Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError) as caught:
        (tmp_path / "client.crt").read_bytes()
    output = run_failing_with(caught.value, monkeypatch, 8080)
    assert "cannot serve metrics" not in output
    assert "error: cannot open a file the operator needs:" in output
    assert "client.crt" in output
