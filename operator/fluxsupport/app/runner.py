"""Run the operator in this process: build its components, start them in order, run kopf
until the process is told to stop, stop them in reverse order (lifecycle.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

import kopf

from fluxsupport import __version__, lifecycle
from fluxsupport.app import config
from fluxsupport.channels import notices
from fluxsupport.constants import PEERING_NAME
from fluxsupport.controllers import advisories, bulletin, snapshots, submission, supportcase
from fluxsupport.controllers import updates as updates_controller
from fluxsupport.domain import policy as policy_module
from fluxsupport.domain import remediation
from fluxsupport.kube import api, events, objects, peering
from fluxsupport.observability import endpoints, metrics
from fluxsupport.sources import inventory


def run(operator_config: config.OperatorConfig, policy: policy_module.Policy, *,
        verbose: bool = False) -> None:
    from fluxsupport.app import registrations  # noqa: F401 - importing registers the handlers

    kopf.configure(debug=False, verbose=verbose, log_format=kopf.LogFormat.FULL)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if not verbose:
        # kopf's per-object lines (its peering object's) at INFO are noise in the log.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    asyncio.run(_operate(operator_config, policy))


async def _operate(operator_config: config.OperatorConfig, policy: policy_module.Policy) -> None:
    health = endpoints.HealthState()
    metrics.BUILD_INFO.info({"version": __version__})
    client = api.Client()
    try:
        components, synced = _components(operator_config, policy, client, health)
        await _run(components, lambda: _serve(operator_config, health, synced))
    finally:
        await client.close()


def _components(operator_config: config.OperatorConfig, policy: policy_module.Policy,
                client: api.Client, health: endpoints.HealthState
                ) -> tuple[list[lifecycle.Component], list[asyncio.Event]]:
    """What the operator runs, in the order it starts; and the watches whose first list the
    verdicts wait for."""
    identity = peering.own_identity()
    # The one decision whether this replica acts: every scheduler and the Event poster wait
    # for it (kopf keeps the keep-alive it reads, and pauses nothing of ours).
    gate = peering.PeeringGate(client, identity=identity, name=PEERING_NAME,
                               priority=operator_config.priority,
                               standalone=operator_config.standalone)
    health.peering = lambda: gate.state
    health.identity = identity
    poster = events.EventPoster(client)
    poster.set_gate(gate.active, identity)
    health.checks.append(poster.problems)
    flux = inventory.Inventory(client, operator_config.flux_namespaces)
    update_check: updates_controller.UpdateController | None = None

    def configmaps_changed() -> None:
        # OpenVEX documents and the release data live in the operator's ConfigMaps.
        bulletins.reconcile_all_soon()
        if update_check is not None:
            update_check.reconcile_soon()

    # Not the diagnostics snapshots: they change no verdict, and a case makes one.
    configmaps = objects.Objects(client, objects.CONFIGMAPS, operator_config.namespace).watch(
        configmaps_changed, label_selector=f"{snapshots.LABEL}!=snapshot")
    bulletins = bulletin.BulletinController(client, flux, configmaps, operator_config.namespace,
                                            gate=gate.active, poster=poster,
                                            clock=remediation.Clock.of(policy),
                                            escalation=policy.escalation,
                                            notifier=notices.Notices(client, policy.channels,
                                                                     operator_config.namespace))
    metrics.register_bulletins(bulletins)
    cases = supportcase.CaseController(
        policy, client, diagnostics=flux.diagnostics, gate=gate.active, poster=poster,
        snapshots=snapshots.Snapshots(client, operator_config.namespace))
    metrics.register_cases(cases)
    submissions = submission.SubmissionController(cases, policy.channels, client,
                                                  operator_config.namespace, gate=gate.active,
                                                  listed=cases.watch.synced,
                                                  diagnostics=flux.diagnostics, policy=policy)
    metrics.register_submissions(submissions, cases)
    components: list[lifecycle.Component] = [
        # First: a port already in use stops the process with a clear error at once.
        endpoints.Server(operator_config.metrics_host, operator_config.metrics_port, health),
        poster, gate, flux, configmaps, bulletins, cases, submissions]
    if policy.updates is not None:
        update_check = updates_controller.UpdateController(
            client, flux, configmaps, operator_config.namespace, policy.updates,
            gate=gate.active, poster=poster)
        metrics.register_updates(update_check)
        # Cases are judged in scope by the controllers the release data lists.
        update_check.subscribe(cases.use_release_data)
        components.append(update_check)
    if policy.advisories is not None:
        feed = advisories.AdvisoryFeed(client, operator_config.flux_namespaces,
                                       policy.advisories, gate=gate.active, poster=poster)
        metrics.register_advisories(feed)
        components.append(feed)
    return components, [*(watch.synced for watch in flux.watches), configmaps.synced]


async def _run(components: list[lifecycle.Component],
               main: Callable[[], Awaitable[None]]) -> None:
    """Start ``components`` in order, run ``main`` until it returns, and stop what started,
    in reverse order: also when a start fails or ``main`` raises."""
    started: list[lifecycle.Component] = []
    try:
        for component in components:
            await component.start()
            started.append(component)
        await main()
    finally:
        for component in reversed(started):
            await component.stop()


async def _serve(operator_config: config.OperatorConfig, health: endpoints.HealthState,
                 synced: list[asyncio.Event]) -> None:
    """Once the first lists are in, kopf until the process is told to stop: the login, and
    with --peering this replica's keep-alive (app/__init__.py)."""
    # Ready (kopf sets the flag) once the inventory and the ConfigMaps are listed, as the
    # bulletins' first list waits for them too (controllers/bulletin.py).
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in synced)), 30)
    await kopf.operator(
        clusterwide=True,
        # The gate must know which keep-alive in the peering object is ours.
        identity=cast(Any, health.identity),
        standalone=operator_config.standalone,
        priority=operator_config.priority,
        ready_flag=health.ready_flag,
        memo=kopf.Memo(config=operator_config),
    )
