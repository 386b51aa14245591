-- tokens-client: the spend path at the database's floor (issue 11).
--
-- deduct_tokens, reserve_tokens and has_enough_tokens open with one function
-- (spend_context: resolve_organization calls the memberships seam once, then one query
-- finds price, plan, mode and rate rule); journal_as, is_service_role and the default
-- seams become PL/pgSQL (a SQL function with SET is planned on every call); rate limits count in one row per user and rule
-- (ai_rate_limit_windows) instead of scanning the usage log under an advisory lock;
-- what is due for settlement is a column of the row (ai_tokens.settle_after) instead of
-- two subqueries; the journal trigger tests alert lines in plain code; the usage report
-- reads a daily rollup (ai_token_usage_daily) kept by triggers on the usage log.
-- The files of supabase/schemas/ this changes, in order, then what is gone. Safe to run
-- twice; existing rows get settle_after and the rollup on the way.
set check_function_bodies = off;

-- ============================================================ 00_internal.sql
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

-- ============================================================ 01_seams.sql
-- tokens-client · 01 seams: the ONLY place that reads or writes the host app.
--
-- THIS IS THE FILE YOU ADAPT. tokens-client never touches your tables; it asks these
-- functions instead. The defaults read the original guide's tables as the guide has
-- them:
--   public.organizations (id uuid, plan text or an enum, name text, ...)
--   public.user_profiles (id uuid = auth.users.id, organization_id uuid, full_name
--                         text, and optionally role text: owner | admin | member)
-- An app with another model (a members table, several organizations per user, plans
-- kept elsewhere) replaces the bodies below with `create or replace function`, keeping
-- each signature and result. Each seam is created only when absent, so running our
-- migrations again (or an upgrade) never overwrites a seam you replaced.
--
-- SAFETY: membership is what these functions say it is. With the default bodies, a user
-- who can UPDATE their own user_profiles.organization_id or role (Supabase grants UPDATE
-- on every column unless you narrow it) can join any organization or make themselves
-- owner, in your app and here. Grant users UPDATE only on the columns they may change,
-- e.g. `revoke update on public.user_profiles from authenticated;
-- grant update (full_name) on public.user_profiles to authenticated;`. Every seam is SECURITY DEFINER (it reads your tables as
-- their owner, so your own policies neither recurse nor hide rows from us) and is
-- executable only by the roles named below it.
--
-- Role names our functions understand: 'owner' and 'admin' may see the whole
-- organization's usage and alerts and may refund; anything else is a member.
set check_function_bodies = off;

-- The caller's memberships: (organization_id, role) for auth.uid(). Every policy and
-- function decides membership through this. Default: the user's profile row; its
-- role column when the table has one, else 'member'.
do $seam$
begin
  -- Absent, or still the SQL body of the first release (md5 of its text), which is
  -- planned on every call: this PL/pgSQL one keeps its plan for the session, and every
  -- spend calls it. A seam you replaced is never touched.
  if to_regprocedure('ai_tokens_internal.memberships()') is null
     or exists (select 1 from pg_catalog.pg_proc p join pg_catalog.pg_language l on l.oid = p.prolang
                where p.oid = to_regprocedure('ai_tokens_internal.memberships()') and l.lanname = 'sql'
                  and md5(p.prosrc) = '09af727f779094e41d3a4c4c7d7bd17e') then
    create or replace function ai_tokens_internal.memberships()
    returns table (organization_id uuid, role text)
    language plpgsql
    stable
    security definer
    set search_path = ''
    as $$
    begin
      return query
      select p.organization_id, coalesce(to_jsonb(p) ->> 'role', 'member')
      from public.user_profiles p
      where p.id = (select auth.uid())
        and p.organization_id is not null;
    end
    $$;
  end if;
end
$seam$;
revoke all on function ai_tokens_internal.memberships() from public, anon;
grant execute on function ai_tokens_internal.memberships() to authenticated, service_role;

-- Does the host have this organization?
do $seam$
begin
  if to_regprocedure('ai_tokens_internal.organization_exists(uuid)') is null
     or exists (select 1 from pg_catalog.pg_proc p join pg_catalog.pg_language l on l.oid = p.prolang
                where p.oid = to_regprocedure('ai_tokens_internal.organization_exists(uuid)') and l.lanname = 'sql'
                  and md5(p.prosrc) = '900e70c9c9755c6da5d1792eb2ddde5f') then
    create or replace function ai_tokens_internal.organization_exists(organization_id uuid)
    returns boolean
    language plpgsql
    stable
    security definer
    set search_path = ''
    as $$
    begin
      return exists (select 1 from public.organizations o where o.id = organization_exists.organization_id);
    end
    $$;
  end if;
end
$seam$;
revoke all on function ai_tokens_internal.organization_exists(uuid) from public, anon, authenticated;
grant execute on function ai_tokens_internal.organization_exists(uuid) to service_role;

-- The organization's plan as text (an enum-typed column is cast here), or null when
-- the organization does not exist. The name is looked up in public.ai_plans.
do $seam$
begin
  if to_regprocedure('ai_tokens_internal.organization_plan(uuid)') is null
     or exists (select 1 from pg_catalog.pg_proc p join pg_catalog.pg_language l on l.oid = p.prolang
                where p.oid = to_regprocedure('ai_tokens_internal.organization_plan(uuid)') and l.lanname = 'sql'
                  and md5(p.prosrc) = '55f29ac08b0c534fe58eacfb915d160a') then
    create or replace function ai_tokens_internal.organization_plan(organization_id uuid)
    returns text
    language plpgsql
    stable
    security definer
    set search_path = ''
    as $$
    begin
      return (select o.plan::text from public.organizations o where o.id = organization_plan.organization_id);
    end
    $$;
  end if;
end
$seam$;
revoke all on function ai_tokens_internal.organization_plan(uuid) from public, anon, authenticated;
grant execute on function ai_tokens_internal.organization_plan(uuid) to service_role;

-- Store a plan change (set_organization_plan, initialize_tokens with a plan, the Stripe
-- webhook). The text is converted to the column's own type, so a text column and an
-- enum column both work; a value the column refuses is 400 invalid_plan. Returns false
-- when the organization does not exist. Only the plan column is written.
do $seam$
begin
  if to_regprocedure('ai_tokens_internal.change_organization_plan(uuid, text)') is null then
    create function ai_tokens_internal.change_organization_plan(organization_id uuid, plan text)
    returns boolean
    language plpgsql
    volatile
    security definer
    set search_path = ''
    as $$
    begin
      update public.organizations o
      set plan = (jsonb_populate_record(null::public.organizations,
                                        jsonb_build_object('plan', change_organization_plan.plan))).plan
      where o.id = change_organization_plan.organization_id;
      return found;
    exception
      when invalid_text_representation or check_violation then
        perform ai_tokens_internal.refuse(400, 'invalid_plan', 'The organization''s plan column does not accept this plan',
          jsonb_build_object('plan', left(change_organization_plan.plan, 50)));
        return false;
    end
    $$;
  end if;
end
$seam$;
revoke all on function ai_tokens_internal.change_organization_plan(uuid, text) from public, anon, authenticated;
grant execute on function ai_tokens_internal.change_organization_plan(uuid, text) to service_role;

-- Display names for reports and the dashboard (null when unknown).
do $seam$
begin
  if to_regprocedure('ai_tokens_internal.organization_name(uuid)') is null then
    create function ai_tokens_internal.organization_name(organization_id uuid)
    returns text
    language sql
    stable
    security definer
    set search_path = ''
    as $$
      select to_jsonb(o) ->> 'name' from public.organizations o where o.id = organization_name.organization_id
    $$;
  end if;
end
$seam$;
revoke all on function ai_tokens_internal.organization_name(uuid) from public, anon, authenticated;
grant execute on function ai_tokens_internal.organization_name(uuid) to service_role;

do $seam$
begin
  if to_regprocedure('ai_tokens_internal.user_display_name(uuid)') is null then
    create function ai_tokens_internal.user_display_name(user_id uuid)
    returns text
    language sql
    stable
    security definer
    set search_path = ''
    as $$
      select to_jsonb(p) ->> 'full_name' from public.user_profiles p where p.id = user_display_name.user_id
    $$;
  end if;
end
$seam$;
revoke all on function ai_tokens_internal.user_display_name(uuid) from public, anon, authenticated;
grant execute on function ai_tokens_internal.user_display_name(uuid) to service_role;

-- ============================================================ 02_tenancy.sql
-- tokens-client · 02 tenancy: which organization a request acts on, and as what.
--
-- Built on the seams (01_seams.sql) only. An organization id sent by a client is a claim
-- to check against the caller's memberships, never a fact to trust.
set check_function_bodies = off;

-- The caller's role in an organization (owner/admin/member), or null.
create or replace function ai_tokens_internal.membership_role(organization_id uuid)
returns text
language sql
stable
set search_path = ''
as $$
  select m.role from ai_tokens_internal.memberships() m
  where m.organization_id = membership_role.organization_id
  limit 1
$$;
revoke all on function ai_tokens_internal.membership_role(uuid) from public, anon, authenticated;
grant execute on function ai_tokens_internal.membership_role(uuid) to service_role;

-- Refuse an organization id the host does not have (404); null passes (callers that
-- need one say so with their own 400).
create or replace function ai_tokens_internal.require_organization(organization_id uuid)
returns void
language plpgsql
stable
set search_path = ''
as $$
begin
  if require_organization.organization_id is not null
     and not ai_tokens_internal.organization_exists(require_organization.organization_id) then
    perform ai_tokens_internal.refuse(404, 'organization_not_found',
      format('Organization (id=%s) not found', require_organization.organization_id),
      jsonb_build_object('organization_id', require_organization.organization_id));
  end if;
end
$$;
revoke all on function ai_tokens_internal.require_organization(uuid) from public, anon, authenticated;
grant execute on function ai_tokens_internal.require_organization(uuid) to service_role;

-- The organization a request acts on. A member may omit organization_id (their own
-- organization is used; with several, they must name one); a given organization_id is
-- checked against the caller's memberships. The service role must name an existing
-- organization. Returns (organization_id, role); role is 'service_role' for it.
create or replace function ai_tokens_internal.resolve_organization(requested_organization_id uuid)
returns table (organization_id uuid, role text)
language plpgsql
stable
set search_path = ''
as $$
declare
  found_organization uuid;
  found_role text;
  membership_count integer;
begin
  if ai_tokens_internal.is_service_role() then
    if requested_organization_id is null then
      perform ai_tokens_internal.refuse(400, 'invalid_request', 'organization_id is required for the service role',
        jsonb_build_object('field', 'organization_id'));
    end if;
    perform ai_tokens_internal.require_organization(requested_organization_id);
    return query select requested_organization_id, 'service_role'::text;
    return;
  end if;

  if (select auth.uid()) is null then
    perform ai_tokens_internal.refuse(401, 'unauthenticated', 'Sign in to use AI features');
  end if;

  -- One call of the seam: the first matching membership, and how many there are.
  select m.organization_id, m.role, count(*) over ()::integer
  into found_organization, found_role, membership_count
  from ai_tokens_internal.memberships() m
  where requested_organization_id is null or m.organization_id = requested_organization_id
  order by m.organization_id
  limit 1;

  if found_organization is null then
    perform ai_tokens_internal.refuse(403, 'not_a_member',
      case when requested_organization_id is null
        then 'You are not a member of any organization'
        else 'You are not a member of this organization' end,
      jsonb_build_object('organization_id', requested_organization_id));
  end if;
  if requested_organization_id is null and membership_count > 1 then
    perform ai_tokens_internal.refuse(400, 'invalid_request',
      'organization_id is required: you belong to several organizations',
      jsonb_build_object('field', 'organization_id'));
  end if;
  return query select found_organization, found_role;
end
$$;
revoke all on function ai_tokens_internal.resolve_organization(uuid) from public, anon;
grant execute on function ai_tokens_internal.resolve_organization(uuid) to authenticated, service_role;

-- PostgREST's db-pre-request hook: runs before every API request, as the request's
-- role, and refuses (401 invalid_jwt) a JWT that Supabase Auth would never sign: one
-- without a numeric `exp` (PostgREST accepts it forever; the Edge Functions refuse it)
-- or whose `sub` is not a uuid (auth.uid() would fail with 22P02 in every policy and
-- function). A request without a JWT passes (PostgREST then acts as anon). In public,
-- security invoker, because anon runs it too and has no privilege on our schema. The
-- local stack configures it; on a hosted project run once, as postgres:
--   alter role authenticator set pgrst.db_pre_request = 'public.ai_tokens_check_request';
--   notify pgrst, 'reload config';
create or replace function public.ai_tokens_check_request()
returns void
language plpgsql
stable
set search_path = ''
as $$
declare
  claims jsonb := nullif(current_setting('request.jwt.claims', true), '')::jsonb;
begin
  if claims is null or claims - 'role' = '{}'::jsonb then
    return;
  end if;
  if jsonb_typeof(claims -> 'exp') is distinct from 'number' then
    raise exception using errcode = 'PT401', message = 'JWT has no expiry',
      detail = jsonb_build_object('reason', 'invalid_jwt', 'claim', 'exp')::text;
  end if;
  if claims ? 'sub' and coalesce(claims ->> 'sub', '')
       !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
    raise exception using errcode = 'PT401', message = 'JWT subject is not a user id',
      detail = jsonb_build_object('reason', 'invalid_jwt', 'claim', 'sub')::text;
  end if;
end
$$;
revoke all on function public.ai_tokens_check_request() from public;
grant execute on function public.ai_tokens_check_request() to anon, authenticated, service_role;
comment on function public.ai_tokens_check_request() is 'tokens-client: PostgREST db-pre-request: refuse a JWT without exp or with a sub that is not a uuid';

-- ============================================================ 05_balances.sql
-- tokens-client · 05 balances: ai_tokens, one row per organization and token type.
--
-- balance is everything spendable; purchased_balance (<= balance) the part that came
-- from grants (top-ups), reserved the part held by active reservations: available =
-- balance - reserved. A row is created on first use (open_account), so an organization
-- created after install, or a token type added later, needs no set-up call.
set check_function_bodies = off;

create table if not exists public.ai_tokens (
  id uuid primary key default gen_random_uuid(),
  organization_id uuid not null,
  token_type text not null references public.ai_token_types (token_type) on update cascade,
  balance integer not null default 0 constraint ai_tokens_balance_not_negative check (balance >= 0),
  total_allocated integer not null default 0 check (total_allocated >= 0),
  refresh_date timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  purchased_balance integer not null default 0,
  reserved integer not null default 0,
  period_started_at timestamptz not null default now(),
  debt bigint not null default 0 constraint ai_tokens_debt_not_negative check (debt >= 0),
  period_peak_allocation integer not null default 0,
  settle_after timestamptz not null default 'infinity',
  constraint ai_tokens_organization_token_type_key unique (organization_id, token_type),
  constraint ai_tokens_purchased_within_balance check (purchased_balance >= 0 and purchased_balance <= balance),
  constraint ai_tokens_reserved_not_negative check (reserved >= 0),
  -- ai_tokens_internal.balance_ceiling(): the most tokens a row may hold.
  constraint ai_tokens_balance_within_ceiling check (balance <= 1000000000)
);
-- Added after the first release: existing rows start at -infinity (due, so the next
-- spend settles them and sets it) until 07_settlement.sql computes it.
alter table public.ai_tokens add column if not exists settle_after timestamptz not null default '-infinity';
alter table public.ai_tokens alter column settle_after set default 'infinity';
comment on table public.ai_tokens is 'One row per organization and token type. balance never goes below zero (constraint), and only the token functions change it. organization_id names an organization of the host app (see the organization_exists seam).';
comment on column public.ai_tokens.purchased_balance is 'The part of balance that came from grants (top-ups); it survives the monthly refresh and is spent after the period allowance.';
comment on column public.ai_tokens.reserved is 'Tokens held by active reservations: available = balance - reserved.';
comment on column public.ai_tokens.debt is 'Tokens used beyond what was available (a reservation committed above its estimate when the balance could not cover it): taken from the next period''s allowance at the refresh.';
comment on column public.ai_tokens.period_started_at is 'Start of the current allocation period (the last refresh boundary).';
comment on column public.ai_tokens.settle_after is 'No later than the first moment lazy maintenance is due (the refresh date, the earliest expiry of an active hold or of a grant with tokens left): spending takes its one-statement path while now() is before it. Kept by settle_tokens and by triggers on ai_tokens, ai_token_grants and ai_token_reservations; verify_token_ledger reports a row where it is late.';
comment on column public.ai_tokens.period_peak_allocation is 'The highest total_allocated reached in the current period (kept by a trigger): an upgrade adds only the allocation above it, so plan cycling never re-grants an allowance.';
create index if not exists ai_tokens_token_type_idx on public.ai_tokens (token_type);
create index if not exists ai_tokens_settle_after_idx on public.ai_tokens (settle_after) where settle_after < 'infinity';

