-- tokens-client · 19 webhooks: alerts delivered to each organization's HTTP endpoints.
--
-- An organization's webhook endpoints are rows (URL, whsec_ secret, which alert kinds),
-- managed by the service role and readable without the secret by the organization's
-- owners and admins. Every ai_token_alerts row that an endpoint subscribes to writes one
-- ai_webhook_deliveries row in the alert's own transaction (the outbox), so an alert is
-- never lost and never sent for a rolled-back spend. Deliverers (the webhook-deliver
-- Edge Function on a pg_cron schedule, `tokens webhooks deliver`) claim due rows with
-- FOR UPDATE SKIP LOCKED under a lease, POST them signed in the Standard Webhooks format
-- (webhook-id = the delivery's id, stable over every retry), and report each attempt.
-- A failed attempt is retried after min(retry_cap, retry_base * 2^(attempt-1)) seconds;
-- after max_attempts the delivery is kept as 'failed'.
set check_function_bodies = off;

-- ------------------------------------------------------------------ tables

create table if not exists public.ai_webhook_endpoints (
  id uuid primary key default gen_random_uuid(),
  organization_id uuid not null,
  url text not null check (url ~ '^https?://[^\s/?#]+' and length(url) <= 2000),
  secret text not null check (secret ~ '^whsec_[A-Za-z0-9+/]+={0,2}$'),
  -- null: every alert kind, including kinds added later.
  alert_kinds text[] check (cardinality(alert_kinds) > 0),
  description text check (length(description) <= 500),
  max_attempts integer not null default 8 check (max_attempts between 1 and 100),
  retry_base_seconds integer not null default 60 check (retry_base_seconds between 1 and 86400),
  retry_cap_seconds integer not null default 21600 check (retry_cap_seconds between 1 and 604800),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint ai_webhook_endpoints_url_key unique (organization_id, url)
);
comment on table public.ai_webhook_endpoints is 'Webhook endpoints of an organization: alerts of alert_kinds (null: all) are POSTed to url, signed with secret (Standard Webhooks, whsec_<base64>). Owners and admins read every column but secret.';

create table if not exists public.ai_webhook_deliveries (
  id uuid primary key default gen_random_uuid(),
  endpoint_id uuid not null references public.ai_webhook_endpoints (id) on delete cascade,
  organization_id uuid not null,
  alert_id bigint not null references public.ai_token_alerts (id) on delete cascade,
  event_type text not null,
  payload jsonb not null,
  status text not null default 'pending' check (status in ('pending', 'delivered', 'failed')),
  attempts integer not null default 0,
  next_attempt_at timestamptz not null default now(),
  lease_id uuid,
  last_http_status integer,
  last_error text,
  created_at timestamptz not null default now(),
  delivered_at timestamptz,
  failed_at timestamptz,
  constraint ai_webhook_deliveries_once_key unique (endpoint_id, alert_id)
);
comment on table public.ai_webhook_deliveries is 'The webhook outbox: one row per alert and endpoint, written in the alert''s transaction. id is the webhook-id of every attempt. pending rows are due at next_attempt_at (a claim leases a row by moving it to the lease''s end); delivered and failed rows stay.';
create index if not exists ai_webhook_deliveries_due_idx
  on public.ai_webhook_deliveries (next_attempt_at) where status = 'pending';
create index if not exists ai_webhook_deliveries_alert_idx on public.ai_webhook_deliveries (alert_id);
create index if not exists ai_webhook_deliveries_organization_idx
  on public.ai_webhook_deliveries (organization_id, created_at desc);

create table if not exists public.ai_webhook_delivery_attempts (
  id bigint generated always as identity primary key,
  delivery_id uuid not null references public.ai_webhook_deliveries (id) on delete cascade,
  attempt integer not null,
  lease_id uuid not null,
  claimed_at timestamptz not null default now(),
  finished_at timestamptz,
  ok boolean,
  http_status integer,
  error text,
  -- when the delivery is due again after this failed attempt (null: delivered or given up)
  retry_at timestamptz,
  constraint ai_webhook_delivery_attempts_key unique (delivery_id, attempt)
);
comment on table public.ai_webhook_delivery_attempts is 'Every delivery attempt: when it was claimed and finished, the HTTP status or error, and when it is retried.';
create index if not exists ai_webhook_delivery_attempts_lease_idx on public.ai_webhook_delivery_attempts (lease_id);

-- Clients read endpoints without the secret (a column grant) and the deliveries of their
-- organization; the service role manages all three tables.
revoke all on public.ai_webhook_endpoints, public.ai_webhook_deliveries, public.ai_webhook_delivery_attempts
  from anon, authenticated;
grant select (id, organization_id, url, alert_kinds, description, max_attempts, retry_base_seconds,
              retry_cap_seconds, created_at, updated_at)
  on public.ai_webhook_endpoints to authenticated;
grant select on public.ai_webhook_deliveries, public.ai_webhook_delivery_attempts to authenticated;
grant all on public.ai_webhook_endpoints, public.ai_webhook_deliveries, public.ai_webhook_delivery_attempts
  to service_role;
alter table public.ai_webhook_endpoints enable row level security;
alter table public.ai_webhook_deliveries enable row level security;
alter table public.ai_webhook_delivery_attempts enable row level security;

drop policy if exists "Admins can view their organization's webhooks" on public.ai_webhook_endpoints;
create policy "Admins can view their organization's webhooks"
  on public.ai_webhook_endpoints for select to authenticated
  using (organization_id in (
    select m.organization_id from ai_tokens_internal.memberships() m where m.role in ('owner', 'admin')));
drop policy if exists "Service role manages webhook endpoints" on public.ai_webhook_endpoints;
create policy "Service role manages webhook endpoints"
  on public.ai_webhook_endpoints for all to service_role using (true) with check (true);

drop policy if exists "Admins can view their organization's deliveries" on public.ai_webhook_deliveries;
create policy "Admins can view their organization's deliveries"
  on public.ai_webhook_deliveries for select to authenticated
  using (organization_id in (
    select m.organization_id from ai_tokens_internal.memberships() m where m.role in ('owner', 'admin')));
drop policy if exists "Service role manages webhook deliveries" on public.ai_webhook_deliveries;
create policy "Service role manages webhook deliveries"
  on public.ai_webhook_deliveries for all to service_role using (true) with check (true);

drop policy if exists "Admins can view their organization's attempts" on public.ai_webhook_delivery_attempts;
create policy "Admins can view their organization's attempts"
  on public.ai_webhook_delivery_attempts for select to authenticated
  using (delivery_id in (
    select d.id from public.ai_webhook_deliveries d
    where d.organization_id in (
      select m.organization_id from ai_tokens_internal.memberships() m where m.role in ('owner', 'admin'))));
drop policy if exists "Service role manages webhook attempts" on public.ai_webhook_delivery_attempts;
create policy "Service role manages webhook attempts"
  on public.ai_webhook_delivery_attempts for all to service_role using (true) with check (true);

-- --------------------------------------------------------------- helpers

-- The alert kinds an endpoint may subscribe to: the values the CHECK constraint on
-- ai_token_alerts.kind allows, so a kind added there is known here with no second list.
create or replace function ai_tokens_internal.webhook_alert_kinds()
returns text[]
language sql
stable
set search_path = ''
as $$
  select coalesce(array_agg(distinct k.kind order by k.kind), '{}')
  from pg_catalog.pg_constraint c
  join pg_catalog.pg_attribute a on a.attrelid = c.conrelid and a.attnum = any (c.conkey)
  cross join lateral regexp_matches(pg_catalog.pg_get_constraintdef(c.oid), '''([a-z0-9_]+)''', 'g') m(found)
  cross join lateral (select m.found[1]) k(kind)
  where c.conrelid = 'public.ai_token_alerts'::regclass and c.contype = 'c' and a.attname = 'kind'
$$;
revoke all on function ai_tokens_internal.webhook_alert_kinds() from public, anon, authenticated;
grant execute on function ai_tokens_internal.webhook_alert_kinds() to service_role;

-- How long a delivery waits after its attempt-th failed attempt: exponential from base,
-- at most cap.
create or replace function ai_tokens_internal.webhook_retry_delay(attempt integer, base_seconds integer, cap_seconds integer)
returns interval
language sql
immutable
set search_path = ''
as $$
  select make_interval(secs => least(webhook_retry_delay.cap_seconds::double precision,
    webhook_retry_delay.base_seconds * power(2::double precision, greatest(webhook_retry_delay.attempt, 1) - 1)))
$$;
revoke all on function ai_tokens_internal.webhook_retry_delay(integer, integer, integer) from public, anon, authenticated;
grant execute on function ai_tokens_internal.webhook_retry_delay(integer, integer, integer) to service_role;

-- The outbox trigger: one delivery per subscribed endpoint of the alert's organization,
-- in the alert's transaction, and a wake-up for listening deliverers on commit.
-- SECURITY DEFINER: the outbox is written whoever inserts the alert.
create or replace function ai_tokens_internal.enqueue_alert_webhooks()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  queued integer;
begin
  insert into public.ai_webhook_deliveries (endpoint_id, organization_id, alert_id, event_type, payload)
  select e.id, new.organization_id, new.id, 'ai_token_alert.' || new.kind,
         jsonb_build_object(
           'type', 'ai_token_alert.' || new.kind,
           'timestamp', new.created_at,
           'data', jsonb_build_object(
             'alert_id', new.id, 'organization_id', new.organization_id, 'token_type', new.token_type,
             'kind', new.kind, 'reason', new.reason, 'period', new.period, 'details', new.details,
             'created_at', new.created_at))
  from public.ai_webhook_endpoints e
  where e.organization_id = new.organization_id
    and (e.alert_kinds is null or new.kind = any (e.alert_kinds))
  on conflict on constraint ai_webhook_deliveries_once_key do nothing;
  get diagnostics queued = row_count;
  if queued > 0 then
    perform pg_notify('ai_webhook_deliveries', '');
  end if;
  return null;
end
$$;
revoke all on function ai_tokens_internal.enqueue_alert_webhooks() from public, anon, authenticated;

create or replace trigger ai_token_alerts_webhooks
  after insert on public.ai_token_alerts
  for each row execute function ai_tokens_internal.enqueue_alert_webhooks();

-- ------------------------------------------------------------------ admin API

-- set_webhook_endpoint: create, or replace everything of, the organization's endpoint
-- for url. alert_kinds null means every kind. Service role only. Returns the endpoint
-- without its secret. Refuses (400) a URL that is not http(s), a missing or malformed
-- secret, an unknown alert kind and retry settings out of range; changes nothing then.
create or replace function public.set_webhook_endpoint(
  organization_id uuid,
  url text,
  secret text,
  alert_kinds text[] default null,
  description text default null,
  max_attempts integer default 8,
  retry_base_seconds integer default 60,
  retry_cap_seconds integer default 21600
)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  known text[] := ai_tokens_internal.webhook_alert_kinds();
  unknown text;
  saved public.ai_webhook_endpoints;
begin
  perform ai_tokens_internal.require_service_role('set_webhook_endpoint');
  perform ai_tokens_internal.require_argument(organization_id is not null, 'organization_id');
  perform ai_tokens_internal.require_argument(nullif(url, '') is not null, 'url');
  perform ai_tokens_internal.require_argument(nullif(secret, '') is not null, 'secret');
  if url !~ '^https?://[^\s/?#]+' or length(url) > 2000 then
    perform ai_tokens_internal.refuse(400, 'invalid_webhook_url', 'url must be an http:// or https:// URL',
      jsonb_build_object('field', 'url'));
  end if;
  if secret !~ '^whsec_[A-Za-z0-9+/]+={0,2}$'
     or length(secret) - 6 not between 32 and 128 then
    perform ai_tokens_internal.refuse(400, 'invalid_webhook_secret',
      'secret must be whsec_ followed by 24 to 96 bytes in base64',
      jsonb_build_object('field', 'secret'));
  end if;
  if alert_kinds is not null then
    if cardinality(alert_kinds) = 0 then
      perform ai_tokens_internal.refuse(400, 'invalid_request', 'alert_kinds must name a kind, or be null for all',
        jsonb_build_object('field', 'alert_kinds', 'known_kinds', known));
    end if;
    select k into unknown from unnest(alert_kinds) k where k is null or not k = any (known) limit 1;
    if found then
      perform ai_tokens_internal.refuse(400, 'unknown_alert_kind', 'Unknown alert kind',
        jsonb_build_object('field', 'alert_kinds', 'alert_kind', left(unknown, 100), 'known_kinds', known));
    end if;
  end if;
  if max_attempts is null or max_attempts not between 1 and 100 then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'max_attempts must be between 1 and 100',
      jsonb_build_object('field', 'max_attempts'));
  end if;
  if retry_base_seconds is null or retry_base_seconds not between 1 and 86400 then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'retry_base_seconds must be between 1 and 86400',
      jsonb_build_object('field', 'retry_base_seconds'));
  end if;
  if retry_cap_seconds is null or retry_cap_seconds not between retry_base_seconds and 604800 then
    perform ai_tokens_internal.refuse(400, 'invalid_request',
      'retry_cap_seconds must be between retry_base_seconds and 604800',
      jsonb_build_object('field', 'retry_cap_seconds'));
  end if;
  if length(description) > 500 then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'description must be at most 500 characters',
      jsonb_build_object('field', 'description'));
  end if;
  perform ai_tokens_internal.require_organization(set_webhook_endpoint.organization_id);

  insert into public.ai_webhook_endpoints as e
    (organization_id, url, secret, alert_kinds, description, max_attempts, retry_base_seconds, retry_cap_seconds)
  values (set_webhook_endpoint.organization_id, set_webhook_endpoint.url, set_webhook_endpoint.secret,
          (select array_agg(distinct k order by k) from unnest(set_webhook_endpoint.alert_kinds) k),
          set_webhook_endpoint.description, set_webhook_endpoint.max_attempts,
          set_webhook_endpoint.retry_base_seconds, set_webhook_endpoint.retry_cap_seconds)
  on conflict on constraint ai_webhook_endpoints_url_key do update
    set secret = excluded.secret, alert_kinds = excluded.alert_kinds, description = excluded.description,
        max_attempts = excluded.max_attempts, retry_base_seconds = excluded.retry_base_seconds,
        retry_cap_seconds = excluded.retry_cap_seconds, updated_at = now()
  returning e.* into saved;
  return to_jsonb(saved) - 'secret';
