"""Pytest fixtures for end-to-end tests against a real stack (ours or ``supabase start``).

Enable with ``pytest_plugins = ["tokens_client.testing"]`` in a ``conftest.py``. The
stack is found from ``SUPABASE_URL``, ``SUPABASE_ANON_KEY``, ``SUPABASE_SERVICE_ROLE_KEY``,
``SUPABASE_JWT_SECRET`` and ``SUPABASE_DB_URL`` when set, else from ``tokens stack``.

Users are real rows of ``auth.users`` created over SQL, and sign in with HS256 JWTs
minted with the stack's secret, exactly what Supabase Auth would issue.

Needs the ``testing`` extra: ``pip install 'tokens-client[testing]'`` (pytest, psycopg).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tokens_client._admin import TokensAdmin
from tokens_client._client import AsyncTokensClient, Tokens, TokensClient
from tokens_client.stack import Stack, mint_jwt

_APPS: dict[tuple[str, str], Tokens] = {}


def app_tokens(env: StackEnv) -> Tokens:
    """One app-scoped :class:`Tokens` per stack for the whole test session."""
    key = (env.url, env.anon_key)
    if key not in _APPS:
        _APPS[key] = Tokens(env.url, env.anon_key)
    return _APPS[key]


@dataclass(frozen=True)
class StackEnv:
    """How to reach the stack under test."""

    url: str
    anon_key: str
    service_role_key: str
    jwt_secret: str
    db_url: str

    @classmethod
    def discover(cls) -> StackEnv:
        env = os.environ
        if env.get("SUPABASE_URL") and env.get("SUPABASE_DB_URL"):
            return cls(
                url=env["SUPABASE_URL"].rstrip("/"),
                anon_key=env["SUPABASE_ANON_KEY"],
                service_role_key=env["SUPABASE_SERVICE_ROLE_KEY"],
                jwt_secret=env["SUPABASE_JWT_SECRET"],
                db_url=env["SUPABASE_DB_URL"],
            )
        status = Stack().status()
        if not status.running:
            raise RuntimeError("the local stack is not running: run `tokens stack up`")
        return cls(
            status.api_url,
            status.anon_key,
            status.service_role_key,
            status.jwt_secret,
            status.db_url,
        )


@dataclass
class TestUser:
    """A signed-in user of an organization, with clients acting as them."""

    __test__ = False

    id: uuid.UUID
    email: str
    organization_id: uuid.UUID | None
    role: str
    env: StackEnv
    full_name: str = ""
    _token: str | None = field(default=None, repr=False)

    def token(self, expires_in: int = 3600, **extra: Any) -> str:
        """A JWT for this user as Supabase Auth would sign it."""
        claims = {
            "sub": str(self.id),
            "role": "authenticated",
            "aud": "authenticated",
            "email": self.email,
            **extra,
        }
        return mint_jwt(self.env.jwt_secret, claims, expires_in)

    @property
    def access_token(self) -> str:
        if self._token is None:
            self._token = self.token()
        return self._token

    def client(self) -> TokensClient:
        """This user's client over the session's shared pool (closing it is optional)."""
        return app_tokens(self.env).for_user(self.access_token)

    def async_client(self) -> AsyncTokensClient:
        """An async client with a pool of its own: use it with ``async with``."""
        return AsyncTokensClient(self.env.url, self.env.anon_key, access_token=self.access_token)


class Database:
    """A SQL connection as ``postgres`` for fixtures and time travel (never for the API).

    ``postgres`` is not a superuser, as on a hosted project: it owns our tables and may
    write auth.users, but not create extensions or change other roles' objects."""

    def __init__(self, db_url: str) -> None:
        import psycopg

        self._connection = psycopg.connect(db_url, autocommit=True)

    def execute(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[Any]:
        with self._connection.cursor() as cursor:
            # bytes: psycopg's typing accepts only literal strings as queries; these are
            # the tests' own fixed statements, with values always passed as parameters
            cursor.execute(sql.encode(), params)
            return cursor.fetchall() if cursor.description else []

    def value(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> Any:
        rows = self.execute(sql, params)
        return rows[0][0] if rows else None

    def close(self) -> None:
        self._connection.close()


@pytest.fixture(scope="session")
def stack_env() -> StackEnv:
    """The stack under test."""
    return StackEnv.discover()


@pytest.fixture(scope="session")
def db(stack_env: StackEnv) -> Iterator[Database]:
    """A connection as ``postgres`` for creating auth users and moving time."""
    database = Database(stack_env.db_url)
    yield database
    database.close()


@pytest.fixture(scope="session")
def admin(stack_env: StackEnv) -> Iterator[TokensAdmin]:
    """The service-role admin client."""
    with TokensAdmin(stack_env.url, stack_env.service_role_key) as client:
        yield client


OrgFactory = Callable[..., uuid.UUID]
RELAXED_RATE_LIMIT = 1_000_000
UserFactory = Callable[..., TestUser]


@pytest.fixture
def make_org(admin: TokensAdmin) -> OrgFactory:
    """Create an organization on ``plan`` with initialized tokens; returns its id.

    Its per-user rate limit is relaxed unless ``rate_limited=True``.
    """

    def factory(
        plan: str = "pro", name: str | None = None, *, rate_limited: bool = False
    ) -> uuid.UUID:
        org = admin.create_organization(name or f"Org {uuid.uuid4().hex[:8]}", plan=plan)
        admin.initialize_tokens(org.id)
        if not rate_limited:
            # Tests that are not about the per-user rate limit spend freely; the ones
            # that are pass rate_limited=True and get the plan's real limit.
            admin.set_rate_limit(
                max_requests=RELAXED_RATE_LIMIT, window_seconds=60, organization_id=org.id
            )
        return org.id

    return factory


def create_user(
    db: Database,
    env: StackEnv,
    organization_id: uuid.UUID | None = None,
    role: str = "member",
    full_name: str | None = None,
) -> TestUser:
    """Insert an auth user (and its profile when ``organization_id`` is given)."""
    user_id = uuid.uuid4()
    email = f"user-{user_id.hex[:12]}@example.test"
    name = full_name or f"User {user_id.hex[:6]}"
    db.execute(
        "insert into auth.users (id, aud, role, email) values (%s, 'authenticated', "
        "'authenticated', %s)",
        (user_id, email),
    )
    if organization_id is not None:
        db.execute(
            # An upsert: the host app's handle_new_user trigger may have made the profile.
            "insert into public.user_profiles (id, organization_id, full_name, role) "
            "values (%s, %s, %s, %s) on conflict (id) do update set "
            "organization_id = excluded.organization_id, full_name = excluded.full_name, "
            "role = excluded.role",
            (user_id, organization_id, name, role),
        )
    return TestUser(user_id, email, organization_id, role, env, name)


@pytest.fixture
def make_user(db: Database, stack_env: StackEnv) -> UserFactory:
    """Create an auth user, optionally a member of ``organization_id`` with ``role``."""

    def factory(
        organization_id: uuid.UUID | None = None,
        role: str = "member",
        full_name: str | None = None,
    ) -> TestUser:
        return create_user(db, stack_env, organization_id, role, full_name)

    return factory


@pytest.fixture
def pro_org(make_org: OrgFactory) -> uuid.UUID:
    """A fresh organization on the pro plan."""
    return make_org("pro")


@pytest.fixture
def starter_org(make_org: OrgFactory) -> uuid.UUID:
    """A fresh organization on the starter plan."""
    return make_org("starter")


@pytest.fixture
def member(make_user: UserFactory, pro_org: uuid.UUID) -> TestUser:
    """A member (not admin) of ``pro_org``."""
    return make_user(pro_org, "member")


@pytest.fixture
def org_admin(make_user: UserFactory, pro_org: uuid.UUID) -> TestUser:
    """An admin of ``pro_org``."""
    return make_user(pro_org, "admin")


@pytest.fixture
def outsider(make_user: UserFactory, make_org: OrgFactory) -> TestUser:
    """A member of another pro organization."""
    return make_user(make_org("pro"), "member")