revoke all on public.ai_tokens from anon, authenticated;
grant select on public.ai_tokens to authenticated;
grant all on public.ai_tokens to service_role;
alter table public.ai_tokens enable row level security;

drop policy if exists "Members can view their organization's token balances" on public.ai_tokens;
create policy "Members can view their organization's token balances"
  on public.ai_tokens for select to authenticated
  using (organization_id in (select m.organization_id from ai_tokens_internal.memberships() m));
drop policy if exists "Service role manages token balances" on public.ai_tokens;
create policy "Service role manages token balances"
  on public.ai_tokens for all to service_role using (true) with check (true);

-- Keep period_peak_allocation: the highest allocation of the current period, starting
-- again from total_allocated when a new period starts (refresh, initialize_tokens); and
-- keep settle_after no later than refresh_date, whoever writes it (a refresh moved by
-- hand in the SQL editor is due at once). Spending changes none of these columns, so
-- the update trigger's condition keeps it off the spending path. SECURITY DEFINER: a
-- BEFORE trigger runs before row-level security judges the row, so a refused insert
-- must reach that judgement (it reads holds and grants the caller may not).
create or replace function ai_tokens_internal.track_period_peak()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if tg_op = 'INSERT' or new.period_started_at is distinct from old.period_started_at then
    new.period_peak_allocation := new.total_allocated;
  else
    new.period_peak_allocation := greatest(old.period_peak_allocation, new.total_allocated);
  end if;
  new.settle_after := least(coalesce(new.settle_after, 'infinity'), coalesce(new.refresh_date, 'infinity'));
  if tg_op = 'INSERT' then
    -- Holds or grants may exist before the row does (a hold taken in off mode).
    new.settle_after := least(new.settle_after,
      ai_tokens_internal.next_settlement(new.organization_id, new.token_type, new.refresh_date));
  end if;
  return new;
end
$$;
revoke all on function ai_tokens_internal.track_period_peak() from public, anon, authenticated;

create or replace trigger ai_tokens_track_period_peak
  before insert on public.ai_tokens
  for each row execute function ai_tokens_internal.track_period_peak();
create or replace trigger ai_tokens_track_period_change
  before update on public.ai_tokens
  for each row
  when (new.total_allocated is distinct from old.total_allocated
        or new.period_started_at is distinct from old.period_started_at
        or new.refresh_date is distinct from old.refresh_date
        or new.settle_after is distinct from old.settle_after)
  execute function ai_tokens_internal.track_period_peak();

-- The organization's row for a token type, locked and brought up to date (settled, see
-- 07_settlement.sql). Missing, it is created first: the plan's allocation, for the
-- period of the organization's other rows (a token type added later does not reset the
-- organization's period) or, for a new organization, a period starting now. Racing
-- callers create it once. The caller has checked that the organization exists.
create or replace function ai_tokens_internal.open_account(organization_id uuid, token_type text)
returns public.ai_tokens
language plpgsql
volatile
set search_path = ''
as $$
declare
  account public.ai_tokens;
  sibling record;
  allocation integer;
begin
  account := ai_tokens_internal.settle_tokens(open_account.organization_id, open_account.token_type);
  if account.id is not null then
    return account;
  end if;
  allocation := ai_tokens_internal.plan_allocation(
    ai_tokens_internal.organization_plan(open_account.organization_id), open_account.token_type);
  select t.period_started_at, t.refresh_date into sibling
  from public.ai_tokens t
  where t.organization_id = open_account.organization_id and t.refresh_date > now()
  order by t.refresh_date
  limit 1;
  perform ai_tokens_internal.journal_as(jsonb_build_object('kind', 'allocation', 'reason', 'opened on first use'));
  insert into public.ai_tokens (organization_id, token_type, balance, total_allocated, period_started_at, refresh_date)
  values (open_account.organization_id, open_account.token_type, allocation, allocation,
          coalesce(sibling.period_started_at, now()), coalesce(sibling.refresh_date, now() + interval '1 month'))
  on conflict on constraint ai_tokens_organization_token_type_key do nothing;
  perform ai_tokens_internal.journal_as(null);
  return ai_tokens_internal.settle_tokens(open_account.organization_id, open_account.token_type);
end
$$;
revoke all on function ai_tokens_internal.open_account(uuid, text) from public, anon, authenticated;
grant execute on function ai_tokens_internal.open_account(uuid, text) to service_role;

-- The row an organization would get on first use, without writing: what stats and
-- has_enough_tokens report for a token type the organization has no row for yet.
create or replace function ai_tokens_internal.unopened_account(organization_id uuid, token_type text)
returns public.ai_tokens
language plpgsql
stable
set search_path = ''
as $$
declare
  account public.ai_tokens;
  sibling record;
begin
  account.organization_id := unopened_account.organization_id;
  account.token_type := unopened_account.token_type;
  account.total_allocated := ai_tokens_internal.plan_allocation(
    ai_tokens_internal.organization_plan(unopened_account.organization_id), unopened_account.token_type);
  account.balance := account.total_allocated;
  account.period_peak_allocation := account.total_allocated;
  account.purchased_balance := 0;
  account.reserved := 0;
  account.debt := 0;
  select t.period_started_at, t.refresh_date into sibling
  from public.ai_tokens t
  where t.organization_id = unopened_account.organization_id and t.refresh_date > now()
  order by t.refresh_date
  limit 1;
  account.period_started_at := coalesce(sibling.period_started_at, now());
  account.refresh_date := coalesce(sibling.refresh_date, now() + interval '1 month');
  return account;
end
$$;
revoke all on function ai_tokens_internal.unopened_account(uuid, text) from public, anon, authenticated;
grant execute on function ai_tokens_internal.unopened_account(uuid, text) to service_role;

-- initialize_tokens: create or reset an organization's ai_tokens rows (one per token
-- type) to its plan's allocation (journaled 'allocation'), refresh_date one month
-- ahead. Purchased tokens are kept. Given a plan, the organization is moved to it first
-- (through the change_organization_plan seam). Service role only (the guide's
-- initializeTokens). Not needed before first use: rows are opened on demand.
create or replace function public.initialize_tokens(organization_id uuid, plan text default null)
returns setof public.ai_tokens
language plpgsql
security invoker
set search_path = ''
as $$
declare
  target_plan text;
  existing record;
begin
  perform ai_tokens_internal.require_service_role('initialize_tokens');
  perform ai_tokens_internal.require_argument(initialize_tokens.organization_id is not null, 'organization_id');
  perform ai_tokens_internal.require_plan(initialize_tokens.plan);
  perform ai_tokens_internal.require_organization(initialize_tokens.organization_id);
  perform ai_tokens_internal.lock('organization', initialize_tokens.organization_id::text);

  if initialize_tokens.plan is not null then
    perform ai_tokens_internal.change_organization_plan(initialize_tokens.organization_id, initialize_tokens.plan);
  end if;
  target_plan := ai_tokens_internal.organization_plan(initialize_tokens.organization_id);

  -- Expire what is due first, so that only purchased tokens still valid are kept.
  for existing in
    select t.token_type from public.ai_tokens t
    where t.organization_id = initialize_tokens.organization_id
    order by t.token_type
  loop
    perform ai_tokens_internal.settle_tokens(initialize_tokens.organization_id, existing.token_type);
  end loop;

  perform ai_tokens_internal.journal_as(jsonb_build_object(
    'kind', 'allocation', 'reason', format('initialized on plan %s', target_plan)));
  return query
  insert into public.ai_tokens as t
    (organization_id, token_type, balance, total_allocated, refresh_date, period_started_at)
  select initialize_tokens.organization_id, tt.token_type,
         ai_tokens_internal.plan_allocation(target_plan, tt.token_type),
         ai_tokens_internal.plan_allocation(target_plan, tt.token_type),
         now() + interval '1 month', now()
  from public.ai_token_types tt
  order by tt.token_type
  on conflict on constraint ai_tokens_organization_token_type_key do update
    set balance = least(excluded.balance + t.purchased_balance, ai_tokens_internal.balance_ceiling()),
        total_allocated = excluded.total_allocated,
        refresh_date = excluded.refresh_date,
        period_started_at = excluded.period_started_at,
        updated_at = now()
  returning t.*;
  perform ai_tokens_internal.journal_as(null);
end
$$;
revoke all on function public.initialize_tokens(uuid, text) from public, anon, authenticated;
grant execute on function public.initialize_tokens(uuid, text) to service_role;
comment on function public.initialize_tokens(uuid, text) is 'tokens-client: create or reset an organization''s balances to its plan (service role)';

-- ============================================================ 06_ledger.sql
-- tokens-client · 06 ledger: the journal of every balance movement.
--
-- Every change of ai_tokens.balance is journaled by a trigger on ai_tokens, so that for
-- each (organization, token type) balance = sum(ledger.delta) at every moment, whatever
-- writes ai_tokens. A function names the movement with ai_tokens_internal.journal_as()
-- right before its UPDATE and clears it right after; without a name (the guide's
-- "set all balances to 9999" in the SQL editor) the movement is an 'adjustment'.
set check_function_bodies = off;

create table if not exists public.ai_token_ledger (
  id bigint generated always as identity primary key,
  organization_id uuid not null,
  token_type text not null,
  kind text not null check (kind in (
    'allocation', 'refresh', 'plan_change', 'grant', 'deduction', 'refund',
    'reservation_capture', 'reservation_release', 'expiry', 'adjustment')),
  delta integer not null check (delta <> 0),
  balance_after integer not null check (balance_after >= 0),
  usage_id uuid,
  grant_id uuid,
  reservation_id uuid,
  external_id text,
  reason text,
  actor uuid,
  created_at timestamptz not null default now()
);
comment on table public.ai_token_ledger is 'The journal: one row per change of an ai_tokens balance, written by a trigger on ai_tokens. For every (organization, token type): balance = sum(delta). Append-only.';
create index if not exists ai_token_ledger_organization_type_idx on public.ai_token_ledger (organization_id, token_type, id);
-- No foreign key on token_type: every spend would take a KEY SHARE lock on the one
-- shared ai_token_types row (a multixact under load). A renamed token type is carried
-- into the journal by the trigger below instead.
alter table public.ai_token_ledger drop constraint if exists ai_token_ledger_token_type_fkey;
drop index if exists public.ai_token_ledger_token_type_idx;
create index if not exists ai_token_ledger_usage_id_idx on public.ai_token_ledger (usage_id) where usage_id is not null;

-- The journal is append-only, for the service role too.
revoke all on public.ai_token_ledger from anon, authenticated, service_role;
grant select on public.ai_token_ledger to authenticated;
grant select, insert on public.ai_token_ledger to service_role;
alter table public.ai_token_ledger enable row level security;

drop policy if exists "Admins can view their organization's ledger" on public.ai_token_ledger;
create policy "Admins can view their organization's ledger"
  on public.ai_token_ledger for select to authenticated
  using (organization_id in (
    select m.organization_id from ai_tokens_internal.memberships() m where m.role in ('owner', 'admin')));
drop policy if exists "Service role reads and appends the ledger" on public.ai_token_ledger;
create policy "Service role reads and appends the ledger"
  on public.ai_token_ledger for all to service_role using (true) with check (true);

-- A token type renamed in the catalog (ai_tokens follows by its foreign key's ON UPDATE
-- CASCADE) is renamed in the journal too, so that balance = sum(delta) still holds.
create or replace function ai_tokens_internal.rename_ledger_token_type()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  update public.ai_token_ledger l set token_type = new.token_type where l.token_type = old.token_type;
  return null;
end
$$;
revoke all on function ai_tokens_internal.rename_ledger_token_type() from public, anon, authenticated;
create or replace trigger ai_token_types_rename_in_ledger
  after update of token_type on public.ai_token_types
  for each row when (new.token_type is distinct from old.token_type)
  execute function ai_tokens_internal.rename_ledger_token_type();

do $$
begin
  create type public.ai_token_ledger_violation as (
    organization_id uuid,
    token_type text,
    violation text,
    expected bigint,
    actual bigint,
    details jsonb
  );
exception when duplicate_object then
  null;
end
$$;

-- Journal one change of ai_tokens.balance, named by journal_as() or an 'adjustment'.
-- A spending decrease that crosses an alert line records the alert here, in the
-- transaction that crosses it; the unique index keeps it once per period. The lines
-- are tested in plain code first: a spend that crosses none inserts nothing more.
create or replace function ai_tokens_internal.journal_token_balance()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  named text := current_setting('tokens.change', true);
  change jsonb;
  change_kind text := 'adjustment';
  ledger_id bigint;
  crossed text[];
begin
  if named <> '' then
    change := named::jsonb;
    change_kind := coalesce(change ->> 'kind', 'adjustment');
  end if;
  if tg_op = 'DELETE' then
    -- A row deleted by hand leaves its journal at zero.
    insert into public.ai_token_ledger (organization_id, token_type, kind, delta, balance_after, reason, actor)
    values (old.organization_id, old.token_type, 'adjustment', -old.balance, 0,
            coalesce(change ->> 'reason', 'token row deleted'), (select auth.uid()));
    return null;
  end if;

  insert into public.ai_token_ledger
    (organization_id, token_type, kind, delta, balance_after, usage_id, grant_id, reservation_id,
     external_id, reason, actor)
  values
    (new.organization_id, new.token_type, change_kind,
     new.balance - (case when tg_op = 'UPDATE' then old.balance else 0 end), new.balance,
     (change ->> 'usage_id')::uuid, (change ->> 'grant_id')::uuid, (change ->> 'reservation_id')::uuid,
     change ->> 'external_id', change ->> 'reason', (select auth.uid()))
  returning id into ledger_id;

  if tg_op = 'UPDATE' and new.balance < old.balance and new.total_allocated > 0 then
    if (new.balance - new.purchased_balance)::bigint * 5 < new.total_allocated
       and not (old.total_allocated > 0 and (old.balance - old.purchased_balance)::bigint * 5 < old.total_allocated) then
      crossed := crossed || 'usage_80_percent'::text;
    end if;
    if new.balance::bigint * 5 < new.total_allocated
       and not (old.total_allocated > 0 and old.balance::bigint * 5 < old.total_allocated) then
      crossed := crossed || 'balance_below_20_percent'::text;
    end if;
  end if;
  if tg_op = 'UPDATE' and new.balance = 0 and old.balance > 0 then
    crossed := crossed || 'balance_exhausted'::text;
  end if;
  if crossed is not null then
    insert into public.ai_token_alerts (organization_id, token_type, kind, reason, period, details)
    select new.organization_id, new.token_type, k.kind, change_kind, new.period_started_at,
           jsonb_build_object('balance', new.balance, 'allocated', new.total_allocated,
                              'purchased_balance', new.purchased_balance,
                              'used', greatest(new.total_allocated - (new.balance - new.purchased_balance), 0),
                              'ledger_id', ledger_id)
    from unnest(crossed) with ordinality as k (kind, n)
    order by k.n
    on conflict (organization_id, token_type, kind, period) where kind <> 'refused' do nothing;
  end if;
  return null;
end
$$;
revoke all on function ai_tokens_internal.journal_token_balance() from public, anon, authenticated;

create or replace trigger ai_tokens_journal_insert
  after insert on public.ai_tokens
  for each row when (new.balance <> 0)
  execute function ai_tokens_internal.journal_token_balance();
create or replace trigger ai_tokens_journal_update
  after update on public.ai_tokens
  for each row when (new.balance is distinct from old.balance)
  execute function ai_tokens_internal.journal_token_balance();
create or replace trigger ai_tokens_journal_delete
  after delete on public.ai_tokens
  for each row when (old.balance <> 0)
  execute function ai_tokens_internal.journal_token_balance();

