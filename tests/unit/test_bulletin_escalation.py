"""Escalation tier 3 of a SecurityBulletin: a critical vulnerability past the vendor's
remediation deadline with no fix listed (domain/securitybulletin.py), and the email to the
tier's contacts, sent at most once and again only after a refusal
(controllers/bulletin.py)."""

from __future__ import annotations

import asyncio
import datetime
import email.message
from collections.abc import Sequence
from typing import Any

from fluxsupport.channels import mail
from fluxsupport.controllers.bulletin import BulletinController
from fluxsupport.domain import bulletin, escalation, evaluation, policy, securitybulletin
from fluxsupport.kube import reflector
from fluxsupport.sources.inventory import Inventory
from tests import fakes
from tests.unit.test_bulletin_index import components_of
from tests.unit.test_vendor_remediation import CLOCK, CVE, EMEA, IDENTIFIED, PRE, spec_of

SPONSOR = "sponsor@vendor.example"
assert EMEA.escalation is not None
SETTINGS = EMEA.escalation.model_copy(
    update={"contacts": policy.EscalationContacts(executiveSponsor=(SPONSOR,))})
DUE = IDENTIFIED + datetime.timedelta(hours=72)
HOUR = datetime.timedelta(hours=1)


def evaluate(spec: dict[str, Any], now: datetime.datetime, *,
             previous: dict[str, Any] | None = None,
             settings: policy.Escalation | None = SETTINGS
             ) -> evaluation.Evaluation[securitybulletin.BulletinMetrics]:
    return securitybulletin.evaluate(
        name="b", spec=spec, validated=bulletin.BulletinSpec.model_validate(spec),
        generation=1, previous=previous or {}, components=components_of(PRE),
        inventory_problems=(), namespaces=("flux-system",), fixes=bulletin.FixIndex(),
        cited=securitybulletin.CitedVex(), compact=False, now=now, clock=CLOCK,
        escalation_settings=settings)


def escalated(result: evaluation.Evaluation[Any]) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in result.status["conditions"]
                                 if c["type"] == "Escalated")
    return found


def reasons(result: evaluation.Evaluation[Any]) -> list[str]:
    return [event.reason for event in result.events]


def test_a_critical_vulnerability_unmitigated_past_its_deadline_reaches_tier_3_once() -> None:
    before = evaluate(spec_of(), DUE - HOUR)
    assert before.status["escalation"] == {"tier": 0, "tiers": []}
    assert (escalated(before)["status"], escalated(before)["reason"]) == ("False",
                                                                         "NotEscalated")
    assert before.next_transition == DUE
    assert before.metrics is not None
    assert before.metrics.escalation_tier == 0

    after = evaluate(spec_of(), DUE + HOUR, previous=before.status)
    assert after.status["escalation"]["tier"] == 3
    [tier] = after.status["escalation"]["tiers"]
    assert tier == {"tier": 3, "contact": "executive sponsor",
                    "reachedAt": "2026-06-06T10:00:00Z",
                    "trigger": "UnmitigatedCriticalVulnerability",
                    "detail": f"{CVE} is critical and no fix was listed by the vendor's "
                              "remediation deadline 2026-06-06T10:00:00Z (72 hours, standard)"}
    condition = escalated(after)
    assert (condition["status"], condition["reason"]) == (
        "True", "Tier3UnmitigatedCriticalVulnerability")
    assert CVE in condition["message"]
    assert [(e.type, e.reason) for e in after.events if e.reason.startswith("Escalated")] == [
        ("Warning", "EscalatedTier3")]
    assert after.metrics is not None
    assert after.metrics.escalation_tier == 3

    # Evaluated again from its own status: the tier is recorded, its Event is not owed again.
    again = evaluate(spec_of(), DUE + 2 * HOUR, previous=after.status)
    assert again.status["escalation"] == after.status["escalation"]
    assert "EscalatedTier3" not in reasons(again)


def test_a_fix_listed_late_keeps_the_tier_and_stops_the_alerting_metric() -> None:
    overdue = evaluate(spec_of(), DUE + HOUR)
    fixed = evaluate(spec_of(fixed=True), DUE + 2 * HOUR, previous=overdue.status)
    assert fixed.status["escalation"]["tiers"] == overdue.status["escalation"]["tiers"]
    assert escalated(fixed)["status"] == "True"
    assert fixed.metrics is not None
    assert fixed.metrics.escalation_tier == 0
    assert "EscalatedTier3" not in reasons(fixed)


