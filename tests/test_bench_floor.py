"""benchmarks/bench_floor.py --quick runs on the stack, prints its table, leaves nothing.

A smoke check only (about 30 s): no figure is asserted, the benchmark is run by hand."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tokens_client.testing import Database, StackEnv

ROOT = Path(__file__).resolve().parent.parent


def test_bench_floor_quick_prints_every_case_and_cleans_up(
    stack_env: StackEnv, db: Database
) -> None:
    env = dict(os.environ)
    env.update(
        SUPABASE_URL=stack_env.url,
        SUPABASE_ANON_KEY=stack_env.anon_key,
        SUPABASE_SERVICE_ROLE_KEY=stack_env.service_role_key,
        SUPABASE_JWT_SECRET=stack_env.jwt_secret,
        SUPABASE_DB_URL=stack_env.db_url,
    )
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_floor.py"),
            "--quick",
            "--cases",
            "sql-hot,sql-spread,http-hot,http-spread,report,ladder-spread",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    assert "| case | floor | ceiling (the rows alone) | deduct_tokens | ratio |" in out
    for case in ("| SQL hot |", "| SQL spread |", "| HTTP hot |", "| HTTP spread |"):
        assert case in out, out
    # every call counted on the ceiling and deduct sides wrote its usage row
    assert "usage rows written" not in out, out
    assert "ladder, SQL spread" in out, out
    assert "the five rows, tables without CHECK constraints" in out, out
    assert "| report 1,000 rows |" in out
    assert "x growth |" in out
    # nothing of the benchmark is left behind
    orgs = "select count(*) from public.organizations where name like %s"
    assert db.value(orgs, ("bench-floor %",)) == 0
    users = "select count(*) from auth.users where email like %s"
    assert db.value(users, ("%@bench-floor.test",)) == 0
    assert db.value("select count(*) from public.ai_plans where plan = 'bench'") == 0
    assert db.value("select to_regnamespace('bench') is null") is True
    assert db.value("select to_regprocedure('public.bench_noop()') is null") is True
    assert db.value("select to_regprocedure('public.bench_ceiling()') is null") is True
