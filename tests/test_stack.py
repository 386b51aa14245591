"""`tokens stack`: a second, private stack on free ports, driven like a user would."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from tokens_client.stack import Stack

PROJECT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tokens(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tokens_client", *args],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.fixture(scope="module")
def private_stack() -> Iterator[dict[str, str]]:
    # Not pytest's tmp_path: that is private to root (0700) and PostgreSQL runs as the
    # postgres OS user when the tests run as root.
    base = Path(tempfile.mkdtemp(prefix="tokens-stack-"))
    base.chmod(0o755)
    env = {
        **os.environ,
        "TOKENS_STACK_DIR": str(base / "stack"),
        "TOKENS_API_PORT": str(_free_port()),
        "TOKENS_DB_PORT": str(_free_port()),
        "TOKENS_REST_PORT": str(_free_port()),
        "TOKENS_REST_ADMIN_PORT": str(_free_port()),
        "TOKENS_FUNCTIONS_PORT": str(_free_port()),
    }
    for key in ("SUPABASE_URL", "SUPABASE_DB_URL"):
        env.pop(key, None)
    up = _tokens(env, "stack", "up")
    assert up.returncode == 0, up.stderr
    yield env
    _tokens(env, "stack", "down")
    shutil.rmtree(base, ignore_errors=True)


def test_status_json_is_machine_readable(private_stack: dict[str, str]) -> None:
    result = _tokens(private_stack, "stack", "status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    for key in ("api_url", "db_url", "jwt_secret", "anon_key", "service_role_key"):
        assert status[key], key
    assert status["api_url"] == f"http://127.0.0.1:{private_stack['TOKENS_API_PORT']}"
    assert f":{private_stack['TOKENS_DB_PORT']}/" in status["db_url"]
    for key, role in (("anon_key", "anon"), ("service_role_key", "service_role")):
        claims = jwt.decode(status[key], status["jwt_secret"], algorithms=["HS256"])
        assert claims["role"] == role
    assert all(status["components"].values())


def test_up_twice_is_harmless(private_stack: dict[str, str]) -> None:
    before = json.loads(_tokens(private_stack, "stack", "status", "--json").stdout)
    again = _tokens(private_stack, "stack", "up", "--json")
    assert again.returncode == 0, again.stderr
    after = json.loads(again.stdout)
    assert after["jwt_secret"] == before["jwt_secret"]
    assert after["anon_key"] == before["anon_key"]


def test_private_stack_serves_the_api(private_stack: dict[str, str]) -> None:
    from tokens_client import TokensAdmin

    status = json.loads(_tokens(private_stack, "stack", "status", "--json").stdout)
    with TokensAdmin(status["api_url"], status["service_role_key"]) as admin:
        names = {org.name for org in admin.organizations()}
    assert {"Acme", "Tinkerers"} <= names, "seed.sql is applied on first start"
    with TokensAdmin(status["api_url"], status["secret_key"]) as admin:  # sb_secret_ form
        assert admin.stats("00000000-0000-4000-b000-00000000ac3e").plan == "pro"


def test_reset_starts_a_fresh_database_with_the_same_keys(private_stack: dict[str, str]) -> None:
    from tokens_client import TokensAdmin

    before = json.loads(_tokens(private_stack, "stack", "status", "--json").stdout)
    with TokensAdmin(before["api_url"], before["service_role_key"]) as admin:
        admin.create_organization("Made before the reset", plan="pro")
    reset = _tokens(private_stack, "stack", "reset", "--json")
    assert reset.returncode == 0, reset.stderr
    after = json.loads(reset.stdout)
    assert all(after["components"].values())
    assert (after["jwt_secret"], after["anon_key"]) == (before["jwt_secret"], before["anon_key"])
    with TokensAdmin(after["api_url"], after["service_role_key"]) as admin:
        names = {org.name for org in admin.organizations()}
    assert "Made before the reset" not in names
    assert {"Acme", "Tinkerers"} <= names, "bootstrap, migrations and seed ran again"


def test_a_database_from_before_supabase_admin_is_refused(private_stack: dict[str, str]) -> None:
    old = Path(private_stack["TOKENS_STACK_DIR"]).parent / "old"
    (old / "db").mkdir(parents=True)
    (old / "db" / "PG_VERSION").write_text("15\n")
    (old / "state.json").write_text("{}")
    result = _tokens({**private_stack, "TOKENS_STACK_DIR": str(old)}, "stack", "up")
    assert result.returncode != 0
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1
    assert "tokens stack reset" in message


def test_crashed_component_is_reported_and_restarted(private_stack: dict[str, str]) -> None:
    stack_dir = Path(private_stack["TOKENS_STACK_DIR"])
    pid = int((stack_dir / "run" / "postgrest.pid").read_text())
    os.killpg(pid, signal.SIGKILL)
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    status = _tokens(private_stack, "stack", "status")
    assert status.returncode == 1
    assert "postgrest" in status.stderr
    assert "not running" in status.stderr
    up = _tokens(private_stack, "stack", "up", "--json")
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout)["components"]["postgrest"] is True


def test_port_in_use_is_a_clear_error(private_stack: dict[str, str]) -> None:
    other = Path(private_stack["TOKENS_STACK_DIR"]).parent / "other"
    env = {**private_stack, "TOKENS_STACK_DIR": str(other)}
    env["TOKENS_DB_PORT"] = str(_free_port())  # everything else collides with the running one
    result = _tokens(env, "stack", "up")
    assert result.returncode != 0
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1
    assert "is in use" in message
    assert "TOKENS_" in message
    assert not (other / "db").exists(), "nothing is started when a port is taken"


def test_missing_tool_names_the_install_command(private_stack: dict[str, str]) -> None:
    env = {**private_stack, "TOKENS_PG_BIN": "/nonexistent/postgresql/bin"}
    result = _tokens(env, "stack", "up")
    assert result.returncode != 0
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1
    assert "initdb" in message
    assert "./scripts/install" in message


def test_down_stops_everything(private_stack: dict[str, str]) -> None:
    down = _tokens(private_stack, "stack", "down")
    assert down.returncode == 0, down.stderr
    status = _tokens(private_stack, "stack", "status", "--json")
    assert status.returncode == 1
    assert not any(json.loads(status.stdout)["components"].values())
    assert Stack._port_free(int(private_stack["TOKENS_API_PORT"]))
    up = _tokens(private_stack, "stack", "up")  # back up for the fixture's own teardown
    assert up.returncode == 0, up.stderr
