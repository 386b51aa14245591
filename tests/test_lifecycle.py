"""The token lifecycle end to end: ledger, refresh, plans, top-ups, holds, refunds, modes,
alerts. Time travel moves refresh_date / expires_at into the past over SQL; no sleeps."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from uuid import UUID, uuid4

import httpx
import pytest

from tokens_client import (
    AlreadyRefunded,
    BalanceCeiling,
    FeatureNotInPlan,
    IdempotencyConflict,
    InsufficientTokens,
    InvalidRequest,
    PermissionDenied,
    RateLimited,
    RefundLimitReached,
    ReservationNotActive,
    TokensAdmin,
)
from tokens_client.testing import Database, StackEnv, TestUser


def balance(db: Database, org: UUID, token_type: str) -> int:
    return int(
        db.value(
            "select balance from ai_tokens where organization_id = %s and token_type = %s",
            (org, token_type),
        )
    )


def journal_kinds(db: Database, org: UUID, token_type: str) -> list[str]:
    rows = db.execute(
        "select kind from ai_token_ledger where organization_id = %s and token_type = %s "
        "order by id",
        (org, token_type),
    )
    return [row[0] for row in rows]


def untracked_edit(db: Database, org: UUID, delta: int) -> None:
    """Change a balance with the journal trigger off: what verify_token_ledger must catch."""
    db.execute("alter table ai_tokens disable trigger user")
    try:
        db.execute(
            "update ai_tokens set balance = balance + %s where organization_id = %s "
            "and token_type = 'forecast'",
            (delta, org),
        )
    finally:
        db.execute("alter table ai_tokens enable trigger user")


@pytest.fixture(autouse=True)
def ledger_stays_exact(admin: TokensAdmin, pro_org: UUID):  # type: ignore[no-untyped-def]
    """After every scenario: balance = sum of the journal, for the organization under test."""
    yield
    assert admin.verify_token_ledger(organization_id=pro_org) == []


class TestLedger:
    def test_every_movement_is_journaled(
        self,
        member: TestUser,
        org_admin: TestUser,
        admin: TokensAdmin,
        pro_org: UUID,
        db: Database,
    ) -> None:
        deduction = member.client().deduct_tokens("generate_goal")
        org_admin.client().refund_deduction(deduction.usage_id, reason="model timed out")
        admin.grant_tokens(pro_org, token_type="goal_generation", amount=10, reason="pack")
        admin.set_organization_plan(pro_org, plan="enterprise")
        kinds = journal_kinds(db, pro_org, "goal_generation")
        assert kinds == ["allocation", "deduction", "refund", "grant", "plan_change"]
        total = db.value(
            "select sum(delta) from ai_token_ledger where organization_id = %s "
            "and token_type = 'goal_generation'",
            (pro_org,),
        )
        assert total == balance(db, pro_org, "goal_generation") == 20 + 10 + 180

    def test_manual_sql_edit_is_an_adjustment(self, pro_org: UUID, db: Database) -> None:
        # the guide's rollback plan: "Set all token_types balance to 9999"
        db.execute("update ai_tokens set balance = 9999 where organization_id = %s", (pro_org,))
        assert journal_kinds(db, pro_org, "general")[-1] == "adjustment"
        delta = db.value(
            "select delta from ai_token_ledger where organization_id = %s and token_type = "
            "'general' order by id desc limit 1",
            (pro_org,),
        )
        assert delta == 9999 - 50

    def test_verify_reports_a_broken_journal(
        self, admin: TokensAdmin, make_org, db: Database
    ) -> None:  # type: ignore[no-untyped-def]
        broken = make_org("pro")
        untracked_edit(db, broken, +1)
        violations = admin.verify_token_ledger(organization_id=broken)
        assert [(v.token_type, v.violation, v.expected, v.actual) for v in violations] == [
            ("forecast", "balance_mismatch", 30, 31)
        ]
        untracked_edit(db, broken, -1)
        assert admin.verify_token_ledger(organization_id=broken) == []


class TestMonthlyRefresh:
    def test_lazy_refresh_in_deduct_then_next_month(
        self, member: TestUser, pro_org: UUID, db: Database
    ) -> None:
        client = member.client()
        for _ in range(3):
            client.deduct_tokens("generate_goal")
        assert balance(db, pro_org, "goal_generation") == 11
        boundary = datetime.now(timezone.utc) - timedelta(minutes=5)
        db.execute(
            "update ai_tokens set refresh_date = %s where organization_id = %s",
            (boundary, pro_org),
        )
        result = client.deduct_tokens("generate_goal")
        assert result.remaining_balance == 17, "reset to 20 first, then 3 spent"
        refresh_date = db.value(
            "select refresh_date from ai_tokens where organization_id = %s "
            "and token_type = 'goal_generation'",
            (pro_org,),
        )
        assert refresh_date.month == (boundary.month % 12) + 1
        assert journal_kinds(db, pro_org, "goal_generation").count("refresh") == 1

    def test_has_enough_and_stats_see_the_refresh(
        self, member: TestUser, pro_org: UUID, db: Database
    ) -> None:
        db.execute(
            "update ai_tokens set balance = 0, refresh_date = now() - interval '1 day' "
            "where organization_id = %s and token_type = 'forecast'",
            (pro_org,),
        )
        assert member.client().has_enough_tokens("forecast_revenue") is True
        assert member.client().stats().for_type("forecast").balance == 30

    def test_scheduler_job_refreshes_what_is_due(
        self, admin: TokensAdmin, pro_org: UUID, db: Database
    ) -> None:
        db.execute(
            "update ai_tokens set balance = 1, refresh_date = now() - interval '1 hour' "
            "where organization_id = %s",
            (pro_org,),
        )
        run = admin.refresh_due_tokens()
        assert run.settled >= 5
        assert run.failed == 0
        assert balance(db, pro_org, "strategy_analysis") == 100
        assert (
            db.value("select count(*) from cron.job where command like '%%refresh_due_tokens%%'")
            == 1
        ), "the daily pg_cron job is installed"


class TestPlanChanges:
    def test_upgrade_adds_the_difference_now(
        self, member: TestUser, admin: TokensAdmin, pro_org: UUID
    ) -> None:
        member.client().deduct_tokens("generate_goal")  # 17 of 20 left
        event = f"evt_{uuid4().hex}"  # Stripe event ids are global: one per test run
        change = admin.set_organization_plan(pro_org, plan="enterprise", event_id=event)
        goal = next(c for c in change.changes if c.token_type == "goal_generation")
        assert (goal.previous_balance, goal.balance, goal.allocation) == (17, 197, 200)
        replay = admin.set_organization_plan(pro_org, plan="enterprise", event_id=event)
        assert replay.replayed
        assert member.client().stats().for_type("goal_generation").balance == 197
        with pytest.raises(IdempotencyConflict):
            admin.set_organization_plan(pro_org, plan="starter", event_id=event)

    def test_downgrade_caps_and_starter_refuses(
        self, member: TestUser, admin: TokensAdmin, pro_org: UUID
    ) -> None:
        admin.set_organization_plan(pro_org, plan="enterprise")
        admin.grant_tokens(pro_org, token_type="general", amount=7)
        admin.set_organization_plan(pro_org, plan="pro")
        stats = member.client().stats()
        assert stats.for_type("general").balance == 50 + 7, "allowance capped, purchase kept"
        admin.set_organization_plan(pro_org, plan="starter")
        with pytest.raises(FeatureNotInPlan):
            member.client().deduct_tokens("ask_assistant")
        assert member.client().stats().for_type("general").balance == 7

    def test_plan_cycling_never_regrants_the_allowance(
        self, member: TestUser, admin: TokensAdmin, pro_org: UUID, db: Database
    ) -> None:
        client = member.client()

        def spend_everything() -> int:
            spent = 0
            while True:
                try:
                    spent += client.deduct_tokens("generate_goal").tokens_deducted
                except InsufficientTokens:
                    return spent

        spent = spend_everything()  # 18 of pro's 20
        for _ in range(3):
            admin.set_organization_plan(pro_org, plan="enterprise")
            spent += spend_everything()
            admin.set_organization_plan(pro_org, plan="pro")
        assert spent <= 200, "never more than the period's highest allocation (enterprise: 200)"
        assert spent == 198, "the upgrade itself still gives its difference once"
        assert (
            db.value(
                "select period_peak_allocation from ai_tokens"
                " where organization_id = %s and token_type = 'goal_generation'",
                (pro_org,),
            )
            == 200
        )
        assert admin.verify_token_ledger(organization_id=pro_org) == []


class TestBalanceCeiling:
    def test_a_full_balance_never_wedges_an_organization(
        self,
        stack_env: StackEnv,
        member: TestUser,
        org_admin: TestUser,
        admin: TokensAdmin,
        pro_org: UUID,
        db: Database,
    ) -> None:
        ceiling = db.value("select ai_tokens_internal.balance_ceiling()")
        assert ceiling == 1_000_000_000
        import psycopg

        with pytest.raises(psycopg.errors.CheckViolation):
            db.execute(
                "update ai_tokens set balance = 2147483647 where organization_id = %s",
                (pro_org,),
            )
        spent = member.client().deduct_tokens("generate_goal")
        # Purchased tokens up to the ceiling (a grant past it is refused up front).
        admin.grant_tokens(pro_org, token_type="goal_generation", amount=ceiling - 17)
        with pytest.raises(InvalidRequest) as refused:
            admin.grant_tokens(pro_org, token_type="goal_generation", amount=1)
        assert refused.value.reason == "invalid_amount"
        as_admin = {
            "apikey": stack_env.anon_key,
            "Authorization": f"Bearer {org_admin.access_token}",
        }
        refund = httpx.post(
            f"{stack_env.url}/rest/v1/rpc/refund_deduction",
            json={"usage_id": str(spent.usage_id)},
            headers=as_admin,
            timeout=10,
        )
        assert refund.status_code == 409
        assert json.loads(refund.json()["details"])["reason"] == "balance_ceiling"
        with pytest.raises(BalanceCeiling) as past_ceiling:
            org_admin.client().refund_deduction(spent.usage_id)
        assert past_ceiling.value.max_balance == ceiling
        # Plan changes, initialize_tokens and the refresh clamp to the ceiling.
        admin.set_organization_plan(pro_org, plan="enterprise")
        assert balance(db, pro_org, "goal_generation") == ceiling
        admin.initialize_tokens(pro_org)
        assert balance(db, pro_org, "goal_generation") == ceiling
        db.execute(
            "update ai_tokens set refresh_date = now() - interval '1 second'"
            " where organization_id = %s",
            (pro_org,),
        )
        assert member.client().deduct_tokens("generate_goal").remaining_balance == ceiling - 3
        assert member.client().stats().for_type("goal_generation").balance == ceiling - 3
        assert admin.refresh_due_tokens().failed == 0
        assert admin.verify_token_ledger(organization_id=pro_org) == []


class TestTopUps:
    def test_purchased_tokens_survive_refresh_and_are_spent_last(
        self, member: TestUser, admin: TokensAdmin, pro_org: UUID, db: Database
    ) -> None:
        checkout = f"cs_{uuid4().hex}"
        grant = admin.grant_tokens(
            pro_org, token_type="lead_generation", amount=12, reason="pack", external_id=checkout
        )
        assert (grant.balance, grant.purchased_balance) == (62, 12)
        again = admin.grant_tokens(
            pro_org, token_type="lead_generation", amount=12, reason="pack", external_id=checkout
        )
        assert again.replayed
        assert again.balance == 62
        client = member.client()
        for _ in range(10):  # 50 allowance tokens at 5 each
            client.deduct_tokens("generate_leads")
        stats = client.stats().for_type("lead_generation")
        assert (stats.balance, stats.purchased_balance) == (12, 12), "allowance went first"
        db.execute(
            "update ai_tokens set refresh_date = now() - interval '1 minute' "
            "where organization_id = %s",
            (pro_org,),
        )
        refreshed = client.stats().for_type("lead_generation")
        assert (refreshed.balance, refreshed.purchased_balance) == (62, 12)

    def test_grants_expire_without_a_scheduler(
        self, member: TestUser, admin: TokensAdmin, pro_org: UUID, db: Database
    ) -> None:
        expires = datetime.now(timezone.utc) + timedelta(days=30)
        grant = admin.grant_tokens(pro_org, token_type="forecast", amount=20, expires_at=expires)
        assert grant.expires_at == expires.replace(microsecond=grant.expires_at.microsecond)
        db.execute(
            "update ai_token_grants set expires_at = now() - interval '1 second' where id = %s",
            (grant.grant_id,),
        )
        assert member.client().stats().for_type("forecast").balance == 30
        assert journal_kinds(db, pro_org, "forecast")[-1] == "expiry"

    def test_bad_amounts_are_refused(self, admin: TokensAdmin, pro_org: UUID) -> None:
        for amount in (0, -5, 2_000_000_000):
            with pytest.raises(InvalidRequest) as error:
                admin.grant_tokens(pro_org, token_type="general", amount=amount)
            assert error.value.reason == "invalid_amount"
        with pytest.raises(InvalidRequest):
            admin.grant_tokens(
                pro_org,
                token_type="general",
                amount=5,
                expires_at=datetime.now(timezone.utc) - timedelta(days=1),
            )


class TestReservations:
    def test_hold_commit_and_refusals(self, member: TestUser, pro_org: UUID, db: Database) -> None:
        client = member.client()
        hold = client.reserve_tokens("generate_quest", estimate=15)
        assert (hold.status, hold.held, hold.available) == ("active", 15, 5)
        client.deduct_tokens("generate_goal")  # 3 of the 5 available
        with pytest.raises(InsufficientTokens) as refused:
            client.deduct_tokens("generate_goal")
        assert refused.value.facts["reserved"] == 15
        # Overruns are charged, not refused: 16 of a 15 hold, all of it available.
        committed = client.commit_reservation(hold.reservation_id, actual=16)
        assert (committed.status, committed.tokens_deducted) == ("committed", 16)
        assert committed.remaining_balance == balance(db, pro_org, "goal_generation") == 1
        with pytest.raises(ReservationNotActive) as twice:
            client.commit_reservation(hold.reservation_id, actual=16)
        assert twice.value.reservation_status == "committed"
        usage = client.usage(limit=1)[0]
        assert (usage.reservation_id, usage.tokens_deducted) == (hold.reservation_id, 16)

    def test_release_and_expiry_return_everything(
        self, member: TestUser, pro_org: UUID, db: Database
    ) -> None:
        client = member.client()
        released = client.release_reservation(
            client.reserve_tokens("generate_leads", estimate=50).reservation_id
        )
        assert (released.released, released.available) == (50, 50)
        expiring = client.reserve_tokens("generate_leads", estimate=40, ttl_seconds=60)
        assert client.has_enough_tokens("generate_leads")  # 10 left
        db.execute(
            "update ai_token_reservations set expires_at = now() - interval '1 second' "
            "where id = %s",
            (expiring.reservation_id,),
        )
        assert client.stats().for_type("lead_generation").available == 50
        with pytest.raises(ReservationNotActive):
            client.commit_reservation(expiring.reservation_id, actual=5)

    def test_spend_commits_actual_or_releases_on_error(
        self, member: TestUser, pro_org: UUID, db: Database
    ) -> None:
        client = member.client()
        with client.spend("analyze_strategy", estimate=30) as hold:
            hold.actual = 12
        assert hold.result is not None
        assert hold.result.tokens_deducted == 12
        assert balance(db, pro_org, "strategy_analysis") == 88

        class ModelDown(Exception):
            pass

        with pytest.raises(ModelDown), client.spend("analyze_strategy", estimate=30) as failed:
            raise ModelDown
        assert failed.released is not None
        assert failed.released.released == 30
        assert balance(db, pro_org, "strategy_analysis") == 88
        assert client.stats().for_type("strategy_analysis").reserved == 0

    async def test_async_spend(self, member: TestUser, pro_org: UUID, db: Database) -> None:
        async with member.async_client() as client:
            async with client.spend("forecast_revenue", estimate=10) as hold:
                hold.actual = 4
            assert hold.result is not None
            with pytest.raises(RuntimeError):
                async with client.spend("forecast_revenue", estimate=10):
                    raise RuntimeError("model failed")
        assert balance(db, pro_org, "forecast") == 26

    def test_reserve_is_idempotent_on_request_id(self, member: TestUser) -> None:
        client = member.client()
        first = client.reserve_tokens("generate_quest", estimate=4, request_id="hold-1")
        again = client.reserve_tokens("generate_quest", estimate=4, request_id="hold-1")
        assert again.replayed
        assert again.reservation_id == first.reservation_id
        assert client.stats().for_type("goal_generation").reserved == 4


class TestRefunds:
    def test_admins_refund_once_members_cannot(
        self, member: TestUser, org_admin: TestUser, pro_org: UUID, db: Database
    ) -> None:
        spent = member.client().deduct_tokens("analyze_strategy")
        with pytest.raises(PermissionDenied) as denied:
            member.client().refund_deduction(spent.usage_id)
        assert denied.value.reason == "admin_required"
        refund = org_admin.client().refund_deduction(spent.usage_id, reason="model error")
        assert (refund.tokens_refunded, refund.remaining_balance) == (10, 100)
        with pytest.raises(AlreadyRefunded):
            org_admin.client().refund_deduction(spent.usage_id)
        assert balance(db, pro_org, "strategy_analysis") == 100

    def test_admin_refunds_are_limited_per_period_the_service_role_is_not(
        self, stack_env: StackEnv, org_admin: TestUser, pro_org: UUID, db: Database
    ) -> None:
        limit = db.value("select admin_refunds_per_period from ai_token_settings")
        as_admin = {
            "apikey": stack_env.anon_key,
            "Authorization": f"Bearer {org_admin.access_token}",
        }
        as_service = {"apikey": stack_env.service_role_key}

        def rpc(name: str, body: dict[str, object], headers: dict[str, str]) -> httpx.Response:
            return httpx.post(
                f"{stack_env.url}/rest/v1/rpc/{name}", json=body, headers=headers, timeout=10
            )

        answers = []
        for _ in range(limit + 2):  # deduct and refund, again and again
            spent = rpc("deduct_tokens", {"feature": "ask_assistant"}, as_admin).json()
            answers.append(rpc("refund_deduction", {"usage_id": spent["usage_id"]}, as_admin))
        assert [a.status_code for a in answers] == [200] * limit + [429, 429]
        refused = json.loads(answers[-1].json()["details"])
        assert (refused["reason"], refused["limit"], refused["used"]) == (
            "refund_limit_reached",
            limit,
            limit,
        )
        assert balance(db, pro_org, "general") == 50 - 2, "the refused refunds gave nothing back"
        last_usage = refused["usage_id"]
        with pytest.raises(RefundLimitReached) as limited:
            org_admin.client().refund_deduction(last_usage)
        assert isinstance(limited.value, RateLimited)
        assert limited.value.limit == limit
        assert limited.value.refresh_date is not None
        assert 1 <= limited.value.retry_after <= 32 * 24 * 3600
        assert rpc("refund_deduction", {"usage_id": last_usage}, as_service).status_code == 200
        # The next period starts counting again (time travel: the refunds were last month).
        db.execute(
            "update ai_token_usage_log set created_at = created_at - interval '1 month',"
            " refunded_at = refunded_at - interval '1 month' where organization_id = %s",
            (pro_org,),
        )
        db.execute(
            "update ai_tokens set refresh_date = now() - interval '1 second'"
            " where organization_id = %s",
            (pro_org,),
        )
        spent = rpc("deduct_tokens", {"feature": "ask_assistant"}, as_admin).json()
        assert rpc("refund_deduction", {"usage_id": spent["usage_id"]}, as_admin).status_code == 200
        assert db.value("select count(*) from verify_token_ledger(%s)", (pro_org,)) == 0


class TestEnforcementModes:
    def test_monitor_never_refuses_but_records(
        self,
        member: TestUser,
        org_admin: TestUser,
        admin: TokensAdmin,
        pro_org: UUID,
        db: Database,
    ) -> None:
        db.execute(
            "update ai_tokens set balance = 2 where organization_id = %s "
            "and token_type = 'goal_generation'",
            (pro_org,),
        )
        change = admin.set_enforcement_mode("monitor", organization_id=pro_org)
        assert (change.previous_mode, change.mode) == ("enforce", "monitor")
        result = member.client().deduct_tokens("generate_goal")
        assert (result.success, result.tokens_deducted, result.remaining_balance) == (True, 2, 0)
        assert result.would_have_refused is not None
        assert result.would_have_refused.reason == "insufficient_tokens"
        refused = [a for a in org_admin.client().alerts() if a.kind == "refused"]
        assert refused[0].reason == "insufficient_tokens"
        assert refused[0].details["refused"] is False

    def test_off_deducts_nothing(
        self, member: TestUser, admin: TokensAdmin, pro_org: UUID, db: Database
    ) -> None:
        admin.set_enforcement_mode("off", organization_id=pro_org)
        result = member.client().deduct_tokens("generate_goal")
        assert (result.success, result.tokens_deducted, result.enforcement) == (True, 0, "off")
        assert balance(db, pro_org, "goal_generation") == 20
        admin.set_enforcement_mode("inherit", organization_id=pro_org)
        assert member.client().deduct_tokens("generate_goal").tokens_deducted == 3


class TestAlerts:
    def test_thresholds_once_per_period_admins_only(
        self, member: TestUser, org_admin: TestUser, pro_org: UUID
    ) -> None:
        client = member.client()
        for _ in range(6):  # goal_generation 20 -> 2
            client.deduct_tokens("generate_goal")
        with pytest.raises(InsufficientTokens):
            client.deduct_tokens("generate_goal")
        alerts = org_admin.client().alerts()
        kinds = sorted(a.kind for a in alerts if a.token_type == "goal_generation")
        assert kinds == ["balance_below_20_percent", "refused", "usage_80_percent"]
        assert member.client().alerts() == [], "members do not read alerts"