-- verify_token_ledger: every violation of the bookkeeping invariants, for one
-- organization or all; no rows when all is well. Checks, per (organization, token
-- type): balance = sum of the journal; each journal row's balance_after = running sum;
-- purchased_balance = sum of grants' remaining; reserved = sum of active holds; and per
-- usage-log row: its journal rows charge exactly tokens_deducted (and refund it once
-- when refunded); settle_after no later than what is due first; the daily usage rollup
-- equal to the log. Usage rows older than the first journal row of their type predate
-- the ledger and are not checked. Service role only.
create or replace function public.verify_token_ledger(organization_id uuid default null)
returns setof public.ai_token_ledger_violation
language plpgsql
stable
security invoker
set search_path = ''
as $$
begin
  perform ai_tokens_internal.require_service_role('verify_token_ledger');

  return query
  with tokens as (
    select t.* from public.ai_tokens t
    where verify_token_ledger.organization_id is null or t.organization_id = verify_token_ledger.organization_id
  ),
  journal as (
    select l.* from public.ai_token_ledger l
    where verify_token_ledger.organization_id is null or l.organization_id = verify_token_ledger.organization_id
  ),
  sums as (
    select j.organization_id, j.token_type, sum(j.delta)::bigint as total, min(j.created_at) as started_at
    from journal j group by j.organization_id, j.token_type
  )
  select coalesce(t.organization_id, s.organization_id), coalesce(t.token_type, s.token_type),
         'balance_mismatch'::text, coalesce(s.total, 0), coalesce(t.balance, 0)::bigint,
         jsonb_build_object('message', 'balance differs from the sum of its journal')
  from tokens t
  full join sums s on s.organization_id = t.organization_id and s.token_type = t.token_type
  where coalesce(t.balance, 0) <> coalesce(s.total, 0)

  union all
  select r.organization_id, r.token_type, 'running_balance_mismatch'::text, 0::bigint, count(*)::bigint,
         jsonb_build_object('first_ledger_id', min(r.id),
                            'message', 'journal rows whose balance_after is not the running sum')
  from (
    select j.id, j.organization_id, j.token_type, j.balance_after,
           sum(j.delta) over (partition by j.organization_id, j.token_type order by j.id) as running
    from journal j
  ) r
  where r.running <> r.balance_after
  group by r.organization_id, r.token_type

  union all
  select t.organization_id, t.token_type, 'purchased_mismatch'::text,
         coalesce(g.total, 0), t.purchased_balance::bigint,
         jsonb_build_object('message', 'purchased_balance differs from the sum of the grants'' remaining')
  from tokens t
  left join (
    select g.organization_id, g.token_type, sum(g.remaining)::bigint as total
    from public.ai_token_grants g group by g.organization_id, g.token_type
  ) g on g.organization_id = t.organization_id and g.token_type = t.token_type
  where t.purchased_balance <> coalesce(g.total, 0)

  union all
  select t.organization_id, t.token_type, 'reserved_mismatch'::text,
         coalesce(h.total, 0), t.reserved::bigint,
         jsonb_build_object('message', 'reserved differs from the sum of active holds')
  from tokens t
  left join (
    select r.organization_id, r.token_type, sum(r.held)::bigint as total
    from public.ai_token_reservations r where r.status = 'active'
    group by r.organization_id, r.token_type
  ) h on h.organization_id = t.organization_id and h.token_type = t.token_type
  where t.reserved <> coalesce(h.total, 0)

  union all
  select u.organization_id, u.token_type, 'usage_journal_mismatch'::text,
         u.tokens_deducted::bigint, coalesce(c.charged, 0),
         jsonb_build_object('usage_id', u.id, 'message', 'the journal does not charge this usage row exactly')
  from public.ai_token_usage_log u
  join sums s on s.organization_id = u.organization_id and s.token_type = u.token_type
  left join (
    select j.usage_id, -sum(j.delta)::bigint as charged
    from journal j where j.kind in ('deduction', 'reservation_capture') group by j.usage_id
  ) c on c.usage_id = u.id
  where (verify_token_ledger.organization_id is null or u.organization_id = verify_token_ledger.organization_id)
    and u.created_at >= s.started_at
    and coalesce(c.charged, 0) <> u.tokens_deducted

  union all
  select u.organization_id, u.token_type, 'refund_journal_mismatch'::text,
         case when u.refunded_at is null then 0 else u.tokens_deducted end::bigint, f.refunded,
         jsonb_build_object('usage_id', u.id, 'message', 'the journal does not refund this usage row exactly once')
  from public.ai_token_usage_log u
  join (
    select j.usage_id, sum(j.delta)::bigint as refunded
    from journal j where j.kind = 'refund' group by j.usage_id
  ) f on f.usage_id = u.id
  where f.refunded <> case when u.refunded_at is null then 0 else u.tokens_deducted end

  union all
  select u.organization_id, u.token_type, 'refund_journal_mismatch'::text,
         u.tokens_deducted::bigint, 0::bigint,
         jsonb_build_object('usage_id', u.id, 'message', 'the journal does not refund this usage row exactly once')
  from public.ai_token_usage_log u
  where u.refunded_at is not null
    and (verify_token_ledger.organization_id is null or u.organization_id = verify_token_ledger.organization_id)
    and not exists (select 1 from journal j where j.kind = 'refund' and j.usage_id = u.id)

  union all
  select t.organization_id, t.token_type, 'settle_after_late'::text, 0::bigint, 0::bigint,
         jsonb_build_object('settle_after', t.settle_after, 'due', n.due,
                            'message', 'settle_after is later than the first moment maintenance is due')
  from tokens t
  cross join lateral (select ai_tokens_internal.next_settlement(t.organization_id, t.token_type, t.refresh_date) as due) n
  where t.settle_after > n.due

  union all
  select coalesce(l.organization_id, d.organization_id), null::text, 'usage_rollup_mismatch'::text,
         coalesce(l.tokens, 0), coalesce(d.tokens, 0),
         jsonb_build_object('day', coalesce(l.day, d.day), 'user_id', coalesce(l.user_id, d.user_id),
                            'feature', coalesce(l.feature, d.feature), 'uses', coalesce(l.uses, 0),
                            'rolled_up_uses', coalesce(d.uses, 0),
                            'message', 'ai_token_usage_daily differs from the usage log')
  from (
    select u.organization_id, (u.created_at at time zone 'UTC')::date as day, u.user_id,
           coalesce(u.user_id, '00000000-0000-0000-0000-000000000000'::uuid) as user_key, u.feature_used as feature,
           count(*)::bigint as uses, sum(u.tokens_deducted)::bigint as tokens
    from public.ai_token_usage_log u
    where verify_token_ledger.organization_id is null or u.organization_id = verify_token_ledger.organization_id
    group by 1, 2, 3, 4, 5
  ) l
  full join (
    select r.organization_id, r.day, r.user_id,
           coalesce(r.user_id, '00000000-0000-0000-0000-000000000000'::uuid) as user_key, r.feature, r.uses, r.tokens
    from public.ai_token_usage_daily r
    where (verify_token_ledger.organization_id is null or r.organization_id = verify_token_ledger.organization_id)
      and (r.uses <> 0 or r.tokens <> 0)
  ) d on d.organization_id = l.organization_id and d.day = l.day and d.user_key = l.user_key and d.feature = l.feature
  where l.organization_id is null or d.organization_id is null or l.uses <> d.uses or l.tokens <> d.tokens;
end
$$;
revoke all on function public.verify_token_ledger(uuid) from public, anon, authenticated;
grant execute on function public.verify_token_ledger(uuid) to service_role;
comment on function public.verify_token_ledger(uuid) is 'tokens-client: every violation of balance = sum of the journal (service role)';

-- ============================================================ 07_settlement.sql
-- tokens-client · 07 settlement: the monthly refresh and lazy expiry.
--
-- Lazy maintenance (the monthly refresh, expired grants, expired holds) runs under the
-- ai_tokens row lock in settle_tokens, re-checking what is due after the lock is taken,
-- so it happens exactly once however many calls race. Every function locks the
-- ai_tokens row before it touches that row's grants or reservations. The daily pg_cron
-- job (18_schedule.sql) does the same for rows nobody touches; a stopped scheduler never
-- blocks anyone.
set check_function_bodies = off;

create table if not exists public.ai_token_refresh_failures (
  id bigint generated always as identity primary key,
  organization_id uuid not null,
  token_type text not null,
  refresh_date timestamptz,
  error_code text not null,
  error_message text not null,
  failed_at timestamptz not null default now()
);
comment on table public.ai_token_refresh_failures is 'Rows refresh_due_tokens() could not settle, with the error. Nothing is swallowed.';
create index if not exists ai_token_refresh_failures_organization_idx on public.ai_token_refresh_failures (organization_id, failed_at desc);

revoke all on public.ai_token_refresh_failures from anon, authenticated;
grant all on public.ai_token_refresh_failures to service_role;
alter table public.ai_token_refresh_failures enable row level security;
drop policy if exists "Service role manages refresh failures" on public.ai_token_refresh_failures;
create policy "Service role manages refresh failures"
  on public.ai_token_refresh_failures for all to service_role using (true) with check (true);

-- The refresh boundary that has passed and the next refresh date: the previous refresh
-- date advanced in whole months until it lies in the future (anchored to the previous
-- date, so an overdue row catches up in one step).
create or replace function ai_tokens_internal.next_refresh(previous timestamptz)
returns table (period_start timestamptz, next_refresh_date timestamptz)
language sql
stable
set search_path = ''
as $$
  select next_refresh.previous + make_interval(months => k.k - 1),
         next_refresh.previous + make_interval(months => k.k)
  from generate_series(
         greatest(1, ((extract(year from now()) - extract(year from next_refresh.previous)) * 12
                      + extract(month from now()) - extract(month from next_refresh.previous))::integer - 1),
         greatest(1, ((extract(year from now()) - extract(year from next_refresh.previous)) * 12
                      + extract(month from now()) - extract(month from next_refresh.previous))::integer + 2)
       ) as k (k)
  where next_refresh.previous + make_interval(months => k.k) > now()
  order by k.k
  limit 1
$$;
revoke all on function ai_tokens_internal.next_refresh(timestamptz) from public, anon, authenticated;
grant execute on function ai_tokens_internal.next_refresh(timestamptz) to service_role;

-- The first moment lazy maintenance is due for a row: its refresh date, the earliest
-- expiry of an active hold, or of a grant with tokens left ('infinity' when nothing ever
-- is). settle_tokens stores it in ai_tokens.settle_after; verify_token_ledger checks it.
create or replace function ai_tokens_internal.next_settlement(organization_id uuid, token_type text, refresh_date timestamptz)
returns timestamptz
language plpgsql
stable
set search_path = ''
as $$
begin
  return least(
    coalesce(next_settlement.refresh_date, 'infinity'),
    coalesce((select min(r.expires_at) from public.ai_token_reservations r
              where r.organization_id = next_settlement.organization_id
                and r.token_type = next_settlement.token_type and r.status = 'active'), 'infinity'),
    coalesce((select min(g.expires_at) from public.ai_token_grants g
              where g.organization_id = next_settlement.organization_id
                and g.token_type = next_settlement.token_type and g.remaining > 0), 'infinity'));
end
$$;
revoke all on function ai_tokens_internal.next_settlement(uuid, text, timestamptz) from public, anon, authenticated;
grant execute on function ai_tokens_internal.next_settlement(uuid, text, timestamptz) to service_role;

-- Rows from before settle_after existed (05_balances.sql added them at -infinity).
update public.ai_tokens t
set settle_after = ai_tokens_internal.next_settlement(t.organization_id, t.token_type, t.refresh_date)
where t.settle_after = '-infinity';

-- Bring settle_after forward to `due` (a hold or a grant that expires then): the
-- triggers of ai_token_reservations and ai_token_grants call it for every writer, so
-- an expiry set by hand is noticed too.
create or replace function ai_tokens_internal.settle_by()
returns trigger
language plpgsql
set search_path = ''
as $$
declare
  due timestamptz;
begin
  -- Lock the row first (our spending functions hold it already): a settle_tokens racing
  -- this writer then either ran before (and this compares with what it stored) or runs
  -- after this transaction commits (and sees this expiry).
  select t.settle_after into due from public.ai_tokens t
  where t.organization_id = new.organization_id and t.token_type = new.token_type
  for update;
  if due > new.expires_at then
    update public.ai_tokens t set settle_after = new.expires_at
    where t.organization_id = new.organization_id and t.token_type = new.token_type;
  end if;
  return null;
end
$$;
revoke all on function ai_tokens_internal.settle_by() from public, anon, authenticated;

-- Lock an (organization, token type) row and bring it up to date: expired holds stop
-- counting, expired grants lose what is left (journaled 'expiry', one row per grant),
-- and a passed refresh date resets the period allowance to the plan's allocation
-- (journaled 'refresh'), keeping purchased tokens. Everything is re-checked under the
-- row lock, so racing callers settle a row exactly once. Returns the locked row (null
-- when the organization has no row for the type).
create or replace function ai_tokens_internal.settle_tokens(organization_id uuid, token_type text)
returns public.ai_tokens
language plpgsql
volatile
set search_path = ''
as $$
declare
  account public.ai_tokens;
  swept bigint;
  expired record;
  allocation integer;
  boundary record;
  next_due timestamptz;
begin
  select * into account from public.ai_tokens t
  where t.organization_id = settle_tokens.organization_id and t.token_type = settle_tokens.token_type
  for update;
  if not found then
    return null;
  end if;
  if account.settle_after > now() then
    return account;  -- nothing is due before settle_after
  end if;

  with swept_holds as (
    update public.ai_token_reservations r
    set status = 'expired', settled_at = now()
    where r.organization_id = account.organization_id and r.token_type = account.token_type
      and r.status = 'active' and r.expires_at <= now()
    returning r.held
  )
  select coalesce(sum(s.held), 0) into swept from swept_holds s;
  if swept > 0 then
    update public.ai_tokens t set reserved = t.reserved - swept, updated_at = now()
    where t.id = account.id
    returning * into account;
  end if;

  for expired in
    update public.ai_token_grants g
    set expired_amount = g.remaining, remaining = 0, expired_at = now()
    where g.organization_id = account.organization_id and g.token_type = account.token_type
      and g.remaining > 0 and g.expires_at <= now()
    returning g.id, g.expired_amount
  loop
    perform ai_tokens_internal.journal_as(jsonb_build_object(
      'kind', 'expiry', 'grant_id', expired.id, 'reason', 'purchased tokens expired'));
    update public.ai_tokens t
    set balance = t.balance - expired.expired_amount,
        purchased_balance = t.purchased_balance - expired.expired_amount,
        updated_at = now()
    where t.id = account.id
    returning * into account;
    perform ai_tokens_internal.journal_as(null);
  end loop;

  if account.refresh_date is not null and account.refresh_date <= now() then
    allocation := ai_tokens_internal.plan_allocation(
      ai_tokens_internal.organization_plan(account.organization_id), account.token_type);
    select * into boundary from ai_tokens_internal.next_refresh(account.refresh_date);
    perform ai_tokens_internal.journal_as(jsonb_build_object(
      'kind', 'refresh', 'reason', format('period starting %s', boundary.period_start)));
    -- Debt from overruns comes out of the new period's allowance (never the purchased part).
    update public.ai_tokens t
    set balance = least(greatest(coalesce(allocation, 0) - t.debt, 0) + t.purchased_balance,
                        ai_tokens_internal.balance_ceiling()),
        debt = greatest(t.debt - coalesce(allocation, 0), 0),
        total_allocated = coalesce(allocation, 0),
        period_started_at = boundary.period_start,
        refresh_date = boundary.next_refresh_date,
        updated_at = now()
    where t.id = account.id
    returning * into account;
    perform ai_tokens_internal.journal_as(null);
  end if;

  next_due := ai_tokens_internal.next_settlement(account.organization_id, account.token_type, account.refresh_date);
  if next_due is distinct from account.settle_after then
    update public.ai_tokens t set settle_after = next_due where t.id = account.id
    returning * into account;
  end if;
  return account;
end
$$;
revoke all on function ai_tokens_internal.settle_tokens(uuid, text) from public, anon, authenticated;
grant execute on function ai_tokens_internal.settle_tokens(uuid, text) to service_role;

-- The row as ai_tokens_internal.settle_tokens would leave it, computed without writing: expired
-- holds no longer reserved, expired grants gone, and a passed refresh date applied.
-- A pgTAP test keeps the two in step.
create or replace function ai_tokens_internal.settled_view(account public.ai_tokens)
returns public.ai_tokens
language plpgsql
stable
set search_path = ''
as $$
declare
  settled public.ai_tokens := settled_view.account;
  expired_holds bigint;
  expired_grants bigint;
  allocation integer;
  boundary record;
