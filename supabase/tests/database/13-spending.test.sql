-- Spending tokens through the API, as the callers PostgREST would send: a member with
-- their JWT, anon, and the service role. A refusal that raises (bad input, unknown
-- feature, not a member, conflicts) is checked for its SQLSTATE (the HTTP status), its
-- message and the JSON detail with its "reason", and for writing nothing. The three
-- spending refusals (402 insufficient_tokens, 403 feature_not_in_plan, 429
-- rate_limited) do not raise since the token lifecycle (docs/lifecycle.md): deduct_tokens
-- records a 'refused' alert, sets response.status and returns PostgREST's error body
-- {code, message, details (JSON text), hint}; they are checked for that body and
-- status, and for writing nothing but their alert.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = public, extensions;

select plan(98);

-- ------------------------------------------------------------------ helpers
-- Fixtures by name (tests.id('pro org')), callers, and what a call raises
-- (tests.refusal), answers (tests.answer) or returns as a refusal (tests.returned_refusal)
-- come from 000-setup-test-helpers. This file's own helpers are created in schema tests
-- inside this transaction and rolled back with it.

-- Results of calls kept for later tests.
create table tests.results (name text primary key, result jsonb not null);
grant insert on tests.results to anon, authenticated, service_role;
create function tests.result(name text) returns jsonb
language sql stable as $$ select r.result from tests.results r where r.name = result.name $$;

-- The truth, read as postgres whoever the current caller is.
create function tests.balances(organization text)
returns table (token_type text, balance integer, total_allocated integer)
language sql security definer set search_path = '' as $$
  select t.token_type, t.balance, t.total_allocated from public.ai_tokens t
  where t.organization_id = tests.id(organization) order by t.token_type
$$;
create function tests.balance(organization text, token_type text) returns integer
language sql security definer set search_path = '' as $$
  select b.balance from tests.balances(organization) b where b.token_type = balance.token_type
$$;
create function tests.usage_log(organization text) returns setof public.ai_token_usage_log
language sql security definer set search_path = '' as $$
  select * from public.ai_token_usage_log l where l.organization_id = tests.id(organization)
  order by l.created_at, l.id
$$;
create function tests.usage_count(organization text) returns integer
language sql security definer set search_path = '' as $$
  select count(*)::integer from tests.usage_log(organization)
$$;
create function tests.plan(organization text) returns text
language sql security definer set search_path = '' as $$
  select o.plan from public.organizations o where o.id = tests.id(organization)
$$;

-- Everything a deduction may write for an organization: each balance, and the rows of
-- the usage log, the journal, the refused alerts and the other (threshold) alerts.
create function tests.footprint(organization text) returns jsonb
language sql security definer set search_path = '' as $$
  select jsonb_build_object(
    'usage_rows', (select count(*) from public.ai_token_usage_log l where l.organization_id = tests.id(organization)),
    'ledger_rows', (select count(*) from public.ai_token_ledger l where l.organization_id = tests.id(organization)),
    'refused_alerts', (select coalesce(sum(a.refusal_count), 0) from public.ai_token_alerts a
                       where a.organization_id = tests.id(organization) and a.kind = 'refused'),
    'other_alerts', (select count(*) from public.ai_token_alerts a
                     where a.organization_id = tests.id(organization) and a.kind <> 'refused'))
  || coalesce((select jsonb_object_agg('balance of ' || t.token_type, t.balance) from public.ai_tokens t
               where t.organization_id = tests.id(organization)), '{}'::jsonb)
$$;
create function tests.save_footprint(name text, organization text) returns void
language sql as $$ insert into tests.results values (name, tests.footprint(organization)) $$;
-- What changed since the footprint saved under name: {key: after - before} for each
-- count or balance that moved ({} when nothing did).
create function tests.changes_since(name text, organization text) returns jsonb
language sql as $$
  select coalesce(jsonb_object_agg(a.key, a.value::text::bigint - coalesce(b.value::text::bigint, 0)), '{}'::jsonb)
  from jsonb_each(tests.footprint(organization)) a
  left join jsonb_each(tests.result(name)) b on b.key = a.key
  where a.value is distinct from b.value
$$;
-- The organization's latest refused alert, read as postgres (members cannot read alerts).
create function tests.latest_refusal(organization text) returns jsonb
language sql security definer set search_path = '' as $$
  select jsonb_build_object('kind', a.kind, 'reason', a.reason, 'token_type', a.token_type, 'details', a.details)
  from public.ai_token_alerts a
  where a.organization_id = tests.id(organization) and a.kind = 'refused'
  order by a.last_refused_at desc, a.id desc limit 1
$$;

