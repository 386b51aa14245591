/**
 * Reading the dashboard's data through supabase-js with the signed-in user's own session:
 * the public RPCs `get_token_stats` and `get_usage_report`, and the RLS-protected tables
 * `organizations`, `user_profiles`, `ai_plan_allocations` and `ai_token_alerts`. Nothing
 * here decides who may see what: row-level security does, in the database.
 */
import type { SupabaseClient } from "@supabase/supabase-js";
import type { DashboardData } from "./types";
/** A load that ended in one of the states a person is told about. */
export declare class DashboardProblem extends Error {
    readonly state: "signed-out" | "not-a-member" | "network-error" | "error";
    constructor(state: "signed-out" | "not-a-member" | "network-error" | "error", message: string);
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
export declare function periodStart(days: number, now?: Date): Date;
/** Gather everything one dashboard shows; raises DashboardProblem for the named states. */
export declare function loadDashboard(client: SupabaseClient, options: LoadOptions): Promise<DashboardData>;
