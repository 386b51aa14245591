-- Plan changes: set_organization_plan raises allocations at once on upgrade, caps the
-- period allowance on downgrade, keeps purchased tokens, refuses AI features on starter,
-- and applies each event_id once.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = public, extensions;
select plan(20);

-- The tests.* helpers (fixtures, callers, tests.refusal) come from 000-setup-test-helpers.

select tests.create_organization('Plans A') as org_a,
       tests.create_organization('Plans New', 'starter', initialized => false) as org_new \gset
select tests.create_user('member A', :'org_a') as member_a \gset
update public.ai_rate_limits set max_requests = 1000;

select tests.authenticate_as(:'member_a');
select from public.deduct_tokens('generate_goal');
select tests.clear_authentication();

-- Upgrade pro -> enterprise: the allocation rises at once, by the difference.
select public.set_organization_plan(:'org_a', 'enterprise', 'evt_upgrade_' || :'org_a') as upgrade \gset
select results_eq(
  format($$select token_type, balance, total_allocated from public.ai_tokens where organization_id = %L order by token_type$$, :'org_a'),
  $$values ('forecast'::text, 300, 300), ('general', 500, 500), ('goal_generation', 197, 200),
           ('lead_generation', 500, 500), ('strategy_analysis', 1000, 1000)$$,
  'an upgrade adds the difference of the allocations to the current balance (17 + 180 = 197)');
select is((select plan from public.organizations where id = :'org_a'), 'enterprise', 'the organization is on the new plan');
select results_eq(
  format($$select kind, delta, external_id from public.ai_token_ledger
           where organization_id = %L and token_type = 'goal_generation' order by id desc limit 1$$, :'org_a'),
  format($$values ('plan_change'::text, 180, %L::text)$$, 'evt_upgrade_' || :'org_a'),
  'the change is journaled as plan_change with the event id');
select is(
  (select e from jsonb_array_elements((:'upgrade'::jsonb) -> 'changes') e where e ->> 'token_type' = 'goal_generation'),
  '{"token_type": "goal_generation", "previous_allocation": 20, "allocation": 200, "previous_balance": 17, "balance": 197}'::jsonb,
  'the result lists each token type''s change');
select is((:'upgrade'::jsonb) - 'changes',
  jsonb_build_object('organization_id', :'org_a', 'plan', 'enterprise', 'previous_plan', 'pro',
                     'event_id', 'evt_upgrade_' || :'org_a', 'replayed', false),
  'the result names the plans and the event');

-- The same event again (a webhook retry) changes nothing.
select is(public.set_organization_plan(:'org_a', 'enterprise', 'evt_upgrade_' || :'org_a'),
  (:'upgrade'::jsonb) || '{"replayed": true}',
  'a replayed event returns the first result');
select is((select count(*) from public.ai_token_ledger where organization_id = :'org_a' and kind = 'plan_change'), 5::bigint,
  'a replayed event writes nothing');
select is(tests.refusal(format($$select public.set_organization_plan(%L, 'pro', %L)$$, :'org_a', 'evt_upgrade_' || :'org_a')) -> 'detail' ->> 'reason',
  'idempotency_conflict', 'the same event_id for another plan is refused (409)');

-- Downgrade enterprise -> pro: the period allowance is capped, purchased tokens stay.
select from public.grant_tokens(:'org_a', 'goal_generation', 10, null, 'top-up');
select tests.authenticate_as(:'member_a');
select from public.deduct_tokens('analyze_strategy');
select tests.clear_authentication();
update public.ai_tokens set balance = 15 where organization_id = :'org_a' and token_type = 'forecast';
select from public.set_organization_plan(:'org_a', 'pro');
select results_eq(
  format($$select token_type, balance, purchased_balance, total_allocated from public.ai_tokens where organization_id = %L order by token_type$$, :'org_a'),
  $$values ('forecast'::text, 15, 0, 30), ('general', 50, 0, 50), ('goal_generation', 30, 10, 20),
           ('lead_generation', 50, 0, 50), ('strategy_analysis', 100, 0, 100)$$,
  'a downgrade caps the period allowance at the new allocation, keeps purchased tokens and leaves lower balances alone');

-- Downgrade to starter: AI features are refused; purchased tokens are kept for later.
select from public.set_organization_plan(:'org_a', 'starter');
select results_eq(
  format($$select token_type, balance, purchased_balance, total_allocated from public.ai_tokens where organization_id = %L order by token_type$$, :'org_a'),
  $$values ('forecast'::text, 0, 0, 0), ('general', 0, 0, 0), ('goal_generation', 10, 10, 0),
           ('lead_generation', 0, 0, 0), ('strategy_analysis', 0, 0, 0)$$,
  'on starter the allowance is zero; purchased tokens remain');
select tests.authenticate_as(:'member_a');
select public.deduct_tokens('generate_goal') as starter_refusal \gset
select is((:'starter_refusal'::jsonb) ->> 'code', 'PT403', 'deduct_tokens on starter answers HTTP 403');
select is(((:'starter_refusal'::jsonb) ->> 'details')::jsonb ->> 'reason', 'feature_not_in_plan', 'with reason feature_not_in_plan');
select is(tests.refusal($$select public.has_enough_tokens('generate_goal')$$) -> 'detail' ->> 'reason', 'feature_not_in_plan',
  'has_enough_tokens on starter refuses with feature_not_in_plan');
select tests.clear_authentication();
select is((select balance from public.ai_tokens where organization_id = :'org_a' and token_type = 'goal_generation'), 10,
  'the refused deduction spent nothing');

-- A change when the period has ended: settled first, then changed.
update public.ai_tokens set refresh_date = now() - interval '1 day' where organization_id = :'org_a';
select from public.set_organization_plan(:'org_a', 'pro');
select results_eq(
  format($$select token_type, balance, total_allocated, refresh_date > now() from public.ai_tokens where organization_id = %L order by token_type$$, :'org_a'),
  $$values ('forecast'::text, 30, 30, true), ('general', 50, 50, true), ('goal_generation', 30, 20, true),
           ('lead_generation', 50, 50, true), ('strategy_analysis', 100, 100, true)$$,
  'a due period is refreshed before the change applies');

-- An organization that never had tokens gets its rows.
select from public.set_organization_plan(:'org_new', 'pro');
select results_eq(
  format($$select token_type, balance, total_allocated from public.ai_tokens where organization_id = %L order by token_type$$, :'org_new'),
  $$select token_type, monthly_allocation, monthly_allocation from public.ai_plan_allocations where plan = 'pro' order by token_type$$,
  'set_organization_plan creates the token rows of an organization that had none');

-- Bad input and callers.
select is(tests.refusal(format($$select public.set_organization_plan(%L, 'platinum')$$, :'org_a')) -> 'detail' ->> 'reason',
  'invalid_plan', 'an unknown plan is refused (400 invalid_plan)');
select is(tests.refusal(format($$select public.set_organization_plan(%L, 'pro')$$, gen_random_uuid())) ->> 'sqlstate',
  'PT404', 'an unknown organization is refused (404)');
select tests.authenticate_as(:'member_a');
select is(tests.refusal(format($$select public.set_organization_plan(%L, 'enterprise')$$, :'org_a')) ->> 'sqlstate',
  '42501', 'members cannot change plans');
select tests.clear_authentication();
select is_empty('select * from public.verify_token_ledger()', 'the ledger is consistent after the plan changes');

select * from finish();
rollback;
