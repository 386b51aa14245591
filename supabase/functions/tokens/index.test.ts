// The tokens function end to end: gateway → function → PostgREST (caller's JWT) → RPCs.

import {
  assert,
  assertEquals,
  assertError,
  balanceOf,
  call,
  env,
  mintJwt,
  usageCount,
  withDb,
  withOrganization,
} from "../_shared/testing.ts";

const checkBalance = (token: string | null, body: string | object) =>
  call("/tokens/check-balance", { method: "POST", token, body });
const stats = (token: string | null, organizationId: string) =>
  call(`/tokens/stats?organizationId=${encodeURIComponent(organizationId)}`, { token });

const setBalance = (organizationId: string, tokenType: string, balance: number) =>
  withDb((sql) =>
    sql`update public.ai_tokens set balance = ${balance}
        where organization_id = ${organizationId} and token_type = ${tokenType}`
  );

// ------------------------------------------------------------------ the guide's shapes

Deno.test("check on a fresh pro organization answers exactly {hasTokens: true}", async () => {
  await withOrganization("pro", async (org) => {
    const answer = await checkBalance(org.token, {
      organizationId: org.organizationId,
      featureUsed: "generate_goal",
      action: "check",
    });
    assertEquals(answer.status, 200);
    assertEquals(answer.body, { hasTokens: true });
    assertEquals(
      await balanceOf(org.organizationId, "goal_generation"),
      20,
      "check spends nothing",
    );
  });
});

Deno.test("check answers {hasTokens: false} when the balance is below the cost", async () => {
  await withOrganization("pro", async (org) => {
    await setBalance(org.organizationId, "goal_generation", 2);
    const answer = await checkBalance(org.token, {
      organizationId: org.organizationId,
      featureUsed: "generate_goal",
      action: "check",
    });
    assertEquals([answer.status, answer.body], [200, { hasTokens: false }]);
  });
});

Deno.test("deduct on a fresh pro organization leaves 17 and says 'Used 3 tokens for generate_goal'", async () => {
  await withOrganization("pro", async (org) => {
    const answer = await checkBalance(org.token, {
      organizationId: org.organizationId,
      featureUsed: "generate_goal",
      action: "deduct",
    });
    assertEquals(answer.status, 200);
    assertEquals(
      {
        success: answer.body.success,
        remainingBalance: answer.body.remainingBalance,
        message: answer.body.message,
      },
      { success: true, remainingBalance: 17, message: "Used 3 tokens for generate_goal" },
    );
    assertEquals(Object.keys(answer.body).slice(0, 3), ["success", "remainingBalance", "message"]);
    assertEquals(answer.body.tokensDeducted, 3);
    assertEquals(answer.body.tokenType, "goal_generation");
    assertEquals(answer.body.replayed, false);
    assertEquals(await balanceOf(org.organizationId, "goal_generation"), 17);
    const [logged] = await withDb((sql) =>
      sql`select id, user_id, feature_used, tokens_deducted, balance_after
          from public.ai_token_usage_log where organization_id = ${org.organizationId}`
    );
    assertEquals(
      { ...logged },
      {
        id: answer.body.usageId,
        user_id: org.userId,
        feature_used: "generate_goal",
        tokens_deducted: 3,
        balance_after: 17,
      },
      "journaled once, as the caller",
    );
  });
});

Deno.test("deduct with a requestId delivered three times spends once and replays the result", async () => {
  await withOrganization("pro", async (org) => {
    const body = {
      organizationId: org.organizationId,
      featureUsed: "generate_goal",
      action: "deduct",
      requestId: "edge-retry-1",
    };
    const answers = [];
    for (let i = 0; i < 3; i++) answers.push(await checkBalance(org.token, body));
    assertEquals(answers.map((a) => a.status), [200, 200, 200]);
    assertEquals(answers.map((a) => a.body.remainingBalance), [17, 17, 17]);
    assertEquals(answers.map((a) => a.body.replayed), [false, true, true]);
    assertEquals(new Set(answers.map((a) => a.body.usageId)).size, 1);
    assertEquals(await balanceOf(org.organizationId, "goal_generation"), 17);
    assertEquals(await usageCount(org.organizationId), 1);
  });
});

Deno.test("stats gives the guide's totals and one row per token type", async () => {
  await withOrganization("pro", async (org) => {
    await checkBalance(org.token, {
      organizationId: org.organizationId,
      featureUsed: "generate_goal",
      action: "deduct",
    });
    const answer = await stats(org.token, org.organizationId);
    assertEquals(answer.status, 200);
    const { totalBalance, totalAllocated, totalUsed, byType, plan, organizationId } = answer.body;
    assertEquals(
      { totalBalance, totalAllocated, totalUsed, plan, organizationId },
      {
        totalBalance: 247,
        totalAllocated: 250,
        totalUsed: 3,
        plan: "pro",
        organizationId: org.organizationId,
      },
    );
    assertEquals(
      byType.map((row: { tokenType: string }) => row.tokenType),
      ["forecast", "general", "goal_generation", "lead_generation", "strategy_analysis"],
    );
    const goals = byType.find((row: { tokenType: string }) => row.tokenType === "goal_generation");
    assertEquals(Object.keys(goals).slice(0, 7), [
      "tokenType",
      "balance",
      "allocated",
      "used",
      "percentRemaining",
      "low",
      "refreshDate",
    ]);
    const { tokenType, balance, allocated, used, percentRemaining, low } = goals;
    assertEquals(
      { tokenType, balance, allocated, used, percentRemaining, low },
      {
        tokenType: "goal_generation",
        balance: 17,
        allocated: 20,
        used: 3,
        percentRemaining: 85,
        low: false,
      },
    );
    assert(!Number.isNaN(Date.parse(goals.refreshDate)), "refreshDate is a timestamp");
  });
});