begin
  if settled.id is null then
    return null;
  end if;
  if settled.settle_after > now() then
    return settled;  -- nothing is due yet
  end if;
  select coalesce(sum(r.held), 0) into expired_holds
  from public.ai_token_reservations r
  where r.organization_id = settled.organization_id and r.token_type = settled.token_type
    and r.status = 'active' and r.expires_at <= now();
  select coalesce(sum(g.remaining), 0) into expired_grants
  from public.ai_token_grants g
  where g.organization_id = settled.organization_id and g.token_type = settled.token_type
    and g.remaining > 0 and g.expires_at <= now();
  settled.reserved := settled.reserved - expired_holds;
  settled.balance := settled.balance - expired_grants;
  settled.purchased_balance := settled.purchased_balance - expired_grants;
  if settled.refresh_date is not null and settled.refresh_date <= now() then
    allocation := ai_tokens_internal.plan_allocation(
      ai_tokens_internal.organization_plan(settled.organization_id), settled.token_type);
    select * into boundary from ai_tokens_internal.next_refresh(settled.refresh_date);
    settled.balance := least(greatest(coalesce(allocation, 0) - settled.debt, 0) + settled.purchased_balance,
                             ai_tokens_internal.balance_ceiling());
    settled.debt := greatest(settled.debt - coalesce(allocation, 0), 0);
    settled.total_allocated := coalesce(allocation, 0);
    settled.period_peak_allocation := coalesce(allocation, 0);
    settled.period_started_at := boundary.period_start;
    settled.refresh_date := boundary.next_refresh_date;
  end if;
  return settled;
end
$$;
revoke all on function ai_tokens_internal.settled_view(public.ai_tokens) from public, anon, authenticated;
grant execute on function ai_tokens_internal.settled_view(public.ai_tokens) to service_role;

-- The row brought up to date: settled for real (under the row lock) when the
-- transaction may write, projected by settled_view in a read-only one.
create or replace function ai_tokens_internal.settled_tokens(account public.ai_tokens)
returns public.ai_tokens
language plpgsql
volatile
set search_path = ''
as $$
begin
  if settled_tokens.account.id is null or settled_tokens.account.settle_after > now() then
    return settled_tokens.account;
  end if;
  if current_setting('transaction_read_only') = 'on' then
    return ai_tokens_internal.settled_view(settled_tokens.account);
  end if;
  return ai_tokens_internal.settle_tokens(settled_tokens.account.organization_id, settled_tokens.account.token_type);
end
$$;
revoke all on function ai_tokens_internal.settled_tokens(public.ai_tokens) from public, anon, authenticated;
grant execute on function ai_tokens_internal.settled_tokens(public.ai_tokens) to service_role;

-- refresh_due_tokens: settle every row with something due (refresh date passed, grants
-- expired, holds expired), each in its own subtransaction; a row that fails is
-- recorded in ai_token_refresh_failures with the error and the others go on. Run
-- daily by pg_cron; lazy settlement in the spending functions does the same work, so
-- a stopped scheduler never blocks anyone. Service role only.
create or replace function public.refresh_due_tokens()
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  due record;
  settled integer := 0;
  failed integer := 0;
  error_code text;
  error_message text;
begin
  perform ai_tokens_internal.require_service_role('refresh_due_tokens');
  for due in
    select t.organization_id, t.token_type, t.refresh_date
    from public.ai_tokens t
    where t.settle_after <= now()
    order by t.organization_id, t.token_type
  loop
    begin
      perform ai_tokens_internal.settle_tokens(due.organization_id, due.token_type);
      settled := settled + 1;
    exception when others then
      get stacked diagnostics error_code = returned_sqlstate, error_message = message_text;
      insert into public.ai_token_refresh_failures (organization_id, token_type, refresh_date, error_code, error_message)
      values (due.organization_id, due.token_type, due.refresh_date, error_code, error_message);
      failed := failed + 1;
    end;
  end loop;
  -- Rate-limit windows that ended a day ago or more (the longest window is a day). A
  -- spend locks its window row before its balance row, and this job holds the balance
  -- rows it settled: rows a spend holds are skipped (never waited for), so the two
  -- cannot deadlock.
  delete from public.ai_rate_limit_windows w
  where (w.user_id, w.organization_id, w.rate_limit_id) in (
    select o.user_id, o.organization_id, o.rate_limit_id from public.ai_rate_limit_windows o
    where o.window_started_at < now() - interval '2 days'
    for update skip locked);
  return jsonb_build_object('settled', settled, 'failed', failed);
end
$$;
revoke all on function public.refresh_due_tokens() from public, anon, authenticated;
grant execute on function public.refresh_due_tokens() to service_role;
comment on function public.refresh_due_tokens() is 'tokens-client: settle every due refresh, expired grant and hold (service role, daily)';

-- ============================================================ 08_purchases.sql
-- tokens-client · 08 purchases: purchased tokens (top-ups, token packs).
--
-- They survive the monthly refresh, are spent after the period allowance (earliest
-- expiry first, then oldest) and, given expires_at, expire then. The sum of remaining
-- per (organization, token type) is ai_tokens.purchased_balance.
set check_function_bodies = off;

create table if not exists public.ai_token_grants (
  id uuid primary key default gen_random_uuid(),
  organization_id uuid not null,
  token_type text not null references public.ai_token_types (token_type) on update cascade,
  amount integer not null check (amount between 1 and 1000000000),
  remaining integer not null check (remaining >= 0),
  expires_at timestamptz,
  expired_at timestamptz,
  expired_amount integer not null default 0 check (expired_amount >= 0),
  reason text check (length(reason) <= 500),
  external_id text unique check (length(external_id) between 1 and 200),
  granted_by uuid,
  created_at timestamptz not null default now(),
  constraint ai_token_grants_remaining_within_amount check (remaining <= amount)
);
comment on table public.ai_token_grants is 'Purchased tokens (top-ups). remaining is what is left to spend; the sum of remaining per (organization, token type) is ai_tokens.purchased_balance.';
create index if not exists ai_token_grants_spendable_idx on public.ai_token_grants (organization_id, token_type, expires_at)
  where remaining > 0;
create index if not exists ai_token_grants_token_type_idx on public.ai_token_grants (token_type);

revoke all on public.ai_token_grants from anon, authenticated;
grant select on public.ai_token_grants to authenticated;
grant all on public.ai_token_grants to service_role;
alter table public.ai_token_grants enable row level security;
drop policy if exists "Admins can view their organization's grants" on public.ai_token_grants;
create policy "Admins can view their organization's grants"
  on public.ai_token_grants for select to authenticated
  using (organization_id in (
    select m.organization_id from ai_tokens_internal.memberships() m where m.role in ('owner', 'admin')));
drop policy if exists "Service role manages grants" on public.ai_token_grants;
create policy "Service role manages grants"
  on public.ai_token_grants for all to service_role using (true) with check (true);

-- A grant with an expiry brings its row's settle_after forward (07_settlement.sql).
create or replace trigger ai_token_grants_settle_by_insert
  after insert on public.ai_token_grants
  for each row when (new.expires_at is not null and new.remaining > 0)
  execute function ai_tokens_internal.settle_by();
create or replace trigger ai_token_grants_settle_by_update
  after update on public.ai_token_grants
  for each row
  when (new.expires_at is not null and new.remaining > 0
        and (new.expires_at is distinct from old.expires_at or old.remaining = 0))
  execute function ai_tokens_internal.settle_by();

-- Spend purchased tokens from the grants, earliest expiry first (then oldest), until
-- their remaining amounts add up to target_purchased, the row's new purchased_balance.
-- Called with the ai_tokens row locked, after the usage row exists.
create or replace function ai_tokens_internal.consume_grants(organization_id uuid, token_type text, target_purchased integer, usage_id uuid)
returns void
language sql
volatile
set search_path = ''
as $$
  with spendable as (
    select g.id, g.remaining,
           sum(g.remaining) over (order by g.expires_at nulls last, g.created_at, g.id) as running
    from public.ai_token_grants g
    where g.organization_id = consume_grants.organization_id
      and g.token_type = consume_grants.token_type
      and g.remaining > 0
  ),
  to_spend as (
    select coalesce(sum(s.remaining), 0) - consume_grants.target_purchased as amount from spendable s
  ),
  taken as (
    select s.id, least(s.remaining, t.amount - (s.running - s.remaining))::integer as amount
    from spendable s cross join to_spend t
    where s.running - s.remaining < t.amount
  ),
  spent as (
    update public.ai_token_grants g
    set remaining = g.remaining - taken.amount
    from taken
    where g.id = taken.id
    returning g.id, taken.amount
  )
  insert into public.ai_token_grant_usage (usage_id, grant_id, amount)
  select consume_grants.usage_id, spent.id, spent.amount from spent
$$;
revoke all on function ai_tokens_internal.consume_grants(uuid, text, integer, uuid) from public, anon, authenticated;

-- grant_tokens: add purchased tokens (a top-up) to an organization, journaled 'grant'.
-- They survive the monthly refresh, are spent after the period allowance (earliest
-- expiry first) and, given expires_at, expire then. Idempotent on external_id (e.g. a
-- payment id): a retry returns the first grant; the same external_id with other
-- arguments is refused (409). Service role only.
create or replace function public.grant_tokens(
  organization_id uuid,
  token_type text,
  amount integer,
  expires_at timestamptz default null,
  reason text default null,
  external_id text default null
)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  existing public.ai_token_grants;
  granted public.ai_token_grants;
  account public.ai_tokens;
begin
  perform ai_tokens_internal.require_service_role('grant_tokens');
  perform ai_tokens_internal.require_argument(grant_tokens.organization_id is not null, 'organization_id');
  if grant_tokens.amount is null or grant_tokens.amount < 1 or grant_tokens.amount > 1000000000 then
    perform ai_tokens_internal.refuse(400, 'invalid_amount', 'amount must be between 1 and 1000000000',
      jsonb_build_object('field', 'amount', 'amount', grant_tokens.amount, 'min', 1, 'max', 1000000000));
  end if;
  if grant_tokens.expires_at is not null and grant_tokens.expires_at <= now() then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'expires_at must be in the future',
      jsonb_build_object('field', 'expires_at', 'expires_at', grant_tokens.expires_at));
  end if;
  if grant_tokens.reason is not null and length(grant_tokens.reason) > 500 then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'reason must be at most 500 characters',
      jsonb_build_object('field', 'reason'));
  end if;
  if grant_tokens.external_id is not null
     and (length(grant_tokens.external_id) = 0 or length(grant_tokens.external_id) > 200) then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'external_id must be 1 to 200 characters',
      jsonb_build_object('field', 'external_id'));
  end if;
  if not exists (select 1 from public.ai_token_types tt where tt.token_type = grant_tokens.token_type) then
    perform ai_tokens_internal.refuse(404, 'unknown_token_type', 'Unknown token type',
      jsonb_build_object('token_type', left(grant_tokens.token_type, 100)));
  end if;
  perform ai_tokens_internal.require_organization(grant_tokens.organization_id);

  if grant_tokens.external_id is not null then
    perform ai_tokens_internal.lock('grant', grant_tokens.external_id);
    select * into existing from public.ai_token_grants g where g.external_id = grant_tokens.external_id;
    if found then
      if existing.organization_id <> grant_tokens.organization_id
         or existing.token_type <> grant_tokens.token_type
         or existing.amount <> grant_tokens.amount
         or existing.expires_at is distinct from grant_tokens.expires_at then
        perform ai_tokens_internal.refuse(409, 'idempotency_conflict',
          'external_id was already used for another grant',
          jsonb_build_object('external_id', grant_tokens.external_id, 'grant_id', existing.id));
      end if;
      select * into account from public.ai_tokens t
      where t.organization_id = existing.organization_id and t.token_type = existing.token_type;
      return jsonb_build_object(
        'grant_id', existing.id, 'organization_id', existing.organization_id,
        'token_type', existing.token_type, 'amount', existing.amount, 'remaining', existing.remaining,
        'expires_at', existing.expires_at, 'reason', existing.reason, 'external_id', existing.external_id,
        'balance', account.balance, 'purchased_balance', account.purchased_balance, 'replayed', true);
    end if;
  end if;

  account := ai_tokens_internal.open_account(grant_tokens.organization_id, grant_tokens.token_type);
  if account.balance::bigint + grant_tokens.amount > ai_tokens_internal.balance_ceiling() then
    perform ai_tokens_internal.refuse(400, 'invalid_amount', 'the balance would exceed its maximum',
      jsonb_build_object('field', 'amount', 'amount', grant_tokens.amount, 'balance', account.balance,
                         'max_balance', ai_tokens_internal.balance_ceiling()));
  end if;

  insert into public.ai_token_grants
    (organization_id, token_type, amount, remaining, expires_at, reason, external_id, granted_by)
  values
    (grant_tokens.organization_id, grant_tokens.token_type, grant_tokens.amount, grant_tokens.amount,
     grant_tokens.expires_at, grant_tokens.reason, grant_tokens.external_id, (select auth.uid()))
  returning * into granted;

  perform ai_tokens_internal.journal_as(jsonb_build_object(
    'kind', 'grant', 'grant_id', granted.id, 'external_id', granted.external_id,
    'reason', granted.reason));
  update public.ai_tokens t
  set balance = t.balance + granted.amount,
      purchased_balance = t.purchased_balance + granted.amount,
      updated_at = now()
  where t.id = account.id
  returning * into account;
  perform ai_tokens_internal.journal_as(null);

  return jsonb_build_object(
    'grant_id', granted.id, 'organization_id', granted.organization_id,
    'token_type', granted.token_type, 'amount', granted.amount, 'remaining', granted.remaining,
    'expires_at', granted.expires_at, 'reason', granted.reason, 'external_id', granted.external_id,
    'balance', account.balance, 'purchased_balance', account.purchased_balance, 'replayed', false);
end
$$;
revoke all on function public.grant_tokens(uuid, text, integer, timestamptz, text, text) from public, anon, authenticated;
grant execute on function public.grant_tokens(uuid, text, integer, timestamptz, text, text) to service_role;
comment on function public.grant_tokens(uuid, text, integer, timestamptz, text, text) is 'tokens-client: add purchased tokens, idempotent on external_id (service role)';

-- ============================================================ 09_reservations.sql
-- tokens-client · 09 reservations: holds for AI calls whose cost is known afterwards.
--
-- reserve_tokens holds an estimate (available = balance - reserved); commit_reservation
-- charges the actual and returns the rest; release_reservation returns everything; a
-- hold past its expiry stops counting without a scheduler (settlement sweeps it).
set check_function_bodies = off;

create table if not exists public.ai_token_reservations (
  id uuid primary key default gen_random_uuid(),
  organization_id uuid not null,
  token_type text not null references public.ai_token_types (token_type) on update cascade,
  feature text not null,
  user_id uuid,
  estimate integer not null check (estimate between 1 and 1000000000),
  held integer not null check (held >= 0 and held <= estimate),
  actual integer check (actual >= 0),
  charged integer check (charged >= 0),
  status text not null default 'active' check (status in ('active', 'committed', 'released', 'expired')),
  enforcement text not null check (enforcement in ('enforce', 'monitor', 'off')),
  request_id text check (length(request_id) between 1 and 200),
  usage_id uuid,
  expires_at timestamptz not null,
  settled_at timestamptz,
  created_at timestamptz not null default now()
);
comment on table public.ai_token_reservations is 'Holds for AI calls whose cost is known afterwards. held counts in ai_tokens.reserved while status is active and expires_at is in the future.';
create unique index if not exists ai_token_reservations_request_id_key
  on public.ai_token_reservations (organization_id, request_id) where request_id is not null;
create index if not exists ai_token_reservations_active_idx
  on public.ai_token_reservations (organization_id, token_type, expires_at) where status = 'active';
create index if not exists ai_token_reservations_user_date_idx on public.ai_token_reservations (user_id, created_at desc);
create index if not exists ai_token_reservations_token_type_idx on public.ai_token_reservations (token_type);

revoke all on public.ai_token_reservations from anon, authenticated;
grant select on public.ai_token_reservations to authenticated;
grant all on public.ai_token_reservations to service_role;
alter table public.ai_token_reservations enable row level security;
drop policy if exists "Admins view the organization's holds; members their own"
  on public.ai_token_reservations;
create policy "Admins view the organization's holds; members their own"
  on public.ai_token_reservations for select to authenticated
  using (
    organization_id in (
      select m.organization_id from ai_tokens_internal.memberships() m where m.role in ('owner', 'admin'))
    or (
      user_id = (select auth.uid())
      and organization_id in (select m.organization_id from ai_tokens_internal.memberships() m)
    )
  );
drop policy if exists "Service role manages reservations" on public.ai_token_reservations;
create policy "Service role manages reservations"
  on public.ai_token_reservations for all to service_role using (true) with check (true);

-- An active hold brings its row's settle_after forward to its expiry (07_settlement.sql).
create or replace trigger ai_token_reservations_settle_by_insert
  after insert on public.ai_token_reservations
  for each row when (new.status = 'active')
  execute function ai_tokens_internal.settle_by();
