"""``tokens demo``: the guide's walkthrough, lived by the seeded users of the local stack.

Acme (pro) has Alice (owner) and Bob (member); Tinkerers (starter) has Carol. The demo
resets Acme's tokens first, so every run tells the same story: a check, two deductions,
a retried request that spends nothing, a reservation for a call whose cost is known
afterwards and its refund, the dashboard, and two refusals.

Acme gets a per-user rate limit of its own (``DEMO_RATE_LIMIT`` spends a minute instead
of the default 5) so that running the demo again at once is never rate limited.

Users act through :class:`~tokens_client.TokensClient` with JWTs minted from the stack's
secret, exactly as a backend would act for a signed-in user; only the reset uses the
service role.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal
from uuid import UUID

from rich.console import RenderableType

from tokens_client._admin import TokensAdmin
from tokens_client._browser import browser_session, storage_key
from tokens_client._client import Tokens, TokensClient
from tokens_client._dashboard import jsonable, stats_dashboard
from tokens_client._errors import FeatureNotInPlan, NotAMember
from tokens_client._models import Deduction, RateLimit, UsageEntry
from tokens_client.stack import Stack, StackStatus, mint_jwt

ACME = UUID("00000000-0000-4000-b000-00000000ac3e")
TINKERERS = UUID("00000000-0000-4000-b000-0000000071e4")
COMPETITOR = "Globex"  # created on the first run: Acme's competitor, also on pro
DEMO_RATE_LIMIT = 1000  # spends per user per minute in Acme; each run makes 2 per user
QUEST_ESTIMATE = 10  # what Alice holds for her long quest
QUEST_ACTUAL = 6  # what the model turns out to use
DASHBOARD_SESSION_SECONDS = 12 * 3600  # how long the dashboard page's demo sign-ins last
ORGANIZATION_NAMES = {ACME: "Acme", TINKERERS: "Tinkerers"}


@dataclass(frozen=True)
class DemoUser:
    """A seeded user (``supabase/seed.sql``)."""

    id: UUID
    name: str
    full_name: str
    email: str
    role: str
    organization_id: UUID

    def token(self, jwt_secret: str, expires_in: int = 600) -> str:
        """The JWT Supabase Auth would issue this user."""
        claims = {
            "sub": str(self.id),
            "role": "authenticated",
            "aud": "authenticated",
            "email": self.email,
        }
        return mint_jwt(jwt_secret, claims, expires_in=expires_in)

    def browser_session(self, jwt_secret: str, expires_in: int) -> dict[str, Any]:
        """This user signed in, as supabase-js keeps a session in the browser's storage."""
        return browser_session(
            self.token(jwt_secret, expires_in),
            user_id=str(self.id),
            email=self.email,
            expires_in=expires_in,
            full_name=self.full_name,
        )


ALICE = DemoUser(
    UUID("00000000-0000-4000-a000-00000000a11c"),
    "Alice",
    "Alice Owner",
    "alice@acme.test",
    "owner",
    ACME,
)
BOB = DemoUser(
    UUID("00000000-0000-4000-a000-000000000b0b"),
    "Bob",
    "Bob Member",
    "bob@acme.test",
    "member",
    ACME,
)
CAROL = DemoUser(
    UUID("00000000-0000-4000-a000-0000000ca201"),
    "Carol",
    "Carol Starter",
    "carol@tinkerers.test",
    "owner",
    TINKERERS,
)
USERS = (ALICE, BOB, CAROL)


def write_dashboard_sessions(stack: Stack, status: StackStatus) -> str:
    """Sign the demo's users in on the local stack's dashboard page; returns its URL.

    Writes ``dev-session.json`` into the stack's own (git-ignored) folder, which only the
    local gateway serves, at ``/dashboard/dev-session.json``: development only, never in
    ``web/dist`` or the wheel. ``<url>?as=alice`` then shows Acme as Alice sees it.
    """
    sessions = {
        "supabase_url": status.api_url,
        "anon_key": status.anon_key,
        "storage_key": storage_key(status.api_url),
        "users": [
            {
                "name": user.name,
                "full_name": user.full_name,
                "role": user.role,
                "organization_id": str(user.organization_id),
                "organization": ORGANIZATION_NAMES[user.organization_id],
                "session": user.browser_session(status.jwt_secret, DASHBOARD_SESSION_SECONDS),
            }
            for user in USERS
        ],
    }
    stack.dashboard_dir.mkdir(parents=True, exist_ok=True)
    path = stack.dashboard_dir / "dev-session.json"
    path.write_text(json.dumps(sessions, indent=2))
    path.chmod(0o600)
    return f"{status.api_url}/dashboard/"


