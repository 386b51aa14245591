"""Pydantic v2 models mirroring the SQL return shapes (amounts are ints, times aware)."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict

UsageGrouping = Literal["feature", "user", "day"]
EnforcementMode = Literal["enforce", "monitor", "off"]


class _Model(BaseModel):
    # Frozen: results are facts. Unknown keys ignored so newer SQL stays compatible.
    model_config = ConfigDict(frozen=True, extra="ignore")


class Deduction(_Model):
    """What ``deduct_tokens`` returns (``replayed`` when a request_id was seen before)."""

    success: bool
    remaining_balance: int
    tokens_deducted: int
    token_type: str
    feature: str
    organization_id: UUID
    usage_id: UUID | None = None
    request_id: str | None = None
    replayed: bool = False
    enforcement: EnforcementMode = "enforce"
    would_have_refused: Refusal | None = None
    message: str


class TokenTypeStats(_Model):
    """One token type in ``get_token_stats``; ``low`` when under 20 % remains."""

    token_type: str
    balance: int
    allocated: int
    used: int
    percent_remaining: float
    low: bool
    purchased_balance: int = 0
    reserved: int = 0
    available: int | None = None
    #: overruns carried to the next period
    debt: int = 0
    period_started_at: AwareDatetime | None = None
    refresh_date: AwareDatetime | None = None


class TokenStats(_Model):
    """``get_token_stats``: the guide's stats endpoint."""

    organization_id: UUID
    plan: str
    total_balance: int
    total_allocated: int
    total_used: int
    total_purchased: int = 0
    total_reserved: int = 0
    total_available: int | None = None
    enforcement: EnforcementMode = "enforce"
    by_type: list[TokenTypeStats]

    def for_type(self, token_type: str) -> TokenTypeStats:
        """The entry for ``token_type``; KeyError when the organization has none."""
        for entry in self.by_type:
            if entry.token_type == token_type:
                return entry
        raise KeyError(token_type)


class TokenBalance(_Model):
    """A row of ``ai_tokens``."""

    id: UUID
    organization_id: UUID
    token_type: str
    balance: int
    total_allocated: int
    purchased_balance: int = 0
    reserved: int = 0
    period_started_at: AwareDatetime | None = None
    refresh_date: AwareDatetime | None = None
    created_at: AwareDatetime
    updated_at: AwareDatetime


class UsageEntry(_Model):
    """A row of ``ai_token_usage_log`` (one per deduction)."""

    id: UUID
    organization_id: UUID
    user_id: UUID | None
    token_type: str
    feature_used: str
    tokens_deducted: int
    balance_after: int
    request_id: str | None = None
    reservation_id: UUID | None = None
    refunded_at: AwareDatetime | None = None
    created_at: AwareDatetime


class Feature(_Model):
    """A row of the feature catalog ``ai_features``."""

    feature: str
    token_type: str
    cost: int
    description: str = ""


class UsageReportRow(_Model):
    """One group of ``get_usage_report`` (by feature, user or day)."""

    key: str
    label: str
    uses: int
    tokens: int
    day: date | None = None


class Organization(_Model):
    """A row of the host app's ``organizations`` (its other columns are ignored)."""

    id: UUID
    name: str
    plan: str
    created_at: AwareDatetime | None = None
    updated_at: AwareDatetime | None = None


class Member(_Model):
    """A row of ``user_profiles``: a user's organization and role."""

    id: UUID
    organization_id: UUID | None
    full_name: str | None = None
    role: str = "member"


class Refusal(_Model):
    """What enforce mode would have answered (``would_have_refused`` in monitor mode)."""

    http_status: int
    reason: str
    message: str
    details: dict[str, Any] = {}


class Reservation(_Model):
    """A hold from ``reserve_tokens`` (and the state returned by commit/release)."""

    reservation_id: UUID
    organization_id: UUID
    feature: str
    token_type: str
    user_id: UUID | None = None
    estimate: int
    held: int
    status: Literal["active", "committed", "released", "expired"]
    actual: int | None = None
    tokens_deducted: int | None = None
    usage_id: UUID | None = None
    request_id: str | None = None
    enforcement: str = "enforce"
    expires_at: AwareDatetime
    settled_at: AwareDatetime | None = None
    created_at: AwareDatetime
    replayed: bool = False
    available: int | None = None
    would_have_refused: Refusal | None = None


class ReservationCommit(Reservation):
    """``commit_reservation``: the settled hold plus what was charged."""

    remaining_balance: int
    uncharged: int = 0
    #: what the balance could not cover, carried as debt to the next period (enforce mode)
    debt_added: int = 0
    #: how far ``actual`` went above the estimate
    overrun: int = 0
    message: str


class ReservationRelease(Reservation):
    """``release_reservation``: the released hold and what it gave back."""

    released: int


class Refund(_Model):
    """``refund_deduction``."""

    usage_id: UUID
    organization_id: UUID
    token_type: str
    feature: str
    tokens_refunded: int
    restored_to_purchased: int = 0
    remaining_balance: int
    refunded_at: AwareDatetime
    reason: str | None = None


class Grant(_Model):
    """``grant_tokens``: purchased tokens (spent after the period allowance)."""

    grant_id: UUID
    organization_id: UUID
    token_type: str
    amount: int
    remaining: int
    expires_at: AwareDatetime | None = None
    reason: str | None = None
    external_id: str | None = None
    balance: int
    purchased_balance: int
    replayed: bool = False


class PlanChangeEntry(_Model):
    """One token type in a plan change."""

    token_type: str
    previous_allocation: int
    allocation: int
    previous_balance: int
    balance: int


class PlanChange(_Model):
    """``set_organization_plan``."""

    organization_id: UUID
    plan: str
    previous_plan: str | None = None
    event_id: str | None = None
    replayed: bool = False
    changes: list[PlanChangeEntry] = []


class EnforcementModeChange(_Model):
    """``set_enforcement_mode``."""

    organization_id: UUID | None
    mode: EnforcementMode
    previous_mode: EnforcementMode
    overridden: bool


class RefreshRun(_Model):
    """``refresh_due_tokens``: rows settled and rows that failed (recorded)."""

    settled: int
    failed: int


class LedgerViolation(_Model):
    """A row of ``verify_token_ledger``: a broken bookkeeping invariant."""

    organization_id: UUID | None
    token_type: str | None
    violation: str
    expected: int | None = None
    actual: int | None = None
    details: dict[str, Any] | None = None


class Alert(_Model):
    """A row of ``ai_token_alerts`` (threshold crossings and refused spends)."""

    id: int
    organization_id: UUID
    token_type: str
    kind: Literal["usage_80_percent", "balance_below_20_percent", "balance_exhausted", "refused"]
    reason: str | None = None
    period: AwareDatetime
    details: dict[str, Any] = {}
    created_at: AwareDatetime


class RateLimit(_Model):
    """A row of ``ai_rate_limits``: at most max_requests spends per user per window."""

    id: int
    organization_id: UUID | None = None
    plan: str | None = None
    feature: str | None = None
    max_requests: int
    window_seconds: int
