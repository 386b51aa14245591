// The stripe-webhook function end to end: Stripe-signed events through the gateway,
// checked against the database afterwards.

import { Stripe } from "../_shared/deps.ts";
import {
  assertEquals,
  assertError,
  balanceOf,
  call,
  withDb,
  withOrganization,
} from "../_shared/testing.ts";

const webhookSecret = Deno.env.get("STRIPE_WEBHOOK_SECRET") ?? "";
if (!webhookSecret) {
  throw new Error(
    'STRIPE_WEBHOOK_SECRET is not set: run eval "$(.venv/bin/python -m tokens_client stack env)" first',
  );
}

const unique = () => crypto.randomUUID().replaceAll("-", "");

const cryptoProvider = Stripe.createSubtleCryptoProvider();

/**
 * Sign `event` as Stripe does and POST it; `sign` overrides what the header is made of.
 * (The async variant of generateTestHeaderString: under Deno the stripe package signs
 * with SubtleCrypto, which has no synchronous form.)
 */
async function deliver(
  event: object,
  sign: { secret?: string; timestamp?: number; payload?: string; header?: string | null } = {},
) {
  const payload = JSON.stringify(event);
  const header = sign.header !== undefined
    ? sign.header
    : await Stripe.webhooks.generateTestHeaderStringAsync({
      payload: sign.payload ?? payload,
      secret: sign.secret ?? webhookSecret,
      timestamp: sign.timestamp,
      cryptoProvider,
    });
  return await call("/stripe-webhook", {
    method: "POST",
    body: payload,
    headers: header === null ? {} : { "Stripe-Signature": header },
  });
}

function event(type: string, object: Record<string, unknown>) {
  return {
    id: `evt_test_${unique()}`,
    object: "event",
    api_version: "2025-01-27.acacia",
    created: Math.floor(Date.now() / 1000),
    livemode: false,
    pending_webhooks: 1,
    request: { id: null, idempotency_key: null },
    type,
    data: { object },
  };
}

function subscriptionEvent(
  type: string,
  organizationId: string | null,
  priceId: string,
  status = "active",
) {
  return event(type, {
    id: `sub_test_${unique()}`,
    object: "subscription",
    status,
    customer: "cus_test_1",
    metadata: organizationId ? { organization_id: organizationId } : {},
    items: {
      object: "list",
      data: [{ id: `si_test_${unique()}`, object: "subscription_item", price: { id: priceId } }],
    },
  });
}

function checkoutEvent(
  organizationId: string | null,
  metadata: Record<string, string>,
  overrides: Record<string, unknown> = {},
) {
  return event("checkout.session.completed", {
    id: `cs_test_${unique()}`,
    object: "checkout.session",
    created: Math.floor(Date.now() / 1000),
    mode: "payment",
    payment_status: "paid",
    status: "complete",
    client_reference_id: null,
    metadata: organizationId ? { organization_id: organizationId, ...metadata } : metadata,
    ...overrides,
  });
}

/** Mapping rows made for one test (price ids of its own), removed afterwards. */
async function withPrices(
  fn: (prices: { pro: string; enterprise: string; pack: string }) => Promise<void>,
): Promise<void> {
  const prices = {
    pro: `price_test_pro_${unique()}`,
    enterprise: `price_test_enterprise_${unique()}`,
    pack: `price_test_pack_${unique()}`,
  };
  await withDb(async (sql) => {
    await sql`insert into public.stripe_price_plans (price_id, plan)
              values (${prices.pro}, 'pro'), (${prices.enterprise}, 'enterprise')`;
    await sql`insert into public.stripe_token_packs (price_id, token_type, amount, expires_after_days)
              values (${prices.pack}, 'forecast', 40, 30)`;
  });
  try {
    await fn(prices);
  } finally {
    await withDb(async (sql) => {
      await sql`delete from public.stripe_price_plans where price_id in (${prices.pro}, ${prices.enterprise})`;
      await sql`delete from public.stripe_token_packs where price_id = ${prices.pack}`;
    });
  }
}

const planOf = (organizationId: string) =>
  withDb(async (sql) => {
    const [row] = await sql`select plan from public.organizations where id = ${organizationId}`;
    return row.plan as string;
  });

