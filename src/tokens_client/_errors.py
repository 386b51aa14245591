"""Errors raised by tokens-client, mapped in one place from PostgREST's answers.

The SQL functions refuse with ``errcode = 'PTxyz'`` (PostgREST answers HTTP xyz) and a
``detail`` holding JSON with a stable ``reason``; :func:`error_from_api` turns that into
one of these classes and chains the original error. Nobody matches message text.

    TokensError
    ├── ConfigurationError        500: wrong kind of key for this client, missing settings
    ├── ServiceUnavailable        network failure, gateway or database down (5xx), or
    │                             PostgREST's code-less 400 when Postgres died mid-request
    ├── Unauthenticated           401: missing, expired, forged or garbage JWT; an API key
    │                             given as the user's token; anon caller
    ├── PermissionDenied          403: the caller's role may not do this
    │   ├── NotAMember            403 not_a_member: another organization's id
    │   └── FeatureNotInPlan      403 feature_not_in_plan: e.g. any AI feature on starter;
    │                             also plan_not_configured (the plan is no row of ai_plans)
    ├── NotFound                  404
    │   ├── UnknownFeature        404 unknown_feature
    │   └── OrganizationNotFound  404 organization_not_found
    ├── InvalidRequest            400: bad or missing arguments, wrong types, bad amounts
    ├── InsufficientTokens        402 insufficient_tokens (required, balance, token_type)
    ├── Conflict                  409
    │   ├── IdempotencyConflict   409 idempotency_conflict: request_id reused elsewhere
    │   ├── ReservationNotActive  409 reservation_not_active: hold already settled/expired
    │   ├── AlreadyRefunded       409 already_refunded
    │   └── BalanceCeiling        409 balance_ceiling: a refund would pass max_balance
    └── RateLimited               429 rate_limited (retry_after seconds)
        └── RefundLimitReached    429 refund_limit_reached: an admin's refunds this period

PermissionDenied also carries not_reservation_holder, admin_required and
service_role_required; NotFound reservation_not_found, usage_not_found and
unknown_token_type; InvalidRequest invalid_amount, invalid_plan, invalid_mode and
actual_not_set (``spend()`` ended with neither ``hold.actual`` nor ``hold.release()``).

Messages of Unauthenticated are fit for an end user ("Sign in to use AI features");
PostgREST's own text (``JWSError …``) stays in the chained ``__cause__``.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any

import httpx
from postgrest.exceptions import APIError


class TokensError(Exception):
    """Base class of every tokens-client error.

    ``reason`` is the machine-readable reason (``"insufficient_tokens"``…), ``status``
    the HTTP status, ``facts`` the numbers and ids the database reported, ``code`` the
    PostgREST/PostgreSQL error code.
    """

    default_reason = "error"
    default_status = 500

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        status: int | None = None,
        code: str | None = None,
        facts: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.status = status or self.default_status
        self.code = code
        self.facts: dict[str, Any] = dict(facts or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, reason={self.reason!r})"


class ConfigurationError(TokensError):
    """The client was built with the wrong kind of key or without required settings."""

    default_reason = "configuration_error"
    default_status = 500


class ServiceUnavailable(TokensError):
    """The API could not be reached or failed (network error, 5xx)."""

    default_reason = "service_unavailable"
    default_status = 503


class Unauthenticated(TokensError):
    """No valid user session: missing, expired or forged JWT, or an anonymous caller."""

    default_reason = "unauthenticated"
    default_status = 401


class PermissionDenied(TokensError):
    """The caller is authenticated but may not do this."""

    default_reason = "permission_denied"
    default_status = 403


class NotAMember(PermissionDenied):
    """The organization named is not the caller's."""

    default_reason = "not_a_member"


class FeatureNotInPlan(PermissionDenied):
    """The organization's plan does not offer this feature ("Not available on Starter plan")."""

    default_reason = "feature_not_in_plan"

    @property
    def plan(self) -> str | None:
        value = self.facts.get("plan")
        return str(value) if value is not None else None


