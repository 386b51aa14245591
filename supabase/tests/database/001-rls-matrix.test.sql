-- The RLS matrix, as deployed: who can read which rows of every table, and that nobody
-- but service_role writes a table directly.
--
-- Callers: anon, member of org A, admin and owner of org A, member of org B, a user
-- who moved from A to B, a user without an organization, service_role.
-- Reads go through the select policies; writes by anon and authenticated stop at the
-- grants (42501 "permission denied"). 004-rls-policies-without-grants shows that the
-- policies alone refuse those writes too.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = public, extensions;

select plan(142);

-- Fixtures by name (tests.id('org A')), callers, tests.spend_as and the client write
-- attempts (tests.write_attempts()) come from 000-setup-test-helpers.

-- ----------------------------------------------------------------- fixtures
do $$
begin
  perform tests.create_organization('org A');
  perform tests.create_organization('org B');

  perform tests.create_user('member of A', tests.id('org A'), 'member');
  perform tests.create_user('admin of A', tests.id('org A'), 'admin');
  perform tests.create_user('owner of A', tests.id('org A'), 'owner');
  perform tests.create_user('member of B', tests.id('org B'), 'member');
  perform tests.create_user('mover', tests.id('org A'), 'member');
  perform tests.create_user('loner', null);

  -- Usage: org A gets 4 rows (member 2, admin 1, mover 1), org B 2 (member 1, mover 1
  -- after moving from A to B).
  perform tests.spend_as(tests.id('member of A'), 'ask_assistant');
  perform tests.spend_as(tests.id('member of A'), 'generate_goal');
  perform tests.spend_as(tests.id('admin of A'), 'generate_leads');
  perform tests.spend_as(tests.id('mover'), 'ask_assistant');
  update public.user_profiles set organization_id = tests.id('org B') where id = tests.id('mover');
  perform tests.spend_as(tests.id('mover'), 'forecast_revenue');
  perform tests.spend_as(tests.id('member of B'), 'analyze_strategy');
end
$$;

-- What postgres sees, to compare each caller's view with.
create table tests.ai_tokens as
  select id, organization_id from public.ai_tokens
  where organization_id in (tests.id('org A'), tests.id('org B'));
create table tests.usage_log as
  select id, organization_id, user_id from public.ai_token_usage_log
  where organization_id in (tests.id('org A'), tests.id('org B'));
create table tests.ai_token_types as select * from public.ai_token_types;
create table tests.ai_plan_allocations as select * from public.ai_plan_allocations;
create table tests.ai_features as select * from public.ai_features;

-- ------------------------------------------------------ the fixtures are as described
select results_eq(
  $$ select count(*)::int from tests.ai_tokens group by organization_id $$,
  $$ values (5), (5) $$,
  'initialize_tokens gave org A and org B five ai_tokens rows each'
);
select results_eq(
  $$ select count(*)::int from tests.usage_log group by organization_id order by 1 $$,
  $$ values (2), (4) $$,
  'the fixtures wrote 4 usage-log rows in org A and 2 in org B'
);
select isnt_empty($$ select * from tests.ai_token_types $$, 'the token type catalog is not empty');
select isnt_empty($$ select * from tests.ai_plan_allocations $$, 'the plan allocation catalog is not empty');
select isnt_empty($$ select * from tests.ai_features $$, 'the feature catalog is not empty');

-- --------------------------------------------------------- RLS and grants, by catalog
select is_empty(
  $$ select c.relname from pg_class c
     where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p') and not c.relrowsecurity
       and (c.relname like 'ai\_%' or c.relname like 'stripe\_%') $$,
  'every table of tokens-client (ai_*, stripe_*) has row level security enabled'
);

-- Exact table privileges: clients may only read (TRUNCATE would skip RLS entirely).
select table_privs_are('public', t.table_name, r.role_name, r.privileges,
         format('%s has exactly %s on public.%s', r.role_name,
                coalesce(nullif(array_to_string(r.privileges, ', '), ''), 'no privileges'), t.table_name))
from unnest(array['ai_plans', 'ai_token_types', 'ai_plan_allocations',
                  'ai_features', 'ai_tokens', 'ai_token_usage_log']) with ordinality t(table_name, n)
cross join (values
  (1, 'anon', '{}'::text[]),
  (2, 'authenticated', '{SELECT}'::text[]),
  (3, 'service_role', '{SELECT,INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER}'::text[])
) r(position, role_name, privileges)
order by t.n, r.position;

-- ------------------------------------------------------------------------ anon
select tests.authenticate_as_anon();

select throws_ok(format('select * from public.%I', t.table_name), '42501',
         format('permission denied for table %s', t.table_name),
         format('anon cannot read %s', t.table_name))
from unnest(array['ai_plans', 'ai_token_types', 'ai_plan_allocations',
                  'ai_features', 'ai_tokens', 'ai_token_usage_log']) t(table_name);

