-- tokens-client · 09 reservations: holds for AI calls whose cost is known afterwards.
--
-- reserve_tokens holds an estimate (available = balance - reserved); commit_reservation
-- charges the actual and returns the rest; release_reservation returns everything; a
-- hold past its expiry stops counting without a scheduler (settlement sweeps it).
set check_function_bodies = off;

create table if not exists public.ai_token_reservations (
  id uuid primary key default gen_random_uuid(),
  organization_id uuid not null,
  token_type text not null references public.ai_token_types (token_type) on update cascade,
  feature text not null,
  user_id uuid,
  estimate integer not null check (estimate between 1 and 1000000000),
  held integer not null check (held >= 0 and held <= estimate),
  actual integer check (actual >= 0),
  charged integer check (charged >= 0),
  status text not null default 'active' check (status in ('active', 'committed', 'released', 'expired')),
  enforcement text not null check (enforcement in ('enforce', 'monitor', 'off')),
  request_id text check (length(request_id) between 1 and 200),
  usage_id uuid,
  expires_at timestamptz not null,
  settled_at timestamptz,
  created_at timestamptz not null default now()
);
comment on table public.ai_token_reservations is 'Holds for AI calls whose cost is known afterwards. held counts in ai_tokens.reserved while status is active and expires_at is in the future.';
create unique index if not exists ai_token_reservations_request_id_key
  on public.ai_token_reservations (organization_id, request_id) where request_id is not null;
create index if not exists ai_token_reservations_active_idx
  on public.ai_token_reservations (organization_id, token_type, expires_at) where status = 'active';
create index if not exists ai_token_reservations_user_date_idx on public.ai_token_reservations (user_id, created_at desc);
create index if not exists ai_token_reservations_token_type_idx on public.ai_token_reservations (token_type);

revoke all on public.ai_token_reservations from anon, authenticated;
grant select on public.ai_token_reservations to authenticated;
grant all on public.ai_token_reservations to service_role;
alter table public.ai_token_reservations enable row level security;
drop policy if exists "Admins view the organization's holds; members their own"
  on public.ai_token_reservations;
create policy "Admins view the organization's holds; members their own"
  on public.ai_token_reservations for select to authenticated
  using (
    organization_id in (
      select m.organization_id from ai_tokens_internal.memberships() m where m.role in ('owner', 'admin'))
    or (
      user_id = (select auth.uid())
      and organization_id in (select m.organization_id from ai_tokens_internal.memberships() m)
    )
  );
drop policy if exists "Service role manages reservations" on public.ai_token_reservations;
create policy "Service role manages reservations"
  on public.ai_token_reservations for all to service_role using (true) with check (true);

-- An active hold brings its row's settle_after forward to its expiry (07_settlement.sql).
create or replace trigger ai_token_reservations_settle_by_insert
  after insert on public.ai_token_reservations
  for each row when (new.status = 'active')
  execute function ai_tokens_internal.settle_by();
create or replace trigger ai_token_reservations_settle_by_update
  after update on public.ai_token_reservations
  for each row
  when (new.status = 'active'
        and (new.expires_at is distinct from old.expires_at or old.status <> 'active'))
  execute function ai_tokens_internal.settle_by();

-- The client's view of a reservation.
create or replace function ai_tokens_internal.reservation_json(hold public.ai_token_reservations)
returns jsonb
language sql
stable
set search_path = ''
as $$
  select jsonb_build_object(
    'reservation_id', hold.id, 'organization_id', hold.organization_id, 'feature', hold.feature,
    'token_type', hold.token_type, 'user_id', hold.user_id, 'estimate', hold.estimate, 'held', hold.held,
    'status', hold.status, 'actual', hold.actual, 'tokens_deducted', hold.charged,
    'usage_id', hold.usage_id, 'request_id', hold.request_id, 'enforcement', hold.enforcement,
    'expires_at', hold.expires_at, 'settled_at', hold.settled_at, 'created_at', hold.created_at)