-- ----------------------------------------------------------------- fixtures
do $$
begin
  perform tests.create_organization('pro org', 'pro');
  perform tests.create_organization('starter org', 'starter');
  perform tests.create_organization('other org', 'pro');
  perform tests.create_organization('moving org', 'pro');
  perform tests.create_organization('uninitialized org', 'pro', initialized => false);
  perform tests.create_organization('downgraded org', 'pro');
  insert into tests.fixtures values ('nowhere', gen_random_uuid());  -- no such organization

  perform tests.create_user('member', tests.id('pro org'));
  perform tests.create_user('starter member', tests.id('starter org'));
  perform tests.create_user('other member', tests.id('other org'));
  perform tests.create_user('moving member', tests.id('moving org'));
  perform tests.create_user('uninitialized member', tests.id('uninitialized org'));
  perform tests.create_user('downgraded member', tests.id('downgraded org'));
  perform tests.create_user('loner', null);

  -- This file is about balances, refusals and retries. The per-user rate limit
  -- (default 5 deductions per 60 s; 107-rate-limits) would refuse the member's sixth
  -- deduction here, so the pro organization gets a negotiated limit it never reaches.
  perform public.set_rate_limit(1000000, 60, tests.id('pro org'));
end
$$;

-- ======================================================= a fresh pro organization
select results_eq(
  $$ select * from tests.balances('pro org') $$,
  $$ values ('forecast', 30, 30), ('general', 50, 50), ('goal_generation', 20, 20),
            ('lead_generation', 50, 50), ('strategy_analysis', 100, 100) $$,
  'a fresh pro organization holds its plan''s allocation of every token type'
);

select tests.authenticate_as(tests.id('member'));
insert into tests.results values ('first', public.deduct_tokens('generate_goal'));

select is(
  tests.result('first') - 'usage_id',
  jsonb_build_object(
    'success', true, 'remaining_balance', 17, 'tokens_deducted', 3, 'token_type', 'goal_generation',
    'feature', 'generate_goal', 'organization_id', tests.id('pro org'), 'request_id', null,
    'replayed', false, 'enforcement', 'enforce', 'would_have_refused', null,
    'message', 'Used 3 tokens for generate_goal'),
  'deduct_tokens(generate_goal) returns the documented result'
);
select is(tests.result('first') ->> 'message', 'Used 3 tokens for generate_goal', 'the message is the guide''s');
select results_eq(
  $$ select * from tests.balances('pro org') $$,
  $$ values ('forecast', 30, 30), ('general', 50, 50), ('goal_generation', 17, 20),
            ('lead_generation', 50, 50), ('strategy_analysis', 100, 100) $$,
  'goal_generation went from 20 to 17; no other balance moved'
);
select results_eq(
  $$ select id, organization_id, user_id, token_type, feature_used, tokens_deducted, balance_after, request_id
     from tests.usage_log('pro org') $$,
  $$ values ((tests.result('first') ->> 'usage_id')::uuid, tests.id('pro org'), tests.id('member'),
             'goal_generation', 'generate_goal', 3, 17, null::text) $$,
  'one usage-log row: who, what, how many and the balance after'
);

-- ============================================================== running out
select is(public.has_enough_tokens('generate_goal'), true, 'has_enough_tokens: 17 goal tokens cover a goal (3)');

select is(
  (select array_agg((public.deduct_tokens('generate_goal') ->> 'remaining_balance')::integer order by n)
   from generate_series(1, 5) n),
  array[14, 11, 8, 5, 2],
  'five more goals leave 14, 11, 8, 5 and 2 tokens'
);
select is(public.has_enough_tokens('generate_goal'), false, 'has_enough_tokens: 2 tokens do not cover a goal (3)');
select is(public.has_enough_tokens('generate_quest'), true, 'has_enough_tokens: 2 tokens cover a quest (2) exactly');

select tests.save_footprint('before the seventh goal', 'pro org');
select is(
  tests.returned_refusal($$ select public.deduct_tokens('generate_goal') $$) - 'details',
  '{"http_status": 402, "code": "PT402", "message": "You''re out of AI tokens", "hint": null}'::jsonb,
  'the seventh goal is refused: deduct_tokens returns the PT402 error body and sets response.status 402'
);
select is(
  tests.returned_refusal($$ select public.deduct_tokens('generate_goal') $$) -> 'details',
  jsonb_build_object(
    'reason', 'insufficient_tokens', 'feature', 'generate_goal', 'token_type', 'goal_generation',
    'required', 3, 'balance', 2, 'reserved', 0, 'available', 2, 'initialized', true),
  'the refusal''s details say insufficient_tokens, with what was required and what is left'
);
select results_eq(
  $$ select tests.balance('pro org', 'goal_generation'), tests.usage_count('pro org') $$,
  $$ values (2, 6) $$,
  'a refused deduction changes no balance and writes no usage'
);
select is(tests.changes_since('before the seventh goal', 'pro org'), '{"refused_alerts": 2}'::jsonb,
  'the two refused calls wrote one refused alert each and nothing else (no balance, usage or journal row)');
