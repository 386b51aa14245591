-- tokens-client · 99 sequence privileges (runs last).
--
-- Supabase's default privileges grant every new sequence in public to anon and
-- authenticated. The identity sequences of our tables are used only by our functions
-- and the service role: take the API roles' rights away (a client could otherwise burn
-- ids over a direct connection). Only sequences owned by tokens-client's tables.
do $$
declare
  owned record;
begin
  for owned in
    select s.oid::regclass as sequence_name
    from pg_catalog.pg_class s
    join pg_catalog.pg_depend d on d.classid = 'pg_catalog.pg_class'::regclass and d.objid = s.oid
                               and d.deptype in ('a', 'i')
    join pg_catalog.pg_class t on t.oid = d.refobjid
    where s.relkind = 'S' and t.relnamespace = 'public'::regnamespace
      and (t.relname like 'ai\_%' or t.relname like 'stripe\_%')
  loop
    execute format('revoke all on sequence %s from anon, authenticated', owned.sequence_name);
  end loop;
end
$$;