create or replace trigger ai_token_reservations_settle_by_update
  after update on public.ai_token_reservations
  for each row
  when (new.status = 'active'
        and (new.expires_at is distinct from old.expires_at or old.status <> 'active'))
  execute function ai_tokens_internal.settle_by();

-- The client's view of a reservation.
create or replace function ai_tokens_internal.reservation_json(hold public.ai_token_reservations)
returns jsonb
language sql
stable
set search_path = ''
as $$
  select jsonb_build_object(
    'reservation_id', hold.id, 'organization_id', hold.organization_id, 'feature', hold.feature,
    'token_type', hold.token_type, 'user_id', hold.user_id, 'estimate', hold.estimate, 'held', hold.held,
    'status', hold.status, 'actual', hold.actual, 'tokens_deducted', hold.charged,
    'usage_id', hold.usage_id, 'request_id', hold.request_id, 'enforcement', hold.enforcement,
    'expires_at', hold.expires_at, 'settled_at', hold.settled_at, 'created_at', hold.created_at)
$$;
revoke all on function ai_tokens_internal.reservation_json(public.ai_token_reservations) from public, anon, authenticated;

-- reserve_tokens: hold `estimate` tokens for an AI call whose cost is known afterwards.
-- available = balance - reserved; the hold stops counting when committed, released or
-- when ttl_seconds pass (no scheduler needed). The same checks and refusals as
-- deduct_tokens (not in plan 403, rate limited 429, insufficient 402, returned with
-- response.status and recorded). Idempotent per organization with request_id.
create or replace function public.reserve_tokens(
  feature text,
  estimate integer,
  ttl_seconds integer default 300,
  request_id text default null,
  organization_id uuid default null
)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  spend record;
  caller uuid;
  target_organization uuid;
  mode text;
  previous public.ai_token_reservations;
  hold public.ai_token_reservations;
  account public.ai_tokens;
  refused jsonb;
  insufficient jsonb;
  context jsonb;
  held_amount integer;
  available integer;
begin
  if reserve_tokens.estimate is null or reserve_tokens.estimate < 1 or reserve_tokens.estimate > 1000000000 then
    perform ai_tokens_internal.refuse(400, 'invalid_amount', 'estimate must be between 1 and 1000000000',
      jsonb_build_object('field', 'estimate', 'estimate', reserve_tokens.estimate, 'min', 1, 'max', 1000000000));
  end if;
  if reserve_tokens.ttl_seconds is null or reserve_tokens.ttl_seconds < 1 or reserve_tokens.ttl_seconds > 3600 then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'ttl_seconds must be between 1 and 3600',
      jsonb_build_object('field', 'ttl_seconds', 'min', 1, 'max', 3600));
  end if;
  spend := ai_tokens_internal.spend_context(reserve_tokens.feature, reserve_tokens.organization_id,
                                           reserve_tokens.request_id, true);
  caller := spend.caller_id;
  target_organization := spend.org_id;
  mode := spend.enforcement;

  -- A retry is answered before pricing, like deduct_tokens: the hold exists, so a plan
  -- change or a catalog edit since then must not turn its replay into a refusal.
  if reserve_tokens.request_id is not null then
    perform ai_tokens_internal.lock('reservation', target_organization::text || '/' || reserve_tokens.request_id);
    select * into previous from public.ai_token_reservations r
    where r.organization_id = target_organization and r.request_id = reserve_tokens.request_id;
    if found then
      -- A key belongs to its caller and its payload: anything else replays nothing.
      if previous.user_id is distinct from caller then
        perform ai_tokens_internal.refuse(409, 'idempotency_conflict', 'request_id was already used by another caller',
          jsonb_build_object('request_id', reserve_tokens.request_id));
      end if;
      if previous.feature <> reserve_tokens.feature or previous.estimate <> reserve_tokens.estimate then
        perform ai_tokens_internal.refuse(409, 'idempotency_conflict', 'request_id was already used for another reservation',
          jsonb_build_object('request_id', reserve_tokens.request_id, 'reservation_id', previous.id,
                             'feature', previous.feature, 'estimate', previous.estimate));
      end if;
      select t.balance - t.reserved into available from public.ai_tokens t
      where t.organization_id = previous.organization_id and t.token_type = previous.token_type;
      return ai_tokens_internal.reservation_json(previous)
        || jsonb_build_object('replayed', true, 'available', greatest(available, 0), 'would_have_refused', null);
    end if;
  end if;

  if spend.price_type is null then
    perform ai_tokens_internal.refuse(404, 'unknown_feature', 'Unknown feature',
      jsonb_build_object('feature', left(reserve_tokens.feature, 100)));
  end if;

  context := jsonb_build_object('feature', reserve_tokens.feature, 'user_id', caller,
                                'request_id', reserve_tokens.request_id, 'estimate', reserve_tokens.estimate);
  held_amount := 0;
  if mode <> 'off' then
    refused := ai_tokens_internal.policy_refusal(caller, target_organization, reserve_tokens.feature, spend.org_plan,
                                                 spend.offered, spend.price_type, spend.rule_id, spend.rule_max,
                                                 spend.rule_window);
    if refused is not null and mode = 'enforce' then
      return ai_tokens_internal.refusal_response(refused, target_organization, spend.price_type, context);
    end if;

    update public.ai_tokens t
    set reserved = t.reserved + reserve_tokens.estimate, updated_at = now()
    where t.organization_id = target_organization
      and t.token_type = spend.price_type
      and t.balance - t.reserved >= reserve_tokens.estimate
      and t.settle_after > now()
    returning t.balance - t.reserved into available;
    if available is not null then
      held_amount := reserve_tokens.estimate;
    else
      account := ai_tokens_internal.open_account(target_organization, spend.price_type);
      held_amount := ai_tokens_internal.obtainable(account, reserve_tokens.estimate, mode);
      if held_amount < reserve_tokens.estimate then
        insufficient := ai_tokens_internal.insufficient_refusal(reserve_tokens.feature, reserve_tokens.estimate,
                                                     spend.price_type, account);
        if mode = 'enforce' then
          -- Nothing is held: the rate-limit window gets its spend back.
          if spend.rule_id is not null and refused is null then
            perform ai_tokens_internal.give_back_rate_slot(caller, target_organization, spend.rule_id);
          end if;
          return ai_tokens_internal.refusal_response(insufficient, target_organization, spend.price_type, context);
        end if;
        refused := coalesce(refused, insufficient);
      end if;
      available := greatest(coalesce(account.balance - account.reserved, 0), 0) - held_amount;
      if held_amount > 0 then
        update public.ai_tokens t
        set reserved = t.reserved + held_amount, updated_at = now()
        where t.id = account.id;
      end if;
    end if;
  end if;

  insert into public.ai_token_reservations
    (organization_id, token_type, feature, user_id, estimate, held, enforcement, request_id, expires_at)
  values
    (target_organization, spend.price_type, reserve_tokens.feature, caller, reserve_tokens.estimate, held_amount,
     mode, reserve_tokens.request_id, now() + make_interval(secs => reserve_tokens.ttl_seconds))
  returning * into hold;
  if refused is not null then
    perform ai_tokens_internal.record_refusal(refused, target_organization, spend.price_type, mode,
      context || jsonb_build_object('reservation_id', hold.id, 'held', held_amount));
  end if;

  if available is null then
    -- off mode checked nothing: report what is available all the same.
    select greatest(t.balance - t.reserved, 0) into available from public.ai_tokens t
    where t.organization_id = target_organization and t.token_type = spend.price_type;
  end if;
  return ai_tokens_internal.reservation_json(hold)
    || jsonb_build_object('replayed', false, 'available', coalesce(available, 0),
                          'would_have_refused', ai_tokens_internal.refusal_summary(refused));
end
$$;
revoke all on function public.reserve_tokens(text, integer, integer, text, uuid) from public, anon, authenticated;
grant execute on function public.reserve_tokens(text, integer, integer, text, uuid) to authenticated, service_role;
comment on function public.reserve_tokens(text, integer, integer, text, uuid) is 'tokens-client: hold an estimate for an AI call whose cost is known afterwards';

-- The reservation a commit or release acts on, after checking the caller may settle it:
-- the service role, the user who reserved it, or an owner/admin of its organization.
-- Anyone else gets 404 (non-members: the hold's existence is not revealed) or 403.
create or replace function ai_tokens_internal.reservation_for_settlement(reservation_id uuid)
returns public.ai_token_reservations
language plpgsql
stable
set search_path = ''
as $$
declare
  hold public.ai_token_reservations;
  caller_role text;
  service boolean := ai_tokens_internal.is_service_role();
  caller uuid := (select auth.uid());
begin
  if reservation_for_settlement.reservation_id is null then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'reservation_id is required',
      jsonb_build_object('field', 'reservation_id'));
  end if;
  if not service and caller is null then
    perform ai_tokens_internal.refuse(401, 'unauthenticated', 'Sign in to use AI features');
  end if;
  select * into hold from public.ai_token_reservations r where r.id = reservation_for_settlement.reservation_id;
  if found and not service then
    caller_role := ai_tokens_internal.membership_role(hold.organization_id);
  end if;
  if hold.id is null or (not service and caller_role is null) then
    perform ai_tokens_internal.refuse(404, 'reservation_not_found',
      format('Reservation (id=%s) not found', reservation_for_settlement.reservation_id),
      jsonb_build_object('reservation_id', reservation_for_settlement.reservation_id));
  end if;
  if not service and hold.user_id is distinct from caller
     and caller_role not in ('owner', 'admin') then
    perform ai_tokens_internal.refuse(403, 'not_reservation_holder',
      'Only the user who reserved the tokens or an organization admin can settle this reservation',
      jsonb_build_object('reservation_id', hold.id));
  end if;
  return hold;
end
$$;
revoke all on function ai_tokens_internal.reservation_for_settlement(uuid) from public, anon, authenticated;

-- commit_reservation: charge the actual cost of a held AI call (actual >= 0; metered
-- usage counted by the provider), return the rest of the hold, and write the usage-log
-- row (journaled 'reservation_capture'). Overruns are never free and never refused after
-- the fact: an actual above the estimate is charged from the hold plus whatever else is
-- available now (never tokens held by other reservations, never below zero), and in
-- enforce mode what could not be charged becomes debt on the row, taken from the next
-- period's allowance at the refresh; the shortfall is recorded as an 'overrun' refusal
-- alert. A hold already committed, released or expired is refused (409
-- reservation_not_active), so a retried commit never charges twice.
create or replace function public.commit_reservation(reservation_id uuid, actual integer)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  hold public.ai_token_reservations;
  account public.ai_tokens;
  charge integer;
  new_usage_id uuid;
  remaining integer;
  remaining_purchased integer;
  debt_added integer;
begin
  if commit_reservation.actual is null or commit_reservation.actual < 0
     or commit_reservation.actual > 1000000000 then
    perform ai_tokens_internal.refuse(400, 'invalid_amount', 'actual must be between 0 and 1000000000',
      jsonb_build_object('field', 'actual', 'actual', commit_reservation.actual));
  end if;
  hold := ai_tokens_internal.reservation_for_settlement(commit_reservation.reservation_id);

  account := ai_tokens_internal.settle_tokens(hold.organization_id, hold.token_type);
  charge := case
    when hold.enforcement = 'off' or account.id is null then 0
    else least(commit_reservation.actual, greatest(account.balance - (account.reserved - hold.held), 0)) end;
  new_usage_id := case when charge > 0 then gen_random_uuid() end;
  debt_added := case when hold.enforcement = 'enforce' and account.id is not null
                     then commit_reservation.actual - charge else 0 end;

  update public.ai_token_reservations r
  set status = 'committed', actual = commit_reservation.actual, charged = charge,
      usage_id = new_usage_id, settled_at = now()
  where r.id = hold.id and r.status = 'active' and r.expires_at > now()
  returning * into hold;
  if not found then
    select * into hold from public.ai_token_reservations r where r.id = commit_reservation.reservation_id;
    perform ai_tokens_internal.refuse(409, 'reservation_not_active',
      format('Reservation (id=%s) is %s', hold.id, hold.status),
      jsonb_build_object('reservation_id', hold.id, 'status', hold.status));
  end if;

  remaining := account.balance;
  if account.id is not null then
    perform ai_tokens_internal.journal_as(jsonb_build_object(
      'kind', 'reservation_capture', 'reservation_id', hold.id, 'usage_id', new_usage_id));
    update public.ai_tokens t
    set balance = t.balance - charge,
        purchased_balance = least(t.purchased_balance, t.balance - charge),
        reserved = t.reserved - hold.held,
        debt = t.debt + debt_added,
        updated_at = now()
    where t.id = account.id
    returning t.balance, t.purchased_balance into remaining, remaining_purchased;
    perform ai_tokens_internal.journal_as(null);
  end if;

  if charge > 0 then
    -- The log's trigger rolls this row up (tokens.rolled_up is deduct_tokens' own mark).
    perform set_config('tokens.rolled_up', '', true);
    insert into public.ai_token_usage_log
      (id, organization_id, user_id, token_type, feature_used, tokens_deducted, balance_after, reservation_id)
    values
      (new_usage_id, hold.organization_id, hold.user_id, hold.token_type, hold.feature, charge, remaining, hold.id);
    if remaining = remaining_purchased then
      perform ai_tokens_internal.consume_grants(hold.organization_id, hold.token_type, remaining_purchased, new_usage_id);
    end if;
  end if;
  if charge < commit_reservation.actual and hold.enforcement <> 'off' then
    perform ai_tokens_internal.record_refusal(
      ai_tokens_internal.refusal(402, 'overrun', 'The AI call used more tokens than were available',
        jsonb_build_object('feature', hold.feature, 'token_type', hold.token_type, 'estimate', hold.estimate,
                           'required', commit_reservation.actual, 'balance', coalesce(account.balance, 0),
                           'shortfall', commit_reservation.actual - charge, 'debt_added', debt_added)),
      hold.organization_id, hold.token_type, 'monitor',
      jsonb_build_object('reservation_id', hold.id, 'user_id', hold.user_id, 'charged', charge,
                         'reservation_enforcement', hold.enforcement));
  end if;

  return ai_tokens_internal.reservation_json(hold) || jsonb_build_object(
    'remaining_balance', coalesce(remaining, 0),
    'uncharged', commit_reservation.actual - charge,
    'debt_added', debt_added,
    'overrun', greatest(commit_reservation.actual - hold.estimate, 0),
    'message', format('Used %s tokens for %s', charge, hold.feature));
end
$$;
revoke all on function public.commit_reservation(uuid, integer) from public, anon, authenticated;
grant execute on function public.commit_reservation(uuid, integer) to authenticated, service_role;
comment on function public.commit_reservation(uuid, integer) is 'tokens-client: charge the actual cost of a hold and return the rest';

-- release_reservation: give back everything a hold holds (nothing is charged). A hold
-- already committed, released or expired is refused (409 reservation_not_active).
create or replace function public.release_reservation(reservation_id uuid)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  hold public.ai_token_reservations;
  account public.ai_tokens;
  available integer;
begin
  hold := ai_tokens_internal.reservation_for_settlement(release_reservation.reservation_id);
  account := ai_tokens_internal.settle_tokens(hold.organization_id, hold.token_type);

  update public.ai_token_reservations r
  set status = 'released', settled_at = now()
  where r.id = hold.id and r.status = 'active' and r.expires_at > now()
  returning * into hold;
  if not found then
    select * into hold from public.ai_token_reservations r where r.id = release_reservation.reservation_id;
    perform ai_tokens_internal.refuse(409, 'reservation_not_active',
      format('Reservation (id=%s) is %s', hold.id, hold.status),
      jsonb_build_object('reservation_id', hold.id, 'status', hold.status));
  end if;
  if account.id is not null then
    update public.ai_tokens t
    set reserved = t.reserved - hold.held, updated_at = now()
    where t.id = account.id
    returning t.balance - t.reserved into available;
  end if;
  return ai_tokens_internal.reservation_json(hold) || jsonb_build_object(
    'released', hold.held, 'available', greatest(coalesce(available, 0), 0));
end
$$;
revoke all on function public.release_reservation(uuid) from public, anon, authenticated;
grant execute on function public.release_reservation(uuid) to authenticated, service_role;
comment on function public.release_reservation(uuid) is 'tokens-client: give back everything a hold holds';

