"""Metered amounts, spend() that cannot forget, retries and user-facing auth errors.

End to end through the gateway and real PostgREST.
"""

from __future__ import annotations

from uuid import UUID, uuid4

import httpx
import pytest

from tokens_client import InvalidRequest, ServiceUnavailable, Tokens, Unauthenticated
from tokens_client.testing import Database, StackEnv, TestUser


def general_balance(db: Database, org: UUID | None) -> int:
    return int(
        db.value(
            "select balance from ai_tokens where organization_id = %s and token_type = 'general'",
            (org,),
        )
    )


def usage_rows(db: Database, org: UUID | None) -> list[tuple[int, str | None]]:
    return [
        (int(row[0]), row[1])
        for row in db.execute(
            "select tokens_deducted, request_id from ai_token_usage_log "
            "where organization_id = %s order by created_at",
            (org,),
        )
    ]


def server_takes_quantity() -> bool:
    """Whether public.deduct_tokens has its ``quantity`` argument yet (PGRST202 if not)."""
    env = StackEnv.discover()
    answer = httpx.post(
        f"{env.url}/rest/v1/rpc/deduct_tokens",
        json={"feature": "no_such_feature", "quantity": 2},
        headers={"apikey": env.anon_key, "Authorization": f"Bearer {env.anon_key}"},
        timeout=10,
    )
    return answer.json().get("code") != "PGRST202"


def test_quantity_one_is_the_catalog_cost(member: TestUser, db: Database) -> None:
    before = general_balance(db, member.organization_id)
    deduction = member.client().deduct_tokens("ask_assistant", quantity=1)
    assert deduction.tokens_deducted == 1
    assert general_balance(db, member.organization_id) == before - 1


@pytest.mark.parametrize("quantity", [0, -3, 2_000_000, 2.5, True])
def test_bad_quantity_changes_nothing(member: TestUser, db: Database, quantity: object) -> None:
    before = general_balance(db, member.organization_id)
    with pytest.raises(InvalidRequest) as error:
        member.client().deduct_tokens("ask_assistant", quantity=quantity)  # type: ignore[arg-type]
    assert error.value.reason == "invalid_amount"
    assert general_balance(db, member.organization_id) == before
    assert usage_rows(db, member.organization_id) == []


@pytest.mark.skipif(
    not server_takes_quantity(), reason="public.deduct_tokens has no quantity argument yet"
)
def test_quantity_charges_cost_times_n_once(member: TestUser, db: Database) -> None:
    before = general_balance(db, member.organization_id)
    client = member.client()
    deduction = client.deduct_tokens("ask_assistant", quantity=7, request_id="metered-7")
    assert deduction.tokens_deducted == 7  # ask_assistant costs 1 general token
    replay = client.deduct_tokens("ask_assistant", quantity=7, request_id="metered-7")
    assert (replay.replayed, replay.usage_id) == (True, deduction.usage_id)
    assert general_balance(db, member.organization_id) == before - 7
    assert usage_rows(db, member.organization_id) == [(7, "metered-7")]


def test_deductions_get_an_automatic_request_id(member: TestUser, db: Database) -> None:
    member.client().deduct_tokens("ask_assistant")
    member.client().deduct_tokens("ask_assistant")
    keys = [key for _, key in usage_rows(db, member.organization_id)]
    assert len(keys) == 2
    assert all(keys), "a key was made up for each call"
    assert keys[0] != keys[1], "each call its own key: two spends, not a replay"


def test_without_retries_no_key_is_made_up(
    member: TestUser, db: Database, stack_env: StackEnv
) -> None:
    with Tokens(stack_env.url, stack_env.anon_key, retries=0) as tokens:
        tokens.for_user(member.access_token).deduct_tokens("ask_assistant")
    assert usage_rows(db, member.organization_id) == [(1, None)]


def test_spend_without_an_actual_raises_and_releases(member: TestUser, db: Database) -> None:
    client = member.client()
    before = general_balance(db, member.organization_id)
    with pytest.raises(InvalidRequest) as error, client.spend("ask_assistant", estimate=5) as hold:
        pass  # the model answered, but nobody said what it used
    assert error.value.reason == "actual_not_set"
    assert hold.released is not None
    assert hold.result is None
    assert client.stats().for_type("general").reserved == 0
    assert general_balance(db, member.organization_id) == before