$$;
revoke all on function ai_tokens_internal.reservation_json(public.ai_token_reservations) from public, anon, authenticated;

-- reserve_tokens: hold `estimate` tokens for an AI call whose cost is known afterwards.
-- available = balance - reserved; the hold stops counting when committed, released or
-- when ttl_seconds pass (no scheduler needed). The same checks and refusals as
-- deduct_tokens (not in plan 403, rate limited 429, insufficient 402, returned with
-- response.status and recorded). Idempotent per organization with request_id.
create or replace function public.reserve_tokens(
  feature text,
  estimate integer,
  ttl_seconds integer default 300,
  request_id text default null,
  organization_id uuid default null
)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  spend record;
  caller uuid;
  target_organization uuid;
  mode text;
  previous public.ai_token_reservations;
  hold public.ai_token_reservations;
  account public.ai_tokens;
  refused jsonb;
  insufficient jsonb;
  context jsonb;
  held_amount integer;
  available integer;
begin
  if reserve_tokens.estimate is null or reserve_tokens.estimate < 1 or reserve_tokens.estimate > 1000000000 then
    perform ai_tokens_internal.refuse(400, 'invalid_amount', 'estimate must be between 1 and 1000000000',
      jsonb_build_object('field', 'estimate', 'estimate', reserve_tokens.estimate, 'min', 1, 'max', 1000000000));
  end if;
  if reserve_tokens.ttl_seconds is null or reserve_tokens.ttl_seconds < 1 or reserve_tokens.ttl_seconds > 3600 then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'ttl_seconds must be between 1 and 3600',
      jsonb_build_object('field', 'ttl_seconds', 'min', 1, 'max', 3600));
  end if;
  spend := ai_tokens_internal.spend_context(reserve_tokens.feature, reserve_tokens.organization_id,
                                           reserve_tokens.request_id, true);
  caller := spend.caller_id;
  target_organization := spend.org_id;
  mode := spend.enforcement;

  -- A retry is answered before pricing, like deduct_tokens: the hold exists, so a plan
  -- change or a catalog edit since then must not turn its replay into a refusal.
  if reserve_tokens.request_id is not null then
    perform ai_tokens_internal.lock('reservation', target_organization::text || '/' || reserve_tokens.request_id);
    select * into previous from public.ai_token_reservations r
    where r.organization_id = target_organization and r.request_id = reserve_tokens.request_id;
    if found then
      -- A key belongs to its caller and its payload: anything else replays nothing.
      if previous.user_id is distinct from caller then
        perform ai_tokens_internal.refuse(409, 'idempotency_conflict', 'request_id was already used by another caller',
          jsonb_build_object('request_id', reserve_tokens.request_id));
      end if;
      if previous.feature <> reserve_tokens.feature or previous.estimate <> reserve_tokens.estimate then
        perform ai_tokens_internal.refuse(409, 'idempotency_conflict', 'request_id was already used for another reservation',
          jsonb_build_object('request_id', reserve_tokens.request_id, 'reservation_id', previous.id,
                             'feature', previous.feature, 'estimate', previous.estimate));
      end if;
      select t.balance - t.reserved into available from public.ai_tokens t
      where t.organization_id = previous.organization_id and t.token_type = previous.token_type;
      return ai_tokens_internal.reservation_json(previous)
        || jsonb_build_object('replayed', true, 'available', greatest(available, 0), 'would_have_refused', null);
    end if;
  end if;

  if spend.price_type is null then
    perform ai_tokens_internal.refuse(404, 'unknown_feature', 'Unknown feature',
      jsonb_build_object('feature', left(reserve_tokens.feature, 100)));
  end if;

  context := jsonb_build_object('feature', reserve_tokens.feature, 'user_id', caller,
                                'request_id', reserve_tokens.request_id, 'estimate', reserve_tokens.estimate);
  held_amount := 0;
  if mode <> 'off' then
    refused := ai_tokens_internal.policy_refusal(caller, target_organization, reserve_tokens.feature, spend.org_plan,
                                                 spend.offered, spend.price_type, spend.rule_id, spend.rule_max,
                                                 spend.rule_window);
    if refused is not null and mode = 'enforce' then
      return ai_tokens_internal.refusal_response(refused, target_organization, spend.price_type, context);
    end if;

    update public.ai_tokens t
    set reserved = t.reserved + reserve_tokens.estimate, updated_at = now()
    where t.organization_id = target_organization
      and t.token_type = spend.price_type
      and t.balance - t.reserved >= reserve_tokens.estimate
      and t.settle_after > now()
    returning t.balance - t.reserved into available;
    if available is not null then
      held_amount := reserve_tokens.estimate;
    else
      account := ai_tokens_internal.open_account(target_organization, spend.price_type);
      held_amount := ai_tokens_internal.obtainable(account, reserve_tokens.estimate, mode);
      if held_amount < reserve_tokens.estimate then
        insufficient := ai_tokens_internal.insufficient_refusal(reserve_tokens.feature, reserve_tokens.estimate,
                                                     spend.price_type, account);
        if mode = 'enforce' then
          -- Nothing is held: the rate-limit window gets its spend back.
          if spend.rule_id is not null and refused is null then
            perform ai_tokens_internal.give_back_rate_slot(caller, target_organization, spend.rule_id);
          end if;
          return ai_tokens_internal.refusal_response(insufficient, target_organization, spend.price_type, context);
        end if;
        refused := coalesce(refused, insufficient);
      end if;
      available := greatest(coalesce(account.balance - account.reserved, 0), 0) - held_amount;
      if held_amount > 0 then
        update public.ai_tokens t
        set reserved = t.reserved + held_amount, updated_at = now()
        where t.id = account.id;
      end if;
    end if;
  end if;

  insert into public.ai_token_reservations
    (organization_id, token_type, feature, user_id, estimate, held, enforcement, request_id, expires_at)
  values
    (target_organization, spend.price_type, reserve_tokens.feature, caller, reserve_tokens.estimate, held_amount,
     mode, reserve_tokens.request_id, now() + make_interval(secs => reserve_tokens.ttl_seconds))
  returning * into hold;
  if refused is not null then
    perform ai_tokens_internal.record_refusal(refused, target_organization, spend.price_type, mode,
      context || jsonb_build_object('reservation_id', hold.id, 'held', held_amount));
  end if;

  if available is null then
    -- off mode checked nothing: report what is available all the same.
    select greatest(t.balance - t.reserved, 0) into available from public.ai_tokens t
    where t.organization_id = target_organization and t.token_type = spend.price_type;
  end if;
  return ai_tokens_internal.reservation_json(hold)
    || jsonb_build_object('replayed', false, 'available', coalesce(available, 0),
                          'would_have_refused', ai_tokens_internal.refusal_summary(refused));
