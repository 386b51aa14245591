-- Reservations: holds count against the balance until committed, released or expired;
-- commit charges the actual amount (above the estimate too: overruns are charged, the
-- rest carried as debt) and writes the usage row; a settled hold cannot be settled again; only the holder, admins and the service
-- role settle a hold.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = public, extensions;
select plan(47);

-- The tests.* helpers (fixtures, callers, tests.refusal) come from 000-setup-test-helpers.

select tests.create_organization('Holds A') as org_a, tests.create_organization('Holds B') as org_b \gset
select tests.create_user('member A', :'org_a') as member_a, tests.create_user('member A2', :'org_a') as member_a2,
       tests.create_user('admin A', :'org_a', 'admin') as admin_a, tests.create_user('outsider', :'org_b', 'owner') as outsider \gset
update public.ai_rate_limits set max_requests = 1000;

-- A hold of 15 of the 20 goal tokens.
select tests.authenticate_as(:'member_a');
select public.reserve_tokens('generate_quest', 15, 300) as hold \gset
select is((:'hold'::jsonb) - 'reservation_id' - 'expires_at' - 'created_at',
  jsonb_build_object('organization_id', :'org_a', 'feature', 'generate_quest', 'token_type', 'goal_generation',
    'user_id', :'member_a', 'estimate', 15, 'held', 15, 'status', 'active', 'actual', null, 'tokens_deducted', null,
    'usage_id', null, 'request_id', null, 'enforcement', 'enforce', 'settled_at', null, 'replayed', false,
    'available', 5, 'would_have_refused', null),
  'reserve_tokens holds the estimate and reports what stays available');
select ok(((:'hold'::jsonb) ->> 'expires_at')::timestamptz = now() + interval '300 seconds', 'the hold expires after ttl_seconds');
select tests.clear_authentication();
select results_eq(
  format($$select balance, reserved from public.ai_tokens where organization_id = %L and token_type = 'goal_generation'$$, :'org_a'),
  $$values (20, 15)$$, 'a hold does not move the balance; it is counted in reserved');
select is((select count(*) from public.ai_token_ledger where organization_id = :'org_a' and token_type = 'goal_generation'), 1::bigint,
  'a hold writes no journal row (the balance did not change)');

-- Spending sees only what is not held.
select tests.authenticate_as(:'member_a');
select ok(public.has_enough_tokens('generate_goal'), 'has_enough_tokens: 5 available cover 3');
select is((public.deduct_tokens('generate_goal') ->> 'remaining_balance')::integer, 17, 'a deduction beside the hold');
select ok(not public.has_enough_tokens('generate_goal'), 'has_enough_tokens: 2 available do not cover 3');
select public.deduct_tokens('generate_goal') as refused \gset
select is(((:'refused'::jsonb) ->> 'details')::jsonb,
  '{"reason": "insufficient_tokens", "feature": "generate_goal", "token_type": "goal_generation", "required": 3, "balance": 17, "reserved": 15, "available": 2, "initialized": true}'::jsonb,
  'deduct_tokens refuses what would eat into a hold (402 insufficient_tokens)');
select tests.clear_authentication();
select from set_config('response.status', '', true);

-- Commit: charge the actual amount, give back the rest.
select tests.authenticate_as(:'member_a');
select public.commit_reservation(((:'hold'::jsonb) ->> 'reservation_id')::uuid, 10) as committed \gset
select is((:'committed'::jsonb) - 'usage_id' - 'expires_at' - 'created_at' - 'settled_at' - 'reservation_id',
  jsonb_build_object('organization_id', :'org_a', 'feature', 'generate_quest', 'token_type', 'goal_generation',
    'user_id', :'member_a', 'estimate', 15, 'held', 15, 'status', 'committed', 'actual', 10, 'tokens_deducted', 10,
    'request_id', null, 'enforcement', 'enforce', 'remaining_balance', 7, 'uncharged', 0, 'debt_added', 0, 'overrun', 0,
    'message', 'Used 10 tokens for generate_quest'),
  'commit_reservation charges the actual amount');
