// @ts-check
// The local stack's page for <token-dashboard>: a development-only sign-in. `tokens demo`
// writes dev-session.json (the demo users' JWTs, minted with the stack's secret, in the
// stack's own git-ignored folder; only the local gateway serves it). `?as=alice` stores
// Alice's session where supabase-js keeps a signed-in session; `?as=nobody` signs out.
// `?anon-key=…` (with `supabase-url`, `organization-id`, `plan`, `days`) configures the
// element directly and reads no dev-session.json (the browser tests do that).

/**
 * @typedef {{ name: string, full_name: string, role: string, organization_id: string,
 *   organization: string, session: Record<string, unknown> }} DevUser
 * @typedef {{ supabase_url: string, anon_key: string, storage_key: string, users: DevUser[] }} DevSession
 */

const params = new URLSearchParams(location.search);

/** supabase-js's default storage key for a project URL. */
function storageKey(/** @type {string} */ url) {
  return `sb-${new URL(url).hostname.split(".")[0]}-auth-token`;
}

/** @returns {Promise<DevSession | null>} */
async function devSession() {
  const response = await fetch("dev-session.json", { cache: "no-store" });
  return response.ok ? /** @type {DevSession} */ (await response.json()) : null;
}

async function main() {
  const explicit = params.get("anon-key");
  const dev = explicit ? null : await devSession();
  const url = params.get("supabase-url") || dev?.supabase_url || location.origin;
  const key = explicit || dev?.anon_key || "";
  const users = /** @type {HTMLElement} */ (document.getElementById("users"));
  const hint = /** @type {HTMLElement} */ (document.getElementById("hint"));
  const as = params.get("as");
  let organization = params.get("organization-id");

  if (dev) {
    for (const user of [...dev.users, null]) {
      const item = document.createElement("li");
      const link = document.createElement("a");
      const name = user ? user.name.toLowerCase() : "nobody";
      link.href = `?as=${name}`;
      link.textContent = user
        ? `${user.full_name} (${user.role}, ${user.organization})`
        : "Signed out";
      if (as === name) link.setAttribute("aria-current", "page");
      item.append(link);
      users.append(item);
    }
    const chosen = dev.users.find((user) => user.name.toLowerCase() === as);
    if (chosen) {
      localStorage.setItem(dev.storage_key, JSON.stringify(chosen.session));
      organization = organization || chosen.organization_id;
    } else if (as === "nobody") {
      localStorage.removeItem(dev.storage_key);
    }
    hint.textContent = "Sessions minted by `tokens demo` for its seeded users; run ./scripts/demo again when they expire.";
  } else if (!explicit) {
    hint.textContent = "No demo sessions yet: run ./scripts/demo to sign in as its users.";
    localStorage.removeItem(storageKey(url));
  }

  const dashboard = document.createElement("token-dashboard");
  dashboard.setAttribute("supabase-url", url);
  dashboard.setAttribute("anon-key", key);
  for (const name of ["plan", "days", "upgrade-url"]) {
    const value = params.get(name);
    if (value) dashboard.setAttribute(name, value);
  }
  if (organization) dashboard.setAttribute("organization-id", organization);
  /** @type {HTMLElement} */ (document.getElementById("main")).append(dashboard);
}

void main();