select is(
  tests.latest_refusal('pro org'),
  jsonb_build_object('kind', 'refused', 'reason', 'insufficient_tokens', 'token_type', 'goal_generation',
    'details', jsonb_build_object(
      'reason', 'insufficient_tokens', 'feature', 'generate_goal', 'token_type', 'goal_generation',
      'required', 3, 'balance', 2, 'reserved', 0, 'available', 2, 'initialized', true,
      'user_id', tests.id('member'), 'request_id', null, 'http_status', 402,
      'message', 'You''re out of AI tokens', 'enforcement', 'enforce', 'refused', true)),
  'the refused alert records who was refused, why, and the numbers'
);

select is((public.deduct_tokens('generate_quest') ->> 'remaining_balance')::integer, 0,
  'a balance equal to the cost can be spent, down to 0');
select is(
  tests.returned_refusal($$ select public.deduct_tokens('generate_quest') $$),
  jsonb_build_object('http_status', 402, 'code', 'PT402', 'message', 'You''re out of AI tokens', 'hint', null,
    'details', jsonb_build_object('reason', 'insufficient_tokens', 'feature', 'generate_quest',
      'token_type', 'goal_generation', 'required', 2, 'balance', 0, 'reserved', 0, 'available', 0,
      'initialized', true)),
  'at 0 even the cheapest feature of the type is refused'
);
select results_eq(
  $$ select tests.balance('pro org', 'goal_generation'), tests.usage_count('pro org') $$,
  $$ values (0, 7) $$,
  'the balance stops at 0, never below, and only successful deductions are logged'
);
select is(public.has_enough_tokens('ask_assistant'), true, 'other token types are still available');

-- ============================================== refusals that write nothing
-- A starter organization: its plan has no allocation, so no feature is offered.
select tests.save_footprint('starter before', 'starter org');
select tests.authenticate_as(tests.id('starter member'));
select is(
  tests.returned_refusal($$ select public.deduct_tokens('ask_assistant') $$) - 'details',
  '{"http_status": 403, "code": "PT403", "message": "Not available on Starter plan", "hint": null}'::jsonb,
  'starter organization: PT403 Not available on Starter plan (returned, response.status 403)');
select is(
  tests.returned_refusal($$ select public.deduct_tokens('ask_assistant') $$) -> 'details',
  jsonb_build_object(
    'reason', 'feature_not_in_plan', 'feature', 'ask_assistant', 'plan', 'starter', 'token_type', 'general'),
  'starter organization: the reason is feature_not_in_plan'
);
select throws_ok($$ select public.has_enough_tokens('ask_assistant') $$, 'PT403', 'Not available on Starter plan',
  'has_enough_tokens refuses a feature outside the plan with the same status and message (raised)');
select is(tests.usage_count('starter org'), 0, 'the starter organization''s usage log stays empty');
select is(tests.changes_since('starter before', 'starter org'), '{"refused_alerts": 2}'::jsonb,
  'the starter organization''s refusals wrote nothing but a refused alert each');

-- Unknown and missing features.
select tests.authenticate_as(tests.id('member'));
select throws_ok($$ select public.deduct_tokens('make_coffee') $$, 'PT404', 'Unknown feature',
  'an unknown feature: PT404');
select is(
  tests.refusal($$ select public.deduct_tokens('make_coffee') $$),
  jsonb_build_object('sqlstate', 'PT404', 'message', 'Unknown feature', 'detail', jsonb_build_object(
    'reason', 'unknown_feature', 'feature', 'make_coffee')),
  'an unknown feature: the reason is unknown_feature'
);
select throws_ok($$ select public.has_enough_tokens('make_coffee') $$, 'PT404', 'Unknown feature',
  'has_enough_tokens refuses an unknown feature the same way');

select is(
  tests.refusal(format('select public.deduct_tokens(%L)', f.feature)),
  '{"sqlstate": "PT400", "message": "feature is required", "detail": {"reason": "invalid_request", "field": "feature"}}'::jsonb,
  format('feature %s: PT400 invalid_request', f.label))
from (values (1, null, 'null'), (2, '', 'empty'), (3, '   ', 'blank')) f(position, feature, label)
order by f.position;

