# ruff: noqa: E501  (the host app's SQL reads better unwrapped)
"""Installing tokens-client into an app that already exists leaves that app working.

The host app is the guide reader's project: its own organizations (with columns of its
own and a plan we do not ship), user_profiles (its own policies: a user sees only their
own profile), a handle_new_user trigger, a quests table, an RPC. It runs on a private
local stack as strict as hosted Supabase (postgres is not a superuser). We install the
documented way: `tokens migrations export` into the app's supabase/migrations (where the
app's own migration is newer than ours), then `supabase migration up`. Two variants run
as databases of the same server, pasted into "the SQL editor" (psql -f) twice: a plan
column that is an enum, and user_profiles without a role column.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from tokens_client._migrations import export_migrations
from tokens_client.stack import Stack, StackConfig, mint_jwt

PROJECT = Path(__file__).resolve().parents[1]
TEMPLATE_DB = "tokens_bootstrap_template"
HOST_MIGRATION = "20991231000000_host_app.sql"


def host_app_sql(*, enum_plan: bool = False, role_column: bool = True) -> str:
    """The host app's own migration (one file), in one of its variants."""
    plan_type = "public.plan_tier" if enum_plan else "text"
    enum = (
        "create type public.plan_tier as enum ('free', 'starter', 'pro', 'enterprise');\n"
        if enum_plan
        else ""
    )
    role = "  role text not null default 'member',\n" if role_column else ""
    return f"""
{enum}
create table public.organizations (
  id uuid primary key default gen_random_uuid(),
  name text not null,
  plan {plan_type} not null default 'free',
  billing_email text,
  created_at timestamptz not null default now()
);
create table public.user_profiles (
  id uuid primary key references auth.users (id) on delete cascade,
  organization_id uuid references public.organizations (id),
  full_name text,
  avatar_url text,
{role}  created_at timestamptz not null default now()
);
create table public.quests (
  id bigint generated always as identity primary key,
  organization_id uuid not null references public.organizations (id),
  title text not null,
  created_by uuid default auth.uid()
);

-- The app's own RLS helper and policies: a user sees only their own profile.
create function public.my_organization_id() returns uuid
language sql stable security definer set search_path = '' as $$
  select p.organization_id from public.user_profiles p where p.id = (select auth.uid())
$$;
alter table public.organizations enable row level security;
alter table public.user_profiles enable row level security;
alter table public.quests enable row level security;
create policy "members read their organization" on public.organizations
  for select to authenticated using (id = (select public.my_organization_id()));
create policy "users read their own profile" on public.user_profiles
  for select to authenticated using (id = (select auth.uid()));
create policy "users edit their own profile" on public.user_profiles
  for update to authenticated using (id = (select auth.uid())) with check (id = (select auth.uid()));
create policy "members read their quests" on public.quests
  for select to authenticated using (organization_id = (select public.my_organization_id()));
create policy "members add quests" on public.quests
  for insert to authenticated with check (organization_id = (select public.my_organization_id()));

-- The app's grants (Supabase's defaults gave the API roles everything): anon reads no
-- organization, and a user may change only their own name and avatar, never their
-- organization or role (README: the membership seam trusts those columns).
revoke all on public.organizations from anon;
revoke update on public.user_profiles from authenticated;
grant update (full_name, avatar_url) on public.user_profiles to authenticated;

-- Supabase's pattern: every new user gets a profile.
create function public.handle_new_user() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  insert into public.user_profiles (id, full_name) values (new.id, new.raw_user_meta_data ->> 'full_name');
  return new;
end
$$;
create trigger on_auth_user_created after insert on auth.users
  for each row execute function public.handle_new_user();

-- An RPC of the app.
create function public.quest_count() returns bigint
language sql stable set search_path = '' as $$ select count(*) from public.quests $$;
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SNAPSHOT_SQL = {
    "table grants": """
        select table_name, grantee, privilege_type from information_schema.role_table_grants
        where table_schema = 'public' and table_name in ('organizations', 'user_profiles', 'quests')
        order by 1, 2, 3""",
    "column grants": """
        select table_name, column_name, grantee, privilege_type
        from information_schema.column_privileges
        where table_schema = 'public' and table_name in ('organizations', 'user_profiles', 'quests')
        order by 1, 2, 3, 4""",
    "policies": """
        select tablename, policyname, cmd, roles::text, qual, with_check from pg_policies
        where schemaname = 'public' and tablename in ('organizations', 'user_profiles', 'quests')
        order by 1, 2""",
    "default privileges": """
        select pg_get_userbyid(defaclrole), coalesce(defaclnamespace::regnamespace::text, '-'),
               defaclobjtype, defaclacl::text
        from pg_default_acl
        where defaclnamespace = 0 or defaclnamespace::regnamespace::text <> 'ai_tokens_internal'
        order by 1, 2, 3""",
    "host functions": """
        select p.oid::regprocedure::text, p.proacl::text, p.prosecdef from pg_proc p
        where p.pronamespace = 'public'::regnamespace
          and p.proname in ('my_organization_id', 'handle_new_user', 'quest_count')
        order by 1""",
    "host tables": """
        select c.relname, c.relrowsecurity, c.relforcerowsecurity, pg_get_userbyid(c.relowner),
               (select string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ', '
                                  order by a.attnum)
                from pg_attribute a where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped)
        from pg_class c
        where c.relnamespace = 'public'::regnamespace
          and c.relname in ('organizations', 'user_profiles', 'quests')
        order by 1""",
    "host triggers and constraints": """
        select conrelid::regclass::text, conname, pg_get_constraintdef(oid) from pg_constraint
        where conrelid in ('public.organizations'::regclass, 'public.user_profiles'::regclass,
                           'public.quests'::regclass)
        union all
        select tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) from pg_trigger
        where not tgisinternal and tgrelid in ('auth.users'::regclass, 'public.organizations'::regclass,
                                                'public.user_profiles'::regclass)
        order by 1, 2""",
}


def snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Everything of the host that installing us must leave as it was."""
    with psycopg.connect(url) as conn:
        return {name: conn.execute(query).fetchall() for name, query in SNAPSHOT_SQL.items()}


