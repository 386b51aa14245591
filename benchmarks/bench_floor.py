"""deduct_tokens against the floor: what the same work costs without our rules.

    .venv/bin/python benchmarks/bench_floor.py [--quick] [--slice 3] [--rounds 3]

Needs the local stack (`tokens stack up`) or the SUPABASE_* variables of another one,
plus pgbench (PostgreSQL 15) and wrk (Debian `wrk`, in scripts/install). Prints figures
and the issue's targets as PASS/MISS; it never fails on a figure (exit 0 unless it breaks).

Every case is measured in interleaved slices (floor, ceiling, deduct, deduct, ceiling,
floor, ...) so that noise from other work on the machine falls on all sides. The ceiling
is what our rules cost at the least: public.bench_ceiling(), one PL/pgSQL statement that
makes exactly the five row writes of a spend (the window row, the balance UPDATE, the
journal row, the usage-log row, the rollup upsert) in copies of our tables (same
columns, indexes and checks, no triggers), for the caller's auth.uid(), with no checks,
lookups or refusals. deduct_tokens / floor cannot pass ceiling / floor while every rule
keeps its row; deduct_tokens / ceiling is what our own code costs on top of those rows.

1. SQL, one organization (hot row), 16 pgbench connections: floor = a conditional UPDATE
   of one row of bench.account + one INSERT into bench.journal; deduct = what PostgREST
   does per request (one transaction: set_config role, claims, method, path; then
   `select public.deduct_tokens('generate_goal', null, null)`), every rule on.
2. SQL, 1,000 organizations (one member each; a client picks one at random per call).
3. HTTP through the gateway (wrk, 16 connections), hot org and 1,000 orgs: POST
   /rest/v1/rpc/deduct_tokens with apikey + a member's JWT; floor = public.bench_noop()
   (`select 1`) with the same JWT. Only 2xx counts; other statuses are reported.
4. get_usage_report(org, 'feature', now() - 30 days) as a member at 1k and 1M usage rows.

The benchmark's rate limit is 1,000,000 requests per --rate-window seconds (default 1)
for every bench organization: evaluated on every call, never refusing. The rate check
updates one row per user and rule, so its cost does not depend on window or rate.
Everything it creates (schema bench, plan `bench`, its organizations, users, their rows,
public.bench_noop) is removed at the end, also on Ctrl-C, and at the start of a run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from tokens_client.stack import mint_jwt
from tokens_client.testing import StackEnv

CONNECTIONS = 16
HOT_MEMBERS = 16
SPREAD_ORGS = 1000
FEATURE = "generate_goal"  # goal_generation, 3 tokens
PLAN = "bench"
ORG_PREFIX = "bench-floor "
EMAIL_DOMAIN = "bench-floor.test"
PGBENCH_DIRS = ("/usr/lib/postgresql/15/bin",)

TARGETS = {  # from the issue: deduct_tokens / floor
    "SQL hot": 0.8,
    "SQL spread": 0.5,
    "HTTP hot": 0.6,
    "HTTP spread": 0.6,
}
REPORT_GROWTH_TARGET = 1.2

FLOOR_SQL = """\\set n {n}
BEGIN;
UPDATE bench.account SET balance = balance - 3 WHERE id = :n AND balance >= 3;
INSERT INTO bench.journal (account_id, amount) VALUES (:n, 3);
COMMIT;
"""

# PostgREST 12 per request: BEGIN; one statement of set_config (role, claims, method,
# path, headers); the call; COMMIT. The claims come from bench.members in that statement.
DEDUCT_SQL = """\\set n {n}
BEGIN;
SELECT set_config('role', 'authenticated', true),
       set_config('request.jwt.claims', m.claims, true),
       set_config('request.method', 'POST', true),
       set_config('request.path', '/rpc/{rpc}', true),
       set_config('request.headers', '{{}}', true)
FROM bench.members m WHERE m.kind = '{kind}' AND m.n = :n;
SELECT {call};
COMMIT;
"""

CEILING_TABLES = (
    "ai_rate_limit_windows",
    "ai_tokens",
    "ai_token_ledger",
    "ai_token_usage_log",
    "ai_token_usage_daily",
)

# The five row writes of one spend, as one statement, for the caller: nothing checked.
CEILING_FUNCTION = """
create function public.bench_ceiling() returns jsonb language plpgsql volatile
set search_path = '' as $$
declare
  answer jsonb;