def test_spend_release_on_request(member: TestUser, db: Database) -> None:
    client = member.client()
    before = general_balance(db, member.organization_id)
    with client.spend("ask_assistant", estimate=5) as hold:
        hold.release()  # e.g. the answer was cached: charge nothing
    assert hold.released is not None
    assert hold.released.released == 5
    assert general_balance(db, member.organization_id) == before


def test_spend_replayed_leaves_the_first_hold_alone(member: TestUser, db: Database) -> None:
    client = member.client()
    with client.spend("ask_assistant", estimate=5, request_id="spend-once") as first:
        first.actual = 3
    with client.spend("ask_assistant", estimate=5, request_id="spend-once") as again:
        assert again.replayed
    assert (again.result, again.released) == (None, None)
    assert [tokens for tokens, _ in usage_rows(db, member.organization_id)] == [3]


def test_spend_bad_actual_releases_the_hold(member: TestUser, db: Database) -> None:
    client = member.client()
    with pytest.raises(InvalidRequest), client.spend("ask_assistant", estimate=5) as hold:
        hold.actual = -1
    assert hold.released is not None
    assert client.stats().for_type("general").reserved == 0


@pytest.mark.parametrize("token", ["garbage", "abc.def.ghi"])
def test_a_garbage_jwt_is_unauthenticated_for_the_end_user(stack_env: StackEnv, token: str) -> None:
    with (
        Tokens(stack_env.url, stack_env.anon_key) as tokens,
        pytest.raises(Unauthenticated) as error,
    ):
        tokens.for_user(token).stats()
    assert error.value.status == 401
    assert "JWSError" not in error.value.message
    assert error.value.code == "PGRST301"
    assert error.value.__cause__ is not None, "PostgREST's own words stay in the cause"


def test_network_failures_are_retried_then_reported(member: TestUser, stack_env: StackEnv) -> None:
    attempts: list[str] = []

    def count(request: httpx.Request) -> None:
        attempts.append(request.url.path)

    with Tokens("http://127.0.0.1:9", stack_env.anon_key, retries=2) as tokens:
        tokens._postgrest.session.event_hooks["request"].append(count)
        client = tokens.for_user(member.access_token)
        with pytest.raises(ServiceUnavailable):
            client.deduct_tokens("ask_assistant")  # keyed automatically: retried
        assert len(attempts) == 3
        attempts.clear()
        with pytest.raises(ServiceUnavailable):
            client.commit_reservation(UUID(int=1), actual=1)  # no key: sent once
        assert len(attempts) == 1


def test_organizations_by_name_are_found_by_the_server(admin, make_org) -> None:  # type: ignore[no-untyped-def]
    name = f"Name_With%Wild*cards {uuid4().hex[:8]}"
    org = make_org("pro", name)
    make_org("pro", name.replace("_", "x"))  # would match an unescaped `_`
    found = admin.organizations(name=name.upper())
    assert [o.id for o in found] == [org]


def test_an_overrun_in_spend_is_charged_and_the_rest_is_debt(
    member: TestUser, db: Database
) -> None:
    """Overruns are never free: charged up to what is there, the rest taken next period."""
    client = member.client()
    with client.spend("ask_assistant", estimate=10) as hold:
        hold.actual = 14  # the provider counted more than we guessed
    assert hold.result is not None
    assert (hold.result.tokens_deducted, hold.result.overrun) == (14, 4)
    assert general_balance(db, member.organization_id) == 36

    with client.spend("ask_assistant", estimate=30) as hold:
        hold.actual = 45
    assert hold.result is not None
    assert (hold.result.tokens_deducted, hold.result.debt_added) == (36, 9)
    general = next(t for t in client.stats().by_type if t.token_type == "general")
    assert (general.balance, general.debt) == (0, 9)
    assert (
        db.value(
            "select count(*) from ai_token_alerts "
            "where organization_id = %s and reason = 'overrun'",
            (member.organization_id,),
        )
        == 1
    )
    assert db.execute("select * from verify_token_ledger(%s)", (member.organization_id,)) == []
