-- Monthly refresh: lazy (deduct_tokens, has_enough_tokens, get_token_stats), exactly once per
-- period, whole months after the previous refresh date, purchased tokens kept, and the
-- daily refresh_due_tokens() job with its failures recorded.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = public, extensions;
select plan(24);

-- The tests.* helpers (fixtures, callers, tests.refusal) come from 000-setup-test-helpers.

-- Fixtures: organizations A and B (pro) with a member each; the rate limit out of the way.
select tests.create_organization('Refresh A') as org_a, tests.create_organization('Refresh B') as org_b \gset
select tests.create_user('member A', :'org_a') as member_a, tests.create_user('member B', :'org_b') as member_b \gset
update public.ai_rate_limits set max_requests = 1000;

select tests.authenticate_as(:'member_a');
select from public.deduct_tokens('generate_goal');
select tests.clear_authentication();

-- The period ended yesterday.
update public.ai_tokens set refresh_date = now() - interval '1 day'
where organization_id = :'org_a' and token_type = 'goal_generation'
returning refresh_date as old_refresh \gset

select tests.authenticate_as(:'member_a');
select ok(public.has_enough_tokens('generate_goal'), 'has_enough_tokens answers after the due refresh');
select tests.clear_authentication();
select results_eq(
  format($$select balance, total_allocated, refresh_date, period_started_at from public.ai_tokens
           where organization_id = %L and token_type = 'goal_generation'$$, :'org_a'),
  format($$values (20, 20, %L::timestamptz + interval '1 month', %L::timestamptz)$$, :'old_refresh', :'old_refresh'),
  'has_enough_tokens refreshed the row lazily: allocation back, next refresh one month after the previous one');
select results_eq(
  format($$select kind, delta, balance_after from public.ai_token_ledger
           where organization_id = %L and token_type = 'goal_generation' and kind = 'refresh'$$, :'org_a'),
  $$values ('refresh'::text, 3, 20)$$,
  'the refresh is journaled with the tokens it gave back');

select tests.authenticate_as(:'member_a');
select is((public.deduct_tokens('generate_goal') ->> 'remaining_balance')::integer, 17,
  'the next deduction spends from the refreshed balance');
select ok(public.has_enough_tokens('generate_goal'), 'a second check in the same period');
select tests.clear_authentication();
select is((select count(*) from public.ai_token_ledger
           where organization_id = :'org_a' and token_type = 'goal_generation' and kind = 'refresh'), 1::bigint,
  'the period is refreshed exactly once however many calls follow');

-- deduct_tokens refreshes lazily too, before it spends.
select tests.authenticate_as(:'member_a');
select from public.deduct_tokens('ask_assistant');
select from public.deduct_tokens('ask_assistant');
select tests.clear_authentication();
update public.ai_tokens set refresh_date = now() - interval '1 hour'
where organization_id = :'org_a' and token_type = 'general';
select tests.authenticate_as(:'member_a');
select is((public.deduct_tokens('ask_assistant') ->> 'remaining_balance')::integer, 49,
  'deduct_tokens refreshes a due row first, then spends');
select tests.clear_authentication();
select results_eq(
  format($$select kind, delta from public.ai_token_ledger
           where organization_id = %L and token_type = 'general' order by id desc limit 2$$, :'org_a'),
  $$values ('deduction'::text, -1), ('refresh', 2)$$,
  'the journal shows the refresh before the deduction');

-- Overdue by several months: whole months after the previous date until in the future.
update public.ai_tokens set refresh_date = now() - interval '3 months 2 days'
where organization_id = :'org_a' and token_type = 'forecast'
returning refresh_date as overdue_refresh \gset
select tests.authenticate_as(:'member_a');
select from public.get_token_stats();
select tests.clear_authentication();
select results_eq(
  format($$select refresh_date, period_started_at from public.ai_tokens where organization_id = %L and token_type = 'forecast'$$, :'org_a'),
  format($$values (%L::timestamptz + interval '4 months', %L::timestamptz + interval '3 months')$$, :'overdue_refresh', :'overdue_refresh'),
  'get_token_stats refreshes lazily; an overdue row catches up in whole months');
select ok((select refresh_date > now() and refresh_date - interval '1 month' <= now()
           from public.ai_tokens where organization_id = :'org_a' and token_type = 'forecast'),
  'the new refresh date is the first whole month after the old one that lies in the future');

-- The refresh gives the plan's current allocation and keeps purchased tokens.
update public.ai_plan_allocations set monthly_allocation = 25 where plan = 'pro' and token_type = 'goal_generation';
select from public.grant_tokens(:'org_a', 'goal_generation', 10, null, 'test top-up');
select tests.authenticate_as(:'member_a');
select from public.deduct_tokens('generate_goal');
select tests.clear_authentication();
select results_eq(
  format($$select balance, purchased_balance from public.ai_tokens where organization_id = %L and token_type = 'goal_generation'$$, :'org_a'),
  $$values (24, 10)$$,
  'before the refresh: the period allowance was spent first, purchased tokens untouched');
