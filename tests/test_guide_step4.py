"""The guide's Step 4, through the gateway, PostgREST and the real supabase-py client."""

from __future__ import annotations

from uuid import UUID

import pytest
from supabase import ClientOptions, create_client

from tokens_client import FeatureNotInPlan, InsufficientTokens, TokensClient
from tokens_client.testing import Database, StackEnv, TestUser, UserFactory


def test_raw_supabase_client_check_deduct_stats(
    stack_env: StackEnv, member: TestUser, pro_org: UUID
) -> None:
    """What a user of plain supabase-py writes: rpc() with the user's JWT."""
    supabase = create_client(
        stack_env.url,
        stack_env.anon_key,
        options=ClientOptions(headers={"Authorization": f"Bearer {member.access_token}"}),
    )
    check = supabase.rpc(
        "has_enough_tokens", {"feature": "generate_goal", "organization_id": str(pro_org)}
    ).execute()
    assert check.data is True

    deduct = supabase.rpc(
        "deduct_tokens", {"feature": "generate_goal", "organization_id": str(pro_org)}
    ).execute()
    assert deduct.data["success"] is True
    assert deduct.data["remaining_balance"] == 17
    assert deduct.data["message"] == "Used 3 tokens for generate_goal"

    stats = supabase.rpc("get_token_stats", {"organization_id": str(pro_org)}).execute().data
    assert stats["total_allocated"] == 250
    assert stats["total_balance"] == 247
    assert stats["total_used"] == 3
    assert len(stats["by_type"]) == 5


def test_typed_client_follows_the_guide(member: TestUser) -> None:
    client = member.client()
    assert client.has_enough_tokens("generate_goal") is True
    deduction = client.deduct_tokens("generate_goal")
    assert deduction.remaining_balance == 17
    assert deduction.tokens_deducted == 3
    assert deduction.token_type == "goal_generation"
    assert deduction.message == "Used 3 tokens for generate_goal"
    stats = client.stats()
    goal = stats.for_type("goal_generation")
    assert (goal.balance, goal.allocated, goal.used) == (17, 20, 3)
    assert goal.percent_remaining == 85.0
    assert (stats.total_balance, stats.total_allocated, stats.total_used) == (247, 250, 3)


def test_starter_plan_is_refused(make_org, make_user: UserFactory, db: Database) -> None:  # type: ignore[no-untyped-def]
    starter = make_org("starter")
    user = make_user(starter, "owner")
    with pytest.raises(FeatureNotInPlan) as refused:
        user.client().deduct_tokens("generate_goal")
    assert refused.value.status == 403
    assert refused.value.message == "Not available on Starter plan"
    assert refused.value.plan == "starter"
    assert (
        db.value("select count(*) from ai_token_usage_log where organization_id = %s", (starter,))
        == 0
    )


def test_running_out_is_refused_with_nothing_written(
    member: TestUser, pro_org: UUID, db: Database
) -> None:
    client: TokensClient = member.client()
    # 20 goal_generation tokens at 3 each: six succeed (2 left), the seventh is refused.
    for _ in range(6):
        client.deduct_tokens("generate_goal")
    log_rows_before = db.value(
        "select count(*) from ai_token_usage_log where organization_id = %s", (pro_org,)
    )
    with pytest.raises(InsufficientTokens) as refused:
        client.deduct_tokens("generate_goal")
    error = refused.value
    assert error.message == "You're out of AI tokens"
    assert (error.status, error.reason) == (402, "insufficient_tokens")
    assert (error.required, error.balance, error.token_type) == (3, 2, "goal_generation")
    assert client.has_enough_tokens("generate_goal") is False
    assert (
        db.value(
            "select balance from ai_tokens where organization_id = %s and token_type = %s",
            (pro_org, "goal_generation"),
        )
        == 2
    )
    assert (
        db.value("select count(*) from ai_token_usage_log where organization_id = %s", (pro_org,))
        == log_rows_before
        == 6
    )
