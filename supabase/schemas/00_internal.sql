-- tokens-client · 00 internal: our own schema and the helpers every capability uses.
--
-- Everything tokens-client creates is named ai_* (tables, types) or lives in schema
-- ai_tokens_internal (helpers, never exposed by PostgREST, which serves public and
-- graphql_public). We never create, alter, grant on or add policies to a table we do
-- not own, and never change default privileges. Each function revokes EXECUTE from
-- PUBLIC (the global default grants it) and grants exactly the roles that call it.
--
-- Every file in supabase/schemas/ can run twice (the SQL editor, a re-deployed
-- migration): if not exists, create or replace, drop policy if exists.
-- Function bodies name tables of later files, so they are checked when first called.
set check_function_bodies = off;

-- Before anything is created: refuse to install over objects of the same names that are
-- not ours (a host function called deduct_tokens, or the guide's own migration 004
-- tables). Nothing is changed when this refuses.
do $$
declare
  clash text;
begin
  select string_agg(p.oid::regprocedure::text, ', ') into clash
  from pg_catalog.pg_proc p
  where p.pronamespace = 'public'::regnamespace
    and p.proname in ('initialize_tokens', 'has_enough_tokens', 'deduct_tokens', 'get_token_stats',
                      'verify_token_ledger', 'refresh_due_tokens', 'grant_tokens', 'reserve_tokens',
                      'commit_reservation', 'release_reservation', 'set_rate_limit', 'refund_deduction',
                      'set_organization_plan', 'get_usage_report', 'set_enforcement_mode',
                      'set_webhook_endpoint', 'delete_webhook_endpoint', 'claim_webhook_deliveries',
                      'complete_webhook_delivery', 'apply_subscription_event', 'ai_tokens_check_request')
    and coalesce(pg_catalog.obj_description(p.oid, 'pg_proc'), '') not like 'tokens-client:%';
  if clash is not null then
    raise exception 'tokens-client: functions of the same names exist in public and are not ours: %', clash
      using hint = 'Rename or drop them, then run this again. Nothing was changed.';
  end if;
  if (to_regclass('public.ai_tokens') is not null and not exists (
        select 1 from pg_catalog.pg_attribute a
        where a.attrelid = to_regclass('public.ai_tokens') and a.attname = 'period_started_at'))
     or (to_regclass('public.ai_token_usage_log') is not null and not exists (
        select 1 from pg_catalog.pg_attribute a
        where a.attrelid = to_regclass('public.ai_token_usage_log') and a.attname = 'refunded_at')) then
    raise exception 'tokens-client: public.ai_tokens or public.ai_token_usage_log exist but were not created by tokens-client (the guide''s migration 004?)'
      using hint = 'Rename them aside (alter table public.ai_tokens rename to ai_tokens_guide; the same for ai_token_usage_log), run this again, then copy the balances over (README: "Coming from the guide''s migration 004"). Nothing was changed.';
  end if;
end
$$;

create schema if not exists ai_tokens_internal;
comment on schema ai_tokens_internal is 'tokens-client internal helpers; not exposed by PostgREST.';
revoke all on schema ai_tokens_internal from public;
-- Row-level security policies and security-invoker functions call helpers as the
-- querying role, so the API roles may use the schema (each function grants EXECUTE).
grant usage on schema ai_tokens_internal to authenticated, service_role;

-- Raise a refusal the way the API reports it: errcode PTxyz makes PostgREST answer HTTP
-- xyz; detail is JSON with a stable machine-readable "reason" plus the facts. The
-- message is fixed text: PostgREST puts it in the HTTP status line, so it never
-- carries what a caller sent (that goes into the facts).
create or replace function ai_tokens_internal.refuse(
  http_status integer, reason text, message text, facts jsonb default '{}'
)
returns void
language plpgsql
volatile
set search_path = ''
as $$
begin
  raise exception using
    errcode = 'PT' || http_status::text,
    message = message,
    detail = (jsonb_build_object('reason', reason) || coalesce(facts, '{}'::jsonb))::text;
end
$$;
revoke all on function ai_tokens_internal.refuse(integer, text, text, jsonb) from public, anon;
grant execute on function ai_tokens_internal.refuse(integer, text, text, jsonb) to authenticated, service_role;

