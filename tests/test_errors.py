"""Every error class, produced by the real stack; bad input changes nothing."""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest

from tokens_client import (
    AsyncTokensClient,
    ConfigurationError,
    FeatureNotInPlan,
    IdempotencyConflict,
    InsufficientTokens,
    InvalidRequest,
    NotAMember,
    OrganizationNotFound,
    PermissionDenied,
    ServiceUnavailable,
    TokensAdmin,
    TokensClient,
    TokensError,
    Unauthenticated,
    UnknownFeature,
)
from tokens_client.stack import mint_jwt
from tokens_client.testing import Database, StackEnv, TestUser


def _snapshot(db: Database) -> tuple[int, int]:
    """(sum of all balances, usage-log rows): must not move on a refusal."""
    row = db.execute(
        "select (select coalesce(sum(balance), 0) from ai_tokens),"
        " (select count(*) from ai_token_usage_log)"
    )[0]
    return int(row[0]), int(row[1])


@pytest.fixture
def unchanged(db: Database, member: TestUser, outsider: TestUser):  # type: ignore[no-untyped-def]
    """Taken after the users and organizations exist: the test itself must change nothing."""
    before = _snapshot(db)
    yield
    assert _snapshot(db) == before, "a refused call must change nothing"


@pytest.mark.usefixtures("unchanged")
class TestRefusalsChangeNothing:
    def test_unknown_feature(self, member: TestUser) -> None:
        with pytest.raises(UnknownFeature) as error:
            member.client().deduct_tokens("summon_dragon")
        assert (error.value.status, error.value.reason) == (404, "unknown_feature")
        assert error.value.facts["feature"] == "summon_dragon"

    def test_empty_feature(self, member: TestUser) -> None:
        with pytest.raises(InvalidRequest) as error:
            member.client().deduct_tokens("")
        assert error.value.facts["field"] == "feature"

    def test_wrong_types_are_invalid_request(self, member: TestUser, stack_env: StackEnv) -> None:
        from supabase import ClientOptions, create_client

        raw = create_client(
            stack_env.url,
            stack_env.anon_key,
            options=ClientOptions(headers={"Authorization": f"Bearer {member.access_token}"}),
        )
        client = TokensClient.from_supabase(raw)
        with pytest.raises(InvalidRequest) as error:
            client._execute(
                client._rpc_call(
                    "deduct_tokens", {"feature": "generate_goal", "organization_id": "not-a-uuid"}
                )
            )
        assert error.value.reason == "invalid_arguments"
        with pytest.raises(InvalidRequest):
            client._execute(
                client._rpc_call(
                    "deduct_tokens", {"feature": "generate_goal", "organization_id": 42}
                )
            )
        with pytest.raises(InvalidRequest) as missing:
            client._execute(client._rpc_call("deduct_tokens", {"amount": 5}))
        assert missing.value.reason == "invalid_arguments"

    def test_oversized_request_id(self, member: TestUser) -> None:
        with pytest.raises(InvalidRequest) as error:
            member.client().deduct_tokens("generate_goal", request_id="x" * 201)
        assert error.value.facts["field"] == "request_id"

    def test_another_organizations_id(self, member: TestUser, outsider: TestUser) -> None:
        with pytest.raises(NotAMember) as error:
            member.client().deduct_tokens("generate_goal", organization_id=outsider.organization_id)
        assert (error.value.status, error.value.reason) == (403, "not_a_member")
        with pytest.raises(NotAMember):
            member.client().stats(organization_id=outsider.organization_id)
        with pytest.raises(NotAMember):
            member.client().has_enough_tokens(
                "generate_goal", organization_id=outsider.organization_id
            )

    def test_user_without_organization(self, make_user) -> None:  # type: ignore[no-untyped-def]
        loner = make_user(None)
        with pytest.raises(NotAMember) as error:
            loner.client().deduct_tokens("generate_goal")
        assert error.value.message == "You are not a member of any organization"

    def test_starter_plan(self, make_org, make_user) -> None:  # type: ignore[no-untyped-def]
        user = make_user(make_org("starter"), "owner")
        with pytest.raises(FeatureNotInPlan):
            user.client().has_enough_tokens("ask_assistant")

    def test_expired_jwt(self, member: TestUser, stack_env: StackEnv) -> None:
        expired = member.token(expires_in=-60)
        client = TokensClient(stack_env.url, stack_env.anon_key, access_token=expired)
        with pytest.raises(Unauthenticated) as error:
            client.deduct_tokens("generate_goal")
        assert error.value.code == "PGRST301"

    def test_forged_jwt(self, member: TestUser, stack_env: StackEnv) -> None:
        forged = mint_jwt("not-the-secret-" * 4, {"sub": str(member.id), "role": "authenticated"})
        with pytest.raises(Unauthenticated):
            TokensClient(stack_env.url, stack_env.anon_key, access_token=forged).deduct_tokens(
                "generate_goal"
            )

    def test_garbage_jwt(self, stack_env: StackEnv) -> None:
        with pytest.raises(Unauthenticated):
            TokensClient(stack_env.url, stack_env.anon_key, access_token="abc.def.ghi").stats()

    def test_anonymous_caller(self, stack_env: StackEnv, pro_org: UUID) -> None:
        from supabase import create_client

        anonymous = TokensClient.from_supabase(create_client(stack_env.url, stack_env.anon_key))
        anonymous._anonymous = True
        with pytest.raises(Unauthenticated):
            anonymous.deduct_tokens("generate_goal", organization_id=pro_org)
        with pytest.raises(Unauthenticated):  # anon may not even select the tables
            anonymous.balances()

    def test_member_cannot_call_admin_functions(self, member: TestUser, pro_org: UUID) -> None:
        client = member.client()
        with pytest.raises(PermissionDenied) as error:
            client._execute(
                client._rpc_call("initialize_tokens", {"organization_id": str(pro_org)})
            )
        assert error.value.code == "42501"

    def test_admin_unknown_organization(self, admin: TokensAdmin) -> None:
        with pytest.raises(OrganizationNotFound) as error:
            admin.initialize_tokens(uuid4())
        assert error.value.status == 404
        with pytest.raises(OrganizationNotFound):
            admin.stats(uuid4())

    def test_admin_bad_plan(self, admin: TokensAdmin, pro_org: UUID) -> None:
        with pytest.raises(InvalidRequest) as error:
            admin.initialize_tokens(pro_org, plan="platinum")  # type: ignore[arg-type]
        assert error.value.reason == "invalid_plan"


