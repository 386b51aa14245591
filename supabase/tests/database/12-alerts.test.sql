-- Alerts: written by the transaction that crosses the line, once per period and token
-- type (80 % of the allowance used, balance under 20 %, balance exhausted); refusals are
-- recorded every time; admins read them; each row is sent with pg_notify.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = public, extensions;
select plan(16);

-- The tests.* helpers (fixtures, callers, tests.refusal) come from 000-setup-test-helpers.

select tests.create_organization('Alerts A') as org_a, tests.create_organization('Alerts B') as org_b \gset
select tests.create_user('owner A', :'org_a', 'owner') as owner_a, tests.create_user('member A', :'org_a') as member_a,
       tests.create_user('owner B', :'org_b', 'owner') as owner_b \gset
update public.ai_rate_limits set max_requests = 1000;
select period_started_at as period_1 from public.ai_tokens where organization_id = :'org_a' and token_type = 'goal_generation' \gset

-- 20 goal tokens: 5 deductions of 3 leave 5 (25 %): no alert yet.
select tests.authenticate_as(:'member_a');
select from generate_series(1, 5) i cross join lateral public.deduct_tokens('generate_goal', null, 'a-' || i);
select tests.clear_authentication();
select is_empty(format($$select 1 from public.ai_token_alerts where organization_id = %L$$, :'org_a'), 'no alert while 25 % is left');

-- The sixth leaves 2 (10 %): more than 80 % used and under 20 % left.
select tests.authenticate_as(:'member_a');
select public.deduct_tokens('generate_goal') ->> 'usage_id' as crossing_usage \gset
select tests.clear_authentication();
select results_eq(
  format($$select kind, reason, period, details - 'ledger_id' from public.ai_token_alerts where organization_id = %L order by kind$$, :'org_a'),
  format($$values ('balance_below_20_percent'::text, 'deduction'::text, %L::timestamptz, '{"balance": 2, "allocated": 20, "purchased_balance": 0, "used": 18}'::jsonb),
                  ('usage_80_percent', 'deduction', %L::timestamptz, '{"balance": 2, "allocated": 20, "purchased_balance": 0, "used": 18}')$$,
         :'period_1', :'period_1'),
  'the deduction that crosses the lines records usage_80_percent and balance_below_20_percent for the period');
select is((select details ->> 'ledger_id' from public.ai_token_alerts where organization_id = :'org_a' and kind = 'usage_80_percent'),
  (select id::text from public.ai_token_ledger where usage_id = :'crossing_usage'),
  'the alert points at the journal row that crossed the line');

-- Crossing again in the same period does not repeat them.
select tests.authenticate_as_service_role();
select from public.refund_deduction(:'crossing_usage', 'test');
select tests.authenticate_as(:'member_a');
select from public.deduct_tokens('generate_goal');
select tests.clear_authentication();
select is((select count(*) from public.ai_token_alerts where organization_id = :'org_a'), 2::bigint,
  'crossing the same lines again in the period adds nothing');

-- Exhausted.
select tests.authenticate_as(:'member_a');
select from public.deduct_tokens('generate_quest');
select tests.clear_authentication();
select results_eq(
  format($$select kind, (details ->> 'balance')::integer from public.ai_token_alerts where organization_id = %L and kind = 'balance_exhausted'$$, :'org_a'),
  $$values ('balance_exhausted'::text, 0)$$,
  'spending the last token records balance_exhausted');

