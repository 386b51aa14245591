export { defineTokenDashboard, TokenDashboardElement } from "./element";
export type { DashboardState, Deduction, TokenStats, TokenTypeStats } from "./types";