-- ============================================================ 10_usage_log.sql
-- tokens-client · 10 usage log: one row per successful deduction (the guide's table).
--
-- Written in the same transaction as the balance change, by deduct_tokens and
-- commit_reservation only. user_id is the caller (auth.uid()); null for the service role.
set check_function_bodies = off;

create table if not exists public.ai_token_usage_log (
  id uuid primary key default gen_random_uuid(),
  organization_id uuid not null,
  user_id uuid,
  token_type text not null,
  feature_used text not null,
  tokens_deducted integer not null check (tokens_deducted > 0),
  balance_after integer not null check (balance_after >= 0),
  request_id text check (length(request_id) between 1 and 200),
  created_at timestamptz not null default now(),
  reservation_id uuid references public.ai_token_reservations (id) on delete set null,
  refunded_at timestamptz,
  refunded_by uuid,
  refund_reason text check (length(refund_reason) <= 500),
  quantity integer not null default 1 check (quantity between 1 and 1000000)
);
comment on table public.ai_token_usage_log is 'One row per successful deduction, written in the same transaction as the balance change.';
comment on column public.ai_token_usage_log.quantity is 'Units metered (deduct_tokens quantity): tokens_deducted = cost x quantity when fully charged.';
comment on column public.ai_token_usage_log.reservation_id is 'The reservation this deduction committed (null for deduct_tokens).';
create index if not exists idx_ai_token_usage_org_date on public.ai_token_usage_log (organization_id, created_at desc);
-- Refunds by owners and admins in a period (refund_deduction's limit).
create index if not exists ai_token_usage_log_admin_refunds_idx
  on public.ai_token_usage_log (organization_id, token_type, refunded_at) where refunded_by is not null;
create unique index if not exists ai_token_usage_log_request_id_key
  on public.ai_token_usage_log (organization_id, request_id) where request_id is not null;
create index if not exists ai_token_usage_log_reservation_id_idx on public.ai_token_usage_log (reservation_id)
  where reservation_id is not null;

revoke all on public.ai_token_usage_log from anon, authenticated;
grant select on public.ai_token_usage_log to authenticated;
grant all on public.ai_token_usage_log to service_role;
alter table public.ai_token_usage_log enable row level security;

drop policy if exists "Admins view their organization's usage; members view their own" on public.ai_token_usage_log;
create policy "Admins view their organization's usage; members view their own"
  on public.ai_token_usage_log for select to authenticated
  using (
    organization_id in (
      select m.organization_id from ai_tokens_internal.memberships() m where m.role in ('owner', 'admin')
    )
    or (
      user_id = (select auth.uid())
      and organization_id in (select m.organization_id from ai_tokens_internal.memberships() m)
    )
  );
drop policy if exists "Service role manages the usage log" on public.ai_token_usage_log;
create policy "Service role manages the usage log"
  on public.ai_token_usage_log for all to service_role using (true) with check (true);

-- The usage log rolled up per organization, UTC day, user and feature, kept by the
-- log's own statement triggers whatever writes it (our functions, a bulk load, a hand
-- edit or delete): get_usage_report reads whole days here and only the first, partial
-- day from the log, so it costs the same at a thousand rows or a billion.
create table if not exists public.ai_token_usage_daily (
  organization_id uuid not null,
  day date not null,
  user_id uuid,
  feature text not null,
  uses bigint not null,
  tokens bigint not null,
  constraint ai_token_usage_daily_key unique nulls not distinct (organization_id, day, user_id, feature)
);
comment on table public.ai_token_usage_daily is 'ai_token_usage_log rolled up per organization, UTC day (of created_at), user and feature: uses (rows) and tokens (tokens_deducted). Kept by triggers on the log; verify_token_ledger checks it against the log.';

revoke all on public.ai_token_usage_daily from anon, authenticated;
grant select on public.ai_token_usage_daily to service_role;
alter table public.ai_token_usage_daily enable row level security;
drop policy if exists "Service role reads the usage rollup" on public.ai_token_usage_daily;
create policy "Service role reads the usage rollup"
  on public.ai_token_usage_daily for select to service_role using (true);

-- Take what a statement inserted, updated or deleted in the log into the rollup (a row
-- updated counts out with its old values and in with its new ones): one grouped upsert
-- per statement, so a bulk load of a million rows costs one pass. deduct_tokens writes
-- its own row's share in the statement that spends and sets tokens.rolled_up, which
-- the insert trigger's WHEN reads, so a spend does not pay for a transition table.
create or replace function ai_tokens_internal.roll_up_usage()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if tg_op = 'INSERT' then
    insert into public.ai_token_usage_daily as d (organization_id, day, user_id, feature, uses, tokens)
    select a.organization_id, (a.created_at at time zone 'UTC')::date, a.user_id, a.feature_used,
           count(*), sum(a.tokens_deducted)
    from added a
    group by 1, 2, 3, 4
    on conflict on constraint ai_token_usage_daily_key
    do update set uses = d.uses + excluded.uses, tokens = d.tokens + excluded.tokens;
  elsif tg_op = 'DELETE' then
    insert into public.ai_token_usage_daily as d (organization_id, day, user_id, feature, uses, tokens)
    select r.organization_id, (r.created_at at time zone 'UTC')::date, r.user_id, r.feature_used,
           -count(*), -sum(r.tokens_deducted)
    from removed r
    group by 1, 2, 3, 4
    on conflict on constraint ai_token_usage_daily_key
    do update set uses = d.uses + excluded.uses, tokens = d.tokens + excluded.tokens;
  else
    insert into public.ai_token_usage_daily as d (organization_id, day, user_id, feature, uses, tokens)
    select c.organization_id, c.day, c.user_id, c.feature, sum(c.uses), sum(c.tokens)
    from (
      select a.organization_id, (a.created_at at time zone 'UTC')::date as day, a.user_id,
             a.feature_used as feature, 1 as uses, a.tokens_deducted::bigint as tokens
      from added a
      union all
      select r.organization_id, (r.created_at at time zone 'UTC')::date, r.user_id, r.feature_used,
             -1, -r.tokens_deducted::bigint
      from removed r
    ) c
    group by 1, 2, 3, 4
    having sum(c.uses) <> 0 or sum(c.tokens) <> 0
    on conflict on constraint ai_token_usage_daily_key
    do update set uses = d.uses + excluded.uses, tokens = d.tokens + excluded.tokens;
  end if;
  return null;
end
$$;
revoke all on function ai_tokens_internal.roll_up_usage() from public, anon, authenticated;

-- A truncated log leaves an empty rollup.
create or replace function ai_tokens_internal.clear_usage_rollup()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  delete from public.ai_token_usage_daily;
  return null;
end
$$;
revoke all on function ai_tokens_internal.clear_usage_rollup() from public, anon, authenticated;

-- The triggers and, on a log from before the rollup, its first filling, in one
-- transaction with writers of the log held off, so that no row is counted twice or missed.
do $$
begin
  lock table public.ai_token_usage_log in share row exclusive mode;
  create or replace trigger ai_token_usage_log_roll_up_insert
    after insert on public.ai_token_usage_log
    referencing new table as added
    for each statement
    when (coalesce(current_setting('tokens.rolled_up', true), '') <> 'on')
    execute function ai_tokens_internal.roll_up_usage();
  create or replace trigger ai_token_usage_log_roll_up_update
    after update on public.ai_token_usage_log
    referencing old table as removed new table as added
    for each statement execute function ai_tokens_internal.roll_up_usage();
  create or replace trigger ai_token_usage_log_roll_up_delete
    after delete on public.ai_token_usage_log
    referencing old table as removed
    for each statement execute function ai_tokens_internal.roll_up_usage();
  create or replace trigger ai_token_usage_log_roll_up_truncate
    after truncate on public.ai_token_usage_log
    for each statement execute function ai_tokens_internal.clear_usage_rollup();
  if not exists (select 1 from public.ai_token_usage_daily) then
    insert into public.ai_token_usage_daily (organization_id, day, user_id, feature, uses, tokens)
    select l.organization_id, (l.created_at at time zone 'UTC')::date, l.user_id, l.feature_used,
           count(*), sum(l.tokens_deducted)
    from public.ai_token_usage_log l
    group by 1, 2, 3, 4;
  end if;
end
$$;

-- Which grants a deduction spent, so that a refund gives purchased tokens back to them.
create table if not exists public.ai_token_grant_usage (
  usage_id uuid not null references public.ai_token_usage_log (id) on delete cascade,
  grant_id uuid not null references public.ai_token_grants (id) on delete cascade,
  amount integer not null check (amount > 0),
  primary key (usage_id, grant_id)
);
comment on table public.ai_token_grant_usage is 'Which grants a deduction spent, so that a refund can give purchased tokens back to their grant.';
create index if not exists ai_token_grant_usage_grant_id_idx on public.ai_token_grant_usage (grant_id);

revoke all on public.ai_token_grant_usage from anon, authenticated;
grant all on public.ai_token_grant_usage to service_role;
alter table public.ai_token_grant_usage enable row level security;
drop policy if exists "Service role manages grant usage" on public.ai_token_grant_usage;
create policy "Service role manages grant usage"
  on public.ai_token_grant_usage for all to service_role using (true) with check (true);

-- ============================================================ 11_rate_limits.sql
-- tokens-client · 11 rate limits: per-user spending limits as data.
--
-- At most max_requests deductions/reservations per user in each window of
-- window_seconds (a window starts with the user's first spend after the previous one
-- ended). The most specific row applies: an organization's own row, then feature+plan,
-- feature, plan, and the default (no organization, plan or feature); each row counts
-- the spends it governs. The service role is never limited.
set check_function_bodies = off;

create table if not exists public.ai_rate_limits (
  id bigint generated always as identity primary key,
  organization_id uuid,
  plan text references public.ai_plans (plan) on update cascade on delete cascade,
  feature text references public.ai_features (feature) on update cascade on delete cascade,
  max_requests integer not null check (max_requests between 1 and 1000000),
  window_seconds integer not null check (window_seconds between 1 and 86400),
  constraint ai_rate_limits_scope_key unique nulls not distinct (organization_id, plan, feature)
);
comment on table public.ai_rate_limits is 'Per-user spending limits: at most max_requests deductions/reservations in each window of window_seconds, which starts with the user''s first spend after the previous window ended. The most specific row applies (organization, feature+plan, feature, plan, default), and each row counts the spends it governs (a row with a feature: only that feature''s).';
comment on column public.ai_rate_limits.organization_id is
  'When set, the row applies to this organization only and wins over plan and feature rows (a negotiated limit, or a relaxed one for a batch job).';
create index if not exists ai_rate_limits_feature_idx on public.ai_rate_limits (feature);
create index if not exists ai_rate_limits_plan_idx on public.ai_rate_limits (plan);
create index if not exists ai_rate_limits_organization_idx on public.ai_rate_limits (organization_id);

revoke all on public.ai_rate_limits from anon, authenticated;
grant select on public.ai_rate_limits to authenticated;
grant all on public.ai_rate_limits to service_role;
alter table public.ai_rate_limits enable row level security;
drop policy if exists "Users view shared rate limits and their organization's" on public.ai_rate_limits;
create policy "Users view shared rate limits and their organization's"
  on public.ai_rate_limits for select to authenticated
  using (
    organization_id is null
    or organization_id in (select m.organization_id from ai_tokens_internal.memberships() m)
  );
drop policy if exists "Service role manages rate limits" on public.ai_rate_limits;
create policy "Service role manages rate limits"
  on public.ai_rate_limits for all to service_role using (true) with check (true);

-- The guide's "more than 5 in the last minute" as the default row.
insert into public.ai_rate_limits (plan, feature, max_requests, window_seconds)
select * from (values
  (null::text, null::text, 5, 60)
) as defaults (plan, feature, max_requests, window_seconds)
where not exists (select 1 from public.ai_rate_limits)
on conflict do nothing;

-- Each user's spends in the current window of each rule, one row per (user,
-- organization, rule): a window starts with the first spend after the previous one
-- ended and admits max_requests spends. A spend counts itself in one conditional upsert
-- of this row (O(1), whatever the rate or the window), and the row lock it takes
-- serialises only that user's own spends under that rule, so the count is exact under
-- concurrency. Refused spends are given back.
create table if not exists public.ai_rate_limit_windows (
  user_id uuid not null,
  organization_id uuid not null,
  rate_limit_id bigint not null,
  window_started_at timestamptz not null,
  spends integer not null check (spends >= 0),
  constraint ai_rate_limit_windows_pkey primary key (user_id, organization_id, rate_limit_id)
);
comment on table public.ai_rate_limit_windows is 'Rate-limit state: the spends of a user under a rule (ai_rate_limits.id) in the window that started at window_started_at. Written by the spending functions; rows of ended windows are removed by refresh_due_tokens.';

revoke all on public.ai_rate_limit_windows from anon, authenticated;
grant all on public.ai_rate_limit_windows to service_role;
alter table public.ai_rate_limit_windows enable row level security;
drop policy if exists "Service role manages rate-limit windows" on public.ai_rate_limit_windows;
create policy "Service role manages rate-limit windows"
  on public.ai_rate_limit_windows for all to service_role using (true) with check (true);

-- Count one spend of a user under a rule: null when it fits the window (counted), else
-- the seconds until the window ends (nothing counted).
create or replace function ai_tokens_internal.take_rate_slot(user_id uuid, organization_id uuid, rate_limit_id bigint,
                                                             max_requests integer, window_seconds integer)
returns integer
language plpgsql
volatile
set search_path = ''
as $$
declare
  ended timestamptz := now() - make_interval(secs => take_rate_slot.window_seconds);
  started timestamptz;
begin
  -- The common case first: the row exists. A full window matches nothing and locks
  -- nothing; racing spends that both fit queue on the row and are counted one by one.
  for attempt in 1..2 loop
    update public.ai_rate_limit_windows w
    set window_started_at = case when w.window_started_at <= ended then now() else w.window_started_at end,
        spends = case when w.window_started_at <= ended then 1 else w.spends + 1 end
    where w.user_id = take_rate_slot.user_id and w.organization_id = take_rate_slot.organization_id
      and w.rate_limit_id = take_rate_slot.rate_limit_id
      and (w.window_started_at <= ended or w.spends < take_rate_slot.max_requests);
    if found then
      return null;
    end if;
    exit when attempt = 2;
    -- The user's first spend under this rule (or a full window: the insert does nothing,
    -- and the update above runs once more in case a racing first spend made the row).
    insert into public.ai_rate_limit_windows (user_id, organization_id, rate_limit_id, window_started_at, spends)
    values (take_rate_slot.user_id, take_rate_slot.organization_id, take_rate_slot.rate_limit_id, now(), 1)
    on conflict on constraint ai_rate_limit_windows_pkey do nothing;
    if found then
      return null;
    end if;
  end loop;
  select w.window_started_at into started from public.ai_rate_limit_windows w
  where w.user_id = take_rate_slot.user_id and w.organization_id = take_rate_slot.organization_id
    and w.rate_limit_id = take_rate_slot.rate_limit_id;
  -- now() is when this transaction began: one that waited behind the spend that opened
  -- the window may have begun a little before it, so the wait is capped at the window.
  return least(take_rate_slot.window_seconds, greatest(1, ceil(extract(epoch from
    started + make_interval(secs => take_rate_slot.window_seconds) - now()))))::integer;
end
$$;
revoke all on function ai_tokens_internal.take_rate_slot(uuid, uuid, bigint, integer, integer) from public, anon, authenticated;

-- Give back the spend take_rate_slot counted, for a spend refused after it was counted
-- (402 insufficient_tokens): refused spends do not use up the limit.
create or replace function ai_tokens_internal.give_back_rate_slot(user_id uuid, organization_id uuid, rate_limit_id bigint)
returns void
language plpgsql
volatile
set search_path = ''
as $$
begin
  update public.ai_rate_limit_windows w set spends = w.spends - 1
  where w.user_id = give_back_rate_slot.user_id and w.organization_id = give_back_rate_slot.organization_id
    and w.rate_limit_id = give_back_rate_slot.rate_limit_id and w.spends > 0;
end
$$;
revoke all on function ai_tokens_internal.give_back_rate_slot(uuid, uuid, bigint) from public, anon, authenticated;

