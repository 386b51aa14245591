-- tokens-client · 18 schedule: the daily settlement job.
--
-- Installed only where pg_cron exists (on Supabase: enable it under Database →
-- Extensions first, then run this file again). cron.schedule replaces a job of the
-- same name, so a second run changes nothing.
do $$
begin
  if exists (select from pg_extension where extname = 'pg_cron') then
    perform cron.schedule('ai-tokens-refresh-due', '17 3 * * *', 'select public.refresh_due_tokens()');
  end if;
end
$$;