-- Another organization's id: a claim that is checked, not trusted.
select throws_ok(
  format('select public.deduct_tokens(%L, organization_id => %L)', 'ask_assistant', tests.id('other org')),
  'PT403', 'You are not a member of this organization',
  'naming another organization: PT403');
select is(
  tests.refusal(format('select public.deduct_tokens(%L, organization_id => %L)', 'ask_assistant', tests.id('other org'))),
  jsonb_build_object('sqlstate', 'PT403', 'message', 'You are not a member of this organization', 'detail',
    jsonb_build_object('reason', 'not_a_member', 'organization_id', tests.id('other org'))),
  'naming another organization: the reason is not_a_member'
);
select results_eq(
  $$ select (select sum(balance)::integer from tests.balances('other org')), tests.usage_count('other org'),
            tests.usage_count('pro org') $$,
  $$ values (250, 0, 7) $$,
  'naming another organization spends nothing there nor here'
);
select is(
  tests.refusal(format('select public.deduct_tokens(%L, organization_id => %L)', 'ask_assistant', tests.id('nowhere'))),
  jsonb_build_object('sqlstate', 'PT403', 'message', 'You are not a member of this organization', 'detail',
    jsonb_build_object('reason', 'not_a_member', 'organization_id', tests.id('nowhere'))),
  'naming an organization that does not exist gets the same answer (no existence oracle)'
);
select throws_ok(
  format('select public.has_enough_tokens(%L, organization_id => %L)', 'ask_assistant', tests.id('other org')),
  'PT403', 'You are not a member of this organization', 'has_enough_tokens for another organization: PT403');
select throws_ok(
  format('select public.get_token_stats(organization_id => %L)', tests.id('other org')),
  'PT403', 'You are not a member of this organization', 'get_token_stats for another organization: PT403');

insert into tests.results values
  ('own org named', public.deduct_tokens('ask_assistant', organization_id => tests.id('pro org')));
select is(
  tests.result('own org named') - '{usage_id, message, request_id, success}'::text[],
  jsonb_build_object('remaining_balance', 49, 'tokens_deducted', 1, 'token_type', 'general',
    'feature', 'ask_assistant', 'organization_id', tests.id('pro org'), 'replayed', false,
    'enforcement', 'enforce', 'would_have_refused', null),
  'naming one''s own organization is accepted'
);

-- Callers without an organization, without a user id, without initialized balances.
select tests.authenticate_as(tests.id('loner'));
select is(
  tests.refusal($$ select public.deduct_tokens('ask_assistant') $$),
  '{"sqlstate": "PT403", "message": "You are not a member of any organization",
    "detail": {"reason": "not_a_member", "organization_id": null}}'::jsonb,
  'a user without organization: PT403 not_a_member'
);

do $$
begin
  perform set_config('request.jwt.claims', '{"role": "authenticated"}', true);
  perform set_config('role', 'authenticated', true);
end
$$;
select is(
  tests.refusal($$ select public.deduct_tokens('ask_assistant') $$),
  '{"sqlstate": "PT401", "message": "Sign in to use AI features", "detail": {"reason": "unauthenticated"}}'::jsonb,
  'an authenticated JWT without sub: PT401 unauthenticated'
);

select tests.save_footprint('uninitialized before', 'uninitialized org');
select tests.authenticate_as(tests.id('uninitialized member'));
select is(
  tests.answer($$ select public.deduct_tokens('ask_assistant') $$) - '{usage_id, organization_id}'::text[],
  '{"success": true, "remaining_balance": 49, "tokens_deducted": 1, "token_type": "general",
    "feature": "ask_assistant", "request_id": null, "replayed": false, "enforcement": "enforce",
    "would_have_refused": null, "message": "Used 1 tokens for ask_assistant"}'::jsonb,
  'an organization whose tokens were never initialized: the first spend opens its row with the plan''s 50 and spends'
);
select is(tests.changes_since('uninitialized before', 'uninitialized org'),
  '{"usage_rows": 1, "ledger_rows": 2, "balance of general": 49}'::jsonb,
  'the first spend opened only the row it needed (journaled: allocation 50, deduction 1) and wrote its usage row');
select results_eq(
  $$ select t.total_allocated, t.refresh_date > now() + interval '27 days' from public.ai_tokens t
     where t.organization_id = tests.id('uninitialized org') $$,
  $$ values (50, true) $$,
  'the opened row holds the plan''s allocation for a period starting now');