select tests.clear_authentication();
select results_eq(
  format($$select balance, reserved from public.ai_tokens where organization_id = %L and token_type = 'goal_generation'$$, :'org_a'),
  $$values (7, 0)$$, 'the rest of the hold is available again');
select results_eq(
  format($$select user_id::text, feature_used, tokens_deducted, balance_after, reservation_id::text, id::text
           from public.ai_token_usage_log where organization_id = %L and reservation_id is not null$$, :'org_a'),
  format($$values (%L::text, 'generate_quest'::text, 10, 7, %L::text, %L::text)$$,
         :'member_a', (:'hold'::jsonb) ->> 'reservation_id', (:'committed'::jsonb) ->> 'usage_id'),
  'the commit writes one usage-log row for the reserving user');
select results_eq(
  format($$select kind, delta, reservation_id::text, usage_id::text from public.ai_token_ledger
           where organization_id = %L and token_type = 'goal_generation' order by id desc limit 1$$, :'org_a'),
  format($$values ('reservation_capture'::text, -10, %L::text, %L::text)$$,
         (:'hold'::jsonb) ->> 'reservation_id', (:'committed'::jsonb) ->> 'usage_id'),
  'the commit is journaled as reservation_capture');

-- A settled hold cannot be settled again.
select tests.authenticate_as(:'member_a');
select is(tests.refusal(format('select public.commit_reservation(%L, 10)', (:'hold'::jsonb) ->> 'reservation_id')) -> 'detail',
  jsonb_build_object('reason', 'reservation_not_active', 'reservation_id', (:'hold'::jsonb) ->> 'reservation_id', 'status', 'committed'),
  'a second commit is refused (409 reservation_not_active): a retried commit never charges twice');
select is(tests.refusal(format('select public.release_reservation(%L)', (:'hold'::jsonb) ->> 'reservation_id')) -> 'detail' ->> 'reason',
  'reservation_not_active', 'a committed hold cannot be released');

select public.reserve_tokens('generate_quest', 5) ->> 'reservation_id' as hold2 \gset
select tests.clear_authentication();

-- Overruns are never free: more than the estimate is charged, from the hold and what
-- else is available; what the balance cannot cover becomes debt on the next period.
select tests.authenticate_as(:'outsider');
select public.reserve_tokens('ask_assistant', 10) ->> 'reservation_id' as over \gset
select is(public.commit_reservation(:'over', 12) - '{reservation_id, expires_at, created_at, settled_at, usage_id, organization_id, user_id}'::text[],
  jsonb_build_object('feature', 'ask_assistant', 'token_type', 'general', 'estimate', 10, 'held', 10, 'status', 'committed',
    'actual', 12, 'tokens_deducted', 12, 'request_id', null, 'enforcement', 'enforce', 'remaining_balance', 38,
    'uncharged', 0, 'debt_added', 0, 'overrun', 2, 'message', 'Used 12 tokens for ask_assistant'),
  'a commit above the estimate charges the actual (12 of a 10 hold) when the balance covers it');
select public.reserve_tokens('ask_assistant', 38) ->> 'reservation_id' as all_in \gset
select is(public.commit_reservation(:'all_in', 50) -> 'tokens_deducted', '38'::jsonb,
  'an overrun the balance cannot cover charges everything available (38)');
select tests.clear_authentication();
select results_eq(
  format($$select balance, reserved, debt from public.ai_tokens where organization_id = %L and token_type = 'general'$$, :'org_b'),
  $$values (0, 0, 12::bigint)$$, 'and the 12 it could not charge are debt on the row');
select is((select count(*) from public.ai_token_alerts where organization_id = :'org_b' and reason = 'overrun'), 1::bigint,
  'the shortfall is recorded as an overrun alert');
