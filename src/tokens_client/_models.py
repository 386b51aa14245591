"""Pydantic v2 models mirroring the SQL return shapes (amounts are ints, times aware)."""

from __future__ import annotations

from datetime import date
from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict

Plan = Literal["starter", "pro", "enterprise"]
UsageGrouping = Literal["feature", "user", "day"]


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
    message: str


class TokenTypeStats(_Model):
    """One token type in ``get_token_stats``; ``low`` when under 20 % remains."""

    token_type: str
    balance: int
    allocated: int
    used: int
    percent_remaining: float
    low: bool
    refresh_date: AwareDatetime | None = None


class TokenStats(_Model):
    """``get_token_stats``: the guide's stats endpoint."""

    organization_id: UUID
    plan: Plan
    total_balance: int
    total_allocated: int
    total_used: int
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
    """A row of ``organizations``."""

    id: UUID
    name: str
    plan: Plan
    created_at: AwareDatetime
    updated_at: AwareDatetime


class Member(_Model):
    """A row of ``user_profiles``: a user's organization and role."""

    id: UUID
    organization_id: UUID | None
    full_name: str | None = None
    role: Literal["owner", "admin", "member"]
