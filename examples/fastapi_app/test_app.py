"""The example app through FastAPI's TestClient, against the real local stack."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from uuid import UUID

import pytest
from app import ModelError, Quest, QuestWriter, app, get_settings, quest_writer
from fastapi.testclient import TestClient

from tokens_client import AsyncTokens
from tokens_client.stack import mint_jwt

if TYPE_CHECKING:
    from tokens_client.testing import Database, OrgFactory, StackEnv, TestUser, UserFactory

# tokens-client's end-to-end fixtures: stack_env, db, admin, make_org, make_user, member…
# (here, not in a conftest.py: pytest only honours pytest_plugins in a top-level one).
pytest_plugins = ["tokens_client.testing"]

GOAL = {"goal": "Save 5,000 for a trip"}


@pytest.fixture
def api(stack_env: StackEnv, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("SUPABASE_URL", stack_env.url)
    monkeypatch.setenv("SUPABASE_ANON_KEY", stack_env.anon_key)
    monkeypatch.delenv("SUPABASE_PUBLISHABLE_KEY", raising=False)
    get_settings.cache_clear()
    with TestClient(app) as client:  # runs the lifespan: one pool for all requests
        yield client
    app.dependency_overrides.clear()
    get_settings.cache_clear()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def generate(api: TestClient, user: TestUser, **headers: str) -> Any:
    return api.post("/quests/generate", json=GOAL, headers={**bearer(user.access_token), **headers})


def goal_balance(db: Database, organization_id: UUID | None) -> int:
    return int(
        db.value(
            "select balance from ai_tokens where organization_id = %s "
            "and token_type = 'goal_generation'",
            (organization_id,),
        )
    )


def log_rows(db: Database, organization_id: UUID | None) -> int:
    return int(
        db.value(
            "select count(*) from ai_token_usage_log where organization_id = %s",
            (organization_id,),
        )
    )


def test_generates_a_quest_and_spends_two_tokens(
    api: TestClient, member: TestUser, db: Database
) -> None:
    response = generate(api, member)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["quest"]["title"] == "Quest: Save 5,000 for a trip"
    assert (body["tokens_used"], body["remaining_balance"]) == (2, 18)
    assert body["message"] == "Used 2 tokens for generate_quest"
    assert body["replayed"] is False
    assert goal_balance(db, member.organization_id) == 18
    row = db.execute(
        "select user_id, feature_used, tokens_deducted from ai_token_usage_log "
        "where organization_id = %s",
        (member.organization_id,),
    )
    assert row == [(member.id, "generate_quest", 2)]


def test_idempotency_key_spends_once(api: TestClient, member: TestUser, db: Database) -> None:
    first = generate(api, member, **{"Idempotency-Key": "quest-1"})
    again = generate(api, member, **{"Idempotency-Key": "quest-1"})
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json()["replayed"] is True
    assert again.json()["remaining_balance"] == first.json()["remaining_balance"] == 18
    assert again.json()["quest"] == first.json()["quest"]
    assert goal_balance(db, member.organization_id) == 18
    assert log_rows(db, member.organization_id) == 1


def test_out_of_tokens_is_402_and_a_retry_is_still_replayed(
    api: TestClient, member: TestUser, db: Database
) -> None:
    for number in range(10):  # 20 goal_generation tokens at 2 each
        response = generate(api, member, **{"Idempotency-Key": f"quest-{number}"})
        assert response.status_code == 200, response.text
    assert goal_balance(db, member.organization_id) == 0

    refused = generate(api, member)
    assert refused.status_code == 402
    assert refused.json() == {"error": "You're out of AI tokens", "reason": "insufficient_tokens"}
    new_key = generate(api, member, **{"Idempotency-Key": "quest-new"})
    assert new_key.status_code == 402
    assert new_key.json()["reason"] == "insufficient_tokens"

    retry = generate(api, member, **{"Idempotency-Key": "quest-9"})
    assert retry.status_code == 200
    assert (retry.json()["replayed"], retry.json()["remaining_balance"]) == (True, 0)
    assert log_rows(db, member.organization_id) == 10


def test_starter_plan_is_403(
    api: TestClient, make_org: OrgFactory, make_user: UserFactory, db: Database
) -> None:
    starter = make_org("starter")
    owner = make_user(starter, "owner")
    response = generate(api, owner)
    assert response.status_code == 403
    assert response.json() == {
        "error": "Not available on Starter plan",
        "reason": "feature_not_in_plan",
    }
    assert log_rows(db, starter) == 0


def test_another_organization_is_403(
    api: TestClient, member: TestUser, outsider: TestUser, db: Database
) -> None:
    response = api.post(
        "/quests/generate",
        json={**GOAL, "organization_id": str(member.organization_id)},
        headers=bearer(outsider.access_token),
    )
    assert response.status_code == 403
    assert response.json() == {
        "error": "You are not a member of this organization",
        "reason": "not_a_member",
    }
    assert goal_balance(db, member.organization_id) == 20


def test_a_user_without_an_organization_is_403(api: TestClient, make_user: UserFactory) -> None:
    response = generate(api, make_user())
    assert response.status_code == 403
    assert response.json()["reason"] == "not_a_member"


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "unauthenticated"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "unauthenticated"),
        ("forged", "invalid_jwt"),
        ("expired", "invalid_jwt"),
        ("anon_key", "api_key_as_access_token"),
    ],
)
def test_missing_or_invalid_session_is_401(
    api: TestClient,
    member: TestUser,
    stack_env: StackEnv,
    db: Database,
    headers: Any,
    reason: str,
) -> None:
    claims = {"sub": str(member.id), "role": "authenticated", "aud": "authenticated"}
    tokens = {
        "forged": mint_jwt("not-the-secret-" * 3, claims),
        "expired": member.token(expires_in=-60),
        "anon_key": stack_env.anon_key,
    }
    if isinstance(headers, str):
        headers = bearer(tokens[headers])
    response = api.post("/quests/generate", json=GOAL, headers=headers)
    assert response.status_code == 401
    assert response.json()["reason"] == reason
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert goal_balance(db, member.organization_id) == 20


def test_bad_input_is_422_and_spends_nothing(
    api: TestClient, member: TestUser, db: Database
) -> None:
    response = api.post("/quests/generate", json={"goal": ""}, headers=bearer(member.access_token))
    assert response.status_code == 422
    too_long = generate(api, member, **{"Idempotency-Key": "k" * 201})
    assert too_long.status_code == 400
    assert too_long.json()["reason"] == "invalid_request"
    assert goal_balance(db, member.organization_id) == 20


def test_one_pool_for_every_request(api: TestClient, member: TestUser) -> None:
    tokens = app.state.tokens
    assert isinstance(tokens, AsyncTokens)
    assert generate(api, member).status_code == 200
    assert generate(api, member).status_code == 200
    assert app.state.tokens is tokens, "the lifespan's pool serves every request"


def test_a_replayed_key_is_answered_without_the_model(
    api: TestClient, member: TestUser, db: Database
) -> None:
    first = generate(api, member, **{"Idempotency-Key": "quest-replay"})
    calls = QuestWriter.calls
    again = generate(api, member, **{"Idempotency-Key": "quest-replay"})
    assert again.status_code == 200
    assert QuestWriter.calls == calls, "the model was not called for the replay"
    assert again.json() == {**first.json(), "replayed": True}
    assert log_rows(db, member.organization_id) == 1


def test_rate_limited_is_429_with_retry_after(
    api: TestClient, make_org: OrgFactory, make_user: UserFactory, db: Database
) -> None:
    """The stack's real default limit: 5 spends per user per 60 s."""
    organization = make_org("pro", rate_limited=True)
    user = make_user(organization, "member")
    for number in range(5):
        response = generate(api, user, **{"Idempotency-Key": f"quest-{number}"})
        assert response.status_code == 200, response.text

    refused = generate(api, user)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.json() == {
        "error": "Rate limit exceeded. Wait before next request.",
        "reason": "rate_limited",
    }
    assert goal_balance(db, organization) == 20 - 5 * 2
    assert log_rows(db, organization) == 5
    assert db.execute(
        "select kind, reason, details->>'user_id' from ai_token_alerts where organization_id = %s",
        (organization,),
    ) == [("refused", "rate_limited", str(user.id))]

    retry = generate(api, user, **{"Idempotency-Key": "quest-4"})
    assert retry.status_code == 200, "a retried request replays: never rate limited"
    assert retry.json()["replayed"] is True
    colleague = make_user(organization, "member")
    assert generate(api, colleague).status_code == 200, "the limit is per user"
    assert goal_balance(db, organization) == 20 - 6 * 2


