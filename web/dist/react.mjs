"use client";

// src/react.tsx
import { createElement, useEffect, useRef } from "react";

// src/element.ts
import { createClient } from "@supabase/supabase-js";

// src/data.ts
var DashboardProblem = class extends Error {
  constructor(state, message) {
    super(message);
    this.state = state;
    this.name = "DashboardProblem";
  }
  state;
};
function problem(error, status) {
  if (status === 0 || status >= 500) {
    return new DashboardProblem(
      "network-error",
      "The token service could not be reached. Check your connection and try again."
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
async function result(query) {
  const { data, error, status } = await query;
  if (error) throw problem(error, status);
  return data;
}
function periodStart(days, now = /* @__PURE__ */ new Date()) {
  const start = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate()));
  start.setUTCDate(start.getUTCDate() - (days - 1));
  return start;
}
async function loadDashboard(client, options) {
  let organizations = client.from("organizations").select("id, name, plan").limit(1);
  if (options.organizationId) organizations = organizations.eq("id", options.organizationId);
  const [organization] = await result(
    organizations
  );
  if (!organization) {
    throw new DashboardProblem("not-a-member", "You are not a member of this organization.");
  }
  const organizationId = organization.id;
  const since = periodStart(options.days);
  const report = (groupBy) => result(
    client.rpc("get_usage_report", {
      organization_id: organizationId,
      group_by: groupBy,
      since: since.toISOString()
    })
  );
  const profile = options.userId ? result(
    client.from("user_profiles").select("role").eq("id", options.userId).limit(1)
  ).catch(() => []) : Promise.resolve([]);
  const plan = options.plan ?? organization.plan;
  const allocations = plan ? result(
    client.from("ai_plan_allocations").select("token_type").eq("plan", plan).gt("monthly_allocation", 0)
  ).catch(() => null) : Promise.resolve(null);
  const alerts = result(
    client.from("ai_token_alerts").select("id, token_type, kind, reason, created_at").eq("organization_id", organizationId).order("created_at", { ascending: false }).limit(8)
  );
  const [stats, byDay, byFeature, byMember, profileRows, offered, alertRows] = await Promise.all([
    result(client.rpc("get_token_stats", { organization_id: organizationId })),
    report("day"),
    report("feature"),
    report("user"),
    profile,
    allocations,
    alerts
  ]);
  const role = profileRows[0]?.role ?? null;
  const planOffersNothing = offered !== null ? offered.length === 0 : stats.by_type.every((type) => type.allocated === 0);
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
    alerts: role === "owner" || role === "admin" ? alertRows : []
  };
}