begin
  with caller as (
    select m.organization_id as org, m.user_id as usr from bench.members m
    where m.user_id = (select auth.uid()) limit 1
  ),
  slot as (
    insert into bench.ai_rate_limit_windows as w
      (user_id, organization_id, rate_limit_id, window_started_at, spends)
    select c.usr, c.org, 1, now(), 1 from caller c
    on conflict (user_id, organization_id, rate_limit_id) do update set spends = w.spends + 1
    returning 1
  ),
  spent as (
    update bench.ai_tokens t set balance = t.balance - 3,
           purchased_balance = least(t.purchased_balance, t.balance - 3), updated_at = now()
    from caller c
    where t.organization_id = c.org and t.token_type = 'goal_generation'
      and t.balance - t.reserved >= 3 and t.settle_after > now()
    returning t.organization_id, t.balance, c.usr, gen_random_uuid() as usage_id
  ),
  journaled as (
    insert into bench.ai_token_ledger
      (organization_id, token_type, kind, delta, balance_after, usage_id, actor)
    select s.organization_id, 'goal_generation', 'deduction', -3, s.balance, s.usage_id, s.usr
    from spent s
  ),
  logged as (
    insert into bench.ai_token_usage_log (id, organization_id, user_id, token_type, feature_used,
                                          tokens_deducted, balance_after, quantity)
    select s.usage_id, s.organization_id, s.usr, 'goal_generation', 'generate_goal', 3, s.balance, 1
    from spent s
  ),
  rolled_up as (
    insert into bench.ai_token_usage_daily as d
      (organization_id, day, user_id, feature, uses, tokens)
    select s.organization_id, (now() at time zone 'UTC')::date, s.usr, 'generate_goal', 1, 3
    from spent s
    on conflict (organization_id, day, user_id, feature) do update
      set uses = d.uses + 1, tokens = d.tokens + excluded.tokens
  )
  select jsonb_build_object('success', true, 'remaining_balance', s.balance, 'usage_id', s.usage_id)
  into answer from spent s;
  return answer;
end
$$
"""

# The ladder: the rows of a spend added one at a time, as plain SQL on the bench copies
# (as postgres, no PostgREST preamble, no function): what each rule's row costs.
LADDER_ROWS = {
    "window": """slot AS (
  INSERT INTO bench.{p}ai_rate_limit_windows AS w
    (user_id, organization_id, rate_limit_id, window_started_at, spends)
  SELECT c.usr, c.org, 1, now(), 1 FROM caller c
  ON CONFLICT (user_id, organization_id, rate_limit_id) DO UPDATE SET spends = w.spends + 1),
""",
    "usage": """logged AS (
  INSERT INTO bench.{p}ai_token_usage_log (id, organization_id, user_id, token_type, feature_used,
                                           tokens_deducted, balance_after, quantity)
  SELECT s.usage_id, s.organization_id, s.usr, 'goal_generation', 'generate_goal', 3, s.balance, 1
  FROM spent s),
""",
    "rollup": """rolled_up AS (
  INSERT INTO bench.{p}ai_token_usage_daily AS d
    (organization_id, day, user_id, feature, uses, tokens)
  SELECT s.organization_id, (now() AT TIME ZONE 'UTC')::date, s.usr, 'generate_goal', 1, 3
  FROM spent s
  ON CONFLICT (organization_id, day, user_id, feature) DO UPDATE
    SET uses = d.uses + 1, tokens = d.tokens + excluded.tokens),
""",
}
LADDER_SQL = """\\set n {n}
BEGIN;
WITH caller AS (
  SELECT m.organization_id AS org, m.user_id AS usr FROM bench.members m
  WHERE m.kind = '{kind}' AND m.n = :n),
{window}spent AS (
  UPDATE bench.{p}ai_tokens t SET balance = t.balance - 3,
         purchased_balance = least(t.purchased_balance, t.balance - 3), updated_at = now()
  FROM caller c
  WHERE t.organization_id = c.org AND t.token_type = 'goal_generation'
    AND t.balance - t.reserved >= 3 AND t.settle_after > now()
  RETURNING t.organization_id, t.balance, c.usr, gen_random_uuid() AS usage_id),
{usage}{rollup}journaled AS (
  INSERT INTO bench.{p}ai_token_ledger
    (organization_id, token_type, kind, delta, balance_after, usage_id, actor)
  SELECT s.organization_id, 'goal_generation', 'deduction', -3, s.balance, s.usage_id, s.usr
  FROM spent s)
SELECT 1;
COMMIT;
"""
LADDER_STEPS = (  # label, rows included, table prefix ('nc_': the copies without CHECKs)
    ("balance + journal", (), ""),
    ("+ usage-log row", ("usage",), ""),
    ("+ daily rollup", ("usage", "rollup"), ""),
    ("+ rate window: the five rows", ("usage", "rollup", "window"), ""),
    ("the five rows, tables without CHECK constraints", ("usage", "rollup", "window"), "nc_"),
)

WRK_LUA = r"""
local tokens = {}
for line in io.lines(os.getenv("BENCH_TOKENS")) do
  if #line > 0 then tokens[#tokens + 1] = line end
end
local path = os.getenv("BENCH_PATH")
local body = os.getenv("BENCH_BODY")
local apikey = os.getenv("BENCH_APIKEY")
local threads = {}
local counter = 1

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

ok = 0
bad = 0
first_bad = ""
local i = 0

