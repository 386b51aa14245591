"""All non-I/O logic shared by the sync and async clients (the httpx pattern).

Each public method of a client is one line: it asks this base for a :class:`Call`
(which request to build, how to parse the answer, whether it may be retried) and
executes it with its own I/O. Arguments are validated here, before any I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Generic, TypeVar
from uuid import UUID, uuid4

import jwt
from pydantic import TypeAdapter

from tokens_client._errors import (
    SIGN_IN_MESSAGE,
    ConfigurationError,
    InvalidRequest,
    OrganizationNotFound,
    ReservationNotActive,
    ServiceUnavailable,
    Unauthenticated,
)
from tokens_client._models import (
    Alert,
    Deduction,
    EnforcementModeChange,
    Feature,
    Grant,
    LedgerViolation,
    Member,
    Organization,
    PlanChange,
    RateLimit,
    RefreshRun,
    Refund,
    Reservation,
    ReservationCommit,
    ReservationRelease,
    TokenBalance,
    TokenStats,
    UsageEntry,
    UsageGrouping,
    UsageReportRow,
)

T = TypeVar("T")

MAX_USAGE_ROWS = 1000
ORGANIZATION_PAGE = 1000  # the local stack's PostgREST db-max-rows, and Supabase's default
MAX_QUANTITY = 1_000_000
MAX_AMOUNT = 1_000_000_000
DEFAULT_RETRIES = 2
MAX_TTL_SECONDS = 3600


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request: ``build`` makes the postgrest request builder, ``parse`` the result.

    ``retryable``: the request may be sent again after a network failure or a 503
    (reads, and writes carrying an idempotency key). Others are never retried.
    """

    build: Callable[[Any], Any]
    parse: Callable[[Any], T]
    retryable: bool = False


def should_retry(error: BaseException) -> bool:
    """Network failures and 5xx outages are worth another try; refusals are not."""
    return isinstance(error, ServiceUnavailable)


def authorize(builder: Any, headers: Mapping[str, str]) -> Any:
    """Put the user's ``Authorization`` on one request (never on the shared pool).

    postgrest-py keeps a request's headers on the builder (``.headers``, or
    ``.request.headers`` since 2.2x); either way they are this request's own copy.
    """
    if headers:
        getattr(builder, "request", builder).headers.update(headers)
    return builder


def api_headers(key: str) -> dict[str, str]:
    """What the gateway needs on every request: the API key (and it as the bearer)."""
    return {"apikey": key, "Authorization": f"Bearer {key}"}


def rest_url(url: str) -> str:
    """PostgREST behind the Supabase gateway."""
    return f"{url.rstrip('/')}/rest/v1"


def key_role(key: str) -> str | None:
    """The Postgres role a Supabase API key or JWT stands for (None if not a JWT)."""
    if key.startswith("sb_publishable_"):
        return "anon"
    if key.startswith("sb_secret_"):
        return "service_role"
    try:
        claims = jwt.decode(key, options={"verify_signature": False, "verify_exp": False})
    except jwt.PyJWTError:
        return None
    role = claims.get("role")
    return str(role) if role is not None else None


def require_public_key(key: str) -> None:
    """A user client takes the anon / publishable key, never a service-role key."""
    role = key_role(key)
    if role == "service_role":
        raise ConfigurationError(
            "a service-role key was given to a user client: use the anon or sb_publishable_ "
            "key with the user's access token (TokensAdmin is the service-role client)",
            reason="service_key_in_user_client",
        )
    if role != "anon":
        raise ConfigurationError(
            "the public key must be the project's anon key or an sb_publishable_ key",
            reason="invalid_public_key",
        )


