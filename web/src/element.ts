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
import { createClient, type SupabaseClient } from "@supabase/supabase-js";
import { DashboardProblem, loadDashboard } from "./data";
import { STYLES } from "./styles";
import type { DashboardData, DashboardState, Deduction } from "./types";
import { dashboardView, messageView } from "./view";

export const TAG = "token-dashboard";

const clients = new Map<string, SupabaseClient>();

/** One client per project in a page, so supabase-js keeps one auth listener per session. */
function clientFor(url: string, key: string): SupabaseClient {
  const id = `${url}\n${key}`;
  let client = clients.get(id);
  if (!client) {
    // No retries: a person waiting for a dashboard should hear about an outage at once.
    client = createClient(url, key, { db: { retry: false } });
    clients.set(id, client);
  }
  return client;
}

const MESSAGES: Record<Exclude<DashboardState, "ready" | "upgrade">, [string, string]> = {
  loading: ["Loading AI tokens…", "Reading your organization's balances."],
  "signed-out": [
    "Sign in to see your AI tokens",
    "Token balances are shown to the signed-in members of an organization.",
  ],
  "not-a-member": [
    "No access to this organization",
    "You are not a member of this organization, so its tokens are not shown.",
  ],
  "network-error": [
    "Cannot reach the token service",
    "The token service could not be reached. Check your connection and try again.",
  ],
  error: ["Something went wrong", "The token balances could not be read."],
};

// Server-side rendering (Next.js) imports this module where HTMLElement does not exist.
const Base = (typeof HTMLElement === "undefined" ? class {} : HTMLElement) as typeof HTMLElement;

export class TokenDashboardElement extends Base {
  static observedAttributes = [
    "supabase-url",
    "anon-key",
    "organization-id",
    "plan",
    "days",
    "upgrade-url",
  ];

  #client: SupabaseClient | null = null;
  #root: ShadowRoot;
  #content: HTMLElement;
  #notice: HTMLElement;
  #data: DashboardData | null = null;
  #generation = 0;
  #scheduled = false;
  #unsubscribe: (() => void) | null = null;
  #onSpent = (event: Event) => this.spent((event as CustomEvent<Deduction>).detail);

