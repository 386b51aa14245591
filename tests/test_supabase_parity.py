"""The stack under test is as strict as a hosted Supabase database.

``postgres`` (the connection the fixtures, migrations and seed use) is not a superuser;
``supabase_admin`` is. The API roles carry Supabase's attributes and timeouts, ``auth``
belongs to Supabase's roles, service_role has no privilege on ``auth.users``, ``cron.job``
is read-only for postgres, and what our migrations create belongs to postgres. Facts from
supabase/postgres (its init scripts, migrations and expected role listings).
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tokens_client.testing import Database, StackEnv


def role(db: Database, name: str) -> dict[str, Any]:
    rows = db.execute(
        "select rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, "
        "rolreplication, rolbypassrls, coalesce(rolconfig, '{}') "
        "from pg_roles where rolname = %s",
        (name,),
    )
    assert rows, f"role {name} exists"
    keys = ("super", "inherit", "createrole", "createdb", "login", "replication", "bypassrls")
    attributes: dict[str, Any] = dict(zip(keys, rows[0][:7], strict=True))
    attributes["config"] = sorted(rows[0][7])
    return attributes


def member_of(db: Database, name: str) -> set[str]:
    rows = db.execute(
        "select g.rolname from pg_auth_members m join pg_roles g on g.oid = m.roleid "
        "join pg_roles r on r.oid = m.member where r.rolname = %s",
        (name,),
    )
    return {row[0] for row in rows}


def refused(db: Database, statement: str) -> None:
    """``statement`` fails for lack of privilege; rolled back even where it succeeds."""
    db.execute("begin")
    try:
        with pytest.raises(errors.InsufficientPrivilege):
            db.execute(statement)
    finally:
        db.execute("rollback")


def test_postgres_is_not_a_superuser_and_supabase_admin_is(db: Database) -> None:
    assert db.value("select current_user") == "postgres"
    assert db.value("select rolsuper from pg_roles where rolname = current_user") is False
    assert db.value("show is_superuser") == "off"
    assert role(db, "supabase_admin")["super"] is True


def test_postgres_has_supabase_attributes_and_memberships(db: Database) -> None:
    postgres = role(db, "postgres")
    expected = {"createrole": True, "createdb": True, "login": True, "replication": True}
    assert {key: postgres[key] for key in expected} == expected
    assert postgres["bypassrls"] is True
    assert {
        "anon",
        "authenticated",
        "service_role",
        "pg_monitor",
        "pg_read_all_data",
        "pg_signal_backend",
    } <= member_of(db, "postgres")
    assert "supabase_auth_admin" not in member_of(db, "postgres")


def test_untrusted_extensions_are_out_of_reach_of_postgres(db: Database) -> None:
    name = db.value(
        "select name from pg_available_extension_versions where superuser and not trusted "
        "and name not in (select extname from pg_extension) order by name limit 1"
    )
    if name is None:
        pytest.skip("every untrusted extension available here is already installed")
    refused(db, f'create extension "{name}"')


def test_api_roles_have_supabase_attributes_and_timeouts(db: Database) -> None:
    anon, authenticated, service_role = (
        role(db, name) for name in ("anon", "authenticated", "service_role")
    )
    for api_role in (anon, authenticated, service_role):
        assert api_role["login"] is False
        assert api_role["super"] is False
    assert anon["config"] == ["statement_timeout=3s"]
    assert authenticated["config"] == ["statement_timeout=8s"]
    assert (anon["bypassrls"], authenticated["bypassrls"], service_role["bypassrls"]) == (
        False,
        False,
        True,
    )
    authenticator = role(db, "authenticator")
    assert authenticator["login"] is True
    assert authenticator["inherit"] is False
    assert {"statement_timeout=8s", "lock_timeout=8s"} <= set(authenticator["config"])
    assert member_of(db, "authenticator") == {"anon", "authenticated", "service_role"}


def test_authenticator_sessions_get_its_timeouts(stack_env: StackEnv) -> None:
    """What PostgREST's own connections see, not only what the catalog says."""
    password = conninfo_to_dict(stack_env.db_url).get("password")
    conninfo = make_conninfo(stack_env.db_url, user="authenticator", password=password)
    try:
        connection = psycopg.connect(conninfo, autocommit=True)
    except psycopg.OperationalError:
        pytest.skip("authenticator's password here is not postgres's")
    with connection:
        timeouts = connection.execute(
            "select current_setting('statement_timeout'), current_setting('lock_timeout')"
        ).fetchone()
    assert timeouts == ("8s", "8s")


