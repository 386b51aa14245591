-- Per-user rate limit: at most 5 spends per user in each 60-second window by default, per
-- plan, per feature and per organization as data; refusals answer 429 with retry_after_seconds
-- and are recorded.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = public, extensions;
select plan(38);

-- The tests.* helpers (fixtures, callers, tests.refusal) come from 000-setup-test-helpers.

select tests.create_organization('Limits A') as org_a, tests.create_organization('Limits E', 'enterprise') as org_e \gset
select tests.create_user('member A', :'org_a') as member_a, tests.create_user('member A2', :'org_a') as member_a2,
       tests.create_user('member E', :'org_e') as member_e \gset

select tests.authenticate_as(:'member_a');
select is(count(*), 5::bigint, 'five deductions in a row succeed')
from generate_series(1, 5) i cross join lateral public.deduct_tokens('ask_assistant', null, 'rl-' || i) r
where (r ->> 'success')::boolean;
select public.deduct_tokens('ask_assistant') as limited \gset
select is((:'limited'::jsonb) - 'details',
  '{"code": "PT429", "message": "Rate limit exceeded. Wait before next request.", "hint": null}'::jsonb,
  'the sixth within 60 seconds is refused with PostgREST''s error body for HTTP 429');
select is(((:'limited'::jsonb) ->> 'details')::jsonb,
  '{"reason": "rate_limited", "feature": "ask_assistant", "limit": 5, "window_seconds": 60, "retry_after_seconds": 60}'::jsonb,
  'details: reason rate_limited, the limit and the seconds until a retry can succeed');
select is(current_setting('response.status', true), '429', 'response.status makes PostgREST answer 429');
select is(current_setting('response.headers', true)::jsonb, '[{"Retry-After": "60"}]'::jsonb, 'with a Retry-After header');
select from set_config('response.status', '', true) s, set_config('response.headers', '', true) h;
select is((public.deduct_tokens('ask_assistant', null, 'rl-2') ->> 'replayed')::boolean, true,
  'a retry of an earlier request is replayed, not rate limited');
select tests.clear_authentication();
select results_eq(
  format($$select count(*)::integer, min(balance_after) from public.ai_token_usage_log where organization_id = %L$$, :'org_a'),
  $$values (5, 45)$$,
  'the refused call spent nothing');
select results_eq(
  format($$select kind, reason, details ->> 'user_id', (details ->> 'refused')::boolean from public.ai_token_alerts where organization_id = %L$$, :'org_a'),
  format($$values ('refused'::text, 'rate_limited'::text, %L::text, true)$$, :'member_a'),
  'the refusal is recorded with its reason and user');

-- Per user: another member is not affected; the service role is never limited.
select tests.authenticate_as(:'member_a2');
select is(public.deduct_tokens('ask_assistant') ->> 'success', 'true', 'another member of the organization still spends');
select tests.authenticate_as_service_role();
select is(count(*), 8::bigint, 'the service role is not rate limited')
from generate_series(1, 8) i cross join lateral public.deduct_tokens('ask_assistant', :'org_a', 'svc-' || i) r
where (r ->> 'success')::boolean;

-- The count is one row per user and rule, however many spends: O(1) per spend.
select is((select count(*) from public.ai_rate_limit_windows where user_id = :'member_a'), 1::bigint,
  'the user''s spends are counted in one window row');

-- The window ends window_seconds after the spend that opened it: then the next five are
-- allowed, in a window that starts with the first of them.
select tests.clear_authentication();
update public.ai_rate_limit_windows set window_started_at = now() - interval '61 seconds' where user_id = :'member_a';
select tests.authenticate_as(:'member_a');
select is(count(*), 5::bigint, 'once the window ended, five more spends are allowed')
from generate_series(1, 5) i cross join lateral public.deduct_tokens('ask_assistant', null, 'w2-' || i) r
where (r ->> 'success')::boolean;
select is(((public.deduct_tokens('ask_assistant') ->> 'details')::jsonb ->> 'reason'), 'rate_limited', 'and then the limit applies again');
select tests.clear_authentication();
update public.ai_rate_limit_windows set window_started_at = now() - interval '45 seconds' where user_id = :'member_a';
select tests.authenticate_as(:'member_a');
select is(((public.deduct_tokens('ask_assistant') ->> 'details')::jsonb ->> 'retry_after_seconds')::integer, 15,
  'retry_after_seconds counts down to the end of the window');
