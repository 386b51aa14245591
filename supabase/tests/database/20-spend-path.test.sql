-- The spend path's bookkeeping (issue 11): ai_tokens.settle_after says when lazy
-- maintenance is due without subqueries, and every writer keeps it no later than that;
-- ai_token_usage_daily follows the usage log whoever writes it, and get_usage_report
-- reads it for whole days; the default seams are PL/pgSQL; verify_token_ledger reports
-- a late settle_after and a rollup that differs from the log.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = public, extensions;
select plan(28);

-- The tests.* helpers (fixtures, callers, tests.refusal) come from 000-setup-test-helpers.

select tests.create_organization('Path A') as org_a \gset
select tests.create_user('owner A', :'org_a', 'owner') as owner_a, tests.create_user('member A', :'org_a') as member_a \gset
update public.ai_rate_limits set max_requests = 1000;

-- ------------------------------------------------------------------ settle_after
select tests.authenticate_as(:'member_a');
select from public.deduct_tokens('generate_goal');
select tests.clear_authentication();
select is((select settle_after from public.ai_tokens where organization_id = :'org_a' and token_type = 'goal_generation'),
          (select refresh_date from public.ai_tokens where organization_id = :'org_a' and token_type = 'goal_generation'),
          'a row opened on first use is due at its refresh date');

select tests.authenticate_as(:'member_a');
select public.reserve_tokens('generate_quest', 2, 60) as hold \gset
select tests.clear_authentication();
select is((select settle_after from public.ai_tokens where organization_id = :'org_a' and token_type = 'goal_generation'),
          ((:'hold'::jsonb) ->> 'expires_at')::timestamptz,
          'an active hold brings settle_after forward to its expiry');

select tests.authenticate_as_service_role();
select public.grant_tokens(:'org_a', 'goal_generation', 5, now() + interval '30 seconds', 'pack') as pack \gset
select tests.clear_authentication();
select is((select settle_after from public.ai_tokens where organization_id = :'org_a' and token_type = 'goal_generation'),
          ((:'pack'::jsonb) ->> 'expires_at')::timestamptz,
          'a grant that expires sooner brings it forward again');

update public.ai_token_reservations set expires_at = now() + interval '10 seconds'
where id = ((:'hold'::jsonb) ->> 'reservation_id')::uuid;
select is((select settle_after from public.ai_tokens where organization_id = :'org_a' and token_type = 'goal_generation'),
          now() + interval '10 seconds', 'an expiry moved by hand is followed too');

update public.ai_tokens set refresh_date = now() - interval '1 minute'
where organization_id = :'org_a' and token_type = 'goal_generation';
select ok((select settle_after <= now() from public.ai_tokens where organization_id = :'org_a' and token_type = 'goal_generation'),
          'a refresh date moved into the past by hand makes the row due at once');
select tests.authenticate_as(:'member_a');
select is((public.deduct_tokens('generate_goal') ->> 'success')::boolean, true, 'the next spend settles the row');
select tests.clear_authentication();
select ok((select refresh_date > now() and period_started_at <= now() from public.ai_tokens
           where organization_id = :'org_a' and token_type = 'goal_generation'), 'the refresh happened');
select is((select settle_after from public.ai_tokens where organization_id = :'org_a' and token_type = 'goal_generation'),
          now() + interval '10 seconds', 'and settle_after is computed again: the hold, still active, comes first');

select tests.authenticate_as(:'member_a');
select from public.release_reservation(((:'hold'::jsonb) ->> 'reservation_id')::uuid);
select tests.clear_authentication();
update public.ai_token_grants set expires_at = null where organization_id = :'org_a';
update public.ai_tokens set settle_after = now() - interval '1 second'
where organization_id = :'org_a' and token_type = 'goal_generation';
select ai_tokens_internal.settle_tokens(:'org_a', 'goal_generation') is not null as settled \gset
select is((select settle_after from public.ai_tokens where organization_id = :'org_a' and token_type = 'goal_generation'),
          (select refresh_date from public.ai_tokens where organization_id = :'org_a' and token_type = 'goal_generation'),
          'with the hold released and the grant kept for ever, the refresh date is next');

select tests.authenticate_as_service_role();
select is_empty(format('select * from public.verify_token_ledger(%L)', :'org_a'), 'the books balance');
select tests.clear_authentication();