def require_user_token(access_token: str | None) -> dict[str, str]:
    """The request headers of a user's session; refuses what is not a user's JWT.

    Raises Unauthenticated (401, a message fit for the end user): no token
    (``missing_access_token``), or an API key where the session belongs
    (``api_key_as_access_token``). Decodes without verifying: no I/O, nothing loaded.
    """
    if not isinstance(access_token, str) or not access_token.strip():
        raise Unauthenticated(SIGN_IN_MESSAGE, reason="missing_access_token")
    if access_token.startswith("sb_") or key_role(access_token) in ("service_role", "anon"):
        raise Unauthenticated(
            SIGN_IN_MESSAGE,
            reason="api_key_as_access_token",
            facts={"hint": "pass the signed-in user's access token, not a project API key"},
        )
    return {"Authorization": f"Bearer {access_token}"}


def require_secret_key(key: str) -> None:
    """The admin client takes a service-role key, never the anon key or a user JWT."""
    if key_role(key) != "service_role":
        raise ConfigurationError(
            "TokensAdmin needs the service-role key (SUPABASE_SERVICE_ROLE_KEY or an "
            "sb_secret_ key); user sessions belong in TokensClient",
            reason="user_key_in_admin_client",
        )


def _uuid(value: UUID | str | None, field: str) -> str | None:
    if value is None:
        return None
    try:
        return str(UUID(str(value)))
    except ValueError:
        raise InvalidRequest(
            f"{field} must be a UUID", reason="invalid_arguments", facts={"field": field}
        ) from None


def like_literal(text: str) -> str:
    """``text`` as a LIKE pattern matching itself (PostgREST also reads ``*`` as ``%``)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "_")  # one character; the exact check comes after


def _since(since: datetime | timedelta | None) -> str | None:
    if since is None:
        return None
    if isinstance(since, timedelta):
        return (datetime.now(timezone.utc) - since).isoformat()
    if since.tzinfo is None:
        raise InvalidRequest(
            "since must be timezone-aware", reason="invalid_arguments", facts={"field": "since"}
        )
    return since.isoformat()


def whole_number(value: object, field: str, low: int, high: int) -> int:
    """``value`` when it is an int (not a bool) in ``low..high``; else InvalidRequest.

    Raised before any I/O with reason ``invalid_amount`` and the bounds in ``facts``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequest(
            f"{field} must be a whole number from {low} to {high}",
            reason="invalid_amount",
            facts={"field": field, "value": repr(value), "min": low, "max": high},
        )
    return value


def _limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_USAGE_ROWS:
        raise InvalidRequest(
            f"limit must be between 1 and {MAX_USAGE_ROWS}",
            reason="invalid_arguments",
            facts={"field": "limit"},
        )
    return limit


def _list_of(model: type[T]) -> Callable[[Any], list[T]]:
    adapter = TypeAdapter(list[model])  # type: ignore[valid-type]
    return lambda data: adapter.validate_python(data or [])


def _one(model: Callable[..., T]) -> Callable[[Any], T]:
    def parse(data: Any) -> T:
        if not isinstance(data, Mapping):
            raise InvalidRequest("unexpected answer from the API", reason="bad_response")
        return model(**data)

    return parse


def _rpc(name: str, params: dict[str, Any]) -> Callable[[Any], Any]:
    clean = {k: v for k, v in params.items() if v is not None}
    return lambda supabase: supabase.rpc(name, clean)


def _request_id(request_id: str | None, automatic: bool) -> str | None:
    """The caller's idempotency key; with retries on, one made up when they gave none."""
    if request_id is None:
        return str(uuid4()) if automatic else None
    if not isinstance(request_id, str) or not request_id.strip():
        raise InvalidRequest(
            "request_id must be a non-empty string",
            reason="invalid_arguments",
            facts={"field": "request_id"},
        )
    return request_id