# ------------------------------------------------------------ POST /quests/plan


def plan(api: TestClient, user: TestUser, **body: Any) -> Any:
    return api.post(
        "/quests/plan",
        json={"goal": "Run a marathon", **body},
        headers=bearer(user.access_token),
    )


def reservations(db: Database, organization_id: UUID | None) -> list[tuple[Any, ...]]:
    return [
        tuple(row)
        for row in db.execute(
            "select status, estimate, held, actual, charged, user_id "
            "from ai_token_reservations where organization_id = %s order by created_at",
            (organization_id,),
        )
    ]


def held(db: Database, organization_id: UUID | None) -> int:
    return int(
        db.value(
            "select reserved from ai_tokens where organization_id = %s "
            "and token_type = 'goal_generation'",
            (organization_id,),
        )
    )


class WatchedWriter(QuestWriter):
    """The app's writer, noting what the database held while the model was writing."""

    def __init__(self, db: Database, organization_id: UUID | None) -> None:
        self.db = db
        self.organization_id = organization_id
        self.held_while_writing: int | None = None

    async def write(self, goal: str, max_steps: int) -> tuple[Quest, int]:
        self.held_while_writing = held(self.db, self.organization_id)
        return await super().write(goal, max_steps)


class TimedOutWriter(QuestWriter):
    """A model call that fails after the tokens were held."""

    async def write(self, goal: str, max_steps: int) -> tuple[Quest, int]:
        raise ModelError("the model timed out")


