"""Keep supabase/schemas/ (the source) and supabase/migrations/ (what users apply) in step.

    .venv/bin/python scripts/schema_tool.py check           # exit 1 when they differ
    .venv/bin/python scripts/schema_tool.py diff            # print the SQL that differs
    .venv/bin/python scripts/schema_tool.py new NAME        # write it as the next migration
    .venv/bin/python scripts/schema_tool.py checksums       # record released migrations

``scripts/new-migration NAME`` is the short form of ``new``. Each command builds two
scratch databases on the running local stack (or the server of SUPABASE_DB_URL) from the
bootstrap template: one from the starter schema + every migration, one from the starter
schema + every file of supabase/schemas/, and compares them with migra (schemas, tables,
columns, constraints, indexes, functions, policies, privileges, triggers).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "supabase" / "schemas"
MIGRATIONS = ROOT / "supabase" / "migrations"
STARTER = ROOT / "supabase" / "starter" / "guide_app.sql"
CHECKSUMS = ROOT / "supabase" / "released-migrations.sha256"
TEMPLATE_DB = "tokens_bootstrap_template"


def server_url() -> str:
    """The database URL of the running stack (SUPABASE_DB_URL, else ``tokens stack env``)."""
    url = os.environ.get("SUPABASE_DB_URL")
    if url:
        return url
    from tokens_client.stack import Stack

    return Stack().status().db_url


def database_url(url: str, name: str) -> str:
    base, _, rest = url.rpartition("/")
    query = rest.partition("?")[2]
    return f"{base}/{name}" + (f"?{query}" if query else "")


def apply(url: str, path: Path) -> None:
    """Run one SQL file as users do (psql, stop on the first error)."""
    result = subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", str(path)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PGSSLMODE": "disable", "PGOPTIONS": "-c client_min_messages=warning"},
    )
    if result.returncode != 0:
        raise SystemExit(f"{path.relative_to(ROOT)}: {result.stderr.strip()}")


@contextlib.contextmanager
def scratch_database(prefix: str, files: list[Path]) -> Iterator[str]:
    """A database cloned from the bootstrap template with ``files`` applied; dropped after."""
    url = server_url()
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"create database {name} template {TEMPLATE_DB}")
    try:
        scratch = database_url(url, name)
        for path in files:
            apply(scratch, path)
        yield scratch
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"drop database if exists {name} with (force)")


def migration_files() -> list[Path]:
    return sorted(MIGRATIONS.glob("*.sql"))


def schema_files() -> list[Path]:
    return sorted(SCHEMAS.glob("*.sql"))


def compare(before: list[Path], after: list[Path]) -> str:
    """The SQL that turns a database built from ``before`` into one built from ``after``."""
    with (
        scratch_database("tokens_before", before) as first,
        scratch_database("tokens_after", after) as second,
    ):
        result = subprocess.run(
            [
                str(Path(sys.executable).with_name("migra")),
                "--unsafe",
                "--with-privileges",
                migra_url(first),
                migra_url(second),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    # migra: 0 = no differences, 2 = differences found, anything else an error.
    if result.returncode not in (0, 2):
        raise SystemExit(f"migra failed: {result.stderr.strip()[-2000:]}")
    return result.stdout.strip()


def diff() -> str:
    """From a database built from the migrations to one built from supabase/schemas/."""
    return compare([STARTER, *migration_files()], [STARTER, *schema_files()])


def migra_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg2://", 1)


def new_migration(name: str) -> Path | None:
    sql = diff()
    if not sql:
        return None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S")
    path = MIGRATIONS / f"{stamp}_{name}.sql"
    path.write_text(
        f"-- tokens-client: {name.replace('_', ' ')}.\n"
        "-- Written by scripts/new-migration from the difference between supabase/schemas/\n"
        "-- and the migrations before it. Review it; make it safe to run twice.\n\n"
        f"{sql}\n"
    )
    return path


def checksums() -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in migration_files()}


def write_checksums() -> None:
    lines = [f"{digest}  {name}" for name, digest in checksums().items()]
    CHECKSUMS.write_text("\n".join(lines) + "\n")


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "check"
    if command == "check":
        sql = diff()
        if sql:
            print(sql)
            print("\nsupabase/schemas/ and supabase/migrations/ differ:", file=sys.stderr)
            print("run scripts/new-migration NAME", file=sys.stderr)
            return 1
        print("supabase/schemas/ and supabase/migrations/ build the same schema")
        return 0
    if command == "diff":
        print(diff())
        return 0
    if command == "new" and len(argv) == 2:
        path = new_migration(argv[1])
        print(path.relative_to(ROOT) if path else "no difference: nothing written")
        return 0
    if command == "checksums":
        write_checksums()
        print(CHECKSUMS.relative_to(ROOT))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