-- The journal has no foreign key on token_type (a KEY SHARE lock on the shared row per
-- spend); a token type renamed in the catalog is renamed in it by a trigger.
update public.ai_token_types set token_type = 'goal_making' where token_type = 'goal_generation';
select is((select count(*) from public.ai_token_ledger where token_type = 'goal_generation'), 0::bigint,
  'a renamed token type is renamed in the journal');
select tests.authenticate_as_service_role();
select is_empty(format('select * from public.verify_token_ledger(%L)', :'org_a'), 'and the books still balance');
select tests.clear_authentication();
update public.ai_token_types set token_type = 'goal_generation' where token_type = 'goal_making';
update public.ai_token_grants set expires_at = now() + interval '20 seconds' where organization_id = :'org_a';
update public.ai_tokens set settle_after = refresh_date where organization_id = :'org_a' and token_type = 'goal_generation';
select tests.authenticate_as_service_role();
select results_eq(format('select violation, details ->> ''message'' from public.verify_token_ledger(%L)', :'org_a'),
  $$values ('settle_after_late'::text, 'settle_after is later than the first moment maintenance is due'::text)$$,
  'verify_token_ledger reports a settle_after later than what is due (a refresh would be skipped)');
select tests.clear_authentication();
select ai_tokens_internal.settle_tokens(:'org_a', 'goal_generation') is not null as settled \gset
update public.ai_tokens t set settle_after = ai_tokens_internal.next_settlement(t.organization_id, t.token_type, t.refresh_date)
where organization_id = :'org_a';

-- ------------------------------------------------------------- the usage rollup
select tests.authenticate_as(:'owner_a');
select from generate_series(1, 3) i cross join lateral public.deduct_tokens('ask_assistant', null, 'roll-' || i) r;
select tests.clear_authentication();
select results_eq(
  format($$select feature, uses, tokens from public.ai_token_usage_daily
           where organization_id = %L and user_id = %L and uses <> 0 order by feature$$, :'org_a', :'owner_a'),
  $$values ('ask_assistant'::text, 3::bigint, 3::bigint)$$,
  'each spend adds one use and its tokens to the day''s row of its user and feature');

update public.ai_token_usage_log set created_at = now() - interval '3 days'
where organization_id = :'org_a' and request_id = 'roll-1';
select results_eq(
  format($$select day, uses from public.ai_token_usage_daily
           where organization_id = %L and user_id = %L and uses <> 0 order by day$$, :'org_a', :'owner_a'),
  format($$values (((now() - interval '3 days') at time zone 'UTC')::date, 1::bigint),
                  ((now() at time zone 'UTC')::date, 2::bigint)$$),
  'a log row moved to another day (by hand) moves in the rollup');
delete from public.ai_token_usage_log where organization_id = :'org_a' and request_id = 'roll-2';
select is((select sum(uses) from public.ai_token_usage_daily where organization_id = :'org_a' and user_id = :'owner_a'),
          2::numeric, 'a log row deleted leaves the rollup');
insert into public.ai_token_usage_log (organization_id, user_id, token_type, feature_used, tokens_deducted, balance_after, created_at)
select :'org_a', :'owner_a', 'general', 'ask_assistant', 7, 1, now() - interval '1 day' from generate_series(1, 4);
select is((select tokens from public.ai_token_usage_daily where organization_id = :'org_a' and user_id = :'owner_a'
           and day = ((now() - interval '1 day') at time zone 'UTC')::date), 28::bigint,
          'rows inserted by hand in bulk are rolled up too');
delete from public.ai_token_usage_log where organization_id = :'org_a' and tokens_deducted = 7;

-- get_usage_report: whole days from the rollup, the day `since` falls in from the log.
select tests.authenticate_as(:'owner_a');
select results_eq(
  format($$select key, uses, tokens from public.get_usage_report(%L, 'feature', null) order by key$$, :'org_a'),
  format($$select feature_used, count(*), sum(tokens_deducted)::bigint from public.ai_token_usage_log
           where organization_id = %L group by 1 order by 1$$, :'org_a'),
  'the report without since equals the log''s own totals');
select results_eq(
  format($$select key, uses from public.get_usage_report(%L, 'feature', now() - interval '1 second') order by key$$, :'org_a'),
  $$values ('ask_assistant'::text, 1::bigint), ('generate_goal', 2)$$,
  'since within today: today''s spends after it (roll-1 was moved three days back)');
