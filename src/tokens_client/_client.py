"""TokensClient and AsyncTokensClient: a user's session, authorized by RLS.

Both are thin twins over :class:`~tokens_client._base.BaseTokensCalls`: every method
builds a call there and runs it with its own (sync or async) I/O.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime, timedelta
from typing import TypeVar
from uuid import UUID

import httpx
from postgrest.exceptions import APIError
from supabase import AsyncClient, AsyncClientOptions, Client, ClientOptions, create_client
from typing_extensions import Self

from tokens_client._base import (
    BaseTokensCalls,
    Call,
    Hold,
    note_release_failure,
    require_public_key,
    require_user_token,
)
from tokens_client._config import Settings
from tokens_client._errors import error_from_api, error_from_transport
from tokens_client._models import (
    Alert,
    Deduction,
    Feature,
    Refund,
    Reservation,
    ReservationCommit,
    ReservationRelease,
    TokenBalance,
    TokenStats,
    UsageEntry,
)

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0


def _headers(access_token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"} if access_token else {}


def sync_supabase(url: str, key: str, access_token: str | None, timeout: float) -> Client:
    """A supabase-py client owned by one tokens client; the session is in its headers."""
    options = ClientOptions(
        headers=_headers(access_token),
        httpx_client=httpx.Client(timeout=timeout),
        auto_refresh_token=False,
        persist_session=False,
    )
    return create_client(url, key, options=options)


def async_supabase(url: str, key: str, access_token: str | None, timeout: float) -> AsyncClient:
    """The async twin of :func:`sync_supabase`."""
    options = AsyncClientOptions(
        headers=_headers(access_token),
        httpx_client=httpx.AsyncClient(timeout=timeout),
        auto_refresh_token=False,
        persist_session=False,
    )
    return AsyncClient(url, key, options)


class SyncExecutor:
    """Runs a :class:`Call` with blocking I/O and maps errors."""

    _supabase: Client
    _anonymous: bool = False

    def _execute(self, call: Call[T]) -> T:
        try:
            response = call.build(self._supabase).execute()
        except APIError as error:
            raise error_from_api(error, anonymous=self._anonymous) from error
        except httpx.HTTPError as error:
            raise error_from_transport(error) from error
        return call.parse(response.data)

    def close(self) -> None:
        """Release the HTTP connections of this client."""
        session = getattr(self._supabase.postgrest, "session", None)
        if session is not None:
            session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncExecutor:
    """Runs a :class:`Call` with async I/O and maps errors."""

    _supabase: AsyncClient
    _anonymous: bool = False

    async def _execute(self, call: Call[T]) -> T:
        try:
            response = await call.build(self._supabase).execute()
        except APIError as error:
            raise error_from_api(error, anonymous=self._anonymous) from error
        except httpx.HTTPError as error:
            raise error_from_transport(error) from error
        return call.parse(response.data)

    async def aclose(self) -> None:
        """Release the HTTP connections of this client."""
        session = getattr(self._supabase.postgrest, "session", None)
        if session is not None:
            await session.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class TokensClient(SyncExecutor, BaseTokensCalls):
    """A user's view of their organization's AI tokens (blocking I/O).

    Build it per request from the user's access token::

        client = TokensClient(url, anon_key, access_token=user_jwt)
        client.deduct_tokens("generate_goal", request_id="req-42")

    The token travels in the ``Authorization`` header of a supabase-py client owned by
    this object; RLS in the database decides what it may read and spend.

    Raises :class:`~tokens_client.ConfigurationError` when given a service-role key.
    """

    def __init__(
        self,
        url: str,
        public_key: str,
        access_token: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        require_public_key(public_key)
        require_user_token(access_token)
        self._supabase = sync_supabase(url, public_key, access_token, timeout)

    @classmethod
    def from_supabase(cls, supabase: Client) -> TokensClient:
        """Wrap an existing supabase-py client (its session is used as it is)."""
        require_public_key(supabase.supabase_key)
        client = cls.__new__(cls)
        client._supabase = supabase
        return client

    @classmethod
    def from_env(cls, access_token: str, *, dotenv_path: str | None = None) -> TokensClient:
        """URL and public key from ``SUPABASE_URL`` / ``SUPABASE_ANON_KEY`` (or ``.env``)."""
        settings = Settings.from_env(dotenv_path)
        return cls(settings.url, settings.require_public_key(), access_token)

    def has_enough_tokens(self, feature: str, organization_id: UUID | str | None = None) -> bool:
        """Whether the organization can afford ``feature`` now.

        Raises UnknownFeature, FeatureNotInPlan, NotAMember, Unauthenticated.
        """
        return self._execute(self._has_enough_tokens(feature, organization_id))

    def deduct_tokens(
        self,
        feature: str,
        request_id: str | None = None,
        organization_id: UUID | str | None = None,
    ) -> Deduction:
        """Spend the feature's cost atomically; a repeated ``request_id`` spends once.

        Raises InsufficientTokens, FeatureNotInPlan, UnknownFeature, NotAMember,
        IdempotencyConflict, RateLimited, InvalidRequest, Unauthenticated.
        """
        return self._execute(self._deduct_tokens(feature, request_id, organization_id))

    def stats(self, organization_id: UUID | str | None = None) -> TokenStats:
        """Totals and per-type balances of the caller's organization."""
        return self._execute(self._stats(organization_id))

    def balances(self, organization_id: UUID | str | None = None) -> list[TokenBalance]:
        """The ``ai_tokens`` rows the caller may see (their organization's)."""
        return self._execute(self._balances(organization_id))

    def usage(
        self, since: datetime | timedelta | None = None, limit: int = 100
    ) -> list[UsageEntry]:
        """Usage-log rows the caller may see, newest first (admins: the whole org)."""
        return self._execute(self._usage(since, limit, None))

    def features(self) -> list[Feature]:
        """The feature catalog: each feature's token type and cost."""
        return self._execute(self._features())

    def reserve_tokens(
        self,
        feature: str,
        estimate: int,
        ttl_seconds: int = 300,
        request_id: str | None = None,
        organization_id: UUID | str | None = None,
    ) -> Reservation:
        """Hold ``estimate`` tokens for a call whose cost is known afterwards.

        Raises the same errors as :meth:`deduct_tokens`, and InvalidRequest
        (invalid_amount) for an estimate outside 1..1e9.
        """
        return self._execute(
            self._reserve_tokens(feature, estimate, ttl_seconds, request_id, organization_id)
        )

    def commit_reservation(self, reservation_id: UUID | str, actual: int) -> ReservationCommit:
        """Charge ``actual`` (at most the estimate) and give the rest of the hold back.

        Raises ReservationExceeded, ReservationNotActive, NotFound, PermissionDenied.
        """
        return self._execute(self._commit_reservation(reservation_id, actual))

    def release_reservation(self, reservation_id: UUID | str) -> ReservationRelease:
        """Give the whole hold back. Raises ReservationNotActive, NotFound."""
        return self._execute(self._release_reservation(reservation_id))

    @contextmanager
    def spend(
        self,
        feature: str,
        estimate: int,
        *,
        ttl_seconds: int = 300,
        request_id: str | None = None,
        organization_id: UUID | str | None = None,
    ) -> Iterator[Hold]:
        """Reserve, run the block, then commit ``hold.actual`` or release on an exception.

        ::

            with client.spend("generate_quest", estimate=10) as hold:
                quest = call_the_model()
                hold.actual = quest.tokens_used
        """
        hold = Hold(
            self.reserve_tokens(feature, estimate, ttl_seconds, request_id, organization_id)
        )
        try:
            yield hold
        except BaseException as error:
            try:
                hold.released = self.release_reservation(hold.reservation_id)
            except Exception as release_error:
                note_release_failure(error, release_error)
            raise
        hold.result = self.commit_reservation(hold.reservation_id, hold.amount_to_commit())

    def refund_deduction(self, usage_id: UUID | str, reason: str | None = None) -> Refund:
        """Give back a deduction's tokens once (owners/admins). Raises AlreadyRefunded."""
        return self._execute(self._refund_deduction(usage_id, reason))

    def alerts(self, since: datetime | timedelta | None = None, limit: int = 100) -> list[Alert]:
        """The organization's alerts, newest first (owners/admins; members see none)."""
        return self._execute(self._alerts(None, since, limit))


