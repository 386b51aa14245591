"""The Edge Functions shipped inside the package (``tokens functions export DIR``).

The wheel carries ``supabase/functions`` as ``tokens_client/functions`` (hatch
force-include); a checkout reads them from ``supabase/functions``. Dot files (a local
``.env`` with secrets) are never shipped nor exported.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from tokens_client._errors import ConfigurationError, Conflict

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable


def _walk(folder: Traversable, prefix: str = "") -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for entry in folder.iterdir():
        if entry.name.startswith(".") or entry.name == "__pycache__":
            continue
        name = f"{prefix}{entry.name}"
        if entry.is_dir():
            files.update(_walk(entry, f"{name}/"))
        else:
            files[name] = entry.read_bytes()
    return files


def shipped_functions() -> dict[str, bytes]:
    """Every file of the Edge Functions by relative path (``tokens/index.ts`` …).

    Raises ConfigurationError when this installation has none (a broken wheel).
    """
    packaged = resources.files("tokens_client").joinpath("functions")
    if packaged.is_dir():
        return dict(sorted(_walk(packaged).items()))
    checkout = Path(__file__).resolve().parents[2] / "supabase" / "functions"
    if checkout.is_dir():
        return dict(sorted(_walk(checkout).items()))
    raise ConfigurationError(
        "this installation of tokens-client has no Edge Functions (a broken wheel?)",
        reason="functions_missing",
    )


def export_functions(directory: Path) -> tuple[list[str], list[str]]:
    """Copy the functions into ``directory``: (written, skipped as identical).

    Raises Conflict (``function_conflict``), writing nothing, when a file differs.
    """
    return export_files(shipped_functions(), directory, reason="function_conflict")


def export_files(
    files: Mapping[str, bytes], directory: Path, *, reason: str
) -> tuple[list[str], list[str]]:
    """Write ``files`` (relative path -> content) below ``directory``, never overwriting:
    (written, skipped as identical). One policy for every file set the package ships.

    Raises Conflict with ``reason``, writing nothing, when a file of the same path differs.
    """
    conflicts = [
        name
        for name, content in files.items()
        if (directory / name).is_file() and (directory / name).read_bytes() != content
    ]
    if conflicts:
        raise Conflict(
            f"{directory / conflicts[0]} exists and differs from tokens-client's; nothing "
            "was written (move it aside or export elsewhere)",
            reason=reason,
            facts={"conflicts": conflicts},
        )
    written: list[str] = []
    skipped: list[str] = []
    for name, content in files.items():
        target = directory / name
        if target.exists():
            skipped.append(name)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        written.append(name)
    return written, skipped
