-- tokens-client: has_enough_tokens and get_token_stats answer GET requests too.
--
-- PostgREST runs GET /rpc/... in a read-only transaction. The lazy refresh added by
-- 20261123010000_token_lifecycle settles a due row by writing it, which a read-only
-- transaction refuses (HTTP 405, "cannot execute SELECT FOR UPDATE in a read-only
-- transaction") — so a GET worked until a refresh date passed and then failed. These
-- two read functions now settle for real when they may write (POST, SQL) and, in a
-- read-only transaction, answer from the row as it will be once settled, writing
-- nothing (the next writing call settles it).

-- The row as private.settle_tokens would leave it, computed without writing: expired
-- holds no longer reserved, expired grants gone, and a passed refresh date applied.
-- A pgTAP test keeps the two in step.
create function private.settled_view(account public.ai_tokens)
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
    select private.plan_allocation(o.plan, settled.token_type) into allocation
    from public.organizations o where o.id = settled.organization_id;
    select * into boundary from private.next_refresh(settled.refresh_date);
    settled.balance := coalesce(allocation, 0) + settled.purchased_balance;
    settled.total_allocated := coalesce(allocation, 0);
    settled.period_started_at := boundary.period_start;
    settled.refresh_date := boundary.next_refresh_date;
  end if;
  return settled;
end
$$;
revoke all on function private.settled_view(public.ai_tokens) from public, anon, authenticated;
grant execute on function private.settled_view(public.ai_tokens) to service_role;

-- The row brought up to date: settled for real (under the row lock) when the
-- transaction may write, projected by settled_view in a read-only one.
create function private.settled_tokens(account public.ai_tokens)
returns public.ai_tokens
language plpgsql
volatile
set search_path = ''
as $$
begin
  if settled_tokens.account.id is null
     or not private.settlement_due(settled_tokens.account.organization_id, settled_tokens.account.token_type,
                                   settled_tokens.account.refresh_date) then
    return settled_tokens.account;
  end if;
  if current_setting('transaction_read_only') = 'on' then
    return private.settled_view(settled_tokens.account);
  end if;
  return private.settle_tokens(settled_tokens.account.organization_id, settled_tokens.account.token_type);
end
$$;
revoke all on function private.settled_tokens(public.ai_tokens) from public, anon, authenticated;
grant execute on function private.settled_tokens(public.ai_tokens) to service_role;

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
  from private.resolve_organization(has_enough_tokens.organization_id) r;
  if private.enforcement_mode(target_organization) <> 'enforce' then
    perform private.look_up_feature(has_enough_tokens.feature, target_organization);
    return true;
  end if;
  select * into price from private.price_feature(has_enough_tokens.feature, target_organization);

  select * into account from public.ai_tokens t
  where t.organization_id = target_organization and t.token_type = price.token_type;
  if not found then
    return false;
  end if;
  account := private.settled_tokens(account);
  return account.balance - account.reserved >= price.cost;
end
$$;
revoke all on function public.has_enough_tokens(text, uuid) from public, anon, authenticated;
grant execute on function public.has_enough_tokens(text, uuid) to authenticated, service_role;

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
  from private.resolve_organization(get_token_stats.organization_id) r;
  select o.plan into organization_plan from public.organizations o where o.id = target_organization;

  -- Settle what is due in token_type order (the order every multi-row writer locks in);
  -- a read-only transaction cannot, and reads the projection below instead.
  if current_setting('transaction_read_only') <> 'on' then
    for due in
      select t.token_type from public.ai_tokens t
      where t.organization_id = target_organization
        and private.settlement_due(t.organization_id, t.token_type, t.refresh_date)
      order by t.token_type
    loop
      perform private.settle_tokens(target_organization, due.token_type);
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
           'percent_remaining', case when t.total_allocated > 0
             then round(100.0 * t.balance / t.total_allocated, 1) else 0 end,
           'low', t.total_allocated > 0 and t.balance::bigint * 5 < t.total_allocated,
           'period_started_at', t.period_started_at,
           'refresh_date', t.refresh_date
         ) order by t.token_type), '[]'::jsonb)
  into by_type
  from public.ai_tokens stored
  cross join lateral private.settled_view(stored) t
  where stored.organization_id = target_organization;

  return jsonb_build_object(
    'organization_id', target_organization,
    'plan', organization_plan,
    'enforcement', private.enforcement_mode(target_organization),
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
