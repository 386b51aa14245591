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