def test_no_tier_for_a_fix_in_time_a_fix_seen_first_after_the_deadline_or_a_lower_score(
        ) -> None:
    pending = evaluate(spec_of(), DUE - HOUR)
    listed = evaluate(spec_of(fixed=True), DUE - HOUR / 2, previous=pending.status)
    assert evaluate(spec_of(fixed=True), DUE + HOUR,
                    previous=listed.status).status["escalation"]["tier"] == 0
    # Listed when the operator first saw the bulletin, after the deadline: when is unknown.
    assert evaluate(spec_of(fixed=True), DUE + HOUR).status["escalation"]["tier"] == 0
    medium = spec_of(vector="CVSS:3.1/AV:N/AC:H/PR:L/UI:N/S:U/C:H/I:N/A:N")  # 5.3
    late = evaluate(medium, IDENTIFIED + datetime.timedelta(days=30))
    assert late.status["escalation"]["tier"] == 0
    assert late.metrics is not None
    assert late.metrics.escalation_tier == 0


def test_without_escalation_settings_the_status_has_no_escalation() -> None:
    for settings in (None, SETTINGS.model_copy(update={"enabled": False})):
        result = evaluate(spec_of(), DUE + HOUR, settings=settings)
        assert "escalation" not in result.status
        assert all(c["type"] != "Escalated" for c in result.status["conditions"])
        assert result.metrics is not None
        assert result.metrics.escalation_tier is None


def test_under_embargo_the_event_and_condition_name_nothing_of_the_bulletin() -> None:
    spec = spec_of(embargoUntil="2027-01-01T00:00:00Z")
    result = evaluate(spec, DUE + HOUR)
    [event] = [e for e in result.events if e.reason == "EscalatedTier3"]
    assert event.message == securitybulletin.EMBARGOED_TIER_EVENT
    condition = escalated(result)
    assert condition["message"] == securitybulletin.WITHHELD[
        "Tier3UnmitigatedCriticalVulnerability"]
    for text in (event.message, condition["message"]):
        assert CVE not in text
        assert "2026-06" not in text


def test_a_withdrawn_advisory_does_not_escalate() -> None:
    result = evaluate(spec_of(withdrawnAt="2026-06-04T00:00:00Z"), DUE + HOUR)
    assert result.status["escalation"]["tier"] == 0
    assert result.metrics is not None
    assert result.metrics.escalation_tier == 0


# ---- the email to the tier's contacts ---------------------------------------------------------

def owed(status: dict[str, Any], *, embargoed: bool = False,
         settings: policy.Escalation | None = SETTINGS) -> list[escalation.TierEmail]:
    return securitybulletin.tier_emails(settings, uid="u-1", name="b", cluster="prod",
                                        status=status, embargoed=embargoed)


def test_the_tier_email_is_owed_once_and_again_only_after_a_refusal() -> None:
    status = evaluate(spec_of(), DUE + HOUR).status
    [notice] = owed(status)
    assert (notice.tier, notice.recipients, notice.refusals, notice.retry_at) == (
        3, (SPONSOR,), 0, None)
    assert notice.message_id == "<bulletin-u-1-tier3@fluxsupport>"
    assert notice.subject == "[fluxsupport] Escalation tier 3: SecurityBulletin b in prod"
    assert CVE in notice.body
    assert owed(status, embargoed=True) == []
    no_contacts = SETTINGS.model_copy(update={"contacts": policy.EscalationContacts()})
    assert owed(status, settings=no_contacts) == []

    def with_record(**record: Any) -> dict[str, Any]:
        block = {**status["escalation"], "emails": [{"tier": 3, "messageId": notice.message_id,
                                                     "attemptedAt": "2026-06-06T11:00:00Z",
                                                     **record}]}
        return {**status, "escalation": block}

    assert owed(with_record(sentAt="2026-06-06T11:00:01Z")) == []
    # Ended without knowing whether the server took it, or stopped during the send: never
    # again.
    assert owed(with_record(error="email: connection lost")) == []
    assert owed(with_record()) == []
    # Refused twice: tried again at retryAt.
    [retried] = owed(with_record(attempts=2, lastError="email: 550 not now",
                                 retryAt="2026-06-06T11:00:10Z"))
    assert (retried.refusals, retried.last_error, retried.retry_at) == (
        2, "email: 550 not now", DUE + HOUR + datetime.timedelta(seconds=10))