// ------------------------------------------------------------------------------ 401

Deno.test("401: no Authorization, the anon key, a malformed, expired or forged JWT", async () => {
  await withOrganization("pro", async (org) => {
    const body = {
      organizationId: org.organizationId,
      featureUsed: "generate_goal",
      action: "deduct",
    };
    const now = Math.floor(Date.now() / 1000);
    const cases: [string, Record<string, string>, string][] = [
      ["no header at all", {}, "unauthenticated"],
      ["the anon key as apikey only", { apikey: env.anonKey }, "unauthenticated"],
      ["the anon key as bearer", { Authorization: `Bearer ${env.anonKey}` }, "unauthenticated"],
      ["an anon-role JWT", {
        Authorization: `Bearer ${await mintJwt(org.userId, { role: "anon" })}`,
      }, "unauthenticated"],
      ["not a bearer token", { Authorization: `Basic ${btoa("a:b")}` }, "unauthenticated"],
      ["not a JWT", { Authorization: "Bearer not-a-jwt" }, "invalid_jwt"],
      ["an expired JWT", {
        Authorization: `Bearer ${await mintJwt(org.userId, { expiresAt: now - 3600 })}`,
      }, "jwt_expired"],
      ["a JWT signed with another secret", {
        Authorization: `Bearer ${await mintJwt(org.userId, {
          secret: "not-the-secret-not-the-secret-not-the-secret",
        })}`,
      }, "invalid_jwt"],
    ];
    for (const [what, headers, reason] of cases) {
      const answer = await call("/tokens/check-balance", { method: "POST", headers, body });
      assertError(answer, 401, reason);
      const statsAnswer = await call(`/tokens/stats?organizationId=${org.organizationId}`, {
        headers,
      });
      assertEquals(statsAnswer.status, 401, `stats with ${what}`);
    }
    assertEquals(await balanceOf(org.organizationId, "goal_generation"), 20, "nothing spent");
    assertEquals(await usageCount(org.organizationId), 0);
  });
});

// ------------------------------------------------------------------------- 402, 403, 404

Deno.test("403: a member of another organization can neither check, spend nor read stats", async () => {
  await withOrganization("pro", async (mine) => {
    await withOrganization("pro", async (theirs) => {
      for (const action of ["check", "deduct"]) {
        const answer = await checkBalance(mine.token, {
          organizationId: theirs.organizationId,
          featureUsed: "generate_goal",
          action,
        });
        assertError(answer, 403, "not_a_member");
      }
      assertError(await stats(mine.token, theirs.organizationId), 403, "not_a_member");
      assertEquals(await balanceOf(theirs.organizationId, "goal_generation"), 20);
      assertEquals(await usageCount(theirs.organizationId), 0);
    });
  });
});

Deno.test("402: out of tokens refuses the deduction and changes nothing", async () => {
  await withOrganization("pro", async (org) => {
    await setBalance(org.organizationId, "goal_generation", 2);
    const answer = await checkBalance(org.token, {
      organizationId: org.organizationId,
      featureUsed: "generate_goal",
      action: "deduct",
    });
    assertError(answer, 402, "insufficient_tokens");
    assertEquals(answer.body.error, "You're out of AI tokens");
    assertEquals(answer.body.details.required, 3);
    assertEquals(answer.body.details.balance, 2);
    assertEquals(await balanceOf(org.organizationId, "goal_generation"), 2);
    assertEquals(await usageCount(org.organizationId), 0);
  });
});

Deno.test("403: a feature outside the plan (starter) is refused for check and deduct", async () => {
  await withOrganization("starter", async (org) => {
    for (const action of ["check", "deduct"]) {
      const answer = await checkBalance(org.token, {
        organizationId: org.organizationId,
        featureUsed: "generate_goal",
        action,
      });
      assertError(answer, 403, "feature_not_in_plan");
      assertEquals(answer.body.error, "Not available on Starter plan");
    }
    assertEquals(await usageCount(org.organizationId), 0);
  });
});

Deno.test("404: an unknown feature", async () => {
  await withOrganization("pro", async (org) => {
    for (const action of ["check", "deduct"]) {
      const answer = await checkBalance(org.token, {
        organizationId: org.organizationId,
        featureUsed: "no_such_feature",
        action,
      });
      assertError(answer, 404, "unknown_feature");
    }
  });
});

// ------------------------------------------------------------------------------ 429