end
$$;
revoke all on function public.set_webhook_endpoint(uuid, text, text, text[], text, integer, integer, integer) from public, anon, authenticated;
grant execute on function public.set_webhook_endpoint(uuid, text, text, text[], text, integer, integer, integer) to service_role;
comment on function public.set_webhook_endpoint(uuid, text, text, text[], text, integer, integer, integer) is 'tokens-client: create or replace an organization''s webhook endpoint for alerts (service role)';

-- delete_webhook_endpoint: remove an endpoint with its deliveries (pending ones are not
-- sent). Service role only. 404 webhook_endpoint_not_found when there is none.
create or replace function public.delete_webhook_endpoint(endpoint_id uuid)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  removed public.ai_webhook_endpoints;
begin
  perform ai_tokens_internal.require_service_role('delete_webhook_endpoint');
  perform ai_tokens_internal.require_argument(endpoint_id is not null, 'endpoint_id');
  delete from public.ai_webhook_endpoints e where e.id = delete_webhook_endpoint.endpoint_id
  returning e.* into removed;
  if not found then
    perform ai_tokens_internal.refuse(404, 'webhook_endpoint_not_found', 'No such webhook endpoint',
      jsonb_build_object('endpoint_id', endpoint_id));
  end if;
  return (to_jsonb(removed) - 'secret') || jsonb_build_object('deleted', true);
