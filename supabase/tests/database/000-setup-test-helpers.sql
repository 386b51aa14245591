-- The helpers every pgTAP file shares, in schema tests: fixtures by name, callers as
-- PostgREST sends them, and what a statement raises or returns.
--
-- This file runs first (pg_prove and `supabase test db` run the files in name order) and,
-- unlike the others, COMMITS: the schema stays, so each file after it only calls the
-- helpers inside its own `begin; … rollback;`. Running it again replaces every helper
-- with this file's version. To run one file alone, name this one first:
--   pg_prove --dbname "$SUPABASE_DB_URL" supabase/tests/database/{000-setup-test-helpers,101-ledger.test}.sql
--
-- The helpers follow the rules the migrations follow, so that `supabase db advisors`
-- stays clean with the schema in place, run before or after the tests: each pins
-- search_path = '' and names everything with its schema (lint
-- function_search_path_mutable); none is SECURITY DEFINER (they act as their caller,
-- which is what switching callers needs). Schema tests is not exposed by PostgREST (it
-- serves public and graphql_public), so no client can reach it.
--
-- A file may add its own tables and functions to tests inside its transaction; they are
-- rolled back with it.

begin;
set local client_min_messages = warning;  -- not "schema tests already exists, skipping"

create schema if not exists tests;
comment on schema tests is 'pgTAP test helpers (supabase/tests/database/000-setup-test-helpers.sql); not part of the product.';
grant usage on schema tests to anon, authenticated, service_role;
-- What a file adds to tests is readable and executable by the callers it acts as.
alter default privileges in schema tests grant select on tables to anon, authenticated, service_role;
alter default privileges in schema tests grant execute on functions to anon, authenticated, service_role;

-- Start from no helper at all: one renamed or changed since the last run leaves nothing
-- behind (create or replace cannot change a function's result type or argument names).
do $$
declare
  helper regprocedure;
begin
  for helper in select p.oid from pg_catalog.pg_proc p where p.pronamespace = 'tests'::regnamespace loop
    execute format('drop routine %s', helper);
  end loop;
end
$$;

-- ------------------------------------------------------------------ fixtures by name
-- tests.id('org A') is the uuid created for 'org A'. The rows are written inside each
-- file's transaction and never committed.
create table if not exists tests.fixtures (name text primary key, id uuid not null);
grant select on tests.fixtures to anon, authenticated, service_role;

-- Volatile on purpose: the planner pre-evaluates stable functions with a snapshot that
-- can miss fixtures created earlier in the same DO block.
create or replace function tests.id(name text) returns uuid
language plpgsql volatile set search_path = '' as $$
declare
  found_id uuid;
begin
  select f.id into found_id from tests.fixtures f where f.name = id.name;
  if found_id is null then
    raise exception 'tests.id: no fixture named %', name;
  end if;
  return found_id;
end
$$;

-- The helpers write the host's tables the way the guide has them (organizations with a
-- plan, user_profiles with organization_id and full_name), and adapt to what a host app
-- may differ in: a plan column that is an enum, a user_profiles without a role column,
-- a handle_new_user trigger that already created the profile.

-- An organization on a plan, with its ai_tokens rows (initialize_tokens, as the current
-- caller: postgres) unless initialized is false. Returns its id, also tests.id(name).
create or replace function tests.create_organization(
  name text, plan text default 'pro', initialized boolean default true
) returns uuid
language plpgsql set search_path = '' as $$
declare
  new_id uuid := pg_catalog.gen_random_uuid();
  plan_type text;
begin
  select pg_catalog.format_type(a.atttypid, a.atttypmod) into plan_type
  from pg_catalog.pg_attribute a
  where a.attrelid = 'public.organizations'::regclass and a.attname = 'plan' and not a.attisdropped;
  execute pg_catalog.format('insert into public.organizations (id, name, plan) values ($1, $2, $3::%s)', plan_type)
    using new_id, create_organization.name, create_organization.plan;
  insert into tests.fixtures (name, id) values (create_organization.name, new_id);
  if initialized then
    perform public.initialize_tokens(new_id);
  end if;
  return new_id;
end
$$;

