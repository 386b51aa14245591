-- The ledger: every change of a balance is one journal row, whoever makes it, and
-- balance = sum(delta) for every (organization, token type).
begin;
create extension if not exists pgtap with schema extensions;
set search_path = public, extensions;
select plan(22);

-- The tests.* helpers (fixtures, callers, tests.refusal) come from 000-setup-test-helpers.

-- Fixtures: organization A (pro) with an owner and a member; organization B (pro) with a member.
select tests.create_organization('Ledger A', 'pro', initialized => false) as org_a,
       tests.create_organization('Ledger B', 'pro', initialized => false) as org_b \gset
select tests.create_user('owner A', :'org_a', 'owner') as owner_a, tests.create_user('member A', :'org_a') as member_a,
       tests.create_user('member B', :'org_b') as member_b \gset
select from public.initialize_tokens(:'org_a');
select from public.initialize_tokens(:'org_b');

select results_eq(
  format($$select token_type, kind, delta from public.ai_token_ledger where organization_id = %L order by token_type$$, :'org_a'),
  $$select token_type, 'allocation'::text, monthly_allocation from public.ai_plan_allocations where plan = 'pro' order by token_type$$,
  'initialize_tokens journals one allocation row per token type with the allocation as delta');

-- A deduction by a member.
select tests.authenticate_as(:'member_a');
select (public.deduct_tokens('generate_goal') ->> 'usage_id') as usage_id \gset
select tests.clear_authentication();

select results_eq(
  format($$select kind, delta, balance_after, usage_id::text, actor::text from public.ai_token_ledger
           where organization_id = %L and token_type = 'goal_generation' order by id desc limit 1$$, :'org_a'),
  format($$values ('deduction'::text, -3, 17, %L::text, %L::text)$$, :'usage_id', :'member_a'),
  'a deduction is journaled as kind deduction with its usage_id, the balance after and the acting user');

-- The guide's rollback plan, by hand in the SQL editor, in the same transaction as the deduction.
update public.ai_tokens set balance = 9999 where organization_id = :'org_a';

select results_eq(
  format($$select token_type, kind, delta, balance_after from public.ai_token_ledger
           where organization_id = %L and id > (select max(id) from public.ai_token_ledger where kind = 'deduction' and organization_id = %L)
           order by token_type$$, :'org_a', :'org_a'),
  $$values ('forecast'::text, 'adjustment'::text, 9969, 9999), ('general', 'adjustment', 9949, 9999),
           ('goal_generation', 'adjustment', 9982, 9999), ('lead_generation', 'adjustment', 9949, 9999),
           ('strategy_analysis', 'adjustment', 9899, 9999)$$,
  'a manual UPDATE of balances is journaled as adjustments, even right after a function ran in the same transaction');

select is_empty(
  format($$select t.token_type from public.ai_tokens t
           where t.organization_id = %L
             and t.balance <> (select coalesce(sum(l.delta), 0) from public.ai_token_ledger l
                               where l.organization_id = t.organization_id and l.token_type = t.token_type)$$, :'org_a'),
  'balance = sum(delta) for every token type after allocation, deduction and manual adjustment');

select is_empty(format('select * from public.verify_token_ledger(%L)', :'org_a'), 'verify_token_ledger finds nothing wrong');

-- An update that does not change a balance writes no journal row.
select count(*) as journal_rows from public.ai_token_ledger where organization_id = :'org_a' \gset
update public.ai_tokens set refresh_date = refresh_date + interval '1 day', total_allocated = total_allocated + 1
where organization_id = :'org_a';
select is((select count(*) from public.ai_token_ledger where organization_id = :'org_a'), :'journal_rows'::bigint,
  'updates that leave balances unchanged are not journaled');

-- The guide's manual initialization (Option A): an INSERT by hand is an adjustment.
delete from public.ai_tokens where organization_id = :'org_b' and token_type = 'forecast';
select results_eq(
  format($$select kind, delta, balance_after from public.ai_token_ledger
           where organization_id = %L and token_type = 'forecast' order by id$$, :'org_b'),
  $$values ('allocation'::text, 30, 30), ('adjustment', -30, 0)$$,
  'deleting a token row by hand journals the balance back to zero');
insert into public.ai_tokens (organization_id, token_type, balance, total_allocated, refresh_date)
values (:'org_b', 'forecast', 30, 30, now() + interval '30 days');
select results_eq(
  format($$select kind, delta, balance_after from public.ai_token_ledger
           where organization_id = %L and token_type = 'forecast' order by id desc limit 1$$, :'org_b'),
  $$values ('adjustment'::text, 30, 30)$$,
  'a token row inserted by hand is journaled as an adjustment');
