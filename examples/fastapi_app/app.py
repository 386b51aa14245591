"""A FastAPI app that meters an AI endpoint per user with tokens-client.

Every request acts as its signed-in user: their Supabase access token (``Authorization:
Bearer <jwt>``) goes into a :class:`~tokens_client.TokensClient` made for that request,
so row-level security in the database decides which organization's tokens they may spend.

``POST /quests/generate`` follows the guide: check (``has_enough_tokens``), deduct
(``deduct_tokens``, idempotent with the request's ``Idempotency-Key``), then call the AI.

``POST /quests/plan`` is for a call whose cost is known only afterwards: it holds an
estimate (``client.spend``), lets the model write, then commits what the model used; if
the model fails, the hold is released and nothing is spent.

Refusals are JSON ``{"error": …, "reason": …}``: 401 without a valid session, 402 "You're
out of AI tokens", 403 "Not available on Starter plan" or not a member, 429 with
``Retry-After`` (the per-user rate limit), 502 when the model failed.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Annotated
from uuid import UUID

from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from tokens_client import (
    ConfigurationError,
    RateLimited,
    ServiceUnavailable,
    Settings,
    TokensClient,
    TokensError,
    Unauthenticated,
)

FEATURE = "generate_quest"  # 2 goal_generation tokens in the catalog (ai_features)
OUT_OF_TOKENS = "You're out of AI tokens"
TOKENS_PER_STEP = 2  # what a step of a planned quest costs (goal_generation tokens)
MAX_STEPS = 10

# ConfigurationError reasons that mean "the caller sent no usable session token" (401),
# as opposed to a server misconfiguration (500).
BAD_ACCESS_TOKEN = {"missing_access_token", "api_key_as_access_token"}

app = FastAPI(title="Quest generator (tokens-client example)")
bearer = HTTPBearer(auto_error=False, description="The user's Supabase access token")


@lru_cache
def get_settings() -> Settings:
    """``SUPABASE_URL`` and ``SUPABASE_ANON_KEY`` from the environment or ``.env``."""
    return Settings.from_env()


def tokens_client(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    settings: Annotated[Settings, Depends(get_settings)],
) -> Iterator[TokensClient]:
    """A TokensClient acting as the request's user, closed when the request is done."""
    if credentials is None:
        raise Unauthenticated("Sign in to use AI features")
    try:
        client = TokensClient(settings.url, settings.require_public_key(), credentials.credentials)
    except ConfigurationError as error:
        if error.reason in BAD_ACCESS_TOKEN:
            raise Unauthenticated(error.message, reason=error.reason) from error
        raise
    try:
        yield client
    finally:
        client.close()


UserTokens = Annotated[TokensClient, Depends(tokens_client)]


class QuestRequest(BaseModel):
    goal: str = Field(min_length=1, max_length=200, examples=["Save 5,000 for a trip"])
    # A member may omit it (their organization is used); when given it is checked
    # against their membership by the database, never trusted.
    organization_id: UUID | None = None


class Quest(BaseModel):
    title: str
    steps: list[str]


class QuestResponse(BaseModel):
    quest: Quest
    tokens_used: int
    remaining_balance: int
    token_type: str
    message: str
    replayed: bool


def generate_quest_with_ai(goal: str) -> Quest:
    """Stand-in for the model call the tokens pay for (instant and deterministic)."""
    return Quest(
        title=f"Quest: {goal}",
        steps=[
            f"Write down why “{goal}” matters to you",
            "Pick one small step you can take this week",
            "Check your progress every Sunday",
        ],
    )


class ModelError(Exception):
    """The AI model failed (timeout, outage, unusable answer): nothing should be charged."""