-- A signed-up user (auth.users) with a profile in an organization (or in none), unless
-- profile is false. Returns its id, also tests.id(name); name is the profile's full_name.
-- role is written when user_profiles has a role column.
create or replace function tests.create_user(
  name text, organization_id uuid default null, role text default 'member', profile boolean default true
) returns uuid
language plpgsql set search_path = '' as $$
declare
  new_id uuid := pg_catalog.gen_random_uuid();
begin
  insert into auth.users (id, aud, role, email)
  values (new_id, 'authenticated', 'authenticated', new_id::text || '@example.test');
  if profile then
    insert into public.user_profiles as p (id, organization_id, full_name)
    values (new_id, create_user.organization_id, create_user.name)
    on conflict (id) do update set organization_id = excluded.organization_id, full_name = excluded.full_name;
    if exists (select 1 from pg_catalog.pg_attribute a
               where a.attrelid = 'public.user_profiles'::regclass and a.attname = 'role' and not a.attisdropped) then
      execute 'update public.user_profiles set role = $1 where id = $2' using create_user.role, new_id;
    end if;
  else
    delete from public.user_profiles p where p.id = new_id;  -- made by a handle_new_user trigger
  end if;
  insert into tests.fixtures (name, id) values (create_user.name, new_id);
  return new_id;
end
$$;

-- ------------------------------------------------------------------------- callers
-- Act as a caller the way PostgREST does: the JWT's role becomes the database role and
-- its claims go to request.jwt.claims, both for the rest of the transaction.
-- clear_authentication returns to postgres.
create or replace function tests.authenticate_as(user_id uuid) returns void
language plpgsql set search_path = '' as $$
begin
  if user_id is null then
    raise exception 'tests.authenticate_as: no user id (tests.authenticate_as_service_role() acts as the service role)';
  end if;
  perform pg_catalog.set_config('request.jwt.claims',
    pg_catalog.json_build_object('sub', user_id, 'role', 'authenticated', 'aud', 'authenticated')::text, true);
  perform pg_catalog.set_config('role', 'authenticated', true);
end
$$;

create or replace function tests.authenticate_as_anon() returns void
language plpgsql set search_path = '' as $$
begin
  perform pg_catalog.set_config('request.jwt.claims', '{"role": "anon"}', true);
  perform pg_catalog.set_config('role', 'anon', true);
end
$$;

create or replace function tests.authenticate_as_service_role() returns void
language plpgsql set search_path = '' as $$
begin
  perform pg_catalog.set_config('request.jwt.claims', '{"role": "service_role"}', true);
  perform pg_catalog.set_config('role', 'service_role', true);
end
$$;

create or replace function tests.clear_authentication() returns void
language plpgsql set search_path = '' as $$
begin
  perform pg_catalog.set_config('role', 'none', true);
  perform pg_catalog.set_config('request.jwt.claims', '', true);
end
$$;

-- A user spends tokens through the API, leaving a usage-log row signed with their id,
-- and the caller is postgres again. A spending refusal (402/403/429) is returned, not
-- raised, since the token lifecycle: a fixture that was refused stops the file instead
-- of silently writing nothing.
create or replace function tests.spend_as(user_id uuid, feature text) returns void
language plpgsql set search_path = '' as $$
declare
  result jsonb;
begin
  perform tests.authenticate_as(user_id);
  result := public.deduct_tokens(feature);
  if result ? 'code' then
    raise exception 'tests.spend_as: % was refused %: %',
      coalesce((select f.name from tests.fixtures f where f.id = user_id), user_id::text), feature, result;
  end if;
  perform tests.clear_authentication();
end
$$;

-- ----------------------------------------------------- what a statement raises or returns
-- Each runs statement as the current caller, with search_path = '': name every object
-- with its schema (public.deduct_tokens, not deduct_tokens).

-- What a statement raises, as PostgREST reports it: {sqlstate, message, detail (the JSON
-- detail parsed; other text as a string)}; null when it succeeds.
create or replace function tests.refusal(statement text) returns jsonb
language plpgsql set search_path = '' as $$
declare
  error_code text;
  error_message text;
  error_detail text;
begin
  execute statement;
  return null;