select throws_ok(w.statement, '42501', format('permission denied for table %s', w.table_name),
         format('anon cannot %s %s', w.command, w.table_name))
from tests.write_attempts() w order by w.ordinal;

-- ------------------------------------------------------------- member of org A
select tests.authenticate_as(tests.id('member of A'));

select results_eq(
  $$ select id from public.ai_tokens order by id $$,
  $$ select id from tests.ai_tokens where organization_id = tests.id('org A') order by id $$,
  'member of A sees exactly org A''s five ai_tokens rows'
);
select results_eq(
  $$ select id from public.ai_token_usage_log order by id $$,
  $$ select id from tests.usage_log where user_id = tests.id('member of A') order by id $$,
  'member of A sees exactly their own two usage-log rows'
);
select results_eq($$ select * from public.ai_token_types order by token_type $$,
  $$ select * from tests.ai_token_types order by token_type $$, 'member of A reads the whole token type catalog');
select results_eq($$ select * from public.ai_plan_allocations order by plan, token_type $$,
  $$ select * from tests.ai_plan_allocations order by plan, token_type $$, 'member of A reads all plan allocations');
select results_eq($$ select * from public.ai_features order by feature $$,
  $$ select * from tests.ai_features order by feature $$, 'member of A reads the whole feature catalog');

select throws_ok(w.statement, '42501', format('permission denied for table %s', w.table_name),
         format('member of A cannot %s %s', w.command, w.table_name))
from tests.write_attempts() w order by w.ordinal;

-- -------------------------------------------------------------- admin of org A
select tests.authenticate_as(tests.id('admin of A'));

select results_eq(
  $$ select id from public.ai_tokens order by id $$,
  $$ select id from tests.ai_tokens where organization_id = tests.id('org A') order by id $$,
  'admin of A sees exactly org A''s five ai_tokens rows'
);
select results_eq(
  $$ select id from public.ai_token_usage_log order by id $$,
  $$ select id from tests.usage_log where organization_id = tests.id('org A') order by id $$,
  'admin of A sees all four of org A''s usage-log rows (including a former member''s) and none of org B''s'
);
select results_eq($$ select * from public.ai_token_types order by token_type $$,
  $$ select * from tests.ai_token_types order by token_type $$, 'admin of A reads the whole token type catalog');
select results_eq($$ select * from public.ai_plan_allocations order by plan, token_type $$,
  $$ select * from tests.ai_plan_allocations order by plan, token_type $$, 'admin of A reads all plan allocations');
select results_eq($$ select * from public.ai_features order by feature $$,
  $$ select * from tests.ai_features order by feature $$, 'admin of A reads the whole feature catalog');

select throws_ok(w.statement, '42501', format('permission denied for table %s', w.table_name),
         format('admin of A cannot %s %s', w.command, w.table_name))
from tests.write_attempts() w order by w.ordinal;

-- -------------------------------------------------------------- owner of org A
select tests.authenticate_as(tests.id('owner of A'));

select results_eq(
  $$ select id from public.ai_token_usage_log order by id $$,
  $$ select id from tests.usage_log where organization_id = tests.id('org A') order by id $$,
  'owner of A (no usage of their own) sees all four of org A''s usage-log rows'
);

-- ------------------------------------------------------------- member of org B
select tests.authenticate_as(tests.id('member of B'));

select results_eq(
  $$ select id from public.ai_tokens order by id $$,
  $$ select id from tests.ai_tokens where organization_id = tests.id('org B') order by id $$,
  'member of B sees exactly org B''s five ai_tokens rows'
);
select results_eq(
  $$ select id from public.ai_token_usage_log order by id $$,
  $$ select id from tests.usage_log where user_id = tests.id('member of B') order by id $$,
  'member of B sees exactly their own usage-log row, not the mover''s'
);
select results_eq($$ select * from public.ai_token_types order by token_type $$,
  $$ select * from tests.ai_token_types order by token_type $$, 'member of B reads the whole token type catalog');
select results_eq($$ select * from public.ai_plan_allocations order by plan, token_type $$,
  $$ select * from tests.ai_plan_allocations order by plan, token_type $$, 'member of B reads all plan allocations');
select results_eq($$ select * from public.ai_features order by feature $$,
  $$ select * from tests.ai_features order by feature $$, 'member of B reads the whole feature catalog');

select throws_ok(w.statement, '42501', format('permission denied for table %s', w.table_name),
         format('member of B cannot %s %s', w.command, w.table_name))
from tests.write_attempts() w order by w.ordinal;

-- ------------------------------------------- a member who moved from org A to org B
select tests.authenticate_as(tests.id('mover'));

select results_eq(
  $$ select id from public.ai_token_usage_log order by id $$,
  $$ select id from tests.usage_log
     where user_id = tests.id('mover') and organization_id = tests.id('org B') order by id $$,
  'a member who moved to org B no longer sees their usage in org A'
);

-- ----------------------------------------------------- a user without organization
select tests.authenticate_as(tests.id('loner'));

