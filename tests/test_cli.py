"""The `tokens` CLI: every command, its --json output checked against the database, and
one error per command (one line on stderr, non-zero exit)."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from typer.testing import CliRunner, Result

from tokens_client import InsufficientTokens, RateLimited, TokensAdmin
from tokens_client.cli import app, parse_expires, parse_since
from tokens_client.stack import Stack
from tokens_client.testing import Database, OrgFactory, StackEnv, TestUser, UserFactory

PROJECT = Path(__file__).resolve().parents[1]
MIGRATIONS = PROJECT / "supabase" / "migrations"
NOWHERE = "00000000-0000-4000-b000-00000000dead"


def tokens(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


def tokens_wide(*args: str) -> Result:
    """A table printed wide enough that no cell wraps."""
    return tokens(*args, env={"COLUMNS": "240"})


def tokens_json(*args: str) -> Any:
    result = tokens(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def assert_one_error_line(result: Result, exit_code: int = 1, *fragments: str) -> str:
    assert result.exit_code == exit_code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def balances_in_db(db: Database, organization_id: UUID | str) -> dict[str, int]:
    rows = db.execute(
        "select token_type, balance from ai_tokens where organization_id = %s",
        (organization_id,),
    )
    return {token_type: balance for token_type, balance in rows}


# ----------------------------------------------------------------------- org


def test_org_create_json_matches_the_database(db: Database) -> None:
    name = f"0 CLI create {uuid.uuid4().hex[:8]}"
    created = tokens_json("org", "create", name, "--plan", "pro")
    organization = created["organization"]
    assert (organization["name"], organization["plan"]) == (name, "pro")
    assert db.value("select plan from organizations where id = %s", (organization["id"],)) == "pro"
    assert {row["token_type"]: row["balance"] for row in created["balances"]} == balances_in_db(
        db, organization["id"]
    )
    assert sum(row["total_allocated"] for row in created["balances"]) == 250


def test_org_create_prints_the_dashboard() -> None:
    result = tokens("org", "create", f"0 CLI starter {uuid.uuid4().hex[:8]}")
    assert result.exit_code == 0, result.output
    assert "✓ Created" in result.stdout
    assert "on starter" in result.stdout
    assert "not in plan" in result.stdout


def test_org_create_refuses_an_empty_name(db: Database) -> None:
    before = db.value("select count(*) from organizations")
    assert_one_error_line(tokens("org", "create", ""), 1, "invalid_request")
    assert db.value("select count(*) from organizations") == before


def test_org_init_resets_balances(member: TestUser, pro_org: UUID, db: Database) -> None:
    member.client().deduct_tokens("generate_goal")
    assert balances_in_db(db, pro_org)["goal_generation"] == 17
    balances = tokens_json("org", "init", str(pro_org))
    assert {row["token_type"]: row["balance"] for row in balances}["goal_generation"] == 20
    assert balances_in_db(db, pro_org)["goal_generation"] == 20


def test_org_init_moves_to_another_plan(pro_org: UUID, db: Database) -> None:
    result = tokens("org", "init", str(pro_org), "--plan", "enterprise")
    assert result.exit_code == 0, result.output
    assert "reset to the enterprise allocation" in result.stdout
    assert db.value("select plan from organizations where id = %s", (pro_org,)) == "enterprise"
    assert balances_in_db(db, pro_org)["goal_generation"] == 200


def test_org_init_of_an_unknown_organization_is_one_line() -> None:
    assert_one_error_line(tokens("org", "init", NOWHERE), 1, NOWHERE, "organization_not_found")


def test_org_init_by_name(db: Database) -> None:
    name = f"0 CLI named {uuid.uuid4().hex[:8]}"
    organization_id = tokens_json("org", "create", name, "--plan", "pro")["organization"]["id"]
    db.execute("update ai_tokens set balance = 1 where organization_id = %s", (organization_id,))
    tokens_json("org", "init", name.upper())  # names match case-insensitively
    assert balances_in_db(db, organization_id)["general"] == 50


def test_org_list_json_matches_the_database(db: Database) -> None:
    name = f"0 CLI list {uuid.uuid4().hex[:8]}"
    organization_id = tokens_json("org", "create", name, "--plan", "enterprise")["organization"][
        "id"
    ]
    listed = {row["id"]: row for row in tokens_json("org", "list")}
    assert listed[organization_id]["name"] == name
    assert listed[organization_id]["plan"] == "enterprise"
    acme = "00000000-0000-4000-b000-00000000ac3e"
    assert listed[acme]["plan"] == db.value("select plan from organizations where id = %s", (acme,))
    human = tokens("org", "list")
    assert human.exit_code == 0
    assert organization_id in human.stdout


def test_org_list_with_the_api_down_is_one_line(stack_env: StackEnv) -> None:
    env: dict[str, str | None] = {
        "SUPABASE_URL": "http://127.0.0.1:9",
        "SUPABASE_SERVICE_ROLE_KEY": stack_env.service_role_key,
        "SUPABASE_SECRET_KEY": None,
    }
    assert_one_error_line(tokens("org", "list", env=env), 1, "service_unavailable")


# --------------------------------------------------------------------- stats


def test_stats_json_matches_the_database(member: TestUser, pro_org: UUID, db: Database) -> None:
    member.client().deduct_tokens("generate_goal")
    stats = tokens_json("stats", str(pro_org))
    assert stats["organization_id"] == str(pro_org)
    assert (stats["total_balance"], stats["total_allocated"], stats["total_used"]) == (
        247,
        250,
        3,
    )
    assert {entry["token_type"]: entry["balance"] for entry in stats["by_type"]} == (
        balances_in_db(db, pro_org)
    )


def test_stats_dashboard_shows_bars_and_low_warnings(member: TestUser, pro_org: UUID) -> None:
    client = member.client()
    for _ in range(6):  # 20 goal_generation tokens at 3 each: 2 left, 10 %
        client.deduct_tokens("generate_goal")
    result = tokens("stats", str(pro_org))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "pro plan" in out
    assert "2 / 20" in out
    assert "100 / 100" in out
    assert "█" in out
    assert "░" in out
    assert "⚠ goal_generation" in out
    assert "Low balance: goal_generation has 2 of 20 tokens left (10%)" in out
    assert "232 / 250" in out
    assert "18 used" in out
    assert "Low balance: general" not in out


def test_stats_by_name_shows_the_name() -> None:
    result = tokens("stats", "acme")
    assert result.exit_code == 0, result.output
    assert "Acme · pro plan" in result.stdout


def test_stats_of_an_unknown_organization_is_one_line() -> None:
    assert_one_error_line(tokens("stats", NOWHERE), 1, "organization_not_found")
    assert_one_error_line(tokens("stats", "No Such Org Anywhere"), 1, "No organization named")


def test_stats_shows_purchased_held_and_available(
    member: TestUser, pro_org: UUID, admin: TokensAdmin, db: Database
) -> None:
    admin.grant_tokens(pro_org, token_type="general", amount=40, reason="pack")
    member.client().reserve_tokens("generate_quest", estimate=5)
    stats = tokens_json("stats", str(pro_org))
    assert (stats["total_purchased"], stats["total_reserved"], stats["total_available"]) == (
        40,
        5,
        285,
    )
    by_type = {entry["token_type"]: entry for entry in stats["by_type"]}
    rows = db.execute(
        "select token_type, purchased_balance, reserved from ai_tokens where organization_id = %s",
        (pro_org,),
    )
    assert {t: (e["purchased_balance"], e["reserved"]) for t, e in by_type.items()} == {
        token_type: (purchased, reserved) for token_type, purchased, reserved in rows
    }
    assert by_type["goal_generation"]["available"] == 15

    result = tokens_wide("stats", str(pro_org))
    assert result.exit_code == 0, result.output
    out = result.stdout
    for header in ("Purchased", "Held", "Available"):
        assert header in out
    general = next(line for line in out.splitlines() if " general " in line)
    assert general.split()[-4:-1] == ["40", "0", "90"], general
    goals = next(line for line in out.splitlines() if "goal_generation" in line)
    assert goals.split()[-4:-1] == ["0", "5", "15"], goals
    total = next(line for line in out.splitlines() if line.strip().startswith("Total"))
    assert "290 / 250" in total
    assert total.split()[-5:-2] == ["40", "5", "285"], total
    assert "held tokens are reserved" in out
    assert "mode" not in out


def test_stats_without_purchases_or_holds_keeps_the_short_table(pro_org: UUID) -> None:
    out = tokens("stats", str(pro_org)).stdout
    assert "Purchased" not in out
    assert "Held" not in out


def test_stats_names_a_mode_other_than_enforce(pro_org: UUID, admin: TokensAdmin) -> None:
    admin.set_enforcement_mode("monitor", organization_id=pro_org)
    out = tokens("stats", str(pro_org)).stdout
    assert "pro plan · monitor mode" in out
    assert "Monitor mode: nothing is refused" in out
    admin.set_enforcement_mode("off", organization_id=pro_org)
    out = tokens("stats", str(pro_org)).stdout
    assert "pro plan · off mode" in out
    assert "Token checks are off" in out


def test_stats_by_id_shows_the_name(db: Database) -> None:
    acme = "00000000-0000-4000-b000-00000000ac3e"
    name = db.value("select name from organizations where id = %s", (acme,))
    result = tokens("stats", acme)
    assert result.exit_code == 0, result.output
    assert f"{name} · pro plan" in result.stdout


# --------------------------------------------------------------------- usage


@pytest.fixture
def usage_org(make_user: UserFactory, pro_org: UUID) -> UUID:
    """Two goals by a member, one quest by an admin."""
    member = make_user(pro_org, "member", full_name="Mia Member")
    admin = make_user(pro_org, "admin", full_name="Ada Admin")
    member.client().deduct_tokens("generate_goal")
    member.client().deduct_tokens("generate_goal")
    admin.client().deduct_tokens("generate_quest")
    return pro_org


def test_usage_by_feature_matches_the_database(usage_org: UUID, db: Database) -> None:
    rows = tokens_json("usage", str(usage_org), "--by", "feature")
    expected = db.execute(
        "select feature_used, count(*), sum(tokens_deducted) from ai_token_usage_log "
        "where organization_id = %s group by feature_used",
        (usage_org,),
    )
    assert {row["key"]: (row["uses"], row["tokens"]) for row in rows} == {
        feature: (uses, tokens) for feature, uses, tokens in expected
    }
    assert {row["key"]: row["tokens"] for row in rows} == {"generate_goal": 6, "generate_quest": 2}


def test_usage_by_user_has_full_names(usage_org: UUID) -> None:
    rows = tokens_json("usage", str(usage_org), "--by", "user", "--since", "1h")
    assert {row["label"]: (row["uses"], row["tokens"]) for row in rows} == {
        "Mia Member": (2, 6),
        "Ada Admin": (1, 2),
    }
    human = tokens("usage", str(usage_org), "--by", "user")
    assert human.exit_code == 0, human.output
    assert "Mia Member" in human.stdout
    assert "(last 30d)" in human.stdout


def test_usage_by_day_and_since(usage_org: UUID) -> None:
    today = datetime.now(timezone.utc).date().isoformat()
    rows = tokens_json("usage", str(usage_org), "--by", "day", "--since", "90m")
    assert [(row["day"], row["uses"], row["tokens"]) for row in rows] == [(today, 3, 8)]
    later = (date.today() + timedelta(days=2)).isoformat()
    assert tokens_json("usage", str(usage_org), "--since", later) == []
    assert len(tokens_json("usage", str(usage_org), "--since", "all")) == 2


def test_usage_entries_list_ids_for_refunds(usage_org: UUID, db: Database) -> None:
    listed = tokens_json("usage", str(usage_org), "--entries")
    rows = db.execute(
        "select id, feature_used, tokens_deducted, user_id from ai_token_usage_log "
        "where organization_id = %s order by created_at desc, id",
        (usage_org,),
    )
    assert [
        (UUID(e["id"]), e["feature_used"], e["tokens_deducted"], UUID(e["user_id"])) for e in listed
    ] == [tuple(row) for row in rows]
    assert len(tokens_json("usage", str(usage_org), "--entries", "--limit", "2")) == 2

    quest = next(e for e in listed if e["feature_used"] == "generate_quest")
    tokens_json("refund", quest["id"], "--reason", "listed, then refunded")
    human = tokens_wide("usage", str(usage_org), "--entries")
    assert human.exit_code == 0, human.output
    line = next(line for line in human.stdout.splitlines() if quest["id"] in line)
    assert line.split()[-2] == datetime.now(timezone.utc).date().isoformat(), "refunded today"
    for entry in listed:
        assert entry["id"] in human.stdout
    assert_one_error_line(tokens("usage", str(usage_org), "--entries", "--limit", "0"), 2)


def test_usage_with_a_bad_since_is_one_line(pro_org: UUID) -> None:
    assert_one_error_line(tokens("usage", str(pro_org), "--since", "soon"), 2, "--since")


def test_usage_of_an_unknown_organization_is_one_line() -> None:
    assert_one_error_line(tokens("usage", NOWHERE), 1, "organization_not_found")


def test_parse_since() -> None:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
    assert parse_since("30d", now) == now - timedelta(days=30)
    assert parse_since("12h", now) == now - timedelta(hours=12)
    assert parse_since("90m", now) == now - timedelta(minutes=90)
    assert parse_since("2w", now) == now - timedelta(weeks=2)
    assert parse_since("2026-11-01") == datetime(2026, 11, 1, tzinfo=timezone.utc)
    assert parse_since("2026-11-01T10:00:00Z") == datetime(2026, 11, 1, 10, tzinfo=timezone.utc)
    assert parse_since("2026-11-01T10:00:00+02:00") == datetime(2026, 11, 1, 8, tzinfo=timezone.utc)
    assert parse_since("all") is None
    for bad in ("", "30", "d30", "yesterday", "-3d"):
        with pytest.raises(ValueError, match="--since"):
            parse_since(bad)


# -------------------------------------------------------------------- alerts


def goal_balance(db: Database, organization_id: UUID | str) -> int:
    return balances_in_db(db, organization_id)["goal_generation"]


@pytest.fixture
def alerted_org(member: TestUser, pro_org: UUID) -> UUID:
    """goal_generation down to 2 of 20 (80 % used and under 20 % left), then a 402."""
    client = member.client()
    for _ in range(6):
        client.deduct_tokens("generate_goal")
    with pytest.raises(InsufficientTokens):
        client.deduct_tokens("generate_goal")
    return pro_org


def test_alerts_json_matches_the_database(alerted_org: UUID, db: Database) -> None:
    listed = tokens_json("alerts", str(alerted_org))
    rows = db.execute(
        "select id, kind, token_type, reason, details from ai_token_alerts "
        "where organization_id = %s order by created_at desc, id desc",
        (alerted_org,),
    )
    assert [(a["id"], a["kind"], a["token_type"], a["reason"], a["details"]) for a in listed] == [
        tuple(row) for row in rows
    ]
    # Both thresholds are crossed by the same deduction (one transaction); the 402 after.
    assert sorted(a["kind"] for a in listed[1:]) == ["balance_below_20_percent", "usage_80_percent"]
    refused = next(a for a in listed if a["kind"] == "refused")
    assert refused["reason"] == "insufficient_tokens"
    assert (refused["details"]["required"], refused["details"]["available"]) == (3, 2)
    assert listed[0]["kind"] == "refused", "newest first"


def test_alerts_table_highlights_thresholds(alerted_org: UUID, member: TestUser) -> None:
    result = tokens_wide("alerts", str(alerted_org))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "(last 7d)" in out
    assert "⚠ usage_80_percent" in out
    assert "⚠ balance_below_20_percent" in out
    assert "balance 2 of 20 allocated, 18 used" in out
    assert "insufficient_tokens" in out
    assert "needed 3, available 2" in out
    assert str(member.id) in out
    assert "3 alert(s): 2 threshold crossing(s), 1 refusal(s)" in out


def test_alerts_limit_and_since(alerted_org: UUID) -> None:
    newest = tokens_json("alerts", str(alerted_org), "--limit", "1")
    assert [a["kind"] for a in newest] == ["refused"]
    human = tokens("alerts", str(alerted_org), "--limit", "1")
    assert "Showing the newest 1" in human.stdout
    later = (date.today() + timedelta(days=2)).isoformat()
    assert tokens_json("alerts", str(alerted_org), "--since", later) == []
    empty = tokens("alerts", str(alerted_org), "--since", later)
    assert empty.exit_code == 0
    assert "no alerts" in empty.stdout
    assert len(tokens_json("alerts", str(alerted_org), "--since", "all")) == 3


def test_alerts_show_rate_limited_refusals(
    make_org: OrgFactory, make_user: UserFactory, db: Database
) -> None:
    organization = make_org("pro", rate_limited=True)
    client = make_user(organization, "member").client()
    for _ in range(5):
        client.deduct_tokens("generate_goal")
    with pytest.raises(RateLimited):
        client.deduct_tokens("generate_goal")
    listed = tokens_json("alerts", str(organization))
    assert [(a["kind"], a["reason"]) for a in listed] == [("refused", "rate_limited")]
    assert (
        db.value(
            "select count(*) from ai_token_alerts where organization_id = %s and reason = %s",
            (organization, "rate_limited"),
        )
        == 1
    )
    result = tokens_wide("alerts", str(organization))
    assert "limit 5 per 60 s, retry after" in result.stdout


def test_alerts_errors_are_one_line(pro_org: UUID) -> None:
    assert_one_error_line(tokens("alerts", str(pro_org), "--limit", "0"), 2, "--limit")
    assert_one_error_line(tokens("alerts", str(pro_org), "--since", "soon"), 2, "--since")
    assert_one_error_line(tokens("alerts", NOWHERE), 1, "organization_not_found")


# --------------------------------------------------------------------- grant


def grants_in_db(db: Database, organization_id: UUID | str) -> list[tuple[Any, ...]]:
    return [
        tuple(row)
        for row in db.execute(
            "select token_type, amount, remaining, expires_at, reason, external_id "
            "from ai_token_grants where organization_id = %s order by created_at",
            (organization_id,),
        )
    ]


def test_grant_json_matches_the_database(pro_org: UUID, db: Database) -> None:
    external_id = f"cs_{uuid.uuid4().hex}"
    before = datetime.now(timezone.utc)
    grant = tokens_json(
        "grant",
        str(pro_org),
        "--type",
        "general",
        "--amount",
        "40",
        "--expires",
        "30d",
        "--reason",
        "pack of 40",
        "--external-id",
        external_id,
    )
    assert (grant["amount"], grant["remaining"], grant["replayed"]) == (40, 40, False)
    assert (grant["balance"], grant["purchased_balance"]) == (90, 40)
    [(token_type, amount, remaining, expires_at, reason, stored_id)] = grants_in_db(db, pro_org)
    assert (token_type, amount, remaining, reason, stored_id) == (
        "general",
        40,
        40,
        "pack of 40",
        external_id,
    )
    assert timedelta(days=30) <= expires_at - before <= timedelta(days=30, minutes=1)
    assert datetime.fromisoformat(grant["expires_at"]) == expires_at
    assert db.execute(
        "select balance, purchased_balance from ai_tokens where organization_id = %s "
        "and token_type = 'general'",
        (pro_org,),
    ) == [(90, 40)]
    assert db.execute(
        "select kind, delta, external_id from ai_token_ledger where organization_id = %s "
        "and token_type = 'general' order by id desc limit 1",
        (pro_org,),
    ) == [("grant", 40, external_id)]


def test_grant_prints_and_replays_an_external_id(pro_org: UUID, db: Database) -> None:
    external_id = f"cs_{uuid.uuid4().hex}"
    args = (
        "grant",
        str(pro_org),
        "--type",
        "goal_generation",
        "--amount",
        "10",
        "--external-id",
        external_id,
    )
    first = tokens(*args)
    assert first.exit_code == 0, first.output
    assert "✓ Granted 10 goal_generation tokens to Org " in first.stdout
    assert "(no expiry)" in first.stdout
    assert "goal_generation balance 30, of which 10 purchased" in first.stdout
    again = tokens(*args)
    assert again.exit_code == 0, again.output
    assert f"Already granted (external id {external_id}): nothing added" in again.stdout
    assert tokens_json(*args)["replayed"] is True
    assert len(grants_in_db(db, pro_org)) == 1
    assert goal_balance(db, pro_org) == 30


def test_grant_until_an_iso_date(pro_org: UUID, db: Database) -> None:
    grant = tokens_json(
        "grant", str(pro_org), "--type", "forecast", "--amount", "5", "--expires", "2099-01-01"
    )
    assert grant["expires_at"] is not None
    assert grants_in_db(db, pro_org)[0][3] == datetime(2099, 1, 1, tzinfo=timezone.utc)


def test_grant_errors_are_one_line_and_write_nothing(pro_org: UUID, db: Database) -> None:
    external_id = f"cs_{uuid.uuid4().hex}"
    tokens_json(
        "grant", str(pro_org), "--type", "general", "--amount", "5", "--external-id", external_id
    )
    before = balances_in_db(db, pro_org)
    for args, code, fragment in (
        (("--type", "general", "--amount", "0"), 1, "invalid_amount"),
        (("--type", "no_such_type", "--amount", "5"), 1, "unknown_token_type"),
        (("--type", "general", "--amount", "5", "--expires", "2020-01-01"), 1, "invalid_request"),
        (("--type", "general", "--amount", "5", "--expires", "soon"), 2, "--expires"),
        (
            ("--type", "general", "--amount", "6", "--external-id", external_id),
            1,
            "idempotency_conflict",
        ),
        (("--type", "general", "--amount", "10k"), 2, "--amount must be a whole number"),
    ):
        assert_one_error_line(tokens("grant", str(pro_org), *args), code, fragment)
    assert balances_in_db(db, pro_org) == before
    assert len(grants_in_db(db, pro_org)) == 1
    assert_one_error_line(
        tokens("grant", NOWHERE, "--type", "general", "--amount", "5"), 1, "organization_not_found"
    )


def test_parse_expires() -> None:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
    assert parse_expires("30d", now) == now + timedelta(days=30)
    assert parse_expires("2w", now) == now + timedelta(weeks=2)
    assert parse_expires("12h", now) == now + timedelta(hours=12)
    assert parse_expires("2027-01-01") == datetime(2027, 1, 1, tzinfo=timezone.utc)
    assert parse_expires("2027-01-01T10:00:00+02:00") == datetime(
        2027, 1, 1, 8, tzinfo=timezone.utc
    )
    for bad in ("", "30", "never", "all", "-3d"):
        with pytest.raises(ValueError, match="--expires"):
            parse_expires(bad)


# ---------------------------------------------------------------------- plan


def test_plan_json_matches_the_database(member: TestUser, pro_org: UUID, db: Database) -> None:
    member.client().deduct_tokens("generate_goal")  # 17 of 20
    change = tokens_json("plan", str(pro_org), "--plan", "enterprise")
    assert (change["previous_plan"], change["plan"], change["replayed"]) == (
        "pro",
        "enterprise",
        False,
    )
    by_type = {entry["token_type"]: entry for entry in change["changes"]}
    assert by_type["goal_generation"] == {
        "token_type": "goal_generation",
        "previous_allocation": 20,
        "allocation": 200,
        "previous_balance": 17,
        "balance": 197,
    }
    assert {t: entry["balance"] for t, entry in by_type.items()} == balances_in_db(db, pro_org)
    assert db.value("select plan from organizations where id = %s", (pro_org,)) == "enterprise"


def test_plan_prints_the_changes_and_replays_an_event(pro_org: UUID, db: Database) -> None:
    event_id = f"evt_{uuid.uuid4().hex}"
    result = tokens("plan", str(pro_org), "--plan", "starter", "--event-id", event_id)
    assert result.exit_code == 0, result.output
    assert "moved from pro to starter" in result.stdout
    assert "20 → 0" in result.stdout
    assert "100 → 0" in result.stdout
    assert balances_in_db(db, pro_org)["strategy_analysis"] == 0
    again = tokens("plan", str(pro_org), "--plan", "starter", "--event-id", event_id)
    assert again.exit_code == 0, again.output
    assert f"Event {event_id} was already applied: nothing changed now" in again.stdout
    assert tokens_json("plan", str(pro_org), "--plan", "starter", "--event-id", event_id)[
        "replayed"
    ]
    assert_one_error_line(
        tokens("plan", str(pro_org), "--plan", "pro", "--event-id", event_id),
        1,
        "idempotency_conflict",
    )
    assert db.value("select plan from organizations where id = %s", (pro_org,)) == "starter"
    same = tokens("plan", str(pro_org), "--plan", "starter")
    assert "stays on starter" in same.stdout


def test_plan_errors_are_one_line(pro_org: UUID, db: Database) -> None:
    assert_one_error_line(tokens("plan", NOWHERE, "--plan", "pro"), 1, "organization_not_found")
    # plans are data: the server refuses an unknown one
    assert_one_error_line(tokens("plan", str(pro_org), "--plan", "gold"), 1, "invalid_plan")
    assert db.value("select plan from organizations where id = %s", (pro_org,)) == "pro"


# ---------------------------------------------------------------------- mode


def own_mode(db: Database, organization_id: UUID | None) -> str | None:
    if organization_id is None:
        return db.value("select mode from ai_token_enforcement_modes where organization_id is null")
    return db.value(
        "select mode from ai_token_enforcement_modes where organization_id = %s",
        (organization_id,),
    )


def test_mode_of_an_organization_and_inherit(pro_org: UUID, member: TestUser, db: Database) -> None:
    change = tokens_json("mode", "monitor", "--org", str(pro_org))
    assert change == {
        "organization_id": str(pro_org),
        "mode": "monitor",
        "previous_mode": own_mode(db, None),
        "overridden": True,
    }
    assert own_mode(db, pro_org) == "monitor"
    assert member.client().deduct_tokens("generate_goal").enforcement == "monitor"
    assert tokens_json("stats", str(pro_org))["enforcement"] == "monitor"

    off = tokens("mode", "off", "--org", str(pro_org))
    assert off.exit_code == 0, off.output
    assert "off (was monitor): nothing is checked or charged" in off.stdout
    assert own_mode(db, pro_org) == "off"

    back = tokens("mode", "inherit", "--org", str(pro_org))
    assert back.exit_code == 0, back.output
    assert "follows the global default again" in back.stdout
    assert own_mode(db, pro_org) is None
    assert tokens_json("mode", "inherit", "--org", str(pro_org))["overridden"] is False


def test_mode_without_org_sets_the_global_default(db: Database) -> None:
    # Set the global default to what it is (others' tests share it): the command runs
    # for real and changes nothing.
    current = own_mode(db, None) or "enforce"
    change = tokens_json("mode", current)
    assert change == {
        "organization_id": None,
        "mode": current,
        "previous_mode": current,
        "overridden": False,
    }
    human = tokens("mode", current)
    assert human.exit_code == 0, human.output
    assert f"Global default: {current} (was {current})" in human.stdout
    assert own_mode(db, None) == current


def test_mode_errors_are_one_line() -> None:
    assert_one_error_line(tokens("mode", "inherit"), 2, "inherit needs an --org")
    assert_one_error_line(
        tokens("mode", "strict"), 2, "MODE must be one of enforce, monitor, off, inherit"
    )
    assert_one_error_line(tokens("mode", "monitor", "--org", NOWHERE), 1, "organization_not_found")


# ------------------------------------------------------------------- refresh


def test_refresh_settles_what_is_due(pro_org: UUID, db: Database) -> None:
    db.execute(
        "update ai_tokens set balance = 1, refresh_date = now() - interval '1 hour' "
        "where organization_id = %s",
        (pro_org,),
    )
    run = tokens_json("refresh")
    assert run["settled"] >= 5
    assert run["failed"] == 0
    assert balances_in_db(db, pro_org) == {
        "forecast": 30,
        "general": 50,
        "goal_generation": 20,
        "lead_generation": 50,
        "strategy_analysis": 100,
    }
    assert db.value(
        "select bool_and(refresh_date > now()) from ai_tokens where organization_id = %s",
        (pro_org,),
    )
    assert (
        db.value(
            "select count(*) from ai_token_ledger where organization_id = %s and kind = 'refresh'",
            (pro_org,),
        )
        == 5
    )
    human = tokens("refresh")
    assert human.exit_code == 0, human.output
    assert "✓ Settled" in human.stdout


# -------------------------------------------------------------------- ledger


@pytest.fixture
def broken_org(pro_org: UUID, db: Database) -> Iterator[UUID]:
    """An organization whose reserved column disagrees with its holds, repaired after."""
    db.execute(
        "update ai_tokens set reserved = 2 where organization_id = %s and token_type = 'forecast'",
        (pro_org,),
    )
    try:
        yield pro_org
    finally:
        db.execute(
            "update ai_tokens set reserved = 0 where organization_id = %s "
            "and token_type = 'forecast'",
            (pro_org,),
        )


def test_ledger_verify_of_an_exact_organization(member: TestUser, pro_org: UUID) -> None:
    member.client().deduct_tokens("generate_goal")
    result = tokens("ledger", "verify", str(pro_org))
    assert result.exit_code == 0, result.output
    assert "ledger is exact" in result.stdout
    assert tokens_json("ledger", "verify", str(pro_org)) == []


def test_ledger_verify_lists_violations_and_exits_1(broken_org: UUID, db: Database) -> None:
    name = db.value("select name from organizations where id = %s", (broken_org,))
    result = tokens("ledger", "verify", str(broken_org), "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == [
        {
            "organization_id": str(broken_org),
            "token_type": "forecast",
            "violation": "reserved_mismatch",
            "expected": 0,
            "actual": 2,
            "details": {"message": "reserved differs from the sum of active holds"},
        }
    ]
    assert_one_error_line(result, 1, f"1 ledger violation(s) for {name}")
    human = tokens_wide("ledger", "verify", name)
    assert_one_error_line(human, 1, "ledger violation")
    assert "reserved_mismatch" in human.stdout
    assert "reserved differs from the sum of active holds" in human.stdout
    assert name in human.stdout
    everyone = tokens("ledger", "verify", "--json")
    assert everyone.exit_code == 1
    assert any(
        row["organization_id"] == str(broken_org) and row["violation"] == "reserved_mismatch"
        for row in json.loads(everyone.stdout)
    )


def test_ledger_verify_of_an_unknown_organization_is_one_line() -> None:
    assert_one_error_line(tokens("ledger", "verify", NOWHERE), 1, "organization_not_found")


# -------------------------------------------------------------------- refund


def test_refund_json_matches_the_database(member: TestUser, pro_org: UUID, db: Database) -> None:
    deduction = member.client().deduct_tokens("generate_goal")
    assert goal_balance(db, pro_org) == 17
    refund = tokens_json("refund", str(deduction.usage_id), "--reason", "model timed out")
    assert (refund["tokens_refunded"], refund["remaining_balance"], refund["reason"]) == (
        3,
        20,
        "model timed out",
    )
    assert goal_balance(db, pro_org) == 20
    assert db.execute(
        "select refunded_at is not null, refund_reason from ai_token_usage_log where id = %s",
        (deduction.usage_id,),
    ) == [(True, "model timed out")]
    assert db.execute(
        "select kind, delta from ai_token_ledger where usage_id = %s order by id",
        (deduction.usage_id,),
    ) == [("deduction", -3), ("refund", 3)]


def test_refund_prints_once_then_refuses(member: TestUser, pro_org: UUID, db: Database) -> None:
    deduction = member.client().deduct_tokens("generate_quest")
    name = db.value("select name from organizations where id = %s", (pro_org,))
    result = tokens("refund", str(deduction.usage_id))
    assert result.exit_code == 0, result.output
    assert (
        f"✓ Refunded 2 goal_generation tokens of generate_quest to {name}: balance 20"
        in result.stdout
    )
    assert_one_error_line(tokens("refund", str(deduction.usage_id)), 1, "already_refunded")
    assert goal_balance(db, pro_org) == 20


def test_refund_errors_are_one_line() -> None:
    assert_one_error_line(tokens("refund", "not-a-uuid"), 2, "USAGE_ID must be a usage id")
    assert_one_error_line(tokens("refund", NOWHERE), 1, "usage_not_found")


# ------------------------------------------------------------- configuration


def test_without_supabase_url_the_local_stack_is_used(stack_env: StackEnv) -> None:
    env: dict[str, str | None] = {
        "SUPABASE_URL": None,
        "SUPABASE_SERVICE_ROLE_KEY": None,
        "SUPABASE_SECRET_KEY": None,
    }
    result = tokens("stats", "Acme", "--json", env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["plan"] == "pro"


def test_without_supabase_url_or_a_stack_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no supabase/migrations here or above: no local stack
    env: dict[str, str | None] = {"SUPABASE_URL": None, "TOKENS_STACK_DIR": None}
    assert_one_error_line(tokens("stats", "Acme", env=env), 2, "SUPABASE_URL is not set")


def test_a_user_key_is_refused_by_service_role_commands(stack_env: StackEnv) -> None:
    env: dict[str, str | None] = {
        "SUPABASE_URL": stack_env.url,
        "SUPABASE_SERVICE_ROLE_KEY": stack_env.anon_key,
        "SUPABASE_SECRET_KEY": None,
    }
    assert_one_error_line(tokens("org", "list", env=env), 2, "user_key_in_admin_client")


def test_help_documents_exit_codes() -> None:
    result = tokens("--help", env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "Exit codes" in result.stdout
    assert "ConfigurationError" in result.stdout
    listed = {line.split()[1] for line in result.stdout.splitlines() if line.startswith("│ ")}
    for command in ("alerts", "grant", "plan", "mode", "refresh", "ledger", "refund"):
        assert command in listed, command
    for command in ("alerts", "grant", "plan", "mode", "refresh", "ledger verify", "refund"):
        shown = tokens(*command.split(), "--help", env={"COLUMNS": "200"}).stdout
        assert "--json" in shown, command


# --------------------------------------------------------------------- stack


def test_stack_status_and_env_json(stack_env: StackEnv) -> None:
    status = tokens_json("stack", "status")
    assert status["api_url"] == stack_env.url
    assert status["anon_key"] == stack_env.anon_key
    assert all(status["components"].values())
    env = tokens_json("stack", "env")
    assert env["SUPABASE_URL"] == stack_env.url
    assert env["SUPABASE_SERVICE_ROLE_KEY"] == stack_env.service_role_key
    exports = tokens("stack", "env")
    assert f"export SUPABASE_URL={stack_env.url}" in exports.stdout


def test_stack_up_is_idempotent(stack_env: StackEnv) -> None:
    if Stack().status().api_url != stack_env.url:
        pytest.skip("the stack under test is not the local one")
    status = tokens_json("stack", "up")
    assert status["api_url"] == stack_env.url
    assert all(status["components"].values())


def test_stack_down_documents_json() -> None:
    # Never run against the shared stack; tests/test_stack.py stops a private one.
    result = tokens("stack", "down", "--help")
    assert result.exit_code == 0
    assert "--json" in result.stdout


def test_stack_status_of_a_stopped_stack_is_one_line(tmp_path: Path) -> None:
    result = tokens("stack", "status", env={"TOKENS_STACK_DIR": str(tmp_path / "stack")})
    assert_one_error_line(result, 1, "not running", "tokens stack up")


def test_stack_env_of_a_stopped_stack_prints_no_credentials(tmp_path: Path) -> None:
    result = tokens("stack", "env", env={"TOKENS_STACK_DIR": str(tmp_path / "stack")})
    assert_one_error_line(result, 1, "not running", "tokens stack up")
    assert "export" not in result.stdout
    assert "SUPABASE" not in result.stdout


def test_stack_env_outside_a_project_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = tokens("stack", "env", env={"TOKENS_STACK_DIR": None})
    assert_one_error_line(result, 1, "supabase/migrations")


# ------------------------------------------------------------ pipes and widths


def test_a_closed_pipe_ends_quietly_with_exit_0() -> None:
    import subprocess

    script = Path(sys.executable).parent / "tokens"
    process = subprocess.Popen(
        [str(script), "migrations", "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None
    assert process.stderr is not None
    process.stdout.close()  # the reader is gone before the first line (`| head -0`)
    assert process.wait(timeout=60) == 0
    assert process.stderr.read() == b""


def test_piped_output_is_neither_cut_nor_padded(make_org: Any) -> None:
    name = "A very long organization name " * 4 + uuid.uuid4().hex
    make_org("pro", name)
    result = tokens("org", "list")
    assert result.exit_code == 0, result.output
    assert any(name in line for line in result.stdout.splitlines()), "not truncated at 80"
    assert all(line == line.rstrip() for line in result.stdout.splitlines()), "no padding"


def test_narrow_terminals_drop_columns(pro_org: UUID, admin: TokensAdmin) -> None:
    from tokens_client._dashboard import stats_dashboard
    from tokens_client.cli import CliConsole

    stats = admin.stats(pro_org)
    wide = CliConsole(force_terminal=True, width=120, height=40, record=True)
    wide.print(stats_dashboard(stats, "Wide"))
    narrow = CliConsole(force_terminal=True, width=50, height=40, record=True)
    narrow.print(stats_dashboard(stats, "Narrow"))
    assert "Refreshes" in wide.export_text()
    text = narrow.export_text()
    assert "Refreshes" not in text
    assert "█" not in text, "the bar goes first"
    assert "Balance" in text
    assert all(len(line) <= 50 for line in text.splitlines())
