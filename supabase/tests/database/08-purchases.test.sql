-- Purchased tokens: grant_tokens validates and is idempotent on external_id; purchased
-- tokens are spent after the period allowance, earliest expiry first, survive the
-- refresh, and expire (journaled) lazily and through the daily job.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = public, extensions;
select plan(26);

-- The tests.* helpers (fixtures, callers, tests.refusal) come from 000-setup-test-helpers.

select tests.create_organization('Grants A') as org_a,
       tests.create_organization('Grants New', 'pro', initialized => false) as org_new \gset
select tests.create_user('owner A', :'org_a', 'owner') as owner_a, tests.create_user('member A', :'org_a') as member_a \gset

-- Bad input.
select is(tests.refusal(format($$select public.grant_tokens(%L, 'goal_generation', %s)$$, :'org_a', amount)) -> 'detail' ->> 'reason',
  'invalid_amount', format('amount %s is refused with invalid_amount (400)', amount))
from unnest(array['0', '-5', '1000000001', 'null']) as amount;
select is(tests.refusal(format($$select public.grant_tokens(%L, 'goal_generation', 10, now() - interval '1 day')$$, :'org_a')) -> 'detail',
  jsonb_build_object('reason', 'invalid_request', 'field', 'expires_at', 'expires_at', now() - interval '1 day'),
  'an expiry in the past is refused (400)');
select is(tests.refusal(format($$select public.grant_tokens(%L, 'gold_bars', 10)$$, :'org_a')) -> 'detail' ->> 'reason',
  'unknown_token_type', 'an unknown token type is refused (404)');
select is(tests.refusal(format($$select public.grant_tokens(%L, 'general', 10)$$, gen_random_uuid())) ->> 'sqlstate',
  'PT404', 'an unknown organization is refused (404)');
select tests.authenticate_as(:'owner_a');
select is(tests.refusal(format($$select public.grant_tokens(%L, 'general', 10)$$, :'org_a')) ->> 'sqlstate',
  '42501', 'organization owners cannot grant tokens; only the service role can');
select tests.authenticate_as_service_role();

-- Three grants: A expires in 10 days, B in 5 days, C never.
select public.grant_tokens(:'org_a', 'goal_generation', 10, now() + interval '10 days', 'pack A') ->> 'grant_id' as grant_a \gset
select public.grant_tokens(:'org_a', 'goal_generation', 10, now() + interval '5 days', 'pack B') ->> 'grant_id' as grant_b \gset
select public.grant_tokens(:'org_a', 'goal_generation', 10, null, 'pack C', 'pay_c_' || :'org_a') as grant_c \gset
select results_eq(
  format($$select balance, purchased_balance from public.ai_tokens where organization_id = %L and token_type = 'goal_generation'$$, :'org_a'),
  $$values (50, 30)$$,
  'grants add to the balance and to its purchased part');
select results_eq(
  format($$select kind, delta, grant_id::text, external_id from public.ai_token_ledger
           where organization_id = %L and kind = 'grant' order by id desc limit 1$$, :'org_a'),
  format($$values ('grant'::text, 10, %L::text, %L::text)$$, (:'grant_c'::jsonb) ->> 'grant_id', 'pay_c_' || :'org_a'),
  'a grant is journaled with its grant id and external id');

-- Idempotent on external_id.
select is(public.grant_tokens(:'org_a', 'goal_generation', 10, null, 'pack C', 'pay_c_' || :'org_a'),
  (:'grant_c'::jsonb) || '{"replayed": true}', 'the same external_id returns the first grant');
select is((select balance from public.ai_tokens where organization_id = :'org_a' and token_type = 'goal_generation'), 50,
  'and grants nothing twice');
select is(tests.refusal(format($$select public.grant_tokens(%L, 'goal_generation', 11, null, 'pack C', %L)$$, :'org_a', 'pay_c_' || :'org_a')) -> 'detail' ->> 'reason',
  'idempotency_conflict', 'the same external_id with another amount is refused (409)');

-- Spending: the period allowance first (20), then the grant that expires first (B), then A, then C.
select from generate_series(1, 7) i cross join lateral public.deduct_tokens('generate_goal', :'org_a', 'spend-' || i);
select results_eq(
  format($$select balance, purchased_balance from public.ai_tokens where organization_id = %L and token_type = 'goal_generation'$$, :'org_a'),
  $$values (29, 29)$$,
  'seven deductions of 3: 20 from the allowance, then 1 purchased token');
