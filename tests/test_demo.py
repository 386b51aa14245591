"""`tokens demo`: the README's first command, run as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from tokens_client.stack import Stack
from tokens_client.testing import Database, StackEnv

PROJECT = Path(__file__).resolve().parents[1]
ACME = "00000000-0000-4000-b000-00000000ac3e"


def run_demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tokens_client", "demo", *args],
        cwd=PROJECT,
        env={**os.environ, "COLUMNS": "100", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def local_stack(stack_env: StackEnv) -> StackEnv:
    """The demo runs against the local stack only."""
    if Stack().status().api_url != stack_env.url:
        pytest.skip("the demo runs on the local stack; another stack is under test")
    return stack_env


@pytest.fixture(scope="module")
def two_runs(local_stack: StackEnv) -> tuple[subprocess.CompletedProcess[str], ...]:
    return run_demo(), run_demo()


def test_demo_runs_again_and_again_within_the_rate_limit_window(
    two_runs: tuple[subprocess.CompletedProcess[str], ...], db: Database
) -> None:
    """Alice spends twice a run (a deduction and a reservation), more than the default 5
    per minute over three runs; Acme's own limit keeps every rerun unrefused."""
    third = run_demo()
    assert third.returncode == 0, third.stderr
    assert third.stdout == two_runs[0].stdout
    alice = "00000000-0000-4000-a000-00000000a11c"
    recent = db.value(
        "select (select count(*) from ai_token_usage_log where user_id = %s and "
        "reservation_id is null and created_at > now() - interval '60 seconds') + "
        "(select count(*) from ai_token_reservations where user_id = %s and "
        "created_at > now() - interval '60 seconds')",
        (alice, alice),
    )
    assert recent >= 6, "more spends in the window than the default limit of 5"
    refused = db.value(
        "select count(*) from ai_token_alerts where organization_id = %s and "
        "reason = 'rate_limited' and created_at > now() - interval '60 seconds'",
        (ACME,),
    )
    assert refused == 0


def test_demo_exits_zero_and_tells_the_story(
    two_runs: tuple[subprocess.CompletedProcess[str], ...],
) -> None:
    first = two_runs[0]
    assert first.returncode == 0, first.stderr
    assert first.stderr == ""
    out = first.stdout
    for line in (
        "Acme is on the pro plan",
        "✓ Tokens reset to the pro allocation: 250 tokens across 5 token types",
        "✓ Enough tokens for generate_goal? yes",
        "✓ Used 3 tokens for generate_goal · 17 goal_generation tokens left",
        "✓ Used 2 tokens for generate_quest · 15 goal_generation tokens left",
        "first answer replayed, nothing spent · still 15 left",
        "✓ Per-user rate limit of Acme: 1000 spends per 60 s",
        "✓ Held 10 goal_generation tokens while the model writes · 5 still available to others",
        "✓ The model used 6: 6 charged, 4 given back · 9 goal_generation tokens left",
        "✓ Refunded 6 goal_generation tokens · 15 left",
        "Acme · pro plan",
        "15 / 20",
        "245 / 250",
        "✗ Carol tries generate_goal → Not available on Starter plan (HTTP 403)",
        "You are not a member of this organization (HTTP 403)",
        "✓ Globex's goal_generation balance is untouched: 20 / 20",
    ):
        assert line in out, line
    assert "not what the demo expected" not in out


def test_demo_twice_prints_the_same(
    two_runs: tuple[subprocess.CompletedProcess[str], ...],
) -> None:
    first, second = two_runs
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout


def test_demo_json_matches_the_database(local_stack: StackEnv, db: Database) -> None:
    result = run_demo("--json")
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    steps = report["steps"]
    assert all(step["expected"] for step in steps)
    assert [step["outcome"] for step in steps].count("refused") == 2

    deductions = [step["data"] for step in steps if "tokens_deducted" in (step["data"] or {})]
    goal, quest, retry = (d for d in deductions if "success" in d)
    assert (goal["feature"], goal["remaining_balance"], goal["replayed"]) == (
        "generate_goal",
        17,
        False,
    )
    assert (quest["remaining_balance"], retry["remaining_balance"]) == (15, 15)
    assert retry["replayed"] is True
    assert retry["usage_id"] == quest["usage_id"]
    rows_for_request = db.value(
        "select count(*) from ai_token_usage_log where organization_id = %s and request_id = %s",
        (ACME, quest["request_id"]),
    )
    assert rows_for_request == 1, "the retry spent nothing"
    balance = db.value(
        "select balance from ai_tokens where organization_id = %s and token_type = %s",
        (ACME, "goal_generation"),
    )
    assert balance == 15

    held, committed = (d for d in deductions if "reservation_id" in d)
    assert held["reservation_id"] == committed["reservation_id"]
    reservation = db.execute(
        "select status, estimate, held, actual, charged, usage_id from ai_token_reservations "
        "where id = %s",
        (held["reservation_id"],),
    )
    assert reservation == [("committed", 10, 10, 6, 6, UUID(committed["usage_id"]))]
    refund = next(step["data"] for step in steps if "tokens_refunded" in (step["data"] or {}))
    assert refund["usage_id"] == committed["usage_id"]
    usage = db.execute(
        "select tokens_deducted, reservation_id, refunded_at is not null, refund_reason "
        "from ai_token_usage_log where id = %s",
        (refund["usage_id"],),
    )
    assert usage == [(6, UUID(held["reservation_id"]), True, "the model returned an empty quest")]
    journal = db.execute(
        "select kind, delta from ai_token_ledger where organization_id = %s and "
        "usage_id = %s order by id",
        (ACME, refund["usage_id"]),
    )
    assert journal == [("reservation_capture", -6), ("refund", 6)]
    held_after = db.value(
        "select reserved from ai_tokens where organization_id = %s and token_type = %s",
        (ACME, "goal_generation"),
    )
    assert held_after == 0, "nothing is held after the demo"
    assert db.execute("select * from verify_token_ledger(%s)", (ACME,)) == []

    limit = next(step["data"] for step in steps if "max_requests" in (step["data"] or {}))
    stored = db.execute(
        "select max_requests, window_seconds from ai_rate_limits where organization_id = %s",
        (ACME,),
    )
    assert stored == [(limit["max_requests"], limit["window_seconds"])] == [(1000, 60)]
    refusals = [step["data"]["reason"] for step in steps if step["outcome"] == "refused"]
    assert refusals == ["feature_not_in_plan", "not_a_member"]


def test_demo_with_the_stack_down_is_one_line(tmp_path: Path) -> None:
    result = run_demo(env={"TOKENS_STACK_DIR": str(tmp_path / "stack")})
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines == ["error: the local stack is not running: start it with `tokens stack up`"]