select from set_config('response.status', '', true) s, set_config('response.headers', '', true) h;

-- Reservations count as spends.
select tests.authenticate_as(:'member_a2');
select from generate_series(1, 4) i cross join lateral public.reserve_tokens('generate_quest', 1, 60, 'hold-' || i);
select is(((public.deduct_tokens('ask_assistant') ->> 'details')::jsonb ->> 'reason'), 'rate_limited',
  'a deduction and four reservations in the window use up the five');
select is(((public.reserve_tokens('generate_quest', 1) ->> 'details')::jsonb ->> 'reason'), 'rate_limited',
  'reserve_tokens is rate limited too');
select from set_config('response.status', '', true) s, set_config('response.headers', '', true) h;

-- Limits are data: per feature and per plan, the most specific row wins.
select tests.clear_authentication();
insert into public.ai_rate_limits (plan, feature, max_requests, window_seconds) values
  (null, 'generate_leads', 2, 60), ('enterprise', null, 10, 60), ('enterprise', 'generate_leads', 3, 30);
select tests.authenticate_as(:'member_e');
select is(count(*), 3::bigint, 'enterprise: the enterprise row for generate_leads (3 per 30 s) applies')
from generate_series(1, 4) i cross join lateral public.deduct_tokens('generate_leads', null, 'leads-' || i) r
where (r ->> 'success')::boolean;
select is(((public.deduct_tokens('generate_leads') ->> 'details')::jsonb - 'retry_after_seconds'),
  '{"reason": "rate_limited", "feature": "generate_leads", "limit": 3, "window_seconds": 30}'::jsonb,
  'the refusal names the limit that applied');
select is(count(*), 10::bigint, 'enterprise: 10 per 60 s for other features; each row counts the spends it governs, so the 3 generate_leads are not among them')
from generate_series(1, 11) i cross join lateral public.deduct_tokens('ask_assistant', null, 'ask-' || i) r
where (r ->> 'success')::boolean;
select tests.clear_authentication();
delete from public.ai_token_reservations where user_id = :'member_a2';
update public.ai_token_usage_log set created_at = now() - interval '2 minutes' where user_id = :'member_a2';
update public.ai_tokens set reserved = 0 where organization_id = :'org_a';
select tests.authenticate_as(:'member_a2');
select is(count(*), 2::bigint, 'pro: the generate_leads row (2 per 60 s) applies to every plan without its own row')
from generate_series(1, 3) i cross join lateral public.deduct_tokens('generate_leads', null, 'pro-leads-' || i) r
where (r ->> 'success')::boolean;
select from set_config('response.status', '', true) s, set_config('response.headers', '', true) h;

-- Per organization: the service role sets an organization's own limit
-- with set_rate_limit; it wins over feature and plan rows, and only that organization
-- sees it.
select tests.clear_authentication();
select tests.create_organization('Limits O') as org_o, tests.create_organization('Limits P') as org_p \gset
select tests.create_user('member O', :'org_o') as member_o, tests.create_user('member P', :'org_p') as member_p \gset

select tests.authenticate_as_service_role();
select to_jsonb(public.set_rate_limit(3, 60, :'org_o')) as org_limit \gset
select is((:'org_limit'::jsonb) - 'id',
  jsonb_build_object('organization_id', :'org_o', 'plan', null, 'feature', null, 'max_requests', 3, 'window_seconds', 60),
  'set_rate_limit creates the organization''s own row and returns it');
select is(to_jsonb(public.set_rate_limit(1, 60, :'org_o')),
  (:'org_limit'::jsonb) || '{"max_requests": 1}',
  'set_rate_limit on the same scope changes that row (same id), it does not add one');
select tests.authenticate_as(:'member_o');
select is(public.deduct_tokens('generate_leads') ->> 'success', 'true', 'the organization''s first spend succeeds');
select is((public.deduct_tokens('ask_assistant') ->> 'details')::jsonb - 'retry_after_seconds',
  '{"reason": "rate_limited", "feature": "ask_assistant", "limit": 1, "window_seconds": 60}'::jsonb,
  'its own row (1 per 60 s) wins over the default row');
select is((public.deduct_tokens('generate_leads') ->> 'details')::jsonb ->> 'limit', '1',
  'and over the generate_leads feature row');
