"""A FastAPI app that meters an AI endpoint per user with tokens-client (async).

One :class:`~tokens_client.AsyncTokens` is made in the app's lifespan: it holds the HTTP
pool for the whole process. Each request binds it to its signed-in user
(``tokens.for_user(access_token)``: no I/O), so row-level security in the database decides
which organization's tokens they may spend.

``POST /quests/plan`` is the production shape for a model whose cost is known afterwards:
**reserve** the most it may cost, call the model, **commit** the tokens the provider
counted, and **release** the hold if the model failed. A retried ``Idempotency-Key`` is
answered from the stored result without calling the model again.

``POST /quests/generate`` is the guide's fixed-cost flow: check, deduct (idempotent with
the ``Idempotency-Key``), then call the AI; a replay is answered from the stored result too.

Refusals are JSON ``{"error": …, "reason": …}``: 401 without a valid session, 402 "You're
out of AI tokens", 403 "Not available on Starter plan" or not a member, 409 while the same
key is still being answered, 429 with ``Retry-After``, 502 when the model failed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Annotated
from uuid import UUID

from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from tokens_client import (
    AsyncTokens,
    AsyncTokensClient,
    RateLimited,
    ServiceUnavailable,
    Settings,
    TokensError,
    Unauthenticated,
)

FEATURE = "generate_quest"  # 2 goal_generation tokens in the catalog (ai_features)
OUT_OF_TOKENS = "You're out of AI tokens"
TOKENS_PER_STEP = 2  # what a step of a planned quest costs (goal_generation tokens)
MAX_STEPS = 10


@lru_cache
def get_settings() -> Settings:
    """``SUPABASE_URL`` and ``SUPABASE_ANON_KEY`` from the environment or ``.env``."""
    return Settings.from_env()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """One pool for the process, opened off the event loop, closed at shutdown."""
    settings = get_settings()
    async with AsyncTokens(settings.url, settings.require_public_key()) as tokens:
        app.state.tokens = tokens
        app.state.results = ResultStore()
        yield


app = FastAPI(title="Quest generator (tokens-client example)", lifespan=lifespan)
bearer = HTTPBearer(auto_error=False, description="The user's Supabase access token")


def user_tokens(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> AsyncTokensClient:
    """The app's pool bound to this request's user (no I/O; nothing to close)."""
    if credentials is None:
        raise Unauthenticated("Sign in to use AI features")
    tokens: AsyncTokens = request.app.state.tokens
    return tokens.for_user(credentials.credentials)


UserTokens = Annotated[AsyncTokensClient, Depends(user_tokens)]


class Quest(BaseModel):
    title: str
    steps: list[str]


class ResultStore:
    """Answers already given, by the id the server gave the spend (usage or hold id).

    The server decides whose replay it is (an idempotency key belongs to its caller), so
    the id it returns on a replay is the key to this store. In-process here; use your
    database or cache in production.
    """

    def __init__(self) -> None:
        self._answers: dict[UUID, BaseModel] = {}

    def get(self, spend_id: UUID | None) -> BaseModel | None:
        return self._answers.get(spend_id) if spend_id is not None else None

    def put(self, spend_id: UUID | None, answer: BaseModel) -> None:
        if spend_id is not None:
            self._answers[spend_id] = answer


def results(request: Request) -> ResultStore:
    store: ResultStore = request.app.state.results
    return store


Results = Annotated[ResultStore, Depends(results)]


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

    calls = 0  # how many times the model was asked (a replay must not ask it)

    async def write(self, goal: str, max_steps: int) -> tuple[Quest, int]:
        """The quest and the tokens the model used for it (the provider's count)."""
        QuestWriter.calls += 1
        steps = [step.format(goal=goal) for step in self.STEPS[:max_steps]]
        return Quest(title=f"Quest: {goal}", steps=steps), len(steps) * TOKENS_PER_STEP


def quest_writer() -> QuestWriter:
    """The model behind the endpoints."""
    return QuestWriter()


Writer = Annotated[QuestWriter, Depends(quest_writer)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]


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


class QuestRequest(BaseModel):
    goal: str = Field(min_length=1, max_length=200, examples=["Save 5,000 for a trip"])
    # A member may omit it (their organization is used); when given it is checked
    # against their membership by the database, never trusted.
    organization_id: UUID | None = None


class QuestResponse(BaseModel):
    quest: Quest
    tokens_used: int
    remaining_balance: int
    token_type: str
    message: str
    replayed: bool = False


@app.post("/quests/generate", response_model=QuestResponse)
async def generate_quest(
    body: QuestRequest,
    tokens: UserTokens,
    writer: Writer,
    store: Results,
    idempotency_key: IdempotencyKey = None,
) -> QuestResponse | JSONResponse:
    """Check, deduct, then generate. A retried Idempotency-Key spends nothing more."""
    # The guide's check before any work. A retry skips it: deduct_tokens replays the
    # first answer even if the balance has run low since.
    if idempotency_key is None and not await tokens.has_enough_tokens(
        FEATURE, organization_id=body.organization_id
    ):
        return refusal(402, OUT_OF_TOKENS, "insufficient_tokens")
    deduction = await tokens.deduct_tokens(
        FEATURE, request_id=idempotency_key, organization_id=body.organization_id
    )
    stored = store.get(deduction.usage_id) if deduction.replayed else None
    if isinstance(stored, QuestResponse):
        return stored.model_copy(update={"replayed": True})
    quest, _ = await writer.write(body.goal, len(QuestWriter.STEPS))
    answer = QuestResponse(
        quest=quest,
        tokens_used=deduction.tokens_deducted,
        remaining_balance=deduction.remaining_balance,
        token_type=deduction.token_type,
        message=deduction.message,
        replayed=deduction.replayed,
    )
    store.put(deduction.usage_id, answer)
    return answer


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
    replayed: bool = False


@app.post("/quests/plan", response_model=PlanResponse)
async def plan_quest(
    body: PlanRequest,
    tokens: UserTokens,
    writer: Writer,
    store: Results,
    idempotency_key: IdempotencyKey = None,
) -> PlanResponse | JSONResponse:
    """Reserve the most the quest can cost, call the model, commit what it counted.

    ``spend()`` reserves the estimate (refused with 402/403/429 like a deduction),
    commits ``hold.actual`` when the block ends, and releases the hold if the block
    raises. A replayed Idempotency-Key gets the stored answer; the model is not called.
    """
    estimate = body.max_steps * TOKENS_PER_STEP
    try:
        async with tokens.spend(
            FEATURE,
            estimate=estimate,
            request_id=idempotency_key,
            organization_id=body.organization_id,
        ) as hold:
            if hold.replayed:  # the first request settles the hold; never the model again
                stored = store.get(hold.reservation_id)
                if isinstance(stored, PlanResponse):
                    return stored.model_copy(update={"replayed": True})
                return refusal(409, "This request is still being answered", "in_progress")
            quest, used = await writer.write(body.goal, body.max_steps)
            hold.actual = used  # the provider's count, not the estimate
    except ModelError:
        # The hold was released: the user pays nothing for a failed call.
        return refusal(502, "The AI model failed; no tokens were spent", "model_failed")
    commit = hold.result
    assert commit is not None  # spend() commits on a clean exit with an actual
    answer = PlanResponse(
        quest=quest,
        tokens_held=hold.reservation.held,
        tokens_used=commit.tokens_deducted or 0,
        remaining_balance=commit.remaining_balance,
        token_type=commit.token_type,
        message=commit.message,
    )
    store.put(hold.reservation_id, answer)
    return answer
