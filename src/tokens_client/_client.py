"""App-scoped pools and per-request user clients, sync and async twins.

``Tokens`` / ``AsyncTokens`` are made once per application: they hold the HTTP pool
(one TLS context, one set of keep-alive connections) and the project's public key.
``for_user(access_token)`` binds that pool to one signed-in user and returns a
``TokensClient`` / ``AsyncTokensClient``: no I/O, nothing loaded, nothing shared that
the next user could see. The user's token travels in the ``Authorization`` header of
each request; row-level security in the database decides what it may read and spend.

Both clients are thin twins over :class:`~tokens_client._base.BaseTokensCalls`: every
method builds a call there and runs it with its own (sync or async) I/O.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

import httpx
from postgrest import AsyncPostgrestClient, SyncPostgrestClient
from postgrest.exceptions import APIError
from tenacity import (
    AsyncRetrying,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)
from typing_extensions import Self

from tokens_client._base import (
    DEFAULT_RETRIES,
    BaseTokensCalls,
    Call,
    Hold,
    api_headers,
    authorize,
    note_release_failure,
    require_public_key,
    require_user_token,
    rest_url,
    should_retry,
)
from tokens_client._config import Settings
from tokens_client._errors import TokensError, error_from_api, error_from_transport
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

if TYPE_CHECKING:
    from supabase import AsyncClient, Client

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0
FIRST_RETRY_DELAY = 0.1  # seconds; doubles per try, with jitter, at most MAX_RETRY_DELAY
MAX_RETRY_DELAY = 2.0


P = TypeVar("P", SyncPostgrestClient, AsyncPostgrestClient)


def _quiet_retries(postgrest: P) -> P:
    # postgrest-py >= 2.2x retries GET/HEAD by itself (1 s, 2 s, 4 s): ours decide
    if hasattr(postgrest, "retry_enabled"):
        postgrest.retry_enabled = False
    return postgrest


def sync_postgrest(url: str, key: str, timeout: float) -> SyncPostgrestClient:
    """postgrest-py (supabase-py's REST client) over one new pool, API key in headers."""
    pool = httpx.Client(timeout=timeout)
    return _quiet_retries(
        SyncPostgrestClient(rest_url(url), headers=api_headers(key), http_client=pool)
    )


def async_postgrest(url: str, key: str, timeout: float) -> AsyncPostgrestClient:
    """The async twin of :func:`sync_postgrest` (blocking: loads the TLS trust store)."""
    pool = httpx.AsyncClient(timeout=timeout)
    return _quiet_retries(
        AsyncPostgrestClient(rest_url(url), headers=api_headers(key), http_client=pool)
    )


def _worth_retrying(call: Call[Any], retries: int, error: TokensError) -> bool:
    return call.retryable and retries > 0 and should_retry(error)


def _retrying(retries: int) -> dict[str, Any]:
    """The retries after a failed first try: ``retries`` more, exponential backoff."""
    return {
        "stop": stop_after_attempt(retries),
        "wait": wait_exponential(multiplier=FIRST_RETRY_DELAY, max=MAX_RETRY_DELAY)
        + wait_random(0, FIRST_RETRY_DELAY),
        "retry": retry_if_exception(should_retry),
        "reraise": True,
    }


def _mapped(error: Exception, anonymous: bool) -> TokensError | None:
    if isinstance(error, APIError):
        return error_from_api(error, anonymous=anonymous)
    if isinstance(error, httpx.HTTPError):
        return error_from_transport(error)
    return None


class SyncExecutor:
    """Runs a :class:`Call` with blocking I/O, retries what may be retried, maps errors."""

    _postgrest: Any  # SyncPostgrestClient, or a supabase-py Client (from_supabase)
    _headers: Mapping[str, str] = {}
    _retries: int = DEFAULT_RETRIES
    _anonymous: bool = False
    _owner: Tokens | None = None

    def _send(self, call: Call[T]) -> T:
        try:
            response = authorize(call.build(self._postgrest), self._headers).execute()
        except (APIError, httpx.HTTPError) as error:
            mapped = _mapped(error, self._anonymous)
            assert mapped is not None
            raise mapped from error
        return call.parse(response.data)

    def _execute(self, call: Call[T]) -> T:
        try:  # the first try outside tenacity: the common case pays nothing for retries
            return self._send(call)
        except TokensError as error:
            if not _worth_retrying(call, self._retries, error):
                raise
        time.sleep(FIRST_RETRY_DELAY)
        for attempt in Retrying(**_retrying(self._retries)):
            with attempt:
                return self._send(call)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    def close(self) -> None:
        """Release the HTTP connections this object owns (a ``for_user`` binding owns none)."""
        if self._owner is not None:
            self._owner.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncExecutor:
    """Runs a :class:`Call` with async I/O, retries what may be retried, maps errors."""

    _pool: AsyncTokens
    _headers: Mapping[str, str] = {}
    _retries: int = DEFAULT_RETRIES
    _anonymous: bool = False
    _owns_pool: bool = False

    async def _send(self, call: Call[T]) -> T:
        postgrest = await self._pool.postgrest()
        try:
            response = await authorize(call.build(postgrest), self._headers).execute()
        except (APIError, httpx.HTTPError) as error:
            mapped = _mapped(error, self._anonymous)
            assert mapped is not None
            raise mapped from error
        return call.parse(response.data)

    async def _execute(self, call: Call[T]) -> T:
        try:  # the first try outside tenacity: the common case pays nothing for retries
            return await self._send(call)
        except TokensError as error:
            if not _worth_retrying(call, self._retries, error):
                raise
        await asyncio.sleep(FIRST_RETRY_DELAY)
        async for attempt in AsyncRetrying(**_retrying(self._retries)):
            with attempt:
                return await self._send(call)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def aclose(self) -> None:
        """Release the HTTP connections this object owns (a ``for_user`` binding owns none)."""
        if self._owns_pool:
            await self._pool.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class Tokens:
    """One per application: the HTTP pool and public key that every user's calls share.

    ::

        tokens = Tokens(SUPABASE_URL, SUPABASE_ANON_KEY)      # at startup
        with tokens.for_user(access_token) as client:          # per request: no I/O
            client.deduct_tokens("generate_goal", request_id=key)
        tokens.close()                                         # at shutdown (or `with`)

    ``retries``: how many times a call that is safe to repeat (a read, or a write with
    an idempotency key) is sent again after a network failure or a 503, with
    exponential backoff; deductions and reservations get an automatic ``request_id``
    while it is above 0. ``retries=0`` sends everything once.

    Raises ConfigurationError when ``public_key`` is a service-role key.
    """

    def __init__(
        self,
        url: str,
        public_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        require_public_key(public_key)
        self.retries = retries
        self._postgrest = sync_postgrest(url, public_key, timeout)

    @classmethod
    def from_env(cls, *, dotenv_path: str | None = None, retries: int = DEFAULT_RETRIES) -> Tokens:
        """URL and public key from ``SUPABASE_URL`` / ``SUPABASE_ANON_KEY`` (or ``.env``)."""
        settings = Settings.from_env(dotenv_path)
        return cls(settings.url, settings.require_public_key(), retries=retries)

    def for_user(self, access_token: str) -> TokensClient:
        """A client acting as the user of ``access_token``, over this pool (no I/O).

        Raises Unauthenticated (401) when the token is missing or is an API key.
        """
        return TokensClient._bound(self._postgrest, require_user_token(access_token), self.retries)

    def close(self) -> None:
        """Close the pool's connections (every client bound to it stops working)."""
        self._postgrest.session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncTokens:
    """The async twin of :class:`Tokens`; never blocks the event loop.

    Construction does no I/O; the pool (and its TLS context) is built in a worker
    thread on ``async with`` or on first use. Made in FastAPI's lifespan::

        @asynccontextmanager
        async def lifespan(app):
            async with AsyncTokens(url, anon_key) as tokens:
                app.state.tokens = tokens
                yield
    """

    def __init__(
        self,
        url: str,
        public_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        require_public_key(public_key)
        self._open(url, public_key, timeout, retries)

    def _open(self, url: str, key: str, timeout: float, retries: int) -> None:
        self.retries = retries
        self._url, self._key, self._timeout = url, key, timeout
        self._postgrest: Any = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_env(
        cls, *, dotenv_path: str | None = None, retries: int = DEFAULT_RETRIES
    ) -> AsyncTokens:
        """URL and public key from ``SUPABASE_URL`` / ``SUPABASE_ANON_KEY`` (or ``.env``)."""
        settings = Settings.from_env(dotenv_path)
        return cls(settings.url, settings.require_public_key(), retries=retries)

    @classmethod
    def _wrapping(cls, postgrest: Any, retries: int) -> AsyncTokens:
        pool = cls.__new__(cls)
        pool._open("", "", DEFAULT_TIMEOUT, retries)
        pool._postgrest = postgrest
        return pool

    async def postgrest(self) -> Any:
        """The REST client over this pool, built off the event loop the first time."""
        if self._postgrest is None:
            async with self._lock:
                if self._postgrest is None:
                    self._postgrest = await asyncio.to_thread(
                        async_postgrest, self._url, self._key, self._timeout
                    )
        return self._postgrest

    def for_user(self, access_token: str) -> AsyncTokensClient:
        """An async client acting as the user of ``access_token`` (no I/O, no await).

        Raises Unauthenticated (401) when the token is missing or is an API key.
        """
        return AsyncTokensClient._bound(self, require_user_token(access_token))

    async def aclose(self) -> None:
        """Close the pool's connections (every client bound to it stops working)."""
        if self._postgrest is not None:
            session = getattr(self._postgrest, "session", None)
            if session is not None:
                await session.aclose()

    async def __aenter__(self) -> Self:
        await self.postgrest()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class TokensClient(SyncExecutor, BaseTokensCalls):
    """A user's view of their organization's AI tokens (blocking I/O).

    In an application, get one per request from the app's :class:`Tokens` with
    ``tokens.for_user(access_token)``. For a script, build it directly (it then owns
    a pool of its own, closed by ``close()`` or ``with``)::

        with TokensClient(url, anon_key, access_token=user_jwt) as client:
            client.deduct_tokens("generate_goal", request_id="req-42")

    Raises ConfigurationError when given a service-role key, Unauthenticated when the
    access token is missing or is an API key.
    """

    def __init__(
        self,
        url: str,
        public_key: str,
        *,
        access_token: str,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        headers = require_user_token(access_token)
        owner = Tokens(url, public_key, timeout=timeout, retries=retries)
        self._postgrest, self._headers, self._retries = owner._postgrest, headers, retries
        self._owner = owner

    @classmethod
    def _bound(cls, postgrest: Any, headers: Mapping[str, str], retries: int) -> TokensClient:
        client = cls.__new__(cls)
        client._postgrest, client._headers, client._retries = postgrest, headers, retries
        return client

    @classmethod
    def from_supabase(cls, supabase: Client, *, retries: int = DEFAULT_RETRIES) -> TokensClient:
        """Wrap an existing supabase-py client (its session is used as it is)."""
        require_public_key(supabase.supabase_key)
        return cls._bound(supabase, {}, retries)

    @classmethod
    def from_env(cls, access_token: str, *, dotenv_path: str | None = None) -> TokensClient:
        """URL and public key from ``SUPABASE_URL`` / ``SUPABASE_ANON_KEY`` (or ``.env``)."""
        settings = Settings.from_env(dotenv_path)
        return cls(settings.url, settings.require_public_key(), access_token=access_token)

    def has_enough_tokens(self, feature: str, *, organization_id: UUID | str | None = None) -> bool:
        """Whether the organization can afford ``feature`` now.

        Raises UnknownFeature, FeatureNotInPlan, NotAMember, Unauthenticated.
        """
        return self._execute(self._has_enough_tokens(feature, organization_id))

    def deduct_tokens(
        self,
        feature: str,
        *,
        quantity: int = 1,
        request_id: str | None = None,
        organization_id: UUID | str | None = None,
    ) -> Deduction:
        """Spend the feature's cost times ``quantity`` atomically; a repeated ``request_id``
        spends once (with retries on, a request_id is made up when none is given).

        Raises InvalidRequest (invalid_amount) before any I/O unless ``quantity`` is an
        int in 1..1,000,000; then InsufficientTokens, FeatureNotInPlan, UnknownFeature,
        NotAMember, IdempotencyConflict, RateLimited, Unauthenticated.
        """
        return self._execute(self._deduct_tokens(feature, quantity, request_id, organization_id))

    def stats(self, *, organization_id: UUID | str | None = None) -> TokenStats:
        """Totals and per-type balances of the caller's organization. Raises NotAMember."""
        return self._execute(self._stats(organization_id))

    def balances(self, *, organization_id: UUID | str | None = None) -> list[TokenBalance]:
        """The ``ai_tokens`` rows the caller may see (their organization's)."""
        return self._execute(self._balances(organization_id))

    def usage(
        self, *, since: datetime | timedelta | None = None, limit: int = 100
    ) -> list[UsageEntry]:
        """Usage-log rows the caller may see, newest first (admins: the whole org).

        Raises InvalidRequest for a naive ``since`` or a limit outside 1..1000.
        """
        return self._execute(self._usage(since, limit, None))

    def features(self) -> list[Feature]:
        """The feature catalog: each feature's token type and cost."""
        return self._execute(self._features())

    def reserve_tokens(
        self,
        feature: str,
        *,
        estimate: int,
        ttl_seconds: int = 300,
        request_id: str | None = None,
        organization_id: UUID | str | None = None,
    ) -> Reservation:
        """Hold ``estimate`` tokens for a call whose cost is known afterwards.

        Raises InvalidRequest (invalid_amount) before any I/O for an estimate outside
        1..1e9 or a ttl outside 1..3600; then the same errors as :meth:`deduct_tokens`.
        """
        return self._execute(
            self._reserve_tokens(feature, estimate, ttl_seconds, request_id, organization_id)
        )

    def commit_reservation(self, reservation_id: UUID | str, *, actual: int) -> ReservationCommit:
        """Charge ``actual`` and give the rest of the hold back.

        An overrun (``actual`` above the estimate) is charged from what is available and
        the rest becomes debt on the next period (``debt_added``). Raises InvalidRequest
        (invalid_amount) before any I/O unless ``actual`` is an int in 0..1e9; then
        ReservationNotActive, NotFound, PermissionDenied.
        """
        return self._execute(self._commit_reservation(reservation_id, actual))

    def release_reservation(self, reservation_id: UUID | str) -> ReservationRelease:
        """Give the whole hold back. Raises ReservationNotActive, NotFound."""
        return self._execute(self._release_reservation(reservation_id))

    @contextmanager
    def spend(
        self,
        feature: str,
        *,
        estimate: int,
        ttl_seconds: int = 300,
        request_id: str | None = None,
        organization_id: UUID | str | None = None,
    ) -> Iterator[Hold]:
        """Reserve, run the block, then commit ``hold.actual`` (or release).

        ::

            with client.spend("generate_quest", estimate=10) as hold:
                quest = call_the_model()
                hold.actual = quest.tokens_used     # or hold.release()

        An exception in the block releases the hold and propagates. Ending the block
        with neither ``hold.actual`` nor ``hold.release()`` releases the hold and raises
        InvalidRequest (``actual_not_set``). A replayed ``request_id``
        (``hold.replayed``) is left to the request that opened the hold: answer from the
        result you stored, without calling the model again. Raises what :meth:`reserve_tokens` and
        :meth:`commit_reservation` raise.
        """
        hold = Hold(
            self.reserve_tokens(
                feature,
                estimate=estimate,
                ttl_seconds=ttl_seconds,
                request_id=request_id,
                organization_id=organization_id,
            )
        )
        if hold.replayed:  # the first request with this request_id settles the hold
            yield hold
            return
        try:
            yield hold
        except BaseException as error:
            try:
                hold.released = self.release_reservation(hold.reservation_id)
            except Exception as release_error:
                note_release_failure(error, release_error)
            raise
        actual = hold.to_commit()
        if actual is None:
            hold.released = self.release_reservation(hold.reservation_id)
            hold.check_settled()
            return
        hold.result = self.commit_reservation(hold.reservation_id, actual=actual)

    def refund_deduction(self, usage_id: UUID | str, *, reason: str | None = None) -> Refund:
        """Give back a deduction's tokens once (owners/admins). Raises AlreadyRefunded."""
        return self._execute(self._refund_deduction(usage_id, reason))

    def alerts(self, *, since: datetime | timedelta | None = None, limit: int = 100) -> list[Alert]:
        """The organization's alerts, newest first (owners/admins; members see none)."""
        return self._execute(self._alerts(None, since, limit))


class AsyncTokensClient(AsyncExecutor, BaseTokensCalls):
    """The async twin of :class:`TokensClient`; same methods, awaitable.

    In an application: ``tokens.for_user(access_token)`` on the app's
    :class:`AsyncTokens`. Built directly, it owns a pool of its own (``aclose()``).
    """

    def __init__(
        self,
        url: str,
        public_key: str,
        *,
        access_token: str,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        self._headers = require_user_token(access_token)
        self._pool = AsyncTokens(url, public_key, timeout=timeout, retries=retries)
        self._owns_pool, self._retries = True, retries

    @classmethod
    def _bound(cls, pool: AsyncTokens, headers: Mapping[str, str]) -> AsyncTokensClient:
        client = cls.__new__(cls)
        client._pool, client._headers, client._retries = pool, headers, pool.retries
        return client

    @classmethod
    def from_supabase(
        cls, supabase: AsyncClient, *, retries: int = DEFAULT_RETRIES
    ) -> AsyncTokensClient:
        """Wrap an existing async supabase-py client (its session is used as it is)."""
        require_public_key(supabase.supabase_key)
        return cls._bound(AsyncTokens._wrapping(supabase, retries), {})

    @classmethod
    def from_env(cls, access_token: str, *, dotenv_path: str | None = None) -> AsyncTokensClient:
        """URL and public key from ``SUPABASE_URL`` / ``SUPABASE_ANON_KEY`` (or ``.env``)."""
        settings = Settings.from_env(dotenv_path)
        return cls(settings.url, settings.require_public_key(), access_token=access_token)

    async def has_enough_tokens(
        self, feature: str, *, organization_id: UUID | str | None = None
    ) -> bool:
        """See :meth:`TokensClient.has_enough_tokens`."""
        return await self._execute(self._has_enough_tokens(feature, organization_id))

    async def deduct_tokens(
        self,
        feature: str,
        *,
        quantity: int = 1,
        request_id: str | None = None,
        organization_id: UUID | str | None = None,
    ) -> Deduction:
        """See :meth:`TokensClient.deduct_tokens`."""
        return await self._execute(
            self._deduct_tokens(feature, quantity, request_id, organization_id)
        )

    async def stats(self, *, organization_id: UUID | str | None = None) -> TokenStats:
        """See :meth:`TokensClient.stats`."""
        return await self._execute(self._stats(organization_id))

    async def balances(self, *, organization_id: UUID | str | None = None) -> list[TokenBalance]:
        """See :meth:`TokensClient.balances`."""
        return await self._execute(self._balances(organization_id))

    async def usage(
        self, *, since: datetime | timedelta | None = None, limit: int = 100
    ) -> list[UsageEntry]:
        """See :meth:`TokensClient.usage`."""
        return await self._execute(self._usage(since, limit, None))

    async def features(self) -> list[Feature]:
        """See :meth:`TokensClient.features`."""
        return await self._execute(self._features())

    async def reserve_tokens(
        self,
        feature: str,
        *,
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
        self, reservation_id: UUID | str, *, actual: int
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
        *,
        estimate: int,
        ttl_seconds: int = 300,
        request_id: str | None = None,
        organization_id: UUID | str | None = None,
    ) -> AsyncIterator[Hold]:
        """See :meth:`TokensClient.spend`; use with ``async with``."""
        hold = Hold(
            await self.reserve_tokens(
                feature,
                estimate=estimate,
                ttl_seconds=ttl_seconds,
                request_id=request_id,
                organization_id=organization_id,
            )
        )
        if hold.replayed:  # the first request with this request_id settles the hold
            yield hold
            return
        try:
            yield hold
        except BaseException as error:
            try:
                hold.released = await self.release_reservation(hold.reservation_id)
            except Exception as release_error:
                note_release_failure(error, release_error)
            raise
        actual = hold.to_commit()
        if actual is None:
            hold.released = await self.release_reservation(hold.reservation_id)
            hold.check_settled()
            return
        hold.result = await self.commit_reservation(hold.reservation_id, actual=actual)

    async def refund_deduction(self, usage_id: UUID | str, *, reason: str | None = None) -> Refund:
        """See :meth:`TokensClient.refund_deduction`."""
        return await self._execute(self._refund_deduction(usage_id, reason))

    async def alerts(
        self, *, since: datetime | timedelta | None = None, limit: int = 100
    ) -> list[Alert]:
        """See :meth:`TokensClient.alerts`."""
        return await self._execute(self._alerts(None, since, limit))
