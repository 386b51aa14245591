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
