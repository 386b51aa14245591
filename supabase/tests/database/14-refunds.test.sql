-- Refunds: refund_deduction gives the tokens of a usage row back exactly once, journaled;
-- purchased tokens go back to their grant; only admins and the service role refund.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = public, extensions;
select plan(16);

-- The tests.* helpers (fixtures, callers, tests.refusal) come from 000-setup-test-helpers.

select tests.create_organization('Refunds A') as org_a, tests.create_organization('Refunds B') as org_b \gset
select tests.create_user('owner A', :'org_a', 'owner') as owner_a, tests.create_user('member A', :'org_a') as member_a,
       tests.create_user('owner B', :'org_b', 'owner') as owner_b \gset

select tests.authenticate_as(:'member_a');
select public.deduct_tokens('generate_goal') ->> 'usage_id' as usage_1 \gset

select is(tests.refusal(format($$select public.refund_deduction(%L, 'failed AI call')$$, :'usage_1')) -> 'detail' ->> 'reason',
  'admin_required', 'a plain member cannot refund (403 admin_required)');
select tests.authenticate_as(:'owner_b');
select is(tests.refusal(format($$select public.refund_deduction(%L, 'failed AI call')$$, :'usage_1')) -> 'detail' ->> 'reason',
  'usage_not_found', 'an admin of another organization gets 404: the usage row is not revealed');

select tests.authenticate_as(:'owner_a');
select public.refund_deduction(:'usage_1', 'failed AI call') as refund_1 \gset
select is((:'refund_1'::jsonb) - 'refunded_at',
  jsonb_build_object('usage_id', :'usage_1', 'organization_id', :'org_a', 'token_type', 'goal_generation',
    'feature', 'generate_goal', 'tokens_refunded', 3, 'restored_to_purchased', 0, 'remaining_balance', 20,
    'reason', 'failed AI call'),
  'an owner refunds a deduction of their organization');
select tests.clear_authentication();
select results_eq(
  format($$select kind, delta, balance_after, usage_id::text, reason, actor::text from public.ai_token_ledger
           where organization_id = %L and token_type = 'goal_generation' order by id desc limit 1$$, :'org_a'),
  format($$values ('refund'::text, 3, 20, %L::text, 'failed AI call'::text, %L::text)$$, :'usage_1', :'owner_a'),
  'the refund is journaled with the usage id, the reason and who refunded');
select results_eq(
  format($$select refunded_at is not null, refunded_by::text, refund_reason from public.ai_token_usage_log where id = %L$$, :'usage_1'),
  format($$values (true, %L::text, 'failed AI call'::text)$$, :'owner_a'),
  'the usage row records the refund');

select tests.authenticate_as(:'owner_a');
select is(tests.refusal(format($$select public.refund_deduction(%L, 'again')$$, :'usage_1')) -> 'detail' ->> 'reason',
  'already_refunded', 'a second refund of the same row is refused (409 already_refunded)');
select tests.authenticate_as_service_role();
select is(tests.refusal(format($$select public.refund_deduction(%L)$$, :'usage_1')) ->> 'sqlstate',
  'PT409', 'also for the service role');
select is((select balance from public.ai_tokens where organization_id = :'org_a' and token_type = 'goal_generation'), 20,
  'the tokens were given back once');
select is(tests.refusal(format($$select public.refund_deduction(%L)$$, gen_random_uuid())) -> 'detail' ->> 'reason',
  'usage_not_found', 'an unknown usage id is refused (404)');

-- The service role refunds; purchased tokens go back to their grant.
select public.grant_tokens(:'org_a', 'goal_generation', 10, now() + interval '30 days', 'pack') ->> 'grant_id' as grant_id \gset
select from generate_series(1, 6) i cross join lateral public.deduct_tokens('generate_goal', :'org_a', 'r-' || i);
select public.deduct_tokens('generate_goal', :'org_a') ->> 'usage_id' as usage_2 \gset
select results_eq(
  format($$select balance, purchased_balance from public.ai_tokens where organization_id = %L and token_type = 'goal_generation'$$, :'org_a'),
  $$values (9, 9)$$, 'the last deduction took 2 allowance tokens and 1 purchased token');
select is((public.refund_deduction(:'usage_2', 'model timeout') ->> 'restored_to_purchased')::integer, 1,
  'the service role refunds; the purchased token goes back to its grant');
select results_eq(
  format($$select t.balance, t.purchased_balance, g.remaining from public.ai_tokens t join public.ai_token_grants g
           on g.organization_id = t.organization_id and g.token_type = t.token_type
           where t.organization_id = %L and t.token_type = 'goal_generation'$$, :'org_a'),
  $$values (12, 10, 10)$$,
  'balance, purchased part and the grant are restored');

-- A purchased token whose grant has expired comes back as allowance.
select public.deduct_tokens('generate_goal', :'org_a') ->> 'usage_id' as usage_3 \gset
select tests.clear_authentication();
update public.ai_token_grants set expires_at = now() - interval '1 second' where id = :'grant_id';
select tests.authenticate_as_service_role();
select is((public.refund_deduction(:'usage_3') ->> 'restored_to_purchased')::integer, 0,
  'tokens of an expired grant are not restored to it');
select results_eq(
  format($$select balance, purchased_balance from public.ai_tokens where organization_id = %L and token_type = 'goal_generation'$$, :'org_a'),
  $$values (3, 0)$$,
  'the expired grant lost its 9 remaining tokens; the 3 refunded tokens came back as allowance');

-- A committed reservation is refunded like a deduction.
select tests.authenticate_as(:'member_a');
select public.reserve_tokens('generate_quest', 3) ->> 'reservation_id' as hold \gset
select public.commit_reservation(:'hold', 2) ->> 'usage_id' as usage_4 \gset
select tests.authenticate_as(:'owner_a');
select is((public.refund_deduction(:'usage_4') ->> 'tokens_refunded')::integer, 2, 'a committed reservation can be refunded');
select tests.clear_authentication();
select is_empty('select * from public.verify_token_ledger()', 'the ledger is consistent after the refunds');

select * from finish();
rollback;