update public.ai_tokens set refresh_date = now() - interval '1 minute' where organization_id = :'org_b';
select from public.refresh_due_tokens();
select results_eq(
  format($$select balance, total_allocated, debt from public.ai_tokens where organization_id = %L and token_type = 'general'$$, :'org_b'),
  $$values (38, 50, 0::bigint)$$, 'the refresh takes the debt from the new allowance (50 - 12)');
select is_empty(format('select * from public.verify_token_ledger(%L)', :'org_b'), 'the journal stays exact through overrun and debt');

-- Who may settle a hold.
select tests.authenticate_as(:'member_a2');
select is(tests.refusal(format('select public.commit_reservation(%L, 1)', :'hold2')) -> 'detail' ->> 'reason',
  'not_reservation_holder', 'another member cannot commit someone else''s hold (403)');
select is(tests.refusal(format('select public.release_reservation(%L)', :'hold2')) ->> 'sqlstate',
  'PT403', 'nor release it');
select tests.authenticate_as(:'outsider');
select is(tests.refusal(format('select public.release_reservation(%L)', :'hold2')) -> 'detail' ->> 'reason',
  'reservation_not_found', 'a non-member gets 404: the hold is not revealed');
select tests.authenticate_as(:'admin_a');
select is(public.release_reservation(:'hold2') ->> 'status', 'released', 'an admin releases a member''s hold');
select tests.clear_authentication();
select results_eq(
  format($$select balance, reserved from public.ai_tokens where organization_id = %L and token_type = 'goal_generation'$$, :'org_a'),
  $$values (7, 0)$$, 'a release gives back the whole hold and charges nothing');

-- Idempotent on request_id.
select tests.authenticate_as(:'member_a');
select public.reserve_tokens('generate_quest', 4, 60, 'req-' || :'org_a') as hold3 \gset
select is(public.reserve_tokens('generate_quest', 4, 60, 'req-' || :'org_a'),
  (:'hold3'::jsonb) || '{"replayed": true}',
  'the same request_id returns the same hold, with the same keys (available: what is available now)');
select is(tests.refusal(format('select public.reserve_tokens(%L, 5, 60, %L)', 'generate_quest', 'req-' || :'org_a')) -> 'detail' ->> 'reason',
  'idempotency_conflict', 'the same request_id with another estimate is refused (409)');
select tests.clear_authentication();
select is((select reserved from public.ai_tokens where organization_id = :'org_a' and token_type = 'goal_generation'), 4,
  'a replayed reservation holds nothing twice');

-- A hold whose ttl passed stops counting, without any scheduler.
update public.ai_token_reservations set expires_at = now() - interval '1 second' where id = ((:'hold3'::jsonb) ->> 'reservation_id')::uuid;
select tests.authenticate_as(:'member_a');
select ok(public.has_enough_tokens('generate_goal'), 'an expired hold no longer counts (7 available again)');
select tests.clear_authentication();
select results_eq(
  format($$select r.status, t.reserved from public.ai_token_reservations r join public.ai_tokens t
           on t.organization_id = r.organization_id and t.token_type = r.token_type where r.id = %L$$, (:'hold3'::jsonb) ->> 'reservation_id'),
  $$values ('expired'::text, 0)$$,
  'the first call touching the row swept the expired hold');
select tests.authenticate_as(:'member_a');
select is(tests.refusal(format('select public.commit_reservation(%L, 1)', (:'hold3'::jsonb) ->> 'reservation_id')) -> 'detail' ->> 'status',
  'expired', 'an expired hold cannot be committed (409 reservation_not_active, status expired)');

-- The service role commits any hold; committing 0 charges nothing.
select public.reserve_tokens('generate_quest', 3) ->> 'reservation_id' as hold4 \gset
select tests.authenticate_as_service_role();
select results_eq(
  format($$select (r ->> 'tokens_deducted')::integer, r ->> 'usage_id', r ->> 'status', (r ->> 'remaining_balance')::integer
           from public.commit_reservation(%L, 0) r$$, :'hold4'),
  $$values (0, null::text, 'committed'::text, 7)$$,
  'the service role commits a member''s hold; an actual of 0 charges nothing and writes no usage row');