class NotFound(TokensError):
    """Something named does not exist."""

    default_reason = "not_found"
    default_status = 404


class UnknownFeature(NotFound):
    """The feature is not in the catalog."""

    default_reason = "unknown_feature"


class OrganizationNotFound(NotFound):
    """The organization does not exist."""

    default_reason = "organization_not_found"


class InvalidRequest(TokensError):
    """Bad input: missing or malformed arguments, wrong types, out-of-range amounts."""

    default_reason = "invalid_request"
    default_status = 400


class InsufficientTokens(TokensError):
    """The organization's balance is below the feature's cost ("You're out of AI tokens")."""

    default_reason = "insufficient_tokens"
    default_status = 402

    @property
    def required(self) -> int:
        return int(self.facts.get("required", 0))

    @property
    def balance(self) -> int:
        return int(self.facts.get("balance", 0))

    @property
    def token_type(self) -> str | None:
        value = self.facts.get("token_type")
        return str(value) if value is not None else None


class Conflict(TokensError):
    """The request conflicts with the current state."""

    default_reason = "conflict"
    default_status = 409


class IdempotencyConflict(Conflict):
    """The request_id was already used for a different feature."""

    default_reason = "idempotency_conflict"


class ReservationNotActive(Conflict):
    """The hold was already committed, released or has expired."""

    default_reason = "reservation_not_active"

    @property
    def reservation_status(self) -> str | None:
        value = self.facts.get("status")
        return str(value) if value is not None else None


class AlreadyRefunded(Conflict):
    """The usage entry was refunded before."""

    default_reason = "already_refunded"


class BalanceCeiling(Conflict):
    """A refund would take the balance past the most a row may hold (``max_balance``)."""

    default_reason = "balance_ceiling"

    @property
    def max_balance(self) -> int | None:
        value = self.facts.get("max_balance")
        return int(value) if value is not None else None


class RateLimited(TokensError):
    """Too many deductions in the window; retry after ``retry_after`` seconds."""

    default_reason = "rate_limited"
    default_status = 429

    @property
    def retry_after(self) -> int:
        return int(self.facts.get("retry_after_seconds", self.facts.get("retry_after", 1)))


class RefundLimitReached(RateLimited):
    """Owners and admins used the period's refunds for this token type (``limit``); the
    service role may still refund, and the count starts again at ``refresh_date``."""

    default_reason = "refund_limit_reached"

    @property
    def limit(self) -> int | None:
        value = self.facts.get("limit")
        return int(value) if value is not None else None

    @property
    def refresh_date(self) -> datetime | None:
        value = self.facts.get("refresh_date")
        return datetime.fromisoformat(str(value)) if value else None

    @property
    def retry_after(self) -> int:
        """Seconds until the next period, when refunds are counted again."""
        when = self.refresh_date
        if when is None:
            return 1
        return max(1, math.ceil((when - datetime.now(timezone.utc)).total_seconds()))


SIGN_IN_MESSAGE = "Sign in to use AI features"
SESSION_MESSAGE = "Your session is invalid or has expired: sign in again"