Deno.test("429: past the per-user rate limit, deduct answers Retry-After and spends nothing", async () => {
  // The limit is data (ai_rate_limits, default 5 spends a minute per user): spend until
  // refused rather than assume the number.
  await withOrganization("pro", async (org) => {
    const body = {
      organizationId: org.organizationId,
      featureUsed: "ask_assistant",
      action: "deduct",
    };
    const before = await balanceOf(org.organizationId, "general");
    let spent = 0;
    let answer = await checkBalance(org.token, body);
    while (answer.status === 200 && spent < 50) {
      spent++;
      answer = await checkBalance(org.token, body);
    }
    assert(spent > 0 && spent < 50, `spent ${spent} times before a refusal`);
    assertError(answer, 429, "rate_limited");
    const retryAfter = Number(answer.headers.get("Retry-After"));
    assert(
      Number.isInteger(retryAfter) && retryAfter >= 1 &&
        retryAfter <= answer.body.details.windowSeconds,
      `Retry-After ${answer.headers.get("Retry-After")}`,
    );
    assertEquals(answer.body.details.limit, spent);
    assertEquals(answer.body.details.retryAfterSeconds, retryAfter);
    assertEquals(await balanceOf(org.organizationId, "general"), before! - spent);
    assertEquals(await usageCount(org.organizationId), spent, "the refused spend left no usage");
  });
});

// ------------------------------------------------------------------------------ 400

Deno.test("400: malformed JSON, missing or invalid fields, unknown action", async () => {
  await withOrganization("pro", async (org) => {
    const valid = {
      organizationId: org.organizationId,
      featureUsed: "generate_goal",
      action: "deduct",
    };
    const cases: [string | object, string, string | undefined][] = [
      ["{not json", "invalid_json", undefined],
      ["", "invalid_json", undefined],
      ["[1, 2]", "invalid_json", undefined],
      ['"a string"', "invalid_json", undefined],
      [{ ...valid, organizationId: undefined }, "invalid_request", "organizationId"],
      [{ ...valid, organizationId: "not-a-uuid" }, "invalid_request", "organizationId"],
      [{ ...valid, organizationId: 42 }, "invalid_request", "organizationId"],
      [{ ...valid, featureUsed: undefined }, "invalid_request", "featureUsed"],
      [{ ...valid, featureUsed: "  " }, "invalid_request", "featureUsed"],
      [{ ...valid, featureUsed: ["generate_goal"] }, "invalid_request", "featureUsed"],
      [{ ...valid, requestId: "" }, "invalid_request", "requestId"],
      [{ ...valid, requestId: "x".repeat(201) }, "invalid_request", "requestId"],
      [{ ...valid, requestId: 7 }, "invalid_request", "requestId"],
      [{ ...valid, action: "refund" }, "invalid_action", "action"],
      [{ ...valid, action: undefined }, "invalid_action", "action"],
    ];
    for (const [body, reason, field] of cases) {
      const answer = await checkBalance(org.token, body);
      assertError(answer, 400, reason);
      assertEquals(answer.body.details?.field, field, JSON.stringify(body));
    }
    assertError(await call("/tokens/stats", { token: org.token }), 400, "invalid_request");
    assertError(await stats(org.token, "nope"), 400, "invalid_request");
    assertEquals(await usageCount(org.organizationId), 0, "no bad request spent anything");
  });
});

// ------------------------------------------------------------------------- 404, 405

Deno.test("404 for an unknown route, 405 with Allow for a wrong method", async () => {
  await withOrganization("pro", async (org) => {
    assertError(await call("/tokens/nope", { token: org.token }), 404, "not_found");
    assertError(await call("/tokens", { token: org.token }), 404, "not_found");
    const getCheck = await call("/tokens/check-balance", { token: org.token });
    assertError(getCheck, 405, "method_not_allowed");
    assertEquals(getCheck.headers.get("Allow"), "POST, OPTIONS");
    const postStats = await call(`/tokens/stats?organizationId=${org.organizationId}`, {
      method: "POST",
      token: org.token,
      body: {},
    });
    assertError(postStats, 405, "method_not_allowed");
    assertEquals(postStats.headers.get("Allow"), "GET, OPTIONS");
  });
});

// ----------------------------------------------------------------------------- CORS

Deno.test("CORS: the preflight is answered without credentials, with the allowed headers", async () => {
  for (const path of ["/tokens/check-balance", "/tokens/stats"]) {
    const answer = await call(path, {
      method: "OPTIONS",
      headers: {
        Origin: "https://app.example.test",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
      },
    });
    assert(answer.status === 200 || answer.status === 204, `preflight status ${answer.status}`);
    assertEquals(answer.headers.get("Access-Control-Allow-Origin"), "*");
    assertEquals(
      answer.headers.get("Access-Control-Allow-Headers"),
      "authorization, x-client-info, apikey, content-type",
    );
    assertEquals(answer.headers.get("Access-Control-Allow-Methods"), "GET, POST, OPTIONS");
  }
  await withOrganization("pro", async (org) => {
    const ok = await stats(org.token, org.organizationId);
    assertEquals(ok.status, 200);
    assertEquals(ok.headers.get("Access-Control-Allow-Origin"), "*", "CORS on success too");
  });
});
