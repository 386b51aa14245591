-- Privileges of the lifecycle API and tables: who may execute each function, who may
-- touch each new table, RLS on everywhere, security definer functions pinned.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = public, extensions;
select plan(12);

-- The tests.* helpers (fixtures, callers, tests.refusal) come from 000-setup-test-helpers.

select results_eq(
  $$select f, has_function_privilege('anon', f, 'execute'), has_function_privilege('authenticated', f, 'execute'),
           has_function_privilege('service_role', f, 'execute')
    from unnest(array[
      'public.deduct_tokens(text, uuid, text, integer)', 'public.has_enough_tokens(text, uuid)', 'public.get_token_stats(uuid)',
      'public.reserve_tokens(text, integer, integer, text, uuid)', 'public.commit_reservation(uuid, integer)',
      'public.release_reservation(uuid)', 'public.refund_deduction(uuid, text)',
      'public.initialize_tokens(uuid, text)', 'public.grant_tokens(uuid, text, integer, timestamp with time zone, text, text)',
      'public.set_organization_plan(uuid, text, text)', 'public.set_enforcement_mode(text, uuid)',
      'public.refresh_due_tokens()', 'public.verify_token_ledger(uuid)',
      'public.set_rate_limit(integer, integer, uuid, text, text)']) f$$,
  $$values
      ('public.deduct_tokens(text, uuid, text, integer)', false, true, true),
      ('public.has_enough_tokens(text, uuid)', false, true, true),
      ('public.get_token_stats(uuid)', false, true, true),
      ('public.reserve_tokens(text, integer, integer, text, uuid)', false, true, true),
      ('public.commit_reservation(uuid, integer)', false, true, true),
      ('public.release_reservation(uuid)', false, true, true),
      ('public.refund_deduction(uuid, text)', false, true, true),
      ('public.initialize_tokens(uuid, text)', false, false, true),
      ('public.grant_tokens(uuid, text, integer, timestamp with time zone, text, text)', false, false, true),
      ('public.set_organization_plan(uuid, text, text)', false, false, true),
      ('public.set_enforcement_mode(text, uuid)', false, false, true),
      ('public.refresh_due_tokens()', false, false, true),
      ('public.verify_token_ledger(uuid)', false, false, true),
      ('public.set_rate_limit(integer, integer, uuid, text, text)', false, false, true)$$,
  'user functions: authenticated and service_role; admin functions: service_role only; anon: nothing');

select is_empty(
  $$select p.oid::regprocedure from pg_proc p
    where (p.pronamespace = 'ai_tokens_internal'::regnamespace
           or (p.pronamespace = 'public'::regnamespace and obj_description(p.oid, 'pg_proc') like 'tokens-client:%'))
      and has_function_privilege('public', p.oid, 'execute')$$,
  'no function of tokens-client is executable by PUBLIC');

