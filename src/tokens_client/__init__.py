"""tokens-client: Supabase-native AI token metering.

``Tokens`` / ``AsyncTokens`` are made once per application and hold the HTTP pool;
``tokens.for_user(access_token)`` gives a ``TokensClient`` / ``AsyncTokensClient``
acting for one signed-in user (their JWT, RLS) at no cost. ``TokensAdmin`` /
``AsyncTokensAdmin`` hold the service role. Every argument after a call's subject is
keyword-only. Errors: see :mod:`tokens_client._errors` for the tree.
"""

from __future__ import annotations

from tokens_client._admin import AsyncTokensAdmin, TokensAdmin
from tokens_client._base import Hold
from tokens_client._client import AsyncTokens, AsyncTokensClient, Tokens, TokensClient
from tokens_client._config import Settings
from tokens_client._errors import (
    AlreadyRefunded,
    BalanceCeiling,
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
    RefundLimitReached,
    ReservationNotActive,
    ServiceUnavailable,
    TokensError,
    Unauthenticated,
    UnknownFeature,
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
    Refusal,
    Reservation,
    ReservationCommit,
    ReservationRelease,
    TokenBalance,
    TokenStats,
    TokenTypeStats,
    UsageEntry,
    UsageReportRow,
)
from tokens_client._webhooks import (
    DeliveryResult,
    WebhookDeliverer,
    WebhookEndpoint,
    delete_webhook_endpoint,
    new_webhook_secret,
    set_webhook_endpoint,
    webhook_endpoints,
)

__version__ = "0.1.0"

__all__ = [
    "Alert",
    "AlreadyRefunded",
    "AsyncTokens",
    "AsyncTokensAdmin",
    "AsyncTokensClient",
    "BalanceCeiling",
    "ConfigurationError",
    "Conflict",
    "Deduction",
    "DeliveryResult",
    "EnforcementModeChange",
    "Feature",
    "FeatureNotInPlan",
    "Grant",
    "Hold",
    "IdempotencyConflict",
    "InsufficientTokens",
    "InvalidRequest",
    "LedgerViolation",
    "Member",
    "NotAMember",
    "NotFound",
    "Organization",
    "OrganizationNotFound",
    "PermissionDenied",
    "PlanChange",
    "RateLimit",
    "RateLimited",
    "RefreshRun",
    "Refund",
    "RefundLimitReached",
    "Refusal",
    "Reservation",
    "ReservationCommit",
    "ReservationNotActive",
    "ReservationRelease",
    "ServiceUnavailable",
    "Settings",
    "TokenBalance",
    "TokenStats",
    "TokenTypeStats",
    "Tokens",
    "TokensAdmin",
    "TokensClient",
    "TokensError",
    "Unauthenticated",
    "UnknownFeature",
    "UsageEntry",
    "UsageReportRow",
    "WebhookDeliverer",
    "WebhookEndpoint",
    "delete_webhook_endpoint",
    "new_webhook_secret",
    "set_webhook_endpoint",
    "webhook_endpoints",
]
