-- tokens-client · 13 spending: has_enough_tokens, deduct_tokens, get_token_stats.
--
-- Spending is one statement: a conditional UPDATE (balance - reserved >= cost, nothing
-- due before the row's settle_after) whose trigger journals it, with the usage-log
-- insert, in one transaction and one round trip. When that UPDATE matches nothing, the row is opened (created on
-- first use), locked and settled, and the decision is taken again under the lock.
-- Refusals that are the caller's situation (403 feature_not_in_plan, 429 rate_limited,
-- 402 insufficient_tokens) are returned, not raised, so that their record commits: the
-- body is PostgREST's error body and response.status carries the HTTP status.
set check_function_bodies = off;

-- A refusal as data: {http_status, reason, message, details: {reason, ...facts}}.
create or replace function ai_tokens_internal.refusal(http_status integer, reason text, message text, facts jsonb)
returns jsonb
language sql
immutable
set search_path = ''
as $$
  select jsonb_build_object(
    'http_status', refusal.http_status,
    'reason', refusal.reason,
    'message', refusal.message,
    'details', jsonb_build_object('reason', refusal.reason) || coalesce(refusal.facts, '{}'::jsonb))
$$;
revoke all on function ai_tokens_internal.refusal(integer, text, text, jsonb) from public, anon, authenticated;

-- Refuse a spend without raising, so that the refusal record survives: record it, set
-- the HTTP status (and Retry-After) PostgREST answers with, and return the body
-- PostgREST would have sent for `raise ... errcode 'PTxyz'`.
create or replace function ai_tokens_internal.refusal_response(refusal jsonb, organization_id uuid, token_type text, context jsonb)
returns jsonb
language plpgsql
volatile
set search_path = ''
as $$
begin
  perform ai_tokens_internal.record_refusal(refusal_response.refusal, refusal_response.organization_id,
    refusal_response.token_type, 'enforce', refusal_response.context);
  perform set_config('response.status', refusal_response.refusal ->> 'http_status', true);
  if refusal_response.refusal -> 'details' ? 'retry_after_seconds' then
    perform set_config('response.headers', jsonb_build_array(jsonb_build_object(
      'Retry-After', refusal_response.refusal -> 'details' ->> 'retry_after_seconds'))::text, true);
  end if;
  return jsonb_build_object(
    'code', 'PT' || (refusal_response.refusal ->> 'http_status'),
    'message', refusal_response.refusal ->> 'message',
    'details', (refusal_response.refusal -> 'details')::text,
    'hint', null);
end
$$;
revoke all on function ai_tokens_internal.refusal_response(jsonb, uuid, text, jsonb) from public, anon, authenticated;

-- The opening of every spend (deduct_tokens, reserve_tokens, has_enough_tokens), in
-- few statements: the organization the caller may act on (resolve_organization: the
-- memberships seam called once); the organization's plan (the organization_plan
-- seam); then one query for the feature's type and cost, whether the plan offers it,
-- the enforcement mode and, for a user's spend, the rate-limit rule that applies (the
-- most specific row: organization, feature+plan, feature, plan, default). Raises on bad
-- input (a request_id of 0 or over 200 characters, no feature, no organization for the
-- service role, 401/403 for the caller). An unknown feature comes back with a null
-- price_type, so that a replay is answered before the 404 (the catalog may have
-- changed since the first call).
create or replace function ai_tokens_internal.spend_context(
  feature text, organization_id uuid, request_id text, with_rate_rule boolean,
  out caller_id uuid, out is_service boolean, out org_id uuid, out caller_role text, out org_plan text,
  out enforcement text, out price_type text, out unit_cost integer, out offered boolean,
  out rule_id bigint, out rule_max integer, out rule_window integer)
