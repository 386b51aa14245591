"""Lifecycle invariants under real parallel load; the ledger is verified after each."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar
from uuid import UUID, uuid4

import pytest

from tokens_client import (
    AlreadyRefunded,
    InsufficientTokens,
    RateLimited,
    ReservationNotActive,
    TokensAdmin,
    TokensError,
)
from tokens_client.testing import Database, TestUser, UserFactory

T = TypeVar("T")


def in_parallel(calls: list[Callable[[], T]]) -> list[T | TokensError]:
    """Run the calls in threads released together; TokensErrors are returned, not raised."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = calls[index]()
        except TokensError as error:
            results[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def kinds(results: list[Any]) -> Counter[str]:
    return Counter(type(r).__name__ for r in results)


def ledger_count(db: Database, org: UUID, kind: str) -> int:
    return int(
        db.value(
            "select count(*) from ai_token_ledger where organization_id = %s and kind = %s",
            (org, kind),
        )
    )


def test_rate_limit_is_exact_under_32_parallel_calls_by_one_user(
    make_org, make_user: UserFactory, admin: TokensAdmin, db: Database
) -> None:  # type: ignore[no-untyped-def]
    org = make_org("enterprise", rate_limited=True)
    user = make_user(org, "member")
    clients = [user.client() for _ in range(32)]
    results = in_parallel([lambda c=c: c.deduct_tokens("ask_assistant") for c in clients])
    assert kinds(results) == {"Deduction": 5, "RateLimited": 27}
    limited = [r for r in results if isinstance(r, RateLimited)]
    assert all(1 <= r.retry_after <= 60 for r in limited)
    assert db.execute(
        "select count(*), sum(refusal_count)::integer from ai_token_alerts"
        " where organization_id = %s and kind = 'refused' and reason = 'rate_limited'",
        (org,),
    ) == [(1, 27)], "27 refusals, counted in one row"
    assert (
        db.value(
            "select balance from ai_tokens where organization_id = %s and token_type = 'general'",
            (org,),
        )
        == 500 - 5
    )
    assert admin.verify_token_ledger(organization_id=org) == []
    # another user of the same organization has a window of their own
    assert make_user(org, "member").client().deduct_tokens("ask_assistant").success


def test_refresh_happens_once_when_32_calls_race_the_boundary(
    make_user: UserFactory, pro_org: UUID, admin: TokensAdmin, db: Database
) -> None:
    db.execute(
        "update ai_tokens set balance = 3, refresh_date = now() - interval '1 second' "
        "where organization_id = %s",
        (pro_org,),
    )
    users = [make_user(pro_org, "member") for _ in range(32)]
    results = in_parallel([lambda u=u: u.client().deduct_tokens("ask_assistant") for u in users])
    assert kinds(results) == {"Deduction": 32}
    # only the token type the calls touched is settled, and only once
    assert ledger_count(db, pro_org, "refresh") == 1
    assert (
        db.value(
            "select count(*) from ai_token_ledger where organization_id = %s and token_type = "
            "'general' and kind = 'refresh'",
            (pro_org,),
        )
        == 1
    )
    assert (
        db.value(
            "select balance from ai_tokens where organization_id = %s and token_type = 'general'",
            (pro_org,),
        )
        == 50 - 32
    )
    assert admin.verify_token_ledger(organization_id=pro_org) == []


def test_holds_never_overcommit(
    make_user: UserFactory, pro_org: UUID, admin: TokensAdmin, db: Database
) -> None:
    users = [make_user(pro_org, "member") for _ in range(20)]
    results = in_parallel(
        [lambda u=u: u.client().reserve_tokens("generate_leads", estimate=5) for u in users]
    )
    assert kinds(results) == {"Reservation": 10, "InsufficientTokens": 10}
    assert (
        db.value(
            "select reserved from ai_tokens where organization_id = %s and token_type = "
            "'lead_generation'",
            (pro_org,),
        )
        == 50
    )

    holds = [(u, r) for u, r in zip(users, results, strict=True) if not isinstance(r, TokensError)]
    commits = in_parallel(
        [
            lambda u=u, r=r: u.client().commit_reservation(r.reservation_id, actual=3)  # type: ignore[union-attr]
            for u, r in holds
            for _ in range(3)
        ]
        + [lambda u=u: u.client().deduct_tokens("generate_leads") for u in users[:10]]
    )
    counted = kinds(commits)
    assert counted["ReservationCommit"] == 10
    assert counted["ReservationNotActive"] == 20
    final = db.value(
        "select balance from ai_tokens where organization_id = %s and token_type = "
        "'lead_generation'",
        (pro_org,),
    )
    assert final == 50 - 10 * 3 - 5 * counted["Deduction"]
    assert final >= 0
    assert admin.verify_token_ledger(organization_id=pro_org) == []


def test_a_refund_applies_once(
    member: TestUser, org_admin: TestUser, pro_org: UUID, admin: TokensAdmin, db: Database
) -> None:
    spent = member.client().deduct_tokens("analyze_strategy")
    results = in_parallel(
        [
            lambda: org_admin.client().refund_deduction(spent.usage_id, reason="retry storm")
            for _ in range(10)
        ]
    )
    assert kinds(results) == {"Refund": 1, "AlreadyRefunded": 9}
    assert all(isinstance(r, AlreadyRefunded) for r in results if not hasattr(r, "usage_id"))
    assert ledger_count(db, pro_org, "refund") == 1
    assert admin.verify_token_ledger(organization_id=pro_org) == []


def test_every_keyed_call_is_applied_once(
    member: TestUser, pro_org: UUID, admin: TokensAdmin, db: Database
) -> None:
    checkout, event, hold_key = (f"{p}_{uuid4().hex}" for p in ("cs", "evt", "hold"))
    grants = in_parallel(
        [
            lambda: admin.grant_tokens(
                pro_org, token_type="forecast", amount=25, external_id=checkout
            )
            for _ in range(10)
        ]
    )
    assert kinds(grants) == {"Grant": 10}
    assert sum(1 for g in grants if not g.replayed) == 1  # type: ignore[union-attr]
    plans = in_parallel(
        [
            lambda: admin.set_organization_plan(pro_org, plan="enterprise", event_id=event)
            for _ in range(10)
        ]
    )
    assert sum(1 for p in plans if not p.replayed) == 1  # type: ignore[union-attr]
    holds = in_parallel(
        [
            lambda: member.client().reserve_tokens(
                "forecast_revenue", estimate=7, request_id=hold_key
            )
            for _ in range(10)
        ]
    )
    assert len({h.reservation_id for h in holds}) == 1  # type: ignore[union-attr]
    forecast = member.client().stats().for_type("forecast")
    assert (forecast.balance, forecast.purchased_balance, forecast.reserved) == (325, 25, 7)
    assert ledger_count(db, pro_org, "grant") == 1
    assert admin.verify_token_ledger(organization_id=pro_org) == []


def test_an_expired_grant_expires_once_under_parallel_spending(
    make_user: UserFactory, pro_org: UUID, admin: TokensAdmin, db: Database
) -> None:
    grant = admin.grant_tokens(
        pro_org,
        token_type="general",
        amount=40,
        expires_at=datetime.now(timezone.utc) + timedelta(days=1),
    )
    db.execute(
        "update ai_token_grants set expires_at = now() - interval '1 second' where id = %s",
        (grant.grant_id,),
    )
    users = [make_user(pro_org, "member") for _ in range(16)]
    results = in_parallel([lambda u=u: u.client().deduct_tokens("ask_assistant") for u in users])
    assert kinds(results) == {"Deduction": 16}
    assert ledger_count(db, pro_org, "expiry") == 1
    assert (
        db.value(
            "select balance from ai_tokens where organization_id = %s and token_type = 'general'",
            (pro_org,),
        )
        == 50 - 16
    )
    assert admin.verify_token_ledger(organization_id=pro_org) == []


@pytest.mark.parametrize("clients", [32])
def test_spend_down_with_holds_and_deductions_mixed(
    make_user: UserFactory, pro_org: UUID, admin: TokensAdmin, db: Database, clients: int
) -> None:
    """Deductions and spend() blocks race on one balance: never negative, ledger exact."""
    users = [make_user(pro_org, "member") for _ in range(clients)]

    def work(user: TestUser, index: int) -> int:
        client = user.client()
        spent = 0
        while True:
            try:
                if index % 2:
                    spent += client.deduct_tokens("generate_goal").tokens_deducted
                else:
                    with client.spend("generate_quest", estimate=4) as hold:
                        hold.actual = 1
                    spent += 1
            except (InsufficientTokens, ReservationNotActive):
                return spent

    results = in_parallel([lambda u=u, i=i: work(u, i) for i, u in enumerate(users)])
    assert all(isinstance(r, int) for r in results)
    final = db.value(
        "select balance from ai_tokens where organization_id = %s and token_type = "
        "'goal_generation'",
        (pro_org,),
    )
    assert 0 <= final < 4
    assert sum(results) == 20 - final  # type: ignore[arg-type]
    assert admin.verify_token_ledger(organization_id=pro_org) == []
