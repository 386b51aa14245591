// The PostgREST error → HTTP mapping, without a stack.

import { camelize, httpErrorFromPostgrest, ordered } from "./postgrest.ts";
import { assertEquals } from "./testing.ts";

const refusal = (code: string, message: string, details: string | null) => ({
  code,
  message,
  details,
});

Deno.test("a PTxyz refusal keeps its status, reason, message and camelCased numbers", () => {
  const error = httpErrorFromPostgrest(
    refusal(
      "PT402",
      "You're out of AI tokens",
      '{"reason": "insufficient_tokens", "token_type": "forecast", "required": 5}',
    ),
    402,
  );
  assertEquals(
    [error.status, error.reason, error.message, error.details],
    [402, "insufficient_tokens", "You're out of AI tokens", { tokenType: "forecast", required: 5 }],
  );
});

Deno.test("PT429 sets Retry-After to the whole seconds to wait, at least 1", () => {
  const wait = (details: string) =>
    httpErrorFromPostgrest(refusal("PT429", "slow down", details), 429).headers["Retry-After"];
  assertEquals(wait('{"reason": "rate_limited", "retry_after_seconds": 12.1}'), "13");
  assertEquals(wait('{"reason": "rate_limited", "retry_after_seconds": 0}'), "1");
  assertEquals(wait('{"reason": "rate_limited"}'), "1");
});

Deno.test("PostgREST's own errors map by status and hide their internals", () => {
  const jwt = httpErrorFromPostgrest(
    refusal("PGRST301", "JWSError JWSInvalidSignature", null),
    401,
  );
  assertEquals([jwt.status, jwt.reason], [401, "invalid_jwt"]);
  const grant = httpErrorFromPostgrest(
    refusal("42501", "permission denied for function x", null),
    403,
  );
  assertEquals([grant.status, grant.reason, grant.message], [
    403,
    "permission_denied",
    "You may not do this",
  ]);
  const fault = httpErrorFromPostgrest(refusal("XX000", "internal detail", null), 500);
  assertEquals([fault.status, fault.reason, fault.message.includes("internal")], [
    502,
    "upstream_error",
    false,
  ]);
  const missing = httpErrorFromPostgrest(
    refusal("PGRST202", "Could not find the function public.x in the schema cache", null),
    404,
  );
  assertEquals([missing.status, missing.reason], [502, "upstream_error"]);
  const down = httpErrorFromPostgrest(refusal("", "fetch failed", null), 0);
  assertEquals([down.status, down.reason], [502, "upstream_unavailable"]);
});

Deno.test("details that are not a JSON object are ignored", () => {
  const error = httpErrorFromPostgrest(refusal("PT404", "gone", "not json"), 404);
  assertEquals([error.reason, error.details], ["not_found", {}]);
});

Deno.test("camelize turns keys deeply, leaving values alone", () => {
  assertEquals(
    camelize({ total_balance: 1, by_type: [{ token_type: "a_b", percent_remaining: 5 }], x: null }),
    { totalBalance: 1, byType: [{ tokenType: "a_b", percentRemaining: 5 }], x: null },
  );
});

Deno.test("ordered puts the contract's keys first and keeps every other field", () => {
  const shaped = ordered({ extra: 1, message: "m", success: true }, [
    "success",
    "message",
    "absent",
  ]);
  assertEquals(Object.entries(shaped), [
    ["success", true],
    ["message", "m"],
    ["absent", undefined],
    ["extra", 1],
  ]);
});