  constructor() {
    super();
    this.#root = this.attachShadow({ mode: "open" });
    this.#root.innerHTML = `<style>${STYLES}</style>
      <section class="dashboard" aria-labelledby="title" part="dashboard">
        <p class="notice" role="status" aria-live="polite"></p>
        <div class="content" tabindex="-1"></div>
      </section>`;
    this.#content = this.#root.querySelector(".content") as HTMLElement;
    this.#notice = this.#root.querySelector(".notice") as HTMLElement;
    this.#root.addEventListener("click", (event) => this.#clicked(event));
  }

  /** The SupabaseClient to read with (the app's own, signed in); replaces the attributes. */
  get client(): SupabaseClient | null {
    return this.#client ?? this.#clientFromAttributes();
  }

  set client(client: SupabaseClient | null) {
    this.#client = client;
    this.#watchAuth();
    this.#schedule();
  }

  /** What a person sees now: loading, signed-out, not-a-member, network-error, error, upgrade, ready. */
  get state(): DashboardState {
    return (this.getAttribute("state") as DashboardState | null) ?? "loading";
  }

  /** The last stats read (`get_token_stats`), or null before the first load. */
  get stats(): DashboardData["stats"] | null {
    return this.#data?.stats ?? null;
  }

  connectedCallback(): void {
    document.addEventListener("tokens-spent", this.#onSpent);
    this.#watchAuth();
    this.#schedule();
  }

  disconnectedCallback(): void {
    document.removeEventListener("tokens-spent", this.#onSpent);
    this.#unsubscribe?.();
    this.#unsubscribe = null;
  }

  attributeChangedCallback(): void {
    if (this.isConnected) this.#schedule();
  }

  /**
   * Tell the dashboard about a deduction it did not make (what `deduct_tokens` returned):
   * it announces "Used 3 tokens for generate_goal · 17 left" and reads the balances again.
   */
  spent(deduction: Deduction): void {
    if (!deduction) return;
    const shown = this.#data?.organization.id;
    if (shown && deduction.organization_id && deduction.organization_id !== shown) return;
    const remaining = deduction.remaining_balance ?? deduction.remainingBalance;
    const tokens = deduction.tokens_deducted ?? deduction.tokensDeducted;
    const parts: string[] = [];
    if (tokens !== undefined) {
      parts.push(
        `Used ${tokens} token${tokens === 1 ? "" : "s"}${deduction.feature ? ` for ${deduction.feature}` : ""}`,
      );
    } else if (deduction.message) {
      parts.push(deduction.message);
    }
    if (remaining !== undefined) parts.push(`${remaining} left`);
    this.#notice.textContent = parts.join(" · ");
    void this.refresh({ quiet: true });
  }

  /** Read everything again; `quiet` keeps what is shown until the new numbers arrive. */
  async refresh({ quiet = false }: { quiet?: boolean } = {}): Promise<void> {
    const generation = ++this.#generation;
    const client = this.client;
    if (!client) {
      this.#show("error", messageView("error", MESSAGES.error[0],
        "token-dashboard needs the supabase-url and anon-key attributes, or a client.", false));
      return;
    }
    if (!quiet || this.#data === null) {
      this.#show("loading", messageView("loading", ...MESSAGES.loading, false));
    }
    try {
      const user = await this.#signedInUser(client);
      if (generation !== this.#generation) return;
      if (user === null) {
        this.#data = null;
        this.#show("signed-out", messageView("signed-out", ...MESSAGES["signed-out"], false));
        return;
      }
      const data = await loadDashboard(client, {
        organizationId: this.getAttribute("organization-id") || null,
        plan: this.getAttribute("plan") || null,
        days: this.#days(),
        userId: user.id,
      });
      if (generation !== this.#generation) return;
      this.#data = data;
      const purchased = data.stats.by_type.some((type) => (type.purchased_balance ?? 0) > 0);
      const state = data.planOffersNothing && !purchased ? "upgrade" : "ready";
      this.#show(state, dashboardView(data, this.getAttribute("upgrade-url")));
    } catch (error) {
      if (generation !== this.#generation) return;
      this.#data = null;
      const state = error instanceof DashboardProblem ? error.state : "error";
      const [title, text] = MESSAGES[state];
      const detail = error instanceof DashboardProblem ? error.message : text;
      const retry = state === "network-error" || state === "error";
      this.#show(state, messageView(state, title, detail, retry));
    }
  }

  #clientFromAttributes(): SupabaseClient | null {
    const url = this.getAttribute("supabase-url");
    const key = this.getAttribute("anon-key");
    return url && key ? clientFor(url, key) : null;
  }

  /**
   * The signed-in user, or null when signed out. A client made with a third-party
   * `accessToken` has no auth API: its user is unknown here and RLS still decides.
   */
  async #signedInUser(client: SupabaseClient): Promise<{ id: string | null } | null> {
    let auth: SupabaseClient["auth"];
    try {
      auth = client.auth;
    } catch {
      return { id: null };
    }
    const { data } = await auth.getSession();
    const id = data.session?.user?.id;
    return id ? { id } : null;
  }

  #watchAuth(): void {
    this.#unsubscribe?.();
    this.#unsubscribe = null;
    const client = this.client;
    if (!client || !this.isConnected) return;
    try {
      const { data } = client.auth.onAuthStateChange((event) => {
        if (event !== "INITIAL_SESSION" && event !== "TOKEN_REFRESHED") this.#schedule();
      });
      this.#unsubscribe = () => data.subscription.unsubscribe();
    } catch {
      // a client without the auth API (third-party accessToken): nothing to watch
    }
  }

  #days(): number {
    const days = Number.parseInt(this.getAttribute("days") ?? "", 10);
    return Number.isFinite(days) && days >= 1 ? Math.min(days, 366) : 30;
  }

  #schedule(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    queueMicrotask(() => {
      this.#scheduled = false;
      if (this.isConnected) void this.refresh();
    });
  }

  #show(state: DashboardState, html: string): void {
    this.#content.innerHTML = html;
    this.setAttribute("state", state);
    this.toggleAttribute("aria-busy", state === "loading");
    if (state !== "loading") {
      this.dispatchEvent(
        new CustomEvent("tokens-state", {
          bubbles: true,
          composed: true,
          detail: { state, stats: this.#data?.stats ?? null },
        }),
      );
    }
  }

  #clicked(event: Event): void {
    const target = event.target as Element | null;
    const action = target?.closest("[data-action]")?.getAttribute("data-action");
    if (action === "retry") {
      void this.refresh().then(() => this.#content.focus());
    } else if (action === "upgrade") {
      this.dispatchEvent(new CustomEvent("tokens-upgrade", { bubbles: true, composed: true }));
    }
  }
}

/** Register `<token-dashboard>` once (a no-op on the server and when already defined). */
export function defineTokenDashboard(): void {
  if (typeof customElements !== "undefined" && !customElements.get(TAG)) {
    customElements.define(TAG, TokenDashboardElement);
  }
}

declare global {
  interface HTMLElementTagNameMap {
    "token-dashboard": TokenDashboardElement;
  }
  interface DocumentEventMap {
    "tokens-spent": CustomEvent<Deduction>;
  }
}
