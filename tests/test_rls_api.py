"""Tenant isolation as an auditor would check it: through PostgREST with real JWTs."""

from __future__ import annotations

from uuid import UUID

import pytest
from postgrest.exceptions import APIError
from supabase import Client, ClientOptions, create_client

from tokens_client.testing import Database, StackEnv, TestUser, UserFactory

# table -> a column to write and a value for it. Only tokens-client's tables: the host's
# organizations and user_profiles follow the host app's own rules.
TABLES = {
    "ai_plans": ("description", "hijacked"),
    "ai_tokens": ("balance", 999999),
    "ai_token_usage_log": ("tokens_deducted", 1),
    "ai_features": ("cost", 1),
    "ai_plan_allocations": ("monthly_allocation", 999999),
    "ai_token_types": ("description", "hijacked"),
}


def raw(env: StackEnv, user: TestUser | None) -> Client:
    headers = {"Authorization": f"Bearer {user.access_token}"} if user else {}
    return create_client(env.url, env.anon_key, options=ClientOptions(headers=headers))


@pytest.fixture
def two_tenants(make_org, make_user: UserFactory) -> tuple[TestUser, TestUser, TestUser, TestUser]:  # type: ignore[no-untyped-def]
    """(member of A, admin of A, member of B, admin of B), each A/B user has spent once."""
    org_a, org_b = make_org("pro"), make_org("pro")
    users = (
        make_user(org_a, "member"),
        make_user(org_a, "admin"),
        make_user(org_b, "member"),
        make_user(org_b, "owner"),
    )
    for user in users:
        user.client().deduct_tokens("ask_assistant")
    return users


def _orgs_seen(client: Client, table: str) -> set[UUID]:
    column = "organization_id"
    rows = client.table(table).select(column).execute().data
    return {UUID(row[column]) for row in rows}


def test_members_see_only_their_organization(
    stack_env: StackEnv, two_tenants: tuple[TestUser, ...]
) -> None:
    member_a, admin_a, member_b, _ = two_tenants
    for user in (member_a, admin_a, member_b):
        client = raw(stack_env, user)
        for table in ("ai_tokens", "ai_token_usage_log"):
            assert _orgs_seen(client, table) == {user.organization_id}, (user.role, table)


def test_usage_log_members_see_their_own_admins_the_organization(
    stack_env: StackEnv, two_tenants: tuple[TestUser, ...]
) -> None:
    member_a, admin_a, _, _ = two_tenants
    mine = raw(stack_env, member_a).table("ai_token_usage_log").select("user_id").execute().data
    assert {row["user_id"] for row in mine} == {str(member_a.id)}
    everyone = raw(stack_env, admin_a).table("ai_token_usage_log").select("user_id").execute()
    assert {row["user_id"] for row in everyone.data} == {str(member_a.id), str(admin_a.id)}


def test_filtering_for_another_tenant_returns_nothing(
    stack_env: StackEnv, two_tenants: tuple[TestUser, ...]
) -> None:
    member_a, _, member_b, _ = two_tenants
    client = raw(stack_env, member_a)
    for table in ("ai_tokens", "ai_token_usage_log"):
        rows = (
            client.table(table)
            .select("*")
            .eq("organization_id", str(member_b.organization_id))
            .execute()
            .data
        )
        assert rows == []


@pytest.mark.parametrize("table", TABLES)
def test_nobody_writes_tables_directly(
    stack_env: StackEnv, two_tenants: tuple[TestUser, ...], db: Database, table: str
) -> None:
    _, admin_a, _, _ = two_tenants
    column, value = TABLES[table]
    before = db.value(f"select md5(string_agg(t::text, ',' order by t::text)) from {table} t")
    for user in (None, admin_a):
        client = raw(stack_env, user)
        with pytest.raises(APIError) as insert:
            client.table(table).insert({"organization_id": str(admin_a.organization_id)}).execute()
        assert insert.value.code in ("42501", "PGRST204"), insert.value
        with pytest.raises(APIError) as update:
            client.table(table).update({column: value}).neq(column, value).execute()
        assert update.value.code in ("42501", "PGRST204"), update.value
        with pytest.raises(APIError) as delete:
            client.table(table).delete().neq(column, value).execute()
        assert delete.value.code == "42501", delete.value
    after = db.value(f"select md5(string_agg(t::text, ',' order by t::text)) from {table} t")
    assert after == before


def test_anonymous_reads_nothing(stack_env: StackEnv, two_tenants: tuple[TestUser, ...]) -> None:
    client = raw(stack_env, None)
    for table in TABLES:
        with pytest.raises(APIError) as error:
            client.table(table).select("*").execute()
        assert error.value.code == "42501", table
    with pytest.raises(APIError) as call:
        client.rpc(
            "get_token_stats", {"organization_id": str(two_tenants[0].organization_id)}
        ).execute()
    assert call.value.code == "42501"


def test_service_role_sees_every_tenant(
    stack_env: StackEnv, two_tenants: tuple[TestUser, ...]
) -> None:
    service = create_client(stack_env.url, stack_env.service_role_key)
    both = {two_tenants[0].organization_id, two_tenants[2].organization_id}
    rows = (
        service.table("ai_tokens")
        .select("organization_id")
        .in_("organization_id", [str(org) for org in both])
        .execute()
        .data
    )
    assert len(rows) == 10
    assert {UUID(row["organization_id"]) for row in rows} == both
