// The Edge Functions' npm dependencies, pinned in one place. `npm:` specifiers only:
// they resolve the same way under the Supabase Edge Runtime, `deno test` and the local
// stack, with no import map to keep in step.
export { createClient } from "npm:@supabase/supabase-js@2.119.1";
export type { PostgrestError, SupabaseClient } from "npm:@supabase/supabase-js@2.119.1";
export { default as Stripe } from "npm:stripe@23.1.0";
export { Webhook } from "npm:standardwebhooks@1.1.1";