update public.ai_tokens set refresh_date = now() - interval '1 minute'
where organization_id = :'org_a' and token_type = 'goal_generation';
select tests.authenticate_as(:'member_a');
select from public.has_enough_tokens('generate_goal');
select tests.clear_authentication();
select results_eq(
  format($$select balance, purchased_balance, total_allocated from public.ai_tokens where organization_id = %L and token_type = 'goal_generation'$$, :'org_a'),
  $$values (35, 10, 25)$$,
  'the refresh resets the period part to the plan''s current allocation and keeps the purchased tokens');

-- A read-only transaction (PostgREST GET) sees the settled numbers and writes nothing.
select tests.authenticate_as_service_role();
select from public.deduct_tokens('forecast_revenue', :'org_b');
select tests.clear_authentication();
update public.ai_tokens set refresh_date = now() - interval '1 minute'
where organization_id = :'org_b' and token_type = 'forecast';
select (t.*)::text as before_settle, (ai_tokens_internal.settled_view(t))::text as projected
from public.ai_tokens t where organization_id = :'org_b' and token_type = 'forecast' \gset
select tests.authenticate_as(:'member_b');
select is(
  (select (e ->> 'balance')::integer from jsonb_array_elements(public.get_token_stats() -> 'by_type') e
   where e ->> 'token_type' = 'forecast'), 30,
  'get_token_stats shows the refreshed balance');
select tests.clear_authentication();
-- settled_view must agree with settle_tokens (the projection reads use).
select results_eq(
  format($$select balance, purchased_balance, reserved, total_allocated, refresh_date, period_started_at
           from public.ai_tokens where organization_id = %L and token_type = 'forecast'$$, :'org_b'),
  format($$select (p).balance, (p).purchased_balance, (p).reserved, (p).total_allocated, (p).refresh_date, (p).period_started_at
           from (select %L::public.ai_tokens as p) x$$, :'projected'),
  'settled_view projects exactly what settle_tokens writes');

-- The daily job: everything due, each row on its own; failures recorded, not swallowed.
select tests.authenticate_as_service_role();
select from public.deduct_tokens('ask_assistant', :'org_b');
select from public.deduct_tokens('generate_leads', :'org_b');
select tests.clear_authentication();
update public.ai_tokens set refresh_date = now() - interval '2 days' where organization_id = :'org_b';
create function public.test_refresh_boom() returns trigger language plpgsql as $$
begin
  raise exception 'boom: refresh blocked by a test';
end $$;
create trigger test_refresh_boom before update on public.ai_tokens
  for each row when (old.organization_id::text = current_setting('test.blocked_organization', true) and old.token_type = 'general')
  execute function public.test_refresh_boom();
select from set_config('test.blocked_organization', :'org_b', true);

select (public.refresh_due_tokens() ->> 'failed')::integer as failed \gset
select is(:failed, 1, 'refresh_due_tokens reports the row it could not refresh');
select results_eq(
  format($$select token_type, error_code, error_message from public.ai_token_refresh_failures where organization_id = %L$$, :'org_b'),
  $$values ('general'::text, 'P0001'::text, 'boom: refresh blocked by a test'::text)$$,
  'the failure is recorded with its error');
select results_eq(
  format($$select token_type, balance, refresh_date > now() from public.ai_tokens where organization_id = %L order by token_type$$, :'org_b'),
  $$values ('forecast'::text, 30, true), ('general', 49, false), ('goal_generation', 25, true),
           ('lead_generation', 50, true), ('strategy_analysis', 100, true)$$,
  'the other rows were refreshed; the failed one is untouched and still due');
drop trigger test_refresh_boom on public.ai_tokens;
select is((public.refresh_due_tokens() ->> 'failed')::integer, 0, 'the next run refreshes what failed before');
select is((select balance from public.ai_tokens where organization_id = :'org_b' and token_type = 'general'), 50,
  'the failed row is refreshed once the cause is gone');
select is_empty('select * from public.verify_token_ledger()', 'the ledger is consistent after all these refreshes');

select case when exists (select from pg_extension where extname = 'pg_cron')
  then is((select command from cron.job where jobname = 'ai-tokens-refresh-due'), 'select public.refresh_due_tokens()',
          'the migration installed the daily pg_cron job')
  else skip('pg_cron is not installed', 1) end;

-- PostgREST runs GET requests in a read-only transaction: the reads answer from the row
-- as it will be once settled, and write nothing.
select tests.authenticate_as_service_role();
select from generate_series(1, 10) i cross join lateral public.deduct_tokens('generate_leads', :'org_a', 'leads-' || i);
select tests.clear_authentication();
update public.ai_tokens set refresh_date = now() - interval '1 minute'
where organization_id = :'org_a' and token_type = 'lead_generation';
set local transaction_read_only = on;
select tests.authenticate_as(:'member_a');
select ok(public.has_enough_tokens('generate_leads'),
  'in a read-only transaction has_enough_tokens answers from the refreshed balance');
select is(
  (select (e ->> 'balance')::integer from jsonb_array_elements(public.get_token_stats() -> 'by_type') e
   where e ->> 'token_type' = 'lead_generation'), 50,
  'in a read-only transaction get_token_stats shows the refreshed balance');
select tests.clear_authentication();
select results_eq(
  format($$select balance, refresh_date < now() from public.ai_tokens where organization_id = %L and token_type = 'lead_generation'$$, :'org_a'),
  $$values (0, true)$$,
  'and nothing was written: the row is still due');

select * from finish();
rollback;
