// The webhook-deliver function end to end: an alert in the database, the function
// called through the gateway with the service role key, a real receiver on localhost
// that verifies every request with the standardwebhooks package.

import { Webhook } from "../_shared/deps.ts";
import {
  assert,
  assertEquals,
  assertError,
  call,
  env,
  withDb,
  withOrganization,
} from "../_shared/testing.ts";

interface Received {
  headers: Headers;
  body: string;
}

/**
 * A receiver answering `status`, recording each request, closed after `fn`; the
 * endpoints made for it are removed with their deliveries.
 */
async function withReceiver(
  status: number,
  fn: (url: string, received: Received[]) => Promise<void>,
): Promise<void> {
  const received: Received[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (r) => {
    received.push({ headers: r.headers, body: await r.text() });
    return new Response(null, { status });
  });
  try {
    await fn(`http://127.0.0.1:${server.addr.port}/hooks`, received);
  } finally {
    await server.shutdown();
    await withDb((sql) =>
      sql`delete from public.ai_webhook_endpoints
          where url = ${`http://127.0.0.1:${server.addr.port}/hooks`}`
    );
  }
}

const secret = () => {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return `whsec_${btoa(String.fromCharCode(...bytes))}`;
};

const deliverNow = () =>
  call("/webhook-deliver", { method: "POST", token: env.serviceRoleKey, body: {} });

Deno.test("an alert is delivered signed, with the delivery's id as webhook-id", async () => {
  await withOrganization("pro", async (org) => {
    await withReceiver(204, async (url, received) => {
      const key = secret();
      const deliveryId = await withDb(async (sql) => {
        await sql`select public.set_webhook_endpoint(${org.organizationId}::uuid, ${url}, ${key})`;
        const [alert] = await sql`insert into public.ai_token_alerts
                                    (organization_id, token_type, kind, reason, period)
                                  values (${org.organizationId}, 'general', 'refused',
                                          'insufficient_tokens', now())
                                  returning id`;
        const [row] = await sql`select id::text from public.ai_webhook_deliveries
                                where alert_id = ${alert.id}`;
        return row.id as string;
      });
      const answer = await deliverNow();
      assertEquals(answer.status, 200, JSON.stringify(answer.body));
      const mine = answer.body.results.filter((r: { deliveryId: string }) =>
        r.deliveryId === deliveryId
      );
      assertEquals(mine.map((r: { status: string; attempt: number }) => [r.status, r.attempt]), [
        ["delivered", 1],
      ]);
      assertEquals(received.length, 1);
      assertEquals(received[0].headers.get("webhook-id"), deliveryId);
      const payload = new Webhook(key).verify(
        received[0].body,
        Object.fromEntries(received[0].headers),
      ) as { type: string; data: { organization_id: string; kind: string } };
      assertEquals(
        [payload.type, payload.data.organization_id, payload.data.kind],
        ["ai_token_alert.refused", org.organizationId, "refused"],
      );
      const [row] = await withDb((sql) =>
        sql`select status, attempts from public.ai_webhook_deliveries where id = ${deliveryId}`
      );
      assertEquals([row.status, row.attempts], ["delivered", 1]);
      // Delivered once: calling again sends nothing more to this receiver.
      assertEquals((await deliverNow()).status, 200);
      assertEquals(received.length, 1);
    });
  });
});

Deno.test("a receiver answering 500 gets a retry scheduled, not a second send now", async () => {
  await withOrganization("pro", async (org) => {
    await withReceiver(500, async (url, received) => {
      const deliveryId = await withDb(async (sql) => {
        await sql`select public.set_webhook_endpoint(${org.organizationId}::uuid, ${url},
                    ${secret()}, retry_base_seconds => 3600, retry_cap_seconds => 3600)`;
        const [alert] = await sql`insert into public.ai_token_alerts
                                    (organization_id, token_type, kind, period)
                                  values (${org.organizationId}, 'general', 'usage_80_percent', now())
                                  returning id`;
        const [row] = await sql`select id::text from public.ai_webhook_deliveries
                                where alert_id = ${alert.id}`;
        return row.id as string;
      });
      assertEquals((await deliverNow()).status, 200);
      assertEquals((await deliverNow()).status, 200);
      assertEquals(received.length, 1);
      const [row] = await withDb((sql) =>
        sql`select status, attempts, last_http_status,
                   next_attempt_at - now() > interval '50 minutes' as later
            from public.ai_webhook_deliveries where id = ${deliveryId}`
      );
      assertEquals([row.status, row.attempts, row.last_http_status, row.later], [
        "pending",
        1,
        500,
        true,
      ]);
    });
  });
});

Deno.test("only the service role may call it; only POST is served", async () => {
  assertError(
    await call("/webhook-deliver", { method: "POST", body: {} }),
    401,
    "service_role_required",
  );
  assertError(
    await call("/webhook-deliver", { method: "POST", token: env.anonKey, body: {} }),
    401,
    "service_role_required",
  );
  const get = await call("/webhook-deliver", { token: env.serviceRoleKey });
  assertError(get, 405, "method_not_allowed");
  const bad = await call("/webhook-deliver", {
    method: "POST",
    token: env.serviceRoleKey,
    body: { batch: 0 },
  });
  assertError(bad, 400, "invalid_request");
  assert(bad.body.details.field === "batch");
});
