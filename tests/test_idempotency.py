"""An idempotency key belongs to its caller and its payload, through the real PostgREST.

Raw HTTP (httpx) rather than the Python client: what any client of the RPC API gets.
The same caller with the same payload replays the first result and spends nothing;
another caller, or another feature / estimate under the same key, is 409
idempotency_conflict and spends nothing; one caller's keys in different organizations
are independent.
"""

from __future__ import annotations

import json
from uuid import UUID, uuid4

import httpx

from tokens_client.testing import Database, OrgFactory, StackEnv, TestUser, UserFactory


def call(env: StackEnv, token: str, name: str, body: dict[str, object]) -> httpx.Response:
    headers = {"apikey": env.anon_key, "Authorization": f"Bearer {token}"}
    return httpx.post(f"{env.url}/rest/v1/rpc/{name}", json=body, headers=headers, timeout=10)


def reason(response: httpx.Response) -> str:
    return str(json.loads(response.json()["details"])["reason"])


def goal_balance(db: Database, organization: UUID) -> int:
    return int(
        db.value(
            "select balance from ai_tokens where organization_id = %s"
            " and token_type = 'goal_generation'",
            (organization,),
        )
    )


def usage_rows(db: Database, organization: UUID) -> int:
    return int(
        db.value(
            "select count(*) from ai_token_usage_log where organization_id = %s", (organization,)
        )
    )


def test_a_deduction_key_replays_only_for_its_caller_and_feature(
    stack_env: StackEnv, make_user: UserFactory, pro_org: UUID, db: Database
) -> None:
    alice, mallory = make_user(pro_org, "member"), make_user(pro_org, "admin")
    key = f"req-{uuid4()}"
    first = call(
        stack_env,
        alice.access_token,
        "deduct_tokens",
        {"feature": "generate_goal", "request_id": key},
    )
    assert first.status_code == 200, first.text
    assert (first.json()["replayed"], first.json()["remaining_balance"]) == (False, 17)

    replay = call(
        stack_env,
        alice.access_token,
        "deduct_tokens",
        {"feature": "generate_goal", "request_id": key},
    )
    assert replay.status_code == 200
    assert replay.json()["replayed"] is True
    assert replay.json()["usage_id"] == first.json()["usage_id"]

    stolen = call(
        stack_env,
        mallory.access_token,
        "deduct_tokens",
        {"feature": "generate_goal", "request_id": key},
    )
    assert stolen.status_code == 409
    assert reason(stolen) == "idempotency_conflict"
    other_feature = call(
        stack_env,
        alice.access_token,
        "deduct_tokens",
        {"feature": "generate_quest", "request_id": key},
    )
    assert other_feature.status_code == 409
    assert reason(other_feature) == "idempotency_conflict"
    assert json.loads(other_feature.json()["details"])["original_feature"] == "generate_goal"

    assert goal_balance(db, pro_org) == 17, "only the first call spent"
    assert usage_rows(db, pro_org) == 1


def test_a_reservation_key_replays_only_for_its_caller_feature_and_estimate(
    stack_env: StackEnv, make_user: UserFactory, pro_org: UUID, db: Database
) -> None:
    alice, bob = make_user(pro_org, "member"), make_user(pro_org, "member")
    key = f"hold-{uuid4()}"
    hold = {"feature": "generate_quest", "estimate": 4, "request_id": key}
    first = call(stack_env, alice.access_token, "reserve_tokens", hold)
    assert first.status_code == 200, first.text
    replay = call(stack_env, alice.access_token, "reserve_tokens", hold)
    assert replay.status_code == 200
    assert (replay.json()["replayed"], replay.json()["reservation_id"]) == (
        True,
        first.json()["reservation_id"],
    )
    for token, body in [
        (bob.access_token, hold),
        (alice.access_token, {**hold, "estimate": 10}),
        (alice.access_token, {**hold, "feature": "generate_goal"}),
    ]:
        conflict = call(stack_env, token, "reserve_tokens", body)
        assert conflict.status_code == 409, body
        assert reason(conflict) == "idempotency_conflict"
    held = db.value(
        "select reserved from ai_tokens where organization_id = %s"
        " and token_type = 'goal_generation'",
        (pro_org,),
    )
    assert held == 4, "one hold, of the first estimate"
    assert (
        db.value(
            "select count(*) from ai_token_reservations where organization_id = %s", (pro_org,)
        )
        == 1
    )


def test_one_callers_keys_in_different_organizations_are_independent(
    stack_env: StackEnv, make_org: OrgFactory, db: Database
) -> None:
    first_org, second_org = make_org("pro"), make_org("pro")
    key = f"req-{uuid4()}"
    for organization in (first_org, second_org):
        spent = call(
            stack_env,
            stack_env.service_role_key,
            "deduct_tokens",
            {"feature": "generate_goal", "organization_id": str(organization), "request_id": key},
        )
        assert spent.status_code == 200, spent.text
        assert spent.json()["replayed"] is False
        assert goal_balance(db, organization) == 17


def test_a_member_cannot_replay_the_service_roles_key(
    stack_env: StackEnv, member: TestUser, pro_org: UUID, db: Database
) -> None:
    key = f"req-{uuid4()}"
    body = {"feature": "generate_goal", "organization_id": str(pro_org), "request_id": key}
    assert call(stack_env, stack_env.service_role_key, "deduct_tokens", body).status_code == 200
    stolen = call(stack_env, member.access_token, "deduct_tokens", body)
    assert stolen.status_code == 409
    assert reason(stolen) == "idempotency_conflict"
    assert goal_balance(db, pro_org) == 17