// src/styles.ts
var STYLES = `
:host {
  --td-text: #1f2328;
  --td-muted: #57606a;
  --td-surface: #ffffff;
  --td-border: #d0d7de;
  --td-track: #e6e9ed;
  --td-fill: #1a7f37;
  --td-low: #b35900;
  --td-accent: #0550ae;
  --td-warning-bg: #fff4e5;
  --td-warning-text: #6e3400;
  --td-error-text: #a40e26;
  display: block;
  color: var(--td-text);
  background: var(--td-surface);
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  padding: 16px;
  border: 1px solid var(--td-border);
  border-radius: 8px;
  max-width: 960px;
}
:host([hidden]) { display: none; }
h2 { font-size: 1.25rem; margin: 0; }
h3 { font-size: 1rem; margin: 0; }
p { margin: 0.25rem 0; }
.head { display: flex; flex-wrap: wrap; align-items: baseline; justify-content: space-between; gap: 8px; margin-bottom: 8px; }
.org, .totals, .usage-total, figcaption, caption, .facts dt, .axis-labels, .empty { color: var(--td-muted); }
.notice:empty { display: none; }
.notice { margin: 8px 0; padding: 8px 12px; border-left: 4px solid var(--td-accent); background: #eef5ff; color: #0a3069; }
.warning { margin: 8px 0; padding: 8px 12px; border: 1px solid var(--td-low); border-left-width: 4px; border-radius: 4px; background: var(--td-warning-bg); color: var(--td-warning-text); }
.warning ul { margin: 4px 0 0; padding-left: 20px; }
.types { list-style: none; padding: 0; margin: 12px 0; display: grid; gap: 12px; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); }
.type { border: 1px solid var(--td-border); border-radius: 6px; padding: 10px 12px; }
.type.low { border-color: var(--td-low); }
.type-head { display: flex; justify-content: space-between; align-items: baseline; gap: 8px; }
.count { font-variant-numeric: tabular-nums; font-weight: 600; }
.bar { height: 10px; border-radius: 5px; background: var(--td-track); margin: 6px 0; overflow: hidden; outline: 1px solid #8c959f; outline-offset: -1px; }
.fill { height: 100%; background: var(--td-fill); }
.low .fill { background: var(--td-low); }
.facts { display: grid; grid-template-columns: repeat(4, auto); gap: 4px 12px; margin: 0; font-size: 0.85rem; }
.facts dt { font-size: 0.75rem; }
.facts dd { margin: 0; font-variant-numeric: tabular-nums; }
.usage, .members, .alerts { margin-top: 16px; }
figure { margin: 8px 0; }
svg { display: block; width: 100%; }
.by-day svg { height: 72px; }
.by-day rect, td.share rect { fill: var(--td-accent); }
.axis { stroke: #8c959f; stroke-width: 1; }
.axis-labels { display: flex; justify-content: space-between; font-size: 0.75rem; }
table { border-collapse: collapse; width: 100%; margin: 8px 0; }
caption { text-align: left; font-size: 0.85rem; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--td-border); }
td.uses, td.tokens, th.number { text-align: right; font-variant-numeric: tabular-nums; }
td.share { width: 30%; }
td.share svg { height: 8px; }
.alerts ul { list-style: none; padding: 0; margin: 8px 0; }
.alerts li { display: flex; gap: 12px; padding: 4px 0; border-bottom: 1px solid var(--td-border); }
.alerts time { color: var(--td-muted); min-width: 9rem; }
.upgrade { margin: 12px 0; padding: 16px; border: 1px solid var(--td-accent); border-radius: 6px; background: #eef5ff; }
.upgrade h3 { font-size: 1.05rem; }
.button { display: inline-block; margin-top: 8px; padding: 6px 14px; border-radius: 6px; border: 1px solid var(--td-accent); background: var(--td-accent); color: #ffffff; font: inherit; text-decoration: none; cursor: pointer; }
.button:focus-visible, a:focus-visible { outline: 3px solid #0969da; outline-offset: 2px; }
.message { padding: 8px 0; }
.message.network-error h2, .message.error h2 { color: var(--td-error-text); }
.spinner { display: inline-block; width: 14px; height: 14px; border: 2px solid var(--td-border); border-top-color: var(--td-accent); border-radius: 50%; animation: spin 1s linear infinite; vertical-align: middle; }
@keyframes spin { to { transform: rotate(360deg); } }
@media (prefers-reduced-motion: reduce) { .spinner { animation: none; } }
.visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
`;

