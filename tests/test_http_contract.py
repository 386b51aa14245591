"""The wire contract through the gateway, as any HTTP client (supabase-js, curl) sees it."""

from __future__ import annotations

import json
from uuid import UUID

import httpx
import pytest

from tokens_client.stack import Stack
from tokens_client.testing import Database, StackEnv, TestUser, UserFactory


def rpc(env: StackEnv, name: str, body: dict[str, object], **headers: str) -> httpx.Response:
    return httpx.post(f"{env.url}/rest/v1/rpc/{name}", json=body, headers=headers, timeout=10)


def test_returned_refusals_look_like_raised_errors(
    stack_env: StackEnv, member: TestUser, pro_org: UUID, db: Database
) -> None:
    db.execute("update ai_tokens set balance = 1 where organization_id = %s", (pro_org,))
    auth = {"apikey": stack_env.anon_key, "Authorization": f"Bearer {member.access_token}"}
    refused = rpc(stack_env, "deduct_tokens", {"feature": "generate_goal"}, **auth)  # returned
    raised = rpc(stack_env, "deduct_tokens", {"feature": "no_such_feature"}, **auth)  # raised
    assert (refused.status_code, raised.status_code) == (402, 404)
    for response in (refused, raised):
        body = response.json()
        assert set(body) == {"code", "message", "details", "hint"}
        assert json.loads(body["details"])["reason"]
    assert refused.json()["code"] == "PT402"
    assert refused.json()["message"] == "You're out of AI tokens"


def test_rate_limited_answers_retry_after(
    stack_env: StackEnv, make_org, make_user: UserFactory
) -> None:  # type: ignore[no-untyped-def]
    user = make_user(make_org("pro", rate_limited=True))
    auth = {"apikey": stack_env.anon_key, "Authorization": f"Bearer {user.access_token}"}
    answers = [
        rpc(stack_env, "deduct_tokens", {"feature": "ask_assistant"}, **auth) for _ in range(6)
    ]
    assert [a.status_code for a in answers] == [200] * 5 + [429]
    assert 1 <= int(answers[-1].headers["Retry-After"]) <= 60
    assert json.loads(answers[-1].json()["details"])["reason"] == "rate_limited"


def test_gateway_uses_apikey_when_no_authorization(stack_env: StackEnv) -> None:
    anonymous = rpc(stack_env, "get_token_stats", {}, apikey=stack_env.anon_key)
    assert anonymous.status_code == 401  # anon may not call it
    service = rpc(
        stack_env,
        "get_token_stats",
        {"organization_id": "00000000-0000-4000-b000-00000000ac3e"},
        apikey=stack_env.service_role_key,
    )
    assert service.status_code == 200


def test_publishable_and_secret_keys_are_exchanged(
    stack_env: StackEnv, member: TestUser, pro_org: UUID
) -> None:
    status = Stack().status()
    if not status.running or status.api_url != stack_env.url:
        pytest.skip("the opaque keys tested here are those of our local stack")
    with_user = rpc(
        stack_env,
        "get_token_stats",
        {},
        apikey=status.publishable_key,
        Authorization=f"Bearer {member.access_token}",
    )
    assert with_user.status_code == 200
    assert with_user.json()["organization_id"] == str(pro_org)
    secret = rpc(
        stack_env, "get_token_stats", {"organization_id": str(pro_org)}, apikey=status.secret_key
    )
    assert secret.status_code == 200
    publishable_only = rpc(stack_env, "get_token_stats", {}, apikey=status.publishable_key)
    assert publishable_only.status_code == 401