language plpgsql
stable
set search_path = ''
as $$
begin
  if spend_context.request_id is not null
     and (length(spend_context.request_id) = 0 or length(spend_context.request_id) > 200) then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'request_id must be 1 to 200 characters',
      jsonb_build_object('field', 'request_id'));
  end if;
  select r.organization_id, r.role into org_id, caller_role
  from ai_tokens_internal.resolve_organization(spend_context.organization_id) r;
  is_service := caller_role = 'service_role';
  caller_id := (select auth.uid());
  if spend_context.feature is null or length(btrim(spend_context.feature)) = 0 then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'feature is required',
      jsonb_build_object('field', 'feature'));
  end if;

  org_plan := ai_tokens_internal.organization_plan(org_id);
  select f.token_type, f.cost,
         exists (select 1 from public.ai_plan_allocations a where a.plan = org_plan and a.token_type = f.token_type),
         coalesce((select e.mode from public.ai_token_enforcement_modes e where e.organization_id = org_id),
                  (select e.mode from public.ai_token_enforcement_modes e where e.organization_id is null),
                  'enforce'),
         r.id, r.max_requests, r.window_seconds
  into price_type, unit_cost, offered, enforcement, rule_id, rule_max, rule_window
  from (select) as one
  left join public.ai_features f on f.feature = spend_context.feature
  left join lateral (
    -- The organization's own rows, then the shared ones: two range scans of the scope
    -- key's index, however many organizations have rows of their own.
    select c.id, c.max_requests, c.window_seconds
    from (
      select l.id, l.max_requests, l.window_seconds, 1 as own, l.feature is not null as by_feature,
             l.plan is not null as by_plan
      from public.ai_rate_limits l
      where l.organization_id = org_id
        and (l.plan is null or l.plan = org_plan)
        and (l.feature is null or l.feature = spend_context.feature)
      union all
      select l.id, l.max_requests, l.window_seconds, 0, l.feature is not null, l.plan is not null
      from public.ai_rate_limits l
      where l.organization_id is null
        and (l.plan is null or l.plan = org_plan)
        and (l.feature is null or l.feature = spend_context.feature)
    ) c
    order by c.own desc, c.by_feature desc, c.by_plan desc
    limit 1
  ) r on spend_context.with_rate_rule and not is_service;
end
$$;
revoke all on function ai_tokens_internal.spend_context(text, uuid, text, boolean) from public, anon, authenticated;

-- The policy refusal of a spend, or null when allowed: the feature outside the plan
-- (403) before the caller's rate limit (429; a spend that fits is counted in the user's
-- window). rule_id is null for the service role, which is never limited. Shared by
-- deduct_tokens and reserve_tokens, with what spend_context found.
create or replace function ai_tokens_internal.policy_refusal(
  caller uuid, organization_id uuid, feature text, plan text, offered boolean, token_type text,
  rule_id bigint, rule_max integer, rule_window integer)
returns jsonb
language plpgsql
volatile
set search_path = ''
as $$
declare
  retry_after integer;
begin
  if not policy_refusal.offered then
    return ai_tokens_internal.not_in_plan_refusal(policy_refusal.feature, policy_refusal.plan, policy_refusal.token_type);
  end if;
  if policy_refusal.rule_id is null then
    return null;
  end if;
  retry_after := ai_tokens_internal.take_rate_slot(policy_refusal.caller, policy_refusal.organization_id,
                                                   policy_refusal.rule_id, policy_refusal.rule_max,
                                                   policy_refusal.rule_window);
  if retry_after is null then
    return null;
  end if;
  return ai_tokens_internal.refusal(429, 'rate_limited', 'Rate limit exceeded. Wait before next request.',
    jsonb_build_object('feature', policy_refusal.feature, 'limit', policy_refusal.rule_max,
                       'window_seconds', policy_refusal.rule_window, 'retry_after_seconds', retry_after));
end
$$;
revoke all on function ai_tokens_internal.policy_refusal(uuid, uuid, text, text, boolean, text, bigint, integer, integer)
  from public, anon, authenticated;

-- The insufficient-tokens refusal for `required` tokens of a settled (locked) row, with
-- what the row holds; `account` is all nulls when the organization has no such row.
create or replace function ai_tokens_internal.insufficient_refusal(feature text, required integer, token_type text,
                                             account public.ai_tokens)
