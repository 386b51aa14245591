-- Who may execute which function, and the rules every function must follow.
--
-- The table tests.intended_grants below lists every function of tokens-client (schema
-- ai_tokens_internal, and our API in public) with the roles that may execute it; a function added without a row there
-- fails the first test. The generic checks (nothing open to PUBLIC or anon, SECURITY
-- DEFINER pinned to search_path = '') query pg_proc, so they judge future functions
-- too, and are shown to catch an offending function at the end.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = public, extensions;

select plan(524);

-- ------------------------------------------------------------------ helpers
-- Callers and fixtures come from 000-setup-test-helpers; this file's own helpers are
-- created in schema tests inside this transaction and rolled back with it.

-- Every function of tokens-client, whether it is SECURITY DEFINER, and who may
-- execute it. PUBLIC may execute none of them.
create table tests.intended_grants (
  signature text primary key,
  security_definer boolean not null,
  anon boolean not null,
  authenticated boolean not null,
  service_role boolean not null
);
insert into tests.intended_grants values
  -- Admin API: service role only (security invoker: it has the table rights).
  ('public.initialize_tokens(uuid,text)',                         false, false, false, true),
  ('public.grant_tokens(uuid,text,integer,timestamp with time zone,text,text)',
                                                                  false, false, false, true),
  ('public.set_organization_plan(uuid,text,text)',                false, false, false, true),
  ('public.set_enforcement_mode(text,uuid)',                      false, false, false, true),
  ('public.set_rate_limit(integer,integer,uuid,text,text)',       false, false, false, true),
  ('public.refresh_due_tokens()',                                 false, false, false, true),
  ('public.verify_token_ledger(uuid)',                            false, false, false, true),
  ('public.set_webhook_endpoint(uuid,text,text,text[],text,integer,integer,integer)',
                                                                  false, false, false, true),
  ('public.delete_webhook_endpoint(uuid)',                        false, false, false, true),
  ('public.claim_webhook_deliveries(integer,integer)',            false, false, false, true),
  ('public.complete_webhook_delivery(uuid,uuid,boolean,integer,text)', false, false, false, true),
  ('public.apply_subscription_event(uuid,text,text,boolean,text,timestamp with time zone)',
                                                                  false, false, false, true),
  -- The user API: signed-in users and the service role.
  ('public.has_enough_tokens(text,uuid)',                         true,  false, true,  true),
  ('public.deduct_tokens(text,uuid,text,integer)',                        true,  false, true,  true),
  ('public.get_token_stats(uuid)',                                true,  false, true,  true),
  ('public.reserve_tokens(text,integer,integer,text,uuid)',       true,  false, true,  true),
  ('public.commit_reservation(uuid,integer)',                     true,  false, true,  true),
  ('public.release_reservation(uuid)',                            true,  false, true,  true),
  ('public.refund_deduction(uuid,text)',                          true,  false, true,  true),
  ('public.get_usage_report(uuid,text,timestamp with time zone)', true,  false, true,  true),
  -- PostgREST's db-pre-request hook runs as every request's role, anon included.
  ('public.ai_tokens_check_request()',                            false, true,  true,  true),
  -- The membership seam: RLS policies call it as the querying role.
  ('ai_tokens_internal.memberships()',                            true,  false, true,  true),
  -- The other seams read or write the host's tables as their owner; only our own
  -- functions (as their owner) and the service role's admin API call them.
  ('ai_tokens_internal.organization_exists(uuid)',                true,  false, false, true),
  ('ai_tokens_internal.organization_plan(uuid)',                  true,  false, false, true),
  ('ai_tokens_internal.change_organization_plan(uuid,text)',      true,  false, false, true),
  ('ai_tokens_internal.organization_name(uuid)',                  true,  false, false, true),
  ('ai_tokens_internal.user_display_name(uuid)',                  true,  false, false, true),
  -- Raising refusals and resolving the caller's own organization: safe for any
  -- signed-in caller (they read only the caller's memberships).
  ('ai_tokens_internal.refuse(integer,text,text,jsonb)',          false, false, true,  true),
  ('ai_tokens_internal.is_service_role()',                        false, false, true,  true),
  ('ai_tokens_internal.require_argument(boolean,text)',           false, false, true,  true),
  ('ai_tokens_internal.resolve_organization(uuid)',               false, false, true,  true),
  -- What the security-invoker admin API (as the service role) calls.
  ('ai_tokens_internal.require_service_role(text)',               false, false, false, true),
  ('ai_tokens_internal.require_organization(uuid)',               false, false, false, true),
  ('ai_tokens_internal.require_plan(text)',                       false, false, false, true),
  ('ai_tokens_internal.balance_ceiling()',                        false, false, false, true),
  ('ai_tokens_internal.lock(text,text)',                          false, false, false, true),
  ('ai_tokens_internal.journal_as(jsonb)',                        false, false, false, true),
  ('ai_tokens_internal.enforcement_mode(uuid)',                   false, false, false, true),
  ('ai_tokens_internal.plan_allocation(text,text)',               false, false, false, true),
  ('ai_tokens_internal.open_account(uuid,text)',                  false, false, false, true),
  ('ai_tokens_internal.unopened_account(uuid,text)',              false, false, false, true),
  ('ai_tokens_internal.settle_tokens(uuid,text)',                 false, false, false, true),
  ('ai_tokens_internal.next_refresh(timestamp with time zone)',   false, false, false, true),
  ('ai_tokens_internal.next_settlement(uuid,text,timestamp with time zone)', false, false, false, true),
  ('ai_tokens_internal.webhook_alert_kinds()',                    false, false, false, true),
  ('ai_tokens_internal.webhook_retry_delay(integer,integer,integer)', false, false, false, true),
  -- Granted to the service role for SQL callers; they reveal nothing it cannot read.
  ('ai_tokens_internal.membership_role(uuid)',                    false, false, false, true),
  ('ai_tokens_internal.settled_view(ai_tokens)',                  false, false, false, true),
  ('ai_tokens_internal.settled_tokens(ai_tokens)',                false, false, false, true),
  -- Only called from SECURITY DEFINER functions (as their owner).
  ('ai_tokens_internal.consume_grants(uuid,text,integer,uuid)',   false, false, false, false),
  ('ai_tokens_internal.spend_context(text,uuid,text,boolean)',    false, false, false, false),
  ('ai_tokens_internal.policy_refusal(uuid,uuid,text,text,boolean,text,bigint,integer,integer)', false, false, false, false),
  ('ai_tokens_internal.take_rate_slot(uuid,uuid,bigint,integer,integer)', false, false, false, false),
  ('ai_tokens_internal.give_back_rate_slot(uuid,uuid,bigint)',    false, false, false, false),
  ('ai_tokens_internal.refusal(integer,text,text,jsonb)',         false, false, false, false),
  ('ai_tokens_internal.raise_refusal(jsonb)',                     false, false, false, false),
  ('ai_tokens_internal.not_in_plan_refusal(text,text,text)',      false, false, false, false),
  ('ai_tokens_internal.record_refusal(jsonb,uuid,text,text,jsonb)', false, false, false, false),
  ('ai_tokens_internal.refusal_response(jsonb,uuid,text,jsonb)',  false, false, false, false),
  ('ai_tokens_internal.refusal_summary(jsonb)',                   false, false, false, false),
  ('ai_tokens_internal.insufficient_refusal(text,integer,text,ai_tokens)', false, false, false, false),
  ('ai_tokens_internal.obtainable(ai_tokens,integer,text)',       false, false, false, false),
  ('ai_tokens_internal.reservation_json(ai_token_reservations)',  false, false, false, false),
  ('ai_tokens_internal.reservation_for_settlement(uuid)',         false, false, false, false),
  -- Trigger functions (a trigger fires without EXECUTE); the journal's is SECURITY
  -- DEFINER so it is written whoever changes a balance.
  ('ai_tokens_internal.journal_token_balance()',                  true,  false, false, false),
  ('ai_tokens_internal.notify_token_alert()',                     false, false, false, false),
  ('ai_tokens_internal.enqueue_alert_webhooks()',                 true,  false, false, false),
  ('ai_tokens_internal.track_period_peak()',                      true,  false, false, false),
  ('ai_tokens_internal.settle_by()',                              false, false, false, false),
  -- The usage rollup's and the journal's rename, SECURITY DEFINER so that they follow
  -- whoever writes the log or renames a token type.
  ('ai_tokens_internal.rename_ledger_token_type()',               true,  false, false, false),
  ('ai_tokens_internal.roll_up_usage()',                          true,  false, false, false),
  ('ai_tokens_internal.clear_usage_rollup()',                     true,  false, false, false);

-- tokens-client's functions: all of schema ai_tokens_internal, and the functions of
-- public whose comment says 'tokens-client: ...' (the host app's own functions in public
-- are not ours to judge; a pytest check keeps every public function of
-- supabase/schemas/ commented).
create function tests.own_functions() returns setof oid
language sql stable as $$
  select p.oid
  from pg_catalog.pg_proc p
  where p.pronamespace = 'ai_tokens_internal'::regnamespace
     or (p.pronamespace = 'public'::regnamespace
         and pg_catalog.obj_description(p.oid, 'pg_proc') like 'tokens-client:%')
$$;

create function tests.executable_by_public_or_anon() returns setof text
language sql stable as $$
  select f::regprocedure::text from tests.own_functions() f
  where has_function_privilege('public', f, 'execute')
     or (has_function_privilege('anon', f, 'execute')
         and f not in (select to_regprocedure(g.signature) from tests.intended_grants g where g.anon))
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
  'every function of tokens-client is listed in tests.intended_grants, and every listed one exists'
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
-- is not enough, every internal helper it calls must be granted to the same roles.
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
  'no function of tokens-client is executable by PUBLIC, or by anon unless listed (the pre-request hook)');
select is_empty($$ select * from tests.security_definer_without_empty_search_path() $$,
  'every SECURITY DEFINER function of tokens-client pins search_path = ''''');
select is_empty($$ select * from tests.without_search_path() $$,
  'every function of tokens-client sets its search_path (advisor lint function_search_path_mutable)');

select schema_privs_are('ai_tokens_internal', 'public', '{}'::text[], 'PUBLIC has no privilege on schema ai_tokens_internal');
select schema_privs_are('ai_tokens_internal', 'anon', '{}'::text[], 'anon has no privilege on schema ai_tokens_internal');
select schema_privs_are('ai_tokens_internal', 'authenticated', '{USAGE}'::text[], 'authenticated may only use schema ai_tokens_internal (for the policies)');
select schema_privs_are('ai_tokens_internal', 'service_role', '{USAGE}'::text[], 'service_role may only use schema ai_tokens_internal');

-- -------------------------------------------- the generic rules catch offenders
create function public.tests_unsafe_definer() returns integer
language sql security definer as $$ select 1 $$;
comment on function public.tests_unsafe_definer() is 'tokens-client: an offender';
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
-- look up names in schema ai_tokens_internal.
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
