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

