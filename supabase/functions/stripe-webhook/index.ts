// Stripe webhook: keeps each organization's plan and purchased tokens in step with Stripe.
//
//   POST /stripe-webhook   (Stripe-Signature header, raw event JSON body)
//
// Every event is verified with STRIPE_WEBHOOK_SECRET by the official `stripe` package
// before anything is read; unsigned, forged or stale events get 400 and change nothing.
//
//   customer.subscription.created / updated  → set_organization_plan(plan of its price)
//   customer.subscription.deleted            → set_organization_plan('starter')
//   checkout.session.completed (paid) and
//   checkout.session.async_payment_succeeded → grant_tokens(the token pack)
//   anything else                            → 200 {"received": true, "ignored": true}
//
// The organization comes from `metadata.organization_id` of the subscription (set it
// with `subscription_data.metadata` when creating the Checkout Session) or of the
// checkout session (`metadata`, or `client_reference_id` as for Payment Links). Events
// without one are not ours: 200 ignored. The token pack of a checkout session comes from
// its metadata: `token_type` + `amount`, or `price_id` looked up in stripe_token_packs.
// Each RPC gets the Stripe event id, so a redelivered event changes nothing.
//
// The service role key is used here only: Stripe is not a signed-in user.

import { createClient, Stripe } from "../_shared/deps.ts";
import {
  errorResponse,
  HttpError,
  isUuid,
  json,
  methodNotAllowed,
  routeOf,
} from "../_shared/http.ts";
import { httpErrorFromPostgrest } from "../_shared/postgrest.ts";

const cryptoProvider = Stripe.createSubtleCryptoProvider();

type Event = Stripe.Event;
type Subscription = Stripe.Subscription;
type CheckoutSession = Stripe.Checkout.Session;

/** Subscription states that grant the mapped plan; past_due keeps it while Stripe retries. */
const PAYING = new Set(["active", "trialing", "past_due"]);
/** Subscription states that end the paid plan. ("incomplete" waits for its first payment.) */
const ENDED = new Set(["canceled", "unpaid", "incomplete_expired", "paused"]);

Deno.serve(async (request) => {
  try {
    if (routeOf(request, "stripe-webhook") !== "") {
      throw new HttpError(404, "not_found", `No such endpoint: ${new URL(request.url).pathname}`);
    }
    if (request.method !== "POST") throw methodNotAllowed(request.method, ["POST"]);
    const event = await verifiedEvent(request);
    return await handle(event);
  } catch (error) {
    return errorResponse(error);
  }
});

/** The event, once its Stripe-Signature matches the body and is within the tolerance. */
async function verifiedEvent(request: Request): Promise<Event> {
  const secret = Deno.env.get("STRIPE_WEBHOOK_SECRET");
  if (!secret) {
    throw new HttpError(500, "server_misconfigured", "STRIPE_WEBHOOK_SECRET is not set");
  }
  const signature = request.headers.get("Stripe-Signature");
  const payload = await request.text();
  if (!signature) {
    throw new HttpError(400, "invalid_signature", "The Stripe-Signature header is missing");
  }
  try {
    return await Stripe.webhooks.constructEventAsync(
      payload,
      signature,
      secret,
      undefined, // Stripe's default tolerance: 300 seconds
      cryptoProvider,
    );
  } catch (error) {
    const why = error instanceof Error ? error.message : String(error);
    throw new HttpError(400, "invalid_signature", `Stripe signature verification failed: ${why}`);
  }
}

async function handle(event: Event): Promise<Response> {
  switch (event.type) {
    case "customer.subscription.created":
    case "customer.subscription.updated":
    case "customer.subscription.deleted":
      return await onSubscription(event, event.data.object);
    case "checkout.session.completed":
    case "checkout.session.async_payment_succeeded":
      return await onCheckout(event, event.data.object);
    default:
      return ignored(event, "unhandled_event_type");
  }
}

function ignored(event: Event, reason: string): Response {
  return json({ received: true, ignored: true, reason, eventId: event.id, type: event.type });
}

function serviceClient() {
  const url = Deno.env.get("SUPABASE_URL");
  const key = Deno.env.get("SUPABASE_SERVICE_ROLE_KEY");
  if (!url || !key) {
    throw new HttpError(
      500,
      "server_misconfigured",
      "SUPABASE_URL or SUPABASE_SERVICE_ROLE_KEY is not set",
    );
  }
  return createClient(url, key, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
  });
}

