/**
 * `TokenDashboard` for React and Next.js apps: the guide's component, a thin wrapper over
 * `<token-dashboard>` taking its props (`organizationId`, `plan`).
 *
 *   <TokenDashboard client={supabase} organizationId={organizationId} plan={organizationPlan} />
 *
 * Pass the app's own signed-in SupabaseClient as `client` (or `supabaseUrl` + `anonKey`).
 * After a deduction, pass what `deduct_tokens` returned as `lastSpend` to update it.
 */
import { type ReactElement } from "react";
import type { SupabaseClient } from "@supabase/supabase-js";
import type { DashboardState, Deduction, TokenStats } from "./types";
export interface TokenDashboardProps {
    organizationId?: string | null;
    plan?: string | null;
    client?: SupabaseClient;
    supabaseUrl?: string;
    anonKey?: string;
    /** Usage period in days (default 30). */
    days?: number;
    upgradeUrl?: string;
    /** The latest deduction (what `deduct_tokens` returned); each new object updates it. */
    lastSpend?: Deduction | null;
    onStateChange?: (state: DashboardState, stats: TokenStats | null) => void;
    onUpgrade?: () => void;
    className?: string;
}
export declare function TokenDashboard(props: TokenDashboardProps): ReactElement;
export default TokenDashboard;
export { defineTokenDashboard, TokenDashboardElement } from "./element";
export type { DashboardState, Deduction, TokenStats, TokenTypeStats } from "./types";
