"""TokensAdmin and AsyncTokensAdmin: the service-role side (never in a browser)."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

from tokens_client._base import BaseAdminCalls, require_secret_key
from tokens_client._client import (
    DEFAULT_TIMEOUT,
    AsyncExecutor,
    SyncExecutor,
    async_supabase,
    sync_supabase,
)
from tokens_client._config import Settings
from tokens_client._models import (
    Member,
    Organization,
    Plan,
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

    def __init__(self, url: str, service_key: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        require_secret_key(service_key)
        self._supabase = sync_supabase(url, service_key, None, timeout)

    @classmethod
    def from_env(cls, *, dotenv_path: str | None = None) -> TokensAdmin:
        """URL and key from ``SUPABASE_URL`` / ``SUPABASE_SERVICE_ROLE_KEY`` (or ``.env``)."""
        settings = Settings.from_env(dotenv_path)
        return cls(settings.url, settings.require_secret_key())

    def initialize_tokens(
        self, organization_id: UUID | str, plan: Plan | None = None
    ) -> list[TokenBalance]:
        """Create or reset the organization's balances to its plan (moving it to ``plan``).

        Raises OrganizationNotFound, InvalidRequest.
        """
        return self._execute(self._initialize_tokens(organization_id, plan))

    def stats(self, organization_id: UUID | str) -> TokenStats:
        """The organization's token stats. Raises OrganizationNotFound."""
        return self._execute(self._stats(organization_id))

    def balances(self, organization_id: UUID | str | None = None) -> list[TokenBalance]:
        """``ai_tokens`` rows of one organization, or of all."""
        return self._execute(self._balances(organization_id))

    def usage(
        self,
        organization_id: UUID | str,
        since: datetime | timedelta | None = None,
        limit: int = 100,
    ) -> list[UsageEntry]:
        """The organization's usage-log rows, newest first."""
        return self._execute(self._usage(since, limit, organization_id))

    def usage_report(
        self,
        organization_id: UUID | str,
        by: UsageGrouping = "feature",
        since: datetime | timedelta | None = None,
    ) -> list[UsageReportRow]:
        """Uses and tokens grouped by feature, user (with full_name) or day."""
        return self._execute(self._usage_report(organization_id, by, since))

    def create_organization(self, name: str, plan: Plan = "starter") -> Organization:
        """Insert an organization (call :meth:`initialize_tokens` to give it tokens)."""
        return self._execute(self._create_organization(name, plan))

    def organizations(self) -> list[Organization]:
        """Every organization, by name."""
        return self._execute(self._organizations())

    def add_member(
        self,
        organization_id: UUID | str,
        user_id: UUID | str,
        role: str = "member",
        full_name: str | None = None,
    ) -> Member:
        """Put an existing auth user in the organization with ``role`` (upsert)."""
        return self._execute(self._add_member(organization_id, user_id, role, full_name))


class AsyncTokensAdmin(AsyncExecutor, BaseAdminCalls):
    """The async twin of :class:`TokensAdmin`."""

    def __init__(self, url: str, service_key: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        require_secret_key(service_key)
        self._supabase = async_supabase(url, service_key, None, timeout)

    @classmethod
    def from_env(cls, *, dotenv_path: str | None = None) -> AsyncTokensAdmin:
        """URL and key from ``SUPABASE_URL`` / ``SUPABASE_SERVICE_ROLE_KEY`` (or ``.env``)."""
        settings = Settings.from_env(dotenv_path)
        return cls(settings.url, settings.require_secret_key())

    async def initialize_tokens(
        self, organization_id: UUID | str, plan: Plan | None = None
    ) -> list[TokenBalance]:
        """See :meth:`TokensAdmin.initialize_tokens`."""
        return await self._execute(self._initialize_tokens(organization_id, plan))

    async def stats(self, organization_id: UUID | str) -> TokenStats:
        """See :meth:`TokensAdmin.stats`."""
        return await self._execute(self._stats(organization_id))

    async def balances(self, organization_id: UUID | str | None = None) -> list[TokenBalance]:
        """See :meth:`TokensAdmin.balances`."""
        return await self._execute(self._balances(organization_id))

    async def usage(
        self,
        organization_id: UUID | str,
        since: datetime | timedelta | None = None,
        limit: int = 100,
    ) -> list[UsageEntry]:
        """See :meth:`TokensAdmin.usage`."""
        return await self._execute(self._usage(since, limit, organization_id))

    async def usage_report(
        self,
        organization_id: UUID | str,
        by: UsageGrouping = "feature",
        since: datetime | timedelta | None = None,
    ) -> list[UsageReportRow]:
        """See :meth:`TokensAdmin.usage_report`."""
        return await self._execute(self._usage_report(organization_id, by, since))

    async def create_organization(self, name: str, plan: Plan = "starter") -> Organization:
        """See :meth:`TokensAdmin.create_organization`."""
        return await self._execute(self._create_organization(name, plan))

    async def organizations(self) -> list[Organization]:
        """See :meth:`TokensAdmin.organizations`."""
        return await self._execute(self._organizations())

    async def add_member(
        self,
        organization_id: UUID | str,
        user_id: UUID | str,
        role: str = "member",
        full_name: str | None = None,
    ) -> Member:
        """See :meth:`TokensAdmin.add_member`."""
        return await self._execute(self._add_member(organization_id, user_id, role, full_name))