/** The organization an event's object names, or null when it names none (not ours). */
function organizationOf(...candidates: (string | null | undefined)[]): string | null {
  const value = candidates.find((candidate) => candidate);
  if (!value) return null;
  if (!isUuid(value)) {
    throw new HttpError(422, "invalid_organization", "metadata.organization_id is not a uuid", {
      organizationId: value,
    });
  }
  return value;
}

async function onSubscription(event: Event, subscription: Subscription): Promise<Response> {
  const organizationId = organizationOf(subscription.metadata?.organization_id);
  if (!organizationId) return ignored(event, "no_organization");

  let plan: string;
  if (event.type === "customer.subscription.deleted" || ENDED.has(subscription.status)) {
    plan = "starter";
  } else if (PAYING.has(subscription.status)) {
    plan = await planOf(subscription.items.data.map((item) => item.price.id));
  } else {
    return ignored(event, "subscription_not_active");
  }

  const { data, error, status } = await serviceClient().rpc("set_organization_plan", {
    organization_id: organizationId,
    plan,
    event_id: event.id,
  });
  if (error) throw httpErrorFromPostgrest(error, status);
  return json({
    received: true,
    eventId: event.id,
    type: event.type,
    organizationId,
    plan,
    result: data,
  });
}

/** The plan of the first of `priceIds` the stripe_price_plans table maps. */
async function planOf(priceIds: string[]): Promise<string> {
  const { data, error, status } = await serviceClient()
    .from("stripe_price_plans")
    .select("price_id, plan")
    .in("price_id", priceIds);
  if (error) throw httpErrorFromPostgrest(error, status);
  const plans = new Map((data ?? []).map((row) => [row.price_id as string, row.plan as string]));
  const priceId = priceIds.find((id) => plans.has(id));
  if (!priceId) {
    // Not 2xx, so Stripe keeps retrying while someone adds the missing mapping row.
    throw new HttpError(422, "unknown_price", "No plan is mapped to the subscription's prices", {
      priceIds,
    });
  }
  return plans.get(priceId)!;
}

interface TokenPack {
  tokenType: string;
  amount: number;
  expiresAfterDays: number | null;
}

async function onCheckout(event: Event, session: CheckoutSession): Promise<Response> {
  if (session.mode !== "payment") return ignored(event, "not_a_token_pack");
  if (session.payment_status === "unpaid") {
    // Delayed payment methods: checkout.session.async_payment_succeeded follows.
    return ignored(event, "payment_pending");
  }
  const metadata = session.metadata ?? {};
  const organizationId = organizationOf(metadata.organization_id, session.client_reference_id);
  if (!organizationId) return ignored(event, "no_organization");
  const pack = await tokenPackOf(metadata);
  const expiresAt = pack.expiresAfterDays === null
    ? null
    : new Date((event.created + pack.expiresAfterDays * 86400) * 1000).toISOString();

  const { data, error, status } = await serviceClient().rpc("grant_tokens", {
    organization_id: organizationId,
    token_type: pack.tokenType,
    amount: pack.amount,
    expires_at: expiresAt,
    reason: `Stripe checkout ${session.id}`,
    external_id: event.id,
  });
  if (error) throw httpErrorFromPostgrest(error, status);
  return json({
    received: true,
    eventId: event.id,
    type: event.type,
    organizationId,
    tokenType: pack.tokenType,
    amount: pack.amount,
    expiresAt,
    result: data,
  });
}

/** The pack a checkout session bought: from its metadata, or its price_id's mapping row. */
async function tokenPackOf(metadata: Record<string, string>): Promise<TokenPack> {
  if (metadata.token_type && metadata.amount) {
    const amount = Number(metadata.amount);
    if (!/^\d+$/.test(metadata.amount) || !Number.isSafeInteger(amount) || amount < 1) {
      throw new HttpError(422, "invalid_token_pack", "metadata.amount must be a positive integer", {
        amount: metadata.amount,
      });
    }
    return { tokenType: metadata.token_type, amount, expiresAfterDays: null };
  }
  if (!metadata.price_id) {
    throw new HttpError(
      422,
      "unknown_token_pack",
      "The checkout session names no token pack (metadata token_type + amount, or price_id)",
    );
  }
  const { data, error, status } = await serviceClient()
    .from("stripe_token_packs")
    .select("token_type, amount, expires_after_days")
    .eq("price_id", metadata.price_id)
    .maybeSingle();
  if (error) throw httpErrorFromPostgrest(error, status);
  if (!data) {
    throw new HttpError(422, "unknown_price", "No token pack is mapped to this price", {
      priceId: metadata.price_id,
    });
  }
  return {
    tokenType: data.token_type,
    amount: data.amount,
    expiresAfterDays: data.expires_after_days,
  };
}
