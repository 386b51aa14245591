"""TokensAdmin and AsyncTokensAdmin: the service-role side (never in a browser)."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from tokens_client._base import (
    DEFAULT_RETRIES,
    ORGANIZATION_PAGE,
    BaseAdminCalls,
    require_secret_key,
)
from tokens_client._client import (
    DEFAULT_TIMEOUT,
    AsyncExecutor,
    AsyncTokens,
    SyncExecutor,
    sync_postgrest,
)
from tokens_client._config import Settings
from tokens_client._models import (
    Alert,
    EnforcementMode,
    EnforcementModeChange,
    Grant,
    LedgerViolation,
    Member,
    Organization,
    PlanChange,
    RateLimit,
    RefreshRun,
    Refund,
    TokenBalance,
    TokenStats,
    UsageEntry,
    UsageGrouping,
    UsageReportRow,
)


class TokensAdmin(SyncExecutor, BaseAdminCalls):
    """Service-role administration: initialize tokens, reports, organizations.

    Raises :class:`~tokens_client.ConfigurationError` when given an anon key or a
    user's JWT instead of the service-role key.
    """

    def __init__(
        self,
        url: str,
        service_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        require_secret_key(service_key)
        self._postgrest = sync_postgrest(url, service_key, timeout)
        self._retries = retries

    def close(self) -> None:
        """Close this client's HTTP connections."""
        self._postgrest.session.close()

    @classmethod
    def from_env(cls, *, dotenv_path: str | None = None) -> TokensAdmin:
        """URL and key from ``SUPABASE_URL`` / ``SUPABASE_SERVICE_ROLE_KEY`` (or ``.env``)."""
        settings = Settings.from_env(dotenv_path)
        return cls(settings.url, settings.require_secret_key())

    def initialize_tokens(
        self, organization_id: UUID | str, *, plan: str | None = None
    ) -> list[TokenBalance]:
        """Create or reset the organization's balances to its plan (moving it to ``plan``).

        Raises OrganizationNotFound, InvalidRequest.
        """
        return self._execute(self._initialize_tokens(organization_id, plan))

    def stats(self, organization_id: UUID | str) -> TokenStats:
        """The organization's token stats. Raises OrganizationNotFound."""
        return self._execute(self._stats(organization_id))

    def balances(self, *, organization_id: UUID | str | None = None) -> list[TokenBalance]:
        """``ai_tokens`` rows of one organization, or of all."""
        return self._execute(self._balances(organization_id))

    def usage(
        self,
        organization_id: UUID | str,
        *,
        since: datetime | timedelta | None = None,
        limit: int = 100,
    ) -> list[UsageEntry]:
        """The organization's usage-log rows, newest first."""
        return self._execute(self._usage(since, limit, organization_id))

    def usage_report(
        self,
        organization_id: UUID | str,
        *,
        by: UsageGrouping = "feature",
        since: datetime | timedelta | None = None,
    ) -> list[UsageReportRow]:
        """Uses and tokens grouped by feature, user (with full_name) or day."""
        return self._execute(self._usage_report(organization_id, by, since))

    def create_organization(self, name: str, *, plan: str | None = None) -> Organization:
        """Insert an organization (call :meth:`initialize_tokens` to give it tokens).

        ``plan`` None: the table's default plan. Raises InvalidRequest for an unknown plan.
        """
        return self._execute(self._create_organization(name, plan))

    def organizations(self, *, name: str | None = None) -> list[Organization]:
        """Every organization by name; with ``name``, those so named (exact, any case),
        found by the server."""
        found: list[Organization] = []
        while True:  # page by page: PostgREST answers at most db-max-rows at a time
            page = self._execute(self._organizations(name, offset=len(found)))
            found += page
            if name is not None or len(page) < ORGANIZATION_PAGE:  # a name: a handful of rows
                return found

    def add_member(
        self,
        organization_id: UUID | str,
        *,
        user_id: UUID | str,
        role: str = "member",
        full_name: str | None = None,
    ) -> Member:
        """Put an existing auth user in the organization with ``role`` (upsert)."""
        return self._execute(self._add_member(organization_id, user_id, role, full_name))

    def organization(self, organization_id: UUID | str) -> Organization:
        """One organization. Raises OrganizationNotFound."""
        return self._execute(self._organization(organization_id))

    def grant_tokens(
        self,
        organization_id: UUID | str,
        *,
        token_type: str,
        amount: int,
        expires_at: datetime | None = None,
        reason: str | None = None,
        external_id: str | None = None,
    ) -> Grant:
        """Add purchased tokens (kept over refreshes, spent after the allowance).

        Idempotent on ``external_id``. Raises InvalidRequest (invalid_amount),
        NotFound (unknown_token_type), OrganizationNotFound, IdempotencyConflict.
        """
        return self._execute(
            self._grant_tokens(organization_id, token_type, amount, expires_at, reason, external_id)
        )

    def set_organization_plan(
        self, organization_id: UUID | str, *, plan: str, event_id: str | None = None
    ) -> PlanChange:
        """Move to ``plan``: upgrades add the difference now, downgrades cap the allowance.

        Idempotent on ``event_id`` (a Stripe event id). Raises InvalidRequest,
        OrganizationNotFound, IdempotencyConflict.
        """
        return self._execute(self._set_organization_plan(organization_id, plan, event_id))

    def set_enforcement_mode(
        self, mode: EnforcementMode | str, *, organization_id: UUID | str | None = None
    ) -> EnforcementModeChange:
        """enforce / monitor / off for one organization, or the global default.

        ``"inherit"`` removes an organization's own mode.
        """
        return self._execute(self._set_enforcement_mode(mode, organization_id))

    def refresh_due_tokens(self) -> RefreshRun:
        """Settle every refresh, expired grant and expired hold that is due."""
        return self._execute(self._refresh_due_tokens())

    def verify_token_ledger(
        self, *, organization_id: UUID | str | None = None
    ) -> list[LedgerViolation]:
        """Every broken bookkeeping invariant (empty when balance = sum of the journal)."""
        return self._execute(self._verify_token_ledger(organization_id))

    def set_rate_limit(
        self,
        *,
        max_requests: int,
        window_seconds: int = 60,
        organization_id: UUID | str | None = None,
        plan: str | None = None,
        feature: str | None = None,
    ) -> RateLimit:
        """Create or change the per-user limit of one scope (None: any)."""
        return self._execute(
            self._set_rate_limit(max_requests, window_seconds, organization_id, plan, feature)
        )

    def refund_deduction(self, usage_id: UUID | str, *, reason: str | None = None) -> Refund:
        """Give back a deduction's tokens once. Raises AlreadyRefunded, NotFound."""
        return self._execute(self._refund_deduction(usage_id, reason))

    def alerts(
        self,
        organization_id: UUID | str,
        *,
        since: datetime | timedelta | None = None,
        limit: int = 100,
    ) -> list[Alert]:
        """The organization's alerts, newest first."""
        return self._execute(self._alerts(organization_id, since, limit))