returns jsonb
language sql
stable
set search_path = ''
as $$
  select ai_tokens_internal.refusal(402, 'insufficient_tokens', 'You''re out of AI tokens',
    jsonb_build_object('feature', insufficient_refusal.feature, 'token_type', insufficient_refusal.token_type,
                       'required', insufficient_refusal.required,
                       'balance', coalesce((insufficient_refusal.account).balance, 0),
                       'reserved', coalesce((insufficient_refusal.account).reserved, 0),
                       'available', greatest(coalesce((insufficient_refusal.account).balance
                                                      - (insufficient_refusal.account).reserved, 0), 0),
                       'initialized', (insufficient_refusal.account).id is not null))
$$;
revoke all on function ai_tokens_internal.insufficient_refusal(text, integer, text, public.ai_tokens) from public, anon, authenticated;

-- How much of `wanted` a settled (locked) row can give: all of it when available, else
-- nothing — except in monitor mode, which takes what is there and never goes below zero.
create or replace function ai_tokens_internal.obtainable(account public.ai_tokens, wanted integer, mode text)
returns integer
language sql
immutable
set search_path = ''
as $$
  select case
    when (obtainable.account).id is null then 0
    when (obtainable.account).balance - (obtainable.account).reserved >= obtainable.wanted then obtainable.wanted
    when obtainable.mode = 'monitor'
      then greatest(least(obtainable.wanted, (obtainable.account).balance - (obtainable.account).reserved), 0)
    else 0 end
$$;
revoke all on function ai_tokens_internal.obtainable(public.ai_tokens, integer, text) from public, anon, authenticated;

-- What a client may see of a refusal that monitor mode let through.
create or replace function ai_tokens_internal.refusal_summary(refusal jsonb)
returns jsonb
language sql
immutable
set search_path = ''
as $$
  select case when refusal_summary.refusal is null then null else jsonb_build_object(
    'http_status', (refusal_summary.refusal ->> 'http_status')::integer,
    'reason', refusal_summary.refusal ->> 'reason',
    'message', refusal_summary.refusal ->> 'message',
    'details', refusal_summary.refusal -> 'details') end
$$;
revoke all on function ai_tokens_internal.refusal_summary(jsonb) from public, anon, authenticated;

-- The refusal of a feature the organization's plan does not offer: 403
-- feature_not_in_plan ("Not available on Starter plan", the guide's words), or 403
-- plan_not_configured when the host's plan is not a row of ai_plans at all (the plan
-- name then stays out of the message: it is not ours to trust).
create or replace function ai_tokens_internal.not_in_plan_refusal(feature text, plan text, token_type text)
returns jsonb
language sql
stable
set search_path = ''
as $$
  select case
    when exists (select 1 from public.ai_plans p where p.plan = not_in_plan_refusal.plan) then
      ai_tokens_internal.refusal(403, 'feature_not_in_plan', format('Not available on %s plan', initcap(not_in_plan_refusal.plan)),
        jsonb_build_object('feature', not_in_plan_refusal.feature, 'plan', not_in_plan_refusal.plan,
                           'token_type', not_in_plan_refusal.token_type))
    else
      ai_tokens_internal.refusal(403, 'plan_not_configured', 'Your organization''s plan is not set up for AI features',
        jsonb_build_object('feature', not_in_plan_refusal.feature, 'plan', left(not_in_plan_refusal.plan, 50),
                           'token_type', not_in_plan_refusal.token_type))
    end
$$;
revoke all on function ai_tokens_internal.not_in_plan_refusal(text, text, text) from public, anon, authenticated;

-- Raise a refusal built by ai_tokens_internal.refusal().
create or replace function ai_tokens_internal.raise_refusal(refusal jsonb)
returns void
language sql
volatile
set search_path = ''
as $$
  select ai_tokens_internal.refuse((raise_refusal.refusal ->> 'http_status')::integer, raise_refusal.refusal ->> 'reason',
    raise_refusal.refusal ->> 'message', (raise_refusal.refusal -> 'details') - 'reason')
$$;
revoke all on function ai_tokens_internal.raise_refusal(jsonb) from public, anon, authenticated;

