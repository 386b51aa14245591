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

  -- Whole UTC days from the rollup (ai_token_usage_daily), the partial day `since`
  -- falls in from the log itself: the cost follows the days asked for, not the log.
  return query
  with entries as (
    select d.feature, d.user_id, d.uses, d.tokens, d.day as entry_day
    from public.ai_token_usage_daily d
    where d.organization_id = target_organization
      and (everyone or d.user_id = (select auth.uid()))
      and (since is null or d.day > (since at time zone 'UTC')::date)
      and (d.uses <> 0 or d.tokens <> 0)
    union all
    select l.feature_used, l.user_id, 1::bigint, l.tokens_deducted::bigint, (l.created_at at time zone 'UTC')::date
    from public.ai_token_usage_log l
    where since is not null
      and l.organization_id = target_organization
      and (everyone or l.user_id = (select auth.uid()))
      and l.created_at >= since
      and l.created_at < ((since at time zone 'UTC')::date + 1)::timestamp at time zone 'UTC'
  )
  select g.key, g.label, g.uses, g.tokens, g.day
  from (
    select e.feature as key, e.feature as label, sum(e.uses)::bigint as uses,
           sum(e.tokens)::bigint as tokens, null::date as day
    from entries e where group_by = 'feature'
    group by e.feature
    union all
    select coalesce(e.user_id::text, 'service'),
           coalesce(ai_tokens_internal.user_display_name(e.user_id), e.user_id::text, 'service role'),
           sum(e.uses)::bigint, sum(e.tokens)::bigint, null::date
    from entries e
    where group_by = 'user'
    group by e.user_id
    union all
    select e.entry_day::text, to_char(e.entry_day, 'YYYY-MM-DD'), sum(e.uses)::bigint,
           sum(e.tokens)::bigint, e.entry_day
    from entries e where group_by = 'day'
    group by e.entry_day
  ) g
  order by case when group_by = 'day' then g.key end desc nulls last, g.tokens desc, g.key;
end
$$;
revoke all on function public.get_usage_report(uuid, text, timestamptz) from public, anon, authenticated;
grant execute on function public.get_usage_report(uuid, text, timestamptz) to authenticated, service_role;
comment on function public.get_usage_report(uuid, text, timestamptz) is 'tokens-client: uses and tokens by feature, user or day';
