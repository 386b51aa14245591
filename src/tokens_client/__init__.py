"""tokens-client: Supabase-native AI token metering.

``TokensClient`` / ``AsyncTokensClient`` act for one signed-in user (their JWT, RLS);
``TokensAdmin`` / ``AsyncTokensAdmin`` hold the service role. Errors: see
:mod:`tokens_client._errors` for the tree.
"""

from __future__ import annotations

from tokens_client._admin import AsyncTokensAdmin, TokensAdmin
from tokens_client._client import AsyncTokensClient, TokensClient
from tokens_client._config import Settings
from tokens_client._errors import (
    ConfigurationError,
    Conflict,
    FeatureNotInPlan,
    IdempotencyConflict,
    InsufficientTokens,
    InvalidRequest,
    NotAMember,
    NotFound,
    OrganizationNotFound,
    PermissionDenied,
    RateLimited,
    ServiceUnavailable,
    TokensError,
    Unauthenticated,
    UnknownFeature,
)
from tokens_client._models import (
    Deduction,
    Feature,
    Member,
    Organization,
    TokenBalance,
    TokenStats,
    TokenTypeStats,
    UsageEntry,
    UsageReportRow,
)

__version__ = "0.1.0"

__all__ = [
    "AsyncTokensAdmin",
    "AsyncTokensClient",
    "ConfigurationError",
    "Conflict",
    "Deduction",
    "Feature",
    "FeatureNotInPlan",
    "IdempotencyConflict",
    "InsufficientTokens",
    "InvalidRequest",
    "Member",
    "NotAMember",
    "NotFound",
    "Organization",
    "OrganizationNotFound",
    "PermissionDenied",
    "RateLimited",
    "ServiceUnavailable",
    "Settings",
    "TokenBalance",
    "TokenStats",
    "TokenTypeStats",
    "TokensAdmin",
    "TokensClient",
    "TokensError",
    "Unauthenticated",
    "UnknownFeature",
    "UsageEntry",
    "UsageReportRow",
]
