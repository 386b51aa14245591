-- The second wall: the RLS policies alone refuse every write by anon and authenticated.
--
-- 001-rls-matrix shows that the grants refuse them ("permission denied"). Here the
-- transaction grants anon and authenticated every write (and anon SELECT), so only the
-- policies stand in the way: a policy that let a client write would fail this file even
-- while the grants hide it. Inserts must fail WITH CHECK; updates and deletes must find
-- no row to change; and afterwards, as postgres, no data has changed.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = public, extensions;

select plan(98);

-- ------------------------------------------------------------------ helpers
-- Created inside this transaction and rolled back with it.
create schema tests;
grant usage on schema tests to anon, authenticated, service_role;
alter default privileges in schema tests grant select on tables to anon, authenticated, service_role;
alter default privileges in schema tests grant execute on functions to anon, authenticated, service_role;

-- Fixtures by name: tests.id('org A') is the uuid created for 'org A'. Volatile on
-- purpose: the planner pre-evaluates stable functions with a snapshot that can miss
-- fixtures created earlier in the same DO block.
create table tests.fixtures (name text primary key, id uuid not null);

create function tests.id(name text) returns uuid
language plpgsql volatile as $$
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

-- An organization on a plan, with its ai_tokens rows (initialize_tokens, as postgres).
create function tests.create_organization(name text, plan text default 'pro') returns uuid
language plpgsql as $$
declare
  new_id uuid := gen_random_uuid();
begin
  insert into public.organizations (id, name, plan) values (new_id, name, plan);
  insert into tests.fixtures values (name, new_id);
  perform public.initialize_tokens(new_id);
  return new_id;
end
$$;

-- A signed-up user; with a profile in an organization (or none) unless profile is false.
create function tests.create_user(
  name text, organization text default null, role text default 'member', profile boolean default true
) returns uuid
language plpgsql as $$
declare
  new_id uuid := gen_random_uuid();
begin
  insert into auth.users (id, aud, role, email)
  values (new_id, 'authenticated', 'authenticated', new_id || '@example.test');
  if profile then
    insert into public.user_profiles (id, organization_id, full_name, role)
    values (new_id, case when organization is not null then tests.id(organization) end, name, create_user.role);
  end if;
  insert into tests.fixtures values (name, new_id);
  return new_id;
end
$$;

-- Act as a caller the way PostgREST does: the JWT's role becomes the database role and
-- its claims go to request.jwt.claims. clear_authentication returns to postgres.
create function tests.authenticate_as(name text) returns void
language plpgsql as $$
begin
  perform set_config('request.jwt.claims',
    json_build_object('sub', tests.id(name), 'role', 'authenticated', 'aud', 'authenticated')::text, true);
  perform set_config('role', 'authenticated', true);
end
$$;

create function tests.authenticate_as_anon() returns void
language plpgsql as $$
begin
  perform set_config('request.jwt.claims', '{"role": "anon"}', true);
  perform set_config('role', 'anon', true);
end
$$;

create function tests.clear_authentication() returns void
language plpgsql as $$
begin
  perform set_config('role', 'none', true);
  perform set_config('request.jwt.claims', '', true);
end
$$;

-- A user spends tokens through the API, leaving a usage-log row signed with their id.
-- A spending refusal (402/403/429) is returned, not raised, since the token lifecycle:
-- a fixture that was refused stops the file instead of silently writing nothing.
create function tests.spend_as(name text, feature text) returns void
language plpgsql as $$
declare
  result jsonb;
begin
  perform tests.authenticate_as(name);
  result := public.deduct_tokens(feature);
  if result ? 'code' then
    raise exception 'tests.spend_as: % was refused %: %', name, feature, result;
  end if;
  perform tests.clear_authentication();
end
$$;

-- ----------------------------------------------------------------- fixtures
do $$
begin
  perform tests.create_organization('org A');
  perform tests.create_organization('org B');
  perform tests.create_user('member of A', 'org A', 'member');
  perform tests.create_user('admin of A', 'org A', 'admin');
  perform tests.create_user('member of B', 'org B', 'member');
  perform tests.create_user('unprofiled user', profile => false);
  perform tests.spend_as('member of A', 'ask_assistant');
  perform tests.spend_as('admin of A', 'generate_goal');
  perform tests.spend_as('member of B', 'generate_leads');
end
$$;

-- The rows the fixtures own (and the whole catalogs), one digest per table.
create function tests.fingerprints() returns table (table_name text, fingerprint text)
language sql security definer set search_path = '' as $$
  with orgs as (select tests.id('org A') as id union all select tests.id('org B'))
  select 'organizations', md5(coalesce(string_agg(t::text, ';' order by t::text), ''))
    from public.organizations t where t.id in (select id from orgs)
  union all select 'user_profiles', md5(coalesce(string_agg(t::text, ';' order by t::text), ''))
    from public.user_profiles t where t.id in (select f.id from tests.fixtures f)
  union all select 'ai_token_types', md5(coalesce(string_agg(t::text, ';' order by t::text), ''))
    from public.ai_token_types t
  union all select 'ai_plan_allocations', md5(coalesce(string_agg(t::text, ';' order by t::text), ''))
    from public.ai_plan_allocations t
  union all select 'ai_features', md5(coalesce(string_agg(t::text, ';' order by t::text), ''))
    from public.ai_features t
  union all select 'ai_tokens', md5(coalesce(string_agg(t::text, ';' order by t::text), ''))
    from public.ai_tokens t where t.organization_id in (select id from orgs)
  union all select 'ai_token_usage_log', md5(coalesce(string_agg(t::text, ';' order by t::text), ''))
    from public.ai_token_usage_log t where t.organization_id in (select id from orgs)