class BaseTokensCalls:
    """Requests of the user client, independent of sync or async I/O.

    ``_retries`` is how many times a retryable call is sent again; when it is above
    zero, deductions and reservations get an automatic ``request_id`` so that a
    retried write still spends once.
    """

    _retries: int = DEFAULT_RETRIES

    def _rpc_call(self, name: str, params: dict[str, Any]) -> Call[Any]:
        """Any RPC by name, unparsed (escape hatch for functions without a method)."""
        return Call(_rpc(name, params), lambda data: data)

    def _has_enough_tokens(self, feature: str, organization_id: UUID | str | None) -> Call[bool]:
        params = {"feature": feature, "organization_id": _uuid(organization_id, "organization_id")}
        return Call(_rpc("has_enough_tokens", params), bool, retryable=True)

    def _deduct_tokens(
        self,
        feature: str,
        quantity: int,
        request_id: str | None,
        organization_id: UUID | str | None,
    ) -> Call[Deduction]:
        units = whole_number(quantity, "quantity", 1, MAX_QUANTITY)
        key = _request_id(request_id, automatic=self._retries > 0)
        params = {
            "feature": feature,
            "organization_id": _uuid(organization_id, "organization_id"),
            "request_id": key,
            # sent only when it says something: servers before the argument existed
            # answer quantity=1 calls as before
            "quantity": units if units != 1 else None,
        }
        return Call(_rpc("deduct_tokens", params), _one(Deduction), retryable=key is not None)

    def _stats(self, organization_id: UUID | str | None) -> Call[TokenStats]:
        params = {"organization_id": _uuid(organization_id, "organization_id")}
        return Call(_rpc("get_token_stats", params), _one(TokenStats), retryable=True)

    def _balances(self, organization_id: UUID | str | None) -> Call[list[TokenBalance]]:
        org = _uuid(organization_id, "organization_id")

        def build(supabase: Any) -> Any:
            query = supabase.table("ai_tokens").select("*")
            if org is not None:
                query = query.eq("organization_id", org)
            return query.order("organization_id").order("token_type")

        return Call(build, _list_of(TokenBalance), retryable=True)

    def _usage(
        self,
        since: datetime | timedelta | None,
        limit: int,
        organization_id: UUID | str | None,
    ) -> Call[list[UsageEntry]]:
        since_text = _since(since)
        org = _uuid(organization_id, "organization_id")
        rows = _limit(limit)

        def build(supabase: Any) -> Any:
            query = supabase.table("ai_token_usage_log").select("*")
            if org is not None:
                query = query.eq("organization_id", org)
            if since_text is not None:
                query = query.gte("created_at", since_text)
            return query.order("created_at", desc=True).order("id").limit(rows)

        return Call(build, _list_of(UsageEntry), retryable=True)

    def _features(self) -> Call[list[Feature]]:
        return Call(
            lambda supabase: (
                supabase.table("ai_features")
                .select("feature,token_type,cost,description")
                .order("feature")
            ),
            _list_of(Feature),
            retryable=True,
        )

    def _usage_report(
        self,
        organization_id: UUID | str | None,
        by: UsageGrouping,
        since: datetime | timedelta | None,
    ) -> Call[list[UsageReportRow]]:
        params = {
            "organization_id": _uuid(organization_id, "organization_id"),
            "group_by": by,
            "since": _since(since),
        }
        return Call(_rpc("get_usage_report", params), _list_of(UsageReportRow), retryable=True)

    def _reserve_tokens(
        self,
        feature: str,
        estimate: int,
        ttl_seconds: int,
        request_id: str | None,
        organization_id: UUID | str | None,
    ) -> Call[Reservation]:
        key = _request_id(request_id, automatic=self._retries > 0)
        params = {
            "feature": feature,
            "estimate": whole_number(estimate, "estimate", 1, MAX_AMOUNT),
            "ttl_seconds": whole_number(ttl_seconds, "ttl_seconds", 1, MAX_TTL_SECONDS),
            "request_id": key,
            "organization_id": _uuid(organization_id, "organization_id"),
        }
        return Call(_rpc("reserve_tokens", params), _one(Reservation), retryable=key is not None)

    def _commit_reservation(
        self, reservation_id: UUID | str, actual: int
    ) -> Call[ReservationCommit]:
        params = {
            "reservation_id": _uuid(reservation_id, "reservation_id"),
            "actual": whole_number(actual, "actual", 0, MAX_AMOUNT),
        }
        return Call(_rpc("commit_reservation", params), _one(ReservationCommit))

    def _release_reservation(self, reservation_id: UUID | str) -> Call[ReservationRelease]:
        params = {"reservation_id": _uuid(reservation_id, "reservation_id")}
        return Call(_rpc("release_reservation", params), _one(ReservationRelease))

    def _refund_deduction(self, usage_id: UUID | str, reason: str | None) -> Call[Refund]:
        params = {"usage_id": _uuid(usage_id, "usage_id"), "reason": reason}
        return Call(_rpc("refund_deduction", params), _one(Refund))

    def _alerts(
        self,
        organization_id: UUID | str | None,
        since: datetime | timedelta | None,
        limit: int,
    ) -> Call[list[Alert]]:
        org = _uuid(organization_id, "organization_id")
        since_text = _since(since)
        rows = _limit(limit)

        def build(supabase: Any) -> Any:
            query = supabase.table("ai_token_alerts").select("*")
            if org is not None:
                query = query.eq("organization_id", org)
            if since_text is not None:
                query = query.gte("created_at", since_text)
            return query.order("created_at", desc=True).order("id", desc=True).limit(rows)

        return Call(build, _list_of(Alert), retryable=True)


