-- tokens-client · optional starter schema: the original guide's host tables.
--
-- For a NEW project only (the local stack, the demo, a green-field app). An existing app
-- already has its own organizations and user_profiles and skips this file entirely.
-- Each table (with its policies and grants) is created only when absent; an existing
-- one is never altered, and a second run changes nothing. tokens-client itself reads
-- these tables only through the seam functions of supabase/schemas/01_seams.sql.
--
-- These are the host app's tables with the host's own rules (members read their
-- organization and their colleagues' profiles; a user edits their own name; plans and
-- roles change through the service role). They are not part of tokens-client.
set check_function_bodies = off;

do $starter$
begin
  -- Security definer, so that the profile policy does not recurse into itself.
  if to_regprocedure('public.starter_organization_of_current_user()') is null then
    create function public.starter_organization_of_current_user()
    returns uuid
    language sql
    stable
    security definer
    set search_path = ''
    as $fn$
      select p.organization_id from public.user_profiles p where p.id = (select auth.uid())
    $fn$;
    revoke all on function public.starter_organization_of_current_user() from public, anon;
    grant execute on function public.starter_organization_of_current_user() to authenticated, service_role;
  end if;

  if to_regclass('public.organizations') is null then
    create table public.organizations (
      id uuid primary key default gen_random_uuid(),
      name text not null check (length(name) between 1 and 200),
      plan text not null default 'starter',
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now()
    );
    comment on table public.organizations is 'Tenants (the host app''s table, from the tokens-client starter schema). plan names a row of ai_plans.';
    alter table public.organizations enable row level security;
    revoke all on public.organizations from anon, authenticated;
    grant select on public.organizations to authenticated;
    grant all on public.organizations to service_role;
    create policy "Members can view their organization"
      on public.organizations for select to authenticated
      using (id = (select public.starter_organization_of_current_user()));
  end if;

  if to_regclass('public.user_profiles') is null then
    create table public.user_profiles (
      id uuid primary key references auth.users (id) on delete cascade,
      organization_id uuid references public.organizations (id) on delete cascade,
      full_name text,
      role text not null default 'member' check (role in ('owner', 'admin', 'member')),
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now()
    );
    comment on table public.user_profiles is 'One organization per user, as in the guide (the host app''s table, from the tokens-client starter schema).';
    create index user_profiles_organization_id_idx on public.user_profiles (organization_id);
    alter table public.user_profiles enable row level security;
    revoke all on public.user_profiles from anon, authenticated;
    grant select, update (full_name) on public.user_profiles to authenticated;
    grant all on public.user_profiles to service_role;
    create policy "Members can view their organization's profiles"
      on public.user_profiles for select to authenticated
      using (id = (select auth.uid()) or organization_id = (select public.starter_organization_of_current_user()));
    create policy "Users can update their own profile"
      on public.user_profiles for update to authenticated
      using (id = (select auth.uid())) with check (id = (select auth.uid()));
  end if;

end
$starter$;