$$;
create table tests.fingerprints_before as select * from tests.fingerprints();

-- How many rows a statement changed, run as the current caller.
create function tests.rows_changed(statement text) returns bigint
language plpgsql as $$
declare
  changed bigint;
begin
  execute statement;
  get diagnostics changed = row_count;
  return changed;
end
$$;

-- Every write a client might try, one per table and command. Each is a valid row or
-- change, so only a privilege can stop it.
create table tests.write_attempts (
  position serial primary key,
  table_name text not null,
  command text not null,
  statement text not null
);
insert into tests.write_attempts (table_name, command, statement) values
  ('organizations', 'insert', $$insert into public.organizations (name, plan) values ('Intruders', 'enterprise')$$),
  ('organizations', 'update', $$update public.organizations set plan = 'enterprise'$$),
  ('organizations', 'delete', $$delete from public.organizations$$),
  ('user_profiles', 'insert', $$insert into public.user_profiles (id, organization_id, role) values (tests.id('unprofiled user'), tests.id('org A'), 'owner')$$),
  ('user_profiles', 'update', $$update public.user_profiles set role = 'owner'$$),
  ('user_profiles', 'delete', $$delete from public.user_profiles$$),
  ('ai_token_types', 'insert', $$insert into public.ai_token_types (token_type) values ('free_lunch')$$),
  ('ai_token_types', 'update', $$update public.ai_token_types set description = 'changed'$$),
  ('ai_token_types', 'delete', $$delete from public.ai_token_types$$),
  ('ai_plan_allocations', 'insert', $$insert into public.ai_plan_allocations (plan, token_type, monthly_allocation) values ('starter', 'general', 1000000)$$),
  ('ai_plan_allocations', 'update', $$update public.ai_plan_allocations set monthly_allocation = 1000000$$),
  ('ai_plan_allocations', 'delete', $$delete from public.ai_plan_allocations$$),
  ('ai_features', 'insert', $$insert into public.ai_features (feature, token_type, cost) values ('free_lunch', 'general', 1)$$),
  ('ai_features', 'update', $$update public.ai_features set cost = 1$$),
  ('ai_features', 'delete', $$delete from public.ai_features$$),
  ('ai_tokens', 'insert', $$insert into public.ai_tokens (organization_id, token_type, balance, total_allocated) values (tests.id('org A'), 'general', 1000000, 1000000)$$),
  ('ai_tokens', 'update', $$update public.ai_tokens set balance = balance + 1000000$$),
  ('ai_tokens', 'delete', $$delete from public.ai_tokens$$),
  ('ai_token_usage_log', 'insert', $$insert into public.ai_token_usage_log (organization_id, user_id, token_type, feature_used, tokens_deducted, balance_after) values (tests.id('org A'), tests.id('member of A'), 'general', 'ask_assistant', 1, 0)$$),
  ('ai_token_usage_log', 'update', $$update public.ai_token_usage_log set tokens_deducted = 1000$$),
  ('ai_token_usage_log', 'delete', $$delete from public.ai_token_usage_log$$);

-- Every write attempt as the current caller: inserts must fail the policies' WITH
-- CHECK, updates and deletes must find no row they may change.
create function tests.attempt_writes(caller text) returns setof text
language sql as $$
  select case w.command
    when 'insert' then throws_ok(w.statement, '42501',
      format('new row violates row-level security policy for table "%s"', w.table_name),
      format('%s cannot insert into %s: the policies refuse the new row', caller, w.table_name))
    else is(tests.rows_changed(w.statement), 0::bigint,
      format('%s cannot %s %s: the policies leave no row to change', caller, w.command, w.table_name))
    end
  from tests.write_attempts w order by w.position
$$;

-- Take the grants away as a wall: clients may now write every table, as far as
-- privileges go. Rolled back with the transaction.
grant select, insert, update, delete on public.organizations, public.user_profiles, public.ai_token_types,
  public.ai_plan_allocations, public.ai_features, public.ai_tokens, public.ai_token_usage_log
  to anon, authenticated;

-- ------------------------------------------------------------------------ anon
select tests.authenticate_as_anon();

select is_empty(format('select * from public.%I', t.table_name),
         format('anon sees no row of %s (no policy lets it)', t.table_name))
from unnest(array['organizations', 'user_profiles', 'ai_token_types', 'ai_plan_allocations',
                  'ai_features', 'ai_tokens', 'ai_token_usage_log']) t(table_name);


select * from tests.attempt_writes('anon');

-- ------------------------------------------------------------- member of org A
select tests.authenticate_as('member of A');
select * from tests.attempt_writes('member of A');

-- -------------------------------------------------------------- admin of org A
select tests.authenticate_as('admin of A');
select * from tests.attempt_writes('admin of A');

-- ------------------------------------------------------------- member of org B
select tests.authenticate_as('member of B');
select * from tests.attempt_writes('member of B');

-- ---------------------------------------------------------- nothing has changed
select tests.clear_authentication();

select is(a.fingerprint, b.fingerprint, format('as postgres, %s is unchanged after every attempt', a.table_name))
from tests.fingerprints() a join tests.fingerprints_before b using (table_name)
order by a.table_name;

select * from finish();
rollback;
