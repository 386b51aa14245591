"""All non-I/O logic shared by the sync and async clients (the httpx pattern).

Each public method of a client is one line: it asks this base for a :class:`Call`
(which request to build, how to parse the answer) and executes it with its own I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Generic, TypeVar
from uuid import UUID

import jwt
from pydantic import TypeAdapter

from tokens_client._errors import (
    ConfigurationError,
    InvalidRequest,
    OrganizationNotFound,
    ReservationNotActive,
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


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request: ``build`` makes the postgrest request builder, ``parse`` the result."""

    build: Callable[[Any], Any]
    parse: Callable[[Any], T]


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


def require_user_token(access_token: str) -> None:
    """The user's session token must be a user's JWT, not an API key."""
    if not access_token or not access_token.strip():
        raise ConfigurationError(
            "an access token (the user's JWT) is required", reason="missing_access_token"
        )
    role = key_role(access_token)
    if role in ("service_role", "anon") or access_token.startswith("sb_"):
        raise ConfigurationError(
            f"the access token is a {role} key, not a user's session JWT",
            reason="api_key_as_access_token",
        )


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


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_USAGE_ROWS:
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


class BaseTokensCalls:
    """Requests of the user client, independent of sync or async I/O."""

    def _rpc_call(self, name: str, params: dict[str, Any]) -> Call[Any]:
        """Any RPC by name, unparsed (escape hatch for functions without a method)."""
        return Call(_rpc(name, params), lambda data: data)

    def _has_enough_tokens(self, feature: str, organization_id: UUID | str | None) -> Call[bool]:
        params = {"feature": feature, "organization_id": _uuid(organization_id, "organization_id")}
        return Call(_rpc("has_enough_tokens", params), bool)

    def _deduct_tokens(
        self, feature: str, request_id: str | None, organization_id: UUID | str | None
    ) -> Call[Deduction]:
        params = {
            "feature": feature,
            "organization_id": _uuid(organization_id, "organization_id"),
            "request_id": request_id,
        }
        return Call(_rpc("deduct_tokens", params), _one(Deduction))

    def _stats(self, organization_id: UUID | str | None) -> Call[TokenStats]:
        params = {"organization_id": _uuid(organization_id, "organization_id")}
        return Call(_rpc("get_token_stats", params), _one(TokenStats))

    def _balances(self, organization_id: UUID | str | None) -> Call[list[TokenBalance]]:
        org = _uuid(organization_id, "organization_id")

        def build(supabase: Any) -> Any:
            query = supabase.table("ai_tokens").select("*")
            if org is not None:
                query = query.eq("organization_id", org)
            return query.order("organization_id").order("token_type")

        return Call(build, _list_of(TokenBalance))

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

        return Call(build, _list_of(UsageEntry))

    def _features(self) -> Call[list[Feature]]:
        return Call(
            lambda supabase: (
                supabase.table("ai_features")
                .select("feature,token_type,cost,description")
                .order("feature")
            ),
            _list_of(Feature),
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
        return Call(_rpc("get_usage_report", params), _list_of(UsageReportRow))

    def _reserve_tokens(
        self,
        feature: str,
        estimate: int,
        ttl_seconds: int,
        request_id: str | None,
        organization_id: UUID | str | None,
    ) -> Call[Reservation]:
        params = {
            "feature": feature,
            "estimate": estimate,
            "ttl_seconds": ttl_seconds,
            "request_id": request_id,
            "organization_id": _uuid(organization_id, "organization_id"),
        }
        return Call(_rpc("reserve_tokens", params), _one(Reservation))

    def _commit_reservation(
        self, reservation_id: UUID | str, actual: int
    ) -> Call[ReservationCommit]:
        params = {"reservation_id": _uuid(reservation_id, "reservation_id"), "actual": actual}
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

        return Call(build, _list_of(Alert))


class BaseAdminCalls(BaseTokensCalls):
    """Requests of the service-role admin client, independent of I/O."""

    def _initialize_tokens(
        self, organization_id: UUID | str, plan: str | None
    ) -> Call[list[TokenBalance]]:
        params = {"organization_id": _uuid(organization_id, "organization_id"), "plan": plan}
        return Call(_rpc("initialize_tokens", params), _list_of(TokenBalance))

    def _create_organization(self, name: str, plan: str) -> Call[Organization]:
        return Call(
            lambda supabase: supabase.table("organizations").insert({"name": name, "plan": plan}),
            lambda data: Organization(**data[0]),
        )

    def _organizations(self) -> Call[list[Organization]]:
        return Call(
            lambda supabase: supabase.table("organizations").select("*").order("name"),
            _list_of(Organization),
        )

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
            lambda supabase: supabase.table("organizations").select("*").eq("id", org), parse
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
            "amount": amount,
            "expires_at": expires_at.isoformat() if expires_at else None,
            "reason": reason,
            "external_id": external_id,
        }
        return Call(_rpc("grant_tokens", params), _one(Grant))

    def _set_organization_plan(
        self, organization_id: UUID | str, plan: str, event_id: str | None
    ) -> Call[PlanChange]:
        params = {
            "organization_id": _uuid(organization_id, "organization_id"),
            "plan": plan,
            "event_id": event_id,
        }
        return Call(_rpc("set_organization_plan", params), _one(PlanChange))

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
        return Call(_rpc("verify_token_ledger", params), _list_of(LedgerViolation))

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
    """A reservation inside ``spend()``: set :attr:`actual` before the block ends.

    On a clean exit the hold is committed for ``actual`` (the estimate when left
    unset) and :attr:`result` holds the commit; on an exception it is released.
    """

    def __init__(self, reservation: Reservation) -> None:
        self.reservation = reservation
        self.actual: int | None = None
        self.result: ReservationCommit | None = None
        self.released: ReservationRelease | None = None

    @property
    def reservation_id(self) -> UUID:
        return self.reservation.reservation_id

    @property
    def estimate(self) -> int:
        return self.reservation.estimate

    def amount_to_commit(self) -> int:
        return self.estimate if self.actual is None else self.actual


def note_release_failure(error: BaseException, release_error: Exception) -> None:
    """Keep the block's own exception; mention a release that failed too."""
    if isinstance(release_error, ReservationNotActive) and release_error.reservation_status in (
        "expired",
        "released",
    ):
        return  # nothing was held any more: the outcome the release wanted
    if hasattr(error, "add_note"):
        error.add_note(f"releasing the token reservation also failed: {release_error!r}")
