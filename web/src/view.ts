/**
 * The dashboard's markup: plain strings (every value escaped) rendered into the element's
 * shadow root. No framework; charts are plain SVG with a text equivalent beside them.
 */
import type { DashboardData, TokenAlert, TokenTypeStats, UsageRow } from "./types";

const ESCAPES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};

export function escape(value: unknown): string {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ESCAPES[c] ?? c);
}

const numbers = new Intl.NumberFormat("en-US");
const count = (n: number) => numbers.format(n);
const dates = new Intl.DateTimeFormat("en-US", {
  year: "numeric",
  month: "short",
  day: "numeric",
  timeZone: "UTC",
});
const dateTimes = new Intl.DateTimeFormat("en-US", {
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
  timeZone: "UTC",
  timeZoneName: "short",
});

/** `goal_generation` → `Goal generation`. */
export function humanize(name: string): string {
  const words = name.replace(/_/g, " ").trim();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

const plural = (n: number, word: string) => `${count(n)} ${word}${n === 1 ? "" : "s"}`;

/** The whole dashboard for one organization the caller belongs to. */
export function dashboardView(data: DashboardData, upgradeUrl: string | null): string {
  const { organization, stats } = data;
  const plan = stats.plan ?? organization.plan;
  const header = `
    <header class="head">
      <h2 id="title">AI tokens</h2>
      <p class="org"><span class="org-name">${escape(organization.name)}</span>${
        plan ? ` · <span class="plan">${escape(humanize(plan))} plan</span>` : ""
      }</p>
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

function upgradeView(plan: string | null, upgradeUrl: string | null): string {
  const action = upgradeUrl
    ? `<a class="button" href="${escape(upgradeUrl)}">See plans and upgrade</a>`
    : `<button type="button" class="button" data-action="upgrade">See plans and upgrade</button>`;
  return `
    <section class="upgrade" aria-labelledby="upgrade-title">
      <h3 id="upgrade-title">AI features are not included in your ${
        plan ? `${escape(humanize(plan))} ` : ""
      }plan</h3>
      <p>Upgrade your plan to get a monthly allowance of AI tokens for its AI features.</p>
      ${action}
    </section>`;
}

function warningView(types: TokenTypeStats[]): string {
  const low = types.filter((type) => type.low);
  if (low.length === 0) return "";
  const items = low
    .map(
      (type) =>
        `<li><strong>${escape(humanize(type.token_type))}</strong>: ${count(type.balance)} of ${count(type.allocated)} left (${type.percent_remaining} %)</li>`,
    )
    .join("");
  return `
    <div class="warning" role="alert">
      <p><span aria-hidden="true">⚠</span> Running low on AI tokens (under 20 % left):</p>
      <ul>${items}</ul>
    </div>`;
}

function tokenTypeView(type: TokenTypeStats): string {
  const id = `type-${escape(type.token_type)}`;
  const max = Math.max(type.allocated, type.balance);
  const width = max > 0 ? Math.min(100, (100 * type.balance) / max) : 0;
  const held = type.reserved ?? 0;
  const bought = type.purchased_balance ?? 0;
  const refresh = type.refresh_date
    ? `<time datetime="${escape(type.refresh_date)}">${dates.format(new Date(type.refresh_date))}</time>`
    : "not scheduled";
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

function dayKeys(since: Date, days: number): string[] {
  const keys: string[] = [];
  for (let i = 0; i < days; i++) {
    const day = new Date(since.getTime());
    day.setUTCDate(day.getUTCDate() + i);
    keys.push(day.toISOString().slice(0, 10));
  }
  return keys;
}

function usageView(data: DashboardData): string {
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
      <p class="usage-total">${plural(total, "token")} used${
        data.role === "owner" || data.role === "admin" ? "" : " by you"
      }</p>
      ${dayChart(data.byDay, data.since, data.days)}
      ${rowsTable("by-feature", "By feature", "Feature", data.byFeature, humanize)}
    </section>`;
}

function dayChart(rows: UsageRow[], since: Date, days: number): string {
  const byDay = new Map(rows.map((row) => [row.key, row.tokens]));
  const keys = dayKeys(since, days);
  const values = keys.map((key) => byDay.get(key) ?? 0);
  const peak = Math.max(1, ...values);
  const used = keys.filter((key) => byDay.has(key));
  const barWidth = 10;
  const height = 60;
  const bars = keys
    .map((key, i) => {
      const value = values[i] ?? 0;
      const h = value === 0 ? 0 : Math.max(2, (height * value) / peak);
      return `<rect x="${i * barWidth + 1}" y="${(height - h).toFixed(2)}" width="${barWidth - 2}" height="${h.toFixed(2)}"><title>${key}: ${plural(value, "token")}</title></rect>`;
    })
    .join("");
  const busiest = keys[values.indexOf(Math.max(...values))];
  const summary = `Tokens used per day from ${keys[0]} to ${keys[keys.length - 1]}: ${plural(
    values.reduce((a, b) => a + b, 0),
    "token",
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

function rowsTable(
  name: string,
  caption: string,
  heading: string,
  rows: UsageRow[],
  label: (row: string) => string,
  hideCaption = false,
): string {
  const peak = Math.max(1, ...rows.map((row) => row.tokens));
  const body = rows
    .map(
      (row) => `
        <tr data-key="${escape(row.key)}">
          <th scope="row">${escape(label(row.label))}</th>
          <td class="uses">${count(row.uses)}</td>
          <td class="tokens">${count(row.tokens)}</td>
          <td class="share" aria-hidden="true"><svg viewBox="0 0 100 8" preserveAspectRatio="none" focusable="false"><rect x="0" y="0" height="8" width="${((100 * row.tokens) / peak).toFixed(2)}"></rect></svg></td>
        </tr>`,
    )
    .join("");
  return `
    <table class="${name}">
      <caption${hideCaption ? ' class="visually-hidden"' : ""}>${escape(caption)}</caption>
      <thead><tr><th scope="col">${escape(heading)}</th><th scope="col" class="number">Uses</th><th scope="col" class="number">Tokens</th><th scope="col"><span class="visually-hidden">Share</span></th></tr></thead>
      <tbody>${body}</tbody>
    </table>`;
}

function membersView(data: DashboardData): string {
  const admin = data.role === "owner" || data.role === "admin";
  if (data.byMember.length === 0) return "";
  const title = admin ? "Usage by member" : "Your usage";
  return `
    <section class="members" aria-labelledby="members-title">
      <h3 id="members-title">${title}</h3>
      ${rowsTable("by-member", title, "Member", data.byMember, (name) => name, true)}
    </section>`;
}

const ALERT_TEXT: Record<string, string> = {
  usage_80_percent: "More than 80 % of the allocation used",
  balance_below_20_percent: "Balance under 20 %",
  balance_exhausted: "Balance used up",
  refused: "A request was refused",
};

function alertText(alert: TokenAlert): string {
  const text = ALERT_TEXT[alert.kind] ?? humanize(alert.kind);
  return alert.kind === "refused" && alert.reason ? `${text} (${humanize(alert.reason)})` : text;
}

function alertsView(data: DashboardData): string {
  if (data.role !== "owner" && data.role !== "admin") return "";
  const items = data.alerts
    .map(
      (alert) => `
        <li data-kind="${escape(alert.kind)}">
          <time datetime="${escape(alert.created_at)}">${dateTimes.format(new Date(alert.created_at))}</time>
          <span>${escape(humanize(alert.token_type))}: ${escape(alertText(alert))}</span>
        </li>`,
    )
    .join("");
  return `
    <section class="alerts" aria-labelledby="alerts-title">
      <h3 id="alerts-title">Recent alerts</h3>
      ${items ? `<ul>${items}</ul>` : `<p class="empty">No alerts.</p>`}
    </section>`;
}

/** A state without data: loading, signed out, not a member, network error. */
export function messageView(
  state: string,
  title: string,
  text: string,
  retry: boolean,
): string {
  const busy = state === "loading";
  return `
    <div class="message ${escape(state)}" role="${busy ? "status" : state === "network-error" || state === "error" ? "alert" : "status"}"${
      busy ? ' aria-busy="true"' : ""
    }>
      ${busy ? '<span class="spinner" aria-hidden="true"></span>' : ""}
      <h2>${escape(title)}</h2>
      <p>${escape(text)}</p>
      ${retry ? '<button type="button" class="button" data-action="retry">Try again</button>' : ""}
    </div>`;
}