-- Is the current request made with the service role (its API key, or a direct SQL
-- session as a privileged role: the SQL editor, a migration, pg_cron)?
create or replace function ai_tokens_internal.is_service_role()
returns boolean
language plpgsql
stable
set search_path = ''
as $$
declare
  -- auth.role(), read once (PL/pgSQL: a SQL function with SET is planned on every call,
  -- and every spend asks).
  claimed_role text := coalesce((select auth.role()), '');
begin
  return claimed_role = 'service_role' or (claimed_role = '' and session_user in ('postgres', 'supabase_admin'));
end
$$;
revoke all on function ai_tokens_internal.is_service_role() from public, anon;
grant execute on function ai_tokens_internal.is_service_role() to authenticated, service_role;

-- Refuse unless the caller is the service role (the admin API). function_name is our
-- own constant, never caller input.
create or replace function ai_tokens_internal.require_service_role(function_name text)
returns void
language plpgsql
stable
set search_path = ''
as $$
begin
  if not ai_tokens_internal.is_service_role() then
    perform ai_tokens_internal.refuse(403, 'service_role_required',
      format('%s requires the service role', function_name), jsonb_build_object('function', function_name));
  end if;
end
$$;
revoke all on function ai_tokens_internal.require_service_role(text) from public, anon, authenticated;
grant execute on function ai_tokens_internal.require_service_role(text) to service_role;

-- Refuse a missing argument (400 invalid_request, the field named; field is our constant).
create or replace function ai_tokens_internal.require_argument(present boolean, field text)
returns void
language plpgsql
immutable
set search_path = ''
as $$
begin
  if not coalesce(present, false) then
    perform ai_tokens_internal.refuse(400, 'invalid_request', format('%s is required', field),
      jsonb_build_object('field', field));
  end if;
end
$$;
revoke all on function ai_tokens_internal.require_argument(boolean, text) from public, anon;
grant execute on function ai_tokens_internal.require_argument(boolean, text) to authenticated, service_role;

-- The most tokens one ai_tokens row may hold (balance; the ai_tokens_balance_within_ceiling
-- constraint holds the same number). With plan allocations capped at the same number,
-- allocation + purchased tokens never pass 2^31 - 1, so every sum fits an integer and
-- a refresh, plan change or initialize_tokens clamps to the ceiling instead of failing:
-- no organization can be wedged by an overflow. Grants and refunds that would pass it
-- are refused up front (400 invalid_amount / 409 balance_ceiling).
create or replace function ai_tokens_internal.balance_ceiling()
returns integer
language sql
immutable
set search_path = ''
as $$
  select 1000000000
$$;
revoke all on function ai_tokens_internal.balance_ceiling() from public, anon, authenticated;
grant execute on function ai_tokens_internal.balance_ceiling() to service_role;

-- A transaction-level advisory lock in tokens-client's own key space: one namespace
-- per kind of thing serialised (a request id, an external id, a user's rate window).
create or replace function ai_tokens_internal.lock(namespace text, key text)
returns void
language sql
volatile
set search_path = ''
as $$
  select pg_advisory_xact_lock(hashtextextended('ai_tokens/' || lock.namespace || '/' || lock.key, 0))
$$;
revoke all on function ai_tokens_internal.lock(text, text) from public, anon, authenticated;
grant execute on function ai_tokens_internal.lock(text, text) to service_role;

-- Name the next balance movements for the journal (see 06_ledger.sql): kind, usage_id,
-- grant_id, reservation_id, external_id, reason. null clears it, so that a later write
-- in the same transaction is not mislabelled.
create or replace function ai_tokens_internal.journal_as(change jsonb)
returns void
language plpgsql
volatile
set search_path = ''
as $$
begin
  -- PL/pgSQL, not SQL: a SQL function with SET is planned on every call, and every
  -- spend calls this twice.
  perform set_config('tokens.change', coalesce(journal_as.change::text, ''), true);
end
$$;
revoke all on function ai_tokens_internal.journal_as(jsonb) from public, anon, authenticated;
grant execute on function ai_tokens_internal.journal_as(jsonb) to service_role;