end
$$;
revoke all on function public.reserve_tokens(text, integer, integer, text, uuid) from public, anon, authenticated;
grant execute on function public.reserve_tokens(text, integer, integer, text, uuid) to authenticated, service_role;
comment on function public.reserve_tokens(text, integer, integer, text, uuid) is 'tokens-client: hold an estimate for an AI call whose cost is known afterwards';

-- The reservation a commit or release acts on, after checking the caller may settle it:
-- the service role, the user who reserved it, or an owner/admin of its organization.
-- Anyone else gets 404 (non-members: the hold's existence is not revealed) or 403.
create or replace function ai_tokens_internal.reservation_for_settlement(reservation_id uuid)
returns public.ai_token_reservations
language plpgsql
stable
set search_path = ''
as $$
declare
  hold public.ai_token_reservations;
  caller_role text;
  service boolean := ai_tokens_internal.is_service_role();
  caller uuid := (select auth.uid());
begin
  if reservation_for_settlement.reservation_id is null then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'reservation_id is required',
      jsonb_build_object('field', 'reservation_id'));
  end if;
  if not service and caller is null then
    perform ai_tokens_internal.refuse(401, 'unauthenticated', 'Sign in to use AI features');
  end if;
  select * into hold from public.ai_token_reservations r where r.id = reservation_for_settlement.reservation_id;
  if found and not service then
    caller_role := ai_tokens_internal.membership_role(hold.organization_id);
  end if;
  if hold.id is null or (not service and caller_role is null) then
    perform ai_tokens_internal.refuse(404, 'reservation_not_found',
      format('Reservation (id=%s) not found', reservation_for_settlement.reservation_id),
      jsonb_build_object('reservation_id', reservation_for_settlement.reservation_id));
  end if;
  if not service and hold.user_id is distinct from caller
     and caller_role not in ('owner', 'admin') then
    perform ai_tokens_internal.refuse(403, 'not_reservation_holder',
      'Only the user who reserved the tokens or an organization admin can settle this reservation',
      jsonb_build_object('reservation_id', hold.id));
  end if;
  return hold;
