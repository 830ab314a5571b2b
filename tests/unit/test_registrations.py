"""app/registrations.py: what kopf is told to do, and nothing it is told in vain."""

from __future__ import annotations

import asyncio

import kopf

from fluxsupport.app import config, registrations


def _handlers() -> list[tuple[str, str]]:
    return [(str(h.id), h.activity.value)
            for h in kopf.get_default_registry()._activities.get_all_handlers()
            if not h._fallback and h.fn.__module__ == registrations.__name__]


def test_no_probe_that_nothing_serves() -> None:
    """Only the start-up and login handlers are registered with kopf (its liveness endpoint is
    never started; /healthz is the operator's own)."""
    assert _handlers() == [("configure", "startup"), ("login", "authentication")]


def test_kopf_posts_no_events_of_its_own() -> None:
    """The operator posts its Events through the kube layer, so kopf's posting is off."""
    settings = kopf.OperatorSettings()
    asyncio.run(registrations.configure(settings=settings,
                                        memo=kopf.Memo(config=config.OperatorConfig())))
    assert settings.posting.enabled is False
