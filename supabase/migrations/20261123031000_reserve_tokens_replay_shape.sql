-- tokens-client: reserve_tokens answers a replay with the same keys as a first call.
--
-- A retried reserve_tokens (same request_id) returned the reservation without the
-- "available" key that the first call has, so a typed client needed two shapes. The
-- replay now reports what is available now (balance - reserved, at least 0), like the
-- first call reports what was available right after the hold. In off mode the first
-- call reported null; it now reports what is available too.

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
  caller uuid := (select auth.uid());
  target_organization uuid;
  price record;
  mode text;
  previous public.ai_token_reservations;
  hold public.ai_token_reservations;
  limited record;
  account public.ai_tokens;
  refused jsonb;
  insufficient jsonb;
  context jsonb;
  held_amount integer;
  available integer;
begin
  if reserve_tokens.estimate is null or reserve_tokens.estimate < 1 or reserve_tokens.estimate > 1000000000 then
    perform private.refuse(400, 'invalid_amount', 'estimate must be between 1 and 1000000000',
      jsonb_build_object('field', 'estimate', 'estimate', reserve_tokens.estimate, 'min', 1, 'max', 1000000000));
  end if;
  if reserve_tokens.ttl_seconds is null or reserve_tokens.ttl_seconds < 1 or reserve_tokens.ttl_seconds > 3600 then
    perform private.refuse(400, 'invalid_request', 'ttl_seconds must be between 1 and 3600',
      jsonb_build_object('field', 'ttl_seconds', 'min', 1, 'max', 3600));
  end if;
  if reserve_tokens.request_id is not null
     and (length(reserve_tokens.request_id) = 0 or length(reserve_tokens.request_id) > 200) then
    perform private.refuse(400, 'invalid_request', 'request_id must be 1 to 200 characters',
      jsonb_build_object('field', 'request_id'));
  end if;
  select r.organization_id into target_organization
  from private.resolve_organization(reserve_tokens.organization_id) r;
  if reserve_tokens.feature is null or length(btrim(reserve_tokens.feature)) = 0 then
    perform private.refuse(400, 'invalid_request', 'feature is required',
      jsonb_build_object('field', 'feature'));
  end if;
  mode := private.enforcement_mode(target_organization);

  -- A retry is answered before pricing, like deduct_tokens: the hold exists, so a plan
  -- change or a catalog edit since then must not turn its replay into a refusal.
  if reserve_tokens.request_id is not null then
    perform pg_advisory_xact_lock(hashtextextended(
      'ai_tokens/reservation/' || target_organization::text || '/' || reserve_tokens.request_id, 0));
    select * into previous from public.ai_token_reservations r
    where r.organization_id = target_organization and r.request_id = reserve_tokens.request_id;
    if found then
      if previous.feature <> reserve_tokens.feature or previous.estimate <> reserve_tokens.estimate then
        perform private.refuse(409, 'idempotency_conflict',
          format('request_id %s was already used for another reservation', left(reserve_tokens.request_id, 100)),
          jsonb_build_object('request_id', reserve_tokens.request_id, 'reservation_id', previous.id,
                             'feature', previous.feature, 'estimate', previous.estimate));
      end if;
      select t.balance - t.reserved into available from public.ai_tokens t
      where t.organization_id = previous.organization_id and t.token_type = previous.token_type;
      return private.reservation_json(previous)
        || jsonb_build_object('replayed', true, 'available', greatest(available, 0), 'would_have_refused', null);
    end if;
  end if;

  select * into price from private.look_up_feature(reserve_tokens.feature, target_organization);

  context := jsonb_build_object('feature', reserve_tokens.feature, 'user_id', caller,
                                'request_id', reserve_tokens.request_id, 'estimate', reserve_tokens.estimate);
  held_amount := 0;
  if mode <> 'off' then
    if not price.in_plan then
      refused := private.refusal(403, 'feature_not_in_plan', format('Not available on %s plan', initcap(price.plan)),
        jsonb_build_object('feature', reserve_tokens.feature, 'plan', price.plan, 'token_type', price.token_type));
    elsif caller is not null then
      select * into limited from private.check_rate_limit(caller, target_organization, price.plan, reserve_tokens.feature);
      if limited.retry_after_seconds is not null then
        refused := private.refusal(429, 'rate_limited', 'Rate limit exceeded. Wait before next request.',
          jsonb_build_object('feature', reserve_tokens.feature, 'limit', limited.max_requests,
                             'window_seconds', limited.window_seconds,
                             'retry_after_seconds', limited.retry_after_seconds));
      end if;
    end if;
    if refused is not null and mode = 'enforce' then
      return private.refusal_response(refused, target_organization, price.token_type, context);
    end if;

    update public.ai_tokens t
    set reserved = t.reserved + reserve_tokens.estimate, updated_at = now()
    where t.organization_id = target_organization
      and t.token_type = price.token_type
      and t.balance - t.reserved >= reserve_tokens.estimate
      and not private.settlement_due(t.organization_id, t.token_type, t.refresh_date)
    returning t.balance - t.reserved into available;
    if available is not null then
      held_amount := reserve_tokens.estimate;
    else
      account := private.settle_tokens(target_organization, price.token_type);
      held_amount := case
        when account.id is null then 0
        when account.balance - account.reserved >= reserve_tokens.estimate then reserve_tokens.estimate
        when mode = 'monitor' then greatest(least(reserve_tokens.estimate, account.balance - account.reserved), 0)
        else 0 end;
      if held_amount < reserve_tokens.estimate then
        insufficient := private.refusal(402, 'insufficient_tokens', 'You''re out of AI tokens',
          jsonb_build_object('feature', reserve_tokens.feature, 'token_type', price.token_type,
                             'required', reserve_tokens.estimate, 'balance', coalesce(account.balance, 0),
                             'reserved', coalesce(account.reserved, 0),
                             'available', greatest(coalesce(account.balance - account.reserved, 0), 0),
                             'initialized', account.id is not null));
        if mode = 'enforce' then
          return private.refusal_response(insufficient, target_organization, price.token_type, context);
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
    (target_organization, price.token_type, reserve_tokens.feature, caller, reserve_tokens.estimate, held_amount,
     mode, reserve_tokens.request_id, now() + make_interval(secs => reserve_tokens.ttl_seconds))
  returning * into hold;
  if refused is not null then
    perform private.record_refusal(refused, target_organization, price.token_type, mode,
      context || jsonb_build_object('reservation_id', hold.id, 'held', held_amount));
  end if;

  if available is null then
    -- off mode checked nothing: report what is available all the same.
    select greatest(t.balance - t.reserved, 0) into available from public.ai_tokens t
    where t.organization_id = target_organization and t.token_type = price.token_type;
  end if;
  return private.reservation_json(hold)
    || jsonb_build_object('replayed', false, 'available', coalesce(available, 0),
                          'would_have_refused', private.refusal_summary(refused));
end
$$;
revoke all on function public.reserve_tokens(text, integer, integer, text, uuid) from public, anon, authenticated;
grant execute on function public.reserve_tokens(text, integer, integer, text, uuid) to authenticated, service_role;