exception when others then
  get stacked diagnostics error_code = returned_sqlstate, error_message = message_text,
                          error_detail = pg_exception_detail;
  return pg_catalog.jsonb_build_object('sqlstate', error_code, 'message', error_message,
    'detail', case when error_detail like '{%' then error_detail::jsonb
                   else pg_catalog.to_jsonb(nullif(error_detail, '')) end);
end
$$;

-- What a call answers: its jsonb result, or {raised: sqlstate, message} when it raises.
create or replace function tests.answer(statement text) returns jsonb
language plpgsql set search_path = '' as $$
declare
  result jsonb;
  error_code text;
  error_message text;
begin
  execute statement into result;
  return result;
exception when others then
  get stacked diagnostics error_code = returned_sqlstate, error_message = message_text;
  return pg_catalog.jsonb_build_object('raised', error_code, 'message', error_message);
end
$$;

-- A spending refusal deduct_tokens returns instead of raising, as PostgREST answers it:
-- {http_status (from response.status), code, message, hint, details (the JSON text,
-- parsed)}. Anything else cannot pass for one: a call that raises gives {raised:
-- sqlstate, message}, a result that is not exactly PostgREST's error body (code,
-- message, details as a string, hint) gives {returned: result}.
create or replace function tests.returned_refusal(statement text) returns jsonb
language plpgsql set search_path = '' as $$
declare
  body jsonb;
  error_code text;
  error_message text;
begin
  perform pg_catalog.set_config('response.status', '', true);
  execute statement into body;
  if pg_catalog.jsonb_typeof(body) is distinct from 'object'
     or (select pg_catalog.array_agg(k order by k) from pg_catalog.jsonb_object_keys(body) k)
        <> array['code', 'details', 'hint', 'message']
     or pg_catalog.jsonb_typeof(body -> 'details') <> 'string' then
    return pg_catalog.jsonb_build_object('returned', body);
  end if;
  return pg_catalog.jsonb_build_object(
    'http_status', nullif(pg_catalog.current_setting('response.status', true), '')::integer,
    'code', body -> 'code', 'message', body -> 'message', 'hint', body -> 'hint',
    'details', (body ->> 'details')::jsonb);
exception when others then
  get stacked diagnostics error_code = returned_sqlstate, error_message = message_text;
  return pg_catalog.jsonb_build_object('raised', error_code, 'message', error_message);
end
$$;

-- --------------------------------------------------------------- client write attempts
-- Every write a client might try, one per table and command (001 and 004). Each is a
-- valid row or change, so only a privilege (001) or a policy (004) can stop it. The
-- statements name fixtures of those files: 'org A', 'member of A'. Only our tables: the
-- host's organizations and user_profiles follow the host's own rules.
create or replace function tests.write_attempts()
returns table (ordinal integer, table_name text, command text, statement text)
language sql immutable set search_path = '' as $$
  select w.ordinal, w.table_name, w.command, w.statement
  from (values
    (1, 'ai_plans', 'insert', $w$insert into public.ai_plans (plan) values ('free_lunch')$w$),
    (2, 'ai_plans', 'update', $w$update public.ai_plans set description = 'changed'$w$),
    (3, 'ai_plans', 'delete', $w$delete from public.ai_plans$w$),
    (7, 'ai_token_types', 'insert', $w$insert into public.ai_token_types (token_type) values ('free_lunch')$w$),
    (8, 'ai_token_types', 'update', $w$update public.ai_token_types set description = 'changed'$w$),
    (9, 'ai_token_types', 'delete', $w$delete from public.ai_token_types$w$),
    (10, 'ai_plan_allocations', 'insert', $w$insert into public.ai_plan_allocations (plan, token_type, monthly_allocation) values ('starter', 'general', 1000000)$w$),
    (11, 'ai_plan_allocations', 'update', $w$update public.ai_plan_allocations set monthly_allocation = 1000000$w$),
    (12, 'ai_plan_allocations', 'delete', $w$delete from public.ai_plan_allocations$w$),
    (13, 'ai_features', 'insert', $w$insert into public.ai_features (feature, token_type, cost) values ('free_lunch', 'general', 1)$w$),
    (14, 'ai_features', 'update', $w$update public.ai_features set cost = 1$w$),
    (15, 'ai_features', 'delete', $w$delete from public.ai_features$w$),
    (16, 'ai_tokens', 'insert', $w$insert into public.ai_tokens (organization_id, token_type, balance, total_allocated) values (tests.id('org A'), 'general', 1000000, 1000000)$w$),
    (17, 'ai_tokens', 'update', $w$update public.ai_tokens set balance = balance + 1000000$w$),
    (18, 'ai_tokens', 'delete', $w$delete from public.ai_tokens$w$),
    (19, 'ai_token_usage_log', 'insert', $w$insert into public.ai_token_usage_log (organization_id, user_id, token_type, feature_used, tokens_deducted, balance_after) values (tests.id('org A'), tests.id('member of A'), 'general', 'ask_assistant', 1, 0)$w$),
    (20, 'ai_token_usage_log', 'update', $w$update public.ai_token_usage_log set tokens_deducted = 1000$w$),
    (21, 'ai_token_usage_log', 'delete', $w$delete from public.ai_token_usage_log$w$)
  ) w(ordinal, table_name, command, statement)
  order by w.ordinal