-- has_enough_tokens: may the caller's organization afford this feature now
-- (balance - reserved >= cost, once what is due is settled)? Always true in monitor and
-- off modes. Unknown features (404), features outside the plan (403, in enforce mode)
-- and non-members (403) are errors. Works with GET (read-only) and POST.
create or replace function public.has_enough_tokens(feature text, organization_id uuid default null)
returns boolean
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  spend record;
  account public.ai_tokens;
begin
  spend := ai_tokens_internal.spend_context(has_enough_tokens.feature, has_enough_tokens.organization_id, null, false);
  if spend.price_type is null then
    perform ai_tokens_internal.refuse(404, 'unknown_feature', 'Unknown feature',
      jsonb_build_object('feature', left(has_enough_tokens.feature, 100)));
  end if;
  if spend.enforcement <> 'enforce' then
    return true;
  end if;
  if not spend.offered then
    perform ai_tokens_internal.raise_refusal(
      ai_tokens_internal.not_in_plan_refusal(has_enough_tokens.feature, spend.org_plan, spend.price_type));
  end if;

  select * into account from public.ai_tokens t
  where t.organization_id = spend.org_id and t.token_type = spend.price_type;
  if not found then
    -- Not used yet: the row it would be opened with on first use.
    account := ai_tokens_internal.unopened_account(spend.org_id, spend.price_type);
  elsif account.settle_after <= now() then
    account := ai_tokens_internal.settled_tokens(account);
  end if;
  return account.balance - account.reserved >= spend.unit_cost;
end
$$;
revoke all on function public.has_enough_tokens(text, uuid) from public, anon, authenticated;
grant execute on function public.has_enough_tokens(text, uuid) to authenticated, service_role;
comment on function public.has_enough_tokens(text, uuid) is 'tokens-client: may the caller''s organization afford this feature now';

-- deduct_tokens: spend the feature's cost from the caller's organization.
-- Hot path: spend_context (claims, membership, plan, price, mode and rate rule), the
-- rate-limit count (one upsert of the user's window row), then one statement: the
-- conditional UPDATE (balance - reserved >= cost, nothing due before settle_after)
-- with the usage-log insert and its share of the daily rollup; the UPDATE's trigger
-- writes the journal row. The row lock
-- is held only from that statement to the commit. When that UPDATE matches nothing,
-- the row is opened (created on first use), locked and settled, and the decision is
-- taken again under the lock. Spends the period allowance first, then purchased tokens.
-- Idempotent per organization with request_id (a retry returns the first result).
-- Refusals that are the caller's situation (403 feature_not_in_plan, 429 rate_limited,
-- 402 insufficient_tokens) do not raise: they are recorded as a 'refused' alert and
-- returned as PostgREST's error body with response.status set, so the record is kept.
-- Bad input (400), unknown features (404) and non-members (401/403) raise.
-- Enforcement modes: monitor never refuses (spends what is available up to the cost
-- and records what would have been refused); off spends and checks nothing.
create or replace function public.deduct_tokens(
  feature text,
  organization_id uuid default null,
  request_id text default null,
  quantity integer default 1
)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  spend record;
  previous public.ai_token_usage_log;
  new_usage_id uuid;
  account public.ai_tokens;
  refused jsonb;
  insufficient jsonb;
  context jsonb;
  charged integer;
  remaining integer;
  remaining_purchased integer;
  cost integer;
