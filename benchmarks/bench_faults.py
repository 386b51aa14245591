"""Fault benchmark: sustained deductions over several organizations, Postgres killed mid-load.

    .venv/bin/python benchmarks/bench_faults.py [--deductions 100000] [--organizations 8]
        [--workers 32] [--kills 1]

Run by hand against the local stack (`tokens stack up`; it kills and restarts that
stack's PostgreSQL), never from ./scripts/test. Each worker is a member of one of the
organizations and deducts through the gateway and PostgREST with a fresh request_id;
a call whose answer is lost (connection error, 5xx while the database is down) is
retried with the same request_id until it is answered, so a spend happens at most once
and every acknowledged one must be in the journal. Prints calls, successes, retries,
ledger violations and acknowledged spends lost (both must be 0). Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from uuid import UUID, uuid4

import httpx

from tokens_client import TokensAdmin
from tokens_client.stack import Stack
from tokens_client.testing import Database, StackEnv, TestUser, create_user


class Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls = 0
        self.successes = 0
        self.retries = 0
        self.refused: dict[int, int] = {}  # HTTP status -> answers
        self.acknowledged: dict[str, str] = {}  # usage_id -> request_id


def prepare(admin: TokensAdmin, db: Database, organizations: int, per_org: int) -> list[UUID]:
    orgs = []
    for i in range(organizations):
        org = admin.create_organization(f"faults-{int(time.time())}-{i}", plan="enterprise")
        admin.initialize_tokens(org.id)
        # load, not a person
        admin.set_rate_limit(max_requests=1_000_000, window_seconds=60, organization_id=org.id)
        db.execute(
            "update ai_tokens set balance = %s where organization_id = %s"
            " and token_type = 'general'",
            (per_org, org.id),
        )
        orgs.append(org.id)
    return orgs


def worker(
    env: StackEnv, user: TestUser, quota: int, counters: Counters, stop: threading.Event
) -> None:
    headers = {"apikey": env.anon_key, "Authorization": f"Bearer {user.token(expires_in=86400)}"}
    with httpx.Client(base_url=env.url, headers=headers, timeout=10) as http:
        for _ in range(quota):
            if stop.is_set():
                return
            request_id = str(uuid4())
            attempt = 0
            while True:
                attempt += 1
                with counters.lock:
                    counters.calls += 1
                    if attempt > 1:
                        counters.retries += 1
                try:
                    answer = http.post(
                        "/rest/v1/rpc/deduct_tokens",
                        json={"feature": "ask_assistant", "request_id": request_id},
                    )
                except httpx.HTTPError:
                    time.sleep(0.2)
                    continue
                if answer.status_code >= 500 or answer.status_code in (502, 503, 504):
                    time.sleep(0.2)
                    continue
                if answer.status_code == 200:
                    body = answer.json()
                    with counters.lock:
                        counters.successes += 1
                        counters.acknowledged[body["usage_id"]] = request_id
                else:
                    with counters.lock:
                        status = answer.status_code
                        counters.refused[status] = counters.refused.get(status, 0) + 1
                break


def kill_postgres(stack: Stack) -> None:
    """SIGKILL the postmaster (a crash, not a shutdown), then start it again."""
    pid = int((stack.data_dir / "postmaster.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    time.sleep(2)
    for _ in range(30):
        try:
            stack.up()
            return
        except Exception as error:  # orphaned backends may still hold shared memory
            print(f"  restart pending: {error}")
            time.sleep(1)
    raise RuntimeError("PostgreSQL did not come back")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deductions", type=int, default=100_000)
    parser.add_argument("--organizations", type=int, default=8)
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--kills", type=int, default=1)
    args = parser.parse_args()

    stack = Stack()
    env = StackEnv.discover()
    if stack.status().api_url != env.url:
        raise SystemExit(
            "bench_faults kills the local stack's PostgreSQL: run it on the local stack"
        )
    db = Database(env.db_url)
    admin = TokensAdmin(env.url, env.service_role_key)
    per_worker = args.deductions // args.workers
    per_org = per_worker * (args.workers // args.organizations + 1) + 10
    orgs = prepare(admin, db, args.organizations, per_org)
    users = [create_user(db, env, orgs[i % len(orgs)], "member") for i in range(args.workers)]
    db.close()

    counters = Counters()
    stop = threading.Event()
    threads = [
        threading.Thread(target=worker, args=(env, u, per_worker, counters, stop)) for u in users
    ]
    started = time.perf_counter()
    for t in threads:
        t.start()
    total = per_worker * args.workers
    for kill in range(args.kills):
        # kill at evenly spaced points of the load
        target = total * (kill + 1) // (args.kills + 1)
        while counters.successes < target and any(t.is_alive() for t in threads):
            time.sleep(0.2)
        print(f"killing PostgreSQL after {counters.successes} acknowledged deductions")
        kill_postgres(stack)
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started

    db = Database(env.db_url)
    violations = sum(
        int(db.value("select count(*) from verify_token_ledger(%s)", (org,))) for org in orgs
    )
    stored = {
        str(row[0])
        for row in db.execute(
            "select id from ai_token_usage_log where organization_id = any(%s)", (orgs,)
        )
    }
    lost = sum(1 for usage_id in counters.acknowledged if usage_id not in stored)
    duplicates = int(
        db.value(
            "select count(*) - count(distinct request_id) from ai_token_usage_log"
            " where organization_id = any(%s)",
            (orgs,),
        )
    )
    print(f"organizations {len(orgs)}, workers {args.workers}, PostgreSQL kills {args.kills}")
    print(
        f"calls {counters.calls}, successes {counters.successes}, retries {counters.retries}, "
        f"refused (by HTTP status) {counters.refused},"
        f" {counters.successes / elapsed:.0f} deductions/s"
        f" over {elapsed:.0f} s"
    )
    print(f"usage rows {len(stored)}, spends with a duplicated request_id {duplicates}")
    print(f"ledger violations {violations}")
    print(f"acknowledged spends lost {lost}")


if __name__ == "__main__":
    main()