select is_empty($$ select * from public.ai_tokens $$, 'a user without organization sees no token balance');
select is_empty($$ select * from public.ai_token_usage_log $$, 'a user without organization sees no usage');
select results_eq($$ select * from public.ai_features order by feature $$,
  $$ select * from tests.ai_features order by feature $$, 'a user without organization still reads the feature catalog');

-- ----------------------------------------------------------------- service_role
select tests.authenticate_as_service_role();

select results_eq(
  $$ select id from public.ai_tokens where organization_id in (tests.id('org A'), tests.id('org B')) order by id $$,
  $$ select id from tests.ai_tokens order by id $$,
  'service_role sees the ai_tokens rows of both organizations'
);
select results_eq(
  $$ select id from public.ai_token_usage_log
     where organization_id in (tests.id('org A'), tests.id('org B')) order by id $$,
  $$ select id from tests.usage_log order by id $$,
  'service_role sees the usage of both organizations'
);
select results_eq($$ select * from public.ai_token_types order by token_type $$,
  $$ select * from tests.ai_token_types order by token_type $$, 'service_role reads the whole token type catalog');
select results_eq($$ select * from public.ai_plan_allocations order by plan, token_type $$,
  $$ select * from tests.ai_plan_allocations order by plan, token_type $$, 'service_role reads all plan allocations');
select results_eq($$ select * from public.ai_features order by feature $$,
  $$ select * from tests.ai_features order by feature $$, 'service_role reads the whole feature catalog');

-- service_role writes every table: each statement changes exactly one row.
with changed as (
  insert into public.ai_token_types (token_type, description) values ('tests_type', 'made by a test') returning 1
) select is(count(*)::int, 1, 'service_role can insert ai_token_types') from changed;
with changed as (
  update public.ai_token_types set description = 'changed by a test' where token_type = 'tests_type' returning 1
) select is(count(*)::int, 1, 'service_role can update ai_token_types') from changed;

with changed as (
  insert into public.ai_plan_allocations (plan, token_type, monthly_allocation) values ('enterprise', 'tests_type', 7) returning 1
) select is(count(*)::int, 1, 'service_role can insert ai_plan_allocations') from changed;
with changed as (
  update public.ai_plan_allocations set monthly_allocation = 8
  where plan = 'enterprise' and token_type = 'tests_type' returning 1
) select is(count(*)::int, 1, 'service_role can update ai_plan_allocations') from changed;
with changed as (
  delete from public.ai_plan_allocations where plan = 'enterprise' and token_type = 'tests_type' returning 1
) select is(count(*)::int, 1, 'service_role can delete ai_plan_allocations') from changed;

with changed as (
  insert into public.ai_features (feature, token_type, cost) values ('tests_feature', 'tests_type', 1) returning 1
) select is(count(*)::int, 1, 'service_role can insert ai_features') from changed;
with changed as (
  update public.ai_features set cost = 2 where feature = 'tests_feature' returning 1
) select is(count(*)::int, 1, 'service_role can update ai_features') from changed;
with changed as (
  delete from public.ai_features where feature = 'tests_feature' returning 1
) select is(count(*)::int, 1, 'service_role can delete ai_features') from changed;

with changed as (
  delete from public.ai_token_types where token_type = 'tests_type' returning 1
) select is(count(*)::int, 1, 'service_role can delete ai_token_types') from changed;

with changed as (
  update public.ai_tokens set balance = 1 where organization_id = tests.id('org A') and token_type = 'general' returning 1
) select is(count(*)::int, 1, 'service_role can update ai_tokens') from changed;
with changed as (
  delete from public.ai_tokens where organization_id = tests.id('org A') and token_type = 'forecast' returning 1
) select is(count(*)::int, 1, 'service_role can delete ai_tokens') from changed;
with changed as (
  insert into public.ai_tokens (organization_id, token_type, balance, total_allocated)
  values (tests.id('org A'), 'forecast', 30, 30) returning 1
) select is(count(*)::int, 1, 'service_role can insert ai_tokens') from changed;

with changed as (
  insert into public.ai_token_usage_log
    (organization_id, user_id, token_type, feature_used, tokens_deducted, balance_after, request_id)
  values (tests.id('org B'), null, 'general', 'ask_assistant', 1, 49, 'tests-service-role') returning 1
) select is(count(*)::int, 1, 'service_role can insert ai_token_usage_log') from changed;
with changed as (
  update public.ai_token_usage_log set balance_after = 48
  where organization_id = tests.id('org B') and request_id = 'tests-service-role' returning 1
) select is(count(*)::int, 1, 'service_role can update ai_token_usage_log') from changed;
with changed as (
  delete from public.ai_token_usage_log
  where organization_id = tests.id('org B') and request_id = 'tests-service-role' returning 1
) select is(count(*)::int, 1, 'service_role can delete ai_token_usage_log') from changed;

select tests.clear_authentication();

select * from finish();
rollback;
