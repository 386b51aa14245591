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
