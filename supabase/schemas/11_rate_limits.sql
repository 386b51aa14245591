-- tokens-client · 11 rate limits: per-user spending limits as data.
--
-- At most max_requests deductions/reservations per user in any window_seconds. The
-- most specific row applies: an organization's own row, then feature+plan, feature,
-- plan, and the default (no organization, plan or feature). The service role is never
-- limited.
set check_function_bodies = off;

create table if not exists public.ai_rate_limits (
  id bigint generated always as identity primary key,
  organization_id uuid,
  plan text references public.ai_plans (plan) on update cascade on delete cascade,
  feature text references public.ai_features (feature) on update cascade on delete cascade,
  max_requests integer not null check (max_requests between 1 and 1000000),
  window_seconds integer not null check (window_seconds between 1 and 86400),
  constraint ai_rate_limits_scope_key unique nulls not distinct (organization_id, plan, feature)
);
comment on table public.ai_rate_limits is 'Per-user spending limits: at most max_requests deductions/reservations in any window_seconds. The most specific row applies (organization, feature+plan, feature, plan, default). A row with a feature counts only that feature''s spending.';
comment on column public.ai_rate_limits.organization_id is
  'When set, the row applies to this organization only and wins over plan and feature rows (a negotiated limit, or a relaxed one for a batch job).';
create index if not exists ai_rate_limits_feature_idx on public.ai_rate_limits (feature);
create index if not exists ai_rate_limits_plan_idx on public.ai_rate_limits (plan);
create index if not exists ai_rate_limits_organization_idx on public.ai_rate_limits (organization_id);

revoke all on public.ai_rate_limits from anon, authenticated;
grant select on public.ai_rate_limits to authenticated;
grant all on public.ai_rate_limits to service_role;
alter table public.ai_rate_limits enable row level security;
drop policy if exists "Users view shared rate limits and their organization's" on public.ai_rate_limits;
create policy "Users view shared rate limits and their organization's"
  on public.ai_rate_limits for select to authenticated
  using (
    organization_id is null
    or organization_id in (select m.organization_id from ai_tokens_internal.memberships() m)
  );
drop policy if exists "Service role manages rate limits" on public.ai_rate_limits;
create policy "Service role manages rate limits"
  on public.ai_rate_limits for all to service_role using (true) with check (true);

-- The guide's "more than 5 in the last minute" as the default row.
insert into public.ai_rate_limits (plan, feature, max_requests, window_seconds)
select * from (values
  (null::text, null::text, 5, 60)
) as defaults (plan, feature, max_requests, window_seconds)
where not exists (select 1 from public.ai_rate_limits)
on conflict do nothing;

create or replace function ai_tokens_internal.check_rate_limit(user_id uuid, organization_id uuid, plan text, feature text)
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

  perform ai_tokens_internal.lock('rate', check_rate_limit.user_id::text);

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
revoke all on function ai_tokens_internal.check_rate_limit(uuid, uuid, text, text) from public, anon, authenticated;

-- set_rate_limit: create or change the limit of one scope (organization, plan, feature;
-- null means any). Service role only. Returns the row.
create or replace function public.set_rate_limit(
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
  perform ai_tokens_internal.require_service_role('set_rate_limit');
  if max_requests is null or max_requests not between 1 and 1000000 then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'max_requests must be between 1 and 1000000',
      jsonb_build_object('field', 'max_requests'));
  end if;
  if window_seconds is null or window_seconds not between 1 and 86400 then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'window_seconds must be between 1 and 86400',
      jsonb_build_object('field', 'window_seconds'));
  end if;
  perform ai_tokens_internal.require_plan(set_rate_limit.plan);
  if feature is not null and not exists (select 1 from public.ai_features f where f.feature = set_rate_limit.feature) then
    perform ai_tokens_internal.refuse(404, 'unknown_feature', 'Unknown feature',
      jsonb_build_object('feature', left(feature, 100)));
  end if;
  perform ai_tokens_internal.require_organization(set_rate_limit.organization_id);

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
comment on function public.set_rate_limit(integer, integer, uuid, text, text) is 'tokens-client: create or change a per-user spending limit (service role)';