def psql_file(url: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", str(path)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PGSSLMODE": "disable", "PGOPTIONS": "-c client_min_messages=warning"},
    )


@dataclass
class HostApp:
    stack: Stack
    project: Path
    db_url: str
    rest_url: str
    jwt_secret: str
    anon_key: str
    service_key: str
    before: dict[str, list[tuple[Any, ...]]]
    migration_up: str

    def user_token(self, user_id: uuid.UUID) -> str:
        return mint_jwt(
            self.jwt_secret, {"sub": str(user_id), "role": "authenticated", "aud": "authenticated"}
        )

    def rest(self, token: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.rest_url,
            headers={"apikey": self.anon_key, "Authorization": f"Bearer {token}"},
            timeout=20,
        )

    def env(self) -> dict[str, str]:
        status = self.stack.status()
        return {**os.environ, **status.as_env(), "PGSSLMODE": "disable"}


def supabase_migration_up(stack: Stack, project: Path) -> str:
    result = subprocess.run(
        [
            str(PROJECT / "node_modules" / ".bin" / "supabase"),
            "migration",
            "up",
            f"--remote={stack.status().db_url}",
            "--workdir",
            str(project),
            "--yes",
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PGSSLMODE": "disable", "NO_COLOR": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def host_app() -> Iterator[HostApp]:
    """The guide reader's app on a private stack, with tokens-client installed into it."""
    base = Path(tempfile.mkdtemp(prefix="tokens-host-app-"))
    base.chmod(0o755)  # PostgreSQL runs as the postgres OS user when the tests run as root
    project = base / "myapp"
    migrations = project / "supabase" / "migrations"
    migrations.mkdir(parents=True)
    shutil.copy(PROJECT / "supabase" / "config.toml", project / "supabase" / "config.toml")
    (project / "node_modules").symlink_to(PROJECT / "node_modules")
    (migrations / HOST_MIGRATION).write_text(host_app_sql())
    config = StackConfig(
        project_dir=project,
        stack_dir=base / "stack",
        api_port=free_port(),
        db_port=free_port(),
        rest_port=free_port(),
        rest_admin_port=free_port(),
        functions_port=free_port(),
    )
    stack = Stack(config)
    try:
        status = stack.up()  # bootstrap, then the app's own migration (no starter, no seed)
        before = snapshot(status.db_url)
        export_migrations(migrations)  # the documented way: tokens migrations export DIR
        output = supabase_migration_up(stack, project)
        stack.reload_schema()
        time.sleep(0.5)
        yield HostApp(
            stack,
            project,
            status.db_url,
            f"http://127.0.0.1:{config.rest_port}",
            status.jwt_secret,
            status.anon_key,
            status.service_role_key,
            before,
            output,
        )
    finally:
        stack.down()
        shutil.rmtree(base, ignore_errors=True)


def sign_up(db_url: str, *, organization_id: uuid.UUID | None, full_name: str) -> uuid.UUID:
    """A user signs up (the app's trigger makes the profile) and joins an organization."""
    user_id = uuid.uuid4()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "insert into auth.users (id, aud, role, email, raw_user_meta_data) "
            "values (%s, 'authenticated', 'authenticated', %s, %s)",
            (user_id, f"{user_id.hex[:10]}@host.test", json.dumps({"full_name": full_name})),
        )
        conn.execute(
            "update public.user_profiles set organization_id = %s where id = %s",
            (organization_id, user_id),
        )
    return user_id


def create_org(db_url: str, plan: str) -> uuid.UUID:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "insert into public.organizations (name, plan, billing_email) "
            "values (%s, %s, 'billing@host.test') returning id",
            (f"Host org {uuid.uuid4().hex[:6]}", plan),
        ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


# ------------------------------------------------------------------- the install


def test_our_migrations_are_applied_after_the_apps_own(host_app: HostApp) -> None:
    with psycopg.connect(host_app.db_url) as conn:
        versions = [
            row[0]
            for row in conn.execute(
                "select version from supabase_migrations.schema_migrations order by version"
            )
        ]
    assert versions[0] == HOST_MIGRATION.split("_")[0]
    assert len(versions) >= 2, host_app.migration_up
    assert all(version > versions[0] for version in versions[1:])


def test_the_hosts_grants_policies_and_default_privileges_are_unchanged(
    host_app: HostApp,
) -> None:
    after = snapshot(host_app.db_url)
    for name in SNAPSHOT_SQL:
        assert after[name] == host_app.before[name], name


def test_a_second_paste_errors_on_nothing_and_changes_nothing(host_app: HostApp) -> None:
    migrations = sorted((host_app.project / "supabase" / "migrations").glob("*.sql"))
    ours = [path for path in migrations if path.name != HOST_MIGRATION]
    with psycopg.connect(host_app.db_url) as conn:
        catalog_before = conn.execute(
            "select (select count(*) from public.ai_plans), (select count(*) from public.ai_features),"
            " (select count(*) from public.ai_rate_limits), (select count(*) from public.ai_token_types)"
        ).fetchone()
    for path in ours:
        result = psql_file(host_app.db_url, path)
        assert result.returncode == 0, result.stderr
    assert snapshot(host_app.db_url) == host_app.before
    with psycopg.connect(host_app.db_url) as conn:
        catalog_after = conn.execute(
            "select (select count(*) from public.ai_plans), (select count(*) from public.ai_features),"
            " (select count(*) from public.ai_rate_limits), (select count(*) from public.ai_token_types)"
        ).fetchone()
    assert catalog_after == catalog_before


def test_a_function_the_app_creates_afterwards_is_executable(host_app: HostApp) -> None:
    """Our SQL changes no default privilege: the app's next RPC works as it always did."""
    with psycopg.connect(host_app.db_url, autocommit=True) as conn:
        conn.execute(
            "create or replace function public.after_install_rpc() returns integer "
            "language sql set search_path = '' as $$ select 42 $$"
        )
        conn.execute("create schema if not exists app_private")
        conn.execute(
            "create or replace function app_private.after_install_helper() returns integer "
            "language sql set search_path = '' as $$ select 7 $$"
        )
        allowed = conn.execute(
            "select has_function_privilege('authenticated', 'public.after_install_rpc()', "
            "'execute'), has_function_privilege('anon', 'public.after_install_rpc()', 'execute'),"
            " has_function_privilege('public', 'app_private.after_install_helper()', 'execute')"
        ).fetchone()
        conn.execute("notify pgrst, 'reload schema'")
    assert allowed == (True, True, True)
    user = sign_up(host_app.db_url, organization_id=None, full_name="Newcomer")
    with host_app.rest(host_app.user_token(user)) as rest:
        for _ in range(100):  # PostgREST reloads its schema cache on the NOTIFY
            answer = rest.post("/rpc/after_install_rpc", json={})
            if answer.status_code != 404:
                break
            time.sleep(0.1)
    assert answer.status_code == 200, answer.text
    assert answer.json() == 42


# ------------------------------------------------------- the app still works


def test_a_member_still_edits_their_own_profile_and_sees_no_one_elses(
    host_app: HostApp,
) -> None:
    org = create_org(host_app.db_url, "pro")
    alice = sign_up(host_app.db_url, organization_id=org, full_name="Alice")
    bob = sign_up(host_app.db_url, organization_id=org, full_name="Bob")
    with host_app.rest(host_app.user_token(alice)) as rest:
        edited = rest.patch(
            "/user_profiles",
            params={"id": f"eq.{alice}"},
            json={"full_name": "Alice Liddell"},
            headers={"Prefer": "return=representation"},
        )
        assert edited.status_code == 200, edited.text
        assert [row["full_name"] for row in edited.json()] == ["Alice Liddell"]
        visible = rest.get("/user_profiles", params={"select": "id"}).json()
        assert visible == [{"id": str(alice)}], "our install must not widen the app's policies"
        assert rest.post("/quests", json={"organization_id": str(org), "title": "Q1"}).is_success
        assert rest.post("/rpc/quest_count", json={}).json() == 1
    assert bob


def test_the_guides_flow_works_without_any_set_up_call(host_app: HostApp) -> None:
    """A pro organization created after install: first spend opens its rows, 17 left."""
    org = create_org(host_app.db_url, "pro")
    user = sign_up(host_app.db_url, organization_id=org, full_name="Quest Maker")
    with host_app.rest(host_app.user_token(user)) as rest:
        assert rest.post("/rpc/has_enough_tokens", json={"feature": "generate_goal"}).json() is True
        spent = rest.post(
            "/rpc/deduct_tokens", json={"feature": "generate_goal", "request_id": "q-1"}
        )
        assert spent.status_code == 200, spent.text
        assert spent.json()["remaining_balance"] == 17
        assert spent.json()["message"] == "Used 3 tokens for generate_goal"
        stats = rest.post("/rpc/get_token_stats", json={}).json()
    goal = next(t for t in stats["by_type"] if t["token_type"] == "goal_generation")
    assert (goal["balance"], goal["allocated"]) == (17, 20)
    with psycopg.connect(host_app.db_url) as conn:
        violations = conn.execute("select * from public.verify_token_ledger(%s)", (org,)).fetchall()
    assert violations == []


def test_a_plan_the_app_has_but_we_do_not_ship_is_a_clear_refusal(host_app: HostApp) -> None:
    org = create_org(host_app.db_url, "free")  # 'free' is the app's default, not an ai_plans row
    user = sign_up(host_app.db_url, organization_id=org, full_name="Free Rider")
    with host_app.rest(host_app.user_token(user)) as rest:
        refused = rest.post("/rpc/deduct_tokens", json={"feature": "generate_goal"})
    assert refused.status_code == 403, refused.text
    assert json.loads(refused.json()["details"])["reason"] == "plan_not_configured"
    with psycopg.connect(host_app.db_url) as conn:
        rows = conn.execute(
            "select count(*) from public.ai_token_usage_log where organization_id = %s", (org,)
        ).fetchone()
    assert rows == (0,)


def test_adding_a_plan_is_inserts_and_spends_end_to_end(host_app: HostApp) -> None:
    """A 'team' plan: a row of ai_plans and its allocations, nothing else."""
    with psycopg.connect(host_app.db_url, autocommit=True) as conn:
        conn.execute(
            "insert into public.ai_plans (plan, description) values ('team', 'Teams') "
            "on conflict do nothing"
        )
        conn.execute(
            "insert into public.ai_plan_allocations (plan, token_type, monthly_allocation) "
            "values ('team', 'goal_generation', 60) on conflict do nothing"
        )
    org = create_org(host_app.db_url, "team")
    user = sign_up(host_app.db_url, organization_id=org, full_name="Team Player")
    with host_app.rest(host_app.user_token(user)) as rest:
        spent = rest.post("/rpc/deduct_tokens", json={"feature": "generate_goal"})
        assert spent.status_code == 200, spent.text
        assert spent.json()["remaining_balance"] == 57
        not_offered = rest.post("/rpc/deduct_tokens", json={"feature": "ask_assistant"})
    assert not_offered.status_code == 403
    assert json.loads(not_offered.json()["details"])["reason"] == "feature_not_in_plan"
    with httpx.Client(
        base_url=host_app.rest_url,
        headers={"apikey": host_app.service_key, "Authorization": f"Bearer {host_app.service_key}"},
    ) as service:
        moved = service.post(
            "/rpc/set_organization_plan", json={"organization_id": str(org), "plan": "pro"}
        )
        assert moved.status_code == 200, moved.text
        back = service.post(
            "/rpc/set_organization_plan", json={"organization_id": str(org), "plan": "team"}
        )
        assert back.status_code == 200, back.text
    with psycopg.connect(host_app.db_url) as conn:
        plan = conn.execute(
            "select plan from public.organizations where id = %s", (org,)
        ).fetchone()
    assert plan == ("team",), "the plan change is stored in the app's own column"


@pytest.mark.parametrize("pasted", [{}], indirect=True, ids=["guide tables"])
def test_a_token_type_added_later_reaches_existing_organizations_in_their_period(
    pasted: str,
) -> None:
    """In a database of its own: a new token type would change what the other suites count."""
    org = create_org(pasted, "pro")
    user = sign_up(pasted, organization_id=org, full_name="Early Adopter")
    with psycopg.connect(pasted) as conn:
        act_as(conn, user)
        conn.execute("select public.deduct_tokens('generate_goal')")
        conn.commit()
    with psycopg.connect(pasted, autocommit=True) as conn:
        refresh_before = conn.execute(
            "select refresh_date, period_started_at from public.ai_tokens "
            "where organization_id = %s and token_type = 'goal_generation'",
            (org,),
        ).fetchone()
        conn.execute("insert into public.ai_token_types (token_type) values ('images')")
        conn.execute(
            "insert into public.ai_plan_allocations (plan, token_type, monthly_allocation) "
            "values ('pro', 'images', 12)"
        )
        conn.execute(
            "insert into public.ai_features (feature, token_type, cost) values ('draw', 'images', 4)"
        )
    with psycopg.connect(pasted, row_factory=dict_row) as conn:
        act_as(conn, user)
        spent = conn.execute("select public.deduct_tokens('draw') as r").fetchone()
        conn.commit()
        rows = conn.execute(
            "select token_type, refresh_date, period_started_at from public.ai_tokens "
            "where organization_id = %s order by token_type",
            (org,),
        ).fetchall()
    assert spent is not None
    assert spent["r"]["remaining_balance"] == 8
    assert refresh_before is not None
    added = next(row for row in rows if row["token_type"] == "images")
    assert (added["refresh_date"], added["period_started_at"]) == refresh_before, (
        "the new type joins the organization's current period"
    )
    goal = next(row for row in rows if row["token_type"] == "goal_generation")
    assert (goal["refresh_date"], goal["period_started_at"]) == refresh_before, "no reset"


# ----------------------------------------------- our own suites run in such a project


def test_the_pgtap_suite_passes_in_the_host_app(host_app: HostApp) -> None:
    result = subprocess.run(
        [
            "pg_prove",
            "--dbname",
            host_app.db_url,
            "--ext",
            ".sql",
            "--recurse",
            str(PROJECT / "supabase" / "tests" / "database"),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PGSSLMODE": "disable"},
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Result: PASS" in result.stdout


def test_the_pytest_fixtures_work_in_the_host_app(host_app: HostApp) -> None:
    """The guide's Step 4 tests, with our fixtures, against the host app's stack."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(PROJECT / "tests" / "test_guide_step4.py"),
            str(PROJECT / "tests" / "test_rls_api.py"),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=PROJECT,
        env=host_app.env(),
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


# -------------------------------------------- variants pasted into the SQL editor


@pytest.fixture
def pasted(host_app: HostApp, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database of the same server with a host-app variant, our migrations pasted twice."""
    variant: dict[str, bool] = request.param
    name = f"host_variant_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(host_app.db_url, autocommit=True) as conn:
        conn.execute(f"create database {name} template {TEMPLATE_DB}")
    url = host_app.db_url.rsplit("/", 1)[0] + "/" + name
    try:
        host_file = Path(tempfile.mkdtemp()) / "host.sql"
        host_file.write_text(host_app_sql(**variant))
        assert psql_file(url, host_file).returncode == 0
        before = snapshot(url)
        for _ in range(2):
            for path in sorted((PROJECT / "supabase" / "migrations").glob("*.sql")):
                result = psql_file(url, path)
                assert result.returncode == 0, result.stderr
        assert snapshot(url) == before
        yield url
    finally:
        with psycopg.connect(host_app.db_url, autocommit=True) as conn:
            conn.execute(f"drop database if exists {name} with (force)")


def act_as(conn: psycopg.Connection[Any], user_id: uuid.UUID) -> None:
    claims = json.dumps({"sub": str(user_id), "role": "authenticated", "aud": "authenticated"})
    conn.execute("select set_config('request.jwt.claims', %s, true)", (claims,))
    conn.execute("set local role authenticated")


@pytest.mark.parametrize("pasted", [{"enum_plan": True}], indirect=True, ids=["enum plan"])
def test_an_enum_typed_plan_spends_changes_plan_and_refreshes(pasted: str) -> None:
    org = create_org(pasted, "pro")
    user = sign_up(pasted, organization_id=org, full_name="Enum User")
    with psycopg.connect(pasted) as conn:
        act_as(conn, user)
        spent = conn.execute("select public.deduct_tokens('generate_goal')").fetchone()
        conn.commit()
        assert spent is not None
        assert spent[0]["remaining_balance"] == 17
        changed = conn.execute(
            "select public.set_organization_plan(%s, 'enterprise', 'evt-enum')", (org,)
        ).fetchone()
        assert changed is not None
        assert changed[0]["plan"] == "enterprise"
        conn.execute(
            "update public.ai_tokens set refresh_date = now() - interval '1 day' "
            "where organization_id = %s",
            (org,),
        )
        refreshed = conn.execute("select public.refresh_due_tokens()").fetchone()
        plan = conn.execute(
            "select plan::text from public.organizations where id = %s", (org,)
        ).fetchone()
        goal = conn.execute(
            "select balance from public.ai_tokens "
            "where organization_id = %s and token_type = 'goal_generation'",
            (org,),
        ).fetchone()
    assert refreshed is not None
    assert refreshed[0]["failed"] == 0
    assert plan == ("enterprise",)
    assert goal == (200,)


@pytest.mark.parametrize("pasted", [{"enum_plan": True}], indirect=True, ids=["enum plan"])
def test_a_plan_the_enum_lacks_is_invalid_plan_and_changes_nothing(pasted: str) -> None:
    org = create_org(pasted, "pro")
    with psycopg.connect(pasted, autocommit=True) as conn:
        conn.execute("insert into public.ai_plans (plan) values ('team')")
        with pytest.raises(psycopg.Error) as raised:
            conn.execute("select public.set_organization_plan(%s, 'team')", (org,))
        plan = conn.execute(
            "select plan::text from public.organizations where id = %s", (org,)
        ).fetchone()
    assert raised.value.diag.sqlstate == "PT400"
    assert json.loads(raised.value.diag.message_detail or "{}")["reason"] == "invalid_plan"
    assert plan == ("pro",)


@pytest.mark.parametrize("pasted", [{"role_column": False}], indirect=True, ids=["no role"])
def test_profiles_without_a_role_column_make_everyone_a_member(pasted: str) -> None:
    org = create_org(pasted, "pro")
    user = sign_up(pasted, organization_id=org, full_name="Plain Member")
    profileless = uuid.uuid4()
    with psycopg.connect(pasted) as conn:
        act_as(conn, user)
        spent = conn.execute("select public.deduct_tokens('ask_assistant')").fetchone()
        assert spent is not None
        assert spent[0]["remaining_balance"] == 49
        report = conn.execute(
            "select label from public.get_usage_report(group_by => 'user')"
        ).fetchall()
        assert report == [("Plain Member",)]
        alerts = conn.execute("select count(*) from public.ai_token_alerts").fetchone()
        assert alerts == (0,), "members (no role column) read no alerts"
        conn.rollback()
        act_as(conn, profileless)
        with pytest.raises(psycopg.Error) as raised:
            conn.execute("select public.deduct_tokens('ask_assistant')")
    assert raised.value.diag.sqlstate == "PT403"
    assert json.loads(raised.value.diag.message_detail or "{}")["reason"] == "not_a_member"


# ------------------------------------------------ refusals and upgrades of an install


@contextmanager
def scratch(host_app: HostApp, host_sql: str) -> Iterator[str]:
    name = f"host_scratch_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(host_app.db_url, autocommit=True) as conn:
        conn.execute(f"create database {name} template {TEMPLATE_DB}")
    url = host_app.db_url.rsplit("/", 1)[0] + "/" + name
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(host_sql)
        yield url
    finally:
        with psycopg.connect(host_app.db_url, autocommit=True) as conn:
            conn.execute(f"drop database if exists {name} with (force)")


def baseline_files() -> list[Path]:
    return sorted((PROJECT / "supabase" / "migrations").glob("*.sql"))


def our_objects(url: str) -> tuple[Any, ...] | None:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "select to_regnamespace('ai_tokens_internal'), "
            "(select count(*) from pg_class where relname like 'ai\\_%' and relkind = 'r')"
        ).fetchone()


def test_a_host_function_of_the_same_name_stops_the_install_and_nothing_changes(
    host_app: HostApp,
) -> None:
    own = host_app_sql() + (
        "create function public.deduct_tokens(p_feature text, p_org uuid, p_action text) "
        "returns integer language sql as $$ select 1 $$;"
    )
    with scratch(host_app, own) as url:
        before = our_objects(url)
        result = psql_file(url, baseline_files()[0])
        assert result.returncode != 0
        assert "are not ours" in result.stderr
        assert our_objects(url) == before
        with psycopg.connect(url) as conn:
            assert conn.execute("select to_regprocedure('public.deduct_tokens(text,uuid,text)')")


def test_the_guides_own_migration_004_tables_are_refused_with_a_way_out(
    host_app: HostApp,
) -> None:
    guide_004 = host_app_sql() + (
        "create table public.ai_tokens (id uuid primary key default gen_random_uuid(), "
        "organization_id uuid, token_type text, balance integer, total_allocated integer, "
        "refresh_date timestamptz);"
    )
    with scratch(host_app, guide_004) as url:
        result = psql_file(url, baseline_files()[0])
        assert result.returncode != 0
        assert "migration 004" in result.stderr
        assert "rename" in result.stderr.lower()
        with psycopg.connect(url) as conn:
            assert conn.execute("select to_regnamespace('ai_tokens_internal')").fetchone() == (
                None,
            )


def test_a_second_install_keeps_a_replaced_seam_and_the_catalog_as_edited(
    host_app: HostApp,
) -> None:
    with scratch(host_app, host_app_sql()) as url:
        for path in baseline_files():
            assert psql_file(url, path).returncode == 0
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "create or replace function ai_tokens_internal.memberships() "
                "returns table (organization_id uuid, role text) language sql stable "
                "security definer set search_path = '' as $$ select null::uuid, null::text "
                "where false $$"
            )
            conn.execute("delete from public.ai_features where feature = 'generate_leads'")
            conn.execute("update public.ai_features set cost = 4 where feature = 'generate_goal'")
        for path in baseline_files():
            assert psql_file(url, path).returncode == 0
        with psycopg.connect(url) as conn:
            body = conn.execute(
                "select prosrc from pg_proc where oid = 'ai_tokens_internal.memberships()'::regprocedure"
            ).fetchone()
            features = dict(conn.execute("select feature, cost from public.ai_features").fetchall())
    assert body is not None
    assert "where false" in body[0], "our migrations never overwrite a seam you replaced"
    assert "generate_leads" not in features, "a deleted catalog row stays deleted"
    assert features["generate_goal"] == 4, "an edited catalog row stays edited"
