-- tokens-client · 12 alerts: threshold crossings and refused spending.
--
-- Threshold alerts (80 % of the period allowance used, balance under 20 %, exhausted)
-- are written once per period and token type by the journal trigger (06_ledger.sql) in
-- the transaction that crosses the line; refused or would-be-refused spends by the
-- spending functions. Refusals are counted, not stored one row each: one row per
-- organization, token type, user, reason and hour (refusal_count, last_refused_at, the
-- details of the latest), so a member hammering a refused feature adds one row an hour.
-- Each new row is announced with pg_notify('ai_token_alerts', '{"id":…,
-- "organization_id":…}') — ids only, since any database session may listen; a listener
-- reads the row under its own rights. A bucket is announced once, when it is created.
set check_function_bodies = off;

create table if not exists public.ai_token_alerts (
  id bigint generated always as identity primary key,
  organization_id uuid not null,
  token_type text not null references public.ai_token_types (token_type) on update cascade,
  kind text not null check (kind in ('usage_80_percent', 'balance_below_20_percent', 'balance_exhausted', 'refused')),
  reason text,
  period timestamptz not null,
  details jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now(),
  user_id uuid,
  refusal_count integer not null default 1 check (refusal_count >= 1),
  bucket timestamptz,
  last_refused_at timestamptz
);
comment on column public.ai_token_alerts.refusal_count is 'refused rows: how many refusals of this user, reason and hour (bucket); 1 for threshold alerts.';
comment on column public.ai_token_alerts.bucket is 'refused rows: the hour the refusals were counted in; null for threshold alerts.';
create unique index if not exists ai_token_alerts_refusal_bucket_key
  on public.ai_token_alerts (organization_id, token_type, reason, user_id, bucket) nulls not distinct
  where kind = 'refused';
comment on table public.ai_token_alerts is 'Threshold alerts (once per period and token type) and refused or would-be-refused spending, counted per organization, token type, user, reason and hour. Each new row is announced with pg_notify(''ai_token_alerts'', ''{"id", "organization_id"}'').';
create unique index if not exists ai_token_alerts_once_per_period_key
  on public.ai_token_alerts (organization_id, token_type, kind, period) where kind <> 'refused';
create index if not exists ai_token_alerts_organization_date_idx on public.ai_token_alerts (organization_id, created_at desc);
create index if not exists ai_token_alerts_token_type_idx on public.ai_token_alerts (token_type);

revoke all on public.ai_token_alerts from anon, authenticated;
grant select on public.ai_token_alerts to authenticated;
grant all on public.ai_token_alerts to service_role;
alter table public.ai_token_alerts enable row level security;
drop policy if exists "Admins can view their organization's alerts" on public.ai_token_alerts;
create policy "Admins can view their organization's alerts"
  on public.ai_token_alerts for select to authenticated
  using (organization_id in (
    select m.organization_id from ai_tokens_internal.memberships() m where m.role in ('owner', 'admin')));
drop policy if exists "Service role manages alerts" on public.ai_token_alerts;
create policy "Service role manages alerts"
  on public.ai_token_alerts for all to service_role using (true) with check (true);

-- Send every alert to listeners of the ai_token_alerts channel (delivered on commit).
create or replace function ai_tokens_internal.notify_token_alert()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  perform pg_notify('ai_token_alerts', jsonb_build_object('id', new.id, 'organization_id', new.organization_id)::text);
  return null;
end
$$;
revoke all on function ai_tokens_internal.notify_token_alert() from public, anon, authenticated;

create or replace trigger ai_token_alerts_notify
  after insert on public.ai_token_alerts
  for each row execute function ai_tokens_internal.notify_token_alert();

-- Count a refused (enforce) or would-be-refused (monitor) spend in its 'refused' row:
-- the row of this organization, token type, user, reason and hour, created by the first
-- refusal (and announced then) and counted up by the next ones, which keep the latest
-- details.
create or replace function ai_tokens_internal.record_refusal(refusal jsonb, organization_id uuid, token_type text, enforcement text, context jsonb)
returns void
language sql
volatile
set search_path = ''
as $$
  insert into public.ai_token_alerts as a
    (organization_id, token_type, kind, reason, user_id, bucket, last_refused_at, period, details)
  values (
    record_refusal.organization_id, record_refusal.token_type, 'refused', record_refusal.refusal ->> 'reason',
    (record_refusal.context ->> 'user_id')::uuid, date_trunc('hour', now()), clock_timestamp(),
    coalesce((select t.period_started_at from public.ai_tokens t
              where t.organization_id = record_refusal.organization_id
                and t.token_type = record_refusal.token_type), now()),
    (record_refusal.refusal -> 'details') || coalesce(record_refusal.context, '{}'::jsonb)
      || jsonb_build_object('http_status', (record_refusal.refusal ->> 'http_status')::integer,
                            'message', record_refusal.refusal ->> 'message',
                            'enforcement', record_refusal.enforcement,
                            'refused', record_refusal.enforcement = 'enforce'))
  on conflict (organization_id, token_type, reason, user_id, bucket) where kind = 'refused'
  do update set refusal_count = a.refusal_count + 1, last_refused_at = excluded.last_refused_at,
                details = excluded.details
$$;
revoke all on function ai_tokens_internal.record_refusal(jsonb, uuid, text, text, jsonb) from public, anon, authenticated;

