-- Who may execute which function, and the rules every function must follow.
--
-- The table tests.intended_grants below lists every function of schemas public and
-- private with the roles that may execute it; a function added without a row there
-- fails the first test. The generic checks (nothing open to PUBLIC or anon, SECURITY
-- DEFINER pinned to search_path = '') query pg_proc, so they judge future functions
-- too, and are shown to catch an offending function at the end.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = public, extensions;

select plan(335);

-- ------------------------------------------------------------------ helpers
-- Callers and fixtures come from 000-setup-test-helpers; this file's own helpers are
-- created in schema tests inside this transaction and rolled back with it.

-- Every function in public and private, whether it is SECURITY DEFINER, and who may
-- execute it. PUBLIC may execute none of them.
create table tests.intended_grants (
  signature text primary key,
  security_definer boolean not null,
  anon boolean not null,
  authenticated boolean not null,
  service_role boolean not null
);
insert into tests.intended_grants values
  -- Admin API: service role only.
  ('public.initialize_tokens(uuid,text)',                         false, false, false, true),
  ('public.grant_tokens(uuid,text,integer,timestamp with time zone,text,text)',
                                                                  false, false, false, true),
  ('public.set_organization_plan(uuid,text,text)',                false, false, false, true),
  ('public.set_enforcement_mode(text,uuid)',                      false, false, false, true),
  ('public.set_rate_limit(integer,integer,uuid,text,text)',       false, false, false, true),
  ('public.refresh_due_tokens()',                                 false, false, false, true),
  ('public.verify_token_ledger(uuid)',                            false, false, false, true),
  -- The user API: signed-in users and the service role.
  ('public.has_enough_tokens(text,uuid)',                         true,  false, true,  true),
  ('public.deduct_tokens(text,uuid,text)',                        true,  false, true,  true),
  ('public.get_token_stats(uuid)',                                true,  false, true,  true),
  ('public.reserve_tokens(text,integer,integer,text,uuid)',       true,  false, true,  true),
  ('public.commit_reservation(uuid,integer)',                     true,  false, true,  true),
  ('public.release_reservation(uuid)',                            true,  false, true,  true),
  ('public.refund_deduction(uuid,text)',                          true,  false, true,  true),
  -- Security invoker: row-level security decides which usage rows count.
  ('public.get_usage_report(uuid,text,timestamp with time zone)', false, false, true,  true),
  -- The membership seam: RLS policies call it as the querying role.
  ('private.memberships()',                                       true,  false, true,  true),
  -- Security-invoker functions (get_usage_report for members; the admin API for the
  -- service role) call these as their caller; they read only the caller's own
  -- memberships or raise a refusal.
  ('private.refuse(integer,text,text,jsonb)',                     false, false, true,  true),
  ('private.is_service_role()',                                   false, false, true,  true),
  ('private.resolve_organization(uuid)',                          false, false, true,  true),
  -- Lifecycle helpers granted to the service role: the security-invoker admin API
  -- (initialize_tokens, grant_tokens, set_organization_plan, set_enforcement_mode,
  -- refresh_due_tokens) runs settle_tokens, plan_allocation, next_refresh,
  -- settlement_due and enforcement_mode as the service role. The others are granted
  -- to it too (it may call them from SQL); they reveal nothing it cannot read anyway.
  ('private.settle_tokens(uuid,text)',                            false, false, false, true),
  ('private.require_organization(uuid)',                          false, false, false, true),
  ('private.require_plan(text)',                                  false, false, false, true),
  ('private.plan_allocation(text,text)',                          false, false, false, true),
  ('private.next_refresh(timestamp with time zone)',              false, false, false, true),
  ('private.settlement_due(uuid,text,timestamp with time zone)',  false, false, false, true),
  ('private.enforcement_mode(uuid)',                              false, false, false, true),
  ('private.membership_role(uuid)',                               false, false, false, true),
  ('private.look_up_feature(text,uuid)',                          false, false, false, true),
  ('private.price_feature(text,uuid)',                            false, false, false, true),
  ('private.settled_view(ai_tokens)',                             false, false, false, true),
  ('private.settled_tokens(ai_tokens)',                           false, false, false, true),
  -- Only called from SECURITY DEFINER functions (as their owner).
  ('private.check_rate_limit(uuid,uuid,text,text)',               false, false, false, false),
  ('private.consume_grants(uuid,text,integer,uuid)',              false, false, false, false),
  ('private.refusal(integer,text,text,jsonb)',                    false, false, false, false),
  ('private.record_refusal(jsonb,uuid,text,text,jsonb)',          false, false, false, false),
  ('private.refusal_response(jsonb,uuid,text,jsonb)',             false, false, false, false),
  ('private.refusal_summary(jsonb)',                              false, false, false, false),
  ('private.open_spend(text,uuid,text)',                          false, false, false, false),
  ('private.policy_refusal(uuid,uuid,text,text,boolean,text)',    false, false, false, false),
  ('private.insufficient_refusal(text,integer,text,ai_tokens)',   false, false, false, false),
  ('private.obtainable(ai_tokens,integer,text)',                  false, false, false, false),
  ('private.reservation_json(ai_token_reservations)',             false, false, false, false),
  ('private.reservation_for_settlement(uuid)',                    false, false, false, false),
  -- Trigger functions (a trigger fires without EXECUTE); the journal's is SECURITY
  -- DEFINER so it is written whoever changes a balance.
  ('private.journal_token_balance()',                             true,  false, false, false),
  ('private.notify_token_alert()',                                false, false, false, false);

