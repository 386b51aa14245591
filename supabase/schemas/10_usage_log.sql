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
