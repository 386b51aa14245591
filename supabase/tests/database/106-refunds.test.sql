-- Refunds: refund_deduction gives the tokens of a usage row back exactly once, journaled;
-- purchased tokens go back to their grant; only admins and the service role refund.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = public, extensions;
select plan(16);

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
insert into public.organizations (id, name, plan) values (:'org_a', 'Refunds A', 'pro'), (:'org_b', 'Refunds B', 'pro');
insert into public.user_profiles (id, organization_id, role) values
  (:'owner_a', :'org_a', 'owner'), (:'member_a', :'org_a', 'member'), (:'owner_b', :'org_b', 'owner');
select from public.initialize_tokens(:'org_a');
select from public.initialize_tokens(:'org_b');

select pg_temp.act_as(:'member_a');
select public.deduct_tokens('generate_goal') ->> 'usage_id' as usage_1 \gset

select is(pg_temp.failure(format($$select public.refund_deduction(%L, 'failed AI call')$$, :'usage_1')) -> 'detail' ->> 'reason',
  'admin_required', 'a plain member cannot refund (403 admin_required)');
select pg_temp.act_as(:'owner_b');
select is(pg_temp.failure(format($$select public.refund_deduction(%L, 'failed AI call')$$, :'usage_1')) -> 'detail' ->> 'reason',
  'usage_not_found', 'an admin of another organization gets 404: the usage row is not revealed');

select pg_temp.act_as(:'owner_a');
select public.refund_deduction(:'usage_1', 'failed AI call') as refund_1 \gset
select is((:'refund_1'::jsonb) - 'refunded_at',
  jsonb_build_object('usage_id', :'usage_1', 'organization_id', :'org_a', 'token_type', 'goal_generation',
    'feature', 'generate_goal', 'tokens_refunded', 3, 'restored_to_purchased', 0, 'remaining_balance', 20,
    'reason', 'failed AI call'),
  'an owner refunds a deduction of their organization');
select pg_temp.act_as_postgres();
select results_eq(
  format($$select kind, delta, balance_after, usage_id::text, reason, actor::text from public.ai_token_ledger
           where organization_id = %L and token_type = 'goal_generation' order by id desc limit 1$$, :'org_a'),
  format($$values ('refund'::text, 3, 20, %L::text, 'failed AI call'::text, %L::text)$$, :'usage_1', :'owner_a'),
  'the refund is journaled with the usage id, the reason and who refunded');
select results_eq(
  format($$select refunded_at is not null, refunded_by::text, refund_reason from public.ai_token_usage_log where id = %L$$, :'usage_1'),
  format($$values (true, %L::text, 'failed AI call'::text)$$, :'owner_a'),
  'the usage row records the refund');

select pg_temp.act_as(:'owner_a');
select is(pg_temp.failure(format($$select public.refund_deduction(%L, 'again')$$, :'usage_1')) -> 'detail' ->> 'reason',
  'already_refunded', 'a second refund of the same row is refused (409 already_refunded)');
select pg_temp.act_as(null);
select is(pg_temp.failure(format($$select public.refund_deduction(%L)$$, :'usage_1')) ->> 'sqlstate',
  'PT409', 'also for the service role');
select is((select balance from public.ai_tokens where organization_id = :'org_a' and token_type = 'goal_generation'), 20,
  'the tokens were given back once');
select is(pg_temp.failure(format($$select public.refund_deduction(%L)$$, gen_random_uuid())) -> 'detail' ->> 'reason',
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
select pg_temp.act_as_postgres();
update public.ai_token_grants set expires_at = now() - interval '1 second' where id = :'grant_id';
select pg_temp.act_as(null);
select is((public.refund_deduction(:'usage_3') ->> 'restored_to_purchased')::integer, 0,
  'tokens of an expired grant are not restored to it');
select results_eq(
  format($$select balance, purchased_balance from public.ai_tokens where organization_id = %L and token_type = 'goal_generation'$$, :'org_a'),
  $$values (3, 0)$$,
  'the expired grant lost its 9 remaining tokens; the 3 refunded tokens came back as allowance');

-- A committed reservation is refunded like a deduction.
select pg_temp.act_as(:'member_a');
select public.reserve_tokens('generate_quest', 3) ->> 'reservation_id' as hold \gset
select public.commit_reservation(:'hold', 2) ->> 'usage_id' as usage_4 \gset
select pg_temp.act_as(:'owner_a');
select is((public.refund_deduction(:'usage_4') ->> 'tokens_refunded')::integer, 2, 'a committed reservation can be refunded');
select pg_temp.act_as_postgres();
select is_empty('select * from public.verify_token_ledger()', 'the ledger is consistent after the refunds');

select * from finish();
rollback;
