-- tokens-client · 14 refunds: give one deduction back, once.
set check_function_bodies = off;

-- refund_deduction: give back the tokens of one usage-log row, once (journaled
-- 'refund'); a second refund is refused (409 already_refunded). Purchased tokens go
-- back to their grant while it is valid, everything else to the period allowance.
-- The service role or an owner/admin of the organization (404 for non-members, 403
-- for other members). Owners and admins may refund ai_token_settings.admin_refunds_per_period
-- deductions per period and token type (429 refund_limit_reached after that); the
-- service role is not limited.
create or replace function public.refund_deduction(usage_id uuid, reason text default null)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  refunded public.ai_token_usage_log;
  caller_role text;
  account public.ai_tokens;
  restored_purchased integer;
  refund_limit integer;
  refunds_used bigint;
begin
  if refund_deduction.usage_id is null then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'usage_id is required', jsonb_build_object('field', 'usage_id'));
  end if;
  if refund_deduction.reason is not null and length(refund_deduction.reason) > 500 then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'reason must be at most 500 characters',
      jsonb_build_object('field', 'reason'));
  end if;
  if not ai_tokens_internal.is_service_role() and (select auth.uid()) is null then
    perform ai_tokens_internal.refuse(401, 'unauthenticated', 'Sign in to use AI features');
  end if;
  select * into refunded from public.ai_token_usage_log l where l.id = refund_deduction.usage_id;
  if found and not ai_tokens_internal.is_service_role() then
    caller_role := ai_tokens_internal.membership_role(refunded.organization_id);
  end if;
  if not found or (not ai_tokens_internal.is_service_role() and caller_role is null) then
    perform ai_tokens_internal.refuse(404, 'usage_not_found', format('Usage (id=%s) not found', refund_deduction.usage_id),
      jsonb_build_object('usage_id', refund_deduction.usage_id));
  end if;
  if not ai_tokens_internal.is_service_role() and caller_role not in ('owner', 'admin') then
    perform ai_tokens_internal.refuse(403, 'admin_required', 'Only organization owners and admins can refund',
      jsonb_build_object('usage_id', refunded.id));
  end if;

  account := ai_tokens_internal.settle_tokens(refunded.organization_id, refunded.token_type);
  update public.ai_token_usage_log l
  set refunded_at = now(), refunded_by = (select auth.uid()), refund_reason = refund_deduction.reason
  where l.id = refunded.id and l.refunded_at is null
  returning * into refunded;
  if not found then
    select * into refunded from public.ai_token_usage_log l where l.id = refund_deduction.usage_id;
    perform ai_tokens_internal.refuse(409, 'already_refunded', format('Usage (id=%s) was already refunded', refunded.id),
      jsonb_build_object('usage_id', refunded.id, 'refunded_at', refunded.refunded_at));
  end if;
  if account.id is null then
    perform ai_tokens_internal.refuse(409, 'not_initialized',
      format('Organization (id=%s) has no %s tokens to refund into', refunded.organization_id, refunded.token_type),
      jsonb_build_object('usage_id', refunded.id, 'token_type', refunded.token_type));
  end if;

  -- Owners and admins refund at most admin_refunds_per_period deductions per period and
  -- token type (counted, this one included, under the row lock settle_tokens took); the
  -- service role is not limited. Otherwise deduct + refund would be free AI calls.
  if not ai_tokens_internal.is_service_role() and account.id is not null then
    select s.admin_refunds_per_period into refund_limit from public.ai_token_settings s;
    select count(*) into refunds_used from public.ai_token_usage_log l
    where l.organization_id = refunded.organization_id and l.token_type = refunded.token_type
      and l.refunded_by is not null and l.refunded_at >= account.period_started_at;
    if refunds_used > coalesce(refund_limit, 0) then
      perform ai_tokens_internal.refuse(429, 'refund_limit_reached', 'Refund limit reached for this period',
        jsonb_build_object('usage_id', refunded.id, 'token_type', refunded.token_type, 'limit', coalesce(refund_limit, 0),
                           'used', refunds_used - 1, 'refresh_date', account.refresh_date));
    end if;
  end if;

  if account.balance::bigint + refunded.tokens_deducted > ai_tokens_internal.balance_ceiling() then
    perform ai_tokens_internal.refuse(409, 'balance_ceiling', 'The balance would exceed its maximum',
      jsonb_build_object('usage_id', refunded.id, 'token_type', refunded.token_type, 'balance', account.balance,
                         'tokens', refunded.tokens_deducted, 'max_balance', ai_tokens_internal.balance_ceiling()));
  end if;

  with restored as (
    update public.ai_token_grants g
    set remaining = g.remaining + u.amount
    from public.ai_token_grant_usage u
    where u.usage_id = refunded.id and g.id = u.grant_id
      and g.expired_at is null and (g.expires_at is null or g.expires_at > now())
    returning u.amount
  )
  select coalesce(sum(r.amount), 0) into restored_purchased from restored r;

  perform ai_tokens_internal.journal_as(jsonb_build_object(
    'kind', 'refund', 'usage_id', refunded.id, 'reason', refund_deduction.reason));
  update public.ai_tokens t
  set balance = t.balance + refunded.tokens_deducted,
      purchased_balance = t.purchased_balance + restored_purchased,
      updated_at = now()
  where t.id = account.id
  returning * into account;
  perform ai_tokens_internal.journal_as(null);

  return jsonb_build_object(
    'usage_id', refunded.id, 'organization_id', refunded.organization_id, 'token_type', refunded.token_type,
    'feature', refunded.feature_used, 'tokens_refunded', refunded.tokens_deducted,
    'restored_to_purchased', restored_purchased, 'remaining_balance', account.balance,
    'refunded_at', refunded.refunded_at, 'reason', refunded.refund_reason);
end
$$;
revoke all on function public.refund_deduction(uuid, text) from public, anon, authenticated;
grant execute on function public.refund_deduction(uuid, text) to authenticated, service_role;
comment on function public.refund_deduction(uuid, text) is 'tokens-client: give one deduction back, once (org admins, service role)';

