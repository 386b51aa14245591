// HTTP helpers shared by the functions: CORS, JSON responses, and the one error shape
// every function answers with: {"error": <human message>, "reason": <machine reason>}.

export const corsHeaders: Record<string, string> = {
  "Access-Control-Allow-Origin": "*",
  "Access-Control-Allow-Headers": "authorization, x-client-info, apikey, content-type",
  "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
};

/** The answer to a browser's CORS preflight (`OPTIONS`). */
export function preflight(): Response {
  return new Response(null, {
    status: 204,
    headers: { ...corsHeaders, "Access-Control-Max-Age": "86400" },
  });
}

/** A JSON response with the CORS headers. */
export function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { ...corsHeaders, ...headers, "Content-Type": "application/json; charset=utf-8" },
  });
}

/**
 * A refusal with an HTTP status, a stable machine-readable `reason` and a message for
 * people. `details` carries the ids and numbers involved (camelCase), `headers` extra
 * response headers such as `Retry-After` or `Allow`.
 */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
    readonly details: Record<string, unknown> = {},
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = "HttpError";
  }

  toResponse(): Response {
    const body: Record<string, unknown> = { error: this.message, reason: this.reason };
    if (Object.keys(this.details).length > 0) body.details = this.details;
    return json(body, this.status, this.headers);
  }
}

/** Turn anything thrown by a handler into the JSON error response (500 when unexpected). */
export function errorResponse(error: unknown): Response {
  if (error instanceof HttpError) {
    if (error.status >= 500) console.error(`${error.status} ${error.reason}: ${error.message}`);
    return error.toResponse();
  }
  console.error("unexpected error:", error);
  return new HttpError(500, "internal_error", "Something went wrong; try again later")
    .toResponse();
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Is `value` a uuid in its canonical text form? */
export function isUuid(value: unknown): value is string {
  return typeof value === "string" && UUID.test(value);
}

/** The first path segment after the function's name (`/tokens/stats` → `stats`). */
export function routeOf(request: Request, functionName: string): string | null {
  // Deployed and behind the local gateway a function sees `/<name>/...`; tolerate the
  // full `/functions/v1/<name>/...` too, so a direct call behaves the same.
  const path = new URL(request.url).pathname.replace(/^\/functions\/v1(?=\/)/, "");
  const match = new RegExp(`^/${functionName}(?:/(.*?))?/*$`).exec(path);
  return match ? (match[1] ?? "") : null;
}

/** 405 naming the methods a route accepts. */
export function methodNotAllowed(method: string, allowed: string[]): HttpError {
  return new HttpError(405, "method_not_allowed", `Method ${method} is not allowed here`, {
    allowed,
  }, { Allow: allowed.join(", ") });
}