-- set_rate_limit: create or change the limit of one scope (organization, plan, feature;
-- null means any). Service role only. Returns the row.
create or replace function public.set_rate_limit(
  max_requests integer,
  window_seconds integer default 60,
  organization_id uuid default null,
  plan text default null,
  feature text default null
)
returns public.ai_rate_limits
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  saved public.ai_rate_limits;
begin
  perform ai_tokens_internal.require_service_role('set_rate_limit');
  if max_requests is null or max_requests not between 1 and 1000000 then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'max_requests must be between 1 and 1000000',
      jsonb_build_object('field', 'max_requests'));
  end if;
  if window_seconds is null or window_seconds not between 1 and 86400 then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'window_seconds must be between 1 and 86400',
      jsonb_build_object('field', 'window_seconds'));
  end if;
  perform ai_tokens_internal.require_plan(set_rate_limit.plan);
  if feature is not null and not exists (select 1 from public.ai_features f where f.feature = set_rate_limit.feature) then
    perform ai_tokens_internal.refuse(404, 'unknown_feature', 'Unknown feature',
      jsonb_build_object('feature', left(feature, 100)));
  end if;
  perform ai_tokens_internal.require_organization(set_rate_limit.organization_id);

  insert into public.ai_rate_limits as l (organization_id, plan, feature, max_requests, window_seconds)
  values (set_rate_limit.organization_id, set_rate_limit.plan, set_rate_limit.feature,
          set_rate_limit.max_requests, set_rate_limit.window_seconds)
  on conflict on constraint ai_rate_limits_scope_key do update
    set max_requests = excluded.max_requests, window_seconds = excluded.window_seconds
  returning l.* into saved;
  return saved;
end
$$;
revoke all on function public.set_rate_limit(integer, integer, uuid, text, text) from public, anon, authenticated;
grant execute on function public.set_rate_limit(integer, integer, uuid, text, text) to service_role;
comment on function public.set_rate_limit(integer, integer, uuid, text, text) is 'tokens-client: create or change a per-user spending limit (service role)';

-- ============================================================ 13_spending.sql
-- tokens-client · 13 spending: has_enough_tokens, deduct_tokens, get_token_stats.
--
-- Spending is one statement: a conditional UPDATE (balance - reserved >= cost, nothing
-- due before the row's settle_after) whose trigger journals it, with the usage-log
-- insert, in one transaction and one round trip. When that UPDATE matches nothing, the row is opened (created on
-- first use), locked and settled, and the decision is taken again under the lock.
-- Refusals that are the caller's situation (403 feature_not_in_plan, 429 rate_limited,
-- 402 insufficient_tokens) are returned, not raised, so that their record commits: the
-- body is PostgREST's error body and response.status carries the HTTP status.
set check_function_bodies = off;

-- A refusal as data: {http_status, reason, message, details: {reason, ...facts}}.
create or replace function ai_tokens_internal.refusal(http_status integer, reason text, message text, facts jsonb)
returns jsonb
language sql
immutable
set search_path = ''
as $$
  select jsonb_build_object(
    'http_status', refusal.http_status,
    'reason', refusal.reason,
    'message', refusal.message,
    'details', jsonb_build_object('reason', refusal.reason) || coalesce(refusal.facts, '{}'::jsonb))
$$;
revoke all on function ai_tokens_internal.refusal(integer, text, text, jsonb) from public, anon, authenticated;

-- Refuse a spend without raising, so that the refusal record survives: record it, set
-- the HTTP status (and Retry-After) PostgREST answers with, and return the body
-- PostgREST would have sent for `raise ... errcode 'PTxyz'`.
create or replace function ai_tokens_internal.refusal_response(refusal jsonb, organization_id uuid, token_type text, context jsonb)
returns jsonb
language plpgsql
volatile
set search_path = ''
as $$
begin
  perform ai_tokens_internal.record_refusal(refusal_response.refusal, refusal_response.organization_id,
    refusal_response.token_type, 'enforce', refusal_response.context);
  perform set_config('response.status', refusal_response.refusal ->> 'http_status', true);
  if refusal_response.refusal -> 'details' ? 'retry_after_seconds' then
    perform set_config('response.headers', jsonb_build_array(jsonb_build_object(
      'Retry-After', refusal_response.refusal -> 'details' ->> 'retry_after_seconds'))::text, true);
  end if;
  return jsonb_build_object(
    'code', 'PT' || (refusal_response.refusal ->> 'http_status'),
    'message', refusal_response.refusal ->> 'message',
    'details', (refusal_response.refusal -> 'details')::text,
    'hint', null);
end
$$;
revoke all on function ai_tokens_internal.refusal_response(jsonb, uuid, text, jsonb) from public, anon, authenticated;

-- The opening of every spend (deduct_tokens, reserve_tokens, has_enough_tokens), in
-- few statements: the organization the caller may act on (resolve_organization: the
-- memberships seam called once); the organization's plan (the organization_plan
-- seam); then one query for the feature's type and cost, whether the plan offers it,
-- the enforcement mode and, for a user's spend, the rate-limit rule that applies (the
-- most specific row: organization, feature+plan, feature, plan, default). Raises on bad
-- input (a request_id of 0 or over 200 characters, no feature, no organization for the
-- service role, 401/403 for the caller). An unknown feature comes back with a null
-- price_type, so that a replay is answered before the 404 (the catalog may have
-- changed since the first call).
create or replace function ai_tokens_internal.spend_context(
  feature text, organization_id uuid, request_id text, with_rate_rule boolean,
  out caller_id uuid, out is_service boolean, out org_id uuid, out caller_role text, out org_plan text,
  out enforcement text, out price_type text, out unit_cost integer, out offered boolean,
  out rule_id bigint, out rule_max integer, out rule_window integer)
language plpgsql
stable
set search_path = ''
as $$
begin
  if spend_context.request_id is not null
     and (length(spend_context.request_id) = 0 or length(spend_context.request_id) > 200) then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'request_id must be 1 to 200 characters',
      jsonb_build_object('field', 'request_id'));
  end if;
  select r.organization_id, r.role into org_id, caller_role
  from ai_tokens_internal.resolve_organization(spend_context.organization_id) r;
  is_service := caller_role = 'service_role';
  caller_id := (select auth.uid());
  if spend_context.feature is null or length(btrim(spend_context.feature)) = 0 then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'feature is required',
      jsonb_build_object('field', 'feature'));
  end if;

  org_plan := ai_tokens_internal.organization_plan(org_id);
  select f.token_type, f.cost,
         exists (select 1 from public.ai_plan_allocations a where a.plan = org_plan and a.token_type = f.token_type),
         coalesce((select e.mode from public.ai_token_enforcement_modes e where e.organization_id = org_id),
                  (select e.mode from public.ai_token_enforcement_modes e where e.organization_id is null),
                  'enforce'),
         r.id, r.max_requests, r.window_seconds
  into price_type, unit_cost, offered, enforcement, rule_id, rule_max, rule_window
  from (select) as one
  left join public.ai_features f on f.feature = spend_context.feature
  left join lateral (
    -- The organization's own rows, then the shared ones: two range scans of the scope
    -- key's index, however many organizations have rows of their own.
    select c.id, c.max_requests, c.window_seconds
    from (
      select l.id, l.max_requests, l.window_seconds, 1 as own, l.feature is not null as by_feature,
             l.plan is not null as by_plan
      from public.ai_rate_limits l
      where l.organization_id = org_id
        and (l.plan is null or l.plan = org_plan)
        and (l.feature is null or l.feature = spend_context.feature)
      union all
      select l.id, l.max_requests, l.window_seconds, 0, l.feature is not null, l.plan is not null
      from public.ai_rate_limits l
      where l.organization_id is null
        and (l.plan is null or l.plan = org_plan)
        and (l.feature is null or l.feature = spend_context.feature)
    ) c
    order by c.own desc, c.by_feature desc, c.by_plan desc
    limit 1
  ) r on spend_context.with_rate_rule and not is_service;
end
$$;
revoke all on function ai_tokens_internal.spend_context(text, uuid, text, boolean) from public, anon, authenticated;

-- The policy refusal of a spend, or null when allowed: the feature outside the plan
-- (403) before the caller's rate limit (429; a spend that fits is counted in the user's
-- window). rule_id is null for the service role, which is never limited. Shared by
-- deduct_tokens and reserve_tokens, with what spend_context found.
create or replace function ai_tokens_internal.policy_refusal(
  caller uuid, organization_id uuid, feature text, plan text, offered boolean, token_type text,
  rule_id bigint, rule_max integer, rule_window integer)
returns jsonb
language plpgsql
volatile
set search_path = ''
as $$
declare
  retry_after integer;
begin
  if not policy_refusal.offered then
    return ai_tokens_internal.not_in_plan_refusal(policy_refusal.feature, policy_refusal.plan, policy_refusal.token_type);
  end if;
  if policy_refusal.rule_id is null then
    return null;
  end if;
  retry_after := ai_tokens_internal.take_rate_slot(policy_refusal.caller, policy_refusal.organization_id,
                                                   policy_refusal.rule_id, policy_refusal.rule_max,
                                                   policy_refusal.rule_window);
  if retry_after is null then
    return null;
  end if;
  return ai_tokens_internal.refusal(429, 'rate_limited', 'Rate limit exceeded. Wait before next request.',
    jsonb_build_object('feature', policy_refusal.feature, 'limit', policy_refusal.rule_max,
                       'window_seconds', policy_refusal.rule_window, 'retry_after_seconds', retry_after));
end
$$;
revoke all on function ai_tokens_internal.policy_refusal(uuid, uuid, text, text, boolean, text, bigint, integer, integer)
  from public, anon, authenticated;

-- The insufficient-tokens refusal for `required` tokens of a settled (locked) row, with
-- what the row holds; `account` is all nulls when the organization has no such row.
create or replace function ai_tokens_internal.insufficient_refusal(feature text, required integer, token_type text,
                                             account public.ai_tokens)
returns jsonb
language sql
stable
set search_path = ''
as $$
  select ai_tokens_internal.refusal(402, 'insufficient_tokens', 'You''re out of AI tokens',
    jsonb_build_object('feature', insufficient_refusal.feature, 'token_type', insufficient_refusal.token_type,
                       'required', insufficient_refusal.required,
                       'balance', coalesce((insufficient_refusal.account).balance, 0),
                       'reserved', coalesce((insufficient_refusal.account).reserved, 0),
                       'available', greatest(coalesce((insufficient_refusal.account).balance
                                                      - (insufficient_refusal.account).reserved, 0), 0),
                       'initialized', (insufficient_refusal.account).id is not null))
$$;
revoke all on function ai_tokens_internal.insufficient_refusal(text, integer, text, public.ai_tokens) from public, anon, authenticated;

-- How much of `wanted` a settled (locked) row can give: all of it when available, else
-- nothing — except in monitor mode, which takes what is there and never goes below zero.
create or replace function ai_tokens_internal.obtainable(account public.ai_tokens, wanted integer, mode text)
returns integer
language sql
immutable
set search_path = ''
as $$
  select case
    when (obtainable.account).id is null then 0
    when (obtainable.account).balance - (obtainable.account).reserved >= obtainable.wanted then obtainable.wanted
    when obtainable.mode = 'monitor'
      then greatest(least(obtainable.wanted, (obtainable.account).balance - (obtainable.account).reserved), 0)
    else 0 end
$$;
revoke all on function ai_tokens_internal.obtainable(public.ai_tokens, integer, text) from public, anon, authenticated;

-- What a client may see of a refusal that monitor mode let through.
create or replace function ai_tokens_internal.refusal_summary(refusal jsonb)
returns jsonb
language sql
immutable
set search_path = ''
as $$
  select case when refusal_summary.refusal is null then null else jsonb_build_object(
    'http_status', (refusal_summary.refusal ->> 'http_status')::integer,
    'reason', refusal_summary.refusal ->> 'reason',
    'message', refusal_summary.refusal ->> 'message',
    'details', refusal_summary.refusal -> 'details') end
$$;
revoke all on function ai_tokens_internal.refusal_summary(jsonb) from public, anon, authenticated;

-- The refusal of a feature the organization's plan does not offer: 403
-- feature_not_in_plan ("Not available on Starter plan", the guide's words), or 403
-- plan_not_configured when the host's plan is not a row of ai_plans at all (the plan
-- name then stays out of the message: it is not ours to trust).
create or replace function ai_tokens_internal.not_in_plan_refusal(feature text, plan text, token_type text)
returns jsonb
language sql
stable
set search_path = ''
as $$
  select case
    when exists (select 1 from public.ai_plans p where p.plan = not_in_plan_refusal.plan) then
      ai_tokens_internal.refusal(403, 'feature_not_in_plan', format('Not available on %s plan', initcap(not_in_plan_refusal.plan)),
        jsonb_build_object('feature', not_in_plan_refusal.feature, 'plan', not_in_plan_refusal.plan,
                           'token_type', not_in_plan_refusal.token_type))
    else
      ai_tokens_internal.refusal(403, 'plan_not_configured', 'Your organization''s plan is not set up for AI features',
        jsonb_build_object('feature', not_in_plan_refusal.feature, 'plan', left(not_in_plan_refusal.plan, 50),
                           'token_type', not_in_plan_refusal.token_type))
    end
$$;
revoke all on function ai_tokens_internal.not_in_plan_refusal(text, text, text) from public, anon, authenticated;

-- Raise a refusal built by ai_tokens_internal.refusal().
create or replace function ai_tokens_internal.raise_refusal(refusal jsonb)
returns void
language sql
volatile
set search_path = ''
as $$
  select ai_tokens_internal.refuse((raise_refusal.refusal ->> 'http_status')::integer, raise_refusal.refusal ->> 'reason',
    raise_refusal.refusal ->> 'message', (raise_refusal.refusal -> 'details') - 'reason')
$$;
revoke all on function ai_tokens_internal.raise_refusal(jsonb) from public, anon, authenticated;

-- has_enough_tokens: may the caller's organization afford this feature now
-- (balance - reserved >= cost, once what is due is settled)? Always true in monitor and
-- off modes. Unknown features (404), features outside the plan (403, in enforce mode)
-- and non-members (403) are errors. Works with GET (read-only) and POST.
create or replace function public.has_enough_tokens(feature text, organization_id uuid default null)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  spend record;
  account public.ai_tokens;
begin
  spend := ai_tokens_internal.spend_context(has_enough_tokens.feature, has_enough_tokens.organization_id, null, false);
  if spend.price_type is null then
    perform ai_tokens_internal.refuse(404, 'unknown_feature', 'Unknown feature',
      jsonb_build_object('feature', left(has_enough_tokens.feature, 100)));
  end if;
  if spend.enforcement <> 'enforce' then
    return true;
  end if;
  if not spend.offered then
    perform ai_tokens_internal.raise_refusal(
      ai_tokens_internal.not_in_plan_refusal(has_enough_tokens.feature, spend.org_plan, spend.price_type));
  end if;

  select * into account from public.ai_tokens t
  where t.organization_id = spend.org_id and t.token_type = spend.price_type;
  if not found then
    -- Not used yet: the row it would be opened with on first use.
    account := ai_tokens_internal.unopened_account(spend.org_id, spend.price_type);
  elsif account.settle_after <= now() then
    account := ai_tokens_internal.settled_tokens(account);
  end if;
  return account.balance - account.reserved >= spend.unit_cost;
end
$$;
revoke all on function public.has_enough_tokens(text, uuid) from public, anon, authenticated;
grant execute on function public.has_enough_tokens(text, uuid) to authenticated, service_role;
comment on function public.has_enough_tokens(text, uuid) is 'tokens-client: may the caller''s organization afford this feature now';

-- deduct_tokens: spend the feature's cost from the caller's organization.
-- Hot path: spend_context (claims, membership, plan, price, mode and rate rule), the
-- rate-limit count (one upsert of the user's window row), then one statement: the
-- conditional UPDATE (balance - reserved >= cost, nothing due before settle_after)
-- with the usage-log insert and its share of the daily rollup; the UPDATE's trigger
-- writes the journal row. The row lock
-- is held only from that statement to the commit. When that UPDATE matches nothing,
-- the row is opened (created on first use), locked and settled, and the decision is
-- taken again under the lock. Spends the period allowance first, then purchased tokens.
-- Idempotent per organization with request_id (a retry returns the first result).
-- Refusals that are the caller's situation (403 feature_not_in_plan, 429 rate_limited,
-- 402 insufficient_tokens) do not raise: they are recorded as a 'refused' alert and
-- returned as PostgREST's error body with response.status set, so the record is kept.
-- Bad input (400), unknown features (404) and non-members (401/403) raise.
-- Enforcement modes: monitor never refuses (spends what is available up to the cost
-- and records what would have been refused); off spends and checks nothing.
create or replace function public.deduct_tokens(
  feature text,
  organization_id uuid default null,
  request_id text default null,
  quantity integer default 1
)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  spend record;
  previous public.ai_token_usage_log;
  new_usage_id uuid;
  account public.ai_tokens;
  refused jsonb;
  insufficient jsonb;
  context jsonb;
  charged integer;
  remaining integer;
  remaining_purchased integer;
  cost integer;