def test_idempotency_conflict_changes_nothing(member: TestUser, db: Database) -> None:
    client = member.client()
    first = client.deduct_tokens("generate_goal", request_id="req-conflict")
    before = _snapshot(db)
    with pytest.raises(IdempotencyConflict) as error:
        client.deduct_tokens("ask_assistant", request_id="req-conflict")
    assert (error.value.status, error.value.facts["original_feature"]) == (409, "generate_goal")
    assert _snapshot(db) == before
    replay = client.deduct_tokens("generate_goal", request_id="req-conflict")
    assert replay.replayed
    assert replay.usage_id == first.usage_id
    assert _snapshot(db) == before


def test_insufficient_tokens_carries_the_numbers(member: TestUser, db: Database) -> None:
    db.execute(
        "update ai_tokens set balance = 1 where organization_id = %s and token_type = "
        "'lead_generation'",
        (member.organization_id,),
    )
    with pytest.raises(InsufficientTokens) as error:
        member.client().deduct_tokens("generate_leads")
    assert (error.value.required, error.value.balance) == (5, 1)
    assert error.value.token_type == "lead_generation"
    assert isinstance(error.value.__cause__, Exception), "the original error is chained"


def test_network_failure_is_service_unavailable(member: TestUser, stack_env: StackEnv) -> None:
    client = TokensClient(
        "http://127.0.0.1:9", stack_env.anon_key, access_token=member.access_token
    )
    with pytest.raises(ServiceUnavailable):
        client.stats()


async def test_async_twin_maps_errors_too(member: TestUser, stack_env: StackEnv) -> None:
    async with member.async_client() as client:
        with pytest.raises(UnknownFeature):
            await client.deduct_tokens("summon_dragon")
    unreachable = AsyncTokensClient(
        "http://127.0.0.1:9", stack_env.anon_key, access_token=member.access_token
    )
    with pytest.raises(ServiceUnavailable):
        await unreachable.stats()


class TestKeysCannotBeMixedUp:
    def test_service_key_refused_by_user_client(
        self, stack_env: StackEnv, member: TestUser
    ) -> None:
        with pytest.raises(ConfigurationError) as error:
            TokensClient(
                stack_env.url, stack_env.service_role_key, access_token=member.access_token
            )
        assert error.value.reason == "service_key_in_user_client"
        with pytest.raises(ConfigurationError):
            TokensClient(stack_env.url, "sb_secret_abc", access_token=member.access_token)

    def test_api_keys_refused_as_access_token(self, stack_env: StackEnv) -> None:
        for key in (stack_env.service_role_key, stack_env.anon_key, "sb_publishable_x", ""):
            with pytest.raises(Unauthenticated) as error:
                TokensClient(stack_env.url, stack_env.anon_key, access_token=key)
            assert error.value.status == 401
            assert error.value.message == "Sign in to use AI features"

    def test_user_keys_refused_by_admin(self, stack_env: StackEnv, member: TestUser) -> None:
        for key in (stack_env.anon_key, member.access_token, "sb_publishable_abc"):
            with pytest.raises(ConfigurationError) as error:
                TokensAdmin(stack_env.url, key)
            assert error.value.reason == "user_key_in_admin_client"

    def test_every_error_is_a_tokens_error(self) -> None:
        assert issubclass(ConfigurationError, TokensError)
        assert issubclass(NotAMember, PermissionDenied)