def test_plan_holds_the_estimate_and_commits_what_was_used(
    api: TestClient, member: TestUser, db: Database
) -> None:
    writer = WatchedWriter(db, member.organization_id)
    app.dependency_overrides[quest_writer] = lambda: writer
    response = plan(api, member, max_steps=5)
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["quest"]["steps"]) == 3
    assert (body["tokens_held"], body["tokens_used"], body["remaining_balance"]) == (10, 6, 14)
    assert body["message"] == "Used 6 tokens for generate_quest"
    assert writer.held_while_writing == 10, "the estimate was held during the model call"

    assert goal_balance(db, member.organization_id) == 14
    assert held(db, member.organization_id) == 0
    assert reservations(db, member.organization_id) == [("committed", 10, 10, 6, 6, member.id)]
    assert db.execute(
        "select feature_used, tokens_deducted, reservation_id is not null "
        "from ai_token_usage_log where organization_id = %s",
        (member.organization_id,),
    ) == [("generate_quest", 6, True)]


def test_plan_releases_the_hold_when_the_model_fails(
    api: TestClient, member: TestUser, db: Database
) -> None:
    app.dependency_overrides[quest_writer] = TimedOutWriter
    response = plan(api, member, max_steps=8)
    assert response.status_code == 502
    assert response.json() == {
        "error": "The AI model failed; no tokens were spent",
        "reason": "model_failed",
    }
    assert goal_balance(db, member.organization_id) == 20
    assert held(db, member.organization_id) == 0
    assert reservations(db, member.organization_id) == [("released", 16, 16, None, None, member.id)]
    assert log_rows(db, member.organization_id) == 0


def test_plan_refuses_an_estimate_above_what_is_available(
    api: TestClient, member: TestUser, db: Database
) -> None:
    member.client().deduct_tokens("generate_goal")  # 17 of 20 left
    response = plan(api, member, max_steps=10)  # holds 20
    assert response.status_code == 402
    assert response.json() == {"error": "You're out of AI tokens", "reason": "insufficient_tokens"}
    assert reservations(db, member.organization_id) == []
    assert goal_balance(db, member.organization_id) == 17
    smaller = plan(api, member, max_steps=2)  # holds 4, uses 4
    assert smaller.status_code == 200, smaller.text
    assert smaller.json()["remaining_balance"] == 13


def test_plan_on_starter_is_403_and_holds_nothing(
    api: TestClient, make_org: OrgFactory, make_user: UserFactory, db: Database
) -> None:
    starter = make_org("starter")
    response = plan(api, make_user(starter, "owner"))
    assert response.status_code == 403
    assert response.json()["reason"] == "feature_not_in_plan"
    assert reservations(db, starter) == []


def test_plan_validates_max_steps(api: TestClient, member: TestUser, db: Database) -> None:
    assert plan(api, member, max_steps=0).status_code == 422
    assert plan(api, member, max_steps=11).status_code == 422
    assert reservations(db, member.organization_id) == []


def test_plan_replay_is_answered_from_the_stored_result(
    api: TestClient, member: TestUser, db: Database
) -> None:
    headers = {**bearer(member.access_token), "Idempotency-Key": "plan-replay"}
    body = {"goal": "Run a marathon", "max_steps": 3}
    first = api.post("/quests/plan", json=body, headers=headers)
    assert first.status_code == 200, first.text
    calls = QuestWriter.calls
    again = api.post("/quests/plan", json=body, headers=headers)
    assert again.status_code == 200, again.text
    assert QuestWriter.calls == calls, "the model was not called for the replay"
    assert again.json() == {**first.json(), "replayed": True}
    assert [row[0] for row in reservations(db, member.organization_id)] == ["committed"]
    assert goal_balance(db, member.organization_id) == 20 - 6
