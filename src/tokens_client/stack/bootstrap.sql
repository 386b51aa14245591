-- Supabase bootstrap for the Docker-free local stack.
--
-- What a hosted Supabase database already has before a project's own migrations run,
-- as strict as it is there. Run once, in one transaction, as the superuser
-- `supabase_admin` (initdb's bootstrap user) on a new database; psql passes
-- :'db_password'. Everything after it (starter schema, migrations, seed) runs as
-- `postgres`, which is NOT a superuser, exactly as on a hosted project.
--
-- It is NOT a migration: on a hosted project (or under `supabase start`) all of this
-- exists already. Sources: supabase/postgres, migrations/db/init-scripts/*.sql and
-- migrations/db/migrations/*.sql (file names quoted below), and the role, membership,
-- default-privilege and auth-ownership listings its tests expect
-- (nix/tests/expected/roles.out, z_15_roles.out, auth.out).

-- ------------------------------------------------------------------ postgres
-- 10000000000000_demote-postgres: NOSUPERUSER CREATEDB CREATEROLE LOGIN REPLICATION
-- BYPASSRLS. The database belongs to postgres (migrate.sh), so `public`, owned by
-- pg_database_owner, is postgres's schema too.
create role postgres login nosuperuser createdb createrole replication bypassrls
  password :'db_password';
alter database postgres owner to postgres;
-- 00000000000003-post-setup
alter role postgres set search_path to "$user", public, extensions;
alter role supabase_admin set search_path to "$user", public, auth, extensions;
-- 20230306081037_grant_pg_monitor_to_postgres, 20240606060239_grant_predefined_roles_to_postgres
grant pg_monitor, pg_read_all_data, pg_signal_backend to postgres;
-- 20251105172723_grant_pg_reload_conf_to_postgres
grant execute on function pg_catalog.pg_reload_conf() to postgres;

-- ----------------------------------------------------------------- API roles
-- 00000000000000-initial-schema created them NOINHERIT; 20230529180330_alter_api_roles_for_inherit
-- made anon, authenticated and service_role INHERIT. authenticator stays NOINHERIT LOGIN.
create role anon nologin inherit;
create role authenticated nologin inherit;
create role service_role nologin inherit bypassrls;
create role authenticator login noinherit password :'db_password';
grant anon, authenticated, service_role to authenticator;
-- 20230201083204_grant_auth_roles_to_postgres
grant anon, authenticated, service_role to postgres;
-- initial-schema (anon 3s, authenticated 8s), 20221028101028_set_authenticator_timeout,
-- 20231130133139_set_lock_timeout_to_authenticator_role
alter role anon set statement_timeout = '3s';
alter role authenticated set statement_timeout = '8s';
alter role authenticator set statement_timeout = '8s';
alter role authenticator set lock_timeout = '8s';

-- The Auth server's role: 00000000000001-auth-schema (NOINHERIT LOGIN NOREPLICATION,
-- search_path auth), 20260821154147_revoke_createrole_from_auth_admin,
-- 20251121141100_supabase_auth_admin_db_grants. postgres is no longer a member of it
-- (20240627101908_revoke_supabase_auth_admin_from_postgres).
create role supabase_auth_admin login noinherit nocreaterole noreplication;
alter role supabase_auth_admin set search_path to auth;
alter role supabase_auth_admin set idle_in_transaction_session_timeout to 60000;
grant create on database postgres to supabase_auth_admin;

-- -------------------------------------------------------------------- public
-- initial-schema: every table, function and sequence postgres or supabase_admin creates in
-- `public` is granted to the API roles. This is why RLS (and revoking EXECUTE) matters
-- there, and why our migrations must be correct under exactly these defaults.
grant usage on schema public to postgres, anon, authenticated, service_role;
alter default privileges for role postgres, supabase_admin in schema public
  grant all on tables to postgres, anon, authenticated, service_role;
alter default privileges for role postgres, supabase_admin in schema public
  grant all on functions to postgres, anon, authenticated, service_role;
alter default privileges for role postgres, supabase_admin in schema public
  grant all on sequences to postgres, anon, authenticated, service_role;

-- PostgREST's db-schemas name it; pg_graphql's migrations create it as supabase_admin.
create schema graphql_public;
grant usage on schema graphql_public to postgres, anon, authenticated, service_role;
alter default privileges for role supabase_admin in schema graphql_public
  grant all on tables to postgres, anon, authenticated, service_role;
alter default privileges for role supabase_admin in schema graphql_public
  grant all on functions to postgres, anon, authenticated, service_role;
alter default privileges for role supabase_admin in schema graphql_public
  grant all on sequences to postgres, anon, authenticated, service_role;

-- ---------------------------------------------------------------- extensions
-- The init scripts run as postgres, so `extensions` is postgres's; extensions in it are
-- created by supabase_admin and granted to postgres with grant option
-- (20230224042246_grant_extensions_perms_for_postgres).
create schema extensions authorization postgres;
grant usage on schema extensions to anon, authenticated, service_role;
alter default privileges for role supabase_admin in schema extensions
  grant all on tables to postgres with grant option;
alter default privileges for role supabase_admin in schema extensions
  grant all on routines to postgres with grant option;
alter default privileges for role supabase_admin in schema extensions
  grant all on sequences to postgres with grant option;
create extension pgcrypto with schema extensions;
-- Not trusted extensions, so postgres cannot create them; on Supabase the dashboard (or
-- supautils) creates them as supabase_admin. pg_prove's `create extension if not exists
-- pgtap` and `supabase db lint`'s plpgsql_check then find them in place.
create extension pgtap with schema extensions;
create extension plpgsql_check with schema extensions;
grant all on all tables in schema extensions to postgres with grant option;
grant all on all routines in schema extensions to postgres with grant option;
grant all on all sequences in schema extensions to postgres with grant option;

-- pg_cron lives in pg_catalog (it needs shared_preload_libraries, which the local stack
-- sets). What extensions.grant_pg_cron_access() gives postgres on Supabase
-- (20231020085357_revoke_writes_on_cron_job_from_postgres,
-- 20260730000000_revoke_trigger_on_cron_tables_from_postgres): everything in `cron`,
-- except that cron.job is read-only (jobs change through cron.schedule/unschedule) and
-- cron.job_run_details takes no triggers. Migrations test for it and never require it.
do $$
begin
  if exists (select from pg_available_extensions where name = 'pg_cron') then
    create extension pg_cron with schema pg_catalog;
    grant usage on schema cron to postgres with grant option;
    grant all on all functions in schema cron to postgres with grant option;
    grant all on all tables in schema cron to postgres with grant option;
    grant all on all sequences in schema cron to postgres with grant option;
    revoke all on table cron.job from postgres;
    grant select on table cron.job to postgres with grant option;
    revoke trigger on table cron.job_run_details from postgres;
  end if;
end
$$;

-- ---------------------------------------------------------------------- auth
-- auth.out: the schema is supabase_admin's; its tables and functions are
-- supabase_auth_admin's. anon, authenticated, service_role and postgres may USAGE it;
-- postgres has ALL on what the Auth server creates there (20211115181400_update-auth-
-- permissions) but may not CREATE in it (20250421084701_revoke_admin_roles_from_postgres).
-- service_role has no privilege on auth.users.
create schema auth authorization supabase_admin;
grant usage, create on schema auth to supabase_auth_admin;
grant usage on schema auth to anon, authenticated, service_role, postgres;
alter default privileges for role supabase_auth_admin in schema auth
  grant all on tables to postgres;
alter default privileges for role supabase_auth_admin in schema auth
  grant all on sequences to postgres;
alter default privileges for role supabase_auth_admin in schema auth
  grant all on routines to postgres;

set local role supabase_auth_admin;

-- The columns of GoTrue's auth.users that an app (and our tests) touch.
create table auth.users (
  instance_id uuid,
  id uuid primary key,
  aud varchar(255),
  role varchar(255),
  email varchar(255) unique,
  encrypted_password varchar(255),
  email_confirmed_at timestamptz,
  raw_app_meta_data jsonb default '{}'::jsonb,
  raw_user_meta_data jsonb default '{}'::jsonb,
  is_anonymous boolean not null default false,
  created_at timestamptz default now(),
  updated_at timestamptz default now()
);

-- The JWT helpers, as the Auth server defines them: PostgREST puts the verified claims
-- in the `request.jwt.claims` setting (older versions: one `request.jwt.claim.*` each).
create function auth.uid() returns uuid
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;

create function auth.role() returns text
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$$;

create function auth.email() returns text
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.email', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email')
  )::text
$$;

create function auth.jwt() returns jsonb
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')
  )::jsonb
$$;

reset role;

-- ----------------------------------------------------------- schema reloads
-- PostgREST reloads its schema cache on this notification. Event triggers need a
-- superuser; on Supabase these are supabase_admin's too (pgrst_ddl_watch, pgrst_drop_watch).
create function extensions.pgrst_ddl_watch() returns event_trigger
language plpgsql
as $$
begin
  notify pgrst, 'reload schema';
end
$$;

create event trigger pgrst_ddl_watch on ddl_command_end
  execute function extensions.pgrst_ddl_watch();
create event trigger pgrst_drop_watch on sql_drop
  execute function extensions.pgrst_ddl_watch();
