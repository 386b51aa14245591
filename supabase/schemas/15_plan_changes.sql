-- tokens-client · 15 plan changes: move an organization to another plan.
--
-- The plan itself is stored by the host (the change_organization_plan seam); the
-- balances of the current period follow it at once. Stripe events name the change, so a
-- redelivered event applies once.
set check_function_bodies = off;

create table if not exists public.ai_plan_change_events (
  event_id text primary key check (length(event_id) between 1 and 255),
  organization_id uuid not null,
  plan text not null,
  previous_plan text,
  result jsonb not null,
  processed_at timestamptz not null default now()
);
comment on table public.ai_plan_change_events is 'Processed plan-change events (e.g. Stripe event ids): set_organization_plan applies each once.';
create index if not exists ai_plan_change_events_organization_id_idx on public.ai_plan_change_events (organization_id);

revoke all on public.ai_plan_change_events from anon, authenticated;
grant all on public.ai_plan_change_events to service_role;
alter table public.ai_plan_change_events enable row level security;
drop policy if exists "Service role manages plan change events" on public.ai_plan_change_events;
create policy "Service role manages plan change events"
  on public.ai_plan_change_events for all to service_role using (true) with check (true);

-- set_organization_plan: move an organization to a plan and adjust the current period
-- of every token type at once (journaled 'plan_change'): a higher allocation adds what
-- lies above the highest allocation reached in the period (period_peak_allocation), so
-- a period never spends more than that peak plus purchased tokens; a lower one caps the period allowance (balance minus
-- purchased tokens) at the new allocation. Purchased tokens are kept. Idempotent on
-- event_id (e.g. a Stripe event id): a retry returns the first result; the same
-- event_id for another organization or plan is refused (409). Service role only.
create or replace function public.set_organization_plan(organization_id uuid, plan text, event_id text default null)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  processed public.ai_plan_change_events;
  previous_plan text;
  token record;
  account public.ai_tokens;
  new_allocation integer;
  new_balance integer;
  changes jsonb := '[]'::jsonb;
  result jsonb;
begin
  perform ai_tokens_internal.require_service_role('set_organization_plan');
  perform ai_tokens_internal.require_argument(set_organization_plan.organization_id is not null, 'organization_id');
  perform ai_tokens_internal.require_argument(set_organization_plan.plan is not null, 'plan');
  perform ai_tokens_internal.require_plan(set_organization_plan.plan);
  if set_organization_plan.event_id is not null
     and (length(set_organization_plan.event_id) = 0 or length(set_organization_plan.event_id) > 255) then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'event_id must be 1 to 255 characters',
      jsonb_build_object('field', 'event_id'));
  end if;

  if set_organization_plan.event_id is not null then
    perform ai_tokens_internal.lock('plan_event', set_organization_plan.event_id);
    select * into processed from public.ai_plan_change_events e where e.event_id = set_organization_plan.event_id;
    if found then
      if processed.organization_id <> set_organization_plan.organization_id
         or processed.plan <> set_organization_plan.plan then
        perform ai_tokens_internal.refuse(409, 'idempotency_conflict',
          'event_id was already applied to another plan change',
          jsonb_build_object('event_id', set_organization_plan.event_id,
                             'organization_id', processed.organization_id, 'plan', processed.plan));
      end if;
      return processed.result || jsonb_build_object('replayed', true);
    end if;
  end if;

  perform ai_tokens_internal.require_organization(set_organization_plan.organization_id);
  -- One plan change of an organization at a time (initialize_tokens takes the same lock).
  perform ai_tokens_internal.lock('organization', set_organization_plan.organization_id::text);
  previous_plan := ai_tokens_internal.organization_plan(set_organization_plan.organization_id);

  for token in select tt.token_type from public.ai_token_types tt order by tt.token_type loop
    new_allocation := ai_tokens_internal.plan_allocation(set_organization_plan.plan, token.token_type);
    -- Open and settle first (under the old plan), so the change applies to the current
    -- period.
    account := ai_tokens_internal.open_account(set_organization_plan.organization_id, token.token_type);
    perform ai_tokens_internal.journal_as(jsonb_build_object(
      'kind', 'plan_change', 'external_id', set_organization_plan.event_id,
      'reason', format('plan %s -> %s', previous_plan, set_organization_plan.plan)));
    new_balance := least(ai_tokens_internal.balance_ceiling(), case
      -- Only the allocation above the period's highest is new: a downgrade forfeits the
      -- allowance above the lower plan, and cycling back up does not grant it again.
      when new_allocation > account.total_allocated
        then account.balance + greatest(new_allocation - account.period_peak_allocation, 0)
      when new_allocation < account.total_allocated
        then least(account.balance - account.purchased_balance, new_allocation) + account.purchased_balance
      else account.balance end);
    if new_balance <> account.balance or new_allocation <> account.total_allocated then
      update public.ai_tokens t
      set balance = new_balance, total_allocated = new_allocation, updated_at = now()
      where t.id = account.id;
    end if;
    changes := changes || jsonb_build_object(
      'token_type', token.token_type, 'previous_allocation', account.total_allocated,
      'allocation', new_allocation, 'previous_balance', account.balance, 'balance', new_balance);
    perform ai_tokens_internal.journal_as(null);
  end loop;

  perform ai_tokens_internal.change_organization_plan(set_organization_plan.organization_id, set_organization_plan.plan);

  result := jsonb_build_object(
    'organization_id', set_organization_plan.organization_id,
    'plan', set_organization_plan.plan,
    'previous_plan', previous_plan,
    'event_id', set_organization_plan.event_id,
    'changes', changes,
    'replayed', false);
  if set_organization_plan.event_id is not null then
    insert into public.ai_plan_change_events (event_id, organization_id, plan, previous_plan, result)
    values (set_organization_plan.event_id, set_organization_plan.organization_id, set_organization_plan.plan,
            previous_plan, result);
  end if;
  return result;
end
$$;
revoke all on function public.set_organization_plan(uuid, text, text) from public, anon, authenticated;
grant execute on function public.set_organization_plan(uuid, text, text) to service_role;
comment on function public.set_organization_plan(uuid, text, text) is 'tokens-client: move an organization to a plan, idempotent on event_id (service role)';