select tests.clear_authentication();
update public.ai_token_usage_log set created_at = now() - interval '2 hours' where organization_id = :'org_a' and request_id = 'roll-3';
select tests.authenticate_as(:'owner_a');
select is_empty(format($$select * from public.get_usage_report(%L, 'feature', now() - interval '1 hour')
                        where key = 'ask_assistant'$$, :'org_a'),
  'a spend before since on the same day is left out');
select results_eq(
  format($$select key::date, uses from public.get_usage_report(%L, 'day', now() - interval '4 days') order by 1$$, :'org_a'),
  format($$select (created_at at time zone 'UTC')::date, count(*) from public.ai_token_usage_log
           where organization_id = %L and created_at >= now() - interval '4 days' group by 1 order by 1$$, :'org_a'),
  'by day over four days: the log''s own counts');
select tests.clear_authentication();

update public.ai_token_usage_daily set uses = uses + 1 where organization_id = :'org_a' and user_id = :'owner_a' and uses > 0;
select tests.authenticate_as_service_role();
select ok((select count(*) > 0 from public.verify_token_ledger(:'org_a') where violation = 'usage_rollup_mismatch'),
  'verify_token_ledger reports a rollup that differs from the log');
select tests.clear_authentication();

-- A hold taken in off mode exists before its balance row: the row, opened later, is due
-- at the hold's expiry.
select tests.create_organization('Path B') as org_b \gset
select tests.create_user('member B', :'org_b') as member_b \gset
select tests.authenticate_as_service_role();
select from public.set_enforcement_mode('off', :'org_b');
select tests.authenticate_as(:'member_b');
select public.reserve_tokens('generate_quest', 2, 120) as off_hold \gset
select tests.authenticate_as_service_role();
select from public.set_enforcement_mode('inherit', :'org_b');
select tests.authenticate_as(:'member_b');
select from public.deduct_tokens('generate_goal');
select tests.clear_authentication();
select is((select settle_after from public.ai_tokens where organization_id = :'org_b' and token_type = 'goal_generation'),
          ((:'off_hold'::jsonb) ->> 'expires_at')::timestamptz,
          'a row opened after a hold of its type is due at the hold''s expiry');

-- The daily job removes rate-limit windows that ended days ago, and only those.
insert into public.ai_rate_limit_windows values
  (:'member_b', :'org_b', -1, now() - interval '3 days', 5), (:'member_b', :'org_b', -2, now() - interval '1 hour', 5);
select tests.authenticate_as_service_role();
select from public.refresh_due_tokens();
select tests.clear_authentication();
select results_eq(format('select rate_limit_id from public.ai_rate_limit_windows where user_id = %L and rate_limit_id < 0', :'member_b'),
  $$values (-2::bigint)$$, 'refresh_due_tokens removes windows that ended days ago and keeps the others');

-- spend_context reads the claims itself, once: it must name the caller as auth.uid()
-- and ai_tokens_internal.is_service_role() do, for the RLS policies to agree with it.
-- (Claims only: the API roles may not execute the internal function themselves.)
select from set_config('request.jwt.claims', json_build_object('sub', :'member_b', 'role', 'authenticated')::text, true);
select is((select s.caller_id = auth.uid() and not s.is_service and not ai_tokens_internal.is_service_role()
                  and s.org_id = :'org_b'::uuid
           from ai_tokens_internal.spend_context('generate_goal', null, null, false) s), true,
  'a member: spend_context''s caller is auth.uid(), not the service role');
select from set_config('request.jwt.claims', '{"role": "service_role"}', true);
select is((select s.caller_id is null and s.is_service and ai_tokens_internal.is_service_role()
           from ai_tokens_internal.spend_context('generate_goal', :'org_b', null, false) s), true,
  'the service role: as is_service_role() says');
select tests.clear_authentication();

-- A truncated log leaves an empty rollup.
truncate public.ai_token_usage_log cascade;
select is((select count(*) from public.ai_token_usage_daily), 0::bigint, 'truncating the usage log empties the rollup');

-- ---------------------------------------------------------------- the seams
select is(
  (select string_agg(p.proname || '=' || l.lanname, ', ' order by p.proname)
   from pg_proc p join pg_language l on l.oid = p.prolang
   where p.pronamespace = 'ai_tokens_internal'::regnamespace
     and p.proname in ('memberships', 'organization_exists', 'organization_plan')),
  'memberships=plpgsql, organization_exists=plpgsql, organization_plan=plpgsql',
  'the default seams every spend calls are PL/pgSQL (their plans are kept for the session)');

select * from finish();
rollback;
