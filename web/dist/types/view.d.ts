/**
 * The dashboard's markup: plain strings (every value escaped) rendered into the element's
 * shadow root. No framework; charts are plain SVG with a text equivalent beside them.
 */
import type { DashboardData } from "./types";
export declare function escape(value: unknown): string;
/** `goal_generation` → `Goal generation`. */
export declare function humanize(name: string): string;
/** The whole dashboard for one organization the caller belongs to. */
export declare function dashboardView(data: DashboardData, upgradeUrl: string | null): string;
/** A state without data: loading, signed out, not a member, network error. */
export declare function messageView(state: string, title: string, text: string, retry: boolean): string;