/** The organization's plan and balances, to show that a refused event changed nothing. */
const snapshot = (organizationId: string) =>
  withDb(async (sql) => {
    const [organization] = await sql`select plan, updated_at from public.organizations
                                     where id = ${organizationId}`;
    const tokens = await sql`select token_type, balance, total_allocated, refresh_date
                             from public.ai_tokens where organization_id = ${organizationId}
                             order by token_type`;
    return { organization: { ...organization }, tokens: tokens.map((row) => ({ ...row })) };
  });

// -------------------------------------------------------------- signature refusals

Deno.test("unsigned, forged, stale or tampered events get 400 invalid_signature and change nothing", async () => {
  await withPrices(async (prices) => {
    await withOrganization("starter", async (org) => {
      const before = await snapshot(org.organizationId);
      const upgrade = subscriptionEvent(
        "customer.subscription.created",
        org.organizationId,
        prices.pro,
      );
      const refusals = [
        await deliver(upgrade, { header: null }),
        await deliver(upgrade, { header: "t=123,v1=deadbeef" }),
        await deliver(upgrade, { secret: "whsec_not_the_secret" }),
        await deliver(upgrade, { timestamp: Math.floor(Date.now() / 1000) - 600 }),
        await deliver(upgrade, { timestamp: Math.floor(Date.now() / 1000) + 600 }),
        await deliver(upgrade, {
          payload: JSON.stringify({ ...upgrade, id: "evt_test_other" }),
        }),
      ];
      for (const answer of refusals) assertError(answer, 400, "invalid_signature");
      assertEquals(await snapshot(org.organizationId), before);
    });
  });
});

Deno.test("only POST /stripe-webhook is served", async () => {
  const get = await call("/stripe-webhook");
  assertError(get, 405, "method_not_allowed");
  assertEquals(get.headers.get("Allow"), "POST");
  assertError(
    await call("/stripe-webhook/elsewhere", { method: "POST", body: "{}" }),
    404,
    "not_found",
  );
});

// -------------------------------------------------------------- events not ours

Deno.test("an unhandled event type is acknowledged and ignored", async () => {
  const answer = await deliver(event("invoice.paid", { id: "in_test_1", object: "invoice" }));
  assertEquals(answer.status, 200);
  assertEquals([answer.body.received, answer.body.ignored], [true, true]);
});

Deno.test("events naming no organization, unpaid or subscription checkouts are ignored", async () => {
  await withPrices(async (prices) => {
    await withOrganization("starter", async (org) => {
      const before = await snapshot(org.organizationId);
      const cases: [object, string][] = [
        [subscriptionEvent("customer.subscription.created", null, prices.pro), "no_organization"],
        [checkoutEvent(null, { price_id: prices.pack }), "no_organization"],
        [
          subscriptionEvent(
            "customer.subscription.created",
            org.organizationId,
            prices.pro,
            "incomplete",
          ),
          "subscription_not_active",
        ],
        [
          checkoutEvent(org.organizationId, { price_id: prices.pack }, {
            payment_status: "unpaid",
          }),
          "payment_pending",
        ],
        [
          checkoutEvent(org.organizationId, { price_id: prices.pack }, { mode: "subscription" }),
          "not_a_token_pack",
        ],
      ];
      for (const [delivered, reason] of cases) {
        const answer = await deliver(delivered);
        assertEquals(
          [answer.status, answer.body.received, answer.body.ignored, answer.body.reason],
          [200, true, true, reason],
        );
      }
      assertEquals(await snapshot(org.organizationId), before);
    });
  });
});

Deno.test("a price with no mapping row is refused (422, so Stripe retries) and changes nothing", async () => {
  await withPrices(async (prices) => {
    await withOrganization("starter", async (org) => {
      const before = await snapshot(org.organizationId);
      assertError(
        await deliver(
          subscriptionEvent("customer.subscription.updated", org.organizationId, "price_unmapped"),
        ),
        422,
        "unknown_price",
      );
      assertError(
        await deliver(checkoutEvent(org.organizationId, { price_id: "price_unmapped" })),
        422,
        "unknown_price",
      );
      assertError(
        await deliver(checkoutEvent(org.organizationId, {})),
        422,
        "unknown_token_pack",
      );
      assertError(
        await deliver(
          subscriptionEvent("customer.subscription.created", "not-a-uuid", prices.pro),
        ),
        422,
        "invalid_organization",
      );
      assertEquals(await snapshot(org.organizationId), before);
    });
  });
});

