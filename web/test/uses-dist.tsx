// Type-checked by `tsc -p web` (never run): a Next.js page using the shipped build and its
// declarations exactly as the README shows, so a broken web/dist/react.d.mts fails the check.
import { createClient } from "@supabase/supabase-js";
import TokenDashboard, { type Deduction } from "../dist/react.mjs";

const supabase = createClient("https://example.supabase.co", "anon-key");

export function Page({ organizationId, plan, deduction }: {
  organizationId: string;
  plan: string;
  deduction: Deduction | null;
}) {
  return (
    <TokenDashboard
      client={supabase}
      organizationId={organizationId}
      plan={plan}
      lastSpend={deduction}
      onUpgrade={() => undefined}
    />
  );
}
