-- Enforcement modes (the guides rollback plan as a switch): enforce refuses, monitor
-- never refuses but records what would have been refused and never goes below zero, off
-- checks and spends nothing; per organization over a global default.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = public, extensions;
select plan(27);

-- The tests.* helpers (fixtures, callers, tests.refusal) come from 000-setup-test-helpers.

select tests.create_organization('Modes A') as org_a, tests.create_organization('Modes B') as org_b,
       tests.create_organization('Modes S', 'starter') as org_s \gset
select tests.create_user('member A', :'org_a') as member_a, tests.create_user('member B', :'org_b') as member_b,
       tests.create_user('member S', :'org_s') as member_s \gset
update public.ai_rate_limits set max_requests = 1000;
-- Only 4 goal tokens left in A.
update public.ai_tokens set balance = 4 where organization_id = :'org_a' and token_type = 'goal_generation';

select tests.authenticate_as(:'member_a');
select is(public.get_token_stats() ->> 'enforcement', 'enforce', 'the default mode is enforce');
select tests.authenticate_as_service_role();
select is(public.set_enforcement_mode('monitor', :'org_a'),
  jsonb_build_object('organization_id', :'org_a', 'mode', 'monitor', 'previous_mode', 'enforce', 'overridden', true),
  'set_enforcement_mode switches one organization to monitor');

-- Monitor: never refuses, spends what is there, never below zero, records the would-be refusal.
select tests.authenticate_as(:'member_a');
select ok(public.has_enough_tokens('generate_quest'), 'monitor: has_enough_tokens is true');
select is((public.deduct_tokens('generate_goal') ->> 'tokens_deducted')::integer, 3, 'monitor: an affordable deduction is charged in full');
select public.deduct_tokens('generate_goal') as short \gset
select is((:'short'::jsonb) - 'usage_id' - 'would_have_refused',
  jsonb_build_object('success', true, 'remaining_balance', 0, 'tokens_deducted', 1, 'token_type', 'goal_generation',
    'feature', 'generate_goal', 'organization_id', :'org_a', 'request_id', null, 'replayed', false,
    'enforcement', 'monitor', 'message', 'Used 1 tokens for generate_goal'),
  'monitor: a deduction larger than the balance succeeds and takes only what is there');
select is((:'short'::jsonb) -> 'would_have_refused',
  '{"http_status": 402, "reason": "insufficient_tokens", "message": "You''re out of AI tokens", "details": {"reason": "insufficient_tokens", "feature": "generate_goal", "token_type": "goal_generation", "required": 3, "balance": 1, "reserved": 0, "available": 1, "initialized": true}}'::jsonb,
  'monitor: the response says what enforce mode would have answered');
select is(current_setting('response.status', true), null, 'monitor: the HTTP status stays 200');
select is((public.deduct_tokens('generate_goal') ->> 'tokens_deducted')::integer, 0, 'monitor: with nothing left, nothing is charged');
select tests.clear_authentication();
select is((select balance from public.ai_tokens where organization_id = :'org_a' and token_type = 'goal_generation'), 0,
  'monitor: the balance never goes below zero');
select is((select count(*) from public.ai_token_usage_log where organization_id = :'org_a' and tokens_deducted > 0), 2::bigint,
  'monitor: usage rows only for what was charged');
select results_eq(
  format($$select kind, reason, refusal_count, (details ->> 'charged')::integer, details ->> 'enforcement', (details ->> 'refused')::boolean
           from public.ai_token_alerts where organization_id = %L and kind = 'refused' order by id$$, :'org_a'),
  $$values ('refused'::text, 'insufficient_tokens'::text, 2, 0, 'monitor'::text, false)$$,
  'monitor: the would-be refusals are counted in one row, with what the latest charged');

