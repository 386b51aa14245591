/** The `<script>` build: registers `<token-dashboard>` as soon as it loads. */
import { defineTokenDashboard } from "./element";

export { defineTokenDashboard, TokenDashboardElement } from "./element";
export type { DashboardState, Deduction, TokenStats, TokenTypeStats } from "./types";

defineTokenDashboard();