select tests.authenticate_as(:'member_p');
select is(count(*), 2::bigint, 'another organization on the same plan keeps the shared rows (generate_leads: 2 per 60 s)')
from generate_series(1, 3) i cross join lateral public.deduct_tokens('generate_leads', null, 'p-leads-' || i) r
where (r ->> 'success')::boolean;
select tests.authenticate_as_service_role();
select from public.set_rate_limit(3, 60, :'org_o', null, 'generate_leads');
select tests.authenticate_as(:'member_o');
select is(count(*), 3::bigint, 'an organization''s row for one feature wins for that feature and counts only its own spends (3 of 3)')
from generate_series(1, 3) i cross join lateral public.deduct_tokens('generate_leads', null, 'o-leads-' || i) r
where (r ->> 'success')::boolean;
select is((public.deduct_tokens('ask_assistant') ->> 'details')::jsonb ->> 'limit', '1',
  'other features still follow the organization''s own row');
select from set_config('response.status', '', true) s, set_config('response.headers', '', true) h;

select results_eq(
  $$select max_requests, feature from public.ai_rate_limits where organization_id is not null order by max_requests$$,
  $$values (1, null::text), (3, 'generate_leads')$$,
  'members read their organization''s own limits');
select tests.authenticate_as(:'member_p');
select is_empty($$select 1 from public.ai_rate_limits where organization_id is not null$$,
  'a member of another organization does not read them');
select is((select count(*) from public.ai_rate_limits), 4::bigint, 'and reads the four shared rows');

select tests.authenticate_as_service_role();
select count(*) as limits_before from public.ai_rate_limits \gset
select results_eq(
  $$select f ->> 'sqlstate', f -> 'detail' ->> 'reason', f -> 'detail' ->> 'field' from (values
      (1, tests.refusal('select public.set_rate_limit(0)')),
      (2, tests.refusal('select public.set_rate_limit(1, 86401)')),
      (3, tests.refusal($q$select public.set_rate_limit(1, 60, null, 'platinum')$q$)),
      (4, tests.refusal($q$select public.set_rate_limit(1, 60, null, null, 'teleport')$q$)),
      (5, tests.refusal('select public.set_rate_limit(1, 60, gen_random_uuid())'))) v (n, f) order by n$$,
  $$values ('PT400'::text, 'invalid_request'::text, 'max_requests'::text), ('PT400', 'invalid_request', 'window_seconds'),
           ('PT400', 'invalid_plan', null), ('PT404', 'unknown_feature', null), ('PT404', 'organization_not_found', null)$$,
  'set_rate_limit refuses bad limits, unknown plans, features and organizations');
select tests.clear_authentication();
select is((select count(*) from public.ai_rate_limits), :'limits_before'::bigint, 'and wrote nothing for them');

-- A spend refused for want of tokens (402) gives its place in the window back.
select tests.create_organization('Limits Z') as org_z \gset
select tests.create_user('member Z', :'org_z') as member_z \gset
select tests.authenticate_as_service_role();
select from public.set_rate_limit(2, 60, :'org_z');
select tests.authenticate_as(:'member_z');
select is(count(*), 3::bigint, 'three spends the balance cannot cover are refused 402')
from generate_series(1, 3) i cross join lateral public.deduct_tokens('analyze_strategy', null, 'z-big-' || i, 20) r
where (r ->> 'details')::jsonb ->> 'reason' = 'insufficient_tokens';
select is(count(*), 2::bigint, 'and did not use up the limit of 2: both spends that fit succeed')
from generate_series(1, 2) i cross join lateral public.deduct_tokens('analyze_strategy', null, 'z-' || i) r
where (r ->> 'success')::boolean;
select from set_config('response.status', '', true) s, set_config('response.headers', '', true) h;

-- In monitor mode a rate-limited call goes through and is recorded as would-be refused.
select tests.authenticate_as_service_role();
select from public.set_enforcement_mode('monitor', :'org_a');
select tests.authenticate_as(:'member_a');
select public.deduct_tokens('ask_assistant') as monitored \gset
select is((:'monitored'::jsonb) ->> 'tokens_deducted', '1', 'monitor mode: the rate-limited call is charged and succeeds');
select is((:'monitored'::jsonb) -> 'would_have_refused' ->> 'reason', 'rate_limited', 'and says it would have been refused');
select tests.clear_authentication();
select is((select details ->> 'refused' from public.ai_token_alerts where organization_id = :'org_a' and reason = 'rate_limited' order by last_refused_at desc limit 1), 'false',
  'the would-be refusal is recorded (refused: false)');

select * from finish();
rollback;