end
$$;
revoke all on function ai_tokens_internal.reservation_for_settlement(uuid) from public, anon, authenticated;

-- commit_reservation: charge the actual cost of a held AI call (actual >= 0; metered
-- usage counted by the provider), return the rest of the hold, and write the usage-log
-- row (journaled 'reservation_capture'). Overruns are never free and never refused after
-- the fact: an actual above the estimate is charged from the hold plus whatever else is
-- available now (never tokens held by other reservations, never below zero), and in
-- enforce mode what could not be charged becomes debt on the row, taken from the next
-- period's allowance at the refresh; the shortfall is recorded as an 'overrun' refusal
-- alert. A hold already committed, released or expired is refused (409
-- reservation_not_active), so a retried commit never charges twice.
create or replace function public.commit_reservation(reservation_id uuid, actual integer)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  hold public.ai_token_reservations;
  account public.ai_tokens;
  charge integer;
  new_usage_id uuid;
  remaining integer;
  remaining_purchased integer;
  debt_added integer;
begin
  if commit_reservation.actual is null or commit_reservation.actual < 0
     or commit_reservation.actual > 1000000000 then
    perform ai_tokens_internal.refuse(400, 'invalid_amount', 'actual must be between 0 and 1000000000',
      jsonb_build_object('field', 'actual', 'actual', commit_reservation.actual));
  end if;
  hold := ai_tokens_internal.reservation_for_settlement(commit_reservation.reservation_id);

  account := ai_tokens_internal.settle_tokens(hold.organization_id, hold.token_type);
  charge := case
    when hold.enforcement = 'off' or account.id is null then 0
    else least(commit_reservation.actual, greatest(account.balance - (account.reserved - hold.held), 0)) end;
  new_usage_id := case when charge > 0 then gen_random_uuid() end;
  debt_added := case when hold.enforcement = 'enforce' and account.id is not null
                     then commit_reservation.actual - charge else 0 end;

  update public.ai_token_reservations r
  set status = 'committed', actual = commit_reservation.actual, charged = charge,
      usage_id = new_usage_id, settled_at = now()
  where r.id = hold.id and r.status = 'active' and r.expires_at > now()
  returning * into hold;
  if not found then
    select * into hold from public.ai_token_reservations r where r.id = commit_reservation.reservation_id;
    perform ai_tokens_internal.refuse(409, 'reservation_not_active',
      format('Reservation (id=%s) is %s', hold.id, hold.status),
      jsonb_build_object('reservation_id', hold.id, 'status', hold.status));
  end if;

  remaining := account.balance;
  if account.id is not null then
    perform ai_tokens_internal.journal_as(jsonb_build_object(
      'kind', 'reservation_capture', 'reservation_id', hold.id, 'usage_id', new_usage_id));
    update public.ai_tokens t
    set balance = t.balance - charge,
        purchased_balance = least(t.purchased_balance, t.balance - charge),
        reserved = t.reserved - hold.held,
        debt = t.debt + debt_added,
        updated_at = now()
    where t.id = account.id
    returning t.balance, t.purchased_balance into remaining, remaining_purchased;
    perform ai_tokens_internal.journal_as(null);
  end if;

  if charge > 0 then
    -- The log's trigger rolls this row up (tokens.rolled_up is deduct_tokens' own mark).
    perform set_config('tokens.rolled_up', '', true);
    insert into public.ai_token_usage_log
      (id, organization_id, user_id, token_type, feature_used, tokens_deducted, balance_after, reservation_id)
    values
      (new_usage_id, hold.organization_id, hold.user_id, hold.token_type, hold.feature, charge, remaining, hold.id);
    if remaining = remaining_purchased then
      perform ai_tokens_internal.consume_grants(hold.organization_id, hold.token_type, remaining_purchased, new_usage_id);
    end if;
  end if;
  if charge < commit_reservation.actual and hold.enforcement <> 'off' then
    perform ai_tokens_internal.record_refusal(
      ai_tokens_internal.refusal(402, 'overrun', 'The AI call used more tokens than were available',
        jsonb_build_object('feature', hold.feature, 'token_type', hold.token_type, 'estimate', hold.estimate,
                           'required', commit_reservation.actual, 'balance', coalesce(account.balance, 0),
                           'shortfall', commit_reservation.actual - charge, 'debt_added', debt_added)),
      hold.organization_id, hold.token_type, 'monitor',
      jsonb_build_object('reservation_id', hold.id, 'user_id', hold.user_id, 'charged', charge,
                         'reservation_enforcement', hold.enforcement));
  end if;

  return ai_tokens_internal.reservation_json(hold) || jsonb_build_object(
    'remaining_balance', coalesce(remaining, 0),
    'uncharged', commit_reservation.actual - charge,
    'debt_added', debt_added,
    'overrun', greatest(commit_reservation.actual - hold.estimate, 0),
    'message', format('Used %s tokens for %s', charge, hold.feature));
