-- Rate limits per organization: a negotiated limit for one customer (or a relaxed one
-- for a batch job's organization) without touching the plan-wide rows. The most specific
-- row still wins; an organization's own rows come before plan and feature rows.

alter table public.ai_rate_limits
  add column organization_id uuid references public.organizations (id) on delete cascade;
alter table public.ai_rate_limits drop constraint ai_rate_limits_plan_feature_key;
alter table public.ai_rate_limits add constraint ai_rate_limits_scope_key
  unique nulls not distinct (organization_id, plan, feature);
create index ai_rate_limits_organization_idx on public.ai_rate_limits (organization_id);
comment on column public.ai_rate_limits.organization_id is
  'When set, the row applies to this organization only and wins over plan and feature rows.';

-- A tenant may read the shared limits and its own, never another organization's.
drop policy "Signed-in users can view rate limits" on public.ai_rate_limits;
create policy "Signed-in users can view shared rate limits and their organization's"
  on public.ai_rate_limits for select to authenticated
  using (
    organization_id is null
    or organization_id in (select m.organization_id from private.memberships() m)
  );

create or replace function private.check_rate_limit(user_id uuid, organization_id uuid, plan text, feature text)
returns table (max_requests integer, window_seconds integer, recent integer, retry_after_seconds integer)
language plpgsql
volatile
set search_path = ''
as $$
declare
  rule record;
  counted integer;
  oldest timestamptz;
begin
  select l.max_requests, l.window_seconds, l.feature into rule
  from public.ai_rate_limits l
  where (l.organization_id is null or l.organization_id = check_rate_limit.organization_id)
    and (l.plan is null or l.plan = check_rate_limit.plan)
    and (l.feature is null or l.feature = check_rate_limit.feature)
  order by (l.organization_id is not null) desc, (l.feature is not null) desc,
           (l.plan is not null) desc
  limit 1;
  if not found then
    return;
  end if;

  perform pg_advisory_xact_lock(hashtextextended('ai_tokens/rate/' || check_rate_limit.user_id::text, 0));

  select count(*)::integer, min(e.created_at) into counted, oldest
  from (
    select s.created_at
    from (
      select l.created_at from public.ai_token_usage_log l
      where l.user_id = check_rate_limit.user_id
        and l.organization_id = check_rate_limit.organization_id
        and l.reservation_id is null
        and l.created_at > now() - make_interval(secs => rule.window_seconds)
        and (rule.feature is null or l.feature_used = rule.feature)
      union all
      select r.created_at from public.ai_token_reservations r
      where r.user_id = check_rate_limit.user_id
        and r.organization_id = check_rate_limit.organization_id
        and r.created_at > now() - make_interval(secs => rule.window_seconds)
        and (rule.feature is null or r.feature = rule.feature)
    ) s
    order by s.created_at desc
    limit rule.max_requests
  ) e;

  return query select rule.max_requests::integer, rule.window_seconds::integer, counted,
    case when counted >= rule.max_requests then
      greatest(1, ceil(extract(epoch from oldest + make_interval(secs => rule.window_seconds) - now())))::integer
    end;
end
$$;
revoke all on function private.check_rate_limit(uuid, uuid, text, text) from public, anon, authenticated;

-- set_rate_limit: create or change the limit of one scope (organization, plan, feature;
-- null means any). Service role only. Returns the row.
create function public.set_rate_limit(
  max_requests integer,
  window_seconds integer default 60,
  organization_id uuid default null,
  plan text default null,
  feature text default null
)
returns public.ai_rate_limits
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  saved public.ai_rate_limits;
begin
  if not private.is_service_role() then
    perform private.refuse(403, 'service_role_required', 'set_rate_limit requires the service role');
  end if;
  if max_requests is null or max_requests not between 1 and 1000000 then
    perform private.refuse(400, 'invalid_request', 'max_requests must be between 1 and 1000000',
      jsonb_build_object('field', 'max_requests'));
  end if;
  if window_seconds is null or window_seconds not between 1 and 86400 then
    perform private.refuse(400, 'invalid_request', 'window_seconds must be between 1 and 86400',
      jsonb_build_object('field', 'window_seconds'));
  end if;
  if plan is not null and plan not in ('starter', 'pro', 'enterprise') then
    perform private.refuse(400, 'invalid_plan', format('Unknown plan: %s', left(plan, 50)),
      jsonb_build_object('plan', left(plan, 50)));
  end if;
  if feature is not null and not exists (select 1 from public.ai_features f where f.feature = set_rate_limit.feature) then
    perform private.refuse(404, 'unknown_feature', format('Unknown feature: %s', left(feature, 100)),
      jsonb_build_object('feature', left(feature, 100)));
  end if;
  if organization_id is not null and not exists (
    select 1 from public.organizations o where o.id = set_rate_limit.organization_id
  ) then
    perform private.refuse(404, 'organization_not_found',
      format('Organization (id=%s) not found', set_rate_limit.organization_id),
      jsonb_build_object('organization_id', set_rate_limit.organization_id));
  end if;

  insert into public.ai_rate_limits as l (organization_id, plan, feature, max_requests, window_seconds)
  values (set_rate_limit.organization_id, set_rate_limit.plan, set_rate_limit.feature,
          set_rate_limit.max_requests, set_rate_limit.window_seconds)
  on conflict on constraint ai_rate_limits_scope_key do update
    set max_requests = excluded.max_requests, window_seconds = excluded.window_seconds
  returning l.* into saved;
  return saved;
end
$$;
revoke all on function public.set_rate_limit(integer, integer, uuid, text, text) from public, anon, authenticated;
grant execute on function public.set_rate_limit(integer, integer, uuid, text, text) to service_role;
