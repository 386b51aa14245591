// webhook-deliver: sends the alert webhook outbox (public.ai_webhook_deliveries).
//
//   POST /webhook-deliver   Authorization: Bearer <service role key>
//   optional JSON body: {"batch": 10, "timeoutSeconds": 10, "maxSeconds": 25}
//
// On hosted Supabase a pg_cron job calls it every minute with pg_net (README, "Alerts by
// webhook"). Each round claims up to `batch` due deliveries under a lease
// (claim_webhook_deliveries: FOR UPDATE SKIP LOCKED, so this function, other
// invocations of it and `tokens webhooks deliver` never send one delivery at the same
// time), POSTs them in parallel signed in the Standard Webhooks format with the
// `standardwebhooks` package (webhook-id = the delivery's id on every retry), and
// reports each attempt (complete_webhook_delivery: the database schedules the retry
// with the endpoint's backoff, or gives up after its max_attempts). Rounds repeat until
// nothing is due or `maxSeconds` have passed.
//
// Only the service role may call it: it reads endpoint secrets.

import { createClient, type SupabaseClient, Webhook } from "../_shared/deps.ts";
import { errorResponse, HttpError, json, methodNotAllowed, routeOf } from "../_shared/http.ts";
import { httpErrorFromPostgrest } from "../_shared/postgrest.ts";

interface Claimed {
  id: string;
  lease_id: string;
  attempt: number;
  url: string;
  secret: string;
  event_type: string;
  body: string;
}

interface Attempt {
  deliveryId: string;
  attempt: number;
  eventType: string;
  ok: boolean;
  httpStatus: number | null;
  error: string | null;
  status: string;
}

Deno.serve(async (request) => {
  try {
    if (routeOf(request, "webhook-deliver") !== "") {
      throw new HttpError(404, "not_found", `No such endpoint: ${new URL(request.url).pathname}`);
    }
    if (request.method !== "POST") throw methodNotAllowed(request.method, ["POST"]);
    requireServiceRole(request);
    const options = await optionsOf(request);
    return json(await deliver(options));
  } catch (error) {
    return errorResponse(error);
  }
});

function env(name: string): string {
  const value = Deno.env.get(name);
  if (!value) throw new HttpError(500, "server_misconfigured", `${name} is not set`);
  return value;
}

/** 401 unless the bearer token is this project's service role key. */
function requireServiceRole(request: Request): void {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(request.headers.get("Authorization") ?? "");
  const given = new TextEncoder().encode(match?.[1] ?? "");
  const expected = new TextEncoder().encode(env("SUPABASE_SERVICE_ROLE_KEY"));
  let difference = given.length ^ expected.length;
  for (let i = 0; i < expected.length; i++) difference |= expected[i] ^ (given[i] ?? 0);
  if (difference !== 0) {
    throw new HttpError(
      401,
      "service_role_required",
      "Call webhook-deliver with the service role key",
    );
  }
}

interface Options {
  batch: number;
  timeoutSeconds: number;
  maxSeconds: number;
}

async function optionsOf(request: Request): Promise<Options> {
  const text = await request.text();
  let body: Record<string, unknown> = {};
  if (text.trim()) {
    try {
      body = JSON.parse(text);
    } catch {
      throw new HttpError(400, "invalid_json", "The body is not JSON");
    }
    if (!body || typeof body !== "object" || Array.isArray(body)) {
      throw new HttpError(400, "invalid_json", "The body is not a JSON object");
    }
  }
  const number = (field: string, fallback: number, min: number, max: number): number => {
    const value = body[field] ?? fallback;
    if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
      throw new HttpError(400, "invalid_request", `${field} must be a whole number ${min}-${max}`, {
        field,
      });
    }
    return value;
  };
  return {
    batch: number("batch", 10, 1, 100),
    timeoutSeconds: number("timeoutSeconds", 10, 1, 60),
    maxSeconds: number("maxSeconds", 25, 0, 300),
  };
}

async function deliver(options: Options) {
  const supabase = createClient(env("SUPABASE_URL"), env("SUPABASE_SERVICE_ROLE_KEY"), {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
  });
  const started = Date.now();
  const attempts: Attempt[] = [];
  while (true) {
    const { data, error, status } = await supabase.rpc("claim_webhook_deliveries", {
      max_deliveries: options.batch,
      // the parallel sends of a round finish within one timeout; keep a wide margin
      lease_seconds: options.timeoutSeconds + 60,
    });
    if (error) throw httpErrorFromPostgrest(error, status);
    const claimed = (data ?? []) as Claimed[];
    attempts.push(...await Promise.all(claimed.map((c) => send(supabase, c, options))));
    if (claimed.length < options.batch || Date.now() - started >= options.maxSeconds * 1000) break;
  }
  const count = (status: string) => attempts.filter((a) => a.status === status).length;
  return {
    attempts: attempts.length,
    delivered: count("delivered"),
    retrying: count("pending"),
    failed: count("failed"),
    leaseLost: count("lease_lost"),
    results: attempts,
  };
}

async function send(
  supabase: SupabaseClient,
  delivery: Claimed,
  options: Options,
): Promise<Attempt> {
  let httpStatus: number | null = null;
  let failure: string | null = null;
  try {
    const at = new Date();
    const signature = new Webhook(delivery.secret).sign(delivery.id, at, delivery.body);
    const response = await fetch(delivery.url, {
      method: "POST",
      body: delivery.body,
      redirect: "manual",
      signal: AbortSignal.timeout(options.timeoutSeconds * 1000),
      headers: {
        "content-type": "application/json",
        "user-agent": "tokens-client-webhooks/1",
        "webhook-id": delivery.id,
        "webhook-timestamp": String(Math.floor(at.getTime() / 1000)),
        "webhook-signature": signature,
      },
    });
    await response.body?.cancel();
    httpStatus = response.status;
    if (httpStatus < 200 || httpStatus >= 300) failure = `HTTP ${httpStatus}`;
  } catch (error) {
    failure = (error instanceof Error ? `${error.name}: ${error.message}` : String(error))
      .slice(0, 1000);
  }
  const { data, error, status } = await supabase.rpc("complete_webhook_delivery", {
    delivery_id: delivery.id,
    lease_id: delivery.lease_id,
    ok: failure === null,
    http_status: httpStatus,
    error: failure,
  });
  let outcome: string;
  if (error) {
    const refusal = httpErrorFromPostgrest(error, status);
    if (refusal.reason !== "webhook_lease_lost") throw refusal;
    outcome = "lease_lost";
  } else {
    outcome = (data as { status: string }).status;
  }
  return {
    deliveryId: delivery.id,
    attempt: delivery.attempt,
    eventType: delivery.event_type,
    ok: failure === null,
    httpStatus,
    error: failure,
    status: outcome,
  };
}