end
$$;
revoke all on function public.commit_reservation(uuid, integer) from public, anon, authenticated;
grant execute on function public.commit_reservation(uuid, integer) to authenticated, service_role;
comment on function public.commit_reservation(uuid, integer) is 'tokens-client: charge the actual cost of a hold and return the rest';

-- release_reservation: give back everything a hold holds (nothing is charged). A hold
-- already committed, released or expired is refused (409 reservation_not_active).
create or replace function public.release_reservation(reservation_id uuid)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  hold public.ai_token_reservations;
  account public.ai_tokens;
  available integer;
begin
  hold := ai_tokens_internal.reservation_for_settlement(release_reservation.reservation_id);
  account := ai_tokens_internal.settle_tokens(hold.organization_id, hold.token_type);

  update public.ai_token_reservations r
  set status = 'released', settled_at = now()
  where r.id = hold.id and r.status = 'active' and r.expires_at > now()
  returning * into hold;
  if not found then
    select * into hold from public.ai_token_reservations r where r.id = release_reservation.reservation_id;
    perform ai_tokens_internal.refuse(409, 'reservation_not_active',
      format('Reservation (id=%s) is %s', hold.id, hold.status),
      jsonb_build_object('reservation_id', hold.id, 'status', hold.status));
  end if;
  if account.id is not null then
    update public.ai_tokens t
    set reserved = t.reserved - hold.held, updated_at = now()
    where t.id = account.id
    returning t.balance - t.reserved into available;
  end if;
  return ai_tokens_internal.reservation_json(hold) || jsonb_build_object(
    'released', hold.held, 'available', greatest(coalesce(available, 0), 0));
end
$$;
revoke all on function public.release_reservation(uuid) from public, anon, authenticated;
grant execute on function public.release_reservation(uuid) to authenticated, service_role;
comment on function public.release_reservation(uuid) is 'tokens-client: give back everything a hold holds';

