"""Invariants under real parallel load: 32 clients on one organization's balance."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from uuid import UUID

from tokens_client import Deduction, InsufficientTokens
from tokens_client.testing import Database, TestUser, UserFactory

CLIENTS = 32
START_BALANCE = 100  # generate_goal costs 3: 33 deductions fit, 1 token remains


def _set_balance(db: Database, org: UUID, token_type: str, balance: int) -> None:
    db.execute(
        "update ai_tokens set balance = %s, total_allocated = %s "
        "where organization_id = %s and token_type = %s",
        (balance, balance, org, token_type),
    )


def _assert_ledger_exact(db: Database, org: UUID, successes: list[Deduction]) -> None:
    cost = 3
    final = db.value(
        "select balance from ai_tokens where organization_id = %s and token_type = "
        "'goal_generation'",
        (org,),
    )
    assert final >= 0
    assert final < cost, "the balance must be spent down to less than one deduction"
    assert len(successes) * cost == START_BALANCE - final
    rows = db.execute(
        "select count(*), coalesce(sum(tokens_deducted), 0) from ai_token_usage_log "
        "where organization_id = %s",
        (org,),
    )[0]
    assert rows == (len(successes), START_BALANCE - final)
    # Every success saw a distinct balance on the way down: no lost update.
    after = sorted((d.remaining_balance for d in successes), reverse=True)
    assert after == [START_BALANCE - cost * (i + 1) for i in range(len(successes))]


def test_32_threads_spend_down_exactly(make_user: UserFactory, pro_org: UUID, db: Database) -> None:
    _set_balance(db, pro_org, "goal_generation", START_BALANCE)
    users = [make_user(pro_org, "member") for _ in range(CLIENTS)]
    clients = [user.client() for user in users]
    barrier = threading.Barrier(CLIENTS)
    successes: list[Deduction] = []
    refusals: Counter[str] = Counter()
    unexpected: list[BaseException] = []
    lock = threading.Lock()

    def hammer(index: int) -> None:
        barrier.wait()
        while True:
            try:
                result = clients[index].deduct_tokens("generate_goal")
            except InsufficientTokens as refused:
                with lock:
                    refusals[refused.reason] += 1
                return
            except BaseException as error:  # collected, asserted below
                with lock:
                    unexpected.append(error)
                return
            with lock:
                successes.append(result)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert unexpected == []
    assert refusals["insufficient_tokens"] == CLIENTS
    assert len(successes) == START_BALANCE // 3
    _assert_ledger_exact(db, pro_org, successes)


async def test_32_async_clients_spend_down_exactly(
    make_user: UserFactory, pro_org: UUID, db: Database
) -> None:
    _set_balance(db, pro_org, "goal_generation", START_BALANCE)
    users: list[TestUser] = [make_user(pro_org, "member") for _ in range(CLIENTS)]
    successes: list[Deduction] = []

    async def hammer(user: TestUser) -> int:
        async with user.async_client() as client:
            while True:
                try:
                    successes.append(await client.deduct_tokens("generate_goal"))
                except InsufficientTokens:
                    return 1

    refused = await asyncio.gather(*(hammer(user) for user in users))
    assert sum(refused) == CLIENTS
    _assert_ledger_exact(db, pro_org, successes)


def test_10_concurrent_retries_of_one_request_deduct_once(
    member: TestUser, pro_org: UUID, db: Database
) -> None:
    retries = 10
    barrier = threading.Barrier(retries)
    results: list[Deduction] = []
    lock = threading.Lock()

    def retry() -> None:
        client = member.client()
        barrier.wait()
        result = client.deduct_tokens("generate_goal", request_id="retry-me-once")
        with lock:
            results.append(result)

    threads = [threading.Thread(target=retry) for _ in range(retries)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == retries
    assert len({r.usage_id for r in results}) == 1
    assert [r.replayed for r in results].count(False) == 1
    assert {r.remaining_balance for r in results} == {17}
    assert (
        db.value(
            "select balance from ai_tokens where organization_id = %s and token_type = "
            "'goal_generation'",
            (pro_org,),
        )
        == 17
    )
    assert (
        db.value("select count(*) from ai_token_usage_log where organization_id = %s", (pro_org,))
        == 1
    )
