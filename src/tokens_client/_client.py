"""TokensClient and AsyncTokensClient: a user's session, authorized by RLS.

Both are thin twins over :class:`~tokens_client._base.BaseTokensCalls`: every method
builds a call there and runs it with its own (sync or async) I/O.
"""

from __future__ import annotations

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
    require_public_key,
    require_user_token,
)
from tokens_client._config import Settings
from tokens_client._errors import error_from_api, error_from_transport
from tokens_client._models import Deduction, Feature, TokenBalance, TokenStats, UsageEntry

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
