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

-- Everything that lives inside a database (schemas, extensions, default privileges,
-- auth): also applied alone to the scratch-database template (see _stack.py).
\ir bootstrap_database.sql
