"""Run the operator in this process."""

from __future__ import annotations

import asyncio
import logging

import kopf

from fluxsupport import config, server


def run(operator_config: config.OperatorConfig, *, verbose: bool = False) -> None:
    from fluxsupport import main  # noqa: F401 - importing registers the handlers

    kopf.configure(debug=False, verbose=verbose, log_format=kopf.LogFormat.PLAIN)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    asyncio.run(_operate(operator_config))


async def _operate(operator_config: config.OperatorConfig) -> None:
    health = server.HealthState()
    await kopf.operator(
        clusterwide=True,
        standalone=operator_config.standalone,
        priority=operator_config.priority,
        peering_name="fluxsupport",
        ready_flag=health.ready_flag,
        memo=kopf.Memo(config=operator_config, health=health),
    )