-- The functions of public and private that are not part of an extension.
create function tests.own_functions() returns setof oid
language sql stable as $$
  select p.oid
  from pg_catalog.pg_proc p
  where p.pronamespace in ('public'::regnamespace, 'private'::regnamespace)
    and not exists (
      select 1 from pg_catalog.pg_depend d
      where d.classid = 'pg_catalog.pg_proc'::regclass and d.objid = p.oid and d.deptype = 'e'
    )
$$;

create function tests.executable_by_public_or_anon() returns setof text
language sql stable as $$
  select f::regprocedure::text from tests.own_functions() f
  where has_function_privilege('public', f, 'execute') or has_function_privilege('anon', f, 'execute')
  order by 1
$$;

create function tests.security_definer_without_empty_search_path() returns setof text
language sql stable as $$
  select p.oid::regprocedure::text
  from tests.own_functions() f join pg_catalog.pg_proc p on p.oid = f
  where p.prosecdef and not coalesce('search_path=""' = any (p.proconfig), false)
  order by 1
$$;

create function tests.without_search_path() returns setof text
language sql stable as $$
  select p.oid::regprocedure::text
  from tests.own_functions() f join pg_catalog.pg_proc p on p.oid = f
  where not exists (select 1 from unnest(p.proconfig) c where c like 'search_path=%')
  order by 1
$$;

-- "select schema.function(null::type, …)": a call that needs only EXECUTE to start.
create function tests.call_with_nulls(signature text) returns text
language sql stable as $$
  select format('select %I.%I(%s)', n.nspname, p.proname,
           (select coalesce(string_agg(format('null::%s', format_type(t, null)), ', ' order by i), '')
            from unnest(p.proargtypes) with ordinality a(t, i)))
  from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
  where p.oid = to_regprocedure(signature)
$$;

-- The message PostgreSQL gives a role without EXECUTE (or without USAGE on the schema).
create function tests.denial(signature text, role_name text) returns text
language sql stable as $$
  select case when not has_schema_privilege(role_name, n.nspname, 'usage')
           then format('permission denied for schema %s', n.nspname)
           else format('permission denied for function %s', p.proname) end
  from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
  where p.oid = to_regprocedure(signature)
$$;

-- An organization for the calls that need one (without ai_tokens rows).
select from tests.create_organization('tests organization', 'pro', initialized => false);

-- --------------------------------------------------- every function is declared
select set_eq(
  $$ select f::regprocedure::text from tests.own_functions() f $$,
  $$ select coalesce(to_regprocedure(signature)::text, signature || ' (missing)') from tests.intended_grants $$,
  'every function in public and private is listed in tests.intended_grants, and every listed one exists'
);

-- ------------------------------------------------------- the intended grants
select is(has_function_privilege(r.role_name, to_regprocedure(g.signature), 'execute'), r.allowed,
          format('%s %s execute %s', r.role_name, case when r.allowed then 'may' else 'may not' end, g.signature))
from tests.intended_grants g
cross join lateral (values
  (1, 'public', false),
  (2, 'anon', g.anon),
  (3, 'authenticated', g.authenticated),
  (4, 'service_role', g.service_role)
) r(position, role_name, allowed)
where to_regprocedure(g.signature) is not null
order by g.signature, r.position;

-- A security-invoker function runs its helpers as its caller: granting the function
-- is not enough, every private helper it calls must be granted to the same roles.
select tests.authenticate_as_service_role();
select lives_ok(
  $$ select * from public.get_usage_report(tests.id('tests organization')) $$,
  'service_role can run get_usage_report for an organization it names'
);
select tests.clear_authentication();