-- ================================================================ idempotency
select tests.authenticate_as(tests.id('member'));
insert into tests.results values ('req-1', public.deduct_tokens('ask_assistant', request_id => 'req-1'));
select is(
  tests.result('req-1') - '{usage_id, message, success, organization_id}'::text[],
  '{"remaining_balance": 48, "tokens_deducted": 1, "token_type": "general", "feature": "ask_assistant",
    "request_id": "req-1", "replayed": false, "enforcement": "enforce", "would_have_refused": null}'::jsonb,
  'a first call with a request_id spends and says replayed: false'
);
insert into tests.results values ('req-1 again', public.deduct_tokens('ask_assistant', request_id => 'req-1'));
select is(tests.result('req-1 again') - 'replayed', tests.result('req-1') - 'replayed',
  'a retry with the same request_id returns the first result (same usage_id and balance)');
select is(tests.result('req-1 again') -> 'replayed', 'true'::jsonb, 'the retry says replayed: true');
select results_eq(
  $$ select tests.balance('pro org', 'general'),
            (select count(*)::integer from tests.usage_log('pro org') where request_id = 'req-1') $$,
  $$ values (48, 1) $$,
  'the retry spent nothing: one deduction, one usage row'
);

select throws_ok($$ select public.deduct_tokens('generate_leads', request_id => 'req-1') $$,
  'PT409', 'request_id was already used for another spend',
  'the same request_id for another feature: PT409');
select is(
  tests.refusal($$ select public.deduct_tokens('generate_leads', request_id => 'req-1') $$) -> 'detail',
  '{"reason": "idempotency_conflict", "request_id": "req-1", "feature": "generate_leads",
    "quantity": 1, "original_feature": "ask_assistant", "original_quantity": 1}'::jsonb,
  'the same request_id for another feature: the reason is idempotency_conflict'
);
select results_eq(
  $$ select tests.balance('pro org', 'lead_generation'), tests.usage_count('pro org') $$,
  $$ values (50, 9) $$,
  'the conflicting request spent nothing'
);


select is(
  tests.refusal(format('select public.deduct_tokens(%L, request_id => %L)', 'ask_assistant', r.request_id)),
  '{"sqlstate": "PT400", "message": "request_id must be 1 to 200 characters",
    "detail": {"reason": "invalid_request", "field": "request_id"}}'::jsonb,
  format('a request_id of %s characters: PT400 invalid_request', length(r.request_id)))
from (values (1, repeat('r', 201)), (2, '')) r(position, request_id)
order by r.position;
select is(public.deduct_tokens('ask_assistant', request_id => repeat('r', 200)) ->> 'request_id', repeat('r', 200),
  'a request_id of 200 characters is accepted');
select is(tests.usage_count('pro org'), 10, 'the two invalid request_ids wrote nothing');

select tests.authenticate_as(tests.id('other member'));
select is(
  public.deduct_tokens('ask_assistant', request_id => 'req-1')
    - '{usage_id, message, success, tokens_deducted, token_type, feature}'::text[],
  jsonb_build_object('remaining_balance', 49, 'organization_id', tests.id('other org'),
    'request_id', 'req-1', 'replayed', false, 'enforcement', 'enforce', 'would_have_refused', null),
  'request_ids are per organization: another organization''s req-1 is a new request'
);

-- A retry must return the first result even when the plan changed in between: the
-- tokens were spent, and refusing the retry would tell the client they were not.
-- (A refusal would not raise: it would come back as a PT403 body, so the retry's result
-- itself is compared with the first.)
select tests.authenticate_as(tests.id('downgraded member'));
insert into tests.results values ('req-d', public.deduct_tokens('ask_assistant', request_id => 'req-d'));
select is((tests.result('req-d') ->> 'replayed')::boolean, false,
  'a member of a pro organization spends with request_id req-d');
select tests.authenticate_as_service_role();
select is((select count(*)::integer from public.initialize_tokens(tests.id('downgraded org'), 'starter')), 5,
  'the organization then moves to starter');
select tests.authenticate_as(tests.id('downgraded member'));
select is(tests.answer($$ select public.deduct_tokens('ask_assistant', request_id => 'req-d') $$),
  tests.result('req-d') || '{"replayed": true}',
  'a retry of req-d after the move to starter is replayed (the first result), not refused');

-- The same when the feature left the catalog since: the retry is answered before the
-- feature is looked up; a new request for it is an unknown feature.
select tests.clear_authentication();
insert into public.ai_features (feature, token_type, cost) values ('tests_retired_feature', 'general', 1);
select tests.authenticate_as(tests.id('other member'));
insert into tests.results values
  ('req-retired', public.deduct_tokens('tests_retired_feature', request_id => 'req-retired'));
