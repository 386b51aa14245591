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

