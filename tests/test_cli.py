"""The `tokens` CLI: every command, its --json output checked against the database, and
one error per command (one line on stderr, non-zero exit)."""

from __future__ import annotations

import filecmp
import hashlib
import json
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from typer.testing import CliRunner, Result

from tokens_client import cli
from tokens_client.cli import app, parse_since
from tokens_client.stack import Stack
from tokens_client.testing import Database, StackEnv, TestUser, UserFactory

PROJECT = Path(__file__).resolve().parents[1]
MIGRATIONS = PROJECT / "supabase" / "migrations"
NOWHERE = "00000000-0000-4000-b000-00000000dead"


def tokens(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


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
    result = tokens("--help")
    assert result.exit_code == 0
    assert "Exit codes" in result.stdout
    assert "ConfigurationError" in result.stdout


# ---------------------------------------------------------------- migrations


def test_migrations_list_json_is_the_repository_files() -> None:
    listed = tokens_json("migrations", "list")
    files = sorted(MIGRATIONS.glob("*.sql"))
    assert [row["name"] for row in listed] == [path.name for path in files]
    for row, path in zip(listed, files, strict=True):
        assert row["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert row["summary"]
    human = tokens("migrations", "list")
    assert files[0].name in human.stdout


def test_migrations_come_from_the_package_when_it_ships_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As installed from the wheel: pyproject force-includes them as tokens_client/migrations."""
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "20990101000000_packaged.sql").write_text("-- Packaged. Yes.\n")
    (tmp_path / "migrations" / "README.md").write_text("not a migration")

    class PackagedResources:
        @staticmethod
        def files(package: str) -> Path:
            assert package == "tokens_client"
            return tmp_path

    monkeypatch.setattr(cli, "resources", PackagedResources)
    listed = tokens_json("migrations", "list")
    assert [(row["name"], row["summary"]) for row in listed] == [
        ("20990101000000_packaged.sql", "Packaged.")
    ]


def test_migrations_list_without_migrations_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class EmptyResources:
        @staticmethod
        def files(package: str) -> Path:
            return tmp_path

    monkeypatch.setattr(cli, "resources", EmptyResources)
    monkeypatch.setattr(cli, "__file__", str(tmp_path / "a" / "b" / "cli.py"))
    assert_one_error_line(tokens("migrations", "list"), 2, "migrations_missing")


def test_migrations_export_copies_skips_and_refuses(tmp_path: Path) -> None:
    target = tmp_path / "myapp" / "supabase" / "migrations"
    names = sorted(path.name for path in MIGRATIONS.glob("*.sql"))

    first = tokens_json("migrations", "export", str(target))
    assert (first["written"], first["skipped"]) == (names, [])
    comparison = filecmp.dircmp(MIGRATIONS, target)
    assert sorted(comparison.common_files) == names
    assert comparison.diff_files == []
    _, mismatch, errors = filecmp.cmpfiles(MIGRATIONS, target, names, shallow=False)
    assert (mismatch, errors) == ([], [])

    second = tokens_json("migrations", "export", str(target))
    assert (second["written"], second["skipped"]) == ([], names)

    (target / names[0]).write_text("-- my own edit\n")
    (target / names[-1]).unlink()
    refused = tokens("migrations", "export", str(target))
    assert_one_error_line(refused, 1, names[0], "migration_conflict", "nothing was written")
    assert (target / names[0]).read_text() == "-- my own edit\n", "never overwritten"
    assert not (target / names[-1]).exists(), "a refused export writes nothing"


def test_migrations_export_prints_what_was_written(tmp_path: Path) -> None:
    result = tokens("migrations", "export", str(tmp_path))
    assert result.exit_code == 0, result.output
    for path in MIGRATIONS.glob("*.sql"):
        assert path.name in result.stdout
    assert "SQL Editor" in result.stdout
    again = tokens("migrations", "export", str(tmp_path))
    assert "(identical)" in again.stdout
    assert "0 written" in again.stdout


def test_migrations_export_into_a_file_is_one_line(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    assert_one_error_line(tokens("migrations", "export", str(not_a_directory)), 1)


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


def test_stack_env_outside_a_project_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = tokens("stack", "env", env={"TOKENS_STACK_DIR": None})
    assert_one_error_line(result, 1, "supabase/migrations")