select is(tests.result('req-retired') ->> 'tokens_deducted', '1', 'a member spends on a feature with request_id req-retired');
select tests.clear_authentication();
delete from public.ai_features where feature = 'tests_retired_feature';
select tests.authenticate_as(tests.id('other member'));
select is(tests.answer($$ select public.deduct_tokens('tests_retired_feature', request_id => 'req-retired') $$),
  tests.result('req-retired') || '{"replayed": true}',
  'a retry of req-retired after the feature left the catalog is replayed (the first result)');
select is(tests.refusal($$ select public.deduct_tokens('tests_retired_feature', request_id => 'req-retired-2') $$) -> 'detail',
  '{"reason": "unknown_feature", "feature": "tests_retired_feature"}'::jsonb,
  'a new request for the retired feature is an unknown feature (PT404)');
select is(
  tests.refusal($$ select public.deduct_tokens('', request_id => 'req-retired') $$),
  '{"sqlstate": "PT400", "message": "feature is required", "detail": {"reason": "invalid_request", "field": "feature"}}'::jsonb,
  'a retry without a feature is still bad input (PT400), not a replay');

-- ========================================================== anon and service_role
select tests.authenticate_as_anon();
select throws_ok($$ select public.deduct_tokens('ask_assistant') $$, '42501',
  'permission denied for function deduct_tokens', 'anon cannot execute deduct_tokens');
select throws_ok($$ select public.has_enough_tokens('ask_assistant') $$, '42501',
  'permission denied for function has_enough_tokens', 'anon cannot execute has_enough_tokens');
select throws_ok($$ select public.get_token_stats() $$, '42501',
  'permission denied for function get_token_stats', 'anon cannot execute get_token_stats');

select tests.authenticate_as_service_role();
insert into tests.results values
  ('service', public.deduct_tokens('ask_assistant', organization_id => tests.id('pro org')));
select is(
  tests.result('service') - '{usage_id, message, success, request_id}'::text[],
  jsonb_build_object('remaining_balance', 46, 'tokens_deducted', 1, 'token_type', 'general',
    'feature', 'ask_assistant', 'organization_id', tests.id('pro org'), 'replayed', false,
    'enforcement', 'enforce', 'would_have_refused', null),
  'service_role deducts from the organization it names'
);
select is(
  (select l.user_id::text from tests.usage_log('pro org') l where l.id = (tests.result('service') ->> 'usage_id')::uuid),
  null::text, 'a service_role deduction is logged without a user'
);
select is(
  tests.refusal($$ select public.deduct_tokens('ask_assistant') $$),
  '{"sqlstate": "PT400", "message": "organization_id is required for the service role",
    "detail": {"reason": "invalid_request", "field": "organization_id"}}'::jsonb,
  'service_role without organization_id: PT400 invalid_request'
);
select is(
  tests.refusal(format('select public.deduct_tokens(%L, organization_id => %L)', 'ask_assistant', tests.id('nowhere'))),
  jsonb_build_object('sqlstate', 'PT404', 'message', format('Organization (id=%s) not found', tests.id('nowhere')),
    'detail', jsonb_build_object('reason', 'organization_not_found', 'organization_id', tests.id('nowhere'))),
  'service_role naming an organization that does not exist: PT404 organization_not_found'
);
select is(public.has_enough_tokens('ask_assistant', organization_id => tests.id('pro org')), true,
  'service_role may ask has_enough_tokens for an organization it names');

-- =========================================================== initialize_tokens
select tests.authenticate_as(tests.id('member'));
select throws_ok(format('select public.initialize_tokens(%L)', tests.id('pro org')), '42501',
  'permission denied for function initialize_tokens', 'a member cannot execute initialize_tokens');

select tests.authenticate_as_service_role();
select is((select count(*)::integer from public.initialize_tokens(tests.id('pro org'))), 5,
  'initialize_tokens returns the organization''s five ai_tokens rows');
select results_eq(
  $$ select * from tests.balances('pro org') $$,
  $$ values ('forecast', 30, 30), ('general', 50, 50), ('goal_generation', 20, 20),
            ('lead_generation', 50, 50), ('strategy_analysis', 100, 100) $$,
  'initialize_tokens resets every balance to the plan''s allocation'
);
select is(
  (select count(*)::integer from public.ai_tokens
   where organization_id = tests.id('pro org') and refresh_date = now() + interval '1 month'),
  5, 'initialize_tokens sets every refresh_date one month ahead'
);
select is(tests.usage_count('pro org'), 11, 'initialize_tokens keeps the usage log');

select is((select count(*)::integer from public.initialize_tokens(tests.id('moving org'), 'enterprise')), 5,
  'initialize_tokens with a plan returns five rows');