// -------------------------------------------------------------- plan changes

Deno.test(
  "a signed subscription event delivered three times moves the plan once",
  async () => {
    await withPrices(async (prices) => {
      await withOrganization("starter", async (org) => {
        const created = subscriptionEvent(
          "customer.subscription.created",
          org.organizationId,
          prices.pro,
        );
        const first = await deliver(created);
        assertEquals([first.status, first.body.plan], [200, "pro"], JSON.stringify(first.body));
        assertEquals(await planOf(org.organizationId), "pro");
        assertEquals(await balanceOf(org.organizationId, "goal_generation"), 20);

        // Spend between deliveries: a redelivery that re-applied the plan would reset it.
        await withDb((sql) =>
          sql`select public.deduct_tokens('generate_goal', ${org.organizationId}::uuid, null)`
        );
        const after = await snapshot(org.organizationId);
        for (const answer of [await deliver(created), await deliver(created)]) {
          assertEquals(answer.status, 200, JSON.stringify(answer.body));
        }
        assertEquals(await snapshot(org.organizationId), after);
        assertEquals(await balanceOf(org.organizationId, "goal_generation"), 17);
      });
    });
  },
);

Deno.test(
  "subscription updated to another price changes the plan; deleted returns to starter",
  async () => {
    await withPrices(async (prices) => {
      await withOrganization("pro", async (org) => {
        const updated = await deliver(
          subscriptionEvent("customer.subscription.updated", org.organizationId, prices.enterprise),
        );
        assertEquals([updated.status, updated.body.plan], [200, "enterprise"]);
        assertEquals(await planOf(org.organizationId), "enterprise");

        const canceled = await deliver(
          subscriptionEvent(
            "customer.subscription.updated",
            org.organizationId,
            prices.enterprise,
            "unpaid",
          ),
        );
        assertEquals([canceled.status, canceled.body.plan], [200, "starter"]);
        assertEquals(await planOf(org.organizationId), "starter");

        await deliver(
          subscriptionEvent("customer.subscription.updated", org.organizationId, prices.pro),
        );
        assertEquals(await planOf(org.organizationId), "pro");
        const deleted = await deliver(
          subscriptionEvent("customer.subscription.deleted", org.organizationId, prices.pro),
        );
        assertEquals([deleted.status, deleted.body.plan], [200, "starter"]);
        assertEquals(await planOf(org.organizationId), "starter");
      });
    });
  },
);

// -------------------------------------------------------------- token packs

Deno.test(
  "a paid token-pack checkout delivered three times grants its tokens once",
  async () => {
    await withPrices(async (prices) => {
      await withOrganization("pro", async (org) => {
        const before = await balanceOf(org.organizationId, "forecast");
        const completed = checkoutEvent(org.organizationId, { price_id: prices.pack });
        const answers = [
          await deliver(completed),
          await deliver(completed),
          await deliver(completed),
        ];
        assertEquals(
          answers.map((a) => a.status),
          [200, 200, 200],
          JSON.stringify(answers[0].body),
        );
        assertEquals(
          [answers[0].body.tokenType, answers[0].body.amount],
          ["forecast", 40],
        );
        assertEquals(
          Date.parse(answers[0].body.expiresAt),
          (completed.created + 30 * 86400) * 1000,
          "expires 30 days after the event",
        );
        assertEquals(await balanceOf(org.organizationId, "forecast"), before! + 40);
      });
    });
  },
);

Deno.test(
  "a checkout naming token_type and amount in metadata grants that pack",
  async () => {
    await withOrganization("pro", async (org) => {
      const before = await balanceOf(org.organizationId, "general");
      const answer = await deliver(
        checkoutEvent(null, { token_type: "general", amount: "25" }, {
          client_reference_id: org.organizationId,
        }),
      );
      assertEquals(answer.status, 200, JSON.stringify(answer.body));
      assertEquals(await balanceOf(org.organizationId, "general"), before! + 25);
      assertEquals(await balanceOf(org.organizationId, "general"), before! + 25);
    });
  },
);

// -------------------------------------------------------------- ordering and retries

