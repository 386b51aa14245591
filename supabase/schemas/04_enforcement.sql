-- tokens-client · 04 enforcement: how strictly spending is checked.
--
-- enforce (default): refusals refuse. monitor: nothing is refused; spending takes what
-- is there (never below zero) and records what would have been refused. off: nothing is
-- checked or charged. One global row (organization_id null) and per-organization rows.
set check_function_bodies = off;

create table if not exists public.ai_token_enforcement_modes (
  id bigint generated always as identity primary key,
  organization_id uuid,
  mode text not null check (mode in ('enforce', 'monitor', 'off')),
  updated_at timestamptz not null default now(),
  constraint ai_token_enforcement_modes_organization_key unique nulls not distinct (organization_id)
);
comment on table public.ai_token_enforcement_modes is 'How strictly spending is checked. The row without organization_id is the global default; an organization''s row overrides it. No row at all means enforce.';

revoke all on public.ai_token_enforcement_modes from anon, authenticated;
grant select on public.ai_token_enforcement_modes to authenticated;
grant all on public.ai_token_enforcement_modes to service_role;
alter table public.ai_token_enforcement_modes enable row level security;

drop policy if exists "Members view their organization's mode and the default"
  on public.ai_token_enforcement_modes;
create policy "Members view their organization's mode and the default"
  on public.ai_token_enforcement_modes for select to authenticated
  using (
    organization_id is null
    or organization_id in (select m.organization_id from ai_tokens_internal.memberships() m)
  );
drop policy if exists "Service role manages enforcement modes" on public.ai_token_enforcement_modes;
create policy "Service role manages enforcement modes"
  on public.ai_token_enforcement_modes for all to service_role using (true) with check (true);

insert into public.ai_token_enforcement_modes (organization_id, mode) values (null, 'enforce')
on conflict do nothing;

-- The organization's enforcement mode: its own row, else the global default, else enforce.
create or replace function ai_tokens_internal.enforcement_mode(organization_id uuid)
returns text
language sql
stable
set search_path = ''
as $$
  select coalesce(
    (select e.mode from public.ai_token_enforcement_modes e
     where e.organization_id = enforcement_mode.organization_id),
    (select e.mode from public.ai_token_enforcement_modes e where e.organization_id is null),
    'enforce')
$$;
revoke all on function ai_tokens_internal.enforcement_mode(uuid) from public, anon, authenticated;
grant execute on function ai_tokens_internal.enforcement_mode(uuid) to service_role;

-- set_enforcement_mode: 'enforce' | 'monitor' | 'off' for one organization, or the
-- global default when organization_id is null; 'inherit' removes an organization's
-- own mode so the default applies again. Service role only.
create or replace function public.set_enforcement_mode(mode text, organization_id uuid default null)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  previous_mode text;
begin
  perform ai_tokens_internal.require_service_role('set_enforcement_mode');
  if set_enforcement_mode.mode is null
     or set_enforcement_mode.mode not in ('enforce', 'monitor', 'off', 'inherit')
     or (set_enforcement_mode.mode = 'inherit' and set_enforcement_mode.organization_id is null) then
    perform ai_tokens_internal.refuse(400, 'invalid_mode', 'Unknown enforcement mode',
      jsonb_build_object('mode', left(set_enforcement_mode.mode, 50),
                         'allowed', case when set_enforcement_mode.organization_id is null
                           then '["enforce","monitor","off"]'::jsonb
                           else '["enforce","monitor","off","inherit"]'::jsonb end));
  end if;
  perform ai_tokens_internal.require_organization(set_enforcement_mode.organization_id);

  previous_mode := ai_tokens_internal.enforcement_mode(set_enforcement_mode.organization_id);
  if set_enforcement_mode.mode = 'inherit' then
    delete from public.ai_token_enforcement_modes e
    where e.organization_id = set_enforcement_mode.organization_id;
  else
    insert into public.ai_token_enforcement_modes as e (organization_id, mode)
    values (set_enforcement_mode.organization_id, set_enforcement_mode.mode)
    on conflict on constraint ai_token_enforcement_modes_organization_key
    do update set mode = excluded.mode, updated_at = now();
  end if;

  return jsonb_build_object(
    'organization_id', set_enforcement_mode.organization_id,
    'mode', ai_tokens_internal.enforcement_mode(set_enforcement_mode.organization_id),
    'previous_mode', previous_mode,
    'overridden', set_enforcement_mode.organization_id is not null and exists (
      select 1 from public.ai_token_enforcement_modes e
      where e.organization_id = set_enforcement_mode.organization_id));
end
$$;
revoke all on function public.set_enforcement_mode(text, uuid) from public, anon, authenticated;
grant execute on function public.set_enforcement_mode(text, uuid) to service_role;
comment on function public.set_enforcement_mode(text, uuid) is 'tokens-client: enforce, monitor or off, per organization or globally (service role)';