select is_empty(format('select * from public.verify_token_ledger(%L)', :'org_b'),
  'the ledger of organization B is consistent after a manual delete and insert');

-- verify_token_ledger detects what breaks the invariants.
insert into public.ai_token_ledger (organization_id, token_type, kind, delta, balance_after, reason)
values (:'org_b', 'general', 'adjustment', 7, 57, 'forged');
select results_eq(
  format($$select violation, expected, actual from public.verify_token_ledger(%L) order by violation$$, :'org_b'),
  $$values ('balance_mismatch'::text, 57::bigint, 50::bigint)$$,
  'a journal row without a balance change is reported as balance_mismatch');
delete from public.ai_token_ledger where organization_id = :'org_b' and reason = 'forged';

update public.ai_token_ledger set balance_after = balance_after + 1
where organization_id = :'org_b' and token_type = 'general';
select results_eq(
  format($$select violation from public.verify_token_ledger(%L) order by violation$$, :'org_b'),
  $$values ('running_balance_mismatch'::text)$$,
  'a journal row whose balance_after is not the running sum is reported');
update public.ai_token_ledger set balance_after = balance_after - 1
where organization_id = :'org_b' and token_type = 'general';

insert into public.ai_token_usage_log (organization_id, user_id, token_type, feature_used, tokens_deducted, balance_after)
values (:'org_b', :'member_b', 'general', 'ask_assistant', 1, 49);
select results_eq(
  format($$select violation, expected, actual from public.verify_token_ledger(%L)$$, :'org_b'),
  $$values ('usage_journal_mismatch'::text, 1::bigint, 0::bigint)$$,
  'a usage-log row the journal never charged is reported');
delete from public.ai_token_usage_log where organization_id = :'org_b';

update public.ai_tokens set purchased_balance = 5 where organization_id = :'org_b' and token_type = 'general';
update public.ai_tokens set reserved = 4 where organization_id = :'org_b' and token_type = 'lead_generation';
select results_eq(
  format($$select violation, expected, actual from public.verify_token_ledger(%L) order by violation$$, :'org_b'),
  $$values ('purchased_mismatch'::text, 0::bigint, 5::bigint), ('reserved_mismatch', 0, 4)$$,
  'purchased_balance without grants and reserved without holds are reported');
update public.ai_tokens set purchased_balance = 0, reserved = 0 where organization_id = :'org_b';
select is_empty('select * from public.verify_token_ledger()', 'verify_token_ledger() over all organizations is clean again');

-- The journal is append-only, for the service role too.
select tests.authenticate_as_service_role();
select throws_ok(
  format($$update public.ai_token_ledger set delta = 1 where organization_id = %L$$, :'org_a'),
  '42501', null, 'the service role cannot update journal rows');
select throws_ok(
  format($$delete from public.ai_token_ledger where organization_id = %L$$, :'org_a'),
  '42501', null, 'the service role cannot delete journal rows');
select isnt_empty(format($$select 1 from public.ai_token_ledger where organization_id = %L$$, :'org_a'),
  'the service role reads the journal');
select tests.clear_authentication();

-- Who reads the journal (RLS).
select tests.authenticate_as(:'owner_a');
select is((select count(distinct organization_id) from public.ai_token_ledger), 1::bigint,
  'an owner reads the journal of their organization only');
select isnt_empty(format($$select 1 from public.ai_token_ledger where organization_id = %L$$, :'org_a'),
  'an owner reads their organization''s journal');
select tests.authenticate_as(:'member_a');
select is_empty('select 1 from public.ai_token_ledger', 'a plain member does not read the journal');
select throws_ok(
  format($$insert into public.ai_token_ledger (organization_id, token_type, kind, delta, balance_after) values (%L, 'general', 'grant', 5, 5)$$, :'org_a'),
  '42501', null, 'a member cannot write the journal');
select tests.clear_authentication();

-- tokens-client has no foreign key into the host's tables: deleting an organization
-- there leaves its balances and journal (still exact) for the record.
-- (Its members leave first: a host's profiles may reference it without cascading.)
delete from public.user_profiles where organization_id = :'org_b';
delete from public.organizations where id = :'org_b';
select is_empty(format($$select * from public.verify_token_ledger(%L)$$, :'org_b'),
  'deleting an organization in the host leaves its journal exact and nothing of ours half-deleted');

select * from finish();
rollback;
