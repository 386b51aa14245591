"""Every method of both twins (sync and async) and of the admin client, end to end."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from uuid import UUID, uuid4

import pytest

from tokens_client import (
    AsyncTokensAdmin,
    Deduction,
    InvalidRequest,
    TokensAdmin,
    TokensClient,
)
from tokens_client.testing import Database, StackEnv, TestUser, UserFactory


def test_sync_methods(member: TestUser, pro_org: UUID) -> None:
    with member.client() as client:
        features = {f.feature: f for f in client.features()}
        assert features["generate_goal"].cost == 3
        assert features["generate_goal"].token_type == "goal_generation"
        assert {
            "generate_quest",
            "generate_leads",
            "analyze_strategy",
            "forecast_revenue",
            "ask_assistant",
        } <= set(features)

        balances = client.balances()
        assert {b.token_type: b.balance for b in balances} == {
            "lead_generation": 50,
            "goal_generation": 20,
            "strategy_analysis": 100,
            "forecast": 30,
            "general": 50,
        }
        assert all(b.organization_id == pro_org for b in balances)
        assert all(b.refresh_date is not None and b.refresh_date.tzinfo for b in balances)

        assert client.has_enough_tokens("analyze_strategy", organization_id=pro_org)
        first = client.deduct_tokens("analyze_strategy", request_id="sync-1")
        assert isinstance(first, Deduction)
        assert (first.remaining_balance, first.replayed) == (90, False)
        again = client.deduct_tokens("analyze_strategy", request_id="sync-1")
        assert (again.replayed, again.usage_id, again.remaining_balance) == (
            True,
            first.usage_id,
            90,
        )

        usage = client.usage(since=timedelta(minutes=5))
        assert [
            (u.feature_used, u.tokens_deducted, u.balance_after, u.request_id) for u in usage
        ] == [("analyze_strategy", 10, 90, "sync-1")]
        assert usage[0].created_at.tzinfo is not None
        assert client.usage(since=datetime.now(timezone.utc) + timedelta(minutes=1)) == []

        stats = client.stats()
        assert (stats.plan, stats.total_used) == ("pro", 10)
        assert stats.for_type("strategy_analysis").percent_remaining == 90.0


async def test_async_methods(member: TestUser, pro_org: UUID) -> None:
    async with member.async_client() as client:
        assert len(await client.features()) >= 6
        assert len(await client.balances()) == 5
        assert await client.has_enough_tokens("forecast_revenue")
        result = await client.deduct_tokens("forecast_revenue", request_id="async-1")
        assert result.remaining_balance == 25
        assert (await client.deduct_tokens("forecast_revenue", request_id="async-1")).replayed
        usage = await client.usage(limit=10)
        assert [u.request_id for u in usage] == ["async-1"]
        stats = await client.stats(organization_id=pro_org)
        assert stats.for_type("forecast").balance == 25


def test_usage_limit_is_validated(member: TestUser) -> None:
    with pytest.raises(InvalidRequest):
        member.client().usage(limit=0)
    with pytest.raises(InvalidRequest):
        member.client().usage(since=datetime(2026, 1, 1))  # naive datetime


def test_from_supabase_and_from_env(
    member: TestUser, stack_env: StackEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPABASE_URL", stack_env.url)
    monkeypatch.setenv("SUPABASE_ANON_KEY", stack_env.anon_key)
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", stack_env.service_role_key)
    assert TokensClient.from_env(member.access_token).stats().total_balance == 250
    assert TokensAdmin.from_env().stats(member.organization_id).total_balance == 250


def test_admin_methods(admin: TokensAdmin, make_user: UserFactory, db: Database) -> None:
    org = admin.create_organization("Report Co", plan="pro")
    assert org.plan == "pro"
    assert admin.initialize_tokens(org.id) != []
    alice = make_user(org.id, "owner", full_name="Alice Report")
    bob = make_user(org.id, "member", full_name="Bob Report")
    alice.client().deduct_tokens("generate_goal")
    alice.client().deduct_tokens("ask_assistant")
    bob.client().deduct_tokens("generate_goal")

    by_feature = {r.key: (r.uses, r.tokens) for r in admin.usage_report(org.id, by="feature")}
    assert by_feature == {"generate_goal": (2, 6), "ask_assistant": (1, 1)}
    by_user = {r.label: (r.uses, r.tokens) for r in admin.usage_report(org.id, by="user")}
    assert by_user == {"Alice Report": (2, 4), "Bob Report": (1, 3)}
    by_day = admin.usage_report(org.id, by="day", since=timedelta(days=1))
    assert [(r.uses, r.tokens) for r in by_day] == [(3, 7)]
    assert by_day[0].day == datetime.now(timezone.utc).date()
    assert admin.usage_report(org.id, since=datetime.now(timezone.utc) + timedelta(hours=1)) == []

    assert len(admin.usage(org.id)) == 3
    assert len(admin.balances(organization_id=org.id)) == 5
    assert org.id in {o.id for o in admin.organizations()}

    reset = admin.initialize_tokens(org.id, plan="enterprise")
    assert {b.token_type: b.balance for b in reset}["goal_generation"] == 200
    assert admin.stats(org.id).plan == "enterprise"

    carol = make_user(None)
    member = admin.add_member(org.id, user_id=carol.id, role="admin", full_name="Carol")
    assert (member.organization_id, member.role) == (org.id, "admin")


def test_member_report_shows_only_their_usage_admin_the_organization(
    org_admin: TestUser, member: TestUser
) -> None:
    member.client().deduct_tokens("generate_goal")
    org_admin.client().deduct_tokens("ask_assistant")
    mine = member.client()._execute(member.client()._usage_report(None, "feature", None))
    assert {r.key for r in mine} == {"generate_goal"}
    everything = org_admin.client()._execute(org_admin.client()._usage_report(None, "user", None))
    assert {r.key for r in everything} == {str(member.id), str(org_admin.id)}


async def test_async_admin_methods(stack_env: StackEnv, make_user: UserFactory) -> None:
    async with AsyncTokensAdmin(stack_env.url, stack_env.service_role_key) as admin:
        org = await admin.create_organization("Async Co", plan="enterprise")
        balances = await admin.initialize_tokens(org.id)
        assert sum(b.balance for b in balances) == 2500
        user = make_user(org.id, "member")
        await user.async_client().deduct_tokens("generate_leads")
        assert (await admin.stats(org.id)).total_used == 5
        assert len(await admin.usage(org.id)) == 1
        assert len(await admin.balances(organization_id=org.id)) == 5
        assert [r.key for r in await admin.usage_report(org.id)] == ["generate_leads"]
        assert org.id in {o.id for o in await admin.organizations()}
        other = make_user(None)
        assert (await admin.add_member(org.id, user_id=other.id)).role == "member"


def test_settings_from_a_dotenv_file(
    tmp_path, member: TestUser, stack_env: StackEnv, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    for name in (
        "SUPABASE_URL",
        "SUPABASE_ANON_KEY",
        "SUPABASE_PUBLISHABLE_KEY",
        "SUPABASE_SERVICE_ROLE_KEY",
        "SUPABASE_SECRET_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        f"SUPABASE_URL={stack_env.url}\n"
        f"SUPABASE_ANON_KEY={stack_env.anon_key}\n"
        f"SUPABASE_SERVICE_ROLE_KEY={stack_env.service_role_key}\n"
    )
    client = TokensClient.from_env(member.access_token, dotenv_path=str(dotenv))
    assert client.stats().organization_id == member.organization_id
    admin = TokensAdmin.from_env(dotenv_path=str(dotenv))
    assert admin.stats(member.organization_id).plan == "pro"


def test_publishable_key_with_the_local_gateway(member: TestUser, stack_env: StackEnv) -> None:
    from tokens_client.stack import Stack

    status = Stack().status()
    if not status.running or status.api_url != stack_env.url:
        pytest.skip("the sb_ keys tested here are those of our local stack")
    client = TokensClient(stack_env.url, status.publishable_key, access_token=member.access_token)
    assert client.deduct_tokens("ask_assistant").remaining_balance == 49
    admin = TokensAdmin(stack_env.url, status.secret_key)
    assert admin.stats(member.organization_id).total_used == 1


def test_organizations_reads_past_postgrests_row_limit(admin: TokensAdmin, db: Database) -> None:
    """PostgREST answers at most db-max-rows (1,000) per request: organizations() pages."""
    prefix = f"Paged {uuid4().hex[:8]} "
    db.execute(
        "insert into public.organizations (name, plan) select %s || lpad(g::text, 4, '0'), 'pro'"
        " from generate_series(1, 1001) g",
        (prefix,),
    )
    try:
        listed = [o.name for o in admin.organizations() if o.name.startswith(prefix)]
        assert len(listed) == 1001
        assert listed == sorted(listed)
        assert [o.name for o in admin.organizations(name=prefix + "0007")] == [prefix + "0007"]
    finally:
        db.execute("delete from public.organizations where name like %s", (prefix + "%",))
