"""The guide's SQL snippets, run verbatim as in the Supabase SQL editor (as postgres)."""

from __future__ import annotations

import json
import select
from uuid import UUID

import psycopg

from tokens_client import TokensAdmin
from tokens_client.testing import Database, StackEnv, TestUser, UserFactory


def test_verify_migration_snippets(db: Database) -> None:
    db.execute("SELECT * FROM ai_tokens LIMIT 1;")
    policies = db.execute(
        "SELECT tablename, policyname FROM pg_policies "
        "WHERE tablename IN ('ai_tokens', 'ai_token_usage_log');"
    )
    assert len(policies) == 4, "the guide: 'Should return: 4 policies total'"


def test_manual_initialization_from_the_guide(
    admin: TokensAdmin, make_user: UserFactory, db: Database
) -> None:
    org = admin.create_organization("Guide Manual Co", plan="pro").id
    db.execute(
        """
        INSERT INTO ai_tokens (organization_id, token_type, balance, total_allocated, refresh_date)
        VALUES
          (%(org)s, 'lead_generation', 50, 50, now() + interval '30 days'),
          (%(org)s, 'goal_generation', 20, 20, now() + interval '30 days'),
          (%(org)s, 'strategy_analysis', 100, 100, now() + interval '30 days'),
          (%(org)s, 'forecast', 30, 30, now() + interval '30 days'),
          (%(org)s, 'general', 50, 50, now() + interval '30 days');
        """,
        {"org": org},
    )
    admin.set_rate_limit(max_requests=1000, window_seconds=60, organization_id=org)
    user = make_user(org, "owner", full_name="Guide Owner")
    assert user.client().deduct_tokens("generate_goal").remaining_balance == 17
    # the guide's monitoring queries
    by_feature = db.execute(
        "SELECT feature_used, COUNT(*) as uses, SUM(tokens_deducted) as total_tokens "
        "FROM ai_token_usage_log WHERE organization_id = %s GROUP BY feature_used;",
        (org,),
    )
    assert by_feature == [("generate_goal", 1, 3)]
    per_user = db.execute(
        """
        SELECT up.full_name, COUNT(*) as api_calls, SUM(atul.tokens_deducted) as tokens_used
        FROM ai_token_usage_log atul
        JOIN user_profiles up ON atul.user_id = up.id
        WHERE atul.organization_id = %s
        GROUP BY up.full_name ORDER BY tokens_used DESC;
        """,
        (org,),
    )
    assert per_user == [("Guide Owner", 1, 3)]
    # rows written by hand are journaled, so the ledger stays exact
    assert admin.verify_token_ledger(organization_id=org) == []


def test_rollback_plan_set_all_balances_to_9999(
    admin: TokensAdmin, member: TestUser, pro_org: UUID, db: Database
) -> None:
    db.execute("UPDATE ai_tokens SET balance = 9999 WHERE organization_id = %s;", (pro_org,))
    assert member.client().stats().total_balance == 5 * 9999
    assert admin.verify_token_ledger(organization_id=pro_org) == []


def test_guide_indexes_exist_and_its_create_statements_still_run(db: Database) -> None:
    db.execute(
        "CREATE INDEX IF NOT EXISTS idx_ai_token_usage_org_date "
        "ON ai_token_usage_log(organization_id, created_at DESC);"
    )
    db.execute(
        "CREATE INDEX IF NOT EXISTS idx_ai_tokens_refresh "
        "ON ai_tokens(refresh_date) WHERE refresh_date IS NOT NULL;"
    )
    names = {
        row[0]
        for row in db.execute(
            "select indexname from pg_indexes "
            "where tablename in ('ai_tokens', 'ai_token_usage_log')"
        )
    }
    assert {"idx_ai_token_usage_org_date", "idx_ai_tokens_refresh"} <= names


def test_alerts_are_sent_with_pg_notify(
    stack_env: StackEnv, member: TestUser, pro_org: UUID, db: Database
) -> None:
    with psycopg.connect(stack_env.db_url, autocommit=True) as listener:
        listener.execute("LISTEN ai_token_alerts")
        db.execute(
            "update ai_tokens set balance = 3 where organization_id = %s "
            "and token_type = 'goal_generation'",
            (pro_org,),
        )
        member.client().deduct_tokens("generate_goal")  # 3 -> 0: exhausted
        received: list[dict[str, object]] = []

        def kinds() -> set[str]:
            ids = [p["id"] for p in received if p["organization_id"] == str(pro_org)]
            rows = db.execute("select kind from ai_token_alerts where id = any(%s)", (ids,))
            return {row[0] for row in rows}

        for _ in range(20):
            select.select([listener.fileno()], [], [], 0.25)
            received += [
                json.loads(n.payload) for n in listener.notifies(timeout=0, stop_after=None)
            ]
            if "balance_exhausted" in kinds():
                break
    assert "balance_exhausted" in kinds(), received
    # The channel carries ids only: any database session may listen.
    assert all(set(p) == {"id", "organization_id"} for p in received), received
