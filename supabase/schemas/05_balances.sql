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
