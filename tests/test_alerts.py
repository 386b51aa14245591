"""Refusal records are bounded, and the alert channel carries ids only (real PostgREST).

Every refused spend is counted in one ai_token_alerts row per organization, token
type, user, reason and hour; that row is announced once on the ai_token_alerts channel,
whose payload names ids only, since any database session may LISTEN.
"""

from __future__ import annotations

import json
from uuid import UUID

import httpx
import psycopg

from tokens_client.testing import Database, OrgFactory, StackEnv, UserFactory

HTTP = httpx.Client()


def deduct(env: StackEnv, token: str, feature: str) -> httpx.Response:
    return HTTP.post(
        f"{env.url}/rest/v1/rpc/deduct_tokens",
        json={"feature": feature},
        headers={"apikey": env.anon_key, "Authorization": f"Bearer {token}"},
        timeout=10,
    )


def test_refusals_are_counted_per_user_reason_and_hour_and_announced_once(
    stack_env: StackEnv, make_org: OrgFactory, make_user: UserFactory, db: Database
) -> None:
    starter = make_org("starter")
    member, other, owner = (
        make_user(starter, "member"),
        make_user(starter, "member"),
        make_user(starter, "owner"),
    )
    with psycopg.connect(stack_env.db_url, autocommit=True) as listener:
        listener.execute("listen ai_token_alerts")
        for _ in range(200):
            assert deduct(stack_env, member.access_token, "generate_goal").status_code == 403
        for _ in range(3):
            assert deduct(stack_env, other.access_token, "generate_goal").status_code == 403
        payloads = [
            json.loads(n.payload)
            for n in listener.notifies(timeout=2)
            if json.loads(n.payload)["organization_id"] == str(starter)
        ]

    rows = db.execute(
        "select user_id, reason, refusal_count from ai_token_alerts"
        " where organization_id = %s and kind = 'refused' order by refusal_count desc",
        (starter,),
    )
    assert rows == [
        (member.id, "feature_not_in_plan", 200),
        (other.id, "feature_not_in_plan", 3),
    ], "two rows, not 203"
    assert len(payloads) == 2, "each bucket is announced once"
    assert all(set(p) == {"id", "organization_id"} for p in payloads), payloads

    # Owners see how many were refused, by whom and why (RLS, through PostgREST).
    seen = httpx.get(
        f"{stack_env.url}/rest/v1/ai_token_alerts",
        params={"select": "user_id,reason,refusal_count", "kind": "eq.refused"},
        headers={"apikey": stack_env.anon_key, "Authorization": f"Bearer {owner.access_token}"},
        timeout=10,
    )
    assert seen.status_code == 200
    assert sorted((r["user_id"], r["reason"], r["refusal_count"]) for r in seen.json()) == sorted(
        [(str(member.id), "feature_not_in_plan", 200), (str(other.id), "feature_not_in_plan", 3)]
    )


def test_threshold_alerts_announce_ids_only(
    stack_env: StackEnv, make_org: OrgFactory, make_user: UserFactory
) -> None:
    organization: UUID = make_org("pro")
    member = make_user(organization, "member")
    with psycopg.connect(stack_env.db_url, autocommit=True) as listener:
        listener.execute("listen ai_token_alerts")
        for _ in range(6):  # 18 of 20 goal tokens: usage above 80 %, balance under 20 %
            assert deduct(stack_env, member.access_token, "generate_goal").status_code == 200
        payloads = [
            json.loads(n.payload)
            for n in listener.notifies(timeout=2)
            if json.loads(n.payload)["organization_id"] == str(organization)
        ]
    assert len(payloads) == 2
    assert all(set(p) == {"id", "organization_id"} for p in payloads), payloads
