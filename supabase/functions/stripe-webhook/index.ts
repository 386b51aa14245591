// Stripe webhook: keeps each organization's plan and purchased tokens in step with Stripe.
//
//   POST /stripe-webhook   (Stripe-Signature header, raw event JSON body)
//
// Every event is verified with STRIPE_WEBHOOK_SECRET by the official `stripe` package
// before anything is read; unsigned, forged or stale events get 400 and change nothing.
//
//   customer.subscription.created / updated  → apply_subscription_event(plan of its price)
//   customer.subscription.deleted            → apply_subscription_event(ai_token_settings.cancelled_plan)
//   checkout.session.completed (paid) and
//   checkout.session.async_payment_succeeded → grant_tokens(the token pack), once per session
//   anything else                            → 200 {"received": true, "ignored": true}
//
// Order: Stripe delivers out of order, so the newest event per subscription (by its
// `created`) wins and a deleted subscription stays deleted (apply_subscription_event);
// an older event is acknowledged with 200 and ignored. A checkout session grants once
// whichever of its two events arrive (grant_tokens is idempotent on the session id).
// An event that can never succeed (an amount out of range, a malformed pack) is
// answered 200 {"rejected": true} and recorded in stripe_rejected_events, so Stripe
// stops retrying; a missing mapping row stays 422, so Stripe retries until it is added.
//
// The organization comes from `metadata.organization_id` of the subscription (set it
// with `subscription_data.metadata` when creating the Checkout Session) or of the
// checkout session (`metadata`, or `client_reference_id` as for Payment Links). Events
// without one are not ours: 200 ignored. The token pack of a checkout session comes from
// its metadata: `token_type` + `amount`, or `price_id` looked up in stripe_token_packs.
// Plan changes are idempotent on the Stripe event id, grants on the checkout session id,
// so a redelivered event changes nothing.
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
/** Stripe's default signature tolerance, both ways. */
const TOLERANCE_SECONDS = 300;
/** Reasons an event can never succeed with: acknowledged (200) and recorded, not retried. */
const PERMANENT = new Set(["invalid_amount", "invalid_token_pack"]);
/** The largest pack grant_tokens accepts. */
const MAX_PACK = 1_000_000_000;

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
    try {
      return await handle(event);
    } catch (error) {
      if (error instanceof HttpError && PERMANENT.has(error.reason)) {
        return await rejected(event, error);
      }
      throw error;
    }
  } catch (error) {
    return errorResponse(error);
  }
});

/** 200, so Stripe stops retrying an event that can never succeed; recorded for people. */
async function rejected(event: Event, error: HttpError): Promise<Response> {
  const { error: failed, status } = await serviceClient().from("stripe_rejected_events").upsert({
    event_id: event.id,
    type: event.type,
    reason: error.reason,
    details: { message: error.message, ...error.details },
  });
  if (failed) throw httpErrorFromPostgrest(failed, status);
  return json({
    received: true,
    rejected: true,
    reason: error.reason,
    eventId: event.id,
    type: event.type,
    details: error.details,
  });
}

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
  // The stripe package refuses a timestamp older than the tolerance but not one in the
  // future; a signature made for later is refused as well.
  const timestamp = Number(/(?:^|,)\s*t=(\d+)/.exec(signature)?.[1]);
  if (Number.isFinite(timestamp) && timestamp > Date.now() / 1000 + TOLERANCE_SECONDS) {
    throw new HttpError(
      400,
      "invalid_signature",
      "The Stripe-Signature timestamp is in the future",
    );
  }
  try {
    return await Stripe.webhooks.constructEventAsync(
      payload,
      signature,
      secret,
      TOLERANCE_SECONDS,
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

  const deleted = event.type === "customer.subscription.deleted";
  // null: the subscription ended; the database moves it to ai_token_settings.cancelled_plan.
  let plan: string | null;
  if (deleted || ENDED.has(subscription.status)) {
    plan = null;
  } else if (PAYING.has(subscription.status)) {
    plan = await planOf(subscription.items.data.map((item) => item.price.id));
  } else {
    return ignored(event, "subscription_not_active");
  }

  const { data, error, status } = await serviceClient().rpc("apply_subscription_event", {
    organization_id: organizationId,
    subscription_id: subscription.id,
    plan,
    deleted,
    event_id: event.id,
    event_created: new Date(event.created * 1000).toISOString(),
  });
  if (error) throw httpErrorFromPostgrest(error, status);
  if (data.applied === false) return ignored(event, data.ignored);
  return json({
    received: true,
    eventId: event.id,
    type: event.type,
    organizationId,
    plan: data.plan,
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
  // From the session's own time, so both of its events compute the same expiry.
  const created = session.created ?? event.created;
  const expiresAt = pack.expiresAfterDays === null
    ? null
    : new Date((created + pack.expiresAfterDays * 86400) * 1000).toISOString();

  const { data, error, status } = await serviceClient().rpc("grant_tokens", {
    organization_id: organizationId,
    token_type: pack.tokenType,
    amount: pack.amount,
    expires_at: expiresAt,
    reason: `Stripe checkout ${session.id}`,
    // The session, not the event: completed and async_payment_succeeded grant once.
    external_id: session.id,
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
    // The bounds of grant_tokens (and stripe_token_packs.amount): 1 to 1,000,000,000.
    if (
      !/^\d+$/.test(metadata.amount) || !Number.isSafeInteger(amount) || amount < 1 ||
      amount > MAX_PACK
    ) {
      throw new HttpError(422, "invalid_token_pack", "metadata.amount must be 1 to 1000000000", {
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
