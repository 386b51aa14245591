"""What the app-scoped client costs per request, against raw httpx; prints figures only.

    .venv/bin/python benchmarks/bench_client.py [--calls 300] [--requests 1000]

1. Per request: ``tokens.for_user(jwt).deduct_tokens(...)`` against a raw httpx POST to
   the same RPC over one reused pool (sync, then async).
2. The example's ``POST /quests/generate`` under uvicorn, 20 requests in flight, against
   the same endpoint written with raw httpx (``raw_app`` below).

Needs the local stack (`tokens stack up`) or the SUPABASE_* variables of another one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
from fastapi import FastAPI, Header, Request

from tokens_client import AsyncTokens, Tokens, TokensAdmin
from tokens_client.testing import Database, StackEnv, create_user

ROOT = Path(__file__).resolve().parents[1]
FEATURE = "ask_assistant"
CONCURRENCY = 20


def prepare(env: StackEnv, budget: int) -> tuple[UUID, list[str]]:
    """An organization with a big balance, no rate limit to speak of, and 20 users."""
    db = Database(env.db_url)
    with TokensAdmin(env.url, env.service_role_key) as admin:
        org = admin.create_organization(f"bench-client-{uuid.uuid4().hex[:8]}", plan="enterprise")
        admin.initialize_tokens(org.id)
        admin.set_rate_limit(max_requests=1_000_000, window_seconds=60, organization_id=org.id)
    db.execute(
        "update ai_tokens set balance = %s, total_allocated = %s where organization_id = %s",
        (budget, budget, org.id),
    )
    tokens = [create_user(db, env, org.id, "member").access_token for _ in range(CONCURRENCY)]
    db.close()
    return org.id, tokens


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def raw_headers(env: StackEnv, token: str) -> dict[str, str]:
    return {"apikey": env.anon_key, "Authorization": f"Bearer {token}"}


def per_request_sync(env: StackEnv, token: str, calls: int) -> tuple[float, float]:
    url = f"{env.url}/rest/v1/rpc/deduct_tokens"
    with Tokens(env.url, env.anon_key) as tokens, httpx.Client() as raw:

        def ours() -> None:
            tokens.for_user(token).deduct_tokens(FEATURE)

        def bare() -> None:
            body = {"feature": FEATURE, "request_id": str(uuid.uuid4())}
            response = raw.post(url, json=body, headers=raw_headers(env, token))
            response.raise_for_status()
            response.json()

        return alternating(ours, bare, calls)


def alternating(
    ours: Callable[[], None], bare: Callable[[], None], calls: int
) -> tuple[float, float]:
    """Median of each, the two run turn about (the machine's noise hits both alike)."""
    for _ in range(20):  # warm the pools
        ours()
        bare()
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(calls):
        for call, into in ((ours, samples[0]), (bare, samples[1])):
            started = time.perf_counter()
            call()
            into.append(time.perf_counter() - started)
    return median_ms(samples[0]), median_ms(samples[1])


async def per_request_async(env: StackEnv, token: str, calls: int) -> tuple[float, float]:
    url = f"{env.url}/rest/v1/rpc/deduct_tokens"
    async with AsyncTokens(env.url, env.anon_key) as tokens, httpx.AsyncClient() as raw:

        async def ours() -> None:
            await tokens.for_user(token).deduct_tokens(FEATURE)

        async def bare() -> None:
            body = {"feature": FEATURE, "request_id": str(uuid.uuid4())}
            response = await raw.post(url, json=body, headers=raw_headers(env, token))
            response.raise_for_status()
            response.json()

        for _ in range(20):
            await ours()
            await bare()
        samples: tuple[list[float], list[float]] = ([], [])
        for _ in range(calls):
            for call, into in ((ours, samples[0]), (bare, samples[1])):
                started = time.perf_counter()
                await call()
                into.append(time.perf_counter() - started)
        return median_ms(samples[0]), median_ms(samples[1])


# ------------------------------------------------ the example endpoint in raw httpx


@asynccontextmanager
async def _raw_lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with httpx.AsyncClient() as client:
        app.state.client = client
        yield


raw_app = FastAPI(lifespan=_raw_lifespan)


@raw_app.post("/quests/generate")
async def raw_generate(
    request: Request,
    authorization: str = Header(),
    idempotency_key: str | None = Header(default=None, alias="Idempotency-Key"),
) -> Any:
    """The example's generate endpoint with no library: one RPC, the same stand-in model."""
    body = await request.json()
    client: httpx.AsyncClient = request.app.state.client
    answer = await client.post(
        f"{os.environ['SUPABASE_URL']}/rest/v1/rpc/deduct_tokens",
        json={"feature": "generate_quest", "request_id": idempotency_key},
        headers={"apikey": os.environ["SUPABASE_ANON_KEY"], "Authorization": authorization},
    )
    deduction = answer.json()
    goal = body["goal"]
    return {
        "quest": {"title": f"Quest: {goal}", "steps": [f"Write down why “{goal}” matters"]},
        "tokens_used": deduction["tokens_deducted"],
        "remaining_balance": deduction["remaining_balance"],
        "token_type": deduction["token_type"],
        "message": deduction["message"],
        "replayed": deduction["replayed"],
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(env: StackEnv, app: str, app_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    environment = {**os.environ, "SUPABASE_URL": env.url, "SUPABASE_ANON_KEY": env.anon_key}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--app-dir",
            str(app_dir),
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=environment,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(f"{base}/docs", timeout=1)
            return process, base
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{app} did not start")


async def load(base: str, tokens: list[str], requests: int) -> float:
    """Requests per second with CONCURRENCY requests in flight (bounded: stops by itself)."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for number in range(requests):
        queue.put_nowait(number)

    async def worker(client: httpx.AsyncClient, token: str) -> None:
        while not queue.empty():
            queue.get_nowait()
            response = await client.post(
                f"{base}/quests/generate",
                json={"goal": "Run a marathon"},
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())},
            )
            response.raise_for_status()

    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        for _ in range(CONCURRENCY):  # warm up
            await worker_once(client, base, tokens[0])
        started = time.perf_counter()
        await asyncio.gather(*(worker(client, token) for token in tokens[:CONCURRENCY]))
        return requests / (time.perf_counter() - started)


async def worker_once(client: httpx.AsyncClient, base: str, token: str) -> None:
    response = await client.post(
        f"{base}/quests/generate",
        json={"goal": "warm up"},
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())},
    )
    response.raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()

    env = StackEnv.discover()
    _, tokens = prepare(env, 10 * (args.calls + args.requests) + 10_000)

    with Tokens(env.url, env.anon_key) as app_tokens:
        started = time.perf_counter()
        for _ in range(10_000):
            app_tokens.for_user(tokens[0])
        binding = (time.perf_counter() - started) / 10_000 * 1e6
    started = time.perf_counter()
    Tokens(env.url, env.anon_key).close()
    pool = (time.perf_counter() - started) * 1000
    print(f"for_user(jwt): {binding:.1f} us (no I/O); Tokens(...) once per app: {pool:.1f} ms")

    ours, bare = per_request_sync(env, tokens[0], args.calls)
    print(
        f"sync  per request: for_user + deduct_tokens {ours:.2f} ms, raw httpx {bare:.2f} ms"
        f" -> {ours / bare:.2f}x (target <= 1.2x)"
    )
    ours, bare = asyncio.run(per_request_async(env, tokens[0], args.calls))
    print(
        f"async per request: for_user + deduct_tokens {ours:.2f} ms, raw httpx {bare:.2f} ms"
        f" -> {ours / bare:.2f}x (target <= 1.2x)"
    )

    rates: dict[str, float] = {}
    for _ in range(2):  # turn about, best of two each: the machine's noise hits both alike
        for name, app, app_dir in (
            ("example", "app:app", ROOT / "examples" / "fastapi_app"),
            ("raw httpx", "bench_client:raw_app", ROOT / "benchmarks"),
        ):
            process, base = serve(env, app, app_dir)
            try:
                rate = asyncio.run(load(base, tokens, args.requests // 2))
                rates[name] = max(rates.get(name, 0.0), rate)
            finally:
                process.terminate()
                process.wait(timeout=10)
    ratio = rates["example"] / rates["raw httpx"]
    print(
        f"uvicorn, {CONCURRENCY} in flight, POST /quests/generate: example "
        f"{rates['example']:.0f} req/s, raw httpx {rates['raw httpx']:.0f} req/s"
        f" -> {ratio:.2f}x (target >= 0.8x)"
    )


if __name__ == "__main__":
    main()