function init(args)
  i = (id or 1) * 7919 % #tokens
end

function request()
  i = i % #tokens + 1
  return wrk.format("POST", path, {
    ["apikey"] = apikey,
    ["Authorization"] = "Bearer " .. tokens[i],
    ["Content-Type"] = "application/json",
  }, body)
end

function response(status, headers, resp_body)
  if status >= 200 and status < 300 then
    ok = ok + 1
  else
    bad = bad + 1
    if first_bad == "" then first_bad = status .. " " .. string.sub(resp_body or "", 1, 160) end
  end
end

function done(summary, latency, requests)
  local o, b, f = 0, 0, ""
  for _, t in ipairs(threads) do
    o = o + t:get("ok")
    b = b + t:get("bad")
    if f == "" then f = t:get("first_bad") or "" end
  end
  io.write(string.format("BENCH ok=%d bad=%d duration_us=%d p50_us=%d\n",
                         o, b, summary.duration, latency:percentile(50)))
  if f ~= "" then io.write("BENCH first_bad=" .. f .. "\n") end
end
"""


def find_tool(name: str, dirs: tuple[str, ...] = ()) -> str:
    for directory in dirs:
        candidate = Path(directory) / name
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if not found:
        sys.exit(f"bench_floor: {name} not found (./scripts/install installs it)")
    return found


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.env = StackEnv.discover()
        self.db = psycopg.connect(self.env.db_url, autocommit=True)
        self.pgbench = find_tool("pgbench", PGBENCH_DIRS)
        self.wrk = find_tool("wrk")
        self.tmp = Path(tempfile.mkdtemp(prefix="bench_floor_"))
        self.hot_org: uuid.UUID | None = None
        self.report_org: uuid.UUID | None = None
        self.report_user: uuid.UUID | None = None

    # -- SQL helpers --------------------------------------------------------------------
    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[Any]:
        with self.db.cursor() as cursor:
            cursor.execute(query.encode(), params)
            return cursor.fetchall() if cursor.description else []

    def as_service_role(self, query: str, params: tuple[Any, ...] = ()) -> list[Any]:
        with self.db.transaction(), self.db.cursor() as cursor:
            cursor.execute(
                b"select set_config('role', 'service_role', true), "
                b"set_config('request.jwt.claims', '{\"role\":\"service_role\"}', true)"
            )
            cursor.execute(query.encode(), params)
            return cursor.fetchall() if cursor.description else []

    # -- setup and cleanup --------------------------------------------------------------
    def cleanup(self) -> None:
        orgs = "select id from public.organizations where name like %s"
        like = (ORG_PREFIX + "%",)
        statements = [
            "drop function if exists public.bench_noop()",
            "drop function if exists public.bench_ceiling()",
            "drop schema if exists bench cascade",
            # ai_tokens first: its delete trigger journals into the ledger
            f"delete from public.ai_tokens where organization_id in ({orgs})",
        ]
        for table in (
            "ai_token_grant_usage",
            "ai_token_usage_log",
            "ai_token_ledger",
            "ai_token_alerts",
            "ai_token_grants",
            "ai_token_reservations",
            "ai_rate_limits",
            "ai_token_enforcement_modes",
            "ai_plan_change_events",
            "ai_token_refresh_failures",
        ):
            if table == "ai_token_grant_usage":
                statements.append(
                    "delete from public.ai_token_grant_usage where usage_id in (select id from "
                    f"public.ai_token_usage_log where organization_id in ({orgs}))"
                )
            else:
                statements.append(f"delete from public.{table} where organization_id in ({orgs})")
        statements += [
            f"delete from public.user_profiles where organization_id in ({orgs})",
            "delete from public.organizations where name like %s",
            "delete from auth.users where email like %s",
            "delete from public.ai_plans where plan = %s",
        ]
        for statement in statements:
            params: tuple[Any, ...] = ()
            if "%s" in statement:
                params = like * statement.count("%s")
            if "auth.users" in statement:
                params = ("%@" + EMAIL_DOMAIN,)
            if "ai_plans" in statement:
                params = (PLAN,)
            with contextlib.suppress(psycopg.errors.UndefinedTable):
                self.sql(statement, params)
        with contextlib.suppress(psycopg.Error):
            self.sql("notify pgrst, 'reload schema'")

    def make_org(self, name: str, members: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
        org = uuid.uuid4()
        self.sql(
            "insert into public.organizations (id, name, plan) values (%s, %s, %s)",
            (org, ORG_PREFIX + name, PLAN),
        )
        users = [uuid.uuid4() for _ in range(members)]
        for user in users:
            self.sql(
                "insert into auth.users (id, aud, role, email) values "
                "(%s, 'authenticated', 'authenticated', %s)",
                (user, f"{user.hex[:16]}@{EMAIL_DOMAIN}"),
            )
            self.sql(
                "insert into public.user_profiles (id, organization_id, full_name, role) "
                "values (%s, %s, %s, 'member') on conflict (id) do update set "
                "organization_id = excluded.organization_id, role = excluded.role",
                (user, org, "Bench " + user.hex[:6]),
            )
        return org, users

    def setup(self) -> None:
        self.cleanup()
        started = time.perf_counter()
        self.sql(
            f"insert into public.ai_plans (plan, description) values ('{PLAN}', 'bench_floor')"
        )
        self.sql(
            "insert into public.ai_plan_allocations (plan, token_type, monthly_allocation) "
            f"select '{PLAN}', token_type, 1000000000 from public.ai_token_types"
        )
        self.sql("create schema bench")
        self.sql("create table bench.account (id integer primary key, balance bigint not null)")
        self.sql(
            "insert into bench.account select g, 1000000000000 "
            f"from generate_series(1, {SPREAD_ORGS}) g"
        )
        self.sql(
            "create table bench.journal (id bigserial primary key, account_id integer not null,"
            " amount integer not null, created_at timestamptz not null default now())"
        )
        self.sql(
            "create table bench.members (kind text, n integer, user_id uuid, organization_id uuid,"
            " claims text, primary key (kind, n))"
        )
        self.sql("grant usage on schema bench to authenticated")
        self.sql("grant select on bench.members to authenticated")
        self.sql(
            "create function public.bench_noop() returns integer language sql stable as 'select 1'"
        )
        for table in CEILING_TABLES:
            self.sql(f"create table bench.{table} (like public.{table} including all)")
            self.sql(
                f"create table bench.nc_{table} (like public.{table} including all"
                " excluding constraints)"
            )
        self.sql(CEILING_FUNCTION)
        self.sql("revoke all on function public.bench_ceiling() from public, anon")
        self.sql("grant execute on function public.bench_ceiling() to authenticated")
        self.sql("revoke all on function public.bench_noop() from public, anon")
        self.sql("grant execute on function public.bench_noop() to authenticated")

        def add(kind: str, n: int, user: uuid.UUID, org: uuid.UUID) -> None:
            claims = json.dumps({"sub": str(user), "role": "authenticated", "aud": "authenticated"})
            self.sql(
                "insert into bench.members values (%s, %s, %s, %s, %s)",
                (kind, n, user, org, claims),
            )

        self.hot_org, hot_users = self.make_org("hot", HOT_MEMBERS)
        for n, user in enumerate(hot_users, 1):
            add("hot", n, user, self.hot_org)
        # 1,000 organizations of one member each, in one statement each table (fast)
        self.sql(
            "create temporary table spread as select g as n, gen_random_uuid() as org, "
            f"gen_random_uuid() as usr from generate_series(1, {SPREAD_ORGS}) g"
        )
        self.sql(
            "insert into public.organizations (id, name, plan) "
            f"select org, %s || n, '{PLAN}' from spread",
            (ORG_PREFIX + "spread ",),
        )
        self.sql(
            "insert into auth.users (id, aud, role, email) select usr, 'authenticated', "
            "'authenticated', replace(usr::text, '-', '') || %s from spread",
            ("@" + EMAIL_DOMAIN,),
        )
        self.sql(
            "insert into public.user_profiles (id, organization_id, full_name, role) "
            "select usr, org, 'Bench ' || n, 'member' from spread on conflict (id) do update "
            "set organization_id = excluded.organization_id, role = excluded.role"
        )
        self.sql(
            "insert into bench.members select 'spread', n, usr, org, json_build_object('sub', usr,"
            " 'role', 'authenticated', 'aud', 'authenticated')::text from spread"
        )
        self.sql("drop table spread")
        self.report_org, report_users = self.make_org("report", 1)
        self.report_user = report_users[0]

        orgs = [r[0] for r in self.sql("select distinct organization_id from bench.members")]
        orgs.append(self.report_org)
        self.as_service_role(
            "select count(public.set_rate_limit(1000000, %s, o)) from unnest(%s::uuid[]) o",
            (self.args.rate_window, orgs),
        )
        self.as_service_role(
            "select count(*) from unnest(%s::uuid[]) o, public.initialize_tokens(o)", (orgs,)
        )
        for copy in ("ai_tokens", "nc_ai_tokens"):
            self.sql(
                f"insert into bench.{copy} select t.* from public.ai_tokens t "
                "where t.organization_id in (select organization_id from bench.members)"
            )
        self.sql("create index on bench.members (user_id)")
        self.sql("grant select, insert, update on all tables in schema bench to authenticated")
        self.sql("analyze bench.ai_tokens")
        self.sql("analyze bench.account")
        self.sql("analyze bench.members")
        self.sql("analyze public.ai_tokens")
        self.sql("notify pgrst, 'reload schema'")

        # tokens for wrk
        secret = self.env.jwt_secret
        for kind in ("hot", "spread"):
            rows = self.sql("select user_id from bench.members where kind = %s order by n", (kind,))
            lines = [
                mint_jwt(
                    secret,
                    {"sub": str(r[0]), "role": "authenticated", "aud": "authenticated"},
                    expires_in=3 * 3600,
                )
                for r in rows
            ]
            (self.tmp / f"tokens_{kind}.txt").write_text("\n".join(lines) + "\n")
        (self.tmp / "bench.lua").write_text(WRK_LUA)
        for kind, n in (("hot", "1"), ("spread", f"random(1, {SPREAD_ORGS})")):
            (self.tmp / f"floor_{kind}.sql").write_text(FLOOR_SQL.format(n=n))
            member = f"random(1, {HOT_MEMBERS})" if kind == "hot" else n
            (self.tmp / f"deduct_{kind}.sql").write_text(
                DEDUCT_SQL.format(
                    n=member,
                    kind=kind,
                    call=f"public.deduct_tokens('{FEATURE}', NULL, NULL)",
                    rpc="deduct_tokens",
                )
            )
            (self.tmp / f"ceiling_{kind}.sql").write_text(
                DEDUCT_SQL.format(
                    n=member, kind=kind, call="public.bench_ceiling()", rpc="bench_ceiling"
                )
            )
        self.wait_for_noop()
        print(
            f"setup: {time.perf_counter() - started:.1f} s "
            f"({SPREAD_ORGS + 2} organizations, {SPREAD_ORGS + HOT_MEMBERS + 1} members)"
        )

    def wait_for_noop(self) -> None:
        import httpx

        token = (self.tmp / "tokens_hot.txt").read_text().split()[0]
        headers = {"apikey": self.env.anon_key, "Authorization": f"Bearer {token}"}
        for _ in range(50):  # until PostgREST has reloaded its schema cache
            with contextlib.suppress(httpx.HTTPError):
                url = f"{self.env.url}/rest/v1/rpc/bench_noop"
                if httpx.post(url, json={}, headers=headers, timeout=5).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError("PostgREST did not load public.bench_noop()")

    # -- measurements -------------------------------------------------------------------
    def run_pgbench(self, script: str, seconds: float) -> tuple[int, float, str]:
        """Transactions, seconds and a problem line (failed/aborted), for one slice."""
        command = [
            self.pgbench,
            "-n",
            "-M",
            "prepared",
            "-c",
            str(CONNECTIONS),
            "-j",
            "2",
            "-T",
            str(max(1, round(seconds))),
            "-f",
            str(self.tmp / script),
            self.env.db_url,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
        out = done.stdout + done.stderr
        processed = re.search(r"number of transactions actually processed: (\d+)", out)
        tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
        failed = re.search(r"number of failed transactions: (\d+)", out)
        problem = ""
        if done.returncode != 0 or not processed or not tps:
            errors = [line for line in out.splitlines() if "error" in line.lower()][:2]
            problem = f"pgbench exit {done.returncode}: " + " | ".join(errors or [out[-300:]])
        elif failed and int(failed.group(1)):
            problem = f"{failed.group(1)} failed transactions"
        count = int(processed.group(1)) if processed else 0
        rate = float(tps.group(1)) if tps else 0.0
        elapsed = count / rate if rate else seconds
        return count, elapsed, problem

    def run_wrk(self, rpc: str, body: str, kind: str, seconds: float) -> tuple[int, float, str]:
        env = dict(os.environ)
        env.update(
            BENCH_TOKENS=str(self.tmp / f"tokens_{kind}.txt"),
            BENCH_PATH=f"/rest/v1/rpc/{rpc}",
            BENCH_BODY=body,
            BENCH_APIKEY=self.env.anon_key,
        )
        command = [
            self.wrk,
            "-t",
            "2",
            "-c",
            str(CONNECTIONS),
            "-d",
            f"{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(self.tmp / "bench.lua"),
            self.env.url,
        ]
        done = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=seconds + 60
        )
        out = done.stdout + done.stderr
        found = re.search(r"BENCH ok=(\d+) bad=(\d+) duration_us=(\d+)", out)
        if not found:
            return 0, seconds, f"wrk exit {done.returncode}: {out[-300:]}"
        ok, bad, duration = int(found.group(1)), int(found.group(2)), int(found.group(3)) / 1e6
        problem = ""
        if bad:
            first = re.search(r"BENCH first_bad=(.*)", out)
            problem = f"{bad} non-2xx (first: {first.group(1) if first else '?'})"
        errors = re.search(r"Socket errors: (.*)", out)
        if errors:
            problem = (problem + "; " if problem else "") + "socket errors: " + errors.group(1)
        return ok, duration, problem

    def interleave(self, label: str, runs: dict[str, Any]) -> dict[str, Any]:
        """Alternate slices of each side (ABC, CBA, ...); per side: successes / time."""
        sides: dict[str, list[Any]] = {side: [0, 0.0, []] for side in runs}
        written_before = self.rows_written()
        for round_number in range(self.args.rounds):
            order = list(runs.items())
            if round_number % 2:  # neither side always runs first
                order.reverse()
            for side, run in order:
                count, elapsed, problem = run()
                sides[side][0] += count
                sides[side][1] += elapsed
                if problem:
                    sides[side][2].append(problem)
        # Every counted call must have written its usage row: a side that answered
        # without spending (a refusal returned as data, a null) would inflate its rate.
        written = {k: v - written_before[k] for k, v in self.rows_written().items()}
        for side in ("ceiling", "deduct"):
            if written[side] < sides[side][0]:
                sides[side][2].append(
                    f"only {written[side]} usage rows written for {sides[side][0]} calls counted"
                )
        result: dict[str, Any] = {"case": label}
        for side, (count, elapsed, problems) in sides.items():
            result[side] = count / elapsed if elapsed else 0.0
            result[side + "_problems"] = problems
        floor = result["floor"]
        result["ratio"] = result["deduct"] / floor if floor else 0.0
        result["ceiling_ratio"] = result["ceiling"] / floor if floor else 0.0
        result["of_ceiling"] = result["deduct"] / result["ceiling"] if result["ceiling"] else 0.0
        print(
            f"  {label}: floor {floor:.0f}/s, ceiling {result['ceiling']:.0f}/s, "
            f"deduct_tokens {result['deduct']:.0f}/s"
            + "".join(f"\n    {side}: {p}" for side in runs for p in sides[side][2][:3]),
            flush=True,
        )
        return result

    def rows_written(self) -> dict[str, int]:
        """Usage rows so far: the ceiling's copy, and deduct_tokens' for bench members."""
        ceiling = self.sql("select count(*) from bench.ai_token_usage_log")[0][0]
        deduct = self.sql(
            "select count(*) from public.ai_token_usage_log where organization_id in "
            "(select organization_id from bench.members)"
        )[0][0]
        return {"ceiling": ceiling, "deduct": deduct}

    def sql_case(self, kind: str) -> dict[str, Any]:
        s = self.args.slice
        return self.interleave(
            f"SQL {'hot' if kind == 'hot' else 'spread'}",
            {
                "floor": lambda: self.run_pgbench(f"floor_{kind}.sql", s),
                "ceiling": lambda: self.run_pgbench(f"ceiling_{kind}.sql", s),
                "deduct": lambda: self.run_pgbench(f"deduct_{kind}.sql", s),
            },
        )

    def http_case(self, kind: str) -> dict[str, Any]:
        s = self.args.slice
        return self.interleave(
            f"HTTP {'hot' if kind == 'hot' else 'spread'}",
            {
                "floor": lambda: self.run_wrk("bench_noop", "{}", kind, s),
                "ceiling": lambda: self.run_wrk("bench_ceiling", "{}", kind, s),
                "deduct": lambda: self.run_wrk(
                    "deduct_tokens", json.dumps({"feature": FEATURE}), kind, s
                ),
            },
        )

    def ladder(self, kind: str) -> list[tuple[str, float]]:
        """The floor, the rows of a spend added one by one, the ceiling and deduct_tokens,
        in interleaved slices (SQL, 16 connections): (label, tx/s) each."""
        n = "1" if kind == "hot" else f"random(1, {SPREAD_ORGS})"
        member = f"random(1, {HOT_MEMBERS})" if kind == "hot" else n
        scripts = [("floor: UPDATE + INSERT", f"floor_{kind}.sql")]
        for number, (label, rows, prefix) in enumerate(LADDER_STEPS):
            parts = {
                row: LADDER_ROWS[row].format(p=prefix) if row in rows else "" for row in LADDER_ROWS
            }
            name = f"ladder_{kind}_{number}.sql"
            (self.tmp / name).write_text(LADDER_SQL.format(n=member, kind=kind, p=prefix, **parts))
            scripts.append((label, name))
        scripts.append(("ceiling: PostgREST's statement + bench_ceiling()", f"ceiling_{kind}.sql"))
        scripts.append(("deduct_tokens", f"deduct_{kind}.sql"))
        totals = {label: [0, 0.0] for label, _ in scripts}
        for round_number in range(self.args.rounds):
            order = scripts[::-1] if round_number % 2 else scripts
            for label, name in order:
                count, elapsed, problem = self.run_pgbench(name, self.args.slice)
                if problem:
                    print(f"    {label}: {problem}", flush=True)
                totals[label][0] += count
                totals[label][1] += elapsed
        figures = [(label, c / e if e else 0.0) for label, (c, e) in totals.items()]
        floor = figures[0][1]
        print(f"  ladder, SQL {kind} (16 connections; x the floor):", flush=True)
        for label, rate in figures:
            print(
                f"    {rate:8.0f} tx/s  {rate / floor if floor else 0:5.2f}x  {label}", flush=True
            )
        return figures

    def report_case(self) -> dict[str, Any]:
        small, large = (1_000, 20_000) if self.args.quick else (1_000, 1_000_000)
        calls = 5 if self.args.quick else self.args.report_calls
        figures: dict[str, Any] = {"small": small, "large": large, "calls": calls}
        have = 0
        for size in (small, large):
            started = time.perf_counter()
            self.sql(
                "insert into public.ai_token_usage_log (organization_id, user_id, token_type,"
                " feature_used, tokens_deducted, balance_after, created_at) select %s, %s, "
                "'goal_generation', 'generate_goal', 3, 1000, "
                "now() - (g %% (29 * 24 * 60)) * interval '1 minute' from generate_series(1, %s) g",
                (self.report_org, self.report_user, size - have),
            )
            self.sql("analyze public.ai_token_usage_log")
            have = size
            load = time.perf_counter() - started
            times = []
            claims = json.dumps({"sub": str(self.report_user), "role": "authenticated"})
            rows = 0
            for _ in range(calls + 1):
                with self.db.transaction(), self.db.cursor() as cursor:
                    cursor.execute(
                        b"select set_config('role', 'authenticated', true), "
                        b"set_config('request.jwt.claims', %s, true)",
                        (claims,),
                    )
                    began = time.perf_counter()
                    cursor.execute(
                        b"select * from public.get_usage_report(%s, 'feature', "
                        b"now() - interval '30 days')",
                        (self.report_org,),
                    )
                    rows = cursor.fetchall()
                    times.append((time.perf_counter() - began) * 1000)
            figures[size] = statistics.median(times[1:])  # the first call warms the cache
            uses = rows[0][2] if rows else 0
            print(
                f"  report at {size:,} rows: median {figures[size]:.2f} ms of {calls} "
                f"(uses counted {uses:,}; rows loaded in {load:.1f} s)",
                flush=True,
            )
        figures["growth"] = figures[large] / figures[small] if figures[small] else 0.0
        return figures

    def profile(self) -> list[str]:
        """Time the pieces of deduct_tokens, each alone: pgbench, one connection, a
        transaction per call with a spread member's claims, as postgres (the owner its
        security definer runs as); the empty transaction's latency is subtracted. A rough
        breakdown of where one call's time goes (pg_stat_statements is not on this stack)."""
        user, org = self.sql(
            "select user_id, organization_id from bench.members where kind = 'spread' and n = 7"
        )[0]
        claims = json.dumps({"sub": str(user), "role": "authenticated"})
        rules = "select id from public.ai_rate_limits where organization_id = %s"
        rule = self.sql(rules, (org,))[0][0]
        journaled_update = (
            "SELECT set_config('tokens.change', '{\"kind\": \"deduction\"}', true);\n"
            "UPDATE public.ai_tokens t SET balance = t.balance - 3, updated_at = now()"
            f" WHERE t.organization_id = '{org}' AND t.token_type = 'goal_generation'"
            " AND t.balance - t.reserved >= 3 AND t.settle_after > now();\n"
            "SELECT set_config('tokens.change', '', true);"
        )
        usage_insert = (
            "INSERT INTO public.ai_token_usage_log (organization_id, user_id, token_type,"
            f" feature_used, tokens_deducted, balance_after) VALUES ('{org}', '{user}',"
            " 'goal_generation', 'generate_goal', 3, 1);"
        )
        floor = (
            "UPDATE bench.account SET balance = balance - 3 WHERE id = 7 AND balance >= 3;\n"
            "INSERT INTO bench.journal (account_id, amount) VALUES (7, 3);"
        )
        pieces = [
            ("empty transaction (subtracted)", ""),
            ("auth.uid()", "SELECT auth.uid();"),
            (
                "spend_context (claims, membership, plan, price, mode, rate rule)",
                "SELECT * FROM ai_tokens_internal.spend_context('generate_goal', NULL, NULL,"
                " true);",
            ),
            (
                "take_rate_slot (the user's window row)",
                f"SELECT ai_tokens_internal.take_rate_slot('{user}', '{org}', {rule}, 1000000,"
                f" {self.args.rate_window});",
            ),
            ("update ai_tokens + journal trigger (ledger row)", journaled_update),
            ("insert usage log row (+ rollup by its statement trigger)", usage_insert),
            ("floor: update bench.account + insert bench.journal", floor),
            ("deduct_tokens, whole", "SELECT public.deduct_tokens('generate_goal', NULL, NULL);"),
        ]
        seconds = 1 if self.args.quick else 2
        lines, base = [], 0.0
        for number, (label, body) in enumerate(pieces):
            script = self.tmp / f"piece_{number}.sql"
            script.write_text(
                "BEGIN;\n"
                f"SELECT set_config('request.jwt.claims', '{claims}', true);\n"
                f"{body}\nCOMMIT;\n"
            )
            done = subprocess.run(
                [
                    self.pgbench,
                    "-n",
                    "-M",
                    "prepared",
                    "-c",
                    "1",
                    "-T",
                    str(seconds),
                    "-f",
                    str(script),
                    self.env.db_url,
                ],
                capture_output=True,
                text=True,
                timeout=seconds + 60,
            )
            found = re.search(r"latency average = ([\d.]+) ms", done.stdout)
            if done.returncode != 0 or not found:
                error = (done.stderr.strip().splitlines() or ["?"])[-1]
                lines.append(f"  (failed) {label}: {error[:100]}")
                continue
            latency = float(found.group(1))
            if number == 0:
                base = latency
                lines.append(f"  {latency:7.3f} ms  {label}")
            else:
                lines.append(f"  {latency - base:7.3f} ms  {label}")
        return lines

    def close(self) -> None:
        try:
            self.cleanup()
        finally:
            self.db.close()
            shutil.rmtree(self.tmp, ignore_errors=True)


