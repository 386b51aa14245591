"""The SQL we ship: one source (supabase/schemas/), append-only migrations, exports that
fit a project with migrations of its own."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from tokens_client import _migrations
from tokens_client.cli import app
from tokens_client.testing import StackEnv

PROJECT = Path(__file__).resolve().parents[1]
MIGRATIONS = PROJECT / "supabase" / "migrations"
SCHEMAS = PROJECT / "supabase" / "schemas"
STARTER = PROJECT / "supabase" / "starter" / "guide_app.sql"
SCHEMA_TOOL = PROJECT / "scripts" / "schema_tool.py"


def tokens(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def tokens_json(*args: str) -> Any:
    result = tokens(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def shipped_names() -> list[str]:
    return sorted(path.name for path in MIGRATIONS.glob("*.sql"))


# ------------------------------------------------------------------ what we ship


def test_migrations_list_json_is_the_repository_files() -> None:
    listed = tokens_json("migrations", "list")
    files = sorted(MIGRATIONS.glob("*.sql"))
    assert [row["name"] for row in listed] == [path.name for path in files]
    for row, path in zip(listed, files, strict=True):
        assert row["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert row["summary"]
    assert files[0].name in tokens("migrations", "list").stdout


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

    monkeypatch.setattr(_migrations, "resources", PackagedResources)
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

    monkeypatch.setattr(_migrations, "resources", EmptyResources)
    monkeypatch.setattr(_migrations, "__file__", str(tmp_path / "a" / "b" / "_migrations.py"))
    result = tokens("migrations", "list")
    assert result.exit_code == 2, result.output
    assert "migrations_missing" in result.output
    assert len(result.output.strip().splitlines()) == 1


# ------------------------------------------------------------------------ export


def stamp_of(name: str) -> str:
    match = re.match(r"^(\d{14})_", name)
    assert match, name
    return match.group(1)


def test_export_stamps_after_the_projects_own_newer_migrations(tmp_path: Path) -> None:
    target = tmp_path / "myapp" / "supabase" / "migrations"
    target.mkdir(parents=True)
    (target / "20991231235959_my_app_feature.sql").write_text("select 1;\n")

    first = tokens_json("migrations", "export", str(target))
    assert first["skipped"] == []
    assert len(first["written"]) == len(shipped_names())
    stamps = [stamp_of(name) for name in first["written"]]
    assert stamps == sorted(stamps), "in our order"
    assert len(set(stamps)) == len(stamps), "one stamp each"
    assert min(stamps) > "20991231235959", "after the newest migration already there"
    for written, shipped in zip(first["written"], shipped_names(), strict=True):
        assert written.split("_", 1)[1] == shipped.split("_", 1)[1]
        assert (target / written).read_bytes() == (MIGRATIONS / shipped).read_bytes()

    manifest = json.loads((target.parent / "tokens-client-migrations.json").read_text())
    assert sorted(manifest["exported"]) == shipped_names()
    assert not any(p.suffix == ".json" for p in target.iterdir()), "the CLI reads every file there"


def test_export_stamps_with_the_export_time_in_an_empty_project(tmp_path: Path) -> None:
    before = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S")
    first = tokens_json("migrations", "export", str(tmp_path / "migrations"))
    after = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S")
    assert before <= stamp_of(first["written"][0]) <= after


def test_a_second_export_writes_nothing_and_an_edited_file_never_blocks_a_release(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "migrations"
    first = tokens_json("migrations", "export", str(target))
    second = tokens_json("migrations", "export", str(target))
    assert (second["written"], second["skipped"]) == ([], shipped_names())

    edited = target / first["written"][0]
    edited.write_text("-- my own edit\n")

    # A new release: our migrations plus one more.
    release = tmp_path / "release" / "migrations"
    release.mkdir(parents=True)
    for name in shipped_names():
        (release / name).write_bytes((MIGRATIONS / name).read_bytes())
    (release / "20990101000000_next_release.sql").write_text("-- The next release.\n")
    monkeypatch.setattr(_migrations, "_shipped_dir", lambda name: release)

    third = tokens_json("migrations", "export", str(target))
    assert [name.split("_", 1)[1] for name in third["written"]] == ["next_release.sql"]
    assert stamp_of(third["written"][0]) > max(stamp_of(name) for name in first["written"])
    assert edited.read_text() == "-- my own edit\n", "the user's edit is never overwritten"


def test_export_with_starter_writes_the_starter_schema_first(tmp_path: Path) -> None:
    first = tokens_json("migrations", "export", str(tmp_path / "migrations"), "--starter")
    assert first["written"][0].endswith("_starter_guide_app.sql")
    written = tmp_path / "migrations" / first["written"][0]
    assert written.read_bytes() == STARTER.read_bytes()
    again = tokens_json("migrations", "export", str(tmp_path / "migrations"), "--starter")
    assert again["written"] == []


def test_migrations_export_prints_what_was_written(tmp_path: Path) -> None:
    result = tokens("migrations", "export", str(tmp_path / "migrations"))
    assert result.exit_code == 0, result.output
    for name in shipped_names():
        assert name.split("_", 1)[1] in result.stdout
    assert "SQL Editor" in result.stdout
    again = tokens("migrations", "export", str(tmp_path / "migrations"))
    assert "(exported before)" in again.stdout
    assert "0 written" in again.stdout


def test_migrations_export_into_a_file_is_one_line(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    result = tokens("migrations", "export", str(not_a_directory))
    assert result.exit_code == 1, result.output
    assert len(result.output.strip().splitlines()) == 1


# ------------------------------------------------------- append-only, one source


def test_released_migrations_never_change() -> None:
    """supabase/released-migrations.sha256 lists every released file with its checksum."""
    listed = dict(
        reversed(line.split("  ", 1))
        for line in (PROJECT / "supabase" / "released-migrations.sha256").read_text().splitlines()
        if line.strip()
    )
    for name, digest in listed.items():
        path = MIGRATIONS / name
        assert path.is_file(), f"released migration {name} was removed"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, (
            f"released migration {name} was edited: add a new migration instead "
            "(scripts/new-migration NAME)"
        )
    unlisted = set(shipped_names()) - set(listed)
    assert len(unlisted) <= 1, f"only the newest migration may be unreleased: {sorted(unlisted)}"


def test_every_public_function_of_the_schemas_says_it_is_ours() -> None:
    """The privilege tests find our functions in public by their 'tokens-client:' comment."""
    text = "\n".join(path.read_text() for path in sorted(SCHEMAS.glob("*.sql")))
    defined = set(re.findall(r"create or replace function public\.(\w+)\(", text))
    commented = set(
        re.findall(r"comment on function public\.(\w+)\([^)]*\) is 'tokens-client:", text)
    )
    assert defined, "no public function found"
    assert defined == commented


def test_no_plan_name_in_checks_or_function_bodies() -> None:
    """Plans are rows of ai_plans: their names appear only in the catalog's data."""
    for path in sorted(SCHEMAS.glob("*.sql")):
        statements = path.read_text().split(";\n")
        for statement in statements:
            if re.match(r"\s*(--[^\n]*\n\s*)*insert into ", statement):
                continue
            found = re.findall(r"'(starter|pro|enterprise)'", statement)
            assert not found, f"{path.name}: plan name {found} outside the catalog data"