def test_auth_belongs_to_supabase_roles(db: Database) -> None:
    assert db.value("select nspowner::regrole::text from pg_namespace where nspname = 'auth'") in (
        "supabase_admin",
        "supabase_auth_admin",
    )
    assert db.value(
        "select relowner::regrole::text from pg_class where oid = 'auth.users'::regclass"
    ) == ("supabase_auth_admin")
    owners = db.execute(
        "select proname, proowner::regrole::text from pg_proc "
        "where pronamespace = 'auth'::regnamespace and proname in ('uid', 'role', 'jwt', 'email')"
    )
    assert dict(owners) == {name: "supabase_auth_admin" for name in ("uid", "role", "jwt", "email")}
    assert db.value("select has_schema_privilege('postgres', 'auth', 'create')") is False


def test_service_role_has_no_privilege_on_auth_users(db: Database) -> None:
    privileges = ("select", "insert", "update", "delete", "truncate", "references", "trigger")
    held = [
        privilege
        for privilege in privileges
        if db.value("select has_table_privilege('service_role', 'auth.users', %s)", (privilege,))
    ]
    assert held == []


def test_postgres_writes_auth_users_without_owning_them(db: Database) -> None:
    user_id = uuid.uuid4()
    db.execute(
        "insert into auth.users (id, aud, role, email) values (%s, 'authenticated', "
        "'authenticated', %s)",
        (user_id, f"parity-{user_id.hex[:12]}@example.test"),
    )
    db.execute("delete from auth.users where id = %s", (user_id,))
    refused(db, "alter table auth.users add column parity_probe int")


def test_cron_job_is_read_only_for_postgres_but_schedule_works(db: Database) -> None:
    if db.value("select count(*) from pg_extension where extname = 'pg_cron'") == 0:
        pytest.skip("pg_cron is not installed on this stack")
    assert db.value("select has_table_privilege('postgres', 'cron.job', 'select')") is True
    for privilege in ("insert", "update", "delete", "truncate"):
        assert (
            db.value("select has_table_privilege('postgres', 'cron.job', %s)", (privilege,))
            is False
        ), privilege
    refused(db, "update cron.job set active = active where false")
    name = f"parity-{uuid.uuid4().hex[:12]}"
    job = db.value("select cron.schedule(%s, '0 0 1 1 *', 'select 1')", (name,))
    try:
        assert db.value("select username from cron.job where jobid = %s", (job,)) == "postgres"
    finally:
        assert db.value("select cron.unschedule(%s)", (name,)) is True


def test_what_our_migrations_create_belongs_to_postgres(db: Database) -> None:
    not_postgres = db.execute(
        """
        select c.oid::regclass::text, c.relowner::regrole::text
        from pg_class c
        join pg_namespace n on n.oid = c.relnamespace
        where n.nspname in ('public', 'private')
          and c.relkind in ('r', 'p', 'v', 'm', 'S')
          and not exists (
            select from pg_depend d where d.objid = c.oid and d.deptype = 'e'
          )
          and c.relowner <> 'postgres'::regrole
        union all
        select p.oid::regprocedure::text, p.proowner::regrole::text
        from pg_proc p
        join pg_namespace n on n.oid = p.pronamespace
        where n.nspname in ('public', 'private')
          and not exists (
            select from pg_depend d where d.objid = p.oid and d.deptype = 'e'
          )
          and p.proowner <> 'postgres'::regrole
        """
    )
    assert not_postgres == []
    owned = db.value(
        "select count(*) from pg_class where relowner = 'postgres'::regrole "
        "and relnamespace = 'public'::regnamespace and relname like 'ai\\_%%'"
    )
    assert owned > 0, "the migrations' ai_* tables exist and are postgres's"