begin
  if deduct_tokens.quantity is null or deduct_tokens.quantity < 1 or deduct_tokens.quantity > 1000000 then
    perform ai_tokens_internal.refuse(400, 'invalid_amount', 'quantity must be between 1 and 1000000',
      jsonb_build_object('field', 'quantity', 'quantity', deduct_tokens.quantity, 'min', 1, 'max', 1000000));
  end if;
  spend := ai_tokens_internal.spend_context(deduct_tokens.feature, deduct_tokens.organization_id,
                                           deduct_tokens.request_id, true);

  -- A retry is answered before pricing: the first call spent, so a plan change or a
  -- catalog edit since then must not turn its replay into a refusal.
  if deduct_tokens.request_id is not null then
    -- Serialise retries of one request so exactly one of them spends.
    perform ai_tokens_internal.lock('deduction', spend.org_id::text || '/' || deduct_tokens.request_id);
    select * into previous from public.ai_token_usage_log l
    where l.organization_id = spend.org_id and l.request_id = deduct_tokens.request_id;
    if found then
      -- A key belongs to its caller and its payload: anything else replays nothing.
      if previous.user_id is distinct from spend.caller_id then
        perform ai_tokens_internal.refuse(409, 'idempotency_conflict', 'request_id was already used by another caller',
          jsonb_build_object('request_id', deduct_tokens.request_id));
      end if;
      if previous.feature_used <> deduct_tokens.feature or previous.quantity <> deduct_tokens.quantity then
        perform ai_tokens_internal.refuse(409, 'idempotency_conflict', 'request_id was already used for another spend',
          jsonb_build_object('request_id', deduct_tokens.request_id, 'feature', deduct_tokens.feature,
                             'quantity', deduct_tokens.quantity, 'original_feature', previous.feature_used,
                             'original_quantity', previous.quantity));
      end if;
      return jsonb_build_object(
        'success', true,
        'remaining_balance', previous.balance_after,
        'tokens_deducted', previous.tokens_deducted,
        'token_type', previous.token_type,
        'feature', previous.feature_used,
        'organization_id', previous.organization_id,
        'usage_id', previous.id,
        'request_id', previous.request_id,
        'replayed', true,
        'enforcement', spend.enforcement,
        'would_have_refused', null,
        'message', format('Used %s tokens for %s', previous.tokens_deducted, previous.feature_used));
    end if;
  end if;

  if spend.price_type is null then
    perform ai_tokens_internal.refuse(404, 'unknown_feature', 'Unknown feature',
      jsonb_build_object('feature', left(deduct_tokens.feature, 100)));
  end if;
  -- Metered usage (e.g. LLM tokens counted by the provider): the feature's cost per unit.
  if spend.unit_cost::bigint * deduct_tokens.quantity > 1000000000 then
    perform ai_tokens_internal.refuse(400, 'invalid_amount', 'quantity times the feature''s cost exceeds 1000000000',
      jsonb_build_object('field', 'quantity', 'quantity', deduct_tokens.quantity, 'cost', spend.unit_cost,
                         'max', 1000000000));
  end if;
  cost := spend.unit_cost * deduct_tokens.quantity;

  if spend.enforcement = 'off' then
    select t.balance into remaining from public.ai_tokens t
    where t.organization_id = spend.org_id and t.token_type = spend.price_type;
    return jsonb_build_object(
      'success', true,
      'remaining_balance', coalesce(remaining, 0),
      'tokens_deducted', 0,
      'token_type', spend.price_type,
      'feature', deduct_tokens.feature,
      'organization_id', spend.org_id,
      'usage_id', null,
      'request_id', deduct_tokens.request_id,
      'replayed', false,
      'enforcement', spend.enforcement,
      'would_have_refused', null,
      'message', format('Token checks are off: nothing deducted for %s', deduct_tokens.feature));
  end if;

  refused := ai_tokens_internal.policy_refusal(spend.caller_id, spend.org_id, deduct_tokens.feature, spend.org_plan,
                                               spend.offered, spend.price_type, spend.rule_id, spend.rule_max,
                                               spend.rule_window);
  if refused is not null then
    context := jsonb_build_object('feature', deduct_tokens.feature, 'user_id', spend.caller_id,
                                  'request_id', deduct_tokens.request_id);
    if spend.enforcement = 'enforce' then
      return ai_tokens_internal.refusal_response(refused, spend.org_id, spend.price_type, context);
    end if;
  end if;

  -- The critical section: from this statement (which takes the row lock) to the commit.
  new_usage_id := gen_random_uuid();
  perform ai_tokens_internal.journal_as(jsonb_build_object('kind', 'deduction', 'usage_id', new_usage_id)),
          set_config('tokens.rolled_up', 'on', true);
  with spent as (
    update public.ai_tokens t
    set balance = t.balance - cost,
        purchased_balance = least(t.purchased_balance, t.balance - cost),
        updated_at = now()
    where t.organization_id = spend.org_id
      and t.token_type = spend.price_type
      and t.balance - t.reserved >= cost
      and t.settle_after > now()
    returning t.balance, t.purchased_balance
  ),
  logged as (
    insert into public.ai_token_usage_log
      (id, organization_id, user_id, token_type, feature_used, tokens_deducted, balance_after, request_id, quantity)
    select new_usage_id, spend.org_id, spend.caller_id, spend.price_type, deduct_tokens.feature, cost, s.balance,
           deduct_tokens.request_id, deduct_tokens.quantity
    from spent s
    returning 1
  ),
  rolled_up as (
    insert into public.ai_token_usage_daily as d (organization_id, day, user_id, feature, uses, tokens)
    select spend.org_id, (now() at time zone 'UTC')::date, spend.caller_id, deduct_tokens.feature, 1, cost
    from spent s
    on conflict on constraint ai_token_usage_daily_key
    do update set uses = d.uses + 1, tokens = d.tokens + excluded.tokens
  )
  select s.balance, s.purchased_balance into remaining, remaining_purchased from spent s;
  perform ai_tokens_internal.journal_as(null), set_config('tokens.rolled_up', '', true);

  if remaining is not null then
    charged := cost;
  else
    -- Slow path: lock and settle the row, then decide under the lock.
    account := ai_tokens_internal.open_account(spend.org_id, spend.price_type);
    charged := ai_tokens_internal.obtainable(account, cost, spend.enforcement);
    if charged < cost then
      insufficient := ai_tokens_internal.insufficient_refusal(deduct_tokens.feature, cost, spend.price_type, account);
      context := coalesce(context, jsonb_build_object('feature', deduct_tokens.feature, 'user_id', spend.caller_id,
                                                      'request_id', deduct_tokens.request_id));
      if spend.enforcement = 'enforce' or charged = 0 then
        -- Nothing is spent: the rate-limit window gets its spend back.
        if spend.rule_id is not null and refused is null then
          perform ai_tokens_internal.give_back_rate_slot(spend.caller_id, spend.org_id, spend.rule_id);
        end if;
      end if;
      if spend.enforcement = 'enforce' then
        return ai_tokens_internal.refusal_response(insufficient, spend.org_id, spend.price_type, context);
      end if;
      refused := coalesce(refused, insufficient);
    end if;
    remaining := coalesce(account.balance, 0);
    remaining_purchased := coalesce(account.purchased_balance, 0);
    if charged > 0 then
      perform ai_tokens_internal.journal_as(jsonb_build_object('kind', 'deduction', 'usage_id', new_usage_id));
      update public.ai_tokens t
      set balance = t.balance - charged,
          purchased_balance = least(t.purchased_balance, t.balance - charged),
          updated_at = now()
      where t.id = account.id
      returning t.balance, t.purchased_balance into remaining, remaining_purchased;
      perform ai_tokens_internal.journal_as(null);
      insert into public.ai_token_usage_log
        (id, organization_id, user_id, token_type, feature_used, tokens_deducted, balance_after, request_id, quantity)
      values
        (new_usage_id, spend.org_id, spend.caller_id, spend.price_type, deduct_tokens.feature, charged, remaining,
         deduct_tokens.request_id, deduct_tokens.quantity);
    end if;
  end if;

  -- The period allowance is used up: the rest came from grants.
  if charged > 0 and remaining = remaining_purchased then
    perform ai_tokens_internal.consume_grants(spend.org_id, spend.price_type, remaining_purchased, new_usage_id);
  end if;
  if refused is not null then
    perform ai_tokens_internal.record_refusal(refused, spend.org_id, spend.price_type, spend.enforcement,
      context || jsonb_build_object('charged', charged));
  end if;

  return jsonb_build_object(
    'success', true,
    'remaining_balance', remaining,
    'tokens_deducted', charged,
    'token_type', spend.price_type,
    'feature', deduct_tokens.feature,
    'organization_id', spend.org_id,
    'usage_id', case when charged > 0 then new_usage_id end,
    'request_id', deduct_tokens.request_id,
    'replayed', false,
    'enforcement', spend.enforcement,
    'would_have_refused', case when refused is not null then ai_tokens_internal.refusal_summary(refused) end,
    'message', 'Used ' || charged || ' tokens for ' || deduct_tokens.feature);
