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

select plan(84);

-- ------------------------------------------------------------------ helpers
-- Fixtures by name (tests.id('org A')), callers, tests.spend_as and the client write
-- attempts (tests.write_attempts()) come from 000-setup-test-helpers. This file's own
-- helpers are created in schema tests inside this transaction and rolled back with it.

-- ----------------------------------------------------------------- fixtures
do $$
begin
  perform tests.create_organization('org A');
  perform tests.create_organization('org B');
  perform tests.create_user('member of A', tests.id('org A'), 'member');
  perform tests.create_user('admin of A', tests.id('org A'), 'admin');
  perform tests.create_user('member of B', tests.id('org B'), 'member');
  perform tests.spend_as(tests.id('member of A'), 'ask_assistant');
  perform tests.spend_as(tests.id('admin of A'), 'generate_goal');
  perform tests.spend_as(tests.id('member of B'), 'generate_leads');
end
$$;

-- The rows the fixtures own (and the whole catalogs), one digest per table.
create function tests.fingerprints() returns table (table_name text, fingerprint text)
language sql security definer set search_path = '' as $$
  with orgs as (select tests.id('org A') as id union all select tests.id('org B'))
  select 'ai_plans', md5(coalesce(string_agg(t::text, ';' order by t::text), ''))
    from public.ai_plans t
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
  from tests.write_attempts() w order by w.ordinal
$$;

-- Take the grants away as a wall: clients may now write every table, as far as
-- privileges go. Rolled back with the transaction.
grant select, insert, update, delete on public.ai_plans, public.ai_token_types,
  public.ai_plan_allocations, public.ai_features, public.ai_tokens, public.ai_token_usage_log
  to anon, authenticated;

-- ------------------------------------------------------------------------ anon
select tests.authenticate_as_anon();

select is_empty(format('select * from public.%I', t.table_name),
         format('anon sees no row of %s (no policy lets it)', t.table_name))
from unnest(array['ai_plans', 'ai_token_types', 'ai_plan_allocations',
                  'ai_features', 'ai_tokens', 'ai_token_usage_log']) t(table_name);


select * from tests.attempt_writes('anon');

-- ------------------------------------------------------------- member of org A
select tests.authenticate_as(tests.id('member of A'));
select * from tests.attempt_writes('member of A');

-- -------------------------------------------------------------- admin of org A
select tests.authenticate_as(tests.id('admin of A'));
select * from tests.attempt_writes('admin of A');

-- ------------------------------------------------------------- member of org B
select tests.authenticate_as(tests.id('member of B'));
select * from tests.attempt_writes('member of B');

-- ---------------------------------------------------------- nothing has changed
select tests.clear_authentication();

select is(a.fingerprint, b.fingerprint, format('as postgres, %s is unchanged after every attempt', a.table_name))
from tests.fingerprints() a join tests.fingerprints_before b using (table_name)
order by a.table_name;

select * from finish();
rollback;