-- A refused deduction is counted every time, with its reason, in one row per user,
-- reason and hour: 50 refusals are one row with refusal_count 50.
select tests.authenticate_as_service_role();
select from public.set_rate_limit(1000, 60, :'org_a');
select tests.authenticate_as(:'member_a');
select from generate_series(1, 50) i cross join lateral public.deduct_tokens('generate_goal', null, 'refused-' || i);
select from set_config('response.status', '', true);
select tests.clear_authentication();
select results_eq(
  format($$select reason, user_id::text, refusal_count, bucket = date_trunc('hour', now()),
                  details ->> 'user_id', (details ->> 'http_status')::integer, (details ->> 'required')::integer
           from public.ai_token_alerts where organization_id = %L and kind = 'refused' order by id$$, :'org_a'),
  format($$values ('insufficient_tokens'::text, %L::text, 50, true, %L::text, 402, 3)$$, :'member_a', :'member_a'),
  'refused deductions are counted in one row per user, reason and hour, with its reason, user and numbers');
-- The next hour starts a new row (the first bucket moved an hour back stands for it).
update public.ai_token_alerts set bucket = bucket - interval '1 hour'
where organization_id = :'org_a' and kind = 'refused';
select tests.authenticate_as(:'member_a');
select from public.deduct_tokens('generate_goal');
select from set_config('response.status', '', true);
select tests.clear_authentication();
select results_eq(
  format($$select refusal_count from public.ai_token_alerts where organization_id = %L and kind = 'refused' order by id$$, :'org_a'),
  $$values (50), (1)$$,
  'a refusal in a new hour opens a new bucket; the old one keeps its count');

-- A new period: the lines can be crossed again.
update public.ai_tokens set refresh_date = now() - interval '1 day' where organization_id = :'org_a' and token_type = 'goal_generation';
select tests.authenticate_as(:'member_a');
select from generate_series(1, 6) i cross join lateral public.deduct_tokens('generate_goal', null, 'b-' || i);
select tests.clear_authentication();
select is((select count(distinct period) from public.ai_token_alerts where organization_id = :'org_a' and kind = 'usage_80_percent'), 2::bigint,
  'after the refresh the next period gets its own usage_80_percent alert');

-- Purchased tokens: the allowance can be 80 % used while the balance is still high.
select from public.grant_tokens(:'org_b', 'general', 100);
select tests.authenticate_as_service_role();
select from generate_series(1, 41) i cross join lateral public.deduct_tokens('ask_assistant', :'org_b', 'c-' || i);
select tests.clear_authentication();
select results_eq(
  format($$select kind from public.ai_token_alerts where organization_id = %L order by kind$$, :'org_b'),
  $$values ('usage_80_percent'::text)$$,
  'with purchased tokens, 41 of 50 allowance tokens used is usage_80_percent but not a low balance');

-- A manual adjustment that crosses a line is recorded too (reason: adjustment).
update public.ai_tokens set balance = 0 where organization_id = :'org_b' and token_type = 'forecast';
select is((select reason from public.ai_token_alerts where organization_id = :'org_b' and token_type = 'forecast' and kind = 'balance_exhausted'),
  'adjustment', 'the alert names the movement that crossed the line');

-- Who reads alerts.
select tests.authenticate_as(:'owner_a');
select is((select count(distinct organization_id) from public.ai_token_alerts), 1::bigint, 'an owner reads only their organization''s alerts');
select isnt_empty('select 1 from public.ai_token_alerts', 'an owner reads the alerts');
select tests.authenticate_as(:'member_a');
select is_empty('select 1 from public.ai_token_alerts', 'a plain member does not read alerts');
select throws_ok(format($$delete from public.ai_token_alerts where organization_id = %L$$, :'org_a'), '42501', null,
  'nobody but the service role writes alerts');
select tests.clear_authentication();

-- pg_notify: every alert row is sent on the ai_token_alerts channel by a trigger.
select trigger_is('public', 'ai_token_alerts', 'ai_token_alerts_notify', 'ai_tokens_internal', 'notify_token_alert',
  'an AFTER INSERT trigger notifies each alert');
select ok(pg_get_functiondef('ai_tokens_internal.notify_token_alert()'::regprocedure) like '%pg_notify(''ai_token_alerts''%',
  'on the ai_token_alerts channel');

select * from finish();
rollback;
