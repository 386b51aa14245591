-- tokens-client: the AI token schema.
--
-- Tables keep the names of the original guide (organizations, user_profiles, ai_tokens,
-- ai_token_usage_log) so its SQL snippets run unchanged. Plans, token types and the
-- feature catalog are data, editable without code changes. Every table has RLS on;
-- nobody but service_role writes a table directly: spending goes through functions.

-- Functions are not executable by everyone by default (Supabase grants EXECUTE on new
-- functions in public to anon and authenticated). Each function below is granted
-- explicitly to the roles that may call it.
-- PUBLIC's EXECUTE comes from the global default, which a per-schema rule cannot
-- remove; each function below therefore also revokes it explicitly.
alter default privileges revoke execute on functions from public;
alter default privileges in schema public revoke execute on functions from public;
alter default privileges in schema public revoke execute on functions from anon, authenticated;

-- Internal helpers live in `private`, which PostgREST does not expose.
create schema if not exists private;
revoke all on schema private from public;
grant usage on schema private to authenticated, service_role;
alter default privileges in schema private revoke execute on functions from public;

-- ---------------------------------------------------------------------------- tables

create table public.organizations (
  id uuid primary key default gen_random_uuid(),
  name text not null check (length(name) between 1 and 200),
  plan text not null default 'starter' check (plan in ('starter', 'pro', 'enterprise')),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.organizations is 'Tenants. The plan decides which AI features they may use and their monthly allocation.';

create table public.user_profiles (
  id uuid primary key references auth.users (id) on delete cascade,
  organization_id uuid references public.organizations (id) on delete cascade,
  full_name text,
  role text not null default 'member' check (role in ('owner', 'admin', 'member')),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.user_profiles is 'One organization per user, as in the guide. Membership is read only through private.memberships().';
create index user_profiles_organization_id_idx on public.user_profiles (organization_id);

create table public.ai_token_types (
  token_type text primary key check (token_type ~ '^[a-z][a-z0-9_]{0,62}$'),
  description text not null default ''
);
comment on table public.ai_token_types is 'The kinds of AI tokens; every organization holds one ai_tokens row per type.';

create table public.ai_plan_allocations (
  plan text not null check (plan in ('starter', 'pro', 'enterprise')),
  token_type text not null references public.ai_token_types (token_type) on update cascade,
  monthly_allocation integer not null check (monthly_allocation between 0 and 1000000000),
  primary key (plan, token_type)
);
comment on table public.ai_plan_allocations is 'Monthly tokens per plan and token type ("limits match the pricing page"). A plan without a row for a type does not offer the features of that type.';
create index ai_plan_allocations_token_type_idx on public.ai_plan_allocations (token_type);

create table public.ai_features (
  feature text primary key check (feature ~ '^[a-z][a-z0-9_]{0,62}$'),
  token_type text not null references public.ai_token_types (token_type) on update cascade,
  cost integer not null check (cost between 1 and 1000000),
  description text not null default '',
  created_at timestamptz not null default now()
);
comment on table public.ai_features is 'The feature catalog: what each AI feature costs, in tokens of which type.';
create index ai_features_token_type_idx on public.ai_features (token_type);

create table public.ai_tokens (
  id uuid primary key default gen_random_uuid(),
  organization_id uuid not null references public.organizations (id) on delete cascade,
  token_type text not null references public.ai_token_types (token_type) on update cascade,
  balance integer not null default 0 constraint ai_tokens_balance_not_negative check (balance >= 0),
  total_allocated integer not null default 0 check (total_allocated >= 0),
  refresh_date timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint ai_tokens_organization_token_type_key unique (organization_id, token_type)
);
comment on table public.ai_tokens is 'One row per organization and token type. balance never goes below zero (constraint), and only the token functions change it.';
create index ai_tokens_token_type_idx on public.ai_tokens (token_type);
create index if not exists idx_ai_tokens_refresh on public.ai_tokens (refresh_date) where refresh_date is not null;

create table public.ai_token_usage_log (
  id uuid primary key default gen_random_uuid(),
  organization_id uuid not null references public.organizations (id) on delete cascade,
  user_id uuid references auth.users (id) on delete set null,
  token_type text not null,
  feature_used text not null,
  tokens_deducted integer not null check (tokens_deducted > 0),
  balance_after integer not null check (balance_after >= 0),
  request_id text check (length(request_id) between 1 and 200),
  created_at timestamptz not null default now()
);
comment on table public.ai_token_usage_log is 'One row per successful deduction, written in the same transaction as the balance change.';
create index if not exists idx_ai_token_usage_org_date on public.ai_token_usage_log (organization_id, created_at desc);
create index ai_token_usage_log_user_date_idx on public.ai_token_usage_log (user_id, created_at desc);
create unique index ai_token_usage_log_request_id_key
  on public.ai_token_usage_log (organization_id, request_id) where request_id is not null;

-- ------------------------------------------------------------------ catalog data
-- Editable rows, not code: change them (as service_role) to match the pricing page.

insert into public.ai_token_types (token_type, description) values
  ('lead_generation', 'Finding and qualifying leads'),
  ('goal_generation', 'Generating goals and quests'),
  ('strategy_analysis', 'Analysing strategy'),
  ('forecast', 'Revenue forecasting'),
  ('general', 'General assistant use');

insert into public.ai_plan_allocations (plan, token_type, monthly_allocation) values
  ('pro', 'lead_generation', 50),
  ('pro', 'goal_generation', 20),
  ('pro', 'strategy_analysis', 100),
  ('pro', 'forecast', 30),
  ('pro', 'general', 50),
  ('enterprise', 'lead_generation', 500),
  ('enterprise', 'goal_generation', 200),
  ('enterprise', 'strategy_analysis', 1000),
  ('enterprise', 'forecast', 300),
  ('enterprise', 'general', 500);
-- starter: no rows, so AI features are not available on it.

insert into public.ai_features (feature, token_type, cost, description) values
  ('generate_goal', 'goal_generation', 3, 'Generate a financial goal'),
  ('generate_quest', 'goal_generation', 2, 'Generate a quest for a goal'),
  ('generate_leads', 'lead_generation', 5, 'Generate a batch of leads'),
  ('analyze_strategy', 'strategy_analysis', 10, 'Analyse a strategy'),
  ('forecast_revenue', 'forecast', 5, 'Forecast revenue'),
  ('ask_assistant', 'general', 1, 'Ask the assistant a question');

-- ----------------------------------------------------------------- privileges
-- Supabase's defaults grant everything on new tables to anon and authenticated; RLS is
-- the first wall, these grants the second: clients may only read.

revoke all on public.organizations, public.user_profiles, public.ai_token_types,
  public.ai_plan_allocations, public.ai_features, public.ai_tokens, public.ai_token_usage_log
  from anon, authenticated;
grant select on public.organizations, public.user_profiles, public.ai_token_types,
  public.ai_plan_allocations, public.ai_features, public.ai_tokens, public.ai_token_usage_log
  to authenticated;
grant all on public.organizations, public.user_profiles, public.ai_token_types,
  public.ai_plan_allocations, public.ai_features, public.ai_tokens, public.ai_token_usage_log
  to service_role;

-- ---------------------------------------------------------- the membership seam

-- The caller's memberships: (organization_id, role) for auth.uid(). THE one place that
-- decides membership and role; every policy and function goes through it. An app with
-- another membership model (several organizations per user, a members table) changes
-- only this function. Security definer so policies on user_profiles do not recurse.
create function private.memberships()
returns table (organization_id uuid, role text)
language sql
stable
security definer
set search_path = ''
as $$
  select p.organization_id, p.role
  from public.user_profiles p
  where p.id = (select auth.uid())
    and p.organization_id is not null
$$;
revoke all on function private.memberships() from public;
grant execute on function private.memberships() to authenticated, service_role;

-- Raise a refusal the way the API reports it: errcode PTxyz makes PostgREST answer HTTP
-- xyz; detail is JSON with a stable machine-readable "reason" plus the numbers involved.
create function private.refuse(http_status integer, reason text, message text, facts jsonb default '{}')
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
revoke all on function private.refuse(integer, text, text, jsonb) from public;

-- Refuse an organization id that names no organization (404); null passes (callers
-- that need one say so with their own 400).
create function private.require_organization(organization_id uuid)
returns void
language plpgsql
stable
set search_path = ''
as $$
begin
  if require_organization.organization_id is not null and not exists (
    select 1 from public.organizations o where o.id = require_organization.organization_id
  ) then
    perform private.refuse(404, 'organization_not_found',
      format('Organization (id=%s) not found', require_organization.organization_id),
      jsonb_build_object('organization_id', require_organization.organization_id));
  end if;
end
$$;
revoke all on function private.require_organization(uuid) from public;

-- Refuse a plan name that is not a plan (400 invalid_plan); null passes.
create function private.require_plan(plan text)
returns void
language plpgsql
stable
set search_path = ''
as $$
begin
  if require_plan.plan is not null and require_plan.plan not in ('starter', 'pro', 'enterprise') then
    perform private.refuse(400, 'invalid_plan', format('Unknown plan: %s', left(require_plan.plan, 50)),
      jsonb_build_object('plan', left(require_plan.plan, 50)));
  end if;
end
$$;
revoke all on function private.require_plan(text) from public;
grant execute on function private.require_organization(uuid), private.require_plan(text)
  to service_role;

-- Is the current request made with the service role (API key or a direct SQL session
-- as a privileged role, e.g. the SQL editor)?
create function private.is_service_role()
returns boolean
language sql
stable
set search_path = ''
as $$
  select coalesce((select auth.role()), '') = 'service_role'
      or (coalesce((select auth.role()), '') = '' and session_user in ('postgres', 'supabase_admin'))
$$;
revoke all on function private.is_service_role() from public;
grant execute on function private.refuse(integer, text, text, jsonb), private.is_service_role()
  to service_role;

-- The organization a request acts on. A member may omit organization_id (their own
-- organization is used); a given organization_id is a claim, checked against the
-- caller's memberships. The service role must name the organization.
-- Returns (organization_id, role); role is 'service_role' for the service role.
create function private.resolve_organization(requested_organization_id uuid)
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
  if private.is_service_role() then
    if requested_organization_id is null then
      perform private.refuse(400, 'invalid_request', 'organization_id is required for the service role',
        jsonb_build_object('field', 'organization_id'));
    end if;
    perform private.require_organization(requested_organization_id);
    return query select requested_organization_id, 'service_role'::text;
    return;
  end if;

  if (select auth.uid()) is null then
    perform private.refuse(401, 'unauthenticated', 'Sign in to use AI features');
  end if;

  select count(*) into membership_count from private.memberships();
  select m.organization_id, m.role into found_organization, found_role
  from private.memberships() m
  where requested_organization_id is null or m.organization_id = requested_organization_id
  order by m.organization_id
  limit 1;

  if found_organization is null then
    perform private.refuse(403, 'not_a_member',
      case when requested_organization_id is null
        then 'You are not a member of any organization'
        else 'You are not a member of this organization' end,
      jsonb_build_object('organization_id', requested_organization_id));
  end if;
  if requested_organization_id is null and membership_count > 1 then
    perform private.refuse(400, 'invalid_request',
      'organization_id is required: you belong to several organizations',
      jsonb_build_object('field', 'organization_id'));
  end if;
  return query select found_organization, found_role;
end
$$;
revoke all on function private.resolve_organization(uuid) from public;

-- The feature's price and whether the organization's plan offers it; refuses unknown
-- features (404) and features outside the plan (403).
create function private.price_feature(feature text, organization_id uuid)
returns table (token_type text, cost integer, plan text)
language plpgsql
stable
set search_path = ''
as $$
declare
  found_type text;
  found_cost integer;
  organization_plan text;
begin
  if feature is null or length(btrim(feature)) = 0 then
    perform private.refuse(400, 'invalid_request', 'feature is required',
      jsonb_build_object('field', 'feature'));
  end if;
  select f.token_type, f.cost into found_type, found_cost
  from public.ai_features f where f.feature = price_feature.feature;
  if found_type is null then
    perform private.refuse(404, 'unknown_feature', format('Unknown feature: %s', left(feature, 100)),
      jsonb_build_object('feature', left(feature, 100)));
  end if;
  select o.plan into organization_plan from public.organizations o where o.id = price_feature.organization_id;
  if not exists (
    select 1 from public.ai_plan_allocations a
    where a.plan = organization_plan and a.token_type = found_type
  ) then
    perform private.refuse(403, 'feature_not_in_plan',
      format('Not available on %s plan', initcap(organization_plan)),
      jsonb_build_object('feature', feature, 'plan', organization_plan, 'token_type', found_type));
  end if;
  return query select found_type, found_cost, organization_plan;
end
$$;
revoke all on function private.price_feature(text, uuid) from public;

-- ------------------------------------------------------------------- RLS

alter table public.organizations enable row level security;
alter table public.user_profiles enable row level security;
alter table public.ai_token_types enable row level security;
alter table public.ai_plan_allocations enable row level security;
alter table public.ai_features enable row level security;
alter table public.ai_tokens enable row level security;
alter table public.ai_token_usage_log enable row level security;

create policy "Members can view their organization"
  on public.organizations for select to authenticated
  using (id in (select m.organization_id from private.memberships() m));

create policy "Users can view their own profile and their organization's members"
  on public.user_profiles for select to authenticated
  using (
    id = (select auth.uid())
    or organization_id in (select m.organization_id from private.memberships() m)
  );

create policy "Signed-in users can view token types"
  on public.ai_token_types for select to authenticated using (true);

create policy "Signed-in users can view plan allocations"
  on public.ai_plan_allocations for select to authenticated using (true);

create policy "Signed-in users can view the feature catalog"
  on public.ai_features for select to authenticated using (true);

create policy "Members can view their organization's token balances"
  on public.ai_tokens for select to authenticated
  using (organization_id in (select m.organization_id from private.memberships() m));

create policy "Service role manages token balances"
  on public.ai_tokens for all to service_role
  using (true) with check (true);

create policy "Admins view their organization's usage; members view their own"
  on public.ai_token_usage_log for select to authenticated
  using (
    organization_id in (
      select m.organization_id from private.memberships() m where m.role in ('owner', 'admin')
    )
    or (
      user_id = (select auth.uid())
      and organization_id in (select m.organization_id from private.memberships() m)
    )
  );

create policy "Service role manages the usage log"
  on public.ai_token_usage_log for all to service_role
  using (true) with check (true);

-- ------------------------------------------------------------ the RPC API

-- initialize_tokens: create or reset an organization's five ai_tokens rows to its
-- plan's allocation, refresh_date one month ahead. Given a plan, the organization is
-- moved to it first. Service role only (the guide's initializeTokens).
create function public.initialize_tokens(organization_id uuid, plan text default null)
returns setof public.ai_tokens
language plpgsql
security invoker
set search_path = ''
as $$
declare
  target_plan text;
begin
  if not private.is_service_role() then
    perform private.refuse(403, 'service_role_required', 'initialize_tokens requires the service role');
  end if;
  if organization_id is null then
    perform private.refuse(400, 'invalid_request', 'organization_id is required',
      jsonb_build_object('field', 'organization_id'));
  end if;
  perform private.require_plan(initialize_tokens.plan);

  update public.organizations o
  set plan = coalesce(initialize_tokens.plan, o.plan),
      updated_at = now()
  where o.id = initialize_tokens.organization_id
  returning o.plan into target_plan;
  if target_plan is null then
    perform private.refuse(404, 'organization_not_found',
      format('Organization (id=%s) not found', initialize_tokens.organization_id),
      jsonb_build_object('organization_id', initialize_tokens.organization_id));
  end if;

  return query
  insert into public.ai_tokens as t (organization_id, token_type, balance, total_allocated, refresh_date)
  select initialize_tokens.organization_id, tt.token_type,
         coalesce(a.monthly_allocation, 0), coalesce(a.monthly_allocation, 0),
         now() + interval '1 month'
  from public.ai_token_types tt
  left join public.ai_plan_allocations a on a.plan = target_plan and a.token_type = tt.token_type
  on conflict on constraint ai_tokens_organization_token_type_key do update
    set balance = excluded.balance,
        total_allocated = excluded.total_allocated,
        refresh_date = excluded.refresh_date,
        updated_at = now()
  returning t.*;
end
$$;
revoke all on function public.initialize_tokens(uuid, text) from public, anon, authenticated;
grant execute on function public.initialize_tokens(uuid, text) to service_role;

-- has_enough_tokens: may the caller's organization afford this feature now?
-- false only when the balance is too low; unknown features (404), features outside
-- the plan (403) and non-members (403) are errors.
create function public.has_enough_tokens(feature text, organization_id uuid default null)
returns boolean
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  target_organization uuid;
  price record;
begin
  select r.organization_id into target_organization
  from private.resolve_organization(has_enough_tokens.organization_id) r;
  select * into price from private.price_feature(has_enough_tokens.feature, target_organization);
  return exists (
    select 1 from public.ai_tokens t
    where t.organization_id = target_organization
      and t.token_type = price.token_type
      and t.balance >= price.cost
  );
end
$$;
revoke all on function public.has_enough_tokens(text, uuid) from public, anon, authenticated;
grant execute on function public.has_enough_tokens(text, uuid) to authenticated, service_role;

-- deduct_tokens: spend the feature's cost from the caller's organization.
-- Atomic: one conditional UPDATE (balance >= cost) and the usage-log insert in one
-- transaction; a refusal raises and writes nothing. With a request_id the call is
-- idempotent per organization: a retry returns the first result and spends nothing;
-- the same request_id for another feature is refused (409).
create function public.deduct_tokens(
  feature text,
  organization_id uuid default null,
  request_id text default null
)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  target_organization uuid;
  price record;
  previous public.ai_token_usage_log;
  remaining integer;
  current_balance integer;
begin
  if request_id is not null and (length(request_id) = 0 or length(request_id) > 200) then
    perform private.refuse(400, 'invalid_request', 'request_id must be 1 to 200 characters',
      jsonb_build_object('field', 'request_id'));
  end if;
  select r.organization_id into target_organization
  from private.resolve_organization(deduct_tokens.organization_id) r;

  -- A retry is answered before pricing: the first call spent, so a plan change or a
  -- catalog edit since then must not turn its replay into a refusal.
  if request_id is not null then
    -- Serialise retries of one request so exactly one of them spends.
    perform pg_advisory_xact_lock(hashtextextended(target_organization::text || '/' || request_id, 0));
    select * into previous from public.ai_token_usage_log l
    where l.organization_id = target_organization and l.request_id = deduct_tokens.request_id;
    if found then
      if previous.feature_used <> deduct_tokens.feature then
        perform private.refuse(409, 'idempotency_conflict',
          format('request_id %s was already used for %s', left(request_id, 100), previous.feature_used),
          jsonb_build_object('request_id', request_id, 'feature', feature,
                             'original_feature', previous.feature_used));
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
        'message', format('Used %s tokens for %s', previous.tokens_deducted, previous.feature_used));
    end if;
  end if;

  select * into price from private.price_feature(deduct_tokens.feature, target_organization);

  update public.ai_tokens t
  set balance = t.balance - price.cost, updated_at = now()
  where t.organization_id = target_organization
    and t.token_type = price.token_type
    and t.balance >= price.cost
  returning t.balance into remaining;

  if remaining is null then
    select t.balance into current_balance from public.ai_tokens t
    where t.organization_id = target_organization and t.token_type = price.token_type;
    perform private.refuse(402, 'insufficient_tokens', 'You''re out of AI tokens',
      jsonb_build_object('feature', feature, 'token_type', price.token_type,
                         'required', price.cost, 'balance', coalesce(current_balance, 0),
                         'initialized', current_balance is not null));
  end if;

  insert into public.ai_token_usage_log as l
    (organization_id, user_id, token_type, feature_used, tokens_deducted, balance_after, request_id)
  values
    (target_organization, (select auth.uid()), price.token_type, feature, price.cost, remaining, request_id)
  returning * into previous;

  return jsonb_build_object(
    'success', true,
    'remaining_balance', remaining,
    'tokens_deducted', price.cost,
    'token_type', price.token_type,
    'feature', feature,
    'organization_id', target_organization,
    'usage_id', previous.id,
    'request_id', request_id,
    'replayed', false,
    'message', format('Used %s tokens for %s', price.cost, feature));
end
$$;
revoke all on function public.deduct_tokens(text, uuid, text) from public, anon, authenticated;
grant execute on function public.deduct_tokens(text, uuid, text) to authenticated, service_role;

-- get_token_stats: the organization's balances, totals and per-type state (the
-- guide's stats endpoint). Members of the organization and the service role.
create function public.get_token_stats(organization_id uuid default null)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  target_organization uuid;
  organization_plan text;
  by_type jsonb;
begin
  select r.organization_id into target_organization
  from private.resolve_organization(get_token_stats.organization_id) r;
  select o.plan into organization_plan from public.organizations o where o.id = target_organization;

  select coalesce(jsonb_agg(jsonb_build_object(
           'token_type', t.token_type,
           'balance', t.balance,
           'allocated', t.total_allocated,
           'used', greatest(t.total_allocated - t.balance, 0),
           'percent_remaining', case when t.total_allocated > 0
             then round(100.0 * t.balance / t.total_allocated, 1) else 0 end,
           'low', t.total_allocated > 0 and t.balance::bigint * 5 < t.total_allocated,
           'refresh_date', t.refresh_date
         ) order by t.token_type), '[]'::jsonb)
  into by_type
  from public.ai_tokens t
  where t.organization_id = target_organization;

  return jsonb_build_object(
    'organization_id', target_organization,
    'plan', organization_plan,
    'total_balance', (select coalesce(sum((e ->> 'balance')::integer), 0) from jsonb_array_elements(by_type) e),
    'total_allocated', (select coalesce(sum((e ->> 'allocated')::integer), 0) from jsonb_array_elements(by_type) e),
    'total_used', (select coalesce(sum((e ->> 'used')::integer), 0) from jsonb_array_elements(by_type) e),
    'by_type', by_type);
end
$$;
revoke all on function public.get_token_stats(uuid) from public, anon, authenticated;
grant execute on function public.get_token_stats(uuid) to authenticated, service_role;
