-- Webhooks: endpoints as data, the outbox written with each alert, and the deliverers'
-- claim / complete protocol (leases, backoff, giving up). HTTP delivery itself is
-- tested end to end by tests/test_webhooks.py and webhook-deliver/index.test.ts.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = public, extensions;

select plan(27);

-- Fixtures and callers come from 000-setup-test-helpers.
do $$
begin
  perform tests.create_organization('hooked org');
  perform tests.create_organization('other org');
  perform tests.create_user('owner of hooked', tests.id('hooked org'), 'owner');
  perform tests.create_user('admin of hooked', tests.id('hooked org'), 'admin');
  perform tests.create_user('member of hooked', tests.id('hooked org'), 'member');
  perform tests.create_user('admin of other', tests.id('other org'), 'admin');
end
$$;

create function tests.alert(organization_id uuid, kind text) returns bigint
language sql set search_path = '' as $$
  insert into public.ai_token_alerts (organization_id, token_type, kind, reason, period)
  values (alert.organization_id, 'general', alert.kind, case when alert.kind = 'refused' then 'insufficient_tokens' end, now())
  returning id
$$;

-- ------------------------------------------------------------ endpoints
select is(ai_tokens_internal.webhook_alert_kinds(),
  array['balance_below_20_percent', 'balance_exhausted', 'refused', 'usage_80_percent'],
  'the subscribable kinds are the ones ai_token_alerts.kind allows');

select tests.authenticate_as_service_role();
select is(
  public.set_webhook_endpoint(tests.id('hooked org'), 'https://hooks.example.test/all',
    'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw') - array['id', 'created_at', 'updated_at'],
  jsonb_build_object('organization_id', tests.id('hooked org'), 'url', 'https://hooks.example.test/all',
    'alert_kinds', null, 'description', null, 'max_attempts', 8, 'retry_base_seconds', 60,
    'retry_cap_seconds', 21600),
  'set_webhook_endpoint creates an endpoint for every kind and answers without the secret');
select is(
  public.set_webhook_endpoint(tests.id('hooked org'), 'http://hooks.example.test/refusals',
    'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', array['refused', 'refused'], 'refusals only', 3, 2, 5)
    -> 'alert_kinds',
  '["refused"]'::jsonb,
  'an endpoint can subscribe to some kinds (kept once each)');
select is(
  public.set_webhook_endpoint(tests.id('hooked org'), 'http://hooks.example.test/refusals',
    'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', array['refused'], 'refusals only', 2, 2, 5) -> 'max_attempts',
  '2'::jsonb,
  'setting the same URL again replaces its settings');
select is((select count(*)::integer from public.ai_webhook_endpoints where organization_id = tests.id('hooked org')), 2,
  'and does not add a second endpoint');

