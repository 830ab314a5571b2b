"""Run the operator in this process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, cast

import kopf

from fluxsupport import __version__
from fluxsupport.app import config
from fluxsupport.constants import API_VERSION, PEERING_NAME, SUPPORTCASE_PLURAL
from fluxsupport.controllers import advisories, bulletin, snapshots, submission, supportcase
from fluxsupport.controllers import updates as updates_controller
from fluxsupport.domain import policy as policy_module
from fluxsupport.domain import remediation
from fluxsupport.kube import api, events, peering, reflector
from fluxsupport.observability import endpoints, metrics
from fluxsupport.sources import inventory

#: SupportCases per list request when the operator starts or relists.
CASE_PAGE_SIZE = 500


def run(operator_config: config.OperatorConfig, policy: policy_module.Policy, *,
        verbose: bool = False) -> None:
    from fluxsupport.app import registrations  # noqa: F401 - importing registers the handlers

    kopf.configure(debug=False, verbose=verbose, log_format=kopf.LogFormat.FULL)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if not verbose:
        # kopf reports every handled watch event at INFO; a thousand bulletins drown the log.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    asyncio.run(_operate(operator_config, policy))


async def _operate(operator_config: config.OperatorConfig, policy: policy_module.Policy) -> None:
    health = endpoints.HealthState()
    metrics.BUILD_INFO.info({"version": __version__})
    client = api.Client()
    identity = peering.own_identity()
    # kopf pauses only its own watch streams for a higher-priority peer; the gate stops the
    # schedulers and the Event posters, which run outside kopf, at the same time.
    gate = peering.PeeringGate(client, identity=identity, name=PEERING_NAME,
                               priority=operator_config.priority,
                               standalone=operator_config.standalone)
    health.peering = lambda: gate.state
    health.identity = identity
    poster = events.EventPoster(client)
    poster.set_gate(gate.active, identity)
    poster.start()
    health.checks.append(poster.problems)
    flux = inventory.Inventory(client, operator_config.flux_namespaces)
    update_check: updates_controller.UpdateController | None = None

    def configmaps_changed() -> None:
        # OpenVEX documents and the release data live in the operator's ConfigMaps.
        bulletins.reconcile_all_soon()
        if update_check is not None:
            update_check.reconcile_soon()

    # Not the diagnostics snapshots: they change no verdict, and a case makes one.
    configmaps = reflector.Watch(
        client, f"/api/v1/namespaces/{operator_config.namespace}/configmaps"
        f"?labelSelector={snapshots.LABEL}!=snapshot", configmaps_changed)
    bulletins = bulletin.BulletinController(client, flux, configmaps, operator_config.namespace,
                                            gate=gate.active, poster=poster,
                                            clock=remediation.Clock.of(policy))
    if policy.updates is not None:
        update_check = updates_controller.UpdateController(
            client, flux, configmaps, operator_config.namespace, policy.updates,
            gate=gate.active, poster=poster)
        metrics.register_updates(update_check)
    feed: advisories.AdvisoryFeed | None = None
    if policy.advisories is not None:
        feed = advisories.AdvisoryFeed(client, operator_config.flux_namespaces,
                                       policy.advisories, gate=gate.active, poster=poster)
        metrics.register_advisories(feed)
    diagnostics_snapshots = snapshots.Snapshots(client, operator_config.namespace)
    cases = supportcase.CaseController(policy, client, diagnostics=flux.diagnostics,
                                       gate=gate.active, poster=poster,
                                       snapshots=diagnostics_snapshots)
    metrics.register_cases(cases)
    if update_check is not None:
        # Cases are judged in scope by the controllers the release data lists.
        update_check.subscribe(cases.use_release_data)
    case_watch = reflector.Watch(
        client, f"/apis/{API_VERSION}/{SUPPORTCASE_PLURAL}", lambda: None,
        on_event=cases.on_event, page_size=CASE_PAGE_SIZE)
    submissions = submission.SubmissionController(cases, policy.channels, client,
                                                  operator_config.namespace, gate=gate.active,
                                                  listed=case_watch.synced)
    metrics.register_submissions(submissions)
    metrics.register_bulletins(bulletins)
    await flux.load_server_version()
    background = [
        asyncio.create_task(cases.scheduler.run(), name="supportcase-scheduler"),
        asyncio.create_task(case_watch.run(), name="supportcase-watch"),
        asyncio.create_task(bulletins.scheduler.run(), name="bulletin-scheduler"),
        asyncio.create_task(submissions.scheduler.run(), name="submission-scheduler"),
        asyncio.create_task(submissions.run_sync(), name="portal-sync"),
        asyncio.create_task(configmaps.run(), name="configmap-watch"),
        asyncio.create_task(diagnostics_snapshots.run_sweeps(cases.snapshots_referenced,
                                                             gate.active, cases.snapshots_lost),
                            name="diagnostics-snapshot-sweep"),
        *flux.tasks(),
        *gate.tasks(),
        *(update_check.tasks() if update_check is not None else ()),
        *(feed.tasks() if feed is not None else ()),
    ]
    # Verdicts computed from a half-listed inventory would flap: wait for the first lists.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(flux.wait_synced(), configmaps.synced.wait()), 30)
    # Before kopf starts, so that a port already in use stops the process with a clear
    # error instead of a startup handler retrying forever.
    http = await endpoints.start(operator_config.metrics_host, operator_config.metrics_port, health)
    try:
        await kopf.operator(
            clusterwide=True,
            # The gate must know which keep-alive in the peering object is ours.
            identity=cast(Any, identity),
            standalone=operator_config.standalone,
            priority=operator_config.priority,
            ready_flag=health.ready_flag,
            memo=kopf.Memo(config=operator_config, health=health, bulletins=bulletins),
        )
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await poster.close()
        await submissions.close()
        await client.close()
        await http.cleanup()