-- Monitor on a plan without the feature: it goes through (and is recorded).
select tests.authenticate_as_service_role();
select from public.set_enforcement_mode('monitor', :'org_s');
select from public.grant_tokens(:'org_s', 'goal_generation', 10);
select tests.authenticate_as(:'member_s');
select public.deduct_tokens('generate_goal') as starter_monitored \gset
select is(((:'starter_monitored'::jsonb) ->> 'tokens_deducted')::integer, 3, 'monitor: a feature outside the plan is charged');
select is((:'starter_monitored'::jsonb) -> 'would_have_refused' ->> 'reason', 'feature_not_in_plan', 'and flagged as not in plan');

-- Monitor reservations hold what is there.
select tests.authenticate_as(:'member_a');
select public.reserve_tokens('generate_quest', 5) as monitored_hold \gset
select is(((:'monitored_hold'::jsonb) ->> 'held')::integer, 0, 'monitor: a hold larger than what is available holds what there is (0)');
select is(((:'monitored_hold'::jsonb) ->> 'status'), 'active', 'and is created, not refused');

-- Off: no checks, nothing spent, nothing written.
select tests.authenticate_as_service_role();
select from public.set_enforcement_mode('off', :'org_a');
select tests.clear_authentication();
select count(*) as ledger_rows from public.ai_token_ledger where organization_id = :'org_a' \gset
select count(*) as usage_rows from public.ai_token_usage_log where organization_id = :'org_a' \gset
select tests.authenticate_as(:'member_a');
select results_eq(
  $$select (r ->> 'success')::boolean, (r ->> 'tokens_deducted')::integer, r ->> 'enforcement' from public.deduct_tokens('analyze_strategy') r$$,
  $$values (true, 0, 'off'::text)$$,
  'off: deduct_tokens succeeds and spends nothing');
select ok(public.has_enough_tokens('generate_goal'), 'off: has_enough_tokens is true even at zero');
select results_eq(
  $$select (r ->> 'held')::integer, (r ->> 'available')::integer, r ->> 'enforcement' from public.reserve_tokens('analyze_strategy', 500) r$$,
  $$values (0, 100, 'off'::text)$$,
  'off: reserve_tokens holds nothing and reports what is available');
select tests.clear_authentication();
select results_eq(
  format($$select (select count(*) from public.ai_token_ledger where organization_id = %L), (select count(*) from public.ai_token_usage_log where organization_id = %L)$$, :'org_a', :'org_a'),
  format($$values (%s::bigint, %s::bigint)$$, :ledger_rows, :usage_rows),
  'off: no journal row, no usage row');

-- The global default applies where an organization has no mode of its own.
select tests.authenticate_as_service_role();
select from public.set_enforcement_mode('monitor');
select tests.authenticate_as(:'member_b');
select is(public.get_token_stats() ->> 'enforcement', 'monitor', 'an organization without its own mode follows the global default');
select tests.authenticate_as_service_role();
select from public.set_enforcement_mode('enforce', :'org_b');
select tests.authenticate_as(:'member_b');
select is(public.get_token_stats() ->> 'enforcement', 'enforce', 'an organization''s own mode wins over the default');
select tests.authenticate_as_service_role();
select is(public.set_enforcement_mode('inherit', :'org_b') ->> 'mode', 'monitor', 'inherit removes the organization''s own mode');
select from public.set_enforcement_mode('enforce');

-- Bad input and callers.
select is(tests.refusal($$select public.set_enforcement_mode('lenient')$$) -> 'detail' ->> 'reason', 'invalid_mode',
  'an unknown mode is refused (400 invalid_mode)');
select is(tests.refusal($$select public.set_enforcement_mode('inherit')$$) -> 'detail' ->> 'reason', 'invalid_mode',
  'the global default cannot inherit');
select tests.authenticate_as(:'member_a');
select is(tests.refusal(format($$select public.set_enforcement_mode('off', %L)$$, :'org_a')) ->> 'sqlstate', '42501',
  'members cannot switch modes');
select is((select count(*) from public.ai_token_enforcement_modes where organization_id is null or organization_id = :'org_a'), 2::bigint,
  'members read their organization''s mode and the default');
select tests.clear_authentication();
select is_empty('select * from public.verify_token_ledger()', 'the ledger is consistent in every mode');

select * from finish();
rollback;