def run_schema_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCHEMA_TOOL), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=PROJECT,
    )


def test_schemas_and_migrations_build_the_same_database(stack_env: StackEnv) -> None:
    result = run_schema_tool("check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_sees_a_difference(stack_env: StackEnv, tmp_path: Path) -> None:
    """The check can fail: a function only in the schemas is reported (and would be written)."""
    probe = SCHEMAS / "99_probe.sql"
    probe.write_text(
        "create or replace function ai_tokens_internal.probe() returns integer\n"
        "language sql set search_path = '' as $$ select 1 $$;\n"
    )
    try:
        result = run_schema_tool("diff")
    finally:
        probe.unlink()
    assert result.returncode == 0, result.stderr
    assert "ai_tokens_internal.probe()" in result.stdout


def test_every_migration_can_be_pasted_twice(stack_env: StackEnv) -> None:
    """As the guide's rollback plan does ("redeploy migration 004"): the second run changes
    no table, function, policy or privilege (and errors on nothing)."""
    sys.path.insert(0, str(SCHEMA_TOOL.parent))
    try:
        import schema_tool
    finally:
        sys.path.pop(0)
    once = [STARTER, *sorted(MIGRATIONS.glob("*.sql"))]
    assert schema_tool.compare(once, once + once[1:]) == ""


def test_an_install_with_data_upgrades_to_the_new_spend_path(stack_env: StackEnv) -> None:
    """The first release with balances, a hold, an expiring grant and usage, then the next
    migration: settle_after is computed from what is due, the rollup is filled from the
    log, the default seams become PL/pgSQL, and the books still balance."""
    import psycopg

    sys.path.insert(0, str(SCHEMA_TOOL.parent))
    try:
        import schema_tool
    finally:
        sys.path.pop(0)
    baseline, *later = sorted(MIGRATIONS.glob("*.sql"))
    org, user = "00000000-0000-4000-a000-00000000c0de", "00000000-0000-4000-a000-00000000beef"
    member = json.dumps({"sub": user, "role": "authenticated"})
    with schema_tool.scratch_database("tokens_upgrade", [STARTER, baseline]) as url:
        with psycopg.connect(url, autocommit=True) as db:
            db.execute(
                "insert into public.organizations (id, name, plan) values (%s, 'Old', 'pro')",
                (org,),
            )
            db.execute(
                "insert into auth.users (id, email) values (%s, 'old@upgrade.test')", (user,)
            )
            db.execute(
                "insert into public.user_profiles (id, organization_id, full_name)"
                " values (%s, %s, 'Old')",
                (user, org),
            )
            with db.transaction():
                db.execute(
                    "select set_config('request.jwt.claims', '{\"role\": \"service_role\"}', true)"
                )
                db.execute(
                    "select public.grant_tokens(%s, 'goal_generation', 5,"
                    " now() + interval '1 hour')",
                    (org,),
                )
            with db.transaction():
                db.execute("select set_config('request.jwt.claims', %s, true)", (member,))
                for _ in range(3):
                    db.execute("select public.deduct_tokens('generate_goal')")
                hold = db.execute(
                    "select public.reserve_tokens('generate_quest', 2, 120)"
                ).fetchone()
            assert hold is not None
            expires = datetime.fromisoformat(hold[0]["expires_at"])

        for path in later:
            schema_tool.apply(url, path)

        with psycopg.connect(url, autocommit=True) as db:
            settle_after = db.execute(
                "select settle_after from public.ai_tokens where organization_id = %s"
                " and token_type = 'goal_generation'",
                (org,),
            ).fetchone()
            assert settle_after == (expires,)  # the hold expires before the grant and the refresh
            rolled = db.execute(
                "select feature, uses, tokens from public.ai_token_usage_daily"
                " where organization_id = %s",
                (org,),
            ).fetchall()
            assert rolled == [("generate_goal", 3, 9)]
            languages = db.execute(
                "select string_agg(p.proname || '=' || l.lanname, ',' order by p.proname)"
                " from pg_proc p join pg_language l on l.oid = p.prolang"
                " where p.pronamespace = 'ai_tokens_internal'::regnamespace"
                " and p.proname in ('memberships', 'organization_exists', 'organization_plan')"
            ).fetchone()
            assert languages == (
                "memberships=plpgsql,organization_exists=plpgsql,organization_plan=plpgsql",
            )
            with db.transaction():
                db.execute("select set_config('request.jwt.claims', %s, true)", (member,))
                spent = db.execute("select public.deduct_tokens('generate_goal')").fetchone()
                assert spent is not None
                assert spent[0]["success"] is True
                report = db.execute(
                    "select key, uses from public.get_usage_report(%s, 'feature', null)", (org,)
                ).fetchall()
                assert report == [("generate_goal", 4)]
            with db.transaction():
                db.execute(
                    "select set_config('request.jwt.claims', '{\"role\": \"service_role\"}', true)"
                )
                assert db.execute("select * from public.verify_token_ledger()").fetchall() == []
