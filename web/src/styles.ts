/**
 * The shadow root's styles. Colors meet WCAG AA against their backgrounds (text 4.5:1,
 * bars 3:1); each can be themed with a CSS custom property on `token-dashboard`.
 */
export const STYLES = `
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
