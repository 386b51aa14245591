"""Unit tier (no stack): bad input is refused before any I/O; errors map in one place.

The clients here point at a closed port: a call that got as far as the network would
raise ServiceUnavailable, so InvalidRequest proves the refusal came first.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from postgrest.exceptions import APIError

from tokens_client import (
    AsyncTokens,
    ConfigurationError,
    InvalidRequest,
    ServiceUnavailable,
    Tokens,
    TokensClient,
    Unauthenticated,
)
from tokens_client._base import Hold
from tokens_client._errors import error_from_api
from tokens_client.stack import mint_jwt

NOWHERE = "http://127.0.0.1:9"
SECRET = "unit-tier-secret-that-signs-nothing-real"
ANON = mint_jwt(SECRET, {"role": "anon"}, 3600)
USER = mint_jwt(SECRET, {"sub": "8f0f4c1e-0000-4000-8000-000000000001", "role": "authenticated"})
BAD_WHOLE_NUMBERS: list[Any] = [0, -1, True, False, 1.5, 2.0, "3", None, 10**12]


@pytest.fixture(scope="module")
def client() -> Any:
    with Tokens(NOWHERE, ANON, retries=0) as tokens:
        yield tokens.for_user(USER)


@pytest.mark.parametrize("quantity", BAD_WHOLE_NUMBERS)
def test_quantity_is_a_whole_number_in_range(client: TokensClient, quantity: Any) -> None:
    with pytest.raises(InvalidRequest) as error:
        client.deduct_tokens("ask_assistant", quantity=quantity)
    assert error.value.reason == "invalid_amount"
    assert (error.value.facts["field"], error.value.facts["max"]) == ("quantity", 1_000_000)


def test_quantity_bounds_are_inclusive(client: TokensClient) -> None:
    for quantity in (1, 1_000_000):  # accepted: the call goes on to the (closed) network
        with pytest.raises(ServiceUnavailable):
            client.deduct_tokens("ask_assistant", quantity=quantity)
    with pytest.raises(InvalidRequest):
        client.deduct_tokens("ask_assistant", quantity=1_000_001)


@pytest.mark.parametrize("estimate", BAD_WHOLE_NUMBERS)
def test_estimate_is_a_whole_number_in_range(client: TokensClient, estimate: Any) -> None:
    with pytest.raises(InvalidRequest) as error:
        client.reserve_tokens("ask_assistant", estimate=estimate)
    assert (error.value.reason, error.value.facts["field"]) == ("invalid_amount", "estimate")
    with pytest.raises(InvalidRequest), client.spend("ask_assistant", estimate=estimate):
        pytest.fail("the block must not run")


@pytest.mark.parametrize("actual", [-1, True, 1.5, "2", None, 10**10])
def test_actual_is_a_whole_number_in_range(client: TokensClient, actual: Any) -> None:
    with pytest.raises(InvalidRequest) as error:
        client.commit_reservation("8f0f4c1e-0000-4000-8000-000000000002", actual=actual)
    assert (error.value.reason, error.value.facts["field"]) == ("invalid_amount", "actual")


@pytest.mark.parametrize("ttl", [0, -5, 3601, True, 2.5])
def test_ttl_is_checked(client: TokensClient, ttl: Any) -> None:
    with pytest.raises(InvalidRequest):
        client.reserve_tokens("ask_assistant", estimate=5, ttl_seconds=ttl)


def test_hold_actual_is_checked() -> None:
    hold = Hold.__new__(Hold)
    for bad in (-1, True, 1.5):
        with pytest.raises(InvalidRequest):
            hold.actual = bad


@pytest.mark.parametrize("token", ["", "   ", ANON, "sb_publishable_abc", "sb_secret_abc"])
def test_an_api_key_as_the_session_is_unauthenticated(token: str) -> None:
    with Tokens(NOWHERE, ANON) as tokens, pytest.raises(Unauthenticated) as error:
        tokens.for_user(token)
    assert (error.value.status, error.value.message) == (401, "Sign in to use AI features")


def test_a_service_key_is_a_configuration_error_with_status_500() -> None:
    service = mint_jwt(SECRET, {"role": "service_role"}, 3600)
    with pytest.raises(ConfigurationError) as error:
        Tokens(NOWHERE, service)
    assert error.value.status == 500


def test_for_user_shares_the_pool_and_owns_nothing() -> None:
    with Tokens(NOWHERE, ANON) as tokens:
        first, second = tokens.for_user(USER), tokens.for_user(USER)
        assert first._postgrest is second._postgrest is tokens._postgrest
        first.close()  # a binding closes nothing
        assert not tokens._postgrest.session.is_closed
        assert first._headers == {"Authorization": f"Bearer {USER}"}
    assert tokens._postgrest.session.is_closed


def test_the_async_constructor_builds_no_pool() -> None:
    tokens = AsyncTokens(NOWHERE, ANON)
    assert tokens._postgrest is None, "no TLS context loaded on the event loop"
    client = tokens.for_user(USER)
    assert tokens._postgrest is None

    async def first_call() -> None:
        with pytest.raises(ServiceUnavailable):
            await client.stats()
        assert tokens._postgrest is not None
        await tokens.aclose()

    asyncio.run(first_call())


def api_error(code: str, message: str = "boom", details: Any = None) -> APIError:
    return APIError({"code": code, "message": message, "details": details, "hint": None})


@pytest.mark.parametrize("code", ["PGRST202", "PGRST102", "22P02", "22P05", "22003", "22007"])
def test_postgrest_argument_errors_are_invalid_requests(code: str) -> None:
    error = error_from_api(api_error(code))
    assert isinstance(error, InvalidRequest)
    assert error.code == code


def test_a_codeless_400_is_service_unavailable() -> None:
    error = error_from_api(api_error(""))
    assert isinstance(error, ServiceUnavailable)
    assert error.status == 503


def test_jwt_errors_speak_to_the_end_user() -> None:
    raw = "JWSError (CompactDecodeError Invalid number of parts: Expected 3 parts; got 1)"
    error = error_from_api(api_error("PGRST301", raw))
    assert isinstance(error, Unauthenticated)
    assert "JWSError" not in error.message
    assert error.message == "Your session is invalid or has expired: sign in again"