-- Not enough for the estimate: refused like a deduction, and recorded.
select tests.authenticate_as(:'member_a');
select public.reserve_tokens('generate_quest', 100) as refused_hold \gset
select is((:'refused_hold'::jsonb) ->> 'code', 'PT402', 'a hold larger than what is available is refused (402)');
select is(current_setting('response.status', true), '402', 'with response.status 402 for PostgREST');
select from set_config('response.status', '', true);
select tests.clear_authentication();
select is((select count(*) from public.ai_token_reservations where organization_id = :'org_a' and estimate = 100), 0::bigint,
  'the refused hold was not created');
select results_eq(
  format($$select kind, reason, refusal_count, details ->> 'estimate', details ->> 'refused' from public.ai_token_alerts where organization_id = %L order by id$$, :'org_a'),
  $$values ('refused'::text, 'insufficient_tokens'::text, 2, '100'::text, 'true'::text)$$,
  'both refusals (the deduction and the hold) are counted in one alert, with the latest details');

-- Bad input.
select tests.authenticate_as(:'member_a');
select is(tests.refusal($$select public.reserve_tokens('generate_quest', 0)$$) -> 'detail' ->> 'reason', 'invalid_amount',
  'an estimate of 0 is refused (400 invalid_amount)');
select is(tests.refusal($$select public.reserve_tokens('generate_quest', 5, 3601)$$) -> 'detail' ->> 'field', 'ttl_seconds',
  'a ttl over an hour is refused (400)');
select is(tests.refusal(format('select public.commit_reservation(%L, -1)', :'hold4')) -> 'detail' ->> 'reason', 'invalid_amount',
  'a negative actual is refused (400 invalid_amount)');
select is(tests.refusal(format('select public.commit_reservation(%L, 1)', gen_random_uuid())) ->> 'sqlstate', 'PT404',
  'an unknown reservation is refused (404)');

-- Who reads holds.
select is((select count(*) from public.ai_token_reservations), 4::bigint, 'a member reads their own holds');
select tests.authenticate_as(:'member_a2');
select is_empty('select 1 from public.ai_token_reservations', 'another member does not read them');
select tests.authenticate_as(:'admin_a');
select is((select count(*) from public.ai_token_reservations), 4::bigint, 'an admin reads the organization''s holds');

-- A retry is answered before the feature is looked up: a hold whose feature left the
-- catalog since is still replayed (it exists and holds tokens), not refused as unknown.
select tests.clear_authentication();
insert into public.ai_features (feature, token_type, cost) values ('tests_retired_hold', 'general', 1);
select tests.authenticate_as(:'member_a');
select public.reserve_tokens('tests_retired_hold', 2, 60, 'retired-' || :'org_a') as retired_hold \gset
select tests.clear_authentication();
delete from public.ai_features where feature = 'tests_retired_hold';
select tests.authenticate_as(:'member_a');
select is(tests.answer(format('select public.reserve_tokens(%L, 2, 60, %L)', 'tests_retired_hold', 'retired-' || :'org_a')),
  (:'retired_hold'::jsonb) || '{"replayed": true}',
  'a retry after the feature left the catalog returns the same hold');
select is(tests.refusal(format('select public.reserve_tokens(%L, 2, 60, %L)', 'tests_retired_hold', 'retired-2-' || :'org_a')) -> 'detail',
  '{"reason": "unknown_feature", "feature": "tests_retired_hold"}'::jsonb,
  'a new hold for the retired feature is an unknown feature (404)');
select is(tests.refusal(format('select public.reserve_tokens(%L, 2, 60, %L)', ' ', 'retired-' || :'org_a')) -> 'detail',
  '{"reason": "invalid_request", "field": "feature"}'::jsonb,
  'a retry without a feature is still bad input (400), not a replay');
select tests.clear_authentication();
select is_empty('select * from public.verify_token_ledger()', 'the ledger and the reserved counters are consistent');

select * from finish();
rollback;