// src/view.ts
var ESCAPES = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;"
};
function escape(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ESCAPES[c] ?? c);
}
var numbers = new Intl.NumberFormat("en-US");
var count = (n) => numbers.format(n);
var dates = new Intl.DateTimeFormat("en-US", {
  year: "numeric",
  month: "short",
  day: "numeric",
  timeZone: "UTC"
});
var dateTimes = new Intl.DateTimeFormat("en-US", {
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  timeZone: "UTC",
  timeZoneName: "short"
});
function humanize(name) {
  const words = name.replace(/_/g, " ").trim();
  return words.charAt(0).toUpperCase() + words.slice(1);
}
var plural = (n, word) => `${count(n)} ${word}${n === 1 ? "" : "s"}`;
function dashboardView(data, upgradeUrl) {
  const { organization, stats } = data;
  const plan = stats.plan ?? organization.plan;
  const header = `
    <header class="head">
      <h2 id="title">AI tokens</h2>
      <p class="org"><span class="org-name">${escape(organization.name)}</span>${plan ? ` · <span class="plan">${escape(humanize(plan))} plan</span>` : ""}</p>
    </header>`;
  const purchased = stats.by_type.some((type) => (type.purchased_balance ?? 0) > 0);
  if (data.planOffersNothing && !purchased) {
    return `${header}${upgradeView(plan, upgradeUrl)}`;
  }
  return `${header}
    ${warningView(stats.by_type)}
    <p class="totals">${count(stats.total_balance)} of ${count(stats.total_allocated)} tokens left this period · ${count(stats.total_used)} used</p>
    <ul class="types" aria-label="Balances by token type">
      ${stats.by_type.map(tokenTypeView).join("")}
    </ul>
    ${usageView(data)}
    ${membersView(data)}
    ${alertsView(data)}`;
}
function upgradeView(plan, upgradeUrl) {
  const action = upgradeUrl ? `<a class="button" href="${escape(upgradeUrl)}">See plans and upgrade</a>` : `<button type="button" class="button" data-action="upgrade">See plans and upgrade</button>`;
  return `
    <section class="upgrade" aria-labelledby="upgrade-title">
      <h3 id="upgrade-title">AI features are not included in your ${plan ? `${escape(humanize(plan))} ` : ""}plan</h3>
      <p>Upgrade your plan to get a monthly allowance of AI tokens for its AI features.</p>
      ${action}
    </section>`;
}
function warningView(types) {
  const low = types.filter((type) => type.low);
  if (low.length === 0) return "";
  const items = low.map(
    (type) => `<li><strong>${escape(humanize(type.token_type))}</strong>: ${count(type.balance)} of ${count(type.allocated)} left (${type.percent_remaining} %)</li>`
  ).join("");
  return `
    <div class="warning" role="alert">
      <p><span aria-hidden="true">⚠</span> Running low on AI tokens (under 20 % left):</p>
      <ul>${items}</ul>
    </div>`;
}
function tokenTypeView(type) {
  const id = `type-${escape(type.token_type)}`;
  const max = Math.max(type.allocated, type.balance);
  const width = max > 0 ? Math.min(100, 100 * type.balance / max) : 0;
  const held = type.reserved ?? 0;
  const bought = type.purchased_balance ?? 0;
  const refresh = type.refresh_date ? `<time datetime="${escape(type.refresh_date)}">${dates.format(new Date(type.refresh_date))}</time>` : "not scheduled";
  return `
    <li class="type${type.low ? " low" : ""}" data-token-type="${escape(type.token_type)}">
      <div class="type-head">
        <h3 id="${id}">${escape(humanize(type.token_type))}</h3>
        <span class="count"><span class="balance">${count(type.balance)}</span> / <span class="allocated">${count(type.allocated)}</span></span>
      </div>
      <div class="bar" role="progressbar" aria-labelledby="${id}"
        aria-valuemin="0" aria-valuemax="${max}" aria-valuenow="${type.balance}"
        aria-valuetext="${count(type.balance)} of ${count(type.allocated)} tokens left (${type.percent_remaining} %)">
        <div class="fill" style="width: ${width.toFixed(2)}%"></div>
      </div>
      <dl class="facts">
        <div><dt>Left</dt><dd class="percent">${type.percent_remaining} %</dd></div>
        <div><dt>Refreshes</dt><dd class="refresh">${refresh}</dd></div>
        <div><dt>Held</dt><dd class="held">${count(held)}</dd></div>
        <div><dt>Purchased</dt><dd class="purchased">${count(bought)}</dd></div>
      </dl>
    </li>`;
}
function dayKeys(since, days) {
  const keys = [];
  for (let i = 0; i < days; i++) {
    const day = new Date(since.getTime());
    day.setUTCDate(day.getUTCDate() + i);
    keys.push(day.toISOString().slice(0, 10));
  }
  return keys;
}
function usageView(data) {
  const period = `last ${plural(data.days, "day")}`;
  const total = data.byFeature.reduce((sum, row) => sum + row.tokens, 0);
  if (data.byDay.length === 0 && data.byFeature.length === 0) {
    return `
      <section class="usage" aria-labelledby="usage-title">
        <h3 id="usage-title">Usage, ${period}</h3>
        <p class="empty">No AI usage in the ${period} yet. Tokens appear here once an AI feature is used.</p>
      </section>`;
  }
  return `
    <section class="usage" aria-labelledby="usage-title">
      <h3 id="usage-title">Usage, ${period}</h3>
      <p class="usage-total">${plural(total, "token")} used${data.role === "owner" || data.role === "admin" ? "" : " by you"}</p>
      ${dayChart(data.byDay, data.since, data.days)}
      ${rowsTable("by-feature", "By feature", "Feature", data.byFeature, humanize)}
    </section>`;
}
function dayChart(rows, since, days) {
  const byDay = new Map(rows.map((row) => [row.key, row.tokens]));
  const keys = dayKeys(since, days);
  const values = keys.map((key) => byDay.get(key) ?? 0);
  const peak = Math.max(1, ...values);
  const used = keys.filter((key) => byDay.has(key));
  const barWidth = 10;
  const height = 60;
  const bars = keys.map((key, i) => {
    const value = values[i] ?? 0;
    const h = value === 0 ? 0 : Math.max(2, height * value / peak);
    return `<rect x="${i * barWidth + 1}" y="${(height - h).toFixed(2)}" width="${barWidth - 2}" height="${h.toFixed(2)}"><title>${key}: ${plural(value, "token")}</title></rect>`;
  }).join("");
  const busiest = keys[values.indexOf(Math.max(...values))];
  const summary = `Tokens used per day from ${keys[0]} to ${keys[keys.length - 1]}: ${plural(
    values.reduce((a, b) => a + b, 0),
    "token"
  )} on ${plural(used.length, "day")}${busiest && byDay.has(busiest) ? `, most on ${busiest} (${count(byDay.get(busiest) ?? 0)})` : ""}.`;
  return `
    <figure class="chart by-day">
      <figcaption>By day</figcaption>
      <svg role="img" aria-label="${escape(summary)}" viewBox="0 0 ${keys.length * barWidth} ${height}" preserveAspectRatio="none" focusable="false">
        <line x1="0" y1="${height - 0.5}" x2="${keys.length * barWidth}" y2="${height - 0.5}" class="axis"></line>
        ${bars}
      </svg>
      <div class="axis-labels" aria-hidden="true"><span>${escape(keys[0])}</span><span>${escape(keys[keys.length - 1])}</span></div>
    </figure>`;
}
function rowsTable(name, caption, heading, rows, label, hideCaption = false) {
  const peak = Math.max(1, ...rows.map((row) => row.tokens));
  const body = rows.map(
    (row) => `
        <tr data-key="${escape(row.key)}">
          <th scope="row">${escape(label(row.label))}</th>
          <td class="uses">${count(row.uses)}</td>
          <td class="tokens">${count(row.tokens)}</td>
          <td class="share" aria-hidden="true"><svg viewBox="0 0 100 8" preserveAspectRatio="none" focusable="false"><rect x="0" y="0" height="8" width="${(100 * row.tokens / peak).toFixed(2)}"></rect></svg></td>
        </tr>`
  ).join("");
  return `
    <table class="${name}">
      <caption${hideCaption ? ' class="visually-hidden"' : ""}>${escape(caption)}</caption>
      <thead><tr><th scope="col">${escape(heading)}</th><th scope="col" class="number">Uses</th><th scope="col" class="number">Tokens</th><th scope="col"><span class="visually-hidden">Share</span></th></tr></thead>
      <tbody>${body}</tbody>
    </table>`;
}
function membersView(data) {
  const admin = data.role === "owner" || data.role === "admin";
  if (data.byMember.length === 0) return "";
  const title = admin ? "Usage by member" : "Your usage";
  return `
    <section class="members" aria-labelledby="members-title">
      <h3 id="members-title">${title}</h3>
      ${rowsTable("by-member", title, "Member", data.byMember, (name) => name, true)}
    </section>`;
}
var ALERT_TEXT = {
  usage_80_percent: "More than 80 % of the allocation used",
  balance_below_20_percent: "Balance under 20 %",
  balance_exhausted: "Balance used up",
  refused: "A request was refused"
};
function alertText(alert) {
  const text = ALERT_TEXT[alert.kind] ?? humanize(alert.kind);
  return alert.kind === "refused" && alert.reason ? `${text} (${humanize(alert.reason)})` : text;
}
function alertsView(data) {
  if (data.role !== "owner" && data.role !== "admin") return "";
  const items = data.alerts.map(
    (alert) => `
        <li data-kind="${escape(alert.kind)}">
          <time datetime="${escape(alert.created_at)}">${dateTimes.format(new Date(alert.created_at))}</time>
          <span>${escape(humanize(alert.token_type))}: ${escape(alertText(alert))}</span>
        </li>`
  ).join("");
  return `
    <section class="alerts" aria-labelledby="alerts-title">
      <h3 id="alerts-title">Recent alerts</h3>
      ${items ? `<ul>${items}</ul>` : `<p class="empty">No alerts.</p>`}
    </section>`;
}
function messageView(state, title, text, retry) {
  const busy = state === "loading";
  return `
    <div class="message ${escape(state)}" role="${busy ? "status" : state === "network-error" || state === "error" ? "alert" : "status"}"${busy ? ' aria-busy="true"' : ""}>
      ${busy ? '<span class="spinner" aria-hidden="true"></span>' : ""}
      <h2>${escape(title)}</h2>
      <p>${escape(text)}</p>
      ${retry ? '<button type="button" class="button" data-action="retry">Try again</button>' : ""}
    </div>`;
}

