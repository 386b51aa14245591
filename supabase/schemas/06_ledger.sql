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
  token_type text not null,
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
-- No foreign key on token_type: every spend would take a KEY SHARE lock on the one
-- shared ai_token_types row (a multixact under load). A renamed token type is carried
-- into the journal by the trigger below instead.
alter table public.ai_token_ledger drop constraint if exists ai_token_ledger_token_type_fkey;
drop index if exists public.ai_token_ledger_token_type_idx;
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

-- A token type renamed in the catalog (ai_tokens follows by its foreign key's ON UPDATE
-- CASCADE) is renamed in the journal too, so that balance = sum(delta) still holds.
create or replace function ai_tokens_internal.rename_ledger_token_type()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  update public.ai_token_ledger l set token_type = new.token_type where l.token_type = old.token_type;
  return null;
end
$$;
revoke all on function ai_tokens_internal.rename_ledger_token_type() from public, anon, authenticated;
create or replace trigger ai_token_types_rename_in_ledger
  after update of token_type on public.ai_token_types
  for each row when (new.token_type is distinct from old.token_type)
  execute function ai_tokens_internal.rename_ledger_token_type();

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
-- transaction that crosses it; the unique index keeps it once per period. The lines
-- are tested in plain code first: a spend that crosses none inserts nothing more.
create or replace function ai_tokens_internal.journal_token_balance()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  named text := current_setting('tokens.change', true);
  change jsonb;
  change_kind text := 'adjustment';
  ledger_id bigint;
  crossed text[];
begin
  if named <> '' then
    change := named::jsonb;
    change_kind := coalesce(change ->> 'kind', 'adjustment');
  end if;
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

  if tg_op = 'UPDATE' and new.balance < old.balance and new.total_allocated > 0 then
    if (new.balance - new.purchased_balance)::bigint * 5 < new.total_allocated
       and not (old.total_allocated > 0 and (old.balance - old.purchased_balance)::bigint * 5 < old.total_allocated) then
      crossed := crossed || 'usage_80_percent'::text;
    end if;
    if new.balance::bigint * 5 < new.total_allocated
       and not (old.total_allocated > 0 and old.balance::bigint * 5 < old.total_allocated) then
      crossed := crossed || 'balance_below_20_percent'::text;
    end if;
  end if;
  if tg_op = 'UPDATE' and new.balance = 0 and old.balance > 0 then
    crossed := crossed || 'balance_exhausted'::text;
  end if;
  if crossed is not null then
    insert into public.ai_token_alerts (organization_id, token_type, kind, reason, period, details)
    select new.organization_id, new.token_type, k.kind, change_kind, new.period_started_at,
           jsonb_build_object('balance', new.balance, 'allocated', new.total_allocated,
                              'purchased_balance', new.purchased_balance,
                              'used', greatest(new.total_allocated - (new.balance - new.purchased_balance), 0),
                              'ledger_id', ledger_id)
    from unnest(crossed) with ordinality as k (kind, n)
    order by k.n
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
-- when refunded); settle_after no later than what is due first; the daily usage rollup
-- equal to the log. Usage rows older than the first journal row of their type predate
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
    and not exists (select 1 from journal j where j.kind = 'refund' and j.usage_id = u.id)

  union all
  select t.organization_id, t.token_type, 'settle_after_late'::text, 0::bigint, 0::bigint,
         jsonb_build_object('settle_after', t.settle_after, 'due', n.due,
                            'message', 'settle_after is later than the first moment maintenance is due')
  from tokens t
  cross join lateral (select ai_tokens_internal.next_settlement(t.organization_id, t.token_type, t.refresh_date) as due) n
  where t.settle_after > n.due

  union all
  select coalesce(l.organization_id, d.organization_id), null::text, 'usage_rollup_mismatch'::text,
         coalesce(l.tokens, 0), coalesce(d.tokens, 0),
         jsonb_build_object('day', coalesce(l.day, d.day), 'user_id', coalesce(l.user_id, d.user_id),
                            'feature', coalesce(l.feature, d.feature), 'uses', coalesce(l.uses, 0),
                            'rolled_up_uses', coalesce(d.uses, 0),
                            'message', 'ai_token_usage_daily differs from the usage log')
  from (
    select u.organization_id, (u.created_at at time zone 'UTC')::date as day, u.user_id,
           coalesce(u.user_id, '00000000-0000-0000-0000-000000000000'::uuid) as user_key, u.feature_used as feature,
           count(*)::bigint as uses, sum(u.tokens_deducted)::bigint as tokens
    from public.ai_token_usage_log u
    where verify_token_ledger.organization_id is null or u.organization_id = verify_token_ledger.organization_id
    group by 1, 2, 3, 4, 5
  ) l
  full join (
    select r.organization_id, r.day, r.user_id,
           coalesce(r.user_id, '00000000-0000-0000-0000-000000000000'::uuid) as user_key, r.feature, r.uses, r.tokens
    from public.ai_token_usage_daily r
    where (verify_token_ledger.organization_id is null or r.organization_id = verify_token_ledger.organization_id)
      and (r.uses <> 0 or r.tokens <> 0)
  ) d on d.organization_id = l.organization_id and d.day = l.day and d.user_key = l.user_key and d.feature = l.feature
  where l.organization_id is null or d.organization_id is null or l.uses <> d.uses or l.tokens <> d.tokens;
end
$$;
revoke all on function public.verify_token_ledger(uuid) from public, anon, authenticated;
grant execute on function public.verify_token_ledger(uuid) to service_role;
comment on function public.verify_token_ledger(uuid) is 'tokens-client: every violation of balance = sum of the journal (service role)';