@dataclass
class DemoStep:
    """One line of the story: ``✓`` when it went through, ``✗`` when it was refused.

    ``expected`` is False when the stack behaved otherwise than the story says (the
    demo then exits non-zero). ``view`` is an extra renderable (the dashboard).
    """

    section: str
    outcome: Literal["ok", "refused"]
    text: str
    expected: bool = True
    data: Any = None
    view: RenderableType | None = field(default=None, repr=False)

    def as_json(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "outcome": self.outcome,
            "text": self.text,
            "expected": self.expected,
            "data": jsonable(self.data),
        }


def _spent(deduction: Deduction) -> str:
    return f"{deduction.message} · {deduction.remaining_balance} {deduction.token_type} tokens left"


def _names(entries: list[UsageEntry]) -> str:
    """``generate_goal 3 (Alice), …`` in the order they happened."""
    by_id = {user.id: user.name for user in USERS}

    def who(entry: UsageEntry) -> str:
        name = by_id.get(entry.user_id, "someone") if entry.user_id else "service role"
        return f"{name}, refunded" if entry.refunded_at else name

    return ", ".join(
        f"{entry.feature_used} {entry.tokens_deducted} ({who(entry)})"
        for entry in sorted(entries, key=lambda entry: entry.created_at)
    )


class Demo:
    """The story, step by step, against one running stack."""

    def __init__(self, status: StackStatus) -> None:
        self.status = status

    def _client(self, tokens: Tokens, user: DemoUser) -> TokensClient:
        return tokens.for_user(user.token(self.status.jwt_secret))

    def _reset(self, admin: TokensAdmin) -> tuple[int, int, UUID, RateLimit]:
        """Seeded memberships and plans back in place, Acme's own rate limit and mode.

        Returns Acme's total and number of token types, Globex's id and Acme's limit.
        """
        for user in USERS:
            admin.add_member(
                user.organization_id, user_id=user.id, role=user.role, full_name=user.full_name
            )
        limit = admin.set_rate_limit(
            max_requests=DEMO_RATE_LIMIT, window_seconds=60, organization_id=ACME
        )
        admin.set_enforcement_mode("inherit", organization_id=ACME)
        balances = admin.initialize_tokens(ACME, plan="pro")
        admin.initialize_tokens(TINKERERS, plan="starter")
        competitor = next(
            (o for o in admin.organizations(name=COMPETITOR) if o.name == COMPETITOR), None
        )
        if competitor is None:
            competitor = admin.create_organization(COMPETITOR, plan="pro")
        admin.initialize_tokens(competitor.id, plan="pro")
        total = sum(balance.balance for balance in balances)
        return total, len(balances), competitor.id, limit

    def steps(self) -> Iterator[DemoStep]:
        """Run the story; each step is yielded as soon as it happened."""
        admin = TokensAdmin(self.status.api_url, self.status.service_role_key)
        with closing(admin):
            section = "Acme is on the pro plan"
            total, types, competitor, limit = self._reset(admin)
            reset = f"Tokens reset to the pro allocation: {total} tokens across {types} token types"
            yield DemoStep(section, "ok", reset)
            yield DemoStep(
                section,
                "ok",
                f"Per-user rate limit of Acme: {limit.max_requests} spends per "
                f"{limit.window_seconds} s (its own, so the demo can run again at once)",
                data=limit,
            )
            yield DemoStep(
                section,
                "ok",
                "Alice (owner) and Bob (member) sign in; each request carries their own JWT",
            )
            started = datetime.now(timezone.utc)
            with Tokens(self.status.api_url, self.status.anon_key) as tokens:
                alice, bob, carol = (self._client(tokens, user) for user in USERS)
                yield from self._spend(alice, bob)
                yield from self._reserve(alice)
                yield from self._look(alice, bob, started)
                yield from self._refusals(admin, carol, bob, competitor)

    def _spend(self, alice: TokensClient, bob: TokensClient) -> Iterator[DemoStep]:
        section = "Alice generates a goal"
        enough = alice.has_enough_tokens("generate_goal")
        yield DemoStep(
            section,
            "ok" if enough else "refused",
            f"Enough tokens for generate_goal? {'yes' if enough else 'no'}",
            expected=enough,
            data={"has_enough_tokens": enough},
        )
        goal = alice.deduct_tokens("generate_goal")
        yield DemoStep(
            section, "ok", _spent(goal), expected=goal.remaining_balance == 17, data=goal
        )

        section = "Bob generates a quest, and his request is retried"
        request_id = f"demo-{uuid.uuid4()}"  # one per run, so reruns are not replays
        quest = bob.deduct_tokens("generate_quest", request_id=request_id)
        yield DemoStep(section, "ok", _spent(quest), expected=not quest.replayed, data=quest)
        retry = bob.deduct_tokens("generate_quest", request_id=request_id)
        yield DemoStep(
            section,
            "ok",
            f"Retried with the same request id: first answer replayed, nothing spent · "
            f"still {retry.remaining_balance} left",
            expected=retry.replayed and retry.remaining_balance == quest.remaining_balance,
            data=retry,
        )

    def _reserve(self, alice: TokensClient) -> Iterator[DemoStep]:
        section = "Alice writes a long quest: its cost is known only afterwards"
        with alice.spend("generate_quest", estimate=QUEST_ESTIMATE) as hold:
            held = hold.reservation
            yield DemoStep(
                section,
                "ok",
                f"Held {held.held} {held.token_type} tokens while the model writes · "
                f"{held.available} still available to others",
                expected=held.held == QUEST_ESTIMATE and held.status == "active",
                data=held,
            )
            hold.actual = QUEST_ACTUAL  # what the model reported using
        commit = hold.result
        if commit is None:  # spend() commits on a clean exit; never None here
            yield DemoStep(section, "refused", "The hold was not committed", expected=False)
            return
        yield DemoStep(
            section,
            "ok",
            f"The model used {commit.actual}: {commit.tokens_deducted} charged, "
            f"{held.held - (commit.tokens_deducted or 0)} given back · "
            f"{commit.remaining_balance} {commit.token_type} tokens left",
            expected=commit.status == "committed" and commit.tokens_deducted == QUEST_ACTUAL,
            data=commit,
        )

        section = "The quest came back empty, so Alice (owner) refunds it"
        if commit.usage_id is None:
            yield DemoStep(section, "refused", "Nothing was charged to refund", expected=False)
            return
        refund = alice.refund_deduction(commit.usage_id, reason="the model returned an empty quest")
        yield DemoStep(
            section,
            "ok",
            f"Refunded {refund.tokens_refunded} {refund.token_type} tokens · "
            f"{refund.remaining_balance} left",
            expected=refund.tokens_refunded == QUEST_ACTUAL,
            data=refund,
        )

    def _look(self, alice: TokensClient, bob: TokensClient, since: datetime) -> Iterator[DemoStep]:
        section = "Acme's dashboard, as Alice sees it"
        stats = alice.stats()
        yield DemoStep(
            section,
            "ok",
            f"{stats.total_balance} of {stats.total_allocated} tokens left, "
            f"{stats.total_used} used",
            data=stats,
            view=stats_dashboard(stats, "Acme"),
        )
        everyone = alice.usage(since=since)
        yield DemoStep(
            section,
            "ok",
            f"Alice (owner) sees everyone's usage: {_names(everyone)}",
            expected=len(everyone) == 3,
            data=everyone,
        )
        own = bob.usage(since=since)
        yield DemoStep(
            section,
            "ok",
            f"Bob (member) sees only his own: {_names(own)}",
            expected=len(own) == 1,
            data=own,
        )

    def _refusals(
        self, admin: TokensAdmin, carol: TokensClient, bob: TokensClient, competitor: UUID
    ) -> Iterator[DemoStep]:
        section = "Tinkerers is on the starter plan"
        try:
            spent = carol.deduct_tokens("generate_goal")
        except FeatureNotInPlan as refused:
            yield DemoStep(
                section,
                "refused",
                f"Carol tries generate_goal → {refused.message} (HTTP {refused.status})",
                data={"reason": refused.reason, **refused.facts},
            )
        else:
            yield DemoStep(section, "ok", _spent(spent), expected=False, data=spent)

        section = f"Bob tries to spend {COMPETITOR}'s tokens"
        try:
            stolen = bob.deduct_tokens("generate_goal", organization_id=competitor)
        except NotAMember as refused:
            yield DemoStep(
                section,
                "refused",
                f"Bob sends {COMPETITOR}'s organization id → {refused.message} "
                f"(HTTP {refused.status})",
                data={"reason": refused.reason, **refused.facts},
            )
        else:
            yield DemoStep(section, "ok", _spent(stolen), expected=False, data=stolen)
        goals = admin.stats(competitor).for_type("goal_generation")
        yield DemoStep(
            section,
            "ok",
            f"{COMPETITOR}'s goal_generation balance is untouched: {goals.balance} / "
            f"{goals.allocated}",
            expected=goals.balance == goals.allocated,
            data=goals,
        )
