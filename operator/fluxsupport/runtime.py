"""Run the operator in this process."""

from __future__ import annotations

import asyncio
import logging

import kopf

from fluxsupport import __version__, config, metrics, server


def run(operator_config: config.OperatorConfig, *, verbose: bool = False) -> None:
    from fluxsupport import main  # noqa: F401 - importing registers the handlers

    kopf.configure(debug=False, verbose=verbose, log_format=kopf.LogFormat.PLAIN)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    asyncio.run(_operate(operator_config))


async def _operate(operator_config: config.OperatorConfig) -> None:
    health = server.HealthState()
    metrics.BUILD_INFO.info({"version": __version__})
    # Before kopf starts, so that a port already in use stops the process with a clear
    # error instead of a startup handler retrying forever.
    http = await server.start(operator_config.metrics_host, operator_config.metrics_port, health)
    try:
        await kopf.operator(
            clusterwide=True,
            standalone=operator_config.standalone,
            priority=operator_config.priority,
            ready_flag=health.ready_flag,
            memo=kopf.Memo(config=operator_config, health=health),
        )
    finally:
        await http.cleanup()