select results_eq(
  $$ select tests.plan('moving org'), b.* from tests.balances('moving org') b $$,
  $$ values ('enterprise', 'forecast', 300, 300), ('enterprise', 'general', 500, 500),
            ('enterprise', 'goal_generation', 200, 200), ('enterprise', 'lead_generation', 500, 500),
            ('enterprise', 'strategy_analysis', 1000, 1000) $$,
  'initialize_tokens with a plan moves the organization to it and grants that plan''s allocation'
);
select lives_ok(format('select public.initialize_tokens(%L, %L)', tests.id('moving org'), 'starter'),
  'initialize_tokens can move an organization down to starter');
select results_eq(
  $$ select tests.plan('moving org'), b.* from tests.balances('moving org') b $$,
  $$ values ('starter', 'forecast', 0, 0), ('starter', 'general', 0, 0), ('starter', 'goal_generation', 0, 0),
            ('starter', 'lead_generation', 0, 0), ('starter', 'strategy_analysis', 0, 0) $$,
  'on starter every balance and allocation is 0'
);
select tests.authenticate_as(tests.id('moving member'));
select is(
  tests.returned_refusal($$ select public.deduct_tokens('ask_assistant') $$),
  jsonb_build_object('http_status', 403, 'code', 'PT403', 'message', 'Not available on Starter plan', 'hint', null,
    'details', jsonb_build_object(
      'reason', 'feature_not_in_plan', 'feature', 'ask_assistant', 'plan', 'starter', 'token_type', 'general')),
  'after the move to starter its members are refused AI features');

select tests.authenticate_as_service_role();
select is(
  tests.refusal(format('select public.initialize_tokens(%L, %L)', tests.id('moving org'), 'platinum')),
  '{"sqlstate": "PT400", "message": "Unknown plan", "detail": {"reason": "invalid_plan", "plan": "platinum"}}'::jsonb,
  'initialize_tokens with an unknown plan: PT400 invalid_plan'
);
select is(tests.plan('moving org'), 'starter', 'an unknown plan leaves the organization''s plan alone');
select is(
  tests.refusal(format('select public.initialize_tokens(%L)', tests.id('nowhere'))),
  jsonb_build_object('sqlstate', 'PT404', 'message', format('Organization (id=%s) not found', tests.id('nowhere')),
    'detail', jsonb_build_object('reason', 'organization_not_found', 'organization_id', tests.id('nowhere'))),
  'initialize_tokens for an organization that does not exist: PT404 organization_not_found'
);
select is(
  tests.refusal($$ select public.initialize_tokens(null) $$),
  '{"sqlstate": "PT400", "message": "organization_id is required",
    "detail": {"reason": "invalid_request", "field": "organization_id"}}'::jsonb,
  'initialize_tokens without an organization: PT400 invalid_request'
);

-- ============================================================= get_token_stats
select tests.authenticate_as(tests.id('member'));
insert into tests.results values ('fresh stats', public.get_token_stats());
select is(
  tests.result('fresh stats') - 'by_type',
  jsonb_build_object('organization_id', tests.id('pro org'), 'plan', 'pro', 'enforcement', 'enforce',
    'total_balance', 250, 'total_allocated', 250, 'total_used', 0,
    'total_purchased', 0, 'total_reserved', 0, 'total_available', 250),
  'get_token_stats of a fresh pro organization: 250 of 250, none used'
);
select results_eq(
  $$ select e ->> 'token_type' from jsonb_array_elements(tests.result('fresh stats') -> 'by_type') e $$,
  $$ values ('forecast'), ('general'), ('goal_generation'), ('lead_generation'), ('strategy_analysis') $$,
  'by_type has one entry per token type (5), in token_type order'
);
select is(
  (select count(*)::integer from jsonb_array_elements(tests.result('fresh stats') -> 'by_type') e
   where (e ->> 'low')::boolean),
  0, 'nothing is low when every balance is full'
);

-- goal_generation: 20 - 4 goals (12) - 2 quests (4) = 4, exactly 20% of 20.
select is(
  (select array_agg((public.deduct_tokens(f) ->> 'remaining_balance')::integer order by n)
   from unnest(array['generate_goal', 'generate_goal', 'generate_goal', 'generate_goal',
                     'generate_quest', 'generate_quest']) with ordinality u(f, n)),
  array[17, 14, 11, 8, 6, 4],
  'four goals and two quests leave 4 goal tokens'
);
insert into tests.results values ('stats at 20%', public.get_token_stats());
select is(
  (select e - '{refresh_date, period_started_at}'::text[]
   from jsonb_array_elements(tests.result('stats at 20%') -> 'by_type') e
   where e ->> 'token_type' = 'goal_generation'),
  '{"token_type": "goal_generation", "balance": 4, "allocated": 20, "used": 16,
    "purchased_balance": 0, "reserved": 0, "available": 4, "debt": 0,
    "percent_remaining": 20.0, "low": false}'::jsonb,
  'at exactly 20% of the allocation the type is not low'
);
select is(
  tests.result('stats at 20%') - '{by_type, organization_id, plan}'::text[],
  '{"enforcement": "enforce", "total_balance": 234, "total_allocated": 250, "total_used": 16,
    "total_purchased": 0, "total_reserved": 0, "total_available": 234}'::jsonb,
  'the totals add up the types'
);

