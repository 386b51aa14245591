"""Benchmark deduct_tokens end to end and in SQL; prints figures, asserts nothing.

    .venv/bin/python benchmarks/bench_deduct.py [--clients 32] [--calls 2000]

Needs the local stack (`tokens stack up`) or the SUPABASE_* variables of another one.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from uuid import UUID

from tokens_client import TokensAdmin
from tokens_client.testing import Database, StackEnv, create_user


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def prepare(admin: TokensAdmin, db: Database, budget: int) -> UUID:
    org = admin.create_organization(f"bench-{int(time.time())}", plan="enterprise")
    admin.initialize_tokens(org.id)
    # a load test is not a person: lift the per-user limit (5/min) for this organization
    admin.set_rate_limit(max_requests=1_000_000, window_seconds=60, organization_id=org.id)
    db.execute(
        "update ai_tokens set balance = %s, total_allocated = %s "
        "where organization_id = %s and token_type = 'general'",
        (budget, budget, org.id),
    )
    return org.id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--sequential", type=int, default=300)
    args = parser.parse_args()

    env = StackEnv.discover()
    db = Database(env.db_url)
    admin = TokensAdmin(env.url, env.service_role_key)
    org = prepare(admin, db, args.calls + args.sequential + 600)
    users = [create_user(db, env, org, "member") for _ in range(args.clients)]

    # 1. one client, one call at a time: latency through gateway + PostgREST + SQL
    client = users[0].client()
    client.deduct_tokens("ask_assistant")  # warm the connection
    latencies = []
    for _ in range(args.sequential):
        started = time.perf_counter()
        client.deduct_tokens("ask_assistant")
        latencies.append((time.perf_counter() - started) * 1000)
    print(
        f"sequential: {args.sequential} deductions, p50 {statistics.median(latencies):.2f} ms, "
        f"p95 {percentile(latencies, 0.95):.2f} ms, p99 {percentile(latencies, 0.99):.2f} ms"
    )

    # 2. N clients in parallel on the same balance row (the contended case)
    per_client = args.calls // args.clients
    clients = [user.client() for user in users]
    barrier = threading.Barrier(args.clients + 1)
    parallel: list[float] = []
    lock = threading.Lock()

    def run(index: int) -> None:
        mine = []
        barrier.wait()
        for _ in range(per_client):
            started = time.perf_counter()
            clients[index].deduct_tokens("ask_assistant")
            mine.append((time.perf_counter() - started) * 1000)
        with lock:
            parallel.extend(mine)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(args.clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    total = per_client * args.clients
    print(
        f"parallel: {args.clients} clients, {total} deductions on one balance row in "
        f"{elapsed:.2f} s = {total / elapsed:.0f}/s, p50 {statistics.median(parallel):.2f} ms, "
        f"p95 {percentile(parallel, 0.95):.2f} ms"
    )

    # 3. inside the database: the function alone, no HTTP
    user = users[1]
    db.execute(
        "select set_config('request.jwt.claims', %s, false)",
        (f'{{"sub": "{user.id}", "role": "authenticated"}}',),
    )
    calls = 500
    db.execute("set role authenticated")
    started = time.perf_counter()
    for _ in range(calls):
        db.execute("select public.deduct_tokens('ask_assistant')")
    elapsed = time.perf_counter() - started
    db.execute("reset role")
    db.execute("select set_config('request.jwt.claims', '', false)")
    print(
        f"in SQL (psycopg, autocommit, one statement per call): {calls} deductions, "
        f"{elapsed / calls * 1000:.3f} ms each"
    )

    # 4. the guide's monitoring queries with its expectations (< 10 ms, < 50 ms at 10k rows)
    db.execute(
        "insert into ai_token_usage_log (organization_id, user_id, token_type, feature_used, "
        "tokens_deducted, balance_after, created_at) select %s, %s, 'general', 'ask_assistant',"
        " 1, 1, now() - (g * interval '1 minute') from generate_series(1, 10000) g",
        (org, user.id),
    )
    db.execute("analyze ai_token_usage_log")
    for label, sql in (
        ("all token rows for an org", "select * from ai_tokens where organization_id = %s"),
        (
            "recent usage, 10k rows",
            "select * from ai_token_usage_log where organization_id = %s"
            " and created_at > now() - interval '30 days' limit 100",
        ),
    ):
        plan = db.execute("explain (analyze, format json) " + sql, (org,))[0][0][0]
        print(
            f"EXPLAIN ANALYZE {label}: {plan['Execution Time']:.3f} ms "
            f"({plan['Plan']['Node Type']})"
        )
    db.close()
    admin.close()


if __name__ == "__main__":
    main()
