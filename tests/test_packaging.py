"""What the wheel carries and what `tokens functions export` writes (no stack needed)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from typer.testing import CliRunner

from tokens_client.cli import app

ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS = ROOT / "supabase" / "functions"


def shipped(folder: Path) -> list[str]:
    return sorted(
        str(path.relative_to(folder))
        for path in folder.rglob("*")
        if path.is_file() and not any(part.startswith(".") for part in path.parts)
    )


def test_the_wheel_carries_migrations_and_functions(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("tokens_client-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in shipped(FUNCTIONS):
        assert f"tokens_client/functions/{name}" in names
    assert any(n.startswith("tokens_client/migrations/") and n.endswith(".sql") for n in names)
    assert not [n for n in names if "/." in n or n.endswith(".env")], "no dot files, no secrets"
    metadata = (
        zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    )
    runtime = [
        line
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    assert not [line for line in runtime if "typer" in line or "rich" in line or "pytest" in line]


def test_functions_export_copies_then_skips_then_refuses(tmp_path: Path) -> None:
    runner = CliRunner()
    target = tmp_path / "supabase" / "functions"
    first = runner.invoke(app, ["functions", "export", str(target)])
    assert first.exit_code == 0, first.output
    assert shipped(target) == shipped(FUNCTIONS)
    for name in shipped(FUNCTIONS):
        assert (target / name).read_bytes() == (FUNCTIONS / name).read_bytes()
    again = runner.invoke(app, ["functions", "export", str(target)])
    assert again.exit_code == 0
    assert "0 written" in again.stdout
    (target / "tokens" / "index.ts").write_text("// my edit\n")
    refused = runner.invoke(app, ["functions", "export", str(target)])
    assert refused.exit_code == 1
    assert "function_conflict" in refused.stderr
    assert (target / "tokens" / "index.ts").read_text() == "// my edit\n"
