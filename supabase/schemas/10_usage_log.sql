-- tokens-client · 10 usage log: one row per successful deduction (the guide's table).
--
-- Written in the same transaction as the balance change, by deduct_tokens and
-- commit_reservation only. user_id is the caller (auth.uid()); null for the service role.
set check_function_bodies = off;

create table if not exists public.ai_token_usage_log (
  id uuid primary key default gen_random_uuid(),
  organization_id uuid not null,
  user_id uuid,
  token_type text not null,
  feature_used text not null,
  tokens_deducted integer not null check (tokens_deducted > 0),
  balance_after integer not null check (balance_after >= 0),
  request_id text check (length(request_id) between 1 and 200),
  created_at timestamptz not null default now(),
  reservation_id uuid references public.ai_token_reservations (id) on delete set null,
  refunded_at timestamptz,
  refunded_by uuid,
  refund_reason text check (length(refund_reason) <= 500),
  quantity integer not null default 1 check (quantity between 1 and 1000000)
);
comment on table public.ai_token_usage_log is 'One row per successful deduction, written in the same transaction as the balance change.';
comment on column public.ai_token_usage_log.quantity is 'Units metered (deduct_tokens quantity): tokens_deducted = cost x quantity when fully charged.';
comment on column public.ai_token_usage_log.reservation_id is 'The reservation this deduction committed (null for deduct_tokens).';
create index if not exists idx_ai_token_usage_org_date on public.ai_token_usage_log (organization_id, created_at desc);
create index if not exists ai_token_usage_log_user_date_idx on public.ai_token_usage_log (user_id, created_at desc);
-- Refunds by owners and admins in a period (refund_deduction's limit).
create index if not exists ai_token_usage_log_admin_refunds_idx
  on public.ai_token_usage_log (organization_id, token_type, refunded_at) where refunded_by is not null;
create unique index if not exists ai_token_usage_log_request_id_key
  on public.ai_token_usage_log (organization_id, request_id) where request_id is not null;
create index if not exists ai_token_usage_log_reservation_id_idx on public.ai_token_usage_log (reservation_id)
  where reservation_id is not null;

revoke all on public.ai_token_usage_log from anon, authenticated;
grant select on public.ai_token_usage_log to authenticated;
grant all on public.ai_token_usage_log to service_role;
alter table public.ai_token_usage_log enable row level security;

drop policy if exists "Admins view their organization's usage; members view their own" on public.ai_token_usage_log;
create policy "Admins view their organization's usage; members view their own"
  on public.ai_token_usage_log for select to authenticated
  using (
    organization_id in (
      select m.organization_id from ai_tokens_internal.memberships() m where m.role in ('owner', 'admin')
    )
    or (
      user_id = (select auth.uid())
      and organization_id in (select m.organization_id from ai_tokens_internal.memberships() m)
    )
  );
drop policy if exists "Service role manages the usage log" on public.ai_token_usage_log;
create policy "Service role manages the usage log"
  on public.ai_token_usage_log for all to service_role using (true) with check (true);

-- Which grants a deduction spent, so that a refund gives purchased tokens back to them.
create table if not exists public.ai_token_grant_usage (
  usage_id uuid not null references public.ai_token_usage_log (id) on delete cascade,
  grant_id uuid not null references public.ai_token_grants (id) on delete cascade,
  amount integer not null check (amount > 0),
  primary key (usage_id, grant_id)
);
comment on table public.ai_token_grant_usage is 'Which grants a deduction spent, so that a refund can give purchased tokens back to their grant.';
create index if not exists ai_token_grant_usage_grant_id_idx on public.ai_token_grant_usage (grant_id);

revoke all on public.ai_token_grant_usage from anon, authenticated;
grant all on public.ai_token_grant_usage to service_role;
alter table public.ai_token_grant_usage enable row level security;
drop policy if exists "Service role manages grant usage" on public.ai_token_grant_usage;
create policy "Service role manages grant usage"
  on public.ai_token_grant_usage for all to service_role using (true) with check (true);
