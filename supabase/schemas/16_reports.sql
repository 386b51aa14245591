-- tokens-client · 16 reports: the guide's "usage by feature" and "per-user usage".
set check_function_bodies = off;

-- get_usage_report: uses and tokens grouped by feature, user (with the display name from
-- the user_display_name seam) or day, since a moment. Owners/admins see their whole
-- organization, members only their own entries (the usage log's policy, applied here
-- explicitly since the display names come from the host). The service role must name
-- the organization.
create or replace function public.get_usage_report(
  organization_id uuid default null,
  group_by text default 'feature',
  since timestamptz default null
)
returns table (key text, label text, uses bigint, tokens bigint, day date)
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  target_organization uuid;
  caller_role text;
  everyone boolean;
begin
  if group_by is null or group_by not in ('feature', 'user', 'day') then
    perform ai_tokens_internal.refuse(400, 'invalid_request', 'group_by must be feature, user or day',
      jsonb_build_object('field', 'group_by'));
  end if;
  select r.organization_id, r.role into target_organization, caller_role
  from ai_tokens_internal.resolve_organization(get_usage_report.organization_id) r;
  everyone := caller_role in ('service_role', 'owner', 'admin');

  return query
  with entries as (
    select l.feature_used, l.user_id, l.tokens_deducted, (l.created_at at time zone 'UTC')::date as entry_day
    from public.ai_token_usage_log l
    where l.organization_id = target_organization
      and (everyone or l.user_id = (select auth.uid()))
      and (since is null or l.created_at >= since)
  )
  select g.key, g.label, g.uses, g.tokens, g.day
  from (
    select e.feature_used as key, e.feature_used as label, count(*) as uses,
           sum(e.tokens_deducted)::bigint as tokens, null::date as day
    from entries e where group_by = 'feature'
    group by e.feature_used
    union all
    select coalesce(e.user_id::text, 'service'),
           coalesce(ai_tokens_internal.user_display_name(e.user_id), e.user_id::text, 'service role'),
           count(*), sum(e.tokens_deducted)::bigint, null::date
    from entries e
    where group_by = 'user'
    group by e.user_id
    union all
    select e.entry_day::text, to_char(e.entry_day, 'YYYY-MM-DD'), count(*),
           sum(e.tokens_deducted)::bigint, e.entry_day
    from entries e where group_by = 'day'
    group by e.entry_day
  ) g
  order by case when group_by = 'day' then g.key end desc nulls last, g.tokens desc, g.key;
end
$$;
revoke all on function public.get_usage_report(uuid, text, timestamptz) from public, anon, authenticated;
grant execute on function public.get_usage_report(uuid, text, timestamptz) to authenticated, service_role;
comment on function public.get_usage_report(uuid, text, timestamptz) is 'tokens-client: uses and tokens by feature, user or day';