class Notifier:
    """The email channel of a test: refuses the first ``refusals`` sends."""

    def __init__(self, refusals: int = 0, uncertain: bool = False) -> None:
        self.refusals, self.uncertain = refusals, uncertain
        self.enabled, self.cluster = True, "prod"
        self.tried: list[str] = []
        self.sent: list[str] = []

    def build(self, subject: str, body: str, message_id: str,
              recipients: Sequence[str]) -> email.message.EmailMessage:
        message = email.message.EmailMessage()
        message["Message-ID"] = message_id
        message.set_content(body)
        return message

    async def send(self, message: email.message.EmailMessage,
                   recipients: Sequence[str]) -> None:
        self.tried.append(str(message["Message-ID"]))
        if self.refusals:
            self.refusals -= 1
            raise mail.EmailError("550 not now", uncertain=self.uncertain)
        self.sent.append(str(message["Message-ID"]))


def run_controller(notifier: Notifier, rounds: int, *, age_refusal: bool = False
                   ) -> tuple[fakes.FakeClient, list[dict[str, Any]]]:
    """Reconcile the bulletin ``rounds`` times; with ``age_refusal``, the stored refusal's
    retryAt is moved into the past before each round, as if the backoff had passed."""
    fake = fakes.FakeClient()
    spec = spec_of()
    records = []

    def body() -> dict[str, Any]:
        return {"metadata": {"name": "b", "uid": "uid-b", "resourceVersion": str(fake.version),
                             "generation": 1},
                "spec": spec, "status": fake.status.get("b", {})}

    async def scenario() -> None:
        inventory = Inventory(fake, ("flux-system",))
        configmaps = reflector.Watch(fake, "/unused", lambda: None)
        controller = BulletinController(fake, inventory, configmaps, "fluxsupport-system",
                                        clock=CLOCK, escalation=SETTINGS,
                                        notifier=notifier)  # type: ignore[arg-type]
        for _ in range(rounds):
            if age_refusal:
                for entry in (fake.status.get("b", {}).get("escalation") or {}).get(
                        "emails") or []:
                    if "retryAt" in entry:
                        entry["retryAt"] = "2026-06-06T11:00:00Z"
                fake.version += 1
            controller.observe(body())
            await controller.reconcile("b")
            records.append([dict(entry) for entry in
                            fake.status["b"]["escalation"].get("emails") or []])
        await controller.stop()

    asyncio.run(scenario())
    return fake, records


def test_the_controller_sends_the_email_once() -> None:
    notifier = Notifier()
    _, records = run_controller(notifier, 3)
    assert notifier.sent == ["<bulletin-uid-b-tier3@fluxsupport>"]
    [record] = records[-1]
    assert set(record) == {"tier", "messageId", "attemptedAt", "sentAt"}


def test_a_refused_email_is_sent_again_after_its_backoff_and_then_never() -> None:
    notifier = Notifier(refusals=1)
    _, records = run_controller(notifier, 1)
    [refused] = records[0]
    assert (refused["attempts"], refused["lastError"]) == (1, "email: 550 not now")
    assert "retryAt" in refused
    assert "sentAt" not in refused
    notifier = Notifier(refusals=1)
    _, records = run_controller(notifier, 4, age_refusal=True)
    assert notifier.tried == ["<bulletin-uid-b-tier3@fluxsupport>"] * 2
    assert len(notifier.sent) == 1
    [record] = records[-1]
    assert (record["attempts"], record["lastError"]) == (1, "email: 550 not now")
    assert "sentAt" in record
    assert "retryAt" not in record


def test_an_email_whose_outcome_is_unknown_is_never_sent_again() -> None:
    notifier = Notifier(refusals=1, uncertain=True)
    _, records = run_controller(notifier, 3, age_refusal=True)
    assert notifier.tried == ["<bulletin-uid-b-tier3@fluxsupport>"]
    [record] = records[-1]
    assert record["error"] == "email: 550 not now"
    assert "retryAt" not in record