select is(p.prosecdef, g.security_definer,
          format('%s is %s', g.signature, case when g.security_definer then 'SECURITY DEFINER' else 'SECURITY INVOKER' end))
from tests.intended_grants g join pg_catalog.pg_proc p on p.oid = to_regprocedure(g.signature)
order by g.signature;

-- ------------------------------------------------------------ generic rules
select is_empty($$ select * from tests.executable_by_public_or_anon() $$,
  'no function in public or private is executable by PUBLIC or anon');
select is_empty($$ select * from tests.security_definer_without_empty_search_path() $$,
  'every SECURITY DEFINER function in public and private pins search_path = ''''');
select is_empty($$ select * from tests.without_search_path() $$,
  'every function in public and private sets its search_path (advisor lint function_search_path_mutable)');

select schema_privs_are('private', 'public', '{}'::text[], 'PUBLIC has no privilege on schema private');
select schema_privs_are('private', 'anon', '{}'::text[], 'anon has no privilege on schema private');
select schema_privs_are('private', 'authenticated', '{USAGE}'::text[], 'authenticated may only use schema private (for the policies)');
select schema_privs_are('private', 'service_role', '{USAGE}'::text[], 'service_role may only use schema private');

-- ----------------------------------------------- default privileges of new functions
-- The first migration revokes Supabase's default EXECUTE on new functions; a function
-- a later migration forgets to revoke must still not be open to the API roles.
create function public.tests_new_function() returns integer language sql set search_path = '' as $$ select 1 $$;
create function private.tests_new_function() returns integer language sql set search_path = '' as $$ select 1 $$;

select is(has_function_privilege(r.role_name, 'private.tests_new_function()'::regprocedure, 'execute'), false,
          format('a new function in private is not executable by %s until granted', r.role_name))
from (values (1, 'public'), (2, 'anon'), (3, 'authenticated')) r(position, role_name)
order by r.position;
select is(has_function_privilege('public', 'public.tests_new_function()'::regprocedure, 'execute'), false,
          'a new function in public is not executable by PUBLIC until granted');

-- Known problem of the local stack, not of the migration: `tokens stack up` re-runs
-- bootstrap.sql on every start, and its "alter default privileges in schema public
-- grant all on functions to anon, authenticated" undoes the migration's revoke.
select is(has_function_privilege(r.role_name, 'public.tests_new_function()'::regprocedure, 'execute'), false,
          format('a new function in public is not executable by %s until granted', r.role_name))
from (values (1, 'anon'), (2, 'authenticated')) r(position, role_name)
order by r.position;

drop function public.tests_new_function();
drop function private.tests_new_function();

-- -------------------------------------------- the generic rules catch offenders
create function public.tests_unsafe_definer() returns integer
language sql security definer as $$ select 1 $$;
grant execute on function public.tests_unsafe_definer() to anon;

select results_eq($$ select * from tests.executable_by_public_or_anon() $$, $$ values ('tests_unsafe_definer()') $$,
  'the check flags a function granted to anon');
select results_eq($$ select * from tests.security_definer_without_empty_search_path() $$, $$ values ('tests_unsafe_definer()') $$,
  'the check flags a SECURITY DEFINER function without search_path = ''''');
select results_eq($$ select * from tests.without_search_path() $$, $$ values ('tests_unsafe_definer()') $$,
  'the check flags a function without search_path');

drop function public.tests_unsafe_definer();

-- ------------------------------ calling without EXECUTE fails before the function runs
-- The calls and the expected messages are worked out as postgres: anon may not even
-- look up names in schema private.
create table tests.denied_calls as
  select g.signature, r.role_name,
         tests.call_with_nulls(g.signature) as statement,
         tests.denial(g.signature, r.role_name) as message
  from tests.intended_grants g
  cross join lateral (values ('anon', g.anon), ('authenticated', g.authenticated), ('service_role', g.service_role))
    r(role_name, allowed)
  where not r.allowed;

select tests.authenticate_as_anon();
select throws_ok(c.statement, '42501', c.message, format('anon cannot call %s', c.signature))
from tests.denied_calls c where c.role_name = 'anon' order by c.signature;

select tests.authenticate_as(gen_random_uuid());  -- a signed-in user of no organization
select throws_ok(c.statement, '42501', c.message, format('authenticated cannot call %s', c.signature))
from tests.denied_calls c where c.role_name = 'authenticated' order by c.signature;

select tests.authenticate_as_service_role();
select throws_ok(c.statement, '42501', c.message, format('service_role cannot call %s', c.signature))
from tests.denied_calls c where c.role_name = 'service_role' order by c.signature;

select tests.clear_authentication();

select * from finish();
rollback;