_BY_REASON: dict[str, type[TokensError]] = {
    cls.default_reason: cls
    for cls in (
        Unauthenticated,
        NotAMember,
        FeatureNotInPlan,
        UnknownFeature,
        OrganizationNotFound,
        InsufficientTokens,
        IdempotencyConflict,
        ReservationNotActive,
        AlreadyRefunded,
        BalanceCeiling,
        RateLimited,
        RefundLimitReached,
    )
}
# The host's plan is not a row of ai_plans: for the caller, the feature is not in their plan.
_BY_REASON["plan_not_configured"] = FeatureNotInPlan
_BY_STATUS: dict[int, type[TokensError]] = {
    400: InvalidRequest,
    401: Unauthenticated,
    402: InsufficientTokens,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    429: RateLimited,
}
# PostgREST / PostgreSQL codes that are not our PTxyz refusals.
_BY_CODE: dict[str, tuple[type[TokensError], str]] = {
    "PGRST300": (Unauthenticated, "invalid_jwt"),  # no JWT secret: treat as unauthenticated
    "PGRST301": (Unauthenticated, "invalid_jwt"),  # JWT invalid, expired, forged, garbage
    "PGRST302": (Unauthenticated, "unauthenticated"),  # anonymous access disabled
    "PGRST303": (Unauthenticated, "invalid_jwt"),  # JWT claims validation failed
    "PGRST202": (InvalidRequest, "invalid_arguments"),  # no function with these arguments
    "PGRST203": (InvalidRequest, "invalid_arguments"),  # ambiguous overload
    "PGRST100": (InvalidRequest, "invalid_request"),  # malformed query
    "PGRST102": (InvalidRequest, "invalid_request"),  # malformed body
    "22P02": (InvalidRequest, "invalid_arguments"),  # invalid text representation (uuid…)
    "22P05": (InvalidRequest, "invalid_arguments"),  # untranslatable character (\u0000)
    "22003": (InvalidRequest, "invalid_amount"),  # numeric value out of range
    "22023": (InvalidRequest, "invalid_arguments"),
    "22007": (InvalidRequest, "invalid_arguments"),  # invalid datetime format
    "22008": (InvalidRequest, "invalid_arguments"),
    "23514": (InvalidRequest, "invalid_request"),  # check constraint
    "23502": (InvalidRequest, "invalid_request"),  # not null
}


def _parse_facts(details: Any) -> dict[str, Any]:
    if isinstance(details, dict):
        return dict(details)
    if isinstance(details, str) and details.startswith("{"):
        try:
            parsed = json.loads(details)
        except ValueError:
            return {}
        if isinstance(parsed, dict):
            return parsed
    return {}


def error_from_api(error: APIError, *, anonymous: bool = False) -> TokensError:
    """Map a PostgREST error to a :class:`TokensError` (the one place that does)."""
    code = error.code or ""
    message = error.message or "request failed"
    facts = _parse_facts(error.details)
    reason = facts.pop("reason", None)

    if code.startswith("PT") and code[2:].isdigit():
        status = int(code[2:])
        cls = _BY_REASON.get(str(reason)) or _BY_STATUS.get(status)
        if cls is None:
            cls = ServiceUnavailable if status >= 500 else TokensError
        return cls(message, reason=reason, status=status, code=code, facts=facts)
    if code in _BY_CODE:
        cls, code_reason = _BY_CODE[code]
        if cls is Unauthenticated:
            message = SESSION_MESSAGE
        return cls(message, reason=code_reason, code=code, facts=facts)
    if code == "42501" and anonymous:  # anon calling a member function
        return Unauthenticated(SIGN_IN_MESSAGE, code=code, facts=facts)
    if code == "42501":  # permission denied: not an admin
        return PermissionDenied(message, code=code, facts=facts)
    if not code:  # PostgREST's 400 {"code": ""}: Postgres went away mid-request
        return ServiceUnavailable(
            "The token service is unavailable right now", reason="database_unavailable"
        )
    if code.isdigit() and len(code) == 3:  # a non-PostgREST body, e.g. gateway 502
        status = int(code)
        cls = _BY_STATUS.get(status) or (ServiceUnavailable if status >= 500 else TokensError)
        return cls(message, status=status, code=code, facts=facts)
    if code.startswith(("08", "53", "57", "58", "XX")):
        return ServiceUnavailable(message, code=code, facts=facts)
    return TokensError(message, reason=str(reason or "database_error"), code=code, facts=facts)


def error_from_transport(error: httpx.HTTPError) -> ServiceUnavailable:
    """A network failure talking to the API."""
    return ServiceUnavailable(f"tokens API unreachable: {error}", reason="service_unavailable")