end
$$;
revoke all on function public.deduct_tokens(text, uuid, text, integer) from public, anon, authenticated;
grant execute on function public.deduct_tokens(text, uuid, text, integer) to authenticated, service_role;
comment on function public.deduct_tokens(text, uuid, text, integer) is 'tokens-client: spend a feature''s cost atomically, journaled, idempotent on request_id';

-- get_token_stats: the organization's balances, totals and per-type state (the
-- guide's stats endpoint), once what is due is settled. Members and the service role.
-- Works with GET (read-only) and POST.
create or replace function public.get_token_stats(organization_id uuid default null)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  target_organization uuid;
  organization_plan text;
  due record;
  by_type jsonb;
begin
  select r.organization_id into target_organization
  from ai_tokens_internal.resolve_organization(get_token_stats.organization_id) r;
  organization_plan := ai_tokens_internal.organization_plan(target_organization);

  -- Settle what is due in token_type order (the order every multi-row writer locks in);
  -- a read-only transaction cannot, and reads the projection below instead.
  if current_setting('transaction_read_only') <> 'on' then
    for due in
      select t.token_type from public.ai_tokens t
      where t.organization_id = target_organization and t.settle_after <= now()
      order by t.token_type
    loop
      perform ai_tokens_internal.settle_tokens(target_organization, due.token_type);
    end loop;
  end if;

  select coalesce(jsonb_agg(jsonb_build_object(
           'token_type', t.token_type,
           'balance', t.balance,
           'allocated', t.total_allocated,
           'used', greatest(t.total_allocated - (t.balance - t.purchased_balance), 0),
           'purchased_balance', t.purchased_balance,
           'reserved', t.reserved,
           'available', greatest(t.balance - t.reserved, 0),
           'debt', t.debt,
           'percent_remaining', case when t.total_allocated > 0
             then round(100.0 * t.balance / t.total_allocated, 1) else 0 end,
           'low', t.total_allocated > 0 and t.balance::bigint * 5 < t.total_allocated,
           'period_started_at', t.period_started_at,
           'refresh_date', t.refresh_date
         ) order by t.token_type), '[]'::jsonb)
  into by_type
  from public.ai_token_types tt
  left join public.ai_tokens stored
    on stored.organization_id = target_organization and stored.token_type = tt.token_type
  cross join lateral (
    select (case when stored.id is null
                 then ai_tokens_internal.unopened_account(target_organization, tt.token_type)
                 else ai_tokens_internal.settled_view(stored) end).*
  ) t;

  return jsonb_build_object(
    'organization_id', target_organization,
    'plan', organization_plan,
    'enforcement', ai_tokens_internal.enforcement_mode(target_organization),
    'total_balance', (select coalesce(sum((e ->> 'balance')::bigint), 0) from jsonb_array_elements(by_type) e),
    'total_allocated', (select coalesce(sum((e ->> 'allocated')::bigint), 0) from jsonb_array_elements(by_type) e),
    'total_used', (select coalesce(sum((e ->> 'used')::bigint), 0) from jsonb_array_elements(by_type) e),
    'total_purchased', (select coalesce(sum((e ->> 'purchased_balance')::bigint), 0) from jsonb_array_elements(by_type) e),
    'total_reserved', (select coalesce(sum((e ->> 'reserved')::bigint), 0) from jsonb_array_elements(by_type) e),
    'total_available', (select coalesce(sum((e ->> 'available')::bigint), 0) from jsonb_array_elements(by_type) e),
    'by_type', by_type);
end
$$;
revoke all on function public.get_token_stats(uuid) from public, anon, authenticated;
grant execute on function public.get_token_stats(uuid) to authenticated, service_role;
comment on function public.get_token_stats(uuid) is 'tokens-client: balances, totals and per-type state of an organization';