-- authenticated executes the membership seam (RLS policies call it as the querying
-- role) and four helpers that expose nothing but the caller's own membership:
-- is_service_role reads the caller's role, resolve_organization checks a claimed
-- organization against the caller's memberships, refuse and require_argument only
-- raise. None of the other seams (they read the host's tables) is among them.
select results_eq(
  $$select p.oid::regprocedure::text from pg_proc p
    where p.pronamespace = 'ai_tokens_internal'::regnamespace and has_function_privilege('authenticated', p.oid, 'execute')
    order by 1$$,
  $$values ('ai_tokens_internal.is_service_role()'), ('ai_tokens_internal.memberships()'), ('ai_tokens_internal.refuse(integer,text,text,jsonb)'),
           ('ai_tokens_internal.require_argument(boolean,text)'), ('ai_tokens_internal.resolve_organization(uuid)')$$,
  'of the internal helpers, authenticated executes only the membership seam and four that raise or resolve its own organization');

select is_empty(
  $$select p.oid::regprocedure from pg_proc p
    where p.prosecdef and (p.pronamespace = 'ai_tokens_internal'::regnamespace
           or (p.pronamespace = 'public'::regnamespace and obj_description(p.oid, 'pg_proc') like 'tokens-client:%'))
      and not coalesce(p.proconfig @> array['search_path=""'], false)$$,
  'every security definer function pins search_path to the empty string');

select is_empty(
  $$select c.relname from pg_class c
    where c.relnamespace = 'public'::regnamespace and c.relkind = 'r' and not c.relrowsecurity
      and (c.relname like 'ai\_%' or c.relname like 'stripe\_%')$$,
  'RLS is on for every table of tokens-client');

select results_eq(
  $$select t, has_table_privilege('anon', 'public.' || t, 'select'),
           has_table_privilege('authenticated', 'public.' || t, 'select'),
           has_table_privilege('authenticated', 'public.' || t, 'insert, update, delete, truncate')
    from unnest(array['ai_token_ledger', 'ai_token_grants', 'ai_token_reservations', 'ai_token_grant_usage',
                      'ai_plan_change_events', 'ai_rate_limits', 'ai_token_enforcement_modes', 'ai_token_alerts',
                      'ai_token_refresh_failures']) t$$,
  $$values ('ai_token_ledger', false, true, false), ('ai_token_grants', false, true, false),
           ('ai_token_reservations', false, true, false), ('ai_token_grant_usage', false, false, false),
           ('ai_plan_change_events', false, false, false), ('ai_rate_limits', false, true, false),
           ('ai_token_enforcement_modes', false, true, false), ('ai_token_alerts', false, true, false),
           ('ai_token_refresh_failures', false, false, false)$$,
  'anon reads none of the new tables; authenticated reads some (RLS decides which rows) and writes none');

select results_eq(
  $$select t, has_table_privilege('service_role', 'public.' || t, 'select, insert'),
           has_table_privilege('service_role', 'public.' || t, 'update, delete, truncate')
    from unnest(array['ai_token_ledger', 'ai_token_grants', 'ai_token_reservations', 'ai_token_grant_usage',
                      'ai_plan_change_events', 'ai_rate_limits', 'ai_token_enforcement_modes', 'ai_token_alerts',
                      'ai_token_refresh_failures']) t$$,
  $$values ('ai_token_ledger', true, false), ('ai_token_grants', true, true),
           ('ai_token_reservations', true, true), ('ai_token_grant_usage', true, true),
           ('ai_plan_change_events', true, true), ('ai_rate_limits', true, true),
           ('ai_token_enforcement_modes', true, true), ('ai_token_alerts', true, true),
           ('ai_token_refresh_failures', true, true)$$,
  'the service role manages the new tables; the journal is append-only even for it');

-- An authenticated caller without membership gets the documented errors, not data.
select tests.create_user('stranger', profile => false) as stranger \gset
select tests.authenticate_as(:'stranger');
select is(tests.refusal($$select public.reserve_tokens('generate_quest', 5)$$) -> 'detail' ->> 'reason', 'not_a_member',
  'reserve_tokens without a membership is refused (403 not_a_member)');
select tests.clear_authentication();

-- Bad input raises (HTTP 4xx from PostgREST) and writes nothing, not even a refusal record.
select tests.create_organization('Bad input X') as org_x \gset
select tests.create_user('member X', :'org_x') as member_x \gset
select tests.authenticate_as(:'member_x');
select results_eq(
  $$select f ->> 'sqlstate', f -> 'detail' ->> 'reason' from (values
      (tests.refusal($q$select public.deduct_tokens('teleport')$q$)),
      (tests.refusal($q$select public.deduct_tokens('generate_goal', null, '')$q$)),
      (tests.refusal($q$select public.reserve_tokens('teleport', 5)$q$)),
      (tests.refusal($q$select public.deduct_tokens('generate_goal', gen_random_uuid())$q$))) v (f)$$,
  $$values ('PT404'::text, 'unknown_feature'::text), ('PT400', 'invalid_request'), ('PT404', 'unknown_feature'), ('PT403', 'not_a_member')$$,
  'unknown features, bad request ids and foreign organizations raise');
select tests.clear_authentication();
select is_empty(format($$select 1 from public.ai_token_alerts where organization_id = %L
                         union all select 1 from public.ai_token_usage_log where organization_id = %L$$, :'org_x', :'org_x'),
  'and nothing was written');
select tests.authenticate_as_service_role();
select is(tests.refusal($$select public.reserve_tokens('generate_quest', 5)$$) -> 'detail' ->> 'field', 'organization_id',
  'the service role must name the organization (400)');
select tests.clear_authentication();

select is_empty(
  $$select s.relname from pg_class s
    join pg_depend d on d.classid = 'pg_class'::regclass and d.objid = s.oid and d.deptype in ('a', 'i')
    join pg_class t on t.oid = d.refobjid
    where s.relkind = 'S' and t.relnamespace = 'public'::regnamespace
      and (t.relname like 'ai\_%' or t.relname like 'stripe\_%')
      and (has_sequence_privilege('anon', s.oid, 'usage, select, update')
           or has_sequence_privilege('authenticated', s.oid, 'usage, select, update'))$$,
  'no sequence of tokens-client''s tables is usable by anon or authenticated (Supabase''s defaults grant them)');

select * from finish();
rollback;