def verdict(value: float, target: float, higher_is_better: bool = True) -> str:
    good = value >= target if higher_is_better else value <= target
    return "PASS" if good else "MISS"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny durations: a smoke check")
    parser.add_argument("--slice", type=float, default=3.0, help="seconds per slice")
    parser.add_argument("--rounds", type=int, default=3, help="floor/deduct pairs per case")
    parser.add_argument("--report-calls", type=int, default=15)
    parser.add_argument(
        "--cases",
        default="sql-hot,sql-spread,http-hot,http-spread,report,profile",
        help="comma-separated subset of: sql-hot, sql-spread, http-hot, http-spread, report,"
        " profile, ladder-hot, ladder-spread (the rows one by one; not in the default set)",
    )
    parser.add_argument(
        "--rate-window",
        type=int,
        default=1,
        help="window of the bench orgs' (never refusing) rate limit, seconds",
    )
    args = parser.parse_args()
    if args.quick:
        args.slice, args.rounds = 1.0, 1

    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # progress shows when piped
    bench = Bench(args)
    results: list[dict[str, Any]] = []
    report: dict[str, Any] = {}
    load_before = os.getloadavg()
    started = time.perf_counter()
    try:
        bench.setup()
        print(
            f"measuring: {args.rounds} x ({args.slice:g} s floor + {args.slice:g} s deduct) "
            f"per case, {CONNECTIONS} connections",
            flush=True,
        )
        chosen = {c.strip() for c in args.cases.split(",") if c.strip()}
        for name, case in (
            ("sql-hot", lambda: bench.sql_case("hot")),
            ("sql-spread", lambda: bench.sql_case("spread")),
            ("http-hot", lambda: bench.http_case("hot")),
            ("http-spread", lambda: bench.http_case("spread")),
        ):
            if name in chosen:
                results.append(case())
        for kind in ("hot", "spread"):
            if f"ladder-{kind}" in chosen:
                bench.ladder(kind)
        if "report" in chosen:
            report = bench.report_case()
        profile = bench.profile() if "profile" in chosen and not args.quick else []
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", file=sys.stderr)
        sys.exit(130)
    finally:
        bench.close()

    load_after = os.getloadavg()
    print()
    print(
        "| case | floor | ceiling (the rows alone) | deduct_tokens | ratio | target | |"
        " ceiling / floor | deduct / ceiling |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        target = TARGETS[r["case"]]
        unit = "tx/s" if r["case"].startswith("SQL") else "2xx/s"
        print(
            f"| {r['case']} | {r['floor']:.0f} {unit} | {r['ceiling']:.0f} {unit} | "
            f"{r['deduct']:.0f} {unit} | {r['ratio']:.2f}x | >= {target}x | "
            f"{verdict(r['ratio'], target)} | {r['ceiling_ratio']:.2f}x | {r['of_ceiling']:.2f}x |"
        )
    if report:
        small, large = report["small"], report["large"]
        print(f"| report {small:,} rows | | | {report[small]:.2f} ms | | | | | |")
        print(
            f"| report {large:,} rows | | | {report[large]:.2f} ms | {report['growth']:.2f}x growth"
            f" | <= {REPORT_GROWTH_TARGET}x"
            f" | {verdict(report['growth'], REPORT_GROWTH_TARGET, False)} | | |"
        )
    problems = [
        f"{r['case']} {side}: {p}"
        for r in results
        for side in ("floor", "ceiling", "deduct")
        for p in r[side + "_problems"][:2]
    ]
    if problems:
        print("\nproblems (only 2xx / committed transactions count):")
        for line in problems:
            print("  " + line)
    if profile:
        print("\ninside deduct_tokens, piece by piece (pgbench, 1 connection, over an empty tx):")
        print("\n".join(profile))
    print(
        f"\nload average before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
        f"{time.perf_counter() - started:.0f} s in all; "
        f"targets are information, not a pass/fail of this run"
    )


if __name__ == "__main__":
    main()
