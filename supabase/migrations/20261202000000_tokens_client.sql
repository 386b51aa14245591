-- tokens-client baseline: every capability of supabase/schemas/, in file order.
--
-- Generated once from supabase/schemas/*.sql (2026-12-02), when the earlier unreleased
-- migrations were squashed. Released migrations are never edited: a change to
-- supabase/schemas/ ships as a new migration (scripts/new-migration NAME).
-- Safe to run twice (the SQL editor, a re-deployed migration).

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
language sql
stable
set search_path = ''
as $$
  select coalesce((select auth.role()), '') = 'service_role'
      or (coalesce((select auth.role()), '') = '' and session_user in ('postgres', 'supabase_admin'))
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
language sql
volatile
set search_path = ''
as $$
  select set_config('tokens.change', coalesce(journal_as.change::text, ''), true)
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
  if to_regprocedure('ai_tokens_internal.memberships()') is null then
    create function ai_tokens_internal.memberships()
    returns table (organization_id uuid, role text)
    language sql
    stable
    security definer
    set search_path = ''
    as $$
      select p.organization_id, coalesce(to_jsonb(p) ->> 'role', 'member')
      from public.user_profiles p
      where p.id = (select auth.uid())
        and p.organization_id is not null
    $$;
  end if;
end
$seam$;
revoke all on function ai_tokens_internal.memberships() from public, anon;
grant execute on function ai_tokens_internal.memberships() to authenticated, service_role;

-- Does the host have this organization?
do $seam$
begin
  if to_regprocedure('ai_tokens_internal.organization_exists(uuid)') is null then
    create function ai_tokens_internal.organization_exists(organization_id uuid)
    returns boolean
    language sql
    stable
    security definer
    set search_path = ''
    as $$
      select exists (select 1 from public.organizations o where o.id = organization_exists.organization_id)
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
  if to_regprocedure('ai_tokens_internal.organization_plan(uuid)') is null then
    create function ai_tokens_internal.organization_plan(organization_id uuid)
    returns text
    language sql
    stable
    security definer
    set search_path = ''
    as $$
      select o.plan::text from public.organizations o where o.id = organization_plan.organization_id
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

  select count(*)::integer,
         (array_agg(m.organization_id order by m.organization_id)
            filter (where requested_organization_id is null or m.organization_id = requested_organization_id))[1],
         (array_agg(m.role order by m.organization_id)
            filter (where requested_organization_id is null or m.organization_id = requested_organization_id))[1]
  into membership_count, found_organization, found_role
  from ai_tokens_internal.memberships() m;

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

-- ============================================================ 03_catalog.sql
-- tokens-client · 03 catalog: token types, plans, allocations, features, settings.
--
-- All of it is data: the pricing page changes with INSERT/UPDATE (as the service role
-- or in the SQL editor), never with code. A plan is a row of ai_plans; what it offers is
-- its ai_plan_allocations rows (a plan without a row for a token type does not offer
-- the features of that type). Adding a plan is inserting it and its allocations.
set check_function_bodies = off;

-- ------------------------------------------------------------------------- tables

create table if not exists public.ai_token_types (
  token_type text primary key check (token_type ~ '^[a-z][a-z0-9_]{0,62}$'),
  description text not null default ''
);
comment on table public.ai_token_types is 'The kinds of AI tokens; an organization holds one ai_tokens row per type (created on first use).';

create table if not exists public.ai_plans (
  plan text primary key check (plan ~ '^[a-z][a-z0-9_-]{0,62}$'),
  description text not null default '',
  created_at timestamptz not null default now()
);
comment on table public.ai_plans is 'The plans tokens-client knows, by the name the host stores in organizations.plan (read through the organization_plan seam).';

create table if not exists public.ai_plan_allocations (
  plan text not null references public.ai_plans (plan) on update cascade on delete cascade,
  token_type text not null references public.ai_token_types (token_type) on update cascade,
  monthly_allocation integer not null check (monthly_allocation between 0 and 1000000000),
  primary key (plan, token_type)
);
comment on table public.ai_plan_allocations is 'Monthly tokens per plan and token type ("limits match the pricing page"). A plan without a row for a type does not offer the features of that type.';
create index if not exists ai_plan_allocations_token_type_idx on public.ai_plan_allocations (token_type);

create table if not exists public.ai_features (
  feature text primary key check (feature ~ '^[a-z][a-z0-9_]{0,62}$'),
  token_type text not null references public.ai_token_types (token_type) on update cascade,
  cost integer not null check (cost between 1 and 1000000),
  description text not null default '',
  created_at timestamptz not null default now()
);
comment on table public.ai_features is 'The feature catalog: what each AI feature costs, in tokens of which type.';
create index if not exists ai_features_token_type_idx on public.ai_features (token_type);

-- One row of settings (the singleton column can only be true).
create table if not exists public.ai_token_settings (
  singleton boolean primary key default true check (singleton),
  cancelled_plan text not null references public.ai_plans (plan) on update cascade,
  admin_refunds_per_period integer not null default 10 check (admin_refunds_per_period >= 0),
  updated_at timestamptz not null default now()
);
comment on table public.ai_token_settings is 'tokens-client settings. cancelled_plan: the plan an organization moves to when its subscription ends (Stripe customer.subscription.deleted). admin_refunds_per_period: how many deductions the owners and admins of an organization may refund per period and token type (the service role is not limited).';

-- --------------------------------------------------------------- privileges and RLS
-- Supabase's default privileges grant everything on new tables in public to anon and
-- authenticated; RLS is the first wall, these grants the second: clients may only read.

revoke all on public.ai_token_types, public.ai_plans, public.ai_plan_allocations, public.ai_features,
  public.ai_token_settings from anon, authenticated;
grant select on public.ai_token_types, public.ai_plans, public.ai_plan_allocations, public.ai_features
  to authenticated;
grant all on public.ai_token_types, public.ai_plans, public.ai_plan_allocations, public.ai_features,
  public.ai_token_settings to service_role;

alter table public.ai_token_types enable row level security;
alter table public.ai_plans enable row level security;
alter table public.ai_plan_allocations enable row level security;
alter table public.ai_features enable row level security;
alter table public.ai_token_settings enable row level security;

drop policy if exists "Signed-in users can view token types" on public.ai_token_types;
create policy "Signed-in users can view token types"
  on public.ai_token_types for select to authenticated using (true);
drop policy if exists "Signed-in users can view plans" on public.ai_plans;
create policy "Signed-in users can view plans"
  on public.ai_plans for select to authenticated using (true);
drop policy if exists "Signed-in users can view plan allocations" on public.ai_plan_allocations;
create policy "Signed-in users can view plan allocations"
  on public.ai_plan_allocations for select to authenticated using (true);
drop policy if exists "Signed-in users can view the feature catalog" on public.ai_features;
create policy "Signed-in users can view the feature catalog"
  on public.ai_features for select to authenticated using (true);
drop policy if exists "Service role manages settings" on public.ai_token_settings;
create policy "Service role manages settings"
  on public.ai_token_settings for all to service_role using (true) with check (true);

-- ------------------------------------------------------------------ catalog data
-- The guide's catalog, written only into an empty table: a second run (or an upgrade)
-- never brings back a row you deleted or changes one you edited.

insert into public.ai_token_types (token_type, description)
select * from (values
  ('lead_generation', 'Finding and qualifying leads'),
  ('goal_generation', 'Generating goals and quests'),
  ('strategy_analysis', 'Analysing strategy'),
  ('forecast', 'Revenue forecasting'),
  ('general', 'General assistant use')
) as defaults (token_type, description)
where not exists (select 1 from public.ai_token_types)
on conflict do nothing;

insert into public.ai_plans (plan, description)
select * from (values
  ('starter', 'No AI features'),
  ('pro', 'AI features with a monthly allocation'),
  ('enterprise', 'Ten times the Pro allocation')
) as defaults (plan, description)
where not exists (select 1 from public.ai_plans)
on conflict do nothing;

insert into public.ai_plan_allocations (plan, token_type, monthly_allocation)
select * from (values
  ('pro', 'lead_generation', 50),
  ('pro', 'goal_generation', 20),
  ('pro', 'strategy_analysis', 100),
  ('pro', 'forecast', 30),
  ('pro', 'general', 50),
  ('enterprise', 'lead_generation', 500),
  ('enterprise', 'goal_generation', 200),
  ('enterprise', 'strategy_analysis', 1000),
  ('enterprise', 'forecast', 300),
  ('enterprise', 'general', 500)
) as defaults (plan, token_type, monthly_allocation)
where not exists (select 1 from public.ai_plan_allocations)
on conflict do nothing;
-- starter: no rows, so AI features are not available on it.

insert into public.ai_features (feature, token_type, cost, description)
select * from (values
  ('generate_goal', 'goal_generation', 3, 'Generate a financial goal'),
  ('generate_quest', 'goal_generation', 2, 'Generate a quest for a goal'),
  ('generate_leads', 'lead_generation', 5, 'Generate a batch of leads'),
  ('analyze_strategy', 'strategy_analysis', 10, 'Analyse a strategy'),
  ('forecast_revenue', 'forecast', 5, 'Forecast revenue'),
  ('ask_assistant', 'general', 1, 'Ask the assistant a question')
) as defaults (feature, token_type, cost, description)
where not exists (select 1 from public.ai_features)
on conflict do nothing;

insert into public.ai_token_settings (cancelled_plan) values ('starter') on conflict do nothing;

-- ------------------------------------------------------------------- helpers

-- Refuse a plan name ai_plans does not have (400 invalid_plan); null passes.
create or replace function ai_tokens_internal.require_plan(plan text)
returns void
language plpgsql
stable
set search_path = ''
as $$
begin
  if require_plan.plan is not null
     and not exists (select 1 from public.ai_plans p where p.plan = require_plan.plan) then
    perform ai_tokens_internal.refuse(400, 'invalid_plan', 'Unknown plan',
      jsonb_build_object('plan', left(require_plan.plan, 50)));
  end if;
end
$$;
revoke all on function ai_tokens_internal.require_plan(text) from public, anon, authenticated;
grant execute on function ai_tokens_internal.require_plan(text) to service_role;

-- The plan's monthly allocation for a token type (0 when the plan has none).
create or replace function ai_tokens_internal.plan_allocation(plan text, token_type text)
returns integer
language sql
stable
set search_path = ''
as $$
  select coalesce(
    (select a.monthly_allocation from public.ai_plan_allocations a
     where a.plan = plan_allocation.plan and a.token_type = plan_allocation.token_type),
    0)
$$;
revoke all on function ai_tokens_internal.plan_allocation(text, text) from public, anon, authenticated;
grant execute on function ai_tokens_internal.plan_allocation(text, text) to service_role;

-- The feature's price and whether the organization's plan offers it. Refuses a missing
-- (400) or unknown (404) feature; leaves "not in plan" to the caller (plan_known is
-- false when the host's plan is not a row of ai_plans).
create or replace function ai_tokens_internal.look_up_feature(feature text, organization_id uuid)
returns table (token_type text, cost integer, plan text, in_plan boolean, plan_known boolean)
language plpgsql
stable
set search_path = ''
as $$
declare
  found_type text;
  found_cost integer;
  organization_plan text;
begin
  if look_up_feature.feature is null or length(btrim(look_up_feature.feature)) = 0 then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'feature is required',
      jsonb_build_object('field', 'feature'));
  end if;
  select f.token_type, f.cost into found_type, found_cost
  from public.ai_features f where f.feature = look_up_feature.feature;
  if found_type is null then
    perform ai_tokens_internal.refuse(404, 'unknown_feature', 'Unknown feature',
      jsonb_build_object('feature', left(look_up_feature.feature, 100)));
  end if;
  organization_plan := ai_tokens_internal.organization_plan(look_up_feature.organization_id);
  return query select found_type, found_cost, organization_plan,
    exists (select 1 from public.ai_plan_allocations a
            where a.plan = organization_plan and a.token_type = found_type),
    exists (select 1 from public.ai_plans p where p.plan = organization_plan);
end
$$;
revoke all on function ai_tokens_internal.look_up_feature(text, uuid) from public, anon, authenticated;
grant execute on function ai_tokens_internal.look_up_feature(text, uuid) to service_role;

-- ============================================================ 04_enforcement.sql
-- tokens-client · 04 enforcement: how strictly spending is checked.
--
-- enforce (default): refusals refuse. monitor: nothing is refused; spending takes what
-- is there (never below zero) and records what would have been refused. off: nothing is
-- checked or charged. One global row (organization_id null) and per-organization rows.
set check_function_bodies = off;

create table if not exists public.ai_token_enforcement_modes (
  id bigint generated always as identity primary key,
  organization_id uuid,
  mode text not null check (mode in ('enforce', 'monitor', 'off')),
  updated_at timestamptz not null default now(),
  constraint ai_token_enforcement_modes_organization_key unique nulls not distinct (organization_id)
);
comment on table public.ai_token_enforcement_modes is 'How strictly spending is checked. The row without organization_id is the global default; an organization''s row overrides it. No row at all means enforce.';

revoke all on public.ai_token_enforcement_modes from anon, authenticated;
grant select on public.ai_token_enforcement_modes to authenticated;
grant all on public.ai_token_enforcement_modes to service_role;
alter table public.ai_token_enforcement_modes enable row level security;

drop policy if exists "Members view their organization's mode and the default"
  on public.ai_token_enforcement_modes;
create policy "Members view their organization's mode and the default"
  on public.ai_token_enforcement_modes for select to authenticated
  using (
    organization_id is null
    or organization_id in (select m.organization_id from ai_tokens_internal.memberships() m)
  );
drop policy if exists "Service role manages enforcement modes" on public.ai_token_enforcement_modes;
create policy "Service role manages enforcement modes"
  on public.ai_token_enforcement_modes for all to service_role using (true) with check (true);

insert into public.ai_token_enforcement_modes (organization_id, mode) values (null, 'enforce')
on conflict do nothing;

-- The organization's enforcement mode: its own row, else the global default, else enforce.
create or replace function ai_tokens_internal.enforcement_mode(organization_id uuid)
returns text
language sql
stable
set search_path = ''
as $$
  select coalesce(
    (select e.mode from public.ai_token_enforcement_modes e
     where e.organization_id = enforcement_mode.organization_id),
    (select e.mode from public.ai_token_enforcement_modes e where e.organization_id is null),
    'enforce')
$$;
revoke all on function ai_tokens_internal.enforcement_mode(uuid) from public, anon, authenticated;
grant execute on function ai_tokens_internal.enforcement_mode(uuid) to service_role;

-- set_enforcement_mode: 'enforce' | 'monitor' | 'off' for one organization, or the
-- global default when organization_id is null; 'inherit' removes an organization's
-- own mode so the default applies again. Service role only.
create or replace function public.set_enforcement_mode(mode text, organization_id uuid default null)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  previous_mode text;
begin
  perform ai_tokens_internal.require_service_role('set_enforcement_mode');
  if set_enforcement_mode.mode is null
     or set_enforcement_mode.mode not in ('enforce', 'monitor', 'off', 'inherit')
     or (set_enforcement_mode.mode = 'inherit' and set_enforcement_mode.organization_id is null) then
    perform ai_tokens_internal.refuse(400, 'invalid_mode', 'Unknown enforcement mode',
      jsonb_build_object('mode', left(set_enforcement_mode.mode, 50),
                         'allowed', case when set_enforcement_mode.organization_id is null
                           then '["enforce","monitor","off"]'::jsonb
                           else '["enforce","monitor","off","inherit"]'::jsonb end));
  end if;
  perform ai_tokens_internal.require_organization(set_enforcement_mode.organization_id);

  previous_mode := ai_tokens_internal.enforcement_mode(set_enforcement_mode.organization_id);
  if set_enforcement_mode.mode = 'inherit' then
    delete from public.ai_token_enforcement_modes e
    where e.organization_id = set_enforcement_mode.organization_id;
  else
    insert into public.ai_token_enforcement_modes as e (organization_id, mode)
    values (set_enforcement_mode.organization_id, set_enforcement_mode.mode)
    on conflict on constraint ai_token_enforcement_modes_organization_key
    do update set mode = excluded.mode, updated_at = now();
  end if;

  return jsonb_build_object(
    'organization_id', set_enforcement_mode.organization_id,
    'mode', ai_tokens_internal.enforcement_mode(set_enforcement_mode.organization_id),
    'previous_mode', previous_mode,
    'overridden', set_enforcement_mode.organization_id is not null and exists (
      select 1 from public.ai_token_enforcement_modes e
      where e.organization_id = set_enforcement_mode.organization_id));
end
$$;
revoke all on function public.set_enforcement_mode(text, uuid) from public, anon, authenticated;
grant execute on function public.set_enforcement_mode(text, uuid) to service_role;
comment on function public.set_enforcement_mode(text, uuid) is 'tokens-client: enforce, monitor or off, per organization or globally (service role)';

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
  constraint ai_tokens_organization_token_type_key unique (organization_id, token_type),
  constraint ai_tokens_purchased_within_balance check (purchased_balance >= 0 and purchased_balance <= balance),
  constraint ai_tokens_reserved_not_negative check (reserved >= 0),
  -- ai_tokens_internal.balance_ceiling(): the most tokens a row may hold.
  constraint ai_tokens_balance_within_ceiling check (balance <= 1000000000)
);
comment on table public.ai_tokens is 'One row per organization and token type. balance never goes below zero (constraint), and only the token functions change it. organization_id names an organization of the host app (see the organization_exists seam).';
comment on column public.ai_tokens.purchased_balance is 'The part of balance that came from grants (top-ups); it survives the monthly refresh and is spent after the period allowance.';
comment on column public.ai_tokens.reserved is 'Tokens held by active reservations: available = balance - reserved.';
comment on column public.ai_tokens.debt is 'Tokens used beyond what was available (a reservation committed above its estimate when the balance could not cover it): taken from the next period''s allowance at the refresh.';
comment on column public.ai_tokens.period_started_at is 'Start of the current allocation period (the last refresh boundary).';
comment on column public.ai_tokens.period_peak_allocation is 'The highest total_allocated reached in the current period (kept by a trigger): an upgrade adds only the allocation above it, so plan cycling never re-grants an allowance.';
create index if not exists ai_tokens_token_type_idx on public.ai_tokens (token_type);
create index if not exists idx_ai_tokens_refresh on public.ai_tokens (refresh_date) where refresh_date is not null;

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
-- again from total_allocated when a new period starts (refresh, initialize_tokens).
create or replace function ai_tokens_internal.track_period_peak()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if tg_op = 'INSERT' or new.period_started_at is distinct from old.period_started_at then
    new.period_peak_allocation := new.total_allocated;
  else
    new.period_peak_allocation := greatest(old.period_peak_allocation, new.total_allocated);
  end if;
  return new;
end
$$;
revoke all on function ai_tokens_internal.track_period_peak() from public, anon, authenticated;

create or replace trigger ai_tokens_track_period_peak
  before insert or update on public.ai_tokens
  for each row execute function ai_tokens_internal.track_period_peak();

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
  token_type text not null references public.ai_token_types (token_type) on update cascade,
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
create index if not exists ai_token_ledger_token_type_idx on public.ai_token_ledger (token_type);
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
-- transaction that crosses it; the unique index keeps it once per period.
create or replace function ai_tokens_internal.journal_token_balance()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  change jsonb := nullif(current_setting('tokens.change', true), '')::jsonb;
  change_kind text := coalesce(change ->> 'kind', 'adjustment');
  ledger_id bigint;
begin
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

  if tg_op = 'UPDATE' and new.balance < old.balance then
    insert into public.ai_token_alerts (organization_id, token_type, kind, reason, period, details)
    select new.organization_id, new.token_type, crossed.kind, change_kind, new.period_started_at,
           jsonb_build_object('balance', new.balance, 'allocated', new.total_allocated,
                              'purchased_balance', new.purchased_balance,
                              'used', greatest(new.total_allocated - (new.balance - new.purchased_balance), 0),
                              'ledger_id', ledger_id)
    from (values
      ('usage_80_percent',
        new.total_allocated > 0
        and (new.balance - new.purchased_balance)::bigint * 5 < new.total_allocated
        and not (old.total_allocated > 0
                 and (old.balance - old.purchased_balance)::bigint * 5 < old.total_allocated)),
      ('balance_below_20_percent',
        new.total_allocated > 0
        and new.balance::bigint * 5 < new.total_allocated
        and not (old.total_allocated > 0 and old.balance::bigint * 5 < old.total_allocated)),
      ('balance_exhausted', new.balance = 0 and old.balance > 0)
    ) as crossed (kind, happened)
    where crossed.happened
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
-- when refunded). Usage rows older than the first journal row of their type predate
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
    and not exists (select 1 from journal j where j.kind = 'refund' and j.usage_id = u.id);
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

-- Is lazy maintenance due for this row: refresh date passed, a grant expired with
-- tokens left, or an active hold past its expiry?
create or replace function ai_tokens_internal.settlement_due(organization_id uuid, token_type text, refresh_date timestamptz)
returns boolean
language sql
stable
set search_path = ''
as $$
  select coalesce(settlement_due.refresh_date <= now(), false)
      or exists (
        select 1 from public.ai_token_reservations r
        where r.organization_id = settlement_due.organization_id
          and r.token_type = settlement_due.token_type
          and r.status = 'active' and r.expires_at <= now())
      or exists (
        select 1 from public.ai_token_grants g
        where g.organization_id = settlement_due.organization_id
          and g.token_type = settlement_due.token_type
          and g.remaining > 0 and g.expires_at <= now())
$$;
revoke all on function ai_tokens_internal.settlement_due(uuid, text, timestamptz) from public, anon, authenticated;
grant execute on function ai_tokens_internal.settlement_due(uuid, text, timestamptz) to service_role;

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
begin
  select * into account from public.ai_tokens t
  where t.organization_id = settle_tokens.organization_id and t.token_type = settle_tokens.token_type
  for update;
  if not found then
    return null;
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
  if settled_tokens.account.id is null
     or not ai_tokens_internal.settlement_due(settled_tokens.account.organization_id, settled_tokens.account.token_type,
                                   settled_tokens.account.refresh_date) then
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
    where ai_tokens_internal.settlement_due(t.organization_id, t.token_type, t.refresh_date)
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
  caller uuid := (select auth.uid());
  target_organization uuid;
  price record;
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
  select o.resolved_organization_id, o.enforcement into target_organization, mode
  from ai_tokens_internal.open_spend(reserve_tokens.feature, reserve_tokens.organization_id, reserve_tokens.request_id) o;

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

  select * into price from ai_tokens_internal.look_up_feature(reserve_tokens.feature, target_organization);

  context := jsonb_build_object('feature', reserve_tokens.feature, 'user_id', caller,
                                'request_id', reserve_tokens.request_id, 'estimate', reserve_tokens.estimate);
  held_amount := 0;
  if mode <> 'off' then
    refused := ai_tokens_internal.policy_refusal(caller, target_organization, reserve_tokens.feature,
                                      price.plan, price.in_plan, price.token_type);
    if refused is not null and mode = 'enforce' then
      return ai_tokens_internal.refusal_response(refused, target_organization, price.token_type, context);
    end if;

    update public.ai_tokens t
    set reserved = t.reserved + reserve_tokens.estimate, updated_at = now()
    where t.organization_id = target_organization
      and t.token_type = price.token_type
      and t.balance - t.reserved >= reserve_tokens.estimate
      and not ai_tokens_internal.settlement_due(t.organization_id, t.token_type, t.refresh_date)
    returning t.balance - t.reserved into available;
    if available is not null then
      held_amount := reserve_tokens.estimate;
    else
      account := ai_tokens_internal.open_account(target_organization, price.token_type);
      held_amount := ai_tokens_internal.obtainable(account, reserve_tokens.estimate, mode);
      if held_amount < reserve_tokens.estimate then
        insufficient := ai_tokens_internal.insufficient_refusal(reserve_tokens.feature, reserve_tokens.estimate,
                                                     price.token_type, account);
        if mode = 'enforce' then
          return ai_tokens_internal.refusal_response(insufficient, target_organization, price.token_type, context);
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
    (target_organization, price.token_type, reserve_tokens.feature, caller, reserve_tokens.estimate, held_amount,
     mode, reserve_tokens.request_id, now() + make_interval(secs => reserve_tokens.ttl_seconds))
  returning * into hold;
  if refused is not null then
    perform ai_tokens_internal.record_refusal(refused, target_organization, price.token_type, mode,
      context || jsonb_build_object('reservation_id', hold.id, 'held', held_amount));
  end if;

  if available is null then
    -- off mode checked nothing: report what is available all the same.
    select greatest(t.balance - t.reserved, 0) into available from public.ai_tokens t
    where t.organization_id = target_organization and t.token_type = price.token_type;
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
begin
  if reservation_for_settlement.reservation_id is null then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'reservation_id is required',
      jsonb_build_object('field', 'reservation_id'));
  end if;
  if not ai_tokens_internal.is_service_role() and (select auth.uid()) is null then
    perform ai_tokens_internal.refuse(401, 'unauthenticated', 'Sign in to use AI features');
  end if;
  select * into hold from public.ai_token_reservations r where r.id = reservation_for_settlement.reservation_id;
  if found and not ai_tokens_internal.is_service_role() then
    caller_role := ai_tokens_internal.membership_role(hold.organization_id);
  end if;
  if not found or (not ai_tokens_internal.is_service_role() and caller_role is null) then
    perform ai_tokens_internal.refuse(404, 'reservation_not_found',
      format('Reservation (id=%s) not found', reservation_for_settlement.reservation_id),
      jsonb_build_object('reservation_id', reservation_for_settlement.reservation_id));
  end if;
  if not ai_tokens_internal.is_service_role() and hold.user_id is distinct from (select auth.uid())
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
create index if not exists ai_token_usage_log_user_date_idx on public.ai_token_usage_log (user_id, created_at desc);
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
-- At most max_requests deductions/reservations per user in any window_seconds. The
-- most specific row applies: an organization's own row, then feature+plan, feature,
-- plan, and the default (no organization, plan or feature). The service role is never
-- limited.
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
comment on table public.ai_rate_limits is 'Per-user spending limits: at most max_requests deductions/reservations in any window_seconds. The most specific row applies (organization, feature+plan, feature, plan, default). A row with a feature counts only that feature''s spending.';
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

create or replace function ai_tokens_internal.check_rate_limit(user_id uuid, organization_id uuid, plan text, feature text)
returns table (max_requests integer, window_seconds integer, recent integer, retry_after_seconds integer)
language plpgsql
volatile
set search_path = ''
as $$
declare
  rule record;
  counted integer;
  oldest timestamptz;
begin
  select l.max_requests, l.window_seconds, l.feature into rule
  from public.ai_rate_limits l
  where (l.organization_id is null or l.organization_id = check_rate_limit.organization_id)
    and (l.plan is null or l.plan = check_rate_limit.plan)
    and (l.feature is null or l.feature = check_rate_limit.feature)
  order by (l.organization_id is not null) desc, (l.feature is not null) desc,
           (l.plan is not null) desc
  limit 1;
  if not found then
    return;
  end if;

  perform ai_tokens_internal.lock('rate', check_rate_limit.user_id::text);

  select count(*)::integer, min(e.created_at) into counted, oldest
  from (
    select s.created_at
    from (
      select l.created_at from public.ai_token_usage_log l
      where l.user_id = check_rate_limit.user_id
        and l.organization_id = check_rate_limit.organization_id
        and l.reservation_id is null
        and l.created_at > now() - make_interval(secs => rule.window_seconds)
        and (rule.feature is null or l.feature_used = rule.feature)
      union all
      select r.created_at from public.ai_token_reservations r
      where r.user_id = check_rate_limit.user_id
        and r.organization_id = check_rate_limit.organization_id
        and r.created_at > now() - make_interval(secs => rule.window_seconds)
        and (rule.feature is null or r.feature = rule.feature)
    ) s
    order by s.created_at desc
    limit rule.max_requests
  ) e;

  return query select rule.max_requests::integer, rule.window_seconds::integer, counted,
    case when counted >= rule.max_requests then
      greatest(1, ceil(extract(epoch from oldest + make_interval(secs => rule.window_seconds) - now())))::integer
    end;
end
$$;
revoke all on function ai_tokens_internal.check_rate_limit(uuid, uuid, text, text) from public, anon, authenticated;

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


-- ============================================================ 12_alerts.sql
-- tokens-client · 12 alerts: threshold crossings and refused spending.
--
-- Threshold alerts (80 % of the period allowance used, balance under 20 %, exhausted)
-- are written once per period and token type by the journal trigger (06_ledger.sql) in
-- the transaction that crosses the line; refused or would-be-refused spends by the
-- spending functions. Refusals are counted, not stored one row each: one row per
-- organization, token type, user, reason and hour (refusal_count, last_refused_at, the
-- details of the latest), so a member hammering a refused feature adds one row an hour.
-- Each new row is announced with pg_notify('ai_token_alerts', '{"id":…,
-- "organization_id":…}') — ids only, since any database session may listen; a listener
-- reads the row under its own rights. A bucket is announced once, when it is created.
set check_function_bodies = off;

create table if not exists public.ai_token_alerts (
  id bigint generated always as identity primary key,
  organization_id uuid not null,
  token_type text not null references public.ai_token_types (token_type) on update cascade,
  kind text not null check (kind in ('usage_80_percent', 'balance_below_20_percent', 'balance_exhausted', 'refused')),
  reason text,
  period timestamptz not null,
  details jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now(),
  user_id uuid,
  refusal_count integer not null default 1 check (refusal_count >= 1),
  bucket timestamptz,
  last_refused_at timestamptz
);
comment on column public.ai_token_alerts.refusal_count is 'refused rows: how many refusals of this user, reason and hour (bucket); 1 for threshold alerts.';
comment on column public.ai_token_alerts.bucket is 'refused rows: the hour the refusals were counted in; null for threshold alerts.';
create unique index if not exists ai_token_alerts_refusal_bucket_key
  on public.ai_token_alerts (organization_id, token_type, reason, user_id, bucket) nulls not distinct
  where kind = 'refused';
comment on table public.ai_token_alerts is 'Threshold alerts (once per period and token type) and refused or would-be-refused spending, counted per organization, token type, user, reason and hour. Each new row is announced with pg_notify(''ai_token_alerts'', ''{"id", "organization_id"}'').';
create unique index if not exists ai_token_alerts_once_per_period_key
  on public.ai_token_alerts (organization_id, token_type, kind, period) where kind <> 'refused';
create index if not exists ai_token_alerts_organization_date_idx on public.ai_token_alerts (organization_id, created_at desc);
create index if not exists ai_token_alerts_token_type_idx on public.ai_token_alerts (token_type);

revoke all on public.ai_token_alerts from anon, authenticated;
grant select on public.ai_token_alerts to authenticated;
grant all on public.ai_token_alerts to service_role;
alter table public.ai_token_alerts enable row level security;
drop policy if exists "Admins can view their organization's alerts" on public.ai_token_alerts;
create policy "Admins can view their organization's alerts"
  on public.ai_token_alerts for select to authenticated
  using (organization_id in (
    select m.organization_id from ai_tokens_internal.memberships() m where m.role in ('owner', 'admin')));
drop policy if exists "Service role manages alerts" on public.ai_token_alerts;
create policy "Service role manages alerts"
  on public.ai_token_alerts for all to service_role using (true) with check (true);

-- Send every alert to listeners of the ai_token_alerts channel (delivered on commit).
create or replace function ai_tokens_internal.notify_token_alert()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  perform pg_notify('ai_token_alerts', jsonb_build_object('id', new.id, 'organization_id', new.organization_id)::text);
  return null;
end
$$;
revoke all on function ai_tokens_internal.notify_token_alert() from public, anon, authenticated;

create or replace trigger ai_token_alerts_notify
  after insert on public.ai_token_alerts
  for each row execute function ai_tokens_internal.notify_token_alert();

-- Count a refused (enforce) or would-be-refused (monitor) spend in its 'refused' row:
-- the row of this organization, token type, user, reason and hour, created by the first
-- refusal (and announced then) and counted up by the next ones, which keep the latest
-- details.
create or replace function ai_tokens_internal.record_refusal(refusal jsonb, organization_id uuid, token_type text, enforcement text, context jsonb)
returns void
language sql
volatile
set search_path = ''
as $$
  insert into public.ai_token_alerts as a
    (organization_id, token_type, kind, reason, user_id, bucket, last_refused_at, period, details)
  values (
    record_refusal.organization_id, record_refusal.token_type, 'refused', record_refusal.refusal ->> 'reason',
    (record_refusal.context ->> 'user_id')::uuid, date_trunc('hour', now()), clock_timestamp(),
    coalesce((select t.period_started_at from public.ai_tokens t
              where t.organization_id = record_refusal.organization_id
                and t.token_type = record_refusal.token_type), now()),
    (record_refusal.refusal -> 'details') || coalesce(record_refusal.context, '{}'::jsonb)
      || jsonb_build_object('http_status', (record_refusal.refusal ->> 'http_status')::integer,
                            'message', record_refusal.refusal ->> 'message',
                            'enforcement', record_refusal.enforcement,
                            'refused', record_refusal.enforcement = 'enforce'))
  on conflict (organization_id, token_type, reason, user_id, bucket) where kind = 'refused'
  do update set refusal_count = a.refusal_count + 1, last_refused_at = excluded.last_refused_at,
                details = excluded.details
$$;
revoke all on function ai_tokens_internal.record_refusal(jsonb, uuid, text, text, jsonb) from public, anon, authenticated;


-- ============================================================ 13_spending.sql
-- tokens-client · 13 spending: has_enough_tokens, deduct_tokens, get_token_stats.
--
-- Spending is one conditional UPDATE (balance - reserved >= cost, nothing due for
-- settlement) whose trigger journals it, plus the usage-log insert, in one transaction
-- and one round trip. When that UPDATE matches nothing, the row is opened (created on
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

-- The common opening of a spend (deduct_tokens, reserve_tokens): a request_id of 1 to
-- 200 characters when given, the organization the caller may act on, a feature named,
-- and the organization's enforcement mode. Raises on bad input (nothing written).
create or replace function ai_tokens_internal.open_spend(feature text, organization_id uuid, request_id text)
returns table (resolved_organization_id uuid, enforcement text)
language plpgsql
stable
set search_path = ''
as $$
declare
  resolved uuid;
begin
  if open_spend.request_id is not null
     and (length(open_spend.request_id) = 0 or length(open_spend.request_id) > 200) then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'request_id must be 1 to 200 characters',
      jsonb_build_object('field', 'request_id'));
  end if;
  select r.organization_id into resolved
  from ai_tokens_internal.resolve_organization(open_spend.organization_id) r;
  if open_spend.feature is null or length(btrim(open_spend.feature)) = 0 then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'feature is required',
      jsonb_build_object('field', 'feature'));
  end if;
  return query select resolved, ai_tokens_internal.enforcement_mode(resolved);
end
$$;
revoke all on function ai_tokens_internal.open_spend(text, uuid, text) from public, anon, authenticated;

-- The policy refusal of a spend, or null when allowed: the feature outside the plan
-- (403) before the caller's rate limit (429; users only, the service role is never
-- limited). Shared by deduct_tokens and reserve_tokens.
create or replace function ai_tokens_internal.policy_refusal(caller uuid, organization_id uuid, feature text,
                                       plan text, in_plan boolean, token_type text)
returns jsonb
language plpgsql
volatile
set search_path = ''
as $$
declare
  limited record;
begin
  if not policy_refusal.in_plan then
    return ai_tokens_internal.not_in_plan_refusal(policy_refusal.feature, policy_refusal.plan, policy_refusal.token_type);
  end if;
  if policy_refusal.caller is null then
    return null;
  end if;
  select * into limited from ai_tokens_internal.check_rate_limit(policy_refusal.caller, policy_refusal.organization_id,
                                                      policy_refusal.plan, policy_refusal.feature);
  if limited.retry_after_seconds is not null then
    return ai_tokens_internal.refusal(429, 'rate_limited', 'Rate limit exceeded. Wait before next request.',
      jsonb_build_object('feature', policy_refusal.feature, 'limit', limited.max_requests,
                         'window_seconds', limited.window_seconds,
                         'retry_after_seconds', limited.retry_after_seconds));
  end if;
  return null;
end
$$;
revoke all on function ai_tokens_internal.policy_refusal(uuid, uuid, text, text, boolean, text) from public, anon, authenticated;

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

-- The feature's price, refusing a feature the plan does not offer (403): look_up_feature
-- for has_enough_tokens, which raises instead of returning refusals.
create or replace function ai_tokens_internal.price_feature(feature text, organization_id uuid)
returns table (token_type text, cost integer, plan text)
language plpgsql
stable
set search_path = ''
as $$
declare
  priced record;
begin
  select * into priced from ai_tokens_internal.look_up_feature(price_feature.feature, price_feature.organization_id);
  if not priced.in_plan then
    perform ai_tokens_internal.raise_refusal(
      ai_tokens_internal.not_in_plan_refusal(price_feature.feature, priced.plan, priced.token_type));
  end if;
  return query select priced.token_type::text, priced.cost::integer, priced.plan::text;
end
$$;
revoke all on function ai_tokens_internal.price_feature(text, uuid) from public, anon, authenticated;
grant execute on function ai_tokens_internal.price_feature(text, uuid) to service_role;

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
  target_organization uuid;
  price record;
  account public.ai_tokens;
begin
  select r.organization_id into target_organization
  from ai_tokens_internal.resolve_organization(has_enough_tokens.organization_id) r;
  if ai_tokens_internal.enforcement_mode(target_organization) <> 'enforce' then
    perform ai_tokens_internal.look_up_feature(has_enough_tokens.feature, target_organization);
    return true;
  end if;
  select * into price from ai_tokens_internal.price_feature(has_enough_tokens.feature, target_organization);

  select * into account from public.ai_tokens t
  where t.organization_id = target_organization and t.token_type = price.token_type;
  if not found then
    -- Not used yet: the row it would be opened with on first use.
    account := ai_tokens_internal.unopened_account(target_organization, price.token_type);
  else
    account := ai_tokens_internal.settled_tokens(account);
  end if;
  return account.balance - account.reserved >= price.cost;
end
$$;
revoke all on function public.has_enough_tokens(text, uuid) from public, anon, authenticated;
grant execute on function public.has_enough_tokens(text, uuid) to authenticated, service_role;
comment on function public.has_enough_tokens(text, uuid) is 'tokens-client: may the caller''s organization afford this feature now';

-- deduct_tokens: spend the feature's cost from the caller's organization.
-- Hot path: one conditional UPDATE (balance - reserved >= cost, nothing due) whose
-- trigger writes the journal row, plus the usage-log insert. When that UPDATE matches
-- nothing, the row is locked and settled (refresh, expiries) and the decision is taken
-- again under the lock. Spends the period allowance first, then purchased tokens.
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
  caller uuid := (select auth.uid());
  target_organization uuid;
  price record;
  mode text;
  previous public.ai_token_usage_log;
  new_usage_id uuid := gen_random_uuid();
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
  select o.resolved_organization_id, o.enforcement into target_organization, mode
  from ai_tokens_internal.open_spend(deduct_tokens.feature, deduct_tokens.organization_id, deduct_tokens.request_id) o;

  -- A retry is answered before pricing: the first call spent, so a plan change or a
  -- catalog edit since then must not turn its replay into a refusal.
  if deduct_tokens.request_id is not null then
    -- Serialise retries of one request so exactly one of them spends.
    perform ai_tokens_internal.lock('deduction', target_organization::text || '/' || deduct_tokens.request_id);
    select * into previous from public.ai_token_usage_log l
    where l.organization_id = target_organization and l.request_id = deduct_tokens.request_id;
    if found then
      -- A key belongs to its caller and its payload: anything else replays nothing.
      if previous.user_id is distinct from caller then
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
        'enforcement', mode,
        'would_have_refused', null,
        'message', format('Used %s tokens for %s', previous.tokens_deducted, previous.feature_used));
    end if;
  end if;

  select * into price from ai_tokens_internal.look_up_feature(deduct_tokens.feature, target_organization);
  -- Metered usage (e.g. LLM tokens counted by the provider): the feature's cost per unit.
  if price.cost::bigint * deduct_tokens.quantity > 1000000000 then
    perform ai_tokens_internal.refuse(400, 'invalid_amount', 'quantity times the feature''s cost exceeds 1000000000',
      jsonb_build_object('field', 'quantity', 'quantity', deduct_tokens.quantity, 'cost', price.cost,
                         'max', 1000000000));
  end if;
  cost := price.cost * deduct_tokens.quantity;

  if mode = 'off' then
    select t.balance into remaining from public.ai_tokens t
    where t.organization_id = target_organization and t.token_type = price.token_type;
    return jsonb_build_object(
      'success', true,
      'remaining_balance', coalesce(remaining, 0),
      'tokens_deducted', 0,
      'token_type', price.token_type,
      'feature', deduct_tokens.feature,
      'organization_id', target_organization,
      'usage_id', null,
      'request_id', deduct_tokens.request_id,
      'replayed', false,
      'enforcement', mode,
      'would_have_refused', null,
      'message', format('Token checks are off: nothing deducted for %s', deduct_tokens.feature));
  end if;

  context := jsonb_build_object('feature', deduct_tokens.feature, 'user_id', caller,
                                'request_id', deduct_tokens.request_id);
  refused := ai_tokens_internal.policy_refusal(caller, target_organization, deduct_tokens.feature,
                                    price.plan, price.in_plan, price.token_type);
  if refused is not null and mode = 'enforce' then
    return ai_tokens_internal.refusal_response(refused, target_organization, price.token_type, context);
  end if;

  perform ai_tokens_internal.journal_as(jsonb_build_object('kind', 'deduction', 'usage_id', new_usage_id));
  update public.ai_tokens t
  set balance = t.balance - cost,
      purchased_balance = least(t.purchased_balance, t.balance - cost),
      updated_at = now()
  where t.organization_id = target_organization
    and t.token_type = price.token_type
    and t.balance - t.reserved >= cost
    and not ai_tokens_internal.settlement_due(t.organization_id, t.token_type, t.refresh_date)
  returning t.balance, t.purchased_balance into remaining, remaining_purchased;
  perform ai_tokens_internal.journal_as(null);

  if remaining is not null then
    charged := cost;
  else
    -- Slow path: lock and settle the row, then decide under the lock.
    account := ai_tokens_internal.open_account(target_organization, price.token_type);
    charged := ai_tokens_internal.obtainable(account, cost, mode);
    if charged < cost then
      insufficient := ai_tokens_internal.insufficient_refusal(deduct_tokens.feature, cost, price.token_type, account);
      if mode = 'enforce' then
        return ai_tokens_internal.refusal_response(insufficient, target_organization, price.token_type, context);
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
    end if;
  end if;

  if charged > 0 then
    insert into public.ai_token_usage_log
      (id, organization_id, user_id, token_type, feature_used, tokens_deducted, balance_after, request_id, quantity)
    values
      (new_usage_id, target_organization, caller, price.token_type, deduct_tokens.feature, charged, remaining,
       deduct_tokens.request_id, deduct_tokens.quantity);
    -- The period allowance is used up: the rest came from grants.
    if remaining = remaining_purchased then
      perform ai_tokens_internal.consume_grants(target_organization, price.token_type, remaining_purchased, new_usage_id);
    end if;
  end if;
  if refused is not null then
    perform ai_tokens_internal.record_refusal(refused, target_organization, price.token_type, mode,
      context || jsonb_build_object('charged', charged));
  end if;

  return jsonb_build_object(
    'success', true,
    'remaining_balance', remaining,
    'tokens_deducted', charged,
    'token_type', price.token_type,
    'feature', deduct_tokens.feature,
    'organization_id', target_organization,
    'usage_id', case when charged > 0 then new_usage_id end,
    'request_id', deduct_tokens.request_id,
    'replayed', false,
    'enforcement', mode,
    'would_have_refused', ai_tokens_internal.refusal_summary(refused),
    'message', format('Used %s tokens for %s', charged, deduct_tokens.feature));
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
      where t.organization_id = target_organization
        and ai_tokens_internal.settlement_due(t.organization_id, t.token_type, t.refresh_date)
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


-- ============================================================ 14_refunds.sql
-- tokens-client · 14 refunds: give one deduction back, once.
set check_function_bodies = off;

-- refund_deduction: give back the tokens of one usage-log row, once (journaled
-- 'refund'); a second refund is refused (409 already_refunded). Purchased tokens go
-- back to their grant while it is valid, everything else to the period allowance.
-- The service role or an owner/admin of the organization (404 for non-members, 403
-- for other members). Owners and admins may refund ai_token_settings.admin_refunds_per_period
-- deductions per period and token type (429 refund_limit_reached after that); the
-- service role is not limited.
create or replace function public.refund_deduction(usage_id uuid, reason text default null)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  refunded public.ai_token_usage_log;
  caller_role text;
  account public.ai_tokens;
  restored_purchased integer;
  refund_limit integer;
  refunds_used bigint;
begin
  if refund_deduction.usage_id is null then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'usage_id is required', jsonb_build_object('field', 'usage_id'));
  end if;
  if refund_deduction.reason is not null and length(refund_deduction.reason) > 500 then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'reason must be at most 500 characters',
      jsonb_build_object('field', 'reason'));
  end if;
  if not ai_tokens_internal.is_service_role() and (select auth.uid()) is null then
    perform ai_tokens_internal.refuse(401, 'unauthenticated', 'Sign in to use AI features');
  end if;
  select * into refunded from public.ai_token_usage_log l where l.id = refund_deduction.usage_id;
  if found and not ai_tokens_internal.is_service_role() then
    caller_role := ai_tokens_internal.membership_role(refunded.organization_id);
  end if;
  if not found or (not ai_tokens_internal.is_service_role() and caller_role is null) then
    perform ai_tokens_internal.refuse(404, 'usage_not_found', format('Usage (id=%s) not found', refund_deduction.usage_id),
      jsonb_build_object('usage_id', refund_deduction.usage_id));
  end if;
  if not ai_tokens_internal.is_service_role() and caller_role not in ('owner', 'admin') then
    perform ai_tokens_internal.refuse(403, 'admin_required', 'Only organization owners and admins can refund',
      jsonb_build_object('usage_id', refunded.id));
  end if;

  account := ai_tokens_internal.settle_tokens(refunded.organization_id, refunded.token_type);
  update public.ai_token_usage_log l
  set refunded_at = now(), refunded_by = (select auth.uid()), refund_reason = refund_deduction.reason
  where l.id = refunded.id and l.refunded_at is null
  returning * into refunded;
  if not found then
    select * into refunded from public.ai_token_usage_log l where l.id = refund_deduction.usage_id;
    perform ai_tokens_internal.refuse(409, 'already_refunded', format('Usage (id=%s) was already refunded', refunded.id),
      jsonb_build_object('usage_id', refunded.id, 'refunded_at', refunded.refunded_at));
  end if;
  if account.id is null then
    perform ai_tokens_internal.refuse(409, 'not_initialized',
      format('Organization (id=%s) has no %s tokens to refund into', refunded.organization_id, refunded.token_type),
      jsonb_build_object('usage_id', refunded.id, 'token_type', refunded.token_type));
  end if;

  -- Owners and admins refund at most admin_refunds_per_period deductions per period and
  -- token type (counted, this one included, under the row lock settle_tokens took); the
  -- service role is not limited. Otherwise deduct + refund would be free AI calls.
  if not ai_tokens_internal.is_service_role() and account.id is not null then
    select s.admin_refunds_per_period into refund_limit from public.ai_token_settings s;
    select count(*) into refunds_used from public.ai_token_usage_log l
    where l.organization_id = refunded.organization_id and l.token_type = refunded.token_type
      and l.refunded_by is not null and l.refunded_at >= account.period_started_at;
    if refunds_used > coalesce(refund_limit, 0) then
      perform ai_tokens_internal.refuse(429, 'refund_limit_reached', 'Refund limit reached for this period',
        jsonb_build_object('usage_id', refunded.id, 'token_type', refunded.token_type, 'limit', coalesce(refund_limit, 0),
                           'used', refunds_used - 1, 'refresh_date', account.refresh_date));
    end if;
  end if;

  if account.balance::bigint + refunded.tokens_deducted > ai_tokens_internal.balance_ceiling() then
    perform ai_tokens_internal.refuse(409, 'balance_ceiling', 'The balance would exceed its maximum',
      jsonb_build_object('usage_id', refunded.id, 'token_type', refunded.token_type, 'balance', account.balance,
                         'tokens', refunded.tokens_deducted, 'max_balance', ai_tokens_internal.balance_ceiling()));
  end if;

  with restored as (
    update public.ai_token_grants g
    set remaining = g.remaining + u.amount
    from public.ai_token_grant_usage u
    where u.usage_id = refunded.id and g.id = u.grant_id
      and g.expired_at is null and (g.expires_at is null or g.expires_at > now())
    returning u.amount
  )
  select coalesce(sum(r.amount), 0) into restored_purchased from restored r;

  perform ai_tokens_internal.journal_as(jsonb_build_object(
    'kind', 'refund', 'usage_id', refunded.id, 'reason', refund_deduction.reason));
  update public.ai_tokens t
  set balance = t.balance + refunded.tokens_deducted,
      purchased_balance = t.purchased_balance + restored_purchased,
      updated_at = now()
  where t.id = account.id
  returning * into account;
  perform ai_tokens_internal.journal_as(null);

  return jsonb_build_object(
    'usage_id', refunded.id, 'organization_id', refunded.organization_id, 'token_type', refunded.token_type,
    'feature', refunded.feature_used, 'tokens_refunded', refunded.tokens_deducted,
    'restored_to_purchased', restored_purchased, 'remaining_balance', account.balance,
    'refunded_at', refunded.refunded_at, 'reason', refunded.refund_reason);
end
$$;
revoke all on function public.refund_deduction(uuid, text) from public, anon, authenticated;
grant execute on function public.refund_deduction(uuid, text) to authenticated, service_role;
comment on function public.refund_deduction(uuid, text) is 'tokens-client: give one deduction back, once (org admins, service role)';


-- ============================================================ 15_plan_changes.sql
-- tokens-client · 15 plan changes: move an organization to another plan.
--
-- The plan itself is stored by the host (the change_organization_plan seam); the
-- balances of the current period follow it at once. Stripe events name the change, so a
-- redelivered event applies once.
set check_function_bodies = off;

create table if not exists public.ai_plan_change_events (
  event_id text primary key check (length(event_id) between 1 and 255),
  organization_id uuid not null,
  plan text not null,
  previous_plan text,
  result jsonb not null,
  processed_at timestamptz not null default now()
);
comment on table public.ai_plan_change_events is 'Processed plan-change events (e.g. Stripe event ids): set_organization_plan applies each once.';
create index if not exists ai_plan_change_events_organization_id_idx on public.ai_plan_change_events (organization_id);

revoke all on public.ai_plan_change_events from anon, authenticated;
grant all on public.ai_plan_change_events to service_role;
alter table public.ai_plan_change_events enable row level security;
drop policy if exists "Service role manages plan change events" on public.ai_plan_change_events;
create policy "Service role manages plan change events"
  on public.ai_plan_change_events for all to service_role using (true) with check (true);

-- set_organization_plan: move an organization to a plan and adjust the current period
-- of every token type at once (journaled 'plan_change'): a higher allocation adds what
-- lies above the highest allocation reached in the period (period_peak_allocation), so
-- a period never spends more than that peak plus purchased tokens; a lower one caps the period allowance (balance minus
-- purchased tokens) at the new allocation. Purchased tokens are kept. Idempotent on
-- event_id (e.g. a Stripe event id): a retry returns the first result; the same
-- event_id for another organization or plan is refused (409). Service role only.
create or replace function public.set_organization_plan(organization_id uuid, plan text, event_id text default null)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  processed public.ai_plan_change_events;
  previous_plan text;
  token record;
  account public.ai_tokens;
  new_allocation integer;
  new_balance integer;
  changes jsonb := '[]'::jsonb;
  result jsonb;
begin
  perform ai_tokens_internal.require_service_role('set_organization_plan');
  perform ai_tokens_internal.require_argument(set_organization_plan.organization_id is not null, 'organization_id');
  perform ai_tokens_internal.require_argument(set_organization_plan.plan is not null, 'plan');
  perform ai_tokens_internal.require_plan(set_organization_plan.plan);
  if set_organization_plan.event_id is not null
     and (length(set_organization_plan.event_id) = 0 or length(set_organization_plan.event_id) > 255) then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'event_id must be 1 to 255 characters',
      jsonb_build_object('field', 'event_id'));
  end if;

  if set_organization_plan.event_id is not null then
    perform ai_tokens_internal.lock('plan_event', set_organization_plan.event_id);
    select * into processed from public.ai_plan_change_events e where e.event_id = set_organization_plan.event_id;
    if found then
      if processed.organization_id <> set_organization_plan.organization_id
         or processed.plan <> set_organization_plan.plan then
        perform ai_tokens_internal.refuse(409, 'idempotency_conflict',
          'event_id was already applied to another plan change',
          jsonb_build_object('event_id', set_organization_plan.event_id,
                             'organization_id', processed.organization_id, 'plan', processed.plan));
      end if;
      return processed.result || jsonb_build_object('replayed', true);
    end if;
  end if;

  perform ai_tokens_internal.require_organization(set_organization_plan.organization_id);
  -- One plan change of an organization at a time (initialize_tokens takes the same lock).
  perform ai_tokens_internal.lock('organization', set_organization_plan.organization_id::text);
  previous_plan := ai_tokens_internal.organization_plan(set_organization_plan.organization_id);

  for token in select tt.token_type from public.ai_token_types tt order by tt.token_type loop
    new_allocation := ai_tokens_internal.plan_allocation(set_organization_plan.plan, token.token_type);
    -- Open and settle first (under the old plan), so the change applies to the current
    -- period.
    account := ai_tokens_internal.open_account(set_organization_plan.organization_id, token.token_type);
    perform ai_tokens_internal.journal_as(jsonb_build_object(
      'kind', 'plan_change', 'external_id', set_organization_plan.event_id,
      'reason', format('plan %s -> %s', previous_plan, set_organization_plan.plan)));
    new_balance := least(ai_tokens_internal.balance_ceiling(), case
      -- Only the allocation above the period's highest is new: a downgrade forfeits the
      -- allowance above the lower plan, and cycling back up does not grant it again.
      when new_allocation > account.total_allocated
        then account.balance + greatest(new_allocation - account.period_peak_allocation, 0)
      when new_allocation < account.total_allocated
        then least(account.balance - account.purchased_balance, new_allocation) + account.purchased_balance
      else account.balance end);
    if new_balance <> account.balance or new_allocation <> account.total_allocated then
      update public.ai_tokens t
      set balance = new_balance, total_allocated = new_allocation, updated_at = now()
      where t.id = account.id;
    end if;
    changes := changes || jsonb_build_object(
      'token_type', token.token_type, 'previous_allocation', account.total_allocated,
      'allocation', new_allocation, 'previous_balance', account.balance, 'balance', new_balance);
    perform ai_tokens_internal.journal_as(null);
  end loop;

  perform ai_tokens_internal.change_organization_plan(set_organization_plan.organization_id, set_organization_plan.plan);

  result := jsonb_build_object(
    'organization_id', set_organization_plan.organization_id,
    'plan', set_organization_plan.plan,
    'previous_plan', previous_plan,
    'event_id', set_organization_plan.event_id,
    'changes', changes,
    'replayed', false);
  if set_organization_plan.event_id is not null then
    insert into public.ai_plan_change_events (event_id, organization_id, plan, previous_plan, result)
    values (set_organization_plan.event_id, set_organization_plan.organization_id, set_organization_plan.plan,
            previous_plan, result);
  end if;
  return result;
end
$$;
revoke all on function public.set_organization_plan(uuid, text, text) from public, anon, authenticated;
grant execute on function public.set_organization_plan(uuid, text, text) to service_role;
comment on function public.set_organization_plan(uuid, text, text) is 'tokens-client: move an organization to a plan, idempotent on event_id (service role)';


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

  return query
  with entries as (
    select l.feature_used, l.user_id, l.tokens_deducted, (l.created_at at time zone 'UTC')::date as entry_day
    from public.ai_token_usage_log l
    where l.organization_id = target_organization
      and (everyone or l.user_id = (select auth.uid()))
      and (since is null or l.created_at >= since)
  )
  select g.key, g.label, g.uses, g.tokens, g.day
  from (
    select e.feature_used as key, e.feature_used as label, count(*) as uses,
           sum(e.tokens_deducted)::bigint as tokens, null::date as day
    from entries e where group_by = 'feature'
    group by e.feature_used
    union all
    select coalesce(e.user_id::text, 'service'),
           coalesce(ai_tokens_internal.user_display_name(e.user_id), e.user_id::text, 'service role'),
           count(*), sum(e.tokens_deducted)::bigint, null::date
    from entries e
    where group_by = 'user'
    group by e.user_id
    union all
    select e.entry_day::text, to_char(e.entry_day, 'YYYY-MM-DD'), count(*),
           sum(e.tokens_deducted)::bigint, e.entry_day
    from entries e where group_by = 'day'
    group by e.entry_day
  ) g
  order by case when group_by = 'day' then g.key end desc nulls last, g.tokens desc, g.key;
end
$$;
revoke all on function public.get_usage_report(uuid, text, timestamptz) from public, anon, authenticated;
grant execute on function public.get_usage_report(uuid, text, timestamptz) to authenticated, service_role;
comment on function public.get_usage_report(uuid, text, timestamptz) is 'tokens-client: uses and tokens by feature, user or day';

-- ============================================================ 17_stripe.sql
-- tokens-client · 17 Stripe: what Stripe prices mean, for the stripe-webhook Edge Function.
--
-- Which Stripe price puts an organization on which plan, and which price is a pack of
-- tokens, are data, not code: the pricing page changes without a deploy. Only the
-- service role (the webhook) reads or edits these tables; clients never see them. A
-- subscription that ends moves the organization to ai_token_settings.cancelled_plan.
-- The rows below are demo price ids for local development and tests of the flow; they
-- match no real Stripe price. Add your own rows (as service_role) for your prices.
set check_function_bodies = off;

create table if not exists public.stripe_price_plans (
  price_id text primary key check (price_id ~ '^price_[A-Za-z0-9_]{1,200}$'),
  plan text not null references public.ai_plans (plan) on update cascade on delete cascade,
  description text not null default '',
  created_at timestamptz not null default now()
);
comment on table public.stripe_price_plans is 'Stripe subscription price → plan. A customer.subscription.created/updated event moves the organization to the plan of its first mapped price.';
create index if not exists stripe_price_plans_plan_idx on public.stripe_price_plans (plan);

create table if not exists public.stripe_token_packs (
  price_id text primary key check (price_id ~ '^price_[A-Za-z0-9_]{1,200}$'),
  token_type text not null references public.ai_token_types (token_type) on update cascade,
  amount integer not null check (amount between 1 and 1000000000),
  -- Whole days, so the webhook can compute expires_at from the Stripe event's own time
  -- (a retry computes the same date); null: the purchased tokens never expire.
  expires_after_days integer check (expires_after_days between 1 and 3650),
  description text not null default '',
  created_at timestamptz not null default now()
);
comment on table public.stripe_token_packs is 'Stripe one-time price → token pack. A paid checkout.session (mode payment) grants amount tokens of token_type.';
create index if not exists stripe_token_packs_token_type_idx on public.stripe_token_packs (token_type);

-- RLS is the first wall, grants the second: nobody but the service role gets in.
revoke all on public.stripe_price_plans, public.stripe_token_packs from anon, authenticated;
grant all on public.stripe_price_plans, public.stripe_token_packs to service_role;
alter table public.stripe_price_plans enable row level security;
alter table public.stripe_token_packs enable row level security;

drop policy if exists "Service role manages the Stripe price plans" on public.stripe_price_plans;
create policy "Service role manages the Stripe price plans"
  on public.stripe_price_plans for all to service_role using (true) with check (true);
drop policy if exists "Service role manages the Stripe token packs" on public.stripe_token_packs;
create policy "Service role manages the Stripe token packs"
  on public.stripe_token_packs for all to service_role using (true) with check (true);

insert into public.stripe_price_plans (price_id, plan, description)
select * from (values
  ('price_demo_pro_monthly', 'pro', 'Demo: Pro, monthly'),
  ('price_demo_pro_yearly', 'pro', 'Demo: Pro, yearly'),
  ('price_demo_enterprise_monthly', 'enterprise', 'Demo: Enterprise, monthly')
) as defaults (price_id, plan, description)
where not exists (select 1 from public.stripe_price_plans)
on conflict do nothing;

insert into public.stripe_token_packs (price_id, token_type, amount, expires_after_days, description)
select * from (values
  ('price_demo_pack_general_100', 'general', 100, null::integer, 'Demo: 100 general tokens'),
  ('price_demo_pack_forecast_50', 'forecast', 50, 90, 'Demo: 50 forecast tokens, valid 90 days')
) as defaults (price_id, token_type, amount, expires_after_days, description)
where not exists (select 1 from public.stripe_token_packs)
on conflict do nothing;

-- ------------------------------------------------------------ subscription order
-- Stripe delivers events in no particular order and retries for days, so the newest
-- event of a subscription wins: each subscription keeps the `created` time of the last
-- event applied, an older event is acknowledged and ignored, and once a subscription
-- is deleted (final in Stripe) no later event brings its plan back.
create table if not exists public.stripe_subscriptions (
  subscription_id text primary key check (length(subscription_id) between 1 and 255),
  organization_id uuid not null,
  plan text not null,
  deleted boolean not null,
  event_id text not null,
  event_created timestamptz not null,
  updated_at timestamptz not null default now()
);
comment on table public.stripe_subscriptions is 'Per Stripe subscription: the newest event applied (created time, id), the plan it set and whether the subscription was deleted. Older events, and events after the deletion, are ignored.';
create index if not exists stripe_subscriptions_organization_id_idx on public.stripe_subscriptions (organization_id);

-- Events the webhook acknowledged but refused for good (an out-of-range amount, a
-- malformed pack): 200 to Stripe, so it stops retrying, and a row here for people.
create table if not exists public.stripe_rejected_events (
  event_id text primary key check (length(event_id) between 1 and 255),
  type text not null,
  reason text not null,
  details jsonb not null default '{}'::jsonb,
  received_at timestamptz not null default now()
);
comment on table public.stripe_rejected_events is 'Stripe events acknowledged with 200 but not applied because they can never succeed (reason, details).';

revoke all on public.stripe_subscriptions, public.stripe_rejected_events from anon, authenticated;
grant all on public.stripe_subscriptions, public.stripe_rejected_events to service_role;
alter table public.stripe_subscriptions enable row level security;
alter table public.stripe_rejected_events enable row level security;
drop policy if exists "Service role manages Stripe subscriptions" on public.stripe_subscriptions;
create policy "Service role manages Stripe subscriptions"
  on public.stripe_subscriptions for all to service_role using (true) with check (true);
drop policy if exists "Service role manages rejected Stripe events" on public.stripe_rejected_events;
create policy "Service role manages rejected Stripe events"
  on public.stripe_rejected_events for all to service_role using (true) with check (true);

-- apply_subscription_event: apply one Stripe subscription event in order. plan null:
-- the subscription ended (deleted, or a status that ends it) and the organization moves
-- to ai_token_settings.cancelled_plan. deleted: customer.subscription.deleted, final.
-- An event older than the newest applied one of its subscription (by `created`; a tie
-- goes to the later delivery), or any other event after the deletion, is ignored
-- ({"applied": false, "ignored": "stale_event" | "subscription_deleted"}); otherwise the
-- plan is set through set_organization_plan (idempotent on event_id). Service role only.
create or replace function public.apply_subscription_event(
  organization_id uuid, subscription_id text, plan text, deleted boolean, event_id text, event_created timestamptz
)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  known public.stripe_subscriptions;
  target_plan text := apply_subscription_event.plan;
  result jsonb;
begin
  perform ai_tokens_internal.require_service_role('apply_subscription_event');
  perform ai_tokens_internal.require_argument(apply_subscription_event.organization_id is not null, 'organization_id');
  perform ai_tokens_internal.require_argument(apply_subscription_event.subscription_id is not null, 'subscription_id');
  perform ai_tokens_internal.require_argument(apply_subscription_event.deleted is not null, 'deleted');
  perform ai_tokens_internal.require_argument(apply_subscription_event.event_id is not null, 'event_id');
  perform ai_tokens_internal.require_argument(apply_subscription_event.event_created is not null, 'event_created');
  if length(apply_subscription_event.subscription_id) not between 1 and 255 then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'subscription_id must be 1 to 255 characters',
      jsonb_build_object('field', 'subscription_id'));
  end if;
  if target_plan is null then
    select s.cancelled_plan into target_plan from public.ai_token_settings s;
  end if;
  perform ai_tokens_internal.require_argument(target_plan is not null, 'plan');

  perform ai_tokens_internal.lock('stripe_subscription', apply_subscription_event.subscription_id);
  select * into known from public.stripe_subscriptions s
  where s.subscription_id = apply_subscription_event.subscription_id;
  if found and known.event_id <> apply_subscription_event.event_id then
    if apply_subscription_event.event_created < known.event_created
       or (known.deleted and not apply_subscription_event.deleted) then
      return jsonb_build_object(
        'applied', false,
        'ignored', case when apply_subscription_event.event_created < known.event_created
                        then 'stale_event' else 'subscription_deleted' end,
        'subscription_id', known.subscription_id, 'organization_id', known.organization_id,
        'plan', known.plan, 'event_id', apply_subscription_event.event_id,
        'newest_event_id', known.event_id, 'newest_event_created', known.event_created);
    end if;
  end if;

  result := public.set_organization_plan(apply_subscription_event.organization_id, target_plan,
                                         apply_subscription_event.event_id);
  insert into public.stripe_subscriptions as s
    (subscription_id, organization_id, plan, deleted, event_id, event_created)
  values (apply_subscription_event.subscription_id, apply_subscription_event.organization_id, target_plan,
          apply_subscription_event.deleted, apply_subscription_event.event_id, apply_subscription_event.event_created)
  on conflict on constraint stripe_subscriptions_pkey do update
    set organization_id = excluded.organization_id, plan = excluded.plan, deleted = excluded.deleted,
        event_id = excluded.event_id, event_created = excluded.event_created, updated_at = now()
    where s.event_created <= excluded.event_created;
  return result || jsonb_build_object('applied', true, 'subscription_id', apply_subscription_event.subscription_id);
end
$$;
revoke all on function public.apply_subscription_event(uuid, text, text, boolean, text, timestamptz) from public, anon, authenticated;
grant execute on function public.apply_subscription_event(uuid, text, text, boolean, text, timestamptz) to service_role;
comment on function public.apply_subscription_event(uuid, text, text, boolean, text, timestamptz) is 'tokens-client: apply a Stripe subscription event in order: the newest event per subscription wins (service role)';

-- ============================================================ 18_schedule.sql
-- tokens-client · 18 schedule: the daily settlement job.
--
-- Installed only where pg_cron exists (on Supabase: enable it under Database →
-- Extensions first, then run this file again). cron.schedule replaces a job of the
-- same name, so a second run changes nothing.
do $$
begin
  if exists (select from pg_extension where extname = 'pg_cron') then
    perform cron.schedule('ai-tokens-refresh-due', '17 3 * * *', 'select public.refresh_due_tokens()');
  end if;
end
$$;

-- ============================================================ 19_webhooks.sql
-- tokens-client · 19 webhooks: alerts delivered to each organization's HTTP endpoints.
--
-- An organization's webhook endpoints are rows (URL, whsec_ secret, which alert kinds),
-- managed by the service role and readable without the secret by the organization's
-- owners and admins. Every ai_token_alerts row that an endpoint subscribes to writes one
-- ai_webhook_deliveries row in the alert's own transaction (the outbox), so an alert is
-- never lost and never sent for a rolled-back spend. Deliverers (the webhook-deliver
-- Edge Function on a pg_cron schedule, `tokens webhooks deliver`) claim due rows with
-- FOR UPDATE SKIP LOCKED under a lease, POST them signed in the Standard Webhooks format
-- (webhook-id = the delivery's id, stable over every retry), and report each attempt.
-- A failed attempt is retried after min(retry_cap, retry_base * 2^(attempt-1)) seconds;
-- after max_attempts the delivery is kept as 'failed'.
set check_function_bodies = off;

-- ------------------------------------------------------------------ tables

create table if not exists public.ai_webhook_endpoints (
  id uuid primary key default gen_random_uuid(),
  organization_id uuid not null,
  url text not null check (url ~ '^https?://[^\s/?#]+' and length(url) <= 2000),
  secret text not null check (secret ~ '^whsec_[A-Za-z0-9+/]+={0,2}$'),
  -- null: every alert kind, including kinds added later.
  alert_kinds text[] check (cardinality(alert_kinds) > 0),
  description text check (length(description) <= 500),
  max_attempts integer not null default 8 check (max_attempts between 1 and 100),
  retry_base_seconds integer not null default 60 check (retry_base_seconds between 1 and 86400),
  retry_cap_seconds integer not null default 21600 check (retry_cap_seconds between 1 and 604800),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint ai_webhook_endpoints_url_key unique (organization_id, url)
);
comment on table public.ai_webhook_endpoints is 'Webhook endpoints of an organization: alerts of alert_kinds (null: all) are POSTed to url, signed with secret (Standard Webhooks, whsec_<base64>). Owners and admins read every column but secret.';

create table if not exists public.ai_webhook_deliveries (
  id uuid primary key default gen_random_uuid(),
  endpoint_id uuid not null references public.ai_webhook_endpoints (id) on delete cascade,
  organization_id uuid not null,
  alert_id bigint not null references public.ai_token_alerts (id) on delete cascade,
  event_type text not null,
  payload jsonb not null,
  status text not null default 'pending' check (status in ('pending', 'delivered', 'failed')),
  attempts integer not null default 0,
  next_attempt_at timestamptz not null default now(),
  lease_id uuid,
  last_http_status integer,
  last_error text,
  created_at timestamptz not null default now(),
  delivered_at timestamptz,
  failed_at timestamptz,
  constraint ai_webhook_deliveries_once_key unique (endpoint_id, alert_id)
);
comment on table public.ai_webhook_deliveries is 'The webhook outbox: one row per alert and endpoint, written in the alert''s transaction. id is the webhook-id of every attempt. pending rows are due at next_attempt_at (a claim leases a row by moving it to the lease''s end); delivered and failed rows stay.';
create index if not exists ai_webhook_deliveries_due_idx
  on public.ai_webhook_deliveries (next_attempt_at) where status = 'pending';
create index if not exists ai_webhook_deliveries_alert_idx on public.ai_webhook_deliveries (alert_id);
create index if not exists ai_webhook_deliveries_organization_idx
  on public.ai_webhook_deliveries (organization_id, created_at desc);

create table if not exists public.ai_webhook_delivery_attempts (
  id bigint generated always as identity primary key,
  delivery_id uuid not null references public.ai_webhook_deliveries (id) on delete cascade,
  attempt integer not null,
  lease_id uuid not null,
  claimed_at timestamptz not null default now(),
  finished_at timestamptz,
  ok boolean,
  http_status integer,
  error text,
  -- when the delivery is due again after this failed attempt (null: delivered or given up)
  retry_at timestamptz,
  constraint ai_webhook_delivery_attempts_key unique (delivery_id, attempt)
);
comment on table public.ai_webhook_delivery_attempts is 'Every delivery attempt: when it was claimed and finished, the HTTP status or error, and when it is retried.';
create index if not exists ai_webhook_delivery_attempts_lease_idx on public.ai_webhook_delivery_attempts (lease_id);

-- Clients read endpoints without the secret (a column grant) and the deliveries of their
-- organization; the service role manages all three tables.
revoke all on public.ai_webhook_endpoints, public.ai_webhook_deliveries, public.ai_webhook_delivery_attempts
  from anon, authenticated;
grant select (id, organization_id, url, alert_kinds, description, max_attempts, retry_base_seconds,
              retry_cap_seconds, created_at, updated_at)
  on public.ai_webhook_endpoints to authenticated;
grant select on public.ai_webhook_deliveries, public.ai_webhook_delivery_attempts to authenticated;
grant all on public.ai_webhook_endpoints, public.ai_webhook_deliveries, public.ai_webhook_delivery_attempts
  to service_role;
alter table public.ai_webhook_endpoints enable row level security;
alter table public.ai_webhook_deliveries enable row level security;
alter table public.ai_webhook_delivery_attempts enable row level security;

drop policy if exists "Admins can view their organization's webhooks" on public.ai_webhook_endpoints;
create policy "Admins can view their organization's webhooks"
  on public.ai_webhook_endpoints for select to authenticated
  using (organization_id in (
    select m.organization_id from ai_tokens_internal.memberships() m where m.role in ('owner', 'admin')));
drop policy if exists "Service role manages webhook endpoints" on public.ai_webhook_endpoints;
create policy "Service role manages webhook endpoints"
  on public.ai_webhook_endpoints for all to service_role using (true) with check (true);

drop policy if exists "Admins can view their organization's deliveries" on public.ai_webhook_deliveries;
create policy "Admins can view their organization's deliveries"
  on public.ai_webhook_deliveries for select to authenticated
  using (organization_id in (
    select m.organization_id from ai_tokens_internal.memberships() m where m.role in ('owner', 'admin')));
drop policy if exists "Service role manages webhook deliveries" on public.ai_webhook_deliveries;
create policy "Service role manages webhook deliveries"
  on public.ai_webhook_deliveries for all to service_role using (true) with check (true);

drop policy if exists "Admins can view their organization's attempts" on public.ai_webhook_delivery_attempts;
create policy "Admins can view their organization's attempts"
  on public.ai_webhook_delivery_attempts for select to authenticated
  using (delivery_id in (
    select d.id from public.ai_webhook_deliveries d
    where d.organization_id in (
      select m.organization_id from ai_tokens_internal.memberships() m where m.role in ('owner', 'admin'))));
drop policy if exists "Service role manages webhook attempts" on public.ai_webhook_delivery_attempts;
create policy "Service role manages webhook attempts"
  on public.ai_webhook_delivery_attempts for all to service_role using (true) with check (true);

-- --------------------------------------------------------------- helpers

-- The alert kinds an endpoint may subscribe to: the values the CHECK constraint on
-- ai_token_alerts.kind allows, so a kind added there is known here with no second list.
create or replace function ai_tokens_internal.webhook_alert_kinds()
returns text[]
language sql
stable
set search_path = ''
as $$
  select coalesce(array_agg(distinct k.kind order by k.kind), '{}')
  from pg_catalog.pg_constraint c
  join pg_catalog.pg_attribute a on a.attrelid = c.conrelid and a.attnum = any (c.conkey)
  cross join lateral regexp_matches(pg_catalog.pg_get_constraintdef(c.oid), '''([a-z0-9_]+)''', 'g') m(found)
  cross join lateral (select m.found[1]) k(kind)
  where c.conrelid = 'public.ai_token_alerts'::regclass and c.contype = 'c' and a.attname = 'kind'
$$;
revoke all on function ai_tokens_internal.webhook_alert_kinds() from public, anon, authenticated;
grant execute on function ai_tokens_internal.webhook_alert_kinds() to service_role;

-- How long a delivery waits after its attempt-th failed attempt: exponential from base,
-- at most cap.
create or replace function ai_tokens_internal.webhook_retry_delay(attempt integer, base_seconds integer, cap_seconds integer)
returns interval
language sql
immutable
set search_path = ''
as $$
  select make_interval(secs => least(webhook_retry_delay.cap_seconds::double precision,
    webhook_retry_delay.base_seconds * power(2::double precision, greatest(webhook_retry_delay.attempt, 1) - 1)))
$$;
revoke all on function ai_tokens_internal.webhook_retry_delay(integer, integer, integer) from public, anon, authenticated;
grant execute on function ai_tokens_internal.webhook_retry_delay(integer, integer, integer) to service_role;

-- The outbox trigger: one delivery per subscribed endpoint of the alert's organization,
-- in the alert's transaction, and a wake-up for listening deliverers on commit.
-- SECURITY DEFINER: the outbox is written whoever inserts the alert.
create or replace function ai_tokens_internal.enqueue_alert_webhooks()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  queued integer;
begin
  insert into public.ai_webhook_deliveries (endpoint_id, organization_id, alert_id, event_type, payload)
  select e.id, new.organization_id, new.id, 'ai_token_alert.' || new.kind,
         jsonb_build_object(
           'type', 'ai_token_alert.' || new.kind,
           'timestamp', new.created_at,
           'data', jsonb_build_object(
             'alert_id', new.id, 'organization_id', new.organization_id, 'token_type', new.token_type,
             'kind', new.kind, 'reason', new.reason, 'period', new.period, 'details', new.details,
             'created_at', new.created_at))
  from public.ai_webhook_endpoints e
  where e.organization_id = new.organization_id
    and (e.alert_kinds is null or new.kind = any (e.alert_kinds))
  on conflict on constraint ai_webhook_deliveries_once_key do nothing;
  get diagnostics queued = row_count;
  if queued > 0 then
    perform pg_notify('ai_webhook_deliveries', '');
  end if;
  return null;
end
$$;
revoke all on function ai_tokens_internal.enqueue_alert_webhooks() from public, anon, authenticated;

create or replace trigger ai_token_alerts_webhooks
  after insert on public.ai_token_alerts
  for each row execute function ai_tokens_internal.enqueue_alert_webhooks();

-- ------------------------------------------------------------------ admin API

-- set_webhook_endpoint: create, or replace everything of, the organization's endpoint
-- for url. alert_kinds null means every kind. Service role only. Returns the endpoint
-- without its secret. Refuses (400) a URL that is not http(s), a missing or malformed
-- secret, an unknown alert kind and retry settings out of range; changes nothing then.
create or replace function public.set_webhook_endpoint(
  organization_id uuid,
  url text,
  secret text,
  alert_kinds text[] default null,
  description text default null,
  max_attempts integer default 8,
  retry_base_seconds integer default 60,
  retry_cap_seconds integer default 21600
)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  known text[] := ai_tokens_internal.webhook_alert_kinds();
  unknown text;
  saved public.ai_webhook_endpoints;
begin
  perform ai_tokens_internal.require_service_role('set_webhook_endpoint');
  perform ai_tokens_internal.require_argument(organization_id is not null, 'organization_id');
  perform ai_tokens_internal.require_argument(nullif(url, '') is not null, 'url');
  perform ai_tokens_internal.require_argument(nullif(secret, '') is not null, 'secret');
  if url !~ '^https?://[^\s/?#]+' or length(url) > 2000 then
    perform ai_tokens_internal.refuse(400, 'invalid_webhook_url', 'url must be an http:// or https:// URL',
      jsonb_build_object('field', 'url'));
  end if;
  if secret !~ '^whsec_[A-Za-z0-9+/]+={0,2}$'
     or length(secret) - 6 not between 32 and 128 then
    perform ai_tokens_internal.refuse(400, 'invalid_webhook_secret',
      'secret must be whsec_ followed by 24 to 96 bytes in base64',
      jsonb_build_object('field', 'secret'));
  end if;
  if alert_kinds is not null then
    if cardinality(alert_kinds) = 0 then
      perform ai_tokens_internal.refuse(400, 'invalid_request', 'alert_kinds must name a kind, or be null for all',
        jsonb_build_object('field', 'alert_kinds', 'known_kinds', known));
    end if;
    select k into unknown from unnest(alert_kinds) k where k is null or not k = any (known) limit 1;
    if found then
      perform ai_tokens_internal.refuse(400, 'unknown_alert_kind', 'Unknown alert kind',
        jsonb_build_object('field', 'alert_kinds', 'alert_kind', left(unknown, 100), 'known_kinds', known));
    end if;
  end if;
  if max_attempts is null or max_attempts not between 1 and 100 then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'max_attempts must be between 1 and 100',
      jsonb_build_object('field', 'max_attempts'));
  end if;
  if retry_base_seconds is null or retry_base_seconds not between 1 and 86400 then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'retry_base_seconds must be between 1 and 86400',
      jsonb_build_object('field', 'retry_base_seconds'));
  end if;
  if retry_cap_seconds is null or retry_cap_seconds not between retry_base_seconds and 604800 then
    perform ai_tokens_internal.refuse(400, 'invalid_request',
      'retry_cap_seconds must be between retry_base_seconds and 604800',
      jsonb_build_object('field', 'retry_cap_seconds'));
  end if;
  if length(description) > 500 then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'description must be at most 500 characters',
      jsonb_build_object('field', 'description'));
  end if;
  perform ai_tokens_internal.require_organization(set_webhook_endpoint.organization_id);

  insert into public.ai_webhook_endpoints as e
    (organization_id, url, secret, alert_kinds, description, max_attempts, retry_base_seconds, retry_cap_seconds)
  values (set_webhook_endpoint.organization_id, set_webhook_endpoint.url, set_webhook_endpoint.secret,
          (select array_agg(distinct k order by k) from unnest(set_webhook_endpoint.alert_kinds) k),
          set_webhook_endpoint.description, set_webhook_endpoint.max_attempts,
          set_webhook_endpoint.retry_base_seconds, set_webhook_endpoint.retry_cap_seconds)
  on conflict on constraint ai_webhook_endpoints_url_key do update
    set secret = excluded.secret, alert_kinds = excluded.alert_kinds, description = excluded.description,
        max_attempts = excluded.max_attempts, retry_base_seconds = excluded.retry_base_seconds,
        retry_cap_seconds = excluded.retry_cap_seconds, updated_at = now()
  returning e.* into saved;
  return to_jsonb(saved) - 'secret';
end
$$;
revoke all on function public.set_webhook_endpoint(uuid, text, text, text[], text, integer, integer, integer) from public, anon, authenticated;
grant execute on function public.set_webhook_endpoint(uuid, text, text, text[], text, integer, integer, integer) to service_role;
comment on function public.set_webhook_endpoint(uuid, text, text, text[], text, integer, integer, integer) is 'tokens-client: create or replace an organization''s webhook endpoint for alerts (service role)';

-- delete_webhook_endpoint: remove an endpoint with its deliveries (pending ones are not
-- sent). Service role only. 404 webhook_endpoint_not_found when there is none.
create or replace function public.delete_webhook_endpoint(endpoint_id uuid)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  removed public.ai_webhook_endpoints;
begin
  perform ai_tokens_internal.require_service_role('delete_webhook_endpoint');
  perform ai_tokens_internal.require_argument(endpoint_id is not null, 'endpoint_id');
  delete from public.ai_webhook_endpoints e where e.id = delete_webhook_endpoint.endpoint_id
  returning e.* into removed;
  if not found then
    perform ai_tokens_internal.refuse(404, 'webhook_endpoint_not_found', 'No such webhook endpoint',
      jsonb_build_object('endpoint_id', endpoint_id));
  end if;
  return (to_jsonb(removed) - 'secret') || jsonb_build_object('deleted', true);
end
$$;
revoke all on function public.delete_webhook_endpoint(uuid) from public, anon, authenticated;
grant execute on function public.delete_webhook_endpoint(uuid) to service_role;
comment on function public.delete_webhook_endpoint(uuid) is 'tokens-client: remove a webhook endpoint and its deliveries (service role)';

-- ------------------------------------------------------------- the deliverers' API

-- claim_webhook_deliveries: lease up to max_deliveries due deliveries for lease_seconds
-- and return what to send: the webhook-id (id), the lease to report with, the attempt
-- number, url, secret and the exact body. Rows locked by another claim are skipped, and
-- a leased row is not due again before its lease ends, so concurrent deliverers never
-- send one delivery at the same time. A row whose last lease ran out unreported after
-- its final attempt is given up first. Service role only.
create or replace function public.claim_webhook_deliveries(max_deliveries integer default 10, lease_seconds integer default 60)
returns table (id uuid, lease_id uuid, attempt integer, url text, secret text, event_type text, body text)
language plpgsql
volatile
security invoker
set search_path = ''
as $$
begin
  perform ai_tokens_internal.require_service_role('claim_webhook_deliveries');
  if max_deliveries is null or max_deliveries not between 1 and 1000 then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'max_deliveries must be between 1 and 1000',
      jsonb_build_object('field', 'max_deliveries'));
  end if;
  if lease_seconds is null or lease_seconds not between 1 and 3600 then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'lease_seconds must be between 1 and 3600',
      jsonb_build_object('field', 'lease_seconds'));
  end if;

  update public.ai_webhook_deliveries d
     set status = 'failed', failed_at = now(), lease_id = null,
         last_error = coalesce(d.last_error, 'the deliverer did not report its last attempt')
    from public.ai_webhook_endpoints e
   where e.id = d.endpoint_id and d.status = 'pending' and d.next_attempt_at <= now()
     and d.attempts >= e.max_attempts;

  return query
  with due as (
    select d.id
    from public.ai_webhook_deliveries d
    where d.status = 'pending' and d.next_attempt_at <= now()
    order by d.next_attempt_at, d.id
    limit max_deliveries
    for update skip locked
  ), leased as (
    update public.ai_webhook_deliveries d
       set attempts = d.attempts + 1, lease_id = gen_random_uuid(),
           next_attempt_at = now() + make_interval(secs => lease_seconds)
      from due
     where d.id = due.id
    returning d.id, d.lease_id, d.attempts, d.endpoint_id, d.event_type, d.payload
  ), recorded as (
    insert into public.ai_webhook_delivery_attempts (delivery_id, attempt, lease_id)
    select l.id, l.attempts, l.lease_id from leased l
  )
  select l.id, l.lease_id, l.attempts, e.url, e.secret, l.event_type, l.payload::text
  from leased l join public.ai_webhook_endpoints e on e.id = l.endpoint_id
  order by l.id;
end
$$;
revoke all on function public.claim_webhook_deliveries(integer, integer) from public, anon, authenticated;
grant execute on function public.claim_webhook_deliveries(integer, integer) to service_role;
comment on function public.claim_webhook_deliveries(integer, integer) is 'tokens-client: lease due webhook deliveries to a deliverer (service role)';

-- complete_webhook_delivery: report the attempt made under lease_id. ok: delivered.
-- Not ok: retried after the endpoint's backoff, or given up as 'failed' after its
-- max_attempts. 409 webhook_lease_lost when the lease is no longer this delivery's
-- (reported already, or the lease ran out and another deliverer claimed it). Service
-- role only. Returns the delivery's status.
create or replace function public.complete_webhook_delivery(
  delivery_id uuid,
  lease_id uuid,
  ok boolean,
  http_status integer default null,
  error text default null
)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  delivery public.ai_webhook_deliveries;
  endpoint public.ai_webhook_endpoints;
  due_again timestamptz;
begin
  perform ai_tokens_internal.require_service_role('complete_webhook_delivery');
  perform ai_tokens_internal.require_argument(delivery_id is not null, 'delivery_id');
  perform ai_tokens_internal.require_argument(lease_id is not null, 'lease_id');
  perform ai_tokens_internal.require_argument(ok is not null, 'ok');

  select d.* into delivery from public.ai_webhook_deliveries d
  where d.id = complete_webhook_delivery.delivery_id for update;
  if not found then
    perform ai_tokens_internal.refuse(404, 'webhook_delivery_not_found', 'No such webhook delivery',
      jsonb_build_object('delivery_id', delivery_id));
  end if;
  if delivery.lease_id is distinct from complete_webhook_delivery.lease_id or delivery.status <> 'pending' then
    perform ai_tokens_internal.refuse(409, 'webhook_lease_lost',
      'This attempt''s lease is no longer held: it was reported, or another deliverer claimed the delivery',
      jsonb_build_object('delivery_id', delivery_id, 'status', delivery.status, 'attempts', delivery.attempts));
  end if;
  select e.* into endpoint from public.ai_webhook_endpoints e where e.id = delivery.endpoint_id;

  if not ok and delivery.attempts < endpoint.max_attempts then
    due_again := now() + ai_tokens_internal.webhook_retry_delay(
      delivery.attempts, endpoint.retry_base_seconds, endpoint.retry_cap_seconds);
  end if;
  update public.ai_webhook_delivery_attempts a
     set finished_at = now(), ok = complete_webhook_delivery.ok,
         http_status = complete_webhook_delivery.http_status,
         error = left(complete_webhook_delivery.error, 1000), retry_at = due_again
   where a.lease_id = complete_webhook_delivery.lease_id;
  update public.ai_webhook_deliveries d
     set lease_id = null, last_http_status = complete_webhook_delivery.http_status,
         last_error = case when ok then null else left(complete_webhook_delivery.error, 1000) end,
         status = case when ok then 'delivered' when due_again is null then 'failed' else 'pending' end,
         delivered_at = case when ok then now() end,
         failed_at = case when not ok and due_again is null then now() end,
         next_attempt_at = coalesce(due_again, d.next_attempt_at)
   where d.id = delivery.id
  returning d.* into delivery;
  return jsonb_build_object('delivery_id', delivery.id, 'status', delivery.status, 'attempts', delivery.attempts,
    'next_attempt_at', case when delivery.status = 'pending' then delivery.next_attempt_at end);
end
$$;
revoke all on function public.complete_webhook_delivery(uuid, uuid, boolean, integer, text) from public, anon, authenticated;
grant execute on function public.complete_webhook_delivery(uuid, uuid, boolean, integer, text) to service_role;
comment on function public.complete_webhook_delivery(uuid, uuid, boolean, integer, text) is 'tokens-client: report a webhook delivery attempt: delivered, retried later, or failed (service role)';

-- ============================================================ 99_sequence_privileges.sql
-- tokens-client · 99 sequence privileges (runs last).
--
-- Supabase's default privileges grant every new sequence in public to anon and
-- authenticated. The identity sequences of our tables are used only by our functions
-- and the service role: take the API roles' rights away (a client could otherwise burn
-- ids over a direct connection). Only sequences owned by tokens-client's tables.
do $$
declare
  owned record;
begin
  for owned in
    select s.oid::regclass as sequence_name
    from pg_catalog.pg_class s
    join pg_catalog.pg_depend d on d.classid = 'pg_catalog.pg_class'::regclass and d.objid = s.oid
                               and d.deptype in ('a', 'i')
    join pg_catalog.pg_class t on t.oid = d.refobjid
    where s.relkind = 'S' and t.relnamespace = 'public'::regnamespace
      and (t.relname like 'ai\_%' or t.relname like 'stripe\_%')
  loop
    execute format('revoke all on sequence %s from anon, authenticated', owned.sequence_name);
  end loop;
end
$$;