begin
  if deduct_tokens.quantity is null or deduct_tokens.quantity < 1 or deduct_tokens.quantity > 1000000 then
    perform ai_tokens_internal.refuse(400, 'invalid_amount', 'quantity must be between 1 and 1000000',
      jsonb_build_object('field', 'quantity', 'quantity', deduct_tokens.quantity, 'min', 1, 'max', 1000000));
  end if;
  spend := ai_tokens_internal.spend_context(deduct_tokens.feature, deduct_tokens.organization_id,
                                           deduct_tokens.request_id, true);

  -- A retry is answered before pricing: the first call spent, so a plan change or a
  -- catalog edit since then must not turn its replay into a refusal.
  if deduct_tokens.request_id is not null then
    -- Serialise retries of one request so exactly one of them spends.
    perform ai_tokens_internal.lock('deduction', spend.org_id::text || '/' || deduct_tokens.request_id);
    select * into previous from public.ai_token_usage_log l
    where l.organization_id = spend.org_id and l.request_id = deduct_tokens.request_id;
    if found then
      -- A key belongs to its caller and its payload: anything else replays nothing.
      if previous.user_id is distinct from spend.caller_id then
        perform ai_tokens_internal.refuse(409, 'idempotency_conflict', 'request_id was already used by another caller',
          jsonb_build_object('request_id', deduct_tokens.request_id));
      end if;
      if previous.feature_used <> deduct_tokens.feature or previous.quantity <> deduct_tokens.quantity then
        perform ai_tokens_internal.refuse(409, 'idempotency_conflict', 'request_id was already used for another spend',
          jsonb_build_object('request_id', deduct_tokens.request_id, 'feature', deduct_tokens.feature,
                             'quantity', deduct_tokens.quantity, 'original_feature', previous.feature_used,
                             'original_quantity', previous.quantity));
      end if;
      return jsonb_build_object(
        'success', true,
        'remaining_balance', previous.balance_after,
        'tokens_deducted', previous.tokens_deducted,
        'token_type', previous.token_type,
        'feature', previous.feature_used,
        'organization_id', previous.organization_id,
        'usage_id', previous.id,
        'request_id', previous.request_id,
        'replayed', true,
        'enforcement', spend.enforcement,
        'would_have_refused', null,
        'message', format('Used %s tokens for %s', previous.tokens_deducted, previous.feature_used));
    end if;
  end if;

  if spend.price_type is null then
    perform ai_tokens_internal.refuse(404, 'unknown_feature', 'Unknown feature',
      jsonb_build_object('feature', left(deduct_tokens.feature, 100)));
  end if;
  -- Metered usage (e.g. LLM tokens counted by the provider): the feature's cost per unit.
  if spend.unit_cost::bigint * deduct_tokens.quantity > 1000000000 then
    perform ai_tokens_internal.refuse(400, 'invalid_amount', 'quantity times the feature''s cost exceeds 1000000000',
      jsonb_build_object('field', 'quantity', 'quantity', deduct_tokens.quantity, 'cost', spend.unit_cost,
                         'max', 1000000000));
  end if;
  cost := spend.unit_cost * deduct_tokens.quantity;

  if spend.enforcement = 'off' then
    select t.balance into remaining from public.ai_tokens t
    where t.organization_id = spend.org_id and t.token_type = spend.price_type;
    return jsonb_build_object(
      'success', true,
      'remaining_balance', coalesce(remaining, 0),
      'tokens_deducted', 0,
      'token_type', spend.price_type,
      'feature', deduct_tokens.feature,
      'organization_id', spend.org_id,
      'usage_id', null,
      'request_id', deduct_tokens.request_id,
      'replayed', false,
      'enforcement', spend.enforcement,
      'would_have_refused', null,
      'message', format('Token checks are off: nothing deducted for %s', deduct_tokens.feature));
  end if;

  refused := ai_tokens_internal.policy_refusal(spend.caller_id, spend.org_id, deduct_tokens.feature, spend.org_plan,
                                               spend.offered, spend.price_type, spend.rule_id, spend.rule_max,
                                               spend.rule_window);
  if refused is not null then
    context := jsonb_build_object('feature', deduct_tokens.feature, 'user_id', spend.caller_id,
                                  'request_id', deduct_tokens.request_id);
    if spend.enforcement = 'enforce' then
      return ai_tokens_internal.refusal_response(refused, spend.org_id, spend.price_type, context);
    end if;
  end if;

  -- The critical section: from this statement (which takes the row lock) to the commit.
  new_usage_id := gen_random_uuid();
  perform ai_tokens_internal.journal_as(jsonb_build_object('kind', 'deduction', 'usage_id', new_usage_id)),
          set_config('tokens.rolled_up', 'on', true);
  with spent as (
    update public.ai_tokens t
    set balance = t.balance - cost,
        purchased_balance = least(t.purchased_balance, t.balance - cost),
        updated_at = now()
    where t.organization_id = spend.org_id
      and t.token_type = spend.price_type
      and t.balance - t.reserved >= cost
      and t.settle_after > now()
    returning t.balance, t.purchased_balance
  ),
  logged as (
    insert into public.ai_token_usage_log
      (id, organization_id, user_id, token_type, feature_used, tokens_deducted, balance_after, request_id, quantity)
    select new_usage_id, spend.org_id, spend.caller_id, spend.price_type, deduct_tokens.feature, cost, s.balance,
           deduct_tokens.request_id, deduct_tokens.quantity
    from spent s
    returning 1
  ),
  rolled_up as (
    insert into public.ai_token_usage_daily as d (organization_id, day, user_id, feature, uses, tokens)
    select spend.org_id, (now() at time zone 'UTC')::date, spend.caller_id, deduct_tokens.feature, 1, cost
    from spent s
    on conflict on constraint ai_token_usage_daily_key
    do update set uses = d.uses + 1, tokens = d.tokens + excluded.tokens
  )
  select s.balance, s.purchased_balance into remaining, remaining_purchased from spent s;
  perform ai_tokens_internal.journal_as(null), set_config('tokens.rolled_up', '', true);

  if remaining is not null then
    charged := cost;
  else
    -- Slow path: lock and settle the row, then decide under the lock.
    account := ai_tokens_internal.open_account(spend.org_id, spend.price_type);
    charged := ai_tokens_internal.obtainable(account, cost, spend.enforcement);
    if charged < cost then
      insufficient := ai_tokens_internal.insufficient_refusal(deduct_tokens.feature, cost, spend.price_type, account);
      context := coalesce(context, jsonb_build_object('feature', deduct_tokens.feature, 'user_id', spend.caller_id,
                                                      'request_id', deduct_tokens.request_id));
      if spend.enforcement = 'enforce' or charged = 0 then
        -- Nothing is spent: the rate-limit window gets its spend back.
        if spend.rule_id is not null and refused is null then
          perform ai_tokens_internal.give_back_rate_slot(spend.caller_id, spend.org_id, spend.rule_id);
        end if;
      end if;
      if spend.enforcement = 'enforce' then
        return ai_tokens_internal.refusal_response(insufficient, spend.org_id, spend.price_type, context);
      end if;
      refused := coalesce(refused, insufficient);
    end if;
    remaining := coalesce(account.balance, 0);
    remaining_purchased := coalesce(account.purchased_balance, 0);
    if charged > 0 then
      perform ai_tokens_internal.journal_as(jsonb_build_object('kind', 'deduction', 'usage_id', new_usage_id));
      update public.ai_tokens t
      set balance = t.balance - charged,
          purchased_balance = least(t.purchased_balance, t.balance - charged),
          updated_at = now()
      where t.id = account.id
      returning t.balance, t.purchased_balance into remaining, remaining_purchased;
      perform ai_tokens_internal.journal_as(null);
      insert into public.ai_token_usage_log
        (id, organization_id, user_id, token_type, feature_used, tokens_deducted, balance_after, request_id, quantity)
      values
        (new_usage_id, spend.org_id, spend.caller_id, spend.price_type, deduct_tokens.feature, charged, remaining,
         deduct_tokens.request_id, deduct_tokens.quantity);
    end if;
  end if;

  -- The period allowance is used up: the rest came from grants.
  if charged > 0 and remaining = remaining_purchased then
    perform ai_tokens_internal.consume_grants(spend.org_id, spend.price_type, remaining_purchased, new_usage_id);
  end if;
  if refused is not null then
    perform ai_tokens_internal.record_refusal(refused, spend.org_id, spend.price_type, spend.enforcement,
      context || jsonb_build_object('charged', charged));
  end if;

  return jsonb_build_object(
    'success', true,
    'remaining_balance', remaining,
    'tokens_deducted', charged,
    'token_type', spend.price_type,
    'feature', deduct_tokens.feature,
    'organization_id', spend.org_id,
    'usage_id', case when charged > 0 then new_usage_id end,
    'request_id', deduct_tokens.request_id,
    'replayed', false,
    'enforcement', spend.enforcement,
    'would_have_refused', case when refused is not null then ai_tokens_internal.refusal_summary(refused) end,
    'message', 'Used ' || charged || ' tokens for ' || deduct_tokens.feature);
end
$$;
revoke all on function public.deduct_tokens(text, uuid, text, integer) from public, anon, authenticated;
grant execute on function public.deduct_tokens(text, uuid, text, integer) to authenticated, service_role;
comment on function public.deduct_tokens(text, uuid, text, integer) is 'tokens-client: spend a feature''s cost atomically, journaled, idempotent on request_id';

-- get_token_stats: the organization's balances, totals and per-type state (the
-- guide's stats endpoint), once what is due is settled. Members and the service role.
-- Works with GET (read-only) and POST.
create or replace function public.get_token_stats(organization_id uuid default null)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  target_organization uuid;
  organization_plan text;
  due record;
  by_type jsonb;
begin
  select r.organization_id into target_organization
  from ai_tokens_internal.resolve_organization(get_token_stats.organization_id) r;
  organization_plan := ai_tokens_internal.organization_plan(target_organization);

  -- Settle what is due in token_type order (the order every multi-row writer locks in);
  -- a read-only transaction cannot, and reads the projection below instead.
  if current_setting('transaction_read_only') <> 'on' then
    for due in
      select t.token_type from public.ai_tokens t
      where t.organization_id = target_organization and t.settle_after <= now()
      order by t.token_type
    loop
      perform ai_tokens_internal.settle_tokens(target_organization, due.token_type);
    end loop;
  end if;

  select coalesce(jsonb_agg(jsonb_build_object(
           'token_type', t.token_type,
           'balance', t.balance,
           'allocated', t.total_allocated,
           'used', greatest(t.total_allocated - (t.balance - t.purchased_balance), 0),
           'purchased_balance', t.purchased_balance,
           'reserved', t.reserved,
           'available', greatest(t.balance - t.reserved, 0),
           'debt', t.debt,
           'percent_remaining', case when t.total_allocated > 0
             then round(100.0 * t.balance / t.total_allocated, 1) else 0 end,
           'low', t.total_allocated > 0 and t.balance::bigint * 5 < t.total_allocated,
           'period_started_at', t.period_started_at,
           'refresh_date', t.refresh_date
         ) order by t.token_type), '[]'::jsonb)
  into by_type
  from public.ai_token_types tt
  left join public.ai_tokens stored
    on stored.organization_id = target_organization and stored.token_type = tt.token_type
  cross join lateral (
    select (case when stored.id is null
                 then ai_tokens_internal.unopened_account(target_organization, tt.token_type)
                 else ai_tokens_internal.settled_view(stored) end).*
  ) t;

  return jsonb_build_object(
    'organization_id', target_organization,
    'plan', organization_plan,
    'enforcement', ai_tokens_internal.enforcement_mode(target_organization),
    'total_balance', (select coalesce(sum((e ->> 'balance')::bigint), 0) from jsonb_array_elements(by_type) e),
    'total_allocated', (select coalesce(sum((e ->> 'allocated')::bigint), 0) from jsonb_array_elements(by_type) e),
    'total_used', (select coalesce(sum((e ->> 'used')::bigint), 0) from jsonb_array_elements(by_type) e),
    'total_purchased', (select coalesce(sum((e ->> 'purchased_balance')::bigint), 0) from jsonb_array_elements(by_type) e),
    'total_reserved', (select coalesce(sum((e ->> 'reserved')::bigint), 0) from jsonb_array_elements(by_type) e),
    'total_available', (select coalesce(sum((e ->> 'available')::bigint), 0) from jsonb_array_elements(by_type) e),
    'by_type', by_type);
end
$$;
revoke all on function public.get_token_stats(uuid) from public, anon, authenticated;
grant execute on function public.get_token_stats(uuid) to authenticated, service_role;
comment on function public.get_token_stats(uuid) is 'tokens-client: balances, totals and per-type state of an organization';

-- ============================================================ 16_reports.sql
-- tokens-client · 16 reports: the guide's "usage by feature" and "per-user usage".
set check_function_bodies = off;

-- get_usage_report: uses and tokens grouped by feature, user (with the display name from
-- the user_display_name seam) or day, since a moment. Owners/admins see their whole
-- organization, members only their own entries (the usage log's policy, applied here
-- explicitly since the display names come from the host). The service role must name
-- the organization.
create or replace function public.get_usage_report(
  organization_id uuid default null,
  group_by text default 'feature',
  since timestamptz default null
)
returns table (key text, label text, uses bigint, tokens bigint, day date)
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  target_organization uuid;
  caller_role text;
  everyone boolean;
begin
  if group_by is null or group_by not in ('feature', 'user', 'day') then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'group_by must be feature, user or day',
      jsonb_build_object('field', 'group_by'));
  end if;
  select r.organization_id, r.role into target_organization, caller_role
  from ai_tokens_internal.resolve_organization(get_usage_report.organization_id) r;
  everyone := caller_role in ('service_role', 'owner', 'admin');

  -- Whole UTC days from the rollup (ai_token_usage_daily), the partial day `since`
  -- falls in from the log itself: the cost follows the days asked for, not the log.
  return query
  with entries as (
    select d.feature, d.user_id, d.uses, d.tokens, d.day as entry_day
    from public.ai_token_usage_daily d
    where d.organization_id = target_organization
      and (everyone or d.user_id = (select auth.uid()))
      and (since is null or d.day > (since at time zone 'UTC')::date)
      and (d.uses <> 0 or d.tokens <> 0)
    union all
    select l.feature_used, l.user_id, 1::bigint, l.tokens_deducted::bigint, (l.created_at at time zone 'UTC')::date
    from public.ai_token_usage_log l
    where since is not null
      and l.organization_id = target_organization
      and (everyone or l.user_id = (select auth.uid()))
      and l.created_at >= since
      and l.created_at < ((since at time zone 'UTC')::date + 1)::timestamp at time zone 'UTC'
  )
  select g.key, g.label, g.uses, g.tokens, g.day
  from (
    select e.feature as key, e.feature as label, sum(e.uses)::bigint as uses,
           sum(e.tokens)::bigint as tokens, null::date as day
    from entries e where group_by = 'feature'
    group by e.feature
    union all
    select coalesce(e.user_id::text, 'service'),
           coalesce(ai_tokens_internal.user_display_name(e.user_id), e.user_id::text, 'service role'),
           sum(e.uses)::bigint, sum(e.tokens)::bigint, null::date
    from entries e
    where group_by = 'user'
    group by e.user_id
    union all
    select e.entry_day::text, to_char(e.entry_day, 'YYYY-MM-DD'), sum(e.uses)::bigint,
           sum(e.tokens)::bigint, e.entry_day
    from entries e where group_by = 'day'
    group by e.entry_day
  ) g
  order by case when group_by = 'day' then g.key end desc nulls last, g.tokens desc, g.key;
end
$$;
revoke all on function public.get_usage_report(uuid, text, timestamptz) from public, anon, authenticated;
grant execute on function public.get_usage_report(uuid, text, timestamptz) to authenticated, service_role;
comment on function public.get_usage_report(uuid, text, timestamptz) is 'tokens-client: uses and tokens by feature, user or day';

-- ============================================================ gone
-- Replaced by spend_context, take_rate_slot and settle_after (no caller is left).
drop function if exists ai_tokens_internal.open_spend(text, uuid, text);
drop function if exists ai_tokens_internal.policy_refusal(uuid, uuid, text, text, boolean, text);
drop function if exists ai_tokens_internal.price_feature(text, uuid);
drop function if exists ai_tokens_internal.look_up_feature(text, uuid);
drop function if exists ai_tokens_internal.check_rate_limit(uuid, uuid, text, text);
drop function if exists ai_tokens_internal.settlement_due(uuid, text, timestamptz);
-- The rate limit no longer reads the log by user; settle_after has its own index.
drop index if exists public.ai_token_usage_log_user_date_idx;
drop index if exists public.idx_ai_tokens_refresh;
