"""Run the operator in this process."""

from __future__ import annotations

import asyncio
import logging

import kopf

from fluxsupport import __version__, config, k8s, metrics, server
from fluxsupport.domain import policy as policy_module
from fluxsupport.handlers import supportcase


def run(operator_config: config.OperatorConfig, policy: policy_module.Policy, *,
        verbose: bool = False) -> None:
    from fluxsupport import main  # noqa: F401 - importing registers the handlers

    kopf.configure(debug=False, verbose=verbose, log_format=kopf.LogFormat.PLAIN)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if not verbose:
        # kopf reports every handled watch event at INFO; thousands of cases drown the log.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    asyncio.run(_operate(operator_config, policy))


async def _operate(operator_config: config.OperatorConfig, policy: policy_module.Policy) -> None:
    health = server.HealthState()
    metrics.BUILD_INFO.info({"version": __version__})
    client = k8s.Client()
    cases = supportcase.CaseController(policy, client)
    metrics.register_cases(cases)
    background = [asyncio.create_task(cases.scheduler.run(), name="supportcase-scheduler")]
    # Before kopf starts, so that a port already in use stops the process with a clear
    # error instead of a startup handler retrying forever.
    http = await server.start(operator_config.metrics_host, operator_config.metrics_port, health)
    try:
        await kopf.operator(
            clusterwide=True,
            standalone=operator_config.standalone,
            priority=operator_config.priority,
            ready_flag=health.ready_flag,
            memo=kopf.Memo(config=operator_config, health=health, cases=cases),
        )
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await client.close()
        await http.cleanup()