$$;

grant execute on all functions in schema tests to anon, authenticated, service_role;

commit;

-- ============================================================ the helpers themselves
-- Checked in a transaction of their own, rolled back: pgTAP and the fixtures below do
-- not stay.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = public, extensions;

select plan(24);

select is_empty($$ select * from tests.fixtures $$,
  'no fixture was ever committed (each file rolls its fixtures back)');

select functions_are('tests', array[
    'id', 'create_organization', 'create_user', 'authenticate_as', 'authenticate_as_anon',
    'authenticate_as_service_role', 'clear_authentication', 'spend_as', 'refusal', 'answer',
    'returned_refusal', 'write_attempts'],
  'schema tests holds exactly the shared helpers');

select is_empty(
  $$ select p.oid::regprocedure from pg_catalog.pg_proc p
     where p.pronamespace = 'tests'::regnamespace
       and not coalesce('search_path=""' = any (p.proconfig), false) $$,
  'every helper pins search_path = '''' (advisor lint function_search_path_mutable)');
select is_empty(
  $$ select p.oid::regprocedure from pg_catalog.pg_proc p
     where p.pronamespace = 'tests'::regnamespace and p.prosecdef $$,
  'no helper is SECURITY DEFINER: each acts as its caller');
select is_empty(
  $$ select p.oid::regprocedure, r.role_name from pg_catalog.pg_proc p
     cross join (values ('anon'), ('authenticated'), ('service_role')) r(role_name)
     where p.pronamespace = 'tests'::regnamespace and not has_function_privilege(r.role_name, p.oid, 'execute') $$,
  'anon, authenticated and service_role may execute every helper (the files call them as those callers)');

-- Fixtures.
do $$
begin
  perform tests.create_organization('helpers org');
  perform tests.create_organization('helpers starter org', 'starter', initialized => false);
  perform tests.create_user('helpers member', tests.id('helpers org'));
  perform tests.create_user('helpers admin', tests.id('helpers org'), 'admin');
  perform tests.create_user('helpers stranger', profile => false);
  perform tests.create_user('helpers starter member', tests.id('helpers starter org'));
end
$$;

select results_eq(
  $$ select o.plan::text, count(t.*)::integer from public.organizations o left join public.ai_tokens t on t.organization_id = o.id
     where o.id in (tests.id('helpers org'), tests.id('helpers starter org')) group by o.plan order by o.plan $$,
  $$ values ('pro', 5), ('starter', 0) $$,
  'create_organization creates an organization on its plan, with its ai_tokens rows unless initialized is false');
select results_eq(
  $$ select p.full_name, p.organization_id, p.role from public.user_profiles p
     where p.id in (tests.id('helpers member'), tests.id('helpers admin')) order by p.full_name $$,
  $$ values ('helpers admin', tests.id('helpers org'), 'admin'), ('helpers member', tests.id('helpers org'), 'member') $$,
  'create_user gives a user a profile in the organization, with the role (member by default)');
select results_eq(
  $$ select u.aud::text, (select count(*)::integer from public.user_profiles p where p.id = u.id) from auth.users u
     where u.id = tests.id('helpers stranger') $$,
  $$ values ('authenticated', 0) $$,
  'create_user with profile => false signs a user up without a profile');
select throws_ok($$ select tests.id('nobody') $$, 'P0001', 'tests.id: no fixture named nobody',
  'tests.id refuses a name no fixture has');

-- Callers.
select tests.authenticate_as(tests.id('helpers member'));
select results_eq(
  $$ select current_user::text collate "default", auth.uid(), auth.role() $$,
  $$ values ('authenticated', tests.id('helpers member'), 'authenticated') $$,
  'authenticate_as: the authenticated role, with the user''s id as auth.uid()');
select results_eq($$ select distinct organization_id from public.ai_tokens $$, $$ values (tests.id('helpers org')) $$,
  'authenticate_as: the policies see the user as a member of their organization');
select tests.authenticate_as_anon();
select results_eq($$ select current_user::text collate "default", auth.uid(), auth.role() $$, $$ values ('anon', null::uuid, 'anon') $$,
  'authenticate_as_anon: the anon role, without a user');
select tests.authenticate_as_service_role();
select results_eq($$ select current_user::text collate "default", auth.uid(), auth.role() $$,
  $$ values ('service_role', null::uuid, 'service_role') $$,
  'authenticate_as_service_role: the service_role role, without a user');
select tests.clear_authentication();
select results_eq($$ select current_user::text collate "default", current_setting('request.jwt.claims', true) $$, $$ values ('postgres', '') $$,
  'clear_authentication: postgres again, without claims');
select throws_ok($$ select tests.authenticate_as(null) $$, 'P0001',
  'tests.authenticate_as: no user id (tests.authenticate_as_service_role() acts as the service role)',
  'authenticate_as refuses a missing user id instead of acting as nobody');

select tests.spend_as(tests.id('helpers member'), 'ask_assistant');
select results_eq(
  $$ select current_user::text collate "default", l.user_id, l.feature_used from public.ai_token_usage_log l
     where l.organization_id = tests.id('helpers org') $$,
  $$ values ('postgres', tests.id('helpers member'), 'ask_assistant') $$,
  'spend_as spends as the user (a usage row signed with their id) and returns to postgres');
select throws_like(
  format('select tests.spend_as(%L, %L)', tests.id('helpers member'), 'make_coffee'),
  'Unknown feature',
  'spend_as lets a raised refusal through');
select throws_like(
  format('select tests.spend_as(%L, %L)', tests.id('helpers starter member'), 'ask_assistant'),
  'tests.spend_as: helpers starter member was refused ask_assistant: %PT403%',
  'spend_as raises on a returned refusal instead of writing nothing silently');

-- What a statement raises or returns.
select is(tests.refusal($$ select 1 $$), null, 'refusal: null when the statement succeeds');
select is(
  tests.refusal($$ select public.initialize_tokens(null) $$),
  '{"sqlstate": "PT400", "message": "organization_id is required",
    "detail": {"reason": "invalid_request", "field": "organization_id"}}'::jsonb,
  'refusal: the SQLSTATE, message and JSON detail of what the statement raises');
select is(
  tests.refusal($$ insert into tests.fixtures values ('helpers org', gen_random_uuid()) $$),
  '{"sqlstate": "23505", "message": "duplicate key value violates unique constraint \"fixtures_pkey\"",
    "detail": "Key (name)=(helpers org) already exists."}'::jsonb,
  'refusal: a detail that is not JSON comes as a string');
select is(tests.answer($$ select '{"a": 1}'::jsonb $$), '{"a": 1}'::jsonb, 'answer: the result of a call that succeeds');
select is(tests.answer($$ select 1 / 0 $$), '{"raised": "22012", "message": "division by zero"}'::jsonb,
  'answer: {raised, message} when it raises');
select is(tests.returned_refusal($$ select '{"success": true}'::jsonb $$), '{"returned": {"success": true}}'::jsonb,
  'returned_refusal: a result that is not PostgREST''s error body cannot pass for a refusal');

select * from finish();
rollback;
