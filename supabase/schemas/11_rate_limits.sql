-- tokens-client · 11 rate limits: per-user spending limits as data.
--
-- At most max_requests deductions/reservations per user in each window of
-- window_seconds (a window starts with the user's first spend after the previous one
-- ended). The most specific row applies: an organization's own row, then feature+plan,
-- feature, plan, and the default (no organization, plan or feature); each row counts
-- the spends it governs. The service role is never limited.
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
comment on table public.ai_rate_limits is 'Per-user spending limits: at most max_requests deductions/reservations in each window of window_seconds, which starts with the user''s first spend after the previous window ended. The most specific row applies (organization, feature+plan, feature, plan, default), and each row counts the spends it governs (a row with a feature: only that feature''s).';
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

-- Each user's spends in the current window of each rule, one row per (user,
-- organization, rule): a window starts with the first spend after the previous one
-- ended and admits max_requests spends. A spend counts itself in one conditional upsert
-- of this row (O(1), whatever the rate or the window), and the row lock it takes
-- serialises only that user's own spends under that rule, so the count is exact under
-- concurrency. Refused spends are given back.
create table if not exists public.ai_rate_limit_windows (
  user_id uuid not null,
  organization_id uuid not null,
  rate_limit_id bigint not null,
  window_started_at timestamptz not null,
  spends integer not null check (spends >= 0),
  constraint ai_rate_limit_windows_pkey primary key (user_id, organization_id, rate_limit_id)
);
comment on table public.ai_rate_limit_windows is 'Rate-limit state: the spends of a user under a rule (ai_rate_limits.id) in the window that started at window_started_at. Written by the spending functions; rows of ended windows are removed by refresh_due_tokens.';

revoke all on public.ai_rate_limit_windows from anon, authenticated;
grant all on public.ai_rate_limit_windows to service_role;
alter table public.ai_rate_limit_windows enable row level security;
drop policy if exists "Service role manages rate-limit windows" on public.ai_rate_limit_windows;
create policy "Service role manages rate-limit windows"
  on public.ai_rate_limit_windows for all to service_role using (true) with check (true);

-- Count one spend of a user under a rule: null when it fits the window (counted), else
-- the seconds until the window ends (nothing counted).
create or replace function ai_tokens_internal.take_rate_slot(user_id uuid, organization_id uuid, rate_limit_id bigint,
                                                             max_requests integer, window_seconds integer)
returns integer
language plpgsql
volatile
set search_path = ''
as $$
declare
  ended timestamptz := now() - make_interval(secs => take_rate_slot.window_seconds);
  started timestamptz;
begin
  -- The common case first: the row exists. A full window matches nothing and locks
  -- nothing; racing spends that both fit queue on the row and are counted one by one.
  for attempt in 1..2 loop
    update public.ai_rate_limit_windows w
    set window_started_at = case when w.window_started_at <= ended then now() else w.window_started_at end,
        spends = case when w.window_started_at <= ended then 1 else w.spends + 1 end
    where w.user_id = take_rate_slot.user_id and w.organization_id = take_rate_slot.organization_id
      and w.rate_limit_id = take_rate_slot.rate_limit_id
      and (w.window_started_at <= ended or w.spends < take_rate_slot.max_requests);
    if found then
      return null;
    end if;
    exit when attempt = 2;
    -- The user's first spend under this rule (or a full window: the insert does nothing,
    -- and the update above runs once more in case a racing first spend made the row).
    insert into public.ai_rate_limit_windows (user_id, organization_id, rate_limit_id, window_started_at, spends)
    values (take_rate_slot.user_id, take_rate_slot.organization_id, take_rate_slot.rate_limit_id, now(), 1)
    on conflict on constraint ai_rate_limit_windows_pkey do nothing;
    if found then
      return null;
    end if;
  end loop;
  select w.window_started_at into started from public.ai_rate_limit_windows w
  where w.user_id = take_rate_slot.user_id and w.organization_id = take_rate_slot.organization_id
    and w.rate_limit_id = take_rate_slot.rate_limit_id;
  -- now() is when this transaction began: one that waited behind the spend that opened
  -- the window may have begun a little before it, so the wait is capped at the window.
  return least(take_rate_slot.window_seconds, greatest(1, ceil(extract(epoch from
    started + make_interval(secs => take_rate_slot.window_seconds) - now()))))::integer;
end
$$;
revoke all on function ai_tokens_internal.take_rate_slot(uuid, uuid, bigint, integer, integer) from public, anon, authenticated;

-- Give back the spend take_rate_slot counted, for a spend refused after it was counted
-- (402 insufficient_tokens): refused spends do not use up the limit.
create or replace function ai_tokens_internal.give_back_rate_slot(user_id uuid, organization_id uuid, rate_limit_id bigint)
returns void
language plpgsql
volatile
set search_path = ''
as $$
begin
  update public.ai_rate_limit_windows w set spends = w.spends - 1
  where w.user_id = give_back_rate_slot.user_id and w.organization_id = give_back_rate_slot.organization_id
    and w.rate_limit_id = give_back_rate_slot.rate_limit_id and w.spends > 0;
end
$$;
revoke all on function ai_tokens_internal.give_back_rate_slot(uuid, uuid, bigint) from public, anon, authenticated;

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

