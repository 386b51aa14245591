/**
 * `<token-dashboard>`: an organization's AI token balances, usage and alerts, read with the
 * signed-in user's own Supabase session (row-level security decides what is visible).
 *
 * Attributes: `supabase-url`, `anon-key` (or set the `client` property to the app's own
 * SupabaseClient), `organization-id` (default: the caller's organization), `plan` (the
 * guide's prop; default: the organization's plan), `days` (usage period, default 30),
 * `upgrade-url` (where the Starter upgrade prompt links; without it the button fires
 * `tokens-upgrade`).
 *
 * Events in: `tokens-spent` on `document` (detail: what `deduct_tokens` returned), the
 * same as calling `spent(detail)`; a deduction of another organization is ignored. Events out (bubbling, composed): `tokens-state`
 * (detail `{state, stats}`) after every load, `tokens-upgrade` from the upgrade button.
 */
import { type SupabaseClient } from "@supabase/supabase-js";
import type { DashboardData, DashboardState, Deduction } from "./types";
export declare const TAG = "token-dashboard";
declare const Base: typeof HTMLElement;
export declare class TokenDashboardElement extends Base {
    #private;
    static observedAttributes: string[];
    constructor();
    /** The SupabaseClient to read with (the app's own, signed in); replaces the attributes. */
    get client(): SupabaseClient | null;
    set client(client: SupabaseClient | null);
    /** What a person sees now: loading, signed-out, not-a-member, network-error, error, upgrade, ready. */
    get state(): DashboardState;
    /** The last stats read (`get_token_stats`), or null before the first load. */
    get stats(): DashboardData["stats"] | null;
    connectedCallback(): void;
    disconnectedCallback(): void;
    attributeChangedCallback(): void;
    /**
     * Tell the dashboard about a deduction it did not make (what `deduct_tokens` returned):
     * it announces "Used 3 tokens for generate_goal · 17 left" and reads the balances again.
     */
    spent(deduction: Deduction): void;
    /** Read everything again; `quiet` keeps what is shown until the new numbers arrive. */
    refresh({ quiet }?: {
        quiet?: boolean;
    }): Promise<void>;
}
/** Register `<token-dashboard>` once (a no-op on the server and when already defined). */
export declare function defineTokenDashboard(): void;
declare global {
    interface HTMLElementTagNameMap {
        "token-dashboard": TokenDashboardElement;
    }
    interface DocumentEventMap {
        "tokens-spent": CustomEvent<Deduction>;
    }
}
export {};
