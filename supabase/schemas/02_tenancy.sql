-- tokens-client · 02 tenancy: which organization a request acts on, and as what.
--
-- Built on the seams (01_seams.sql) only. An organization id sent by a client is a claim
-- to check against the caller's memberships, never a fact to trust.
set check_function_bodies = off;

-- The caller's role in an organization (owner/admin/member), or null.
create or replace function ai_tokens_internal.membership_role(organization_id uuid)
returns text
language sql
stable
set search_path = ''
as $$
  select m.role from ai_tokens_internal.memberships() m
  where m.organization_id = membership_role.organization_id
  limit 1
$$;
revoke all on function ai_tokens_internal.membership_role(uuid) from public, anon, authenticated;
grant execute on function ai_tokens_internal.membership_role(uuid) to service_role;

-- Refuse an organization id the host does not have (404); null passes (callers that
-- need one say so with their own 400).
create or replace function ai_tokens_internal.require_organization(organization_id uuid)
returns void
language plpgsql
stable
set search_path = ''
as $$
begin
  if require_organization.organization_id is not null
     and not ai_tokens_internal.organization_exists(require_organization.organization_id) then
    perform ai_tokens_internal.refuse(404, 'organization_not_found',
      format('Organization (id=%s) not found', require_organization.organization_id),
      jsonb_build_object('organization_id', require_organization.organization_id));
  end if;
end
$$;
revoke all on function ai_tokens_internal.require_organization(uuid) from public, anon, authenticated;
grant execute on function ai_tokens_internal.require_organization(uuid) to service_role;

-- The organization a request acts on. A member may omit organization_id (their own
-- organization is used; with several, they must name one); a given organization_id is
-- checked against the caller's memberships. The service role must name an existing
-- organization. Returns (organization_id, role); role is 'service_role' for it.
create or replace function ai_tokens_internal.resolve_organization(requested_organization_id uuid)
returns table (organization_id uuid, role text)
language plpgsql
stable
set search_path = ''
as $$
declare
  found_organization uuid;
  found_role text;
  membership_count integer;
begin
  if ai_tokens_internal.is_service_role() then
    if requested_organization_id is null then
      perform ai_tokens_internal.refuse(400, 'invalid_request', 'organization_id is required for the service role',
        jsonb_build_object('field', 'organization_id'));
    end if;
    perform ai_tokens_internal.require_organization(requested_organization_id);
    return query select requested_organization_id, 'service_role'::text;
    return;
  end if;

  if (select auth.uid()) is null then
    perform ai_tokens_internal.refuse(401, 'unauthenticated', 'Sign in to use AI features');
  end if;

  -- One call of the seam: the first matching membership, and how many there are.
  select m.organization_id, m.role, count(*) over ()::integer
  into found_organization, found_role, membership_count
  from ai_tokens_internal.memberships() m
  where requested_organization_id is null or m.organization_id = requested_organization_id
  order by m.organization_id
  limit 1;

  if found_organization is null then
    perform ai_tokens_internal.refuse(403, 'not_a_member',
      case when requested_organization_id is null
        then 'You are not a member of any organization'
        else 'You are not a member of this organization' end,
      jsonb_build_object('organization_id', requested_organization_id));
  end if;
  if requested_organization_id is null and membership_count > 1 then
    perform ai_tokens_internal.refuse(400, 'invalid_request',
      'organization_id is required: you belong to several organizations',
      jsonb_build_object('field', 'organization_id'));
  end if;
  return query select found_organization, found_role;
end
$$;
revoke all on function ai_tokens_internal.resolve_organization(uuid) from public, anon;
grant execute on function ai_tokens_internal.resolve_organization(uuid) to authenticated, service_role;

-- PostgREST's db-pre-request hook: runs before every API request, as the request's
-- role, and refuses (401 invalid_jwt) a JWT that Supabase Auth would never sign: one
-- without a numeric `exp` (PostgREST accepts it forever; the Edge Functions refuse it)
-- or whose `sub` is not a uuid (auth.uid() would fail with 22P02 in every policy and
-- function). A request without a JWT passes (PostgREST then acts as anon). In public,
-- security invoker, because anon runs it too and has no privilege on our schema. The
-- local stack configures it; on a hosted project run once, as postgres:
--   alter role authenticator set pgrst.db_pre_request = 'public.ai_tokens_check_request';
--   notify pgrst, 'reload config';
create or replace function public.ai_tokens_check_request()
returns void
language plpgsql
stable
set search_path = ''
as $$
declare
  claims jsonb := nullif(current_setting('request.jwt.claims', true), '')::jsonb;
begin
  if claims is null or claims - 'role' = '{}'::jsonb then
    return;
  end if;
  if jsonb_typeof(claims -> 'exp') is distinct from 'number' then
    raise exception using errcode = 'PT401', message = 'JWT has no expiry',
      detail = jsonb_build_object('reason', 'invalid_jwt', 'claim', 'exp')::text;
  end if;
  if claims ? 'sub' and coalesce(claims ->> 'sub', '')
       !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
    raise exception using errcode = 'PT401', message = 'JWT subject is not a user id',
      detail = jsonb_build_object('reason', 'invalid_jwt', 'claim', 'sub')::text;
  end if;
end
$$;
revoke all on function public.ai_tokens_check_request() from public;
grant execute on function public.ai_tokens_check_request() to anon, authenticated, service_role;
comment on function public.ai_tokens_check_request() is 'tokens-client: PostgREST db-pre-request: refuse a JWT without exp or with a sub that is not a uuid';