class AsyncTokensClient(AsyncExecutor, BaseTokensCalls):
    """The async twin of :class:`TokensClient`; same methods, awaitable."""

    def __init__(
        self,
        url: str,
        public_key: str,
        access_token: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        require_public_key(public_key)
        require_user_token(access_token)
        self._supabase = async_supabase(url, public_key, access_token, timeout)

    @classmethod
    def from_supabase(cls, supabase: AsyncClient) -> AsyncTokensClient:
        """Wrap an existing async supabase-py client (its session is used as it is)."""
        require_public_key(supabase.supabase_key)
        client = cls.__new__(cls)
        client._supabase = supabase
        return client

    @classmethod
    def from_env(cls, access_token: str, *, dotenv_path: str | None = None) -> AsyncTokensClient:
        """URL and public key from ``SUPABASE_URL`` / ``SUPABASE_ANON_KEY`` (or ``.env``)."""
        settings = Settings.from_env(dotenv_path)
        return cls(settings.url, settings.require_public_key(), access_token)

    async def has_enough_tokens(
        self, feature: str, organization_id: UUID | str | None = None
    ) -> bool:
        """See :meth:`TokensClient.has_enough_tokens`."""
        return await self._execute(self._has_enough_tokens(feature, organization_id))

    async def deduct_tokens(
        self,
        feature: str,
        request_id: str | None = None,
        organization_id: UUID | str | None = None,
    ) -> Deduction:
        """See :meth:`TokensClient.deduct_tokens`."""
        return await self._execute(self._deduct_tokens(feature, request_id, organization_id))

    async def stats(self, organization_id: UUID | str | None = None) -> TokenStats:
        """See :meth:`TokensClient.stats`."""
        return await self._execute(self._stats(organization_id))

    async def balances(self, organization_id: UUID | str | None = None) -> list[TokenBalance]:
        """See :meth:`TokensClient.balances`."""
        return await self._execute(self._balances(organization_id))

    async def usage(
        self, since: datetime | timedelta | None = None, limit: int = 100
    ) -> list[UsageEntry]:
        """See :meth:`TokensClient.usage`."""
        return await self._execute(self._usage(since, limit, None))

    async def features(self) -> list[Feature]:
        """See :meth:`TokensClient.features`."""
        return await self._execute(self._features())

    async def reserve_tokens(
        self,
        feature: str,
        estimate: int,
        ttl_seconds: int = 300,
        request_id: str | None = None,
        organization_id: UUID | str | None = None,
    ) -> Reservation:
        """See :meth:`TokensClient.reserve_tokens`."""
        return await self._execute(
            self._reserve_tokens(feature, estimate, ttl_seconds, request_id, organization_id)
        )

    async def commit_reservation(
        self, reservation_id: UUID | str, actual: int
    ) -> ReservationCommit:
        """See :meth:`TokensClient.commit_reservation`."""
        return await self._execute(self._commit_reservation(reservation_id, actual))

    async def release_reservation(self, reservation_id: UUID | str) -> ReservationRelease:
        """See :meth:`TokensClient.release_reservation`."""
        return await self._execute(self._release_reservation(reservation_id))

    @asynccontextmanager
    async def spend(
        self,
        feature: str,
        estimate: int,
        *,
        ttl_seconds: int = 300,
        request_id: str | None = None,
        organization_id: UUID | str | None = None,
    ) -> AsyncIterator[Hold]:
        """See :meth:`TokensClient.spend`; use with ``async with``."""
        hold = Hold(
            await self.reserve_tokens(feature, estimate, ttl_seconds, request_id, organization_id)
        )
        try:
            yield hold
        except BaseException as error:
            try:
                hold.released = await self.release_reservation(hold.reservation_id)
            except Exception as release_error:
                note_release_failure(error, release_error)
            raise
        hold.result = await self.commit_reservation(hold.reservation_id, hold.amount_to_commit())

    async def refund_deduction(self, usage_id: UUID | str, reason: str | None = None) -> Refund:
        """See :meth:`TokensClient.refund_deduction`."""
        return await self._execute(self._refund_deduction(usage_id, reason))

    async def alerts(
        self, since: datetime | timedelta | None = None, limit: int = 100
    ) -> list[Alert]:
        """See :meth:`TokensClient.alerts`."""
        return await self._execute(self._alerts(None, since, limit))