select is((public.deduct_tokens('generate_quest') ->> 'remaining_balance')::integer, 2, 'one more quest leaves 2');
insert into tests.results values ('stats at 10%', public.get_token_stats());
select is(
  (select e - '{refresh_date, period_started_at}'::text[]
   from jsonb_array_elements(tests.result('stats at 10%') -> 'by_type') e
   where e ->> 'token_type' = 'goal_generation'),
  '{"token_type": "goal_generation", "balance": 2, "allocated": 20, "used": 18,
    "purchased_balance": 0, "reserved": 0, "available": 2, "debt": 0,
    "percent_remaining": 10.0, "low": true}'::jsonb,
  'below 20% of the allocation the type is low'
);
select results_eq(
  $$ select e ->> 'token_type' from jsonb_array_elements(tests.result('stats at 10%') -> 'by_type') e
     where (e ->> 'low')::boolean $$,
  $$ values ('goal_generation') $$,
  'only goal_generation is low'
);

select tests.authenticate_as_service_role();
select is(public.get_token_stats(tests.id('pro org')), tests.result('stats at 10%'),
  'service_role gets the same stats naming the organization');

-- Allocations may be up to 1,000,000,000 (ai_plan_allocations' check). The low flag
-- computes balance * 5 in integer, which overflows above 429,496,729.
update public.ai_tokens set balance = 500000000, total_allocated = 500000000
where organization_id = tests.id('other org') and token_type = 'general';
select lives_ok(format('select public.get_token_stats(%L)', tests.id('other org')),
  'get_token_stats works for an allocation of 500,000,000 tokens');
select is(
  (select e - '{refresh_date, period_started_at}'::text[]
   from jsonb_array_elements(public.get_token_stats(tests.id('other org')) -> 'by_type') e
   where e ->> 'token_type' = 'general'),
  '{"token_type": "general", "balance": 500000000, "allocated": 500000000, "used": 0,
    "purchased_balance": 0, "reserved": 0, "available": 500000000, "debt": 0,
    "percent_remaining": 100.0, "low": false}'::jsonb,
  'and reports it right: full, not low'
);

select tests.clear_authentication();

-- ================================================================ metered quantity
-- As the service role (never rate limited), for the pro org.
select tests.authenticate_as_service_role();
select is((public.deduct_tokens('forecast_revenue', organization_id => tests.id('pro org'), request_id => 'metered-1', quantity => 3) ->> 'tokens_deducted')::integer, 15,
  'quantity 3 of a feature costing 5 charges 15 in one call');
select is((public.deduct_tokens('forecast_revenue', organization_id => tests.id('pro org'), request_id => 'metered-1', quantity => 3) ->> 'replayed')::boolean, true,
  'the same request_id and quantity replays');
select is(tests.refusal($$ select public.deduct_tokens('forecast_revenue', organization_id => tests.id('pro org'), request_id => 'metered-1', quantity => 4) $$) -> 'detail' ->> 'reason',
  'idempotency_conflict', 'the same request_id with another quantity is a conflict (the payload is part of the key)');
select results_eq(
  $$ select f -> 'detail' ->> 'reason', f -> 'detail' ->> 'field' from (values
       (1, tests.refusal('select public.deduct_tokens(''ask_assistant'', tests.id(''pro org''), quantity => 0)')),
       (2, tests.refusal('select public.deduct_tokens(''ask_assistant'', tests.id(''pro org''), quantity => -5)')),
       (3, tests.refusal('select public.deduct_tokens(''ask_assistant'', tests.id(''pro org''), quantity => 1000001)')),
       (4, tests.refusal('select public.deduct_tokens(''ask_assistant'', tests.id(''pro org''), quantity => null)'))) v (n, f) order by n $$,
  $$ values ('invalid_amount', 'quantity'), ('invalid_amount', 'quantity'), ('invalid_amount', 'quantity'),
            ('invalid_amount', 'quantity') $$,
  'zero, negative, huge and missing quantities are invalid_amount');
select tests.authenticate_as(tests.id('member'));
select tests.clear_authentication();

select * from finish();
rollback;