end
$$;
revoke all on function public.delete_webhook_endpoint(uuid) from public, anon, authenticated;
grant execute on function public.delete_webhook_endpoint(uuid) to service_role;
comment on function public.delete_webhook_endpoint(uuid) is 'tokens-client: remove a webhook endpoint and its deliveries (service role)';

-- ------------------------------------------------------------- the deliverers' API

-- claim_webhook_deliveries: lease up to max_deliveries due deliveries for lease_seconds
-- and return what to send: the webhook-id (id), the lease to report with, the attempt
-- number, url, secret and the exact body. Rows locked by another claim are skipped, and
-- a leased row is not due again before its lease ends, so concurrent deliverers never
-- send one delivery at the same time. A row whose last lease ran out unreported after
-- its final attempt is given up first. Service role only.
create or replace function public.claim_webhook_deliveries(max_deliveries integer default 10, lease_seconds integer default 60)
returns table (id uuid, lease_id uuid, attempt integer, url text, secret text, event_type text, body text)
language plpgsql
volatile
security invoker
set search_path = ''
as $$
begin
  perform ai_tokens_internal.require_service_role('claim_webhook_deliveries');
  if max_deliveries is null or max_deliveries not between 1 and 1000 then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'max_deliveries must be between 1 and 1000',
      jsonb_build_object('field', 'max_deliveries'));
  end if;
  if lease_seconds is null or lease_seconds not between 1 and 3600 then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'lease_seconds must be between 1 and 3600',
      jsonb_build_object('field', 'lease_seconds'));
  end if;

  update public.ai_webhook_deliveries d
     set status = 'failed', failed_at = now(), lease_id = null,
         last_error = coalesce(d.last_error, 'the deliverer did not report its last attempt')
    from public.ai_webhook_endpoints e
   where e.id = d.endpoint_id and d.status = 'pending' and d.next_attempt_at <= now()
     and d.attempts >= e.max_attempts;

  return query
  with due as (
    select d.id
    from public.ai_webhook_deliveries d
    where d.status = 'pending' and d.next_attempt_at <= now()
    order by d.next_attempt_at, d.id
    limit max_deliveries
    for update skip locked
  ), leased as (
    update public.ai_webhook_deliveries d
       set attempts = d.attempts + 1, lease_id = gen_random_uuid(),
           next_attempt_at = now() + make_interval(secs => lease_seconds)
      from due
     where d.id = due.id
    returning d.id, d.lease_id, d.attempts, d.endpoint_id, d.event_type, d.payload
  ), recorded as (
    insert into public.ai_webhook_delivery_attempts (delivery_id, attempt, lease_id)
    select l.id, l.attempts, l.lease_id from leased l
  )
  select l.id, l.lease_id, l.attempts, e.url, e.secret, l.event_type, l.payload::text
  from leased l join public.ai_webhook_endpoints e on e.id = l.endpoint_id
  order by l.id;
