"use client";
/**
 * `TokenDashboard` for React and Next.js apps: the guide's component, a thin wrapper over
 * `<token-dashboard>` taking its props (`organizationId`, `plan`).
 *
 *   <TokenDashboard client={supabase} organizationId={organizationId} plan={organizationPlan} />
 *
 * Pass the app's own signed-in SupabaseClient as `client` (or `supabaseUrl` + `anonKey`).
 * After a deduction, pass what `deduct_tokens` returned as `lastSpend` to update it.
 */
import { createElement, type ReactElement, useEffect, useRef } from "react";
import type { SupabaseClient } from "@supabase/supabase-js";
import { defineTokenDashboard, TAG, type TokenDashboardElement } from "./element";
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

export function TokenDashboard(props: TokenDashboardProps): ReactElement {
  const ref = useRef<TokenDashboardElement | null>(null);
  const { client, lastSpend, onStateChange, onUpgrade } = props;

  useEffect(() => defineTokenDashboard(), []);

  useEffect(() => {
    if (ref.current && client) ref.current.client = client;
  }, [client]);

  useEffect(() => {
    if (ref.current && lastSpend) ref.current.spent(lastSpend);
  }, [lastSpend]);

  useEffect(() => {
    const element = ref.current;
    if (!element) return undefined;
    const state = (event: Event) => {
      const detail = (event as CustomEvent<{ state: DashboardState; stats: TokenStats | null }>)
        .detail;
      onStateChange?.(detail.state, detail.stats);
    };
    const upgrade = () => onUpgrade?.();
    element.addEventListener("tokens-state", state);
    element.addEventListener("tokens-upgrade", upgrade);
    return () => {
      element.removeEventListener("tokens-state", state);
      element.removeEventListener("tokens-upgrade", upgrade);
    };
  }, [onStateChange, onUpgrade]);

  return createElement(TAG, {
    ref,
    class: props.className,
    "organization-id": props.organizationId ?? undefined,
    plan: props.plan ?? undefined,
    "supabase-url": props.supabaseUrl,
    "anon-key": props.anonKey,
    days: props.days,
    "upgrade-url": props.upgradeUrl,
  });
}

export default TokenDashboard;
export { defineTokenDashboard, TokenDashboardElement } from "./element";
export type { DashboardState, Deduction, TokenStats, TokenTypeStats } from "./types";
