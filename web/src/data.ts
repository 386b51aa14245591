/**
 * Reading the dashboard's data through supabase-js with the signed-in user's own session:
 * the public RPCs `get_token_stats` and `get_usage_report`, and the RLS-protected tables
 * `organizations`, `user_profiles`, `ai_plan_allocations` and `ai_token_alerts`. Nothing
 * here decides who may see what: row-level security does, in the database.
 */
import type { SupabaseClient } from "@supabase/supabase-js";
import type { DashboardData, TokenAlert, TokenStats, UsageRow } from "./types";

/** A load that ended in one of the states a person is told about. */
export class DashboardProblem extends Error {
  constructor(
    readonly state: "signed-out" | "not-a-member" | "network-error" | "error",
    message: string,
  ) {
    super(message);
    this.name = "DashboardProblem";
  }
}

interface PostgrestFailure {
  message: string;
  code?: string;
  details?: string | null;
}

/** HTTP status 0 is a request that never got an answer (postgrest-js's network failure). */
function problem(error: PostgrestFailure, status: number): DashboardProblem {
  if (status === 0 || status >= 500) {
    return new DashboardProblem(
      "network-error",
      "The token service could not be reached. Check your connection and try again.",
    );
  }
  let reason = "";
  try {
    reason = error.details ? String(JSON.parse(error.details).reason ?? "") : "";
  } catch {
    reason = "";
  }
  if (status === 401 || reason === "unauthenticated" || error.code === "PGRST301") {
    return new DashboardProblem("signed-out", "Your session has ended. Sign in again.");
  }
  if (reason === "not_a_member") {
    return new DashboardProblem("not-a-member", "You are not a member of this organization.");
  }
  return new DashboardProblem("error", `The token service refused: ${error.message}`);
}

async function result<T>(
  query: PromiseLike<{ data: T | null; error: PostgrestFailure | null; status: number }>,
): Promise<T> {
  const { data, error, status } = await query;
  if (error) throw problem(error, status);
  return data as T;
}

export interface LoadOptions {
  organizationId: string | null;
  /** The guide's `plan` prop: the organization's plan as the app knows it. */
  plan: string | null;
  days: number;
  /** The signed-in user's id (for their role); null when the client cannot tell. */
  userId: string | null;
}

/** Days are UTC dates, as `get_usage_report(group_by => 'day')` groups them. */
export function periodStart(days: number, now: Date = new Date()): Date {
  const start = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate()));
  start.setUTCDate(start.getUTCDate() - (days - 1));
  return start;
}

/** Gather everything one dashboard shows; raises DashboardProblem for the named states. */
export async function loadDashboard(
  client: SupabaseClient,
  options: LoadOptions,
): Promise<DashboardData> {
  // The organization row is visible to its members only (RLS): an empty answer is "not a
  // member", told without asking any function to refuse.
  let organizations = client.from("organizations").select("id, name, plan").limit(1);
  if (options.organizationId) organizations = organizations.eq("id", options.organizationId);
  const [organization] = await result<{ id: string; name: string; plan: string | null }[]>(
    organizations,
  );
  if (!organization) {
    throw new DashboardProblem("not-a-member", "You are not a member of this organization.");
  }
  const organizationId = organization.id;
  const since = periodStart(options.days);
  const report = (groupBy: "day" | "feature" | "user") =>
    result<UsageRow[]>(
      client.rpc("get_usage_report", {
        organization_id: organizationId,
        group_by: groupBy,
        since: since.toISOString(),
      }),
    );
  // The role and the plan's allocations only refine what is shown; an app whose host
  // tables differ still gets its balances (no role: the member's view; no allocations:
  // "offers nothing" is read from the balances).
  const profile = options.userId
    ? result<{ role: string | null }[]>(
        client.from("user_profiles").select("role").eq("id", options.userId).limit(1),
      ).catch(() => [])
    : Promise.resolve([]);
  const plan = options.plan ?? organization.plan;
  const allocations = plan
    ? result<{ token_type: string }[]>(
        client
          .from("ai_plan_allocations")
          .select("token_type")
          .eq("plan", plan)
          .gt("monthly_allocation", 0),
      ).catch(() => null)
    : Promise.resolve(null);
  const alerts = result<TokenAlert[]>(
    client
      .from("ai_token_alerts")
      .select("id, token_type, kind, reason, created_at")
      .eq("organization_id", organizationId)
      .order("created_at", { ascending: false })
      .limit(8),
  );
  const [stats, byDay, byFeature, byMember, profileRows, offered, alertRows] = await Promise.all([
    result<TokenStats>(client.rpc("get_token_stats", { organization_id: organizationId })),
    report("day"),
    report("feature"),
    report("user"),
    profile,
    allocations,
    alerts,
  ]);
  const role = profileRows[0]?.role ?? null;
  // Derived from data, never from a plan's name: a plan without any positive allocation
  // offers no token type; without the plan, every balance allocated 0 says the same.
  const planOffersNothing =
    offered !== null
      ? offered.length === 0
      : stats.by_type.every((type) => type.allocated === 0);
  return {
    organization,
    role,
    stats,
    planOffersNothing,
    since,
    days: options.days,
    byDay,
    byFeature,
    byMember,
    alerts: role === "owner" || role === "admin" ? alertRows : [],
  };
}