end
$$;
revoke all on function public.claim_webhook_deliveries(integer, integer) from public, anon, authenticated;
grant execute on function public.claim_webhook_deliveries(integer, integer) to service_role;
comment on function public.claim_webhook_deliveries(integer, integer) is 'tokens-client: lease due webhook deliveries to a deliverer (service role)';

-- complete_webhook_delivery: report the attempt made under lease_id. ok: delivered.
-- Not ok: retried after the endpoint's backoff, or given up as 'failed' after its
-- max_attempts. 409 webhook_lease_lost when the lease is no longer this delivery's
-- (reported already, or the lease ran out and another deliverer claimed it). Service
-- role only. Returns the delivery's status.
create or replace function public.complete_webhook_delivery(
  delivery_id uuid,
  lease_id uuid,
  ok boolean,
  http_status integer default null,
  error text default null
)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  delivery public.ai_webhook_deliveries;
  endpoint public.ai_webhook_endpoints;
  due_again timestamptz;
begin
  perform ai_tokens_internal.require_service_role('complete_webhook_delivery');
  perform ai_tokens_internal.require_argument(delivery_id is not null, 'delivery_id');
  perform ai_tokens_internal.require_argument(lease_id is not null, 'lease_id');
  perform ai_tokens_internal.require_argument(ok is not null, 'ok');

  select d.* into delivery from public.ai_webhook_deliveries d
  where d.id = complete_webhook_delivery.delivery_id for update;
  if not found then
    perform ai_tokens_internal.refuse(404, 'webhook_delivery_not_found', 'No such webhook delivery',
      jsonb_build_object('delivery_id', delivery_id));
  end if;
  if delivery.lease_id is distinct from complete_webhook_delivery.lease_id or delivery.status <> 'pending' then
    perform ai_tokens_internal.refuse(409, 'webhook_lease_lost',
      'This attempt''s lease is no longer held: it was reported, or another deliverer claimed the delivery',
      jsonb_build_object('delivery_id', delivery_id, 'status', delivery.status, 'attempts', delivery.attempts));
  end if;
  select e.* into endpoint from public.ai_webhook_endpoints e where e.id = delivery.endpoint_id;

  if not ok and delivery.attempts < endpoint.max_attempts then
    due_again := now() + ai_tokens_internal.webhook_retry_delay(
      delivery.attempts, endpoint.retry_base_seconds, endpoint.retry_cap_seconds);
  end if;
  update public.ai_webhook_delivery_attempts a
     set finished_at = now(), ok = complete_webhook_delivery.ok,
         http_status = complete_webhook_delivery.http_status,
         error = left(complete_webhook_delivery.error, 1000), retry_at = due_again
   where a.lease_id = complete_webhook_delivery.lease_id;
  update public.ai_webhook_deliveries d
     set lease_id = null, last_http_status = complete_webhook_delivery.http_status,
         last_error = case when ok then null else left(complete_webhook_delivery.error, 1000) end,
         status = case when ok then 'delivered' when due_again is null then 'failed' else 'pending' end,
         delivered_at = case when ok then now() end,
         failed_at = case when not ok and due_again is null then now() end,
         next_attempt_at = coalesce(due_again, d.next_attempt_at)
   where d.id = delivery.id
  returning d.* into delivery;
  return jsonb_build_object('delivery_id', delivery.id, 'status', delivery.status, 'attempts', delivery.attempts,
    'next_attempt_at', case when delivery.status = 'pending' then delivery.next_attempt_at end);
end
$$;
revoke all on function public.complete_webhook_delivery(uuid, uuid, boolean, integer, text) from public, anon, authenticated;
grant execute on function public.complete_webhook_delivery(uuid, uuid, boolean, integer, text) to service_role;
comment on function public.complete_webhook_delivery(uuid, uuid, boolean, integer, text) is 'tokens-client: report a webhook delivery attempt: delivered, retried later, or failed (service role)';