select results_eq(
  format($$select reason, remaining from public.ai_token_grants where organization_id = %L order by reason$$, :'org_a'),
  $$values ('pack A'::text, 10), ('pack B', 9), ('pack C', 10)$$,
  'the purchased token came from the grant that expires first');
select from generate_series(8, 11) i cross join lateral public.deduct_tokens('generate_goal', :'org_a', 'spend-' || i);
select results_eq(
  format($$select reason, remaining from public.ai_token_grants where organization_id = %L order by reason$$, :'org_a'),
  $$values ('pack A'::text, 7), ('pack B', 0), ('pack C', 10)$$,
  'once B is spent, A (expiring next) is spent before C (never expiring)');
select results_eq(
  format($$select g.reason, sum(u.amount)::integer from public.ai_token_grant_usage u join public.ai_token_grants g on g.id = u.grant_id
           where g.organization_id = %L group by g.reason order by g.reason$$, :'org_a'),
  $$values ('pack A'::text, 3), ('pack B', 10)$$,
  'each deduction records which grants it spent');

-- The refresh restores the allowance and keeps what is left of the grants.
update public.ai_tokens set refresh_date = now() - interval '1 day' where organization_id = :'org_a' and token_type = 'goal_generation';
select from public.refresh_due_tokens();
select results_eq(
  format($$select balance, purchased_balance from public.ai_tokens where organization_id = %L and token_type = 'goal_generation'$$, :'org_a'),
  $$values (37, 17)$$,
  'after the refresh: 20 allowance + 17 purchased');

-- Expiry, lazily: the next deduction removes what is left of an expired grant first.
select tests.clear_authentication();
update public.ai_token_grants set expires_at = now() - interval '1 second' where id = :'grant_a';
select tests.authenticate_as_service_role();
select from public.deduct_tokens('generate_goal', :'org_a');
select results_eq(
  format($$select kind, delta, grant_id::text from public.ai_token_ledger
           where organization_id = %L and token_type = 'goal_generation' order by id desc limit 2$$, :'org_a'),
  format($$values ('deduction'::text, -3, null::text), ('expiry', -7, %L)$$, :'grant_a'),
  'an expired grant loses what is left (journaled expiry) before the deduction');
select results_eq(
  format($$select remaining, expired_amount, expired_at is not null from public.ai_token_grants where id = %L$$, :'grant_a'),
  $$values (0, 7, true)$$,
  'the grant records what expired');

-- Expiry through the daily job.
select tests.clear_authentication();
update public.ai_token_grants set expires_at = now() - interval '1 second' where reason = 'pack C' and organization_id = :'org_a';
select tests.authenticate_as_service_role();
select from public.refresh_due_tokens();
select results_eq(
  format($$select balance, purchased_balance from public.ai_tokens where organization_id = %L and token_type = 'goal_generation'$$, :'org_a'),
  $$values (17, 0)$$,
  'refresh_due_tokens expires grants nobody touched');

-- The balance cannot pass its ceiling (ai_tokens_internal.balance_ceiling(), 10^9).
select from public.grant_tokens(:'org_a', 'general', 999999950);
select is(tests.refusal(format($$select public.grant_tokens(%L, 'general', 1)$$, :'org_a')) -> 'detail' ->> 'reason',
  'invalid_amount', 'a grant that would pass the balance ceiling is refused (400 invalid_amount)');

-- An organization without token rows gets one, opened with its plan's allocation.
select from public.grant_tokens(:'org_new', 'forecast', 40);
select results_eq(
  format($$select balance, purchased_balance, total_allocated from public.ai_tokens where organization_id = %L$$, :'org_new'),
  $$values (70, 40, 30)$$,
  'a grant opens the token row of an organization that had none (pro forecast 30) and adds the 40 purchased');

-- Who reads grants.
select tests.authenticate_as(:'owner_a');
select is((select count(*) from public.ai_token_grants), 4::bigint, 'owners read their organization''s grants');
select tests.authenticate_as(:'member_a');
select is_empty('select 1 from public.ai_token_grants', 'plain members do not read grants');
select tests.clear_authentication();
select is_empty('select * from public.verify_token_ledger()', 'the ledger is consistent after grants, spending and expiry');

select * from finish();
rollback;