// src/element.ts
var TAG = "token-dashboard";
var clients = /* @__PURE__ */ new Map();
function clientFor(url, key) {
  const id = `${url}
${key}`;
  let client = clients.get(id);
  if (!client) {
    client = createClient(url, key, { db: { retry: false } });
    clients.set(id, client);
  }
  return client;
}
var MESSAGES = {
  loading: ["Loading AI tokens…", "Reading your organization's balances."],
  "signed-out": [
    "Sign in to see your AI tokens",
    "Token balances are shown to the signed-in members of an organization."
  ],
  "not-a-member": [
    "No access to this organization",
    "You are not a member of this organization, so its tokens are not shown."
  ],
  "network-error": [
    "Cannot reach the token service",
    "The token service could not be reached. Check your connection and try again."
  ],
  error: ["Something went wrong", "The token balances could not be read."]
};
var Base = typeof HTMLElement === "undefined" ? class {
} : HTMLElement;
var TokenDashboardElement = class extends Base {
  static observedAttributes = [
    "supabase-url",
    "anon-key",
    "organization-id",
    "plan",
    "days",
    "upgrade-url"
  ];
  #client = null;
  #root;
  #content;
  #notice;
  #data = null;
  #generation = 0;
  #scheduled = false;
  #unsubscribe = null;
  #onSpent = (event) => this.spent(event.detail);
  constructor() {
    super();
    this.#root = this.attachShadow({ mode: "open" });
    this.#root.innerHTML = `<style>${STYLES}</style>
      <section class="dashboard" aria-labelledby="title" part="dashboard">
        <p class="notice" role="status" aria-live="polite"></p>
        <div class="content" tabindex="-1"></div>
      </section>`;
    this.#content = this.#root.querySelector(".content");
    this.#notice = this.#root.querySelector(".notice");
    this.#root.addEventListener("click", (event) => this.#clicked(event));
  }
  /** The SupabaseClient to read with (the app's own, signed in); replaces the attributes. */
  get client() {
    return this.#client ?? this.#clientFromAttributes();
  }
  set client(client) {
    this.#client = client;
    this.#watchAuth();
    this.#schedule();
  }
  /** What a person sees now: loading, signed-out, not-a-member, network-error, error, upgrade, ready. */
  get state() {
    return this.getAttribute("state") ?? "loading";
  }
  /** The last stats read (`get_token_stats`), or null before the first load. */
  get stats() {
    return this.#data?.stats ?? null;
  }
  connectedCallback() {
    document.addEventListener("tokens-spent", this.#onSpent);
    this.#watchAuth();
    this.#schedule();
  }
  disconnectedCallback() {
    document.removeEventListener("tokens-spent", this.#onSpent);
    this.#unsubscribe?.();
    this.#unsubscribe = null;
  }
  attributeChangedCallback() {
    if (this.isConnected) this.#schedule();
  }
  /**
   * Tell the dashboard about a deduction it did not make (what `deduct_tokens` returned):
   * it announces "Used 3 tokens for generate_goal · 17 left" and reads the balances again.
   */
  spent(deduction) {
    if (!deduction) return;
    const shown = this.#data?.organization.id;
    if (shown && deduction.organization_id && deduction.organization_id !== shown) return;
    const remaining = deduction.remaining_balance ?? deduction.remainingBalance;
    const tokens = deduction.tokens_deducted ?? deduction.tokensDeducted;
    const parts = [];
    if (tokens !== void 0) {
      parts.push(
        `Used ${tokens} token${tokens === 1 ? "" : "s"}${deduction.feature ? ` for ${deduction.feature}` : ""}`
      );
    } else if (deduction.message) {
      parts.push(deduction.message);
    }
    if (remaining !== void 0) parts.push(`${remaining} left`);
    this.#notice.textContent = parts.join(" · ");
    void this.refresh({ quiet: true });
  }
  /** Read everything again; `quiet` keeps what is shown until the new numbers arrive. */
  async refresh({ quiet = false } = {}) {
    const generation = ++this.#generation;
    const client = this.client;
    if (!client) {
      this.#show("error", messageView(
        "error",
        MESSAGES.error[0],
        "token-dashboard needs the supabase-url and anon-key attributes, or a client.",
        false
      ));
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
        userId: user.id
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
  #clientFromAttributes() {
    const url = this.getAttribute("supabase-url");
    const key = this.getAttribute("anon-key");
    return url && key ? clientFor(url, key) : null;
  }
  /**
   * The signed-in user, or null when signed out. A client made with a third-party
   * `accessToken` has no auth API: its user is unknown here and RLS still decides.
   */
  async #signedInUser(client) {
    let auth;
    try {
      auth = client.auth;
    } catch {
      return { id: null };
    }
    const { data } = await auth.getSession();
    const id = data.session?.user?.id;
    return id ? { id } : null;
  }
  #watchAuth() {
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
    }
  }
  #days() {
    const days = Number.parseInt(this.getAttribute("days") ?? "", 10);
    return Number.isFinite(days) && days >= 1 ? Math.min(days, 366) : 30;
  }
  #schedule() {
    if (this.#scheduled) return;
    this.#scheduled = true;
    queueMicrotask(() => {
      this.#scheduled = false;
      if (this.isConnected) void this.refresh();
    });
  }
  #show(state, html) {
    this.#content.innerHTML = html;
    this.setAttribute("state", state);
    this.toggleAttribute("aria-busy", state === "loading");
    if (state !== "loading") {
      this.dispatchEvent(
        new CustomEvent("tokens-state", {
          bubbles: true,
          composed: true,
          detail: { state, stats: this.#data?.stats ?? null }
        })
      );
    }
  }
  #clicked(event) {
    const target = event.target;
    const action = target?.closest("[data-action]")?.getAttribute("data-action");
    if (action === "retry") {
      void this.refresh().then(() => this.#content.focus());
    } else if (action === "upgrade") {
      this.dispatchEvent(new CustomEvent("tokens-upgrade", { bubbles: true, composed: true }));
    }
  }
};
function defineTokenDashboard() {
  if (typeof customElements !== "undefined" && !customElements.get(TAG)) {
    customElements.define(TAG, TokenDashboardElement);
  }
}

// src/react.tsx
function TokenDashboard(props) {
  const ref = useRef(null);
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
    if (!element) return void 0;
    const state = (event) => {
      const detail = event.detail;
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
    "organization-id": props.organizationId ?? void 0,
    plan: props.plan ?? void 0,
    "supabase-url": props.supabaseUrl,
    "anon-key": props.anonKey,
    days: props.days,
    "upgrade-url": props.upgradeUrl
  });
}
var react_default = TokenDashboard;
export {
  TokenDashboard,
  TokenDashboardElement,
  react_default as default,
  defineTokenDashboard
};