class BaseAdminCalls(BaseTokensCalls):
    """Requests of the service-role admin client, independent of I/O."""

    def _initialize_tokens(
        self, organization_id: UUID | str, plan: str | None
    ) -> Call[list[TokenBalance]]:
        params = {"organization_id": _uuid(organization_id, "organization_id"), "plan": plan}
        return Call(_rpc("initialize_tokens", params), _list_of(TokenBalance))

    def _create_organization(self, name: str, plan: str | None) -> Call[Organization]:
        row = {"name": name} if plan is None else {"name": name, "plan": plan}
        return Call(
            lambda supabase: supabase.table("organizations").insert(row),
            lambda data: Organization(**data[0]),
        )

    def _organizations(self, name: str | None, offset: int = 0) -> Call[list[Organization]]:
        """One page (ORGANIZATION_PAGE rows from ``offset``, by name then id): PostgREST
        answers at most its db-max-rows, so the admin methods read page after page."""
        exact = name.casefold() if name is not None else None

        def build(supabase: Any) -> Any:
            query = supabase.table("organizations").select("*")
            if name is not None:  # the server narrows (index-friendly ilike), we check exactly
                query = query.ilike("name", like_literal(name))
            return query.order("name").order("id").range(offset, offset + ORGANIZATION_PAGE - 1)

        def parse(data: Any) -> list[Organization]:
            rows = _list_of(Organization)(data)
            return rows if exact is None else [o for o in rows if o.name.casefold() == exact]

        return Call(build, parse, retryable=True)

    def _add_member(
        self, organization_id: UUID | str, user_id: UUID | str, role: str, full_name: str | None
    ) -> Call[Member]:
        row = {
            "id": _uuid(user_id, "user_id"),
            "organization_id": _uuid(organization_id, "organization_id"),
            "role": role,
            "full_name": full_name,
        }
        return Call(
            lambda supabase: supabase.table("user_profiles").upsert(row, on_conflict="id"),
            lambda data: Member(**data[0]),
        )

    def _organization(self, organization_id: UUID | str) -> Call[Organization]:
        org = _uuid(organization_id, "organization_id")

        def parse(data: Any) -> Organization:
            if not data:
                raise OrganizationNotFound(
                    f"Organization (id={org}) not found", facts={"organization_id": org}
                )
            return Organization(**data[0])

        return Call(
            lambda supabase: supabase.table("organizations").select("*").eq("id", org),
            parse,
            retryable=True,
        )

    def _grant_tokens(
        self,
        organization_id: UUID | str,
        token_type: str,
        amount: int,
        expires_at: datetime | None,
        reason: str | None,
        external_id: str | None,
    ) -> Call[Grant]:
        params = {
            "organization_id": _uuid(organization_id, "organization_id"),
            "token_type": token_type,
            "amount": whole_number(amount, "amount", 1, MAX_AMOUNT),
            "expires_at": expires_at.isoformat() if expires_at else None,
            "reason": reason,
            "external_id": external_id,
        }
        return Call(_rpc("grant_tokens", params), _one(Grant), retryable=external_id is not None)

    def _set_organization_plan(
        self, organization_id: UUID | str, plan: str, event_id: str | None
    ) -> Call[PlanChange]:
        params = {
            "organization_id": _uuid(organization_id, "organization_id"),
            "plan": plan,
            "event_id": event_id,
        }
        return Call(
            _rpc("set_organization_plan", params), _one(PlanChange), retryable=event_id is not None
        )

    def _set_enforcement_mode(
        self, mode: str, organization_id: UUID | str | None
    ) -> Call[EnforcementModeChange]:
        params = {"mode": mode, "organization_id": _uuid(organization_id, "organization_id")}
        return Call(_rpc("set_enforcement_mode", params), _one(EnforcementModeChange))

    def _refresh_due_tokens(self) -> Call[RefreshRun]:
        return Call(_rpc("refresh_due_tokens", {}), _one(RefreshRun))

    def _verify_token_ledger(
        self, organization_id: UUID | str | None
    ) -> Call[list[LedgerViolation]]:
        params = {"organization_id": _uuid(organization_id, "organization_id")}
        return Call(_rpc("verify_token_ledger", params), _list_of(LedgerViolation), retryable=True)

    def _set_rate_limit(
        self,
        max_requests: int,
        window_seconds: int,
        organization_id: UUID | str | None,
        plan: str | None,
        feature: str | None,
    ) -> Call[RateLimit]:
        params = {
            "max_requests": max_requests,
            "window_seconds": window_seconds,
            "organization_id": _uuid(organization_id, "organization_id"),
            "plan": plan,
            "feature": feature,
        }
        return Call(_rpc("set_rate_limit", params), _one(RateLimit))


