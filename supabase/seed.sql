-- Demo data for local development only (never shipped as a migration).
-- Two organizations: Acme (pro) with an owner and a member, Tinkerers (starter).
insert into auth.users (id, aud, role, email) values
  ('00000000-0000-4000-a000-00000000a11c', 'authenticated', 'authenticated', 'alice@acme.test'),
  ('00000000-0000-4000-a000-000000000b0b', 'authenticated', 'authenticated', 'bob@acme.test'),
  ('00000000-0000-4000-a000-0000000ca201', 'authenticated', 'authenticated', 'carol@tinkerers.test')
on conflict (id) do nothing;

insert into public.organizations (id, name, plan) values
  ('00000000-0000-4000-b000-00000000ac3e', 'Acme', 'pro'),
  ('00000000-0000-4000-b000-0000000071e4', 'Tinkerers', 'starter')
on conflict (id) do nothing;

insert into public.user_profiles (id, organization_id, full_name, role) values
  ('00000000-0000-4000-a000-00000000a11c', '00000000-0000-4000-b000-00000000ac3e', 'Alice Owner', 'owner'),
  ('00000000-0000-4000-a000-000000000b0b', '00000000-0000-4000-b000-00000000ac3e', 'Bob Member', 'member'),
  ('00000000-0000-4000-a000-0000000ca201', '00000000-0000-4000-b000-0000000071e4', 'Carol Starter', 'owner')
on conflict (id) do nothing;

select count(*) from public.initialize_tokens('00000000-0000-4000-b000-00000000ac3e');
select count(*) from public.initialize_tokens('00000000-0000-4000-b000-0000000071e4');