class QuestWriter:
    """Stand-in for a model whose cost is known only once it answered (tokens used).

    It writes at most ``max_steps`` steps; each costs :data:`TOKENS_PER_STEP`. Swap in
    your model client by overriding the :func:`quest_writer` dependency.
    """

    STEPS = (
        "Write down why “{goal}” matters to you",
        "Pick one small step you can take this week",
        "Check your progress every Sunday",
    )

    def write(self, goal: str, max_steps: int) -> tuple[Quest, int]:
        """The quest and the tokens the model used for it."""
        steps = [step.format(goal=goal) for step in self.STEPS[:max_steps]]
        return Quest(title=f"Quest: {goal}", steps=steps), len(steps) * TOKENS_PER_STEP


def quest_writer() -> QuestWriter:
    """The model behind ``POST /quests/plan``."""
    return QuestWriter()


def refusal(
    status: int, error: str, reason: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": error, "reason": reason}, status_code=status, headers=headers)


@app.exception_handler(TokensError)
def tokens_refusal(request: Request, error: TokensError) -> JSONResponse:
    """Every refusal of the token API as ``{"error", "reason"}`` with its HTTP status."""
    if isinstance(error, RateLimited):
        return refusal(429, error.message, error.reason, {"Retry-After": str(error.retry_after)})
    if isinstance(error, Unauthenticated):
        return refusal(401, error.message, error.reason, {"WWW-Authenticate": "Bearer"})
    if 400 <= error.status < 500:
        return refusal(error.status, error.message, error.reason)
    # Outages (503) and misconfiguration (500): say what failed, not how.
    status = 503 if isinstance(error, ServiceUnavailable) else 500
    return refusal(status, "AI tokens are unavailable right now", error.reason)


@app.post("/quests/generate", response_model=QuestResponse)
def generate_quest(
    body: QuestRequest,
    tokens: UserTokens,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> QuestResponse | JSONResponse:
    """Check, deduct, then generate. A retried Idempotency-Key spends nothing more."""
    # The guide's check before any work. A retry skips it: deduct_tokens replays the
    # first answer even if the balance has run low since.
    if idempotency_key is None and not tokens.has_enough_tokens(FEATURE, body.organization_id):
        return refusal(402, OUT_OF_TOKENS, "insufficient_tokens")
    deduction = tokens.deduct_tokens(
        FEATURE, request_id=idempotency_key, organization_id=body.organization_id
    )
    return QuestResponse(
        quest=generate_quest_with_ai(body.goal),
        tokens_used=deduction.tokens_deducted,
        remaining_balance=deduction.remaining_balance,
        token_type=deduction.token_type,
        message=deduction.message,
        replayed=deduction.replayed,
    )


class PlanRequest(BaseModel):
    goal: str = Field(min_length=1, max_length=200, examples=["Run a marathon"])
    max_steps: int = Field(default=5, ge=1, le=MAX_STEPS)
    organization_id: UUID | None = None


class PlanResponse(BaseModel):
    quest: Quest
    tokens_held: int
    tokens_used: int
    remaining_balance: int
    token_type: str
    message: str


@app.post("/quests/plan", response_model=PlanResponse)
def plan_quest(
    body: PlanRequest,
    tokens: UserTokens,
    writer: Annotated[QuestWriter, Depends(quest_writer)],
) -> PlanResponse | JSONResponse:
    """Hold the most the quest can cost, let the model write, then pay what it used.

    ``spend()`` reserves the estimate (refused with 402/403/429 like a deduction), commits
    ``hold.actual`` when the block ends, and releases the hold if the block raises.
    """
    estimate = body.max_steps * TOKENS_PER_STEP
    try:
        with tokens.spend(FEATURE, estimate, organization_id=body.organization_id) as hold:
            quest, used = writer.write(body.goal, body.max_steps)
            hold.actual = used
    except ModelError:
        # The hold was released: the user pays nothing for a failed call.
        return refusal(502, "The AI model failed; no tokens were spent", "model_failed")
    commit = hold.result
    assert commit is not None  # spend() commits on a clean exit
    return PlanResponse(
        quest=quest,
        tokens_held=hold.reservation.held,
        tokens_used=commit.tokens_deducted or 0,
        remaining_balance=commit.remaining_balance,
        token_type=commit.token_type,
        message=commit.message,
    )
