-- tokens-client · 12 alerts: threshold crossings and refused spending.
--
-- Threshold alerts (80 % of the period allowance used, balance under 20 %, exhausted)
-- are written once per period and token type by the journal trigger (06_ledger.sql) in
-- the transaction that crosses the line; refused or would-be-refused spends by the
-- spending functions. Each row is also sent with pg_notify('ai_token_alerts', ...).
set check_function_bodies = off;

create table if not exists public.ai_token_alerts (
  id bigint generated always as identity primary key,
  organization_id uuid not null,
  token_type text not null references public.ai_token_types (token_type) on update cascade,
  kind text not null check (kind in ('usage_80_percent', 'balance_below_20_percent', 'balance_exhausted', 'refused')),
  reason text,
  period timestamptz not null,
  details jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now()
);
comment on table public.ai_token_alerts is 'Threshold alerts (once per period and token type) and refused or would-be-refused spending. Each row is also sent with pg_notify(''ai_token_alerts'', ...).';
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
  perform pg_notify('ai_token_alerts', jsonb_build_object(
    'id', new.id, 'organization_id', new.organization_id, 'token_type', new.token_type,
    'kind', new.kind, 'reason', new.reason, 'period', new.period, 'details', new.details,
    'created_at', new.created_at)::text);
  return null;
end
$$;
revoke all on function ai_tokens_internal.notify_token_alert() from public, anon, authenticated;

create or replace trigger ai_token_alerts_notify
  after insert on public.ai_token_alerts
  for each row execute function ai_tokens_internal.notify_token_alert();

-- Record a refused (enforce) or would-be-refused (monitor) spend as a 'refused' alert.
create or replace function ai_tokens_internal.record_refusal(refusal jsonb, organization_id uuid, token_type text, enforcement text, context jsonb)
returns void
language sql
volatile
set search_path = ''
as $$
  insert into public.ai_token_alerts (organization_id, token_type, kind, reason, period, details)
  values (
    record_refusal.organization_id, record_refusal.token_type, 'refused', record_refusal.refusal ->> 'reason',
    coalesce((select t.period_started_at from public.ai_tokens t
              where t.organization_id = record_refusal.organization_id
                and t.token_type = record_refusal.token_type), now()),
    (record_refusal.refusal -> 'details') || coalesce(record_refusal.context, '{}'::jsonb)
      || jsonb_build_object('http_status', (record_refusal.refusal ->> 'http_status')::integer,
                            'message', record_refusal.refusal ->> 'message',
                            'enforcement', record_refusal.enforcement,
                            'refused', record_refusal.enforcement = 'enforce'))
$$;
revoke all on function ai_tokens_internal.record_refusal(jsonb, uuid, text, text, jsonb) from public, anon, authenticated;

