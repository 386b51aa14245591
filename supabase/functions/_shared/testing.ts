// Fixtures for the functions' `deno test` suites, which run against a live stack
// (the local one from `tokens stack up`, or `supabase start`) through its gateway.
//
// Environment: SUPABASE_URL, SUPABASE_ANON_KEY, SUPABASE_SERVICE_ROLE_KEY,
// SUPABASE_JWT_SECRET, SUPABASE_DB_URL, STRIPE_WEBHOOK_SECRET
// (`eval "$(.venv/bin/python -m tokens_client stack env)"` exports them all).

import { SignJWT } from "npm:jose@6.2.18";
import postgres from "npm:postgres@3.4.9";
import nodeAssert from "node:assert/strict";

/** `actual` deep-equals `expected` (node:assert: @std/assert is on JSR, not reachable here). */
export function assertEquals(actual: unknown, expected: unknown, message?: string): void {
  nodeAssert.deepStrictEqual(actual, expected, message);
}

export function assert(condition: unknown, message?: string): asserts condition {
  nodeAssert.ok(condition, message);
}

function required(name: string): string {
  const value = Deno.env.get(name);
  if (!value) {
    throw new Error(
      `${name} is not set: run eval "$(.venv/bin/python -m tokens_client stack env)" first`,
    );
  }
  return value;
}

export const env = {
  url: required("SUPABASE_URL"),
  anonKey: required("SUPABASE_ANON_KEY"),
  serviceRoleKey: required("SUPABASE_SERVICE_ROLE_KEY"),
  jwtSecret: required("SUPABASE_JWT_SECRET"),
  dbUrl: required("SUPABASE_DB_URL"),
};

export const functionsUrl = `${env.url}/functions/v1`;

export type Sql = postgres.Sql;

/** Run `fn` with a fresh superuser connection (closed afterwards, so tests leak nothing). */
export async function withDb<T>(fn: (sql: Sql) => Promise<T>): Promise<T> {
  const sql = postgres(env.dbUrl, { max: 1, onnotice: () => {}, connection: { TimeZone: "UTC" } });
  try {
    return await fn(sql);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/** An HS256 JWT as Supabase Auth signs it; `secret` and the times can be overridden. */
export function mintJwt(
  sub: string,
  options: { role?: string; expiresAt?: number; secret?: string; email?: string } = {},
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ role: options.role ?? "authenticated", email: options.email })
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setSubject(sub)
    .setAudience("authenticated")
    .setIssuedAt(now)
    .setExpirationTime(options.expiresAt ?? now + 3600)
    .sign(new TextEncoder().encode(options.secret ?? env.jwtSecret));
}

export interface Organization {
  organizationId: string;
  userId: string;
  /** The owner's JWT. */
  token: string;
  plan: string;
}

/**
 * A fresh organization on `plan` with one owner and its tokens initialized to the plan's
 * allocation, removed again (with its balances and usage) after `fn`.
 */
export async function withOrganization(
  plan: "starter" | "pro" | "enterprise",
  fn: (organization: Organization) => Promise<void>,
): Promise<void> {
  const organizationId = crypto.randomUUID();
  const userId = crypto.randomUUID();
  await withDb(async (sql) => {
    await sql.begin(async (tx) => {
      await tx`insert into auth.users (id, aud, role, email)
               values (${userId}, 'authenticated', 'authenticated', ${`${userId}@edge.test`})`;
      await tx`insert into public.organizations (id, name, plan)
               values (${organizationId}, ${`edge test ${plan}`}, ${plan})`;
      await tx`insert into public.user_profiles (id, organization_id, full_name, role)
               values (${userId}, ${organizationId}, 'Edge Test Owner', 'owner')`;
      await tx`select count(*) from public.initialize_tokens(${organizationId}::uuid)`;
    });
  });
  try {
    await fn({ organizationId, userId, token: await mintJwt(userId), plan });
  } finally {
    await withDb(async (sql) => {
      await sql`delete from public.organizations where id = ${organizationId}`;
      await sql`delete from auth.users where id = ${userId}`;
    });
  }
}

/** The organization's balance of one token type, read straight from the table. */
export function balanceOf(organizationId: string, tokenType: string): Promise<number | null> {
  return withDb(async (sql) => {
    const rows = await sql`select balance from public.ai_tokens
                           where organization_id = ${organizationId} and token_type = ${tokenType}`;
    return rows.length ? Number(rows[0].balance) : null;
  });
}

/** How many usage-log rows the organization has. */
export function usageCount(organizationId: string): Promise<number> {
  return withDb(async (sql) => {
    const [row] = await sql`select count(*)::int as n from public.ai_token_usage_log
                            where organization_id = ${organizationId}`;
    return row.n;
  });
}

export interface Answer {
  status: number;
  headers: Headers;
  // deno-lint-ignore no-explicit-any
  body: any;
}

/**
 * Call a function through the gateway, with the anon key as `apikey` (as supabase-js
 * sends it) unless `headers` name one; the body is always read (JSON when it is JSON).
 */
export async function call(
  path: string,
  init: {
    method?: string;
    token?: string | null;
    body?: string | object;
    headers?: Record<string, string>;
  } = {},
): Promise<Answer> {
  const headers: Record<string, string> = { apikey: env.anonKey, ...init.headers };
  if (init.token) headers.Authorization = `Bearer ${init.token}`;
  let body: string | undefined;
  if (init.body !== undefined) {
    body = typeof init.body === "string" ? init.body : JSON.stringify(init.body);
    headers["Content-Type"] ??= "application/json";
  }
  const response = await fetch(`${functionsUrl}${path}`, {
    method: init.method ?? (body === undefined ? "GET" : "POST"),
    headers,
    body,
  });
  const text = await response.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: keep the text
  }
  return { status: response.status, headers: response.headers, body: parsed };
}

/** The answer is the JSON error shape with this status and reason. */
export function assertError(answer: Answer, status: number, reason: string): void {
  assertEquals(
    { status: answer.status, reason: answer.body?.reason },
    { status, reason },
    `unexpected answer: ${answer.status} ${JSON.stringify(answer.body)}`,
  );
  assertEquals(typeof answer.body.error, "string");
  assert(answer.body.error.length > 0, "error message is empty");
  const extra = Object.keys(answer.body).filter((k) => !["error", "reason", "details"].includes(k));
  assertEquals(extra, [], "the error body has only error, reason and details");
  assertEquals(answer.headers.get("Access-Control-Allow-Origin"), "*", "CORS on errors too");
}
