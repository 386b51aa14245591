/** The JSON shapes of the public RPCs and tables the dashboard reads (snake_case, as sent). */

/** One token type of `get_token_stats().by_type`. */
export interface TokenTypeStats {
  token_type: string;
  balance: number;
  allocated: number;
  used: number;
  purchased_balance?: number;
  reserved?: number;
  available?: number;
  percent_remaining: number;
  /** The database's own rule: balance under 20 % of the allocation. */
  low: boolean;
  period_started_at?: string | null;
  refresh_date: string | null;
}

/** `get_token_stats(organization_id)`. */
export interface TokenStats {
  organization_id: string;
  plan: string | null;
  total_balance: number;
  total_allocated: number;
  total_used: number;
  total_purchased?: number;
  total_reserved?: number;
  by_type: TokenTypeStats[];
}

/** One row of `get_usage_report(organization_id, group_by, since)`. */
export interface UsageRow {
  key: string;
  label: string;
  uses: number;
  tokens: number;
  day: string | null;
}

/** One row of `ai_token_alerts` (owners and admins only, by RLS). */
export interface TokenAlert {
  id: number;
  token_type: string;
  kind: string;
  reason: string | null;
  created_at: string;
}

/**
 * What `deduct_tokens` (or `commit_reservation`) returned, or the guide's HTTP shape
 * (`remainingBalance`, `tokensDeducted`); `spent()` accepts either.
 */
export interface Deduction {
  success?: boolean;
  remaining_balance?: number;
  remainingBalance?: number;
  tokens_deducted?: number;
  tokensDeducted?: number;
  token_type?: string;
  tokenType?: string;
  feature?: string;
  organization_id?: string;
  message?: string;
}

/** Every state a person can meet, also reflected in the element's `state` attribute. */
export type DashboardState =
  | "loading"
  | "signed-out"
  | "not-a-member"
  | "network-error"
  | "error"
  | "upgrade"
  | "ready";

/** Everything one load gathered, all under the signed-in user's own RLS. */
export interface DashboardData {
  organization: { id: string; name: string; plan: string | null };
  /** owner / admin / member, from the caller's own profile; null when not readable. */
  role: string | null;
  stats: TokenStats;
  /** The plan offers no token type (no positive ai_plan_allocations row). */
  planOffersNothing: boolean;
  since: Date;
  days: number;
  byDay: UsageRow[];
  byFeature: UsageRow[];
  byMember: UsageRow[];
  alerts: TokenAlert[];
}
