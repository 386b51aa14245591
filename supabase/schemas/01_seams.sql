-- tokens-client · 01 seams: the ONLY place that reads or writes the host app.
--
-- THIS IS THE FILE YOU ADAPT. tokens-client never touches your tables; it asks these
-- functions instead. The defaults read the original guide's tables as the guide has
-- them:
--   public.organizations (id uuid, plan text or an enum, name text, ...)
--   public.user_profiles (id uuid = auth.users.id, organization_id uuid, full_name
--                         text, and optionally role text: owner | admin | member)
-- An app with another model (a members table, several organizations per user, plans
-- kept elsewhere) replaces the bodies below with `create or replace function`, keeping
-- each signature and result. Each seam is created only when absent, so running our
-- migrations again (or an upgrade) never overwrites a seam you replaced.
--
-- SAFETY: membership is what these functions say it is. With the default bodies, a user
-- who can UPDATE their own user_profiles.organization_id or role (Supabase grants UPDATE
-- on every column unless you narrow it) can join any organization or make themselves
-- owner, in your app and here. Grant users UPDATE only on the columns they may change,
-- e.g. `revoke update on public.user_profiles from authenticated;
-- grant update (full_name) on public.user_profiles to authenticated;`. Every seam is SECURITY DEFINER (it reads your tables as
-- their owner, so your own policies neither recurse nor hide rows from us) and is
-- executable only by the roles named below it.
--
-- Role names our functions understand: 'owner' and 'admin' may see the whole
-- organization's usage and alerts and may refund; anything else is a member.
set check_function_bodies = off;

-- The caller's memberships: (organization_id, role) for auth.uid(). Every policy and
-- function decides membership through this. Default: the user's profile row; its
-- role column when the table has one, else 'member'.
do $seam$
begin
  -- Absent, or still the SQL body of the first release (md5 of its text), which is
  -- planned on every call: this PL/pgSQL one keeps its plan for the session, and every
  -- spend calls it. A seam you replaced is never touched.
  if to_regprocedure('ai_tokens_internal.memberships()') is null
     or exists (select 1 from pg_catalog.pg_proc p join pg_catalog.pg_language l on l.oid = p.prolang
                where p.oid = to_regprocedure('ai_tokens_internal.memberships()') and l.lanname = 'sql'
                  and md5(p.prosrc) = '09af727f779094e41d3a4c4c7d7bd17e') then
    create or replace function ai_tokens_internal.memberships()
    returns table (organization_id uuid, role text)
    language plpgsql
    stable
    security definer
    set search_path = ''
    as $$
    begin
      return query
      select p.organization_id, coalesce(to_jsonb(p) ->> 'role', 'member')
      from public.user_profiles p
      where p.id = (select auth.uid())
        and p.organization_id is not null;
    end
    $$;
  end if;
end
$seam$;
revoke all on function ai_tokens_internal.memberships() from public, anon;
grant execute on function ai_tokens_internal.memberships() to authenticated, service_role;

-- Does the host have this organization?
do $seam$
begin
  if to_regprocedure('ai_tokens_internal.organization_exists(uuid)') is null
     or exists (select 1 from pg_catalog.pg_proc p join pg_catalog.pg_language l on l.oid = p.prolang
                where p.oid = to_regprocedure('ai_tokens_internal.organization_exists(uuid)') and l.lanname = 'sql'
                  and md5(p.prosrc) = '900e70c9c9755c6da5d1792eb2ddde5f') then
    create or replace function ai_tokens_internal.organization_exists(organization_id uuid)
    returns boolean
    language plpgsql
    stable
    security definer
    set search_path = ''
    as $$
    begin
      return exists (select 1 from public.organizations o where o.id = organization_exists.organization_id);
    end
    $$;
  end if;
end
$seam$;
revoke all on function ai_tokens_internal.organization_exists(uuid) from public, anon, authenticated;
grant execute on function ai_tokens_internal.organization_exists(uuid) to service_role;

-- The organization's plan as text (an enum-typed column is cast here), or null when
-- the organization does not exist. The name is looked up in public.ai_plans.
do $seam$
begin
  if to_regprocedure('ai_tokens_internal.organization_plan(uuid)') is null
     or exists (select 1 from pg_catalog.pg_proc p join pg_catalog.pg_language l on l.oid = p.prolang
                where p.oid = to_regprocedure('ai_tokens_internal.organization_plan(uuid)') and l.lanname = 'sql'
                  and md5(p.prosrc) = '55f29ac08b0c534fe58eacfb915d160a') then
    create or replace function ai_tokens_internal.organization_plan(organization_id uuid)
    returns text
    language plpgsql
    stable
    security definer
    set search_path = ''
    as $$
    begin
      return (select o.plan::text from public.organizations o where o.id = organization_plan.organization_id);
    end
    $$;
  end if;
end
$seam$;
revoke all on function ai_tokens_internal.organization_plan(uuid) from public, anon, authenticated;
grant execute on function ai_tokens_internal.organization_plan(uuid) to service_role;

-- Store a plan change (set_organization_plan, initialize_tokens with a plan, the Stripe
-- webhook). The text is converted to the column's own type, so a text column and an
-- enum column both work; a value the column refuses is 400 invalid_plan. Returns false
-- when the organization does not exist. Only the plan column is written.
do $seam$
begin
  if to_regprocedure('ai_tokens_internal.change_organization_plan(uuid, text)') is null then
    create function ai_tokens_internal.change_organization_plan(organization_id uuid, plan text)
    returns boolean
    language plpgsql
    volatile
    security definer
    set search_path = ''
    as $$
    begin
      update public.organizations o
      set plan = (jsonb_populate_record(null::public.organizations,
                                        jsonb_build_object('plan', change_organization_plan.plan))).plan
      where o.id = change_organization_plan.organization_id;
      return found;
    exception
      when invalid_text_representation or check_violation then
        perform ai_tokens_internal.refuse(400, 'invalid_plan', 'The organization''s plan column does not accept this plan',
          jsonb_build_object('plan', left(change_organization_plan.plan, 50)));
        return false;
    end
    $$;
  end if;
end
$seam$;
revoke all on function ai_tokens_internal.change_organization_plan(uuid, text) from public, anon, authenticated;
grant execute on function ai_tokens_internal.change_organization_plan(uuid, text) to service_role;

-- Display names for reports and the dashboard (null when unknown).
do $seam$
begin
  if to_regprocedure('ai_tokens_internal.organization_name(uuid)') is null then
    create function ai_tokens_internal.organization_name(organization_id uuid)
    returns text
    language sql
    stable
    security definer
    set search_path = ''
    as $$
      select to_jsonb(o) ->> 'name' from public.organizations o where o.id = organization_name.organization_id
    $$;
  end if;
end
$seam$;
revoke all on function ai_tokens_internal.organization_name(uuid) from public, anon, authenticated;
grant execute on function ai_tokens_internal.organization_name(uuid) to service_role;

do $seam$
begin
  if to_regprocedure('ai_tokens_internal.user_display_name(uuid)') is null then
    create function ai_tokens_internal.user_display_name(user_id uuid)
    returns text
    language sql
    stable
    security definer
    set search_path = ''
    as $$
      select to_jsonb(p) ->> 'full_name' from public.user_profiles p where p.id = user_display_name.user_id
    $$;
  end if;
end
$seam$;
revoke all on function ai_tokens_internal.user_display_name(uuid) from public, anon, authenticated;
grant execute on function ai_tokens_internal.user_display_name(uuid) to service_role;
