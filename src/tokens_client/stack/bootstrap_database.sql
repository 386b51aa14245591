-- Supabase bootstrap, the part inside one database: public's default privileges,
-- extensions, auth, schema reloads. Included by bootstrap.sql for the stack's database,
-- and run alone (as supabase_admin) on tokens_bootstrap_template, from which scratch
-- databases are cloned (schemas-vs-migrations checks, host-app installs in tests).

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
  -- pg_cron runs in one database only (cron.database_name); templates go without.
  if exists (select from pg_available_extensions where name = 'pg_cron')
     and current_database() = coalesce(current_setting('cron.database_name', true), 'postgres') then
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
