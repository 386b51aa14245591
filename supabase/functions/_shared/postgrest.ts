// The PostgREST error → HTTP mapping, and the camelCase shaping of RPC results.
//
// The SQL API refuses with `raise ... using errcode = 'PTxyz'`, which PostgREST answers
// with HTTP xyz; `details` is JSON text holding a stable "reason" plus the ids and
// numbers involved. Everything else PostgREST reports (a bad JWT, a missing grant, a
// database fault) is mapped by the HTTP status PostgREST chose.

import { HttpError } from "./http.ts";

/** Reasons for statuses PostgREST sets itself, when the database gave none. */
const REASON_BY_STATUS: Record<number, [reason: string, message: string]> = {
  400: ["invalid_request", "The request was not valid"],
  401: ["invalid_jwt", "Your session is not valid; sign in again"],
  403: ["permission_denied", "You may not do this"],
  404: ["not_found", "Not found"],
  409: ["conflict", "The request conflicts with the current state"],
  429: ["rate_limited", "Too many requests; wait before trying again"],
};

function parseDetails(details: unknown): Record<string, unknown> {
  if (typeof details !== "string" || !details.startsWith("{")) return {};
  try {
    const parsed = JSON.parse(details);
    return parsed && typeof parsed === "object" && !Array.isArray(parsed) ? parsed : {};
  } catch {
    return {};
  }
}

/** What supabase-js reports for a failed call (`details` is null at run time when absent). */
export interface PostgrestFailure {
  code?: string | null;
  message: string;
  details?: string | null;
}

/**
 * The HttpError for a failed supabase-js call: `error` as supabase-js returns it and
 * `status` the HTTP status of PostgREST's answer (0 when it could not be reached).
 */
export function httpErrorFromPostgrest(
  error: PostgrestFailure,
  status: number,
): HttpError {
  const custom = /^PT(\d{3})$/.exec(error.code ?? "");
  // PGRST2xx: the schema cache lacks a function or table this code calls. That is a
  // deployment fault (a migration not applied), not the caller's: report it as one.
  const missing = /^PGRST2\d\d$/.test(error.code ?? "");
  const httpStatus = custom ? Number(custom[1]) : missing ? 502 : status;
  const facts = parseDetails(error.details);
  const { reason, ...numbers } = facts;

  if (custom || (httpStatus >= 400 && httpStatus < 500)) {
    const [defaultReason, defaultMessage] = REASON_BY_STATUS[httpStatus] ??
      ["request_refused", "The request was refused"];
    const headers: Record<string, string> = {};
    if (httpStatus === 429) {
      const seconds = Number(numbers.retry_after_seconds);
      headers["Retry-After"] = String(
        Number.isFinite(seconds) ? Math.max(1, Math.ceil(seconds)) : 1,
      );
    }
    return new HttpError(
      httpStatus,
      typeof reason === "string" ? reason : defaultReason,
      // Our own refusals (PTxyz) carry a message meant for people; PostgREST's own
      // (a JWS error, "permission denied for function ...") are replaced by a plain one.
      custom && error.message ? error.message : defaultMessage,
      camelize(numbers) as Record<string, unknown>,
      headers,
    );
  }
  // Database faults stay in the log; the caller learns only that the upstream failed.
  console.error(`PostgREST ${status} ${error.code ?? ""}: ${error.message}`);
  if (status === 0) {
    return new HttpError(502, "upstream_unavailable", "The database API could not be reached");
  }
  return new HttpError(502, "upstream_error", "The database API failed; try again later");
}

const snakeToCamel = (key: string): string =>
  key.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

/** A deep copy of `value` with every object key turned from snake_case to camelCase. */
export function camelize(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(camelize);
  if (value && typeof value === "object") {
    return Object.fromEntries(
      Object.entries(value as Record<string, unknown>).map((
        [k, v],
      ) => [snakeToCamel(k), camelize(v)]),
    );
  }
  return value;
}

/**
 * `record` with the `first` keys leading, in that order (a documented contract such as
 * the guide's JSON shape), followed by whatever else the SQL API returned.
 */
export function ordered(record: Record<string, unknown>, first: string[]): Record<string, unknown> {
  return { ...Object.fromEntries(first.map((key) => [key, record[key]])), ...record };
}
