"""The SQL that tokens-client ships, and its export into a project's migrations.

An existing Supabase project has migrations of its own, usually newer than ours.
``supabase migration up`` refuses a file older than the last one it applied, so
:func:`export_migrations` stamps each of our migrations with the time of export (after
every migration already in the directory, in our order) and remembers, in a manifest
beside the directory, which of our migrations became which file. The next export writes
only what is new. A file the user edited after export is theirs: it is never rewritten
and never stops a new release from being written.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from ._errors import ConfigurationError

MANIFEST_NAME = "tokens-client-migrations.json"
STARTER_KEY = "starter/guide_app.sql"
_STAMPED = re.compile(r"^(\d{14})_(.+\.sql)$")


@dataclass(frozen=True)
class Migration:
    """One SQL file shipped with tokens-client (a migration, or the starter schema)."""

    name: str
    sql: bytes

    @property
    def summary(self) -> str:
        """The first sentence of its opening comment: what the migration is for."""
        words: list[str] = []
        for line in self.sql.decode().splitlines():
            if not line.startswith("--") or not line.strip("- "):
                break
            words.append(line.lstrip("-").strip())
        opening = " ".join(words)
        return opening.split(". ")[0].rstrip(".") + "." if opening else ""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql).hexdigest()

    @property
    def stem(self) -> str:
        """The name without its timestamp: ``tokens_client.sql``."""
        match = _STAMPED.match(self.name)
        return match.group(2) if match else self.name.replace("/", "_")

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "bytes": len(self.sql),
            "sha256": self.sha256,
            "summary": self.summary,
        }


def _read_sql(entries: Iterable[Traversable]) -> list[Migration]:
    migrations = [Migration(e.name, e.read_bytes()) for e in entries if e.name.endswith(".sql")]
    return sorted(migrations, key=lambda migration: migration.name)


def _shipped_dir(name: str) -> Traversable | None:
    """``tokens_client/<name>`` in the wheel, else ``supabase/<name>`` of the checkout."""
    packaged = resources.files("tokens_client").joinpath(name)
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "supabase" / name
    return checkout if checkout.is_dir() else None


def shipped_migrations() -> list[Migration]:
    """Our migrations, in the order they apply."""
    directory = _shipped_dir("migrations")
    if directory is None:
        raise ConfigurationError(
            "this installation of tokens-client has no SQL migrations (a broken wheel?)",
            reason="migrations_missing",
        )
    return _read_sql(directory.iterdir())


def starter_schema() -> Migration:
    """The optional starter schema: the guide's host tables, for a new project only."""
    directory = _shipped_dir("starter")
    if directory is None or not directory.joinpath("guide_app.sql").is_file():
        raise ConfigurationError(
            "this installation of tokens-client has no starter schema (a broken wheel?)",
            reason="migrations_missing",
        )
    return Migration(STARTER_KEY, directory.joinpath("guide_app.sql").read_bytes())


@dataclass(frozen=True)
class Export:
    """What :func:`export_migrations` did: file names written and shipped names skipped."""

    directory: Path
    manifest: Path
    written: list[str]
    skipped: list[str]

    def as_json(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "manifest": str(self.manifest),
            "written": self.written,
            "skipped": self.skipped,
        }


def manifest_path(directory: Path) -> Path:
    """Beside the migrations directory (the Supabase CLI reads every file inside it)."""
    return directory.parent / MANIFEST_NAME


def _load_manifest(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"exported": {}}
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except ValueError as error:
        raise ConfigurationError(
            f"{path} is not valid JSON; fix or delete it", reason="manifest_invalid"
        ) from error
    data.setdefault("exported", {})
    return data


def _latest_stamp(directory: Path) -> datetime | None:
    stamps = [
        datetime.strptime(match.group(1), "%Y%m%d%H%M%S").replace(tzinfo=timezone.utc)
        for path in directory.glob("*.sql")
        if (match := _STAMPED.match(path.name))
    ]
    return max(stamps, default=None)


def export_migrations(
    directory: Path, *, starter: bool = False, now: datetime | None = None
) -> Export:
    """Write our migrations not exported before into ``directory``, stamped for it.

    Each new file is named ``<UTC stamp>_<our name>``: the stamp is the export time, or
    one second after the newest migration already in the directory when that is later,
    increasing in our order. With ``starter`` the starter schema is written first (for a
    new project; an existing app never needs it). The manifest beside the directory maps
    each of our migrations to the file it became, with the checksum it had when written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    manifest_file = manifest_path(directory)
    manifest = _load_manifest(manifest_file)
    exported: dict[str, Any] = manifest["exported"]

    wanted = ([starter_schema()] if starter else []) + shipped_migrations()
    stamp = max(
        (now or datetime.now(timezone.utc)).replace(microsecond=0),
        (_latest_stamp(directory) or datetime.min.replace(tzinfo=timezone.utc))
        + timedelta(seconds=1),
    )
    written: list[str] = []
    skipped: list[str] = []
    for migration in wanted:
        if migration.name in exported:
            skipped.append(migration.name)
            continue
        file_name = f"{stamp:%Y%m%d%H%M%S}_{migration.stem}"
        (directory / file_name).write_bytes(migration.sql)
        exported[migration.name] = {"file": file_name, "sha256": migration.sha256}
        written.append(file_name)
        stamp += timedelta(seconds=1)
    if written:
        manifest_file.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return Export(directory, manifest_file, written, skipped)