/** The same subscription, as Stripe sends it again later: its id, another event time. */
function sameSubscription(
  // deno-lint-ignore no-explicit-any
  first: any,
  type: string,
  organizationId: string,
  priceId: string,
  createdOffset: number,
) {
  const next = subscriptionEvent(type, organizationId, priceId);
  next.data.object.id = first.data.object.id;
  next.created = first.created + createdOffset;
  return next;
}

Deno.test("the newest event of a subscription wins; an older one is acknowledged and ignored", async () => {
  await withPrices(async (prices) => {
    await withOrganization("starter", async (org) => {
      const newer = subscriptionEvent(
        "customer.subscription.updated",
        org.organizationId,
        prices.enterprise,
      );
      const older = sameSubscription(
        newer,
        "customer.subscription.updated",
        org.organizationId,
        prices.pro,
        -60,
      );
      assertEquals((await deliver(newer)).status, 200);
      const late = await deliver(older);
      assertEquals([late.status, late.body.ignored, late.body.reason], [200, true, "stale_event"]);
      assertEquals(await planOf(org.organizationId), "enterprise");
    });
  });
});

Deno.test("a deleted subscription stays deleted: no later event brings its plan back", async () => {
  await withPrices(async (prices) => {
    await withOrganization("pro", async (org) => {
      const created = subscriptionEvent(
        "customer.subscription.created",
        org.organizationId,
        prices.pro,
      );
      assertEquals((await deliver(created)).status, 200);
      const deleted = sameSubscription(
        created,
        "customer.subscription.deleted",
        org.organizationId,
        prices.pro,
        60,
      );
      assertEquals([(await deliver(deleted)).body.plan], ["starter"]);
      for (const offset of [30, 120]) { // delivered late: created before or after the deletion
        const updated = sameSubscription(
          created,
          "customer.subscription.updated",
          org.organizationId,
          prices.enterprise,
          offset,
        );
        const answer = await deliver(updated);
        assertEquals(
          [answer.status, answer.body.ignored],
          [200, true],
          JSON.stringify(answer.body),
        );
      }
      assertEquals(await planOf(org.organizationId), "starter");
    });
  });
});

Deno.test("a cancelled subscription moves to ai_token_settings.cancelled_plan, not a hard-coded plan", async () => {
  await withPrices(async (prices) => {
    await withOrganization("enterprise", async (org) => {
      await withDb((sql) => sql`update public.ai_token_settings set cancelled_plan = 'pro'`);
      try {
        const deleted = subscriptionEvent(
          "customer.subscription.deleted",
          org.organizationId,
          prices.enterprise,
        );
        const answer = await deliver(deleted);
        assertEquals([answer.status, answer.body.plan], [200, "pro"], JSON.stringify(answer.body));
        assertEquals(await planOf(org.organizationId), "pro");
      } finally {
        await withDb((sql) => sql`update public.ai_token_settings set cancelled_plan = 'starter'`);
      }
    });
  });
});

Deno.test("a checkout session grants once when both completed and async_payment_succeeded arrive", async () => {
  await withPrices(async (prices) => {
    await withOrganization("pro", async (org) => {
      const before = await balanceOf(org.organizationId, "forecast");
      const completed = checkoutEvent(org.organizationId, { price_id: prices.pack });
      const succeeded = {
        ...completed,
        id: `evt_test_${unique()}`,
        type: "checkout.session.async_payment_succeeded",
        created: completed.created + 90,
      };
      for (const answer of [await deliver(completed), await deliver(succeeded)]) {
        assertEquals(answer.status, 200, JSON.stringify(answer.body));
      }
      assertEquals(await balanceOf(org.organizationId, "forecast"), before! + 40);
    });
  });
});

Deno.test("an event that can never succeed is answered 200 rejected and recorded, so Stripe stops retrying", async () => {
  await withOrganization("pro", async (org) => {
    const before = await balanceOf(org.organizationId, "general");
    for (const amount of ["-5", "5000000000"]) {
      const bad = checkoutEvent(org.organizationId, { token_type: "general", amount });
      const answer = await deliver(bad);
      assertEquals([answer.status, answer.body.rejected], [200, true], JSON.stringify(answer.body));
      const [row] = await withDb((sql) =>
        sql`select reason from public.stripe_rejected_events where event_id = ${bad.id}`
      );
      assertEquals(row?.reason, answer.body.reason);
    }
    assertEquals(await balanceOf(org.organizationId, "general"), before);
  });
});