create temp table endpoints_before as select * from public.ai_webhook_endpoints;
select results_eq(
  $$ select r -> 'detail' ->> 'reason', r -> 'detail' ->> 'field', r ->> 'sqlstate' from (values
       (1, tests.refusal($q$select public.set_webhook_endpoint(tests.id('hooked org'), 'ftp://hooks.example.test/x', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw')$q$)),
       (2, tests.refusal($q$select public.set_webhook_endpoint(tests.id('hooked org'), 'hooks.example.test/x', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw')$q$)),
       (3, tests.refusal($q$select public.set_webhook_endpoint(tests.id('hooked org'), 'https://hooks.example.test/x', null)$q$)),
       (4, tests.refusal($q$select public.set_webhook_endpoint(tests.id('hooked org'), 'https://hooks.example.test/x', 'sesame')$q$)),
       (5, tests.refusal($q$select public.set_webhook_endpoint(tests.id('hooked org'), 'https://hooks.example.test/x', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', array['refused', 'lunch_time'])$q$)),
       (6, tests.refusal($q$select public.set_webhook_endpoint(tests.id('hooked org'), 'https://hooks.example.test/x', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', '{}')$q$)),
       (7, tests.refusal($q$select public.set_webhook_endpoint(tests.id('hooked org'), 'https://hooks.example.test/x', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', retry_base_seconds => 10, retry_cap_seconds => 5)$q$)),
       (8, tests.refusal($q$select public.set_webhook_endpoint(gen_random_uuid(), 'https://hooks.example.test/x', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw')$q$))
     ) v(n, r) order by n $$,
  $$ values ('invalid_webhook_url', 'url', 'PT400'), ('invalid_webhook_url', 'url', 'PT400'),
            ('invalid_request', 'secret', 'PT400'), ('invalid_webhook_secret', 'secret', 'PT400'),
            ('unknown_alert_kind', 'alert_kinds', 'PT400'), ('invalid_request', 'alert_kinds', 'PT400'),
            ('invalid_request', 'retry_cap_seconds', 'PT400'), ('organization_not_found', null, 'PT404') $$,
  'a URL that is not http(s), a missing or malformed secret, an unknown kind, bad retry settings and an unknown organization are refused with their reason');
select is(
  tests.refusal($q$select public.set_webhook_endpoint(tests.id('hooked org'), 'https://hooks.example.test/x', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', array['lunch_time'])$q$) -> 'detail',
  '{"reason": "unknown_alert_kind", "field": "alert_kinds", "alert_kind": "lunch_time",
    "known_kinds": ["balance_below_20_percent", "balance_exhausted", "refused", "usage_80_percent"]}'::jsonb,
  'the unknown kind is named in the facts with the known ones (not in the message)');
select set_eq($$ select * from public.ai_webhook_endpoints $$, $$ select * from endpoints_before $$,
  'and the refusals changed nothing');
select tests.clear_authentication();

-- ------------------------------------------------------------ who reads what
select tests.authenticate_as(tests.id('member of hooked'));
select throws_ok($$ select public.set_webhook_endpoint(tests.id('hooked org'), 'https://x.example.test', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw') $$,
  '42501', 'permission denied for function set_webhook_endpoint', 'a member cannot set an endpoint');
select is_empty($$ select id from public.ai_webhook_endpoints $$, 'a member sees no endpoint');
select tests.authenticate_as(tests.id('admin of other'));
select is_empty($$ select id from public.ai_webhook_endpoints $$, 'an admin of another organization sees none of these');
select tests.authenticate_as(tests.id('admin of hooked'));
select results_eq($$ select url from public.ai_webhook_endpoints order by url $$,
  $$ values ('http://hooks.example.test/refusals'), ('https://hooks.example.test/all') $$,
  'an admin of the organization reads its endpoints');
select throws_ok($$ select secret from public.ai_webhook_endpoints $$, '42501',
  'permission denied for table ai_webhook_endpoints', 'but not their secret');
select tests.authenticate_as(tests.id('owner of hooked'));
select is((select count(*)::integer from public.ai_webhook_endpoints), 2, 'the owner reads them too');
select throws_ok($$ select public.claim_webhook_deliveries() $$, '42501',
  'permission denied for function claim_webhook_deliveries', 'no signed-in user claims deliveries');
select tests.clear_authentication();

-- ------------------------------------------------------------ the outbox
select tests.alert(tests.id('hooked org'), 'usage_80_percent') as usage_alert \gset
select tests.alert(tests.id('hooked org'), 'refused') as refused_alert \gset
select tests.alert(tests.id('other org'), 'refused') as other_alert \gset
select results_eq(
  format($$ select e.url, d.alert_id, d.event_type, d.status, d.attempts from public.ai_webhook_deliveries d
            join public.ai_webhook_endpoints e on e.id = d.endpoint_id
            where d.alert_id in (%s, %s, %s) order by d.alert_id, e.url $$, :usage_alert, :refused_alert, :other_alert),
  format($$ values ('https://hooks.example.test/all', %1$s::bigint, 'ai_token_alert.usage_80_percent', 'pending', 0),
                   ('http://hooks.example.test/refusals', %2$s, 'ai_token_alert.refused', 'pending', 0),
                   ('https://hooks.example.test/all', %2$s, 'ai_token_alert.refused', 'pending', 0) $$,
         :usage_alert, :refused_alert),
  'each alert writes one pending delivery per endpoint subscribed to its kind, in its own transaction');
select is(
  (select d.payload from public.ai_webhook_deliveries d where d.alert_id = :refused_alert limit 1) - 'timestamp',
  jsonb_build_object('type', 'ai_token_alert.refused', 'data', (
    select jsonb_build_object('alert_id', a.id, 'organization_id', a.organization_id, 'token_type', a.token_type,
             'kind', a.kind, 'reason', a.reason, 'period', a.period, 'details', a.details, 'created_at', a.created_at)
    from public.ai_token_alerts a where a.id = :refused_alert)),
  'the payload is {type, timestamp, data: the alert}');

-- ------------------------------------------------------------ claim and complete
-- Only these tests' deliveries are due: others (of other files or runs) are moved away.
update public.ai_webhook_deliveries set next_attempt_at = now() + interval '1 day'
where organization_id <> tests.id('hooked org') and status = 'pending';

select tests.authenticate_as_service_role();
create temp table claim1 as select * from public.claim_webhook_deliveries(10, 30);
select results_eq($$ select attempt, count(*)::integer from claim1 group by attempt $$, $$ values (1, 3) $$,
  'a claim leases every due delivery, as attempt 1');
select is_empty($$ select * from public.claim_webhook_deliveries(10, 30) $$,
  'a second claim gets nothing while the leases hold');
select ok((select bool_and(c.secret = e.secret and c.url = e.url and c.body::jsonb = d.payload)
           from claim1 c join public.ai_webhook_deliveries d on d.id = c.id
           join public.ai_webhook_endpoints e on e.id = d.endpoint_id),
  'each claimed row carries its endpoint''s url and secret and the exact body');

select is(
  public.complete_webhook_delivery(c.id, c.lease_id, false, 500, 'Internal Server Error') -> 'status',
  '"pending"'::jsonb, 'a failed attempt keeps the delivery pending')
from claim1 c join public.ai_webhook_deliveries d on d.id = c.id
join public.ai_webhook_endpoints e on e.id = d.endpoint_id
where e.url = 'http://hooks.example.test/refusals';
select results_eq(
  $$ select a.retry_at - a.finished_at, d.next_attempt_at = a.retry_at from public.ai_webhook_delivery_attempts a
     join public.ai_webhook_deliveries d on d.id = a.delivery_id join public.ai_webhook_endpoints e on e.id = d.endpoint_id
     where e.url = 'http://hooks.example.test/refusals' $$,
  $$ values (interval '2 seconds', true) $$,
  'and schedules it retry_base_seconds after the attempt');
select is(
  tests.refusal(format($$ select public.complete_webhook_delivery(%L, %L, true) $$, c.id, c.lease_id)) -> 'detail' ->> 'reason',
  'webhook_lease_lost', 'the same lease cannot report twice')
from claim1 c join public.ai_webhook_deliveries d on d.id = c.id
join public.ai_webhook_endpoints e on e.id = d.endpoint_id
where e.url = 'http://hooks.example.test/refusals';

-- The retry comes due (moved as postgres: now() is fixed inside a transaction).
select tests.clear_authentication();
update public.ai_webhook_deliveries d set next_attempt_at = now() from public.ai_webhook_endpoints e
where e.id = d.endpoint_id and e.url = 'http://hooks.example.test/refusals';
select tests.authenticate_as_service_role();
create temp table claim2 as select * from public.claim_webhook_deliveries(10, 30);
select results_eq($$ select attempt from claim2 $$, $$ values (2) $$, 'the due retry is claimed as attempt 2');
select is(public.complete_webhook_delivery(c.id, c.lease_id, false, null, 'connection refused') ->> 'status', 'failed',
  'after max_attempts a failed attempt gives the delivery up')
from claim2 c;
select is((select count(*)::integer from public.ai_webhook_deliveries d join claim2 c on c.id = d.id
           where d.status = 'failed' and d.failed_at is not null and d.last_error = 'connection refused'), 1,
  'and it stays visible as failed, with its last error');
select is(
  (select array_agg(public.complete_webhook_delivery(c.id, c.lease_id, true, 204) ->> 'status') from claim1 c
   join public.ai_webhook_deliveries d on d.id = c.id where d.status = 'pending'),
  array['delivered', 'delivered'], 'a successful attempt marks the delivery delivered');
select tests.clear_authentication();

select * from finish();
rollback;
