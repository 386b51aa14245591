// The guide's token API, as a Supabase Edge Function.
//
//   POST /tokens/check-balance  {organizationId, featureUsed, action: "check"|"deduct", requestId?}
//        check  → {"hasTokens": true|false}
//        deduct → {"success": true, "remainingBalance": 17, "message": "Used 3 tokens for generate_goal", …}
//   GET  /tokens/stats?organizationId=…
//        → {"totalBalance", "totalAllocated", "totalUsed", "byType": [...], "plan", "organizationId", …}
//
// The guide's keys come first, in its order; any further field the RPC returns follows.
//
// The caller's own JWT is forwarded to PostgREST, so RLS and the RPCs' membership checks
// decide; this function holds no service key. Errors: {"error", "reason"} (see README).

import { createClient } from "../_shared/deps.ts";
import {
  errorResponse,
  HttpError,
  isUuid,
  json,
  methodNotAllowed,
  preflight,
  routeOf,
} from "../_shared/http.ts";
import { camelize, httpErrorFromPostgrest, ordered } from "../_shared/postgrest.ts";

const supabaseUrl = Deno.env.get("SUPABASE_URL") ?? "";
const anonKey = Deno.env.get("SUPABASE_ANON_KEY") ?? "";

type Route = (request: Request, token: string) => Promise<Response>;
const routes: Record<string, Record<string, Route>> = {
  "check-balance": { POST: checkBalance },
  "stats": { GET: stats },
};

Deno.serve(async (request) => {
  try {
    if (request.method === "OPTIONS") return preflight();
    const route = routes[routeOf(request, "tokens") ?? ""];
    if (!route) {
      throw new HttpError(404, "not_found", `No such endpoint: ${new URL(request.url).pathname}`);
    }
    const handler = route[request.method];
    if (!handler) throw methodNotAllowed(request.method, [...Object.keys(route), "OPTIONS"]);
    if (!supabaseUrl || !anonKey) {
      throw new HttpError(
        500,
        "server_misconfigured",
        "SUPABASE_URL or SUPABASE_ANON_KEY is not set",
      );
    }
    return await handler(request, userToken(request));
  } catch (error) {
    return errorResponse(error);
  }
});

/**
 * The caller's bearer token, refused early (401) when it cannot be a signed-in user's:
 * missing, the anon key, an anon-role token, not a JWT, without an `exp` or past it. The claims
 * are read only to refuse; PostgREST verifies the signature of whatever is let through.
 */
function userToken(request: Request): string {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(request.headers.get("Authorization") ?? "");
  const token = match?.[1];
  if (!token || token === anonKey) {
    throw new HttpError(401, "unauthenticated", "Sign in to use AI features");
  }
  const claims = unverifiedClaims(token);
  if (!claims) throw new HttpError(401, "invalid_jwt", "Your session is not valid; sign in again");
  if (claims.role === "anon") {
    throw new HttpError(401, "unauthenticated", "Sign in to use AI features");
  }
  // Supabase Auth always signs an exp; a token without one would never expire (PostgREST
  // refuses it too, in its db-pre-request hook).
  if (typeof claims.exp !== "number") {
    throw new HttpError(401, "invalid_jwt", "Your session is not valid; sign in again");
  }
  if (claims.exp * 1000 <= Date.now()) {
    throw new HttpError(401, "jwt_expired", "Your session has expired; sign in again");
  }
  return token;
}

function unverifiedClaims(token: string): Record<string, unknown> | null {
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const base64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, "=")));
    return claims && typeof claims === "object" && !Array.isArray(claims) ? claims : null;
  } catch {
    return null;
  }
}

/** A supabase-js client that acts as the caller: their JWT, no session storage. */
function clientFor(token: string) {
  return createClient(supabaseUrl, anonKey, {
    global: { headers: { Authorization: `Bearer ${token}` } },
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
  });
}

/** Call an RPC as the caller; a refusal becomes the matching HttpError. */
async function rpc(token: string, name: string, args: Record<string, unknown>): Promise<unknown> {
  const { data, error, status } = await clientFor(token).rpc(name, args);
  if (error) throw httpErrorFromPostgrest(error, status);
  return data;
}

async function readJsonObject(request: Request): Promise<Record<string, unknown>> {
  let body: unknown;
  try {
    body = JSON.parse(await request.text());
  } catch {
    throw new HttpError(400, "invalid_json", "The request body must be valid JSON");
  }
  if (!body || typeof body !== "object" || Array.isArray(body)) {
    throw new HttpError(400, "invalid_json", "The request body must be a JSON object");
  }
  return body as Record<string, unknown>;
}

function invalid(field: string, message: string): HttpError {
  return new HttpError(400, "invalid_request", message, { field });
}

function organizationIdOf(value: unknown): string {
  if (value === undefined || value === null || value === "") {
    throw invalid("organizationId", "organizationId is required");
  }
  if (!isUuid(value)) throw invalid("organizationId", "organizationId must be a uuid");
  return value;
}

async function checkBalance(request: Request, token: string): Promise<Response> {
  const body = await readJsonObject(request);
  const organizationId = organizationIdOf(body.organizationId);
  const { featureUsed, action, requestId } = body;
  if (typeof featureUsed !== "string" || featureUsed.trim() === "" || featureUsed.length > 200) {
    throw invalid("featureUsed", "featureUsed must be a feature name (1 to 200 characters)");
  }
  if (
    requestId !== undefined && requestId !== null &&
    (typeof requestId !== "string" || requestId.length === 0 || requestId.length > 200)
  ) {
    throw invalid("requestId", "requestId must be a string of 1 to 200 characters");
  }

  if (action === "check") {
    const hasTokens = await rpc(token, "has_enough_tokens", {
      feature: featureUsed,
      organization_id: organizationId,
    });
    return json({ hasTokens: hasTokens === true });
  }
  if (action === "deduct") {
    const result = camelize(
      await rpc(token, "deduct_tokens", {
        feature: featureUsed,
        organization_id: organizationId,
        request_id: requestId ?? null,
      }),
    ) as Record<string, unknown>;
    return json(ordered(result, [
      "success",
      "remainingBalance",
      "message",
      "tokensDeducted",
      "tokenType",
      "usageId",
      "requestId",
      "replayed",
    ]));
  }
  throw new HttpError(400, "invalid_action", 'action must be "check" or "deduct"', {
    field: "action",
  });
}

async function stats(request: Request, token: string): Promise<Response> {
  const params = new URL(request.url).searchParams;
  const organizationId = organizationIdOf(params.get("organizationId"));
  const result = camelize(
    await rpc(token, "get_token_stats", { organization_id: organizationId }),
  ) as Record<string, unknown>;
  const byType = (result.byType as Record<string, unknown>[]).map((row) =>
    ordered(row, [
      "tokenType",
      "balance",
      "allocated",
      "used",
      "percentRemaining",
      "low",
      "refreshDate",
    ])
  );
  return json({
    ...ordered(result, ["totalBalance", "totalAllocated", "totalUsed", "byType"]),
    byType,
  });
}