class AsyncTokensAdmin(AsyncExecutor, BaseAdminCalls):
    """The async twin of :class:`TokensAdmin`."""

    def __init__(
        self,
        url: str,
        service_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        require_secret_key(service_key)
        self._pool = AsyncTokens.__new__(AsyncTokens)  # its public-key check is not ours
        self._pool._open(url, service_key, timeout, retries)
        self._owns_pool, self._retries = True, retries

    @classmethod
    def from_env(cls, *, dotenv_path: str | None = None) -> AsyncTokensAdmin:
        """URL and key from ``SUPABASE_URL`` / ``SUPABASE_SERVICE_ROLE_KEY`` (or ``.env``)."""
        settings = Settings.from_env(dotenv_path)
        return cls(settings.url, settings.require_secret_key())

    async def initialize_tokens(
        self, organization_id: UUID | str, *, plan: str | None = None
    ) -> list[TokenBalance]:
        """See :meth:`TokensAdmin.initialize_tokens`."""
        return await self._execute(self._initialize_tokens(organization_id, plan))

    async def stats(self, organization_id: UUID | str) -> TokenStats:
        """See :meth:`TokensAdmin.stats`."""
        return await self._execute(self._stats(organization_id))

    async def balances(self, *, organization_id: UUID | str | None = None) -> list[TokenBalance]:
        """See :meth:`TokensAdmin.balances`."""
        return await self._execute(self._balances(organization_id))

    async def usage(
        self,
        organization_id: UUID | str,
        *,
        since: datetime | timedelta | None = None,
        limit: int = 100,
    ) -> list[UsageEntry]:
        """See :meth:`TokensAdmin.usage`."""
        return await self._execute(self._usage(since, limit, organization_id))

    async def usage_report(
        self,
        organization_id: UUID | str,
        *,
        by: UsageGrouping = "feature",
        since: datetime | timedelta | None = None,
    ) -> list[UsageReportRow]:
        """See :meth:`TokensAdmin.usage_report`."""
        return await self._execute(self._usage_report(organization_id, by, since))

    async def create_organization(self, name: str, *, plan: str | None = None) -> Organization:
        """See :meth:`TokensAdmin.create_organization`."""
        return await self._execute(self._create_organization(name, plan))

    async def organizations(self, *, name: str | None = None) -> list[Organization]:
        """See :meth:`TokensAdmin.organizations`."""
        found: list[Organization] = []
        while True:
            page = await self._execute(self._organizations(name, offset=len(found)))
            found += page
            if name is not None or len(page) < ORGANIZATION_PAGE:  # a name: a handful of rows
                return found

    async def add_member(
        self,
        organization_id: UUID | str,
        *,
        user_id: UUID | str,
        role: str = "member",
        full_name: str | None = None,
    ) -> Member:
        """See :meth:`TokensAdmin.add_member`."""
        return await self._execute(self._add_member(organization_id, user_id, role, full_name))

    async def organization(self, organization_id: UUID | str) -> Organization:
        """See :meth:`TokensAdmin.organization`."""
        return await self._execute(self._organization(organization_id))

    async def grant_tokens(
        self,
        organization_id: UUID | str,
        *,
        token_type: str,
        amount: int,
        expires_at: datetime | None = None,
        reason: str | None = None,
        external_id: str | None = None,
    ) -> Grant:
        """See :meth:`TokensAdmin.grant_tokens`."""
        return await self._execute(
            self._grant_tokens(organization_id, token_type, amount, expires_at, reason, external_id)
        )

    async def set_organization_plan(
        self, organization_id: UUID | str, *, plan: str, event_id: str | None = None
    ) -> PlanChange:
        """See :meth:`TokensAdmin.set_organization_plan`."""
        return await self._execute(self._set_organization_plan(organization_id, plan, event_id))

    async def set_enforcement_mode(
        self, mode: EnforcementMode | str, *, organization_id: UUID | str | None = None
    ) -> EnforcementModeChange:
        """See :meth:`TokensAdmin.set_enforcement_mode`."""
        return await self._execute(self._set_enforcement_mode(mode, organization_id))

    async def refresh_due_tokens(self) -> RefreshRun:
        """See :meth:`TokensAdmin.refresh_due_tokens`."""
        return await self._execute(self._refresh_due_tokens())

    async def verify_token_ledger(
        self, *, organization_id: UUID | str | None = None
    ) -> list[LedgerViolation]:
        """See :meth:`TokensAdmin.verify_token_ledger`."""
        return await self._execute(self._verify_token_ledger(organization_id))

    async def set_rate_limit(
        self,
        *,
        max_requests: int,
        window_seconds: int = 60,
        organization_id: UUID | str | None = None,
        plan: str | None = None,
        feature: str | None = None,
    ) -> RateLimit:
        """See :meth:`TokensAdmin.set_rate_limit`."""
        return await self._execute(
            self._set_rate_limit(max_requests, window_seconds, organization_id, plan, feature)
        )

    async def refund_deduction(self, usage_id: UUID | str, *, reason: str | None = None) -> Refund:
        """See :meth:`TokensAdmin.refund_deduction`."""
        return await self._execute(self._refund_deduction(usage_id, reason))

    async def alerts(
        self,
        organization_id: UUID | str,
        *,
        since: datetime | timedelta | None = None,
        limit: int = 100,
    ) -> list[Alert]:
        """See :meth:`TokensAdmin.alerts`."""
        return await self._execute(self._alerts(organization_id, since, limit))