class Hold:
    """A reservation inside ``spend()``: say what the call used, or that it used nothing.

    Set :attr:`actual` (the tokens the model reports, 0 allowed) and the hold is
    committed for it when the block ends (:attr:`result`); call :meth:`release` to give
    it all back (:attr:`released`). An exception in the block releases it too. Leaving
    the block with neither releases the hold and raises InvalidRequest
    (``actual_not_set``): a forgotten actual is a bug to see, never a silent charge.
    """

    def __init__(self, reservation: Reservation) -> None:
        self.reservation = reservation
        self._actual: int | None = None
        self._release = False
        self.result: ReservationCommit | None = None
        self.released: ReservationRelease | None = None

    @property
    def reservation_id(self) -> UUID:
        return self.reservation.reservation_id

    @property
    def estimate(self) -> int:
        return self.reservation.estimate

    @property
    def replayed(self) -> bool:
        """The request_id was seen before: this hold belongs to the first request."""
        return self.reservation.replayed

    @property
    def actual(self) -> int | None:
        """The tokens to charge; InvalidRequest (invalid_amount) unless 0..1e9."""
        return self._actual

    @actual.setter
    def actual(self, value: int) -> None:
        self._actual = whole_number(value, "actual", 0, MAX_AMOUNT)

    def release(self) -> None:
        """Charge nothing: the hold is given back when the block ends."""
        self._release = True

    def to_commit(self) -> int | None:
        """The amount to commit at the end of the block, None to release."""
        return None if self._release else self._actual

    def check_settled(self) -> None:
        """After a release: raise if nobody asked for it (the actual was forgotten)."""
        if not self._release:
            raise InvalidRequest(
                "spend() ended without hold.actual or hold.release(): the hold was "
                "released and nothing charged",
                reason="actual_not_set",
                facts={"reservation_id": str(self.reservation_id), "estimate": self.estimate},
            )


def note_release_failure(error: BaseException, release_error: Exception) -> None:
    """Keep the block's own exception; mention a release that failed too."""
    if isinstance(release_error, ReservationNotActive) and release_error.reservation_status in (
        "expired",
        "released",
    ):
        return  # nothing was held any more: the outcome the release wanted
    if hasattr(error, "add_note"):
        error.add_note(f"releasing the token reservation also failed: {release_error!r}")
