-- Alerts: written by the transaction that crosses the line, once per period and token
-- type (80 % of the allowance used, balance under 20 %, balance exhausted); refusals are
-- recorded every time; admins read them; each row is sent with pg_notify.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = public, extensions;
select plan(15);

-- Test helpers: act as a user (null: the service role) or as postgres again; the error a
-- statement raises as {sqlstate, message, detail} (null when it succeeds).
create function pg_temp.act_as(user_id uuid) returns void language plpgsql as $$
begin
  perform set_config('role', case when user_id is null then 'service_role' else 'authenticated' end, true);
  perform set_config('request.jwt.claims', case when user_id is null then '{"role":"service_role"}'
    else json_build_object('sub', user_id, 'role', 'authenticated')::text end, true);
end $$;
create function pg_temp.act_as_postgres() returns void language plpgsql as $$
begin
  perform set_config('role', 'none', true);
  perform set_config('request.jwt.claims', '', true);
end $$;
create function pg_temp.failure(statement text) returns jsonb language plpgsql as $$
declare
  state text;
  msg text;
  detail text;
begin
  execute statement;
  return null;
exception when others then
  get stacked diagnostics state = returned_sqlstate, msg = message_text, detail = pg_exception_detail;
  return jsonb_build_object('sqlstate', state, 'message', msg,
                            'detail', case when detail like '{%' then detail::jsonb end);
end $$;
grant execute on all functions in schema pg_temp to authenticated, service_role;

select gen_random_uuid() as org_a, gen_random_uuid() as org_b, gen_random_uuid() as owner_a,
       gen_random_uuid() as member_a, gen_random_uuid() as owner_b \gset
insert into auth.users (id, aud, role, email) values
  (:'owner_a', 'authenticated', 'authenticated', 'owner-' || :'owner_a' || '@test'),
  (:'member_a', 'authenticated', 'authenticated', 'member-' || :'member_a' || '@test'),
  (:'owner_b', 'authenticated', 'authenticated', 'owner-' || :'owner_b' || '@test');
insert into public.organizations (id, name, plan) values (:'org_a', 'Alerts A', 'pro'), (:'org_b', 'Alerts B', 'pro');
insert into public.user_profiles (id, organization_id, role) values
  (:'owner_a', :'org_a', 'owner'), (:'member_a', :'org_a', 'member'), (:'owner_b', :'org_b', 'owner');
select from public.initialize_tokens(:'org_a');
select from public.initialize_tokens(:'org_b');
update public.ai_rate_limits set max_requests = 1000;
select period_started_at as period_1 from public.ai_tokens where organization_id = :'org_a' and token_type = 'goal_generation' \gset

-- 20 goal tokens: 5 deductions of 3 leave 5 (25 %): no alert yet.
select pg_temp.act_as(:'member_a');
select from generate_series(1, 5) i cross join lateral public.deduct_tokens('generate_goal', null, 'a-' || i);
select pg_temp.act_as_postgres();
select is_empty(format($$select 1 from public.ai_token_alerts where organization_id = %L$$, :'org_a'), 'no alert while 25 % is left');

-- The sixth leaves 2 (10 %): more than 80 % used and under 20 % left.
select pg_temp.act_as(:'member_a');
select public.deduct_tokens('generate_goal') ->> 'usage_id' as crossing_usage \gset
select pg_temp.act_as_postgres();
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
select pg_temp.act_as(null);
select from public.refund_deduction(:'crossing_usage', 'test');
select pg_temp.act_as(:'member_a');
select from public.deduct_tokens('generate_goal');
select pg_temp.act_as_postgres();
select is((select count(*) from public.ai_token_alerts where organization_id = :'org_a'), 2::bigint,
  'crossing the same lines again in the period adds nothing');

-- Exhausted.
select pg_temp.act_as(:'member_a');
select from public.deduct_tokens('generate_quest');
select pg_temp.act_as_postgres();
select results_eq(
  format($$select kind, (details ->> 'balance')::integer from public.ai_token_alerts where organization_id = %L and kind = 'balance_exhausted'$$, :'org_a'),
  $$values ('balance_exhausted'::text, 0)$$,
  'spending the last token records balance_exhausted');

-- A refused deduction is recorded every time, with its reason.
select pg_temp.act_as(:'member_a');
select from public.deduct_tokens('generate_goal');
select from public.deduct_tokens('generate_goal');
select from set_config('response.status', '', true);
select pg_temp.act_as_postgres();
select results_eq(
  format($$select reason, details ->> 'user_id', (details ->> 'http_status')::integer, (details ->> 'required')::integer
           from public.ai_token_alerts where organization_id = %L and kind = 'refused' order by id$$, :'org_a'),
  format($$values ('insufficient_tokens'::text, %L::text, 402, 3), ('insufficient_tokens', %L, 402, 3)$$, :'member_a', :'member_a'),
  'each refused deduction is recorded with its reason, user and numbers');

-- A new period: the lines can be crossed again.
update public.ai_tokens set refresh_date = now() - interval '1 day' where organization_id = :'org_a' and token_type = 'goal_generation';
select pg_temp.act_as(:'member_a');
select from generate_series(1, 6) i cross join lateral public.deduct_tokens('generate_goal', null, 'b-' || i);
select pg_temp.act_as_postgres();
select is((select count(distinct period) from public.ai_token_alerts where organization_id = :'org_a' and kind = 'usage_80_percent'), 2::bigint,
  'after the refresh the next period gets its own usage_80_percent alert');

-- Purchased tokens: the allowance can be 80 % used while the balance is still high.
select from public.grant_tokens(:'org_b', 'general', 100);
select pg_temp.act_as(null);
select from generate_series(1, 41) i cross join lateral public.deduct_tokens('ask_assistant', :'org_b', 'c-' || i);
select pg_temp.act_as_postgres();
select results_eq(
  format($$select kind from public.ai_token_alerts where organization_id = %L order by kind$$, :'org_b'),
  $$values ('usage_80_percent'::text)$$,
  'with purchased tokens, 41 of 50 allowance tokens used is usage_80_percent but not a low balance');

-- A manual adjustment that crosses a line is recorded too (reason: adjustment).
update public.ai_tokens set balance = 0 where organization_id = :'org_b' and token_type = 'forecast';
select is((select reason from public.ai_token_alerts where organization_id = :'org_b' and token_type = 'forecast' and kind = 'balance_exhausted'),
  'adjustment', 'the alert names the movement that crossed the line');

-- Who reads alerts.
select pg_temp.act_as(:'owner_a');
select is((select count(distinct organization_id) from public.ai_token_alerts), 1::bigint, 'an owner reads only their organization''s alerts');
select isnt_empty('select 1 from public.ai_token_alerts', 'an owner reads the alerts');
select pg_temp.act_as(:'member_a');
select is_empty('select 1 from public.ai_token_alerts', 'a plain member does not read alerts');
select throws_ok(format($$delete from public.ai_token_alerts where organization_id = %L$$, :'org_a'), '42501', null,
  'nobody but the service role writes alerts');
select pg_temp.act_as_postgres();

-- pg_notify: every alert row is sent on the ai_token_alerts channel by a trigger.
select trigger_is('public', 'ai_token_alerts', 'ai_token_alerts_notify', 'private', 'notify_token_alert',
  'an AFTER INSERT trigger notifies each alert');
select ok(pg_get_functiondef('private.notify_token_alert()'::regprocedure) like '%pg_notify(''ai_token_alerts''%',
  'on the ai_token_alerts channel');

select * from finish();
rollback;
