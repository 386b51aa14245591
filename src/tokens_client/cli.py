"""The ``tokens`` command line: the local stack, the demo, and service-role admin.

Service-role commands (``org``, ``stats``, ``usage``, ``alerts``, ``grant``, ``plan``,
``mode``, ``refresh``, ``ledger``, ``refund``) read ``SUPABASE_URL`` and
``SUPABASE_SERVICE_ROLE_KEY`` (or ``SUPABASE_SECRET_KEY``) from the environment or
``.env``; without ``SUPABASE_URL`` they use the running local stack (``tokens stack up``).
Every command takes ``--json``. Errors are one line on stderr, ``error: <why> (<reason>)``.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar
from uuid import UUID

import typer
from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from rich.padding import Padding
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from tokens_client._admin import TokensAdmin
from tokens_client._base import MAX_USAGE_ROWS as MAX_ROWS
from tokens_client._dashboard import (
    alerts_table,
    day,
    fit_to_width,
    jsonable,
    ledger_violations_table,
    moment,
    organizations_table,
    plan_change_table,
    stats_dashboard,
    usage_entries_table,
    usage_table,
)
from tokens_client._demo import USERS, Demo, DemoStep, write_dashboard_sessions
from tokens_client._errors import (
    ConfigurationError,
    InvalidRequest,
    OrganizationNotFound,
    TokensError,
)
from tokens_client._functions import export_functions
from tokens_client._migrations import export_migrations, shipped_migrations
from tokens_client._models import Organization, UsageGrouping
from tokens_client._webhooks import (
    DeliveryResult,
    WebhookDeliverer,
    delete_webhook_endpoint,
    new_webhook_secret,
    set_webhook_endpoint,
    webhook_endpoints,
)
from tokens_client.stack import Stack, StackError, StackStatus

if TYPE_CHECKING:
    pass

MODES = ("enforce", "monitor", "off", "inherit")

EXIT_CODES = """Exit codes: 0 done; 1 refused or failed (a TokensError such as
OrganizationNotFound or ServiceUnavailable, a migration conflict, the stack down, ledger
violations, token rows that failed to refresh);
2 configuration or usage error (ConfigurationError: missing or wrong keys; bad options)."""
EXIT_CODES_SHORT = "Exit codes: 0 done, 1 refused or failed, 2 configuration or usage error."

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help=__doc__,
    epilog=EXIT_CODES,
    rich_markup_mode="markdown",
)
stack_app = typer.Typer(no_args_is_help=True, help="The Docker-free local Supabase stack.")
org_app = typer.Typer(no_args_is_help=True, help="Organizations and their plans (service role).")
migrations_app = typer.Typer(
    no_args_is_help=True, help="The SQL migrations shipped in this package, for your project."
)
ledger_app = typer.Typer(
    no_args_is_help=True, help="The token journal: balance = sum of its movements (service role)."
)
app.add_typer(stack_app, name="stack")
app.add_typer(org_app, name="org")
app.add_typer(ledger_app, name="ledger")
app.add_typer(migrations_app, name="migrations")
functions_app = typer.Typer(
    no_args_is_help=True, help="The Edge Functions shipped in this package, for your project."
)
app.add_typer(functions_app, name="functions")

NARROW = 80  # below this many columns, tables drop their least useful columns
PIPE_WIDTH = 10_000  # not a terminal: never wrap or truncate


class CliConsole(Console):
    """rich's Console, made for pipes as well as terminals.

    Not a terminal: lines as wide as they are (no truncation at 80 columns) and no
    trailing padding. A terminal narrower than 80 columns: tables drop columns.
    """

    @property
    def size(self) -> ConsoleDimensions:
        if not self.is_terminal:
            return ConsoleDimensions(PIPE_WIDTH, super().size.height)
        return super().size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]

    def print(self, *objects: Any, **options: Any) -> None:
        if self.is_terminal and self.width < NARROW:
            objects = tuple(fit_to_width(item, self, self.width) for item in objects)
        super().print(*objects, **options)

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        text = super()._render_buffer(buffer)
        if self.is_terminal:
            return text
        return "\n".join(line.rstrip() for line in text.split("\n"))


console = CliConsole()
err_console = CliConsole(stderr=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
OrgArgument = Annotated[
    str, typer.Argument(metavar="ORG", help="Organization id, or its exact name.")
]
PLAN_HELP = "A plan of the catalog (the server refuses an unknown one: invalid_plan)."


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` on stderr as one line; return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@contextmanager
def reported_errors() -> Iterator[None]:
    """Turn an error into one line on stderr and an exit code (see EXIT_CODES)."""
    try:
        yield
    except ConfigurationError as error:
        raise fail(f"{error.message} ({error.reason})", code=2) from None
    except TokensError as error:
        raise fail(f"{error.message} ({error.reason})") from None
    except StackError as error:
        raise fail(str(error)) from None
    except OSError as error:
        raise fail(f"{error.strerror or error}: {error.filename or ''}".rstrip(": ")) from None


Choice = TypeVar("Choice", bound=str)


def one_of(value: str, allowed: tuple[Choice, ...], name: str) -> Choice:
    """``value`` when it is one of ``allowed``; else a one-line usage error (exit 2)."""
    for choice in allowed:
        if value == choice:
            return choice
    raise fail(f"{name} must be one of {', '.join(allowed)}, not {value!r}", code=2)


def whole_number(value: str, name: str) -> int:
    """``value`` as an int; else a one-line usage error (exit 2). Ranges are the API's."""
    try:
        return int(value)
    except ValueError:
        raise fail(f"{name} must be a whole number, not {value!r}", code=2) from None


def print_json(value: Any) -> None:
    """Machine-readable output on stdout (plain ``print``: no markup, no wrapping)."""
    print(json.dumps(jsonable(value), indent=2, ensure_ascii=False))


def _print_status(status: StackStatus, as_json: bool) -> None:
    if as_json:
        print(json.dumps(status.as_dict(), indent=2))
        return
    rows = [
        ("API URL", status.api_url),
        ("Functions URL", status.functions_url),
        ("DB URL", status.db_url),
        ("JWT secret", status.jwt_secret),
        ("anon key", status.anon_key),
        ("service_role key", status.service_role_key),
        ("Publishable key", status.publishable_key),
        ("Secret key", status.secret_key),
        ("Stripe webhook secret", status.stripe_webhook_secret),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        console.print(f"{name:>{width}}: {value}", highlight=False, soft_wrap=True)
    states = ", ".join(
        f"{name} {'[green]up[/]' if up else '[red]down[/]'}"
        for name, up in status.components.items()
    )
    console.print(f"{'components':>{width}}: {states}", highlight=False)


@stack_app.command("up")
def stack_up(as_json: JsonOption = False) -> None:
    """Start PostgreSQL (bootstrap, migrations, seed), PostgREST, the gateway and functions."""
    try:
        status = Stack().up()
    except StackError as error:
        raise fail(str(error)) from None
    if not as_json:
        console.print("[green]Local stack is running.[/]")
    _print_status(status, as_json)


@stack_app.command("down")
def stack_down(as_json: JsonOption = False) -> None:
    """Stop every component of the local stack (data is kept)."""
    try:
        Stack().down()
    except StackError as error:
        raise fail(str(error)) from None
    if as_json:
        print_json({"stopped": True})
        return
    console.print("Local stack stopped.")


@stack_app.command("reset")
def stack_reset(as_json: JsonOption = False) -> None:
    """Stop, delete the database and start a fresh one (bootstrap, migrations, seed)."""
    try:
        status = Stack().reset()
    except StackError as error:
        raise fail(str(error)) from None
    if not as_json:
        console.print("[green]Local stack reset to a fresh database and running.[/]")
    _print_status(status, as_json)


@stack_app.command("status")
def stack_status(as_json: JsonOption = False) -> None:
    """Print URLs and keys, like `supabase status`; exit 1 when something is down."""
    try:
        status = Stack().status()
    except StackError as error:
        raise fail(str(error)) from None
    _print_status(status, as_json)
    if not status.running:
        down = ", ".join(name for name, up in status.components.items() if not up)
        raise fail(f"{down} not running; start it with `tokens stack up`")


@stack_app.command("env")
def stack_env(as_json: JsonOption = False) -> None:
    """Print `export` lines for SUPABASE_URL, keys, JWT secrets and DB URL (for `eval`);
    exit 1, printing nothing, when the stack is not running (as `status` does)."""
    try:
        status = Stack().status()
    except StackError as error:
        raise fail(str(error)) from None
    if not status.running:
        down = ", ".join(name for name, up in status.components.items() if not up)
        raise fail(f"{down} not running; start it with `tokens stack up`")
    if as_json:
        print_json(status.as_env())
        return
    for key, value in status.as_env().items():
        print(f"export {key}={value}")


# ------------------------------------------------------------- service role


def local_stack() -> StackStatus:
    """The running local stack, or a ConfigurationError saying how to get one."""
    try:
        status = Stack().status()
    except StackError as error:
        raise ConfigurationError(
            f"SUPABASE_URL is not set (environment or .env) and there is no local stack: {error}"
        ) from None
    if not status.running:
        raise ConfigurationError(
            "SUPABASE_URL is not set (environment or .env) and the local stack is not "
            "running: start it with `tokens stack up`"
        )
    return status


def connect_admin() -> TokensAdmin:
    """``TokensAdmin.from_env()``; without ``SUPABASE_URL``, the running local stack."""
    try:
        return TokensAdmin.from_env()
    except ConfigurationError:
        if os.environ.get("SUPABASE_URL"):
            raise
    status = local_stack()
    return TokensAdmin(status.api_url, status.service_role_key)


@contextmanager
def service_role() -> Iterator[TokensAdmin]:
    """A connected admin client, closed afterwards; errors reported as one line."""
    with reported_errors():
        admin = connect_admin()
        try:
            yield admin
        finally:
            admin.close()


def as_uuid(text: str) -> UUID | None:
    """``text`` as a UUID, None when it is not one (then it is a name)."""
    try:
        return UUID(text)
    except ValueError:
        return None


def find_organization(admin: TokensAdmin, ref: str) -> Organization:
    """``ref`` is an id (looked up alone) or an exact (case-insensitive) name.

    Raises OrganizationNotFound, or InvalidRequest when several share the name.
    """
    organization_id = as_uuid(ref)
    if organization_id is not None:
        return admin.organization(organization_id)
    named = admin.organizations(name=ref)  # the server filters; nothing else is fetched
    if not named:
        raise OrganizationNotFound(f"No organization named {ref!r}", facts={"name": ref})
    if len(named) > 1:
        raise InvalidRequest(
            f"{len(named)} organizations are named {ref!r}: give the id instead",
            reason="ambiguous_organization",
            facts={"ids": [str(o.id) for o in named]},
        )
    return named[0]


def organization_id_of(admin: TokensAdmin, ref: str) -> UUID:
    """An id as it is (the API checks it exists); a name looked up."""
    return as_uuid(ref) or find_organization(admin, ref).id


@org_app.command("list", epilog=EXIT_CODES_SHORT)
def org_list(as_json: JsonOption = False) -> None:
    """Every organization with its plan and id."""
    with service_role() as admin:
        organizations = admin.organizations()
    if as_json:
        print_json(organizations)
        return
    console.print(organizations_table(organizations))


@org_app.command("init", epilog=EXIT_CODES_SHORT)
def org_init(
    org: OrgArgument,
    plan: Annotated[
        str | None, typer.Option("--plan", help="Move it to this plan first (default: keep).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create or reset an organization's tokens to its plan's allocation (initializeTokens)."""
    with service_role() as admin:
        if as_json:
            print_json(admin.initialize_tokens(organization_id_of(admin, org), plan=plan))
            return
        organization = find_organization(admin, org)
        admin.initialize_tokens(organization.id, plan=plan)
        stats = admin.stats(organization.id)
    console.print(
        f"[green]✓[/] Tokens of {escape(organization.name)} reset to the {stats.plan} allocation",
        highlight=False,
    )
    console.print(stats_dashboard(stats, organization.name))


@org_app.command("create", epilog=EXIT_CODES_SHORT)
def org_create(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The organization's name.")],
    plan: Annotated[
        str | None, typer.Option("--plan", help=f"{PLAN_HELP} Default: the table's default.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create an organization on a plan and initialize its tokens."""
    with service_role() as admin:
        organization = admin.create_organization(name, plan=plan)
        balances = admin.initialize_tokens(organization.id)
        if as_json:
            print_json({"organization": organization, "balances": balances})
            return
        stats = admin.stats(organization.id)
    console.print(
        f"[green]✓[/] Created {escape(organization.name)} on {organization.plan}: "
        f"{organization.id}",
        highlight=False,
    )
    console.print(stats_dashboard(stats, organization.name))


@app.command("stats", epilog=EXIT_CODES_SHORT)
def stats_command(org: OrgArgument, as_json: JsonOption = False) -> None:
    """The token dashboard: a bar per token type, what is left, refresh dates, low warnings.

    Purchased tokens, tokens held by reservations and what is available now are shown
    when the organization has any; so is its enforcement mode when it is not enforce.
    """
    with service_role() as admin:
        if as_json:
            print_json(admin.stats(organization_id_of(admin, org)))
            return
        organization = find_organization(admin, org)
        stats = admin.stats(organization.id)
    console.print(stats_dashboard(stats, organization.name))


_DURATION = re.compile(r"(\d+)\s*(w|d|h|m|s)")
_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def parse_since(text: str, now: datetime | None = None) -> datetime | None:
    """``30d``, ``12h``, ``90m``, ``2w``, an ISO date or datetime (UTC unless it says), ``all``.

    Raises ValueError for anything else.
    """
    value = text.strip().lower()
    if value == "all":
        return None
    duration = _DURATION.fullmatch(value)
    if duration:
        amount = timedelta(**{_UNITS[duration.group(2)]: int(duration.group(1))})
        return (now or datetime.now(timezone.utc)) - amount
    parsed = _iso(text)
    if parsed is None:
        raise ValueError(
            f"--since must be a duration (30d, 12h, 90m), an ISO date or `all`, not {text!r}"
        )
    return parsed


def _iso(text: str) -> datetime | None:
    """An ISO date or datetime, UTC unless it says otherwise; None when it is not one."""
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def parse_expires(text: str, now: datetime | None = None) -> datetime:
    """``30d``, ``12h``, ``2w`` from now, or an ISO date (midnight UTC) or datetime.

    Raises ValueError for anything else. A moment in the past is the API's to refuse.
    """
    duration = _DURATION.fullmatch(text.strip().lower())
    if duration:
        amount = timedelta(**{_UNITS[duration.group(2)]: int(duration.group(1))})
        return (now or datetime.now(timezone.utc)) + amount
    parsed = _iso(text)
    if parsed is None:
        raise ValueError(
            f"--expires must be a duration from now (30d, 12h, 2w) or an ISO date, not {text!r}"
        )
    return parsed


def _period(start: datetime | None, since: str) -> str:
    """``since 2026-10-24 (last 30d)``, or ``all time``."""
    if start is None:
        return "all time"
    period = f"since {day(start)}"
    if _DURATION.fullmatch(since.strip().lower()):
        period += f" (last {since.strip()})"
    return period


@app.command("usage", epilog=EXIT_CODES_SHORT)
def usage_command(
    org: OrgArgument,
    by: Annotated[UsageGrouping, typer.Option("--by", help="Group by feature, user or day.")] = (
        "feature"
    ),
    since: Annotated[
        str, typer.Option("--since", help="30d, 12h, 90m, an ISO date, or all.")
    ] = "30d",
    entries: Annotated[
        bool,
        typer.Option(
            "--entries",
            help="List each usage entry with its id (for `tokens refund`), newest first.",
        ),
    ] = False,
    limit: Annotated[
        int, typer.Option("--limit", metavar="N", help=f"With --entries: at most N (1-{MAX_ROWS}).")
    ] = 100,
    as_json: JsonOption = False,
) -> None:
    """Uses and tokens of an organization, by feature, user or day (the guide's queries),
    or each usage entry with --entries.
    """
    try:
        start = parse_since(since)
    except ValueError as error:
        raise fail(str(error), code=2) from None
    if not 1 <= limit <= MAX_ROWS:
        raise fail(f"--limit must be between 1 and {MAX_ROWS}, not {limit}", code=2)
    if entries:
        _usage_entries(org, start, since, limit, as_json)
        return
    with service_role() as admin:
        if as_json:
            print_json(admin.usage_report(organization_id_of(admin, org), by=by, since=start))
            return
        organization = find_organization(admin, org)
        rows = admin.usage_report(organization.id, by=by, since=start)
    title = f"Usage of {organization.name} by {by}, {_period(start, since)}"
    console.print(usage_table(rows, by, title))


def _newest_rows(
    org: str,
    fetch: Callable[[TokensAdmin, UUID], Sequence[Any]],
    render: Callable[[Any, str], Any],
    heading: str,
    limit: int,
    as_json: bool,
) -> None:
    """A newest-first listing of one organization's rows (usage entries, alerts)."""
    with service_role() as admin:
        if as_json:
            print_json(fetch(admin, organization_id_of(admin, org)))
            return
        organization = find_organization(admin, org)
        rows = fetch(admin, organization.id)
    console.print(render(rows, heading.format(name=organization.name)))
    if len(rows) == limit:
        console.print(f"Showing the newest {limit}; --limit shows more.", style="dim")


def _usage_entries(org: str, start: datetime | None, since: str, limit: int, as_json: bool) -> None:
    _newest_rows(
        org,
        lambda admin, organization_id: admin.usage(organization_id, since=start, limit=limit),
        usage_entries_table,
        f"Usage entries of {{name}}, {_period(start, since)}",
        limit,
        as_json,
    )


@app.command("alerts", epilog=EXIT_CODES_SHORT)
def alerts_command(
    org: OrgArgument,
    since: Annotated[
        str, typer.Option("--since", help="7d, 12h, 90m, an ISO date, or all.")
    ] = "7d",
    limit: Annotated[
        int, typer.Option("--limit", metavar="N", help=f"At most N alerts (1-{MAX_ROWS}).")
    ] = 100,
    as_json: JsonOption = False,
) -> None:
    """The organization's alerts, newest first: balances crossing 80 % used, 20 % left and
    zero (highlighted), and every refused spend (out of tokens, rate limited, not in plan).
    """
    try:
        start = parse_since(since)
    except ValueError as error:
        raise fail(str(error), code=2) from None
    if not 1 <= limit <= MAX_ROWS:
        raise fail(f"--limit must be between 1 and {MAX_ROWS}, not {limit}", code=2)
    _newest_rows(
        org,
        lambda admin, organization_id: admin.alerts(organization_id, since=start, limit=limit),
        alerts_table,
        f"Alerts of {{name}}, {_period(start, since)}",
        limit,
        as_json,
    )


@app.command("grant", epilog=EXIT_CODES_SHORT)
def grant_command(
    org: OrgArgument,
    token_type: Annotated[
        str, typer.Option("--type", metavar="TOKEN_TYPE", help="e.g. general, goal_generation.")
    ],
    amount: Annotated[
        str, typer.Option("--amount", metavar="N", help="Tokens to add (1 or more).")
    ],
    expires: Annotated[
        str | None,
        typer.Option(
            "--expires", help="30d, 2w from now, or an ISO date/datetime (default: never)."
        ),
    ] = None,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why, kept in the journal.")
    ] = None,
    external_id: Annotated[
        str | None,
        typer.Option(
            "--external-id",
            metavar="ID",
            help="e.g. a Stripe checkout id: the same id grants only once.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Top up: add purchased tokens, kept over refreshes and spent after the allowance."""
    tokens = whole_number(amount, "--amount")
    try:
        expires_at = parse_expires(expires) if expires is not None else None
    except ValueError as error:
        raise fail(str(error), code=2) from None
    with service_role() as admin:
        organization = find_organization(admin, org)
        grant = admin.grant_tokens(
            organization.id,
            token_type=token_type,
            amount=tokens,
            expires_at=expires_at,
            reason=reason,
            external_id=external_id,
        )
    if as_json:
        print_json(grant)
        return
    until = f"expires {moment(grant.expires_at)} UTC" if grant.expires_at else "no expiry"
    if grant.replayed:
        console.print(
            f"[green]✓[/] Already granted (external id {escape(grant.external_id or '')}): "
            f"nothing added; {grant.remaining} of its {grant.amount} {grant.token_type} "
            f"tokens left",
            highlight=False,
            soft_wrap=True,
        )
    else:
        console.print(
            f"[green]✓[/] Granted {grant.amount} {grant.token_type} tokens to "
            f"{escape(organization.name)} ({until})",
            highlight=False,
            soft_wrap=True,
        )
    console.print(
        f"{grant.token_type} balance {grant.balance}, of which {grant.purchased_balance} "
        f"purchased · grant {grant.grant_id}",
        highlight=False,
        soft_wrap=True,
    )


@app.command("plan", epilog=EXIT_CODES_SHORT)
def plan_command(
    org: OrgArgument,
    plan: Annotated[str, typer.Option("--plan", metavar="PLAN", help=PLAN_HELP)],
    event_id: Annotated[
        str | None,
        typer.Option(
            "--event-id", metavar="ID", help="e.g. a Stripe event id: the same id applies once."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Move to another plan now: upgrades add the difference, downgrades cap the allowance
    (purchased tokens are kept). Prints each token type's allocation and balance change.
    """
    with service_role() as admin:
        organization = find_organization(admin, org)
        change = admin.set_organization_plan(organization.id, plan=plan, event_id=event_id)
    if as_json:
        print_json(change)
        return
    name = escape(organization.name)
    if change.replayed:
        console.print(
            f"[green]✓[/] Event {escape(change.event_id or '')} was already applied: nothing "
            f"changed now (it moved {name} to {change.plan})",
            highlight=False,
            soft_wrap=True,
        )
    elif change.previous_plan == change.plan:
        console.print(f"[green]✓[/] {name} stays on {change.plan}", highlight=False)
    else:
        console.print(
            f"[green]✓[/] {name} moved from {change.previous_plan or '—'} to {change.plan}",
            highlight=False,
            soft_wrap=True,
        )
    console.print(plan_change_table(change))


MODE_MEANING = {
    "enforce": "refusals are enforced",
    "monitor": "nothing is refused; would-be refusals are recorded as alerts",
    "off": "nothing is checked or charged",
}


@app.command("mode", epilog=EXIT_CODES_SHORT)
def mode_command(
    mode: Annotated[
        str,
        typer.Argument(metavar="MODE", help="enforce, monitor, off, or inherit (ORG only)."),
    ],
    org: Annotated[
        str | None,
        typer.Option(
            "--org", metavar="ORG", help="Organization id or exact name; none: the global default."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Enforcement mode of one organization, or the global default without ORG.

    enforce refuses (402/403/429); monitor never refuses but records what it would have
    refused; off checks and charges nothing; inherit drops an organization's own mode.
    """
    mode = one_of(mode, MODES, "MODE")
    if mode == "inherit" and org is None:
        raise fail("inherit needs an --org: the global default has nothing to inherit", code=2)
    with service_role() as admin:
        organization = find_organization(admin, org) if org is not None else None
        change = admin.set_enforcement_mode(
            mode, organization_id=organization.id if organization else None
        )
    if as_json:
        print_json(change)
        return
    meaning = MODE_MEANING[change.mode]
    was = f"was {change.previous_mode}"
    if organization is None:
        console.print(
            f"[green]✓[/] Global default: {change.mode} ({was}): {meaning}. Organizations "
            f"with a mode of their own keep it.",
            highlight=False,
            soft_wrap=True,
        )
    elif mode == "inherit":
        console.print(
            f"[green]✓[/] {escape(organization.name)} follows the global default again: "
            f"{change.mode} ({was})",
            highlight=False,
            soft_wrap=True,
        )
    else:
        console.print(
            f"[green]✓[/] {escape(organization.name)}: {change.mode} ({was}): {meaning}",
            highlight=False,
            soft_wrap=True,
        )


@app.command("refresh", epilog=EXIT_CODES_SHORT)
def refresh_command(as_json: JsonOption = False) -> None:
    """Settle everything due now: monthly refreshes, expired grants, expired holds.

    What the daily job does; calls settle lazily anyway. Exit 1 when a row failed (it is
    recorded in ai_token_refresh_failures and retried next time).
    """
    with service_role() as admin:
        run = admin.refresh_due_tokens()
    if as_json:
        print_json(run)
    else:
        console.print(
            f"[green]✓[/] Settled {run.settled} token row(s) (refreshes, expired grants, "
            "expired holds)",
            highlight=False,
            soft_wrap=True,
        )
    if run.failed:
        raise fail(
            f"{run.failed} token row(s) failed to settle; see ai_token_refresh_failures "
            "(they stay due and are retried)"
        )


@ledger_app.command("verify", epilog=EXIT_CODES_SHORT)
def ledger_verify(
    org: Annotated[
        str | None,
        typer.Argument(metavar="ORG", help="Organization id or exact name; none: all."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check the bookkeeping: each balance = the sum of its journal, purchased = grants
    left, held = active reservations, each usage charged and refunded exactly once.

    Exit 0 when the ledger is exact, 1 with the violations listed otherwise.
    """
    with service_role() as admin:
        organization = find_organization(admin, org) if org is not None else None
        violations = admin.verify_token_ledger(
            organization_id=organization.id if organization else None
        )
        names: dict[Any, str] = {}
        if violations and not as_json:
            if organization is not None:
                names = {organization.id: organization.name}
            else:
                ids = {v.organization_id for v in violations if v.organization_id}
                names = {i: admin.organization(i).name for i in ids}
    scope = f"{organization.name}'s ledger" if organization else "The ledger"
    if as_json:
        print_json(violations)
    elif not violations:
        console.print(
            f"[green]✓[/] {escape(scope)} is exact: balances match their journal, purchased "
            "tokens their grants, held tokens their reservations, usage its charges",
            highlight=False,
            soft_wrap=True,
        )
    else:
        console.print(ledger_violations_table(violations, names))
    if violations:
        where = f" for {organization.name}" if organization else ""
        raise fail(f"{len(violations)} ledger violation(s){where}: the journal and balances differ")


@app.command("refund", epilog=EXIT_CODES_SHORT)
def refund_command(
    usage_id: Annotated[
        str,
        typer.Argument(
            metavar="USAGE_ID",
            help="The usage_id of a deduction or commit (`tokens usage ORG --entries` lists them).",
        ),
    ],
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why, kept with the usage and journal.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Give back the tokens of one deduction or committed reservation, once."""
    if as_uuid(usage_id) is None:
        raise fail(f"USAGE_ID must be a usage id (a UUID), not {usage_id!r}", code=2)
    with service_role() as admin:
        refund = admin.refund_deduction(usage_id, reason=reason)
        if as_json:
            print_json(refund)
            return
        try:
            name = admin.organization(refund.organization_id).name
        except TokensError:  # refunded all the same: say so, with the id
            name = str(refund.organization_id)
    purchased = (
        f" ({refund.restored_to_purchased} back to purchased grants)"
        if refund.restored_to_purchased
        else ""
    )
    console.print(
        f"[green]✓[/] Refunded {refund.tokens_refunded} {refund.token_type} tokens of "
        f"{refund.feature} to {escape(name)}{purchased}: balance "
        f"{refund.remaining_balance}",
        highlight=False,
        soft_wrap=True,
    )


# ------------------------------------------------------------------ migrations


@migrations_app.command("list", epilog=EXIT_CODES_SHORT)
def migrations_list(as_json: JsonOption = False) -> None:
    """The migrations shipped in this package, in the order they apply."""
    with reported_errors():
        migrations = shipped_migrations()
    if as_json:
        print_json([migration.as_json() for migration in migrations])
        return
    table = Table(box=None, pad_edge=False)
    table.add_column("Migration", no_wrap=True)
    table.add_column("What it does")
    for migration in migrations:
        table.add_row(migration.name, migration.summary)
    console.print(table)


@migrations_app.command("export", epilog=EXIT_CODES_SHORT)
def migrations_export(
    directory: Annotated[
        Path, typer.Argument(metavar="DIR", help="Your project's supabase/migrations directory.")
    ],
    starter: Annotated[
        bool,
        typer.Option(
            "--starter",
            help="Also write the starter schema (the guide's organizations and user_profiles) "
            "first: for a new project only.",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Write the migrations not exported before into DIR, stamped after your own.

    Each file is named <export time>_<name>, later than every migration already in DIR, so
    `supabase migration up` accepts it; tokens-client-migrations.json beside DIR remembers
    what was exported, so the next release writes only what is new.
    """
    with reported_errors():
        export = export_migrations(directory, starter=starter)
    if as_json:
        print_json(export.as_json())
        return
    for name in export.written:
        console.print(
            f"[green]wrote[/]   {escape(str(directory / name))}", highlight=False, soft_wrap=True
        )
    for name in export.skipped:
        console.print(f"skipped {escape(name)} (exported before)", highlight=False, soft_wrap=True)
    console.print(
        f"{len(export.written)} written, {len(export.skipped)} exported before "
        f"(see {escape(str(export.manifest))}). Apply them with `supabase migration up` or "
        "`supabase db push`, or paste each new file in order into the SQL Editor.",
        highlight=False,
    )


@functions_app.command("export", epilog=EXIT_CODES_SHORT)
def functions_export(
    directory: Annotated[
        Path, typer.Argument(metavar="DIR", help="Your project's supabase/functions directory.")
    ],
    as_json: JsonOption = False,
) -> None:
    """Copy the Edge Functions into DIR; identical files are skipped, different ones refused."""
    with reported_errors():
        written, skipped = export_functions(directory)
    if as_json:
        print_json({"directory": str(directory), "written": written, "skipped": skipped})
        return
    for name in written:
        console.print(f"[green]wrote[/]   {escape(str(directory / name))}", highlight=False)
    console.print(
        f"{len(written)} written, {len(skipped)} already there. Deploy them with "
        "`supabase functions deploy`.",
        highlight=False,
    )


# ------------------------------------------------------------------------ demo


def _print_step(step: DemoStep, previous_section: str | None) -> None:
    if step.section != previous_section:
        console.print()
        console.print(Text(step.section, style="bold"))
    line = Table.grid(padding=(0, 1))
    line.add_column(width=3, justify="right", no_wrap=True)
    line.add_column()
    text = Text(step.text)
    if not step.expected:
        text.append("  (not what the demo expected)", style="bold red")
    line.add_row(Text("✓", "green") if step.outcome == "ok" else Text("✗", "red"), text)
    console.print(line)
    if step.view is not None:
        console.print(Padding(step.view, (0, 0, 0, 4)))


@app.command("demo", epilog=EXIT_CODES_SHORT)
def demo_command(as_json: JsonOption = False) -> None:
    """The guide's story on the local stack: check, deduct, retry, hold, refund, refusals.

    Resets the seeded organization Acme first (tokens, mode, and a per-user rate limit of
    its own), so it can be run again and again, also within the same minute.
    """
    with reported_errors():
        status = Stack().status()
        if not status.running:
            raise StackError("the local stack is not running: start it with `tokens stack up`")
        steps: list[DemoStep] = []
        if not as_json:
            console.print(f"[bold]tokens demo[/] · {status.api_url}", highlight=False)
        for step in Demo(status).steps():
            if not as_json:
                _print_step(step, steps[-1].section if steps else None)
            steps.append(step)
        dashboard = write_dashboard_sessions(Stack(), status)
    unexpected = [step for step in steps if not step.expected]
    if as_json:
        print_json(
            {
                "api_url": status.api_url,
                "dashboard_url": dashboard,
                "steps": [step.as_json() for step in steps],
            }
        )
    else:
        console.print()
        console.print(Text("The TokenDashboard in a browser (development-only sign-in)", "bold"))
        for user in USERS:
            console.print(f"  {user.name:<6} {dashboard}?as={user.name.lower()}", highlight=False)
        console.print()
        console.print("Run `tokens demo` again: it resets Acme first and tells the same story.")
    if unexpected:
        raise fail(f"{len(unexpected)} step(s) did not go as the demo expected")


class _QuietPipe:
    """stdout that ends the program quietly (exit 0) when the reader went away
    (``tokens … | head``), instead of click's "Broken pipe" and exit 1."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def _gone(self) -> NoReturn:
        # Python flushes stdout at exit: point it at /dev/null so that flush is quiet too
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())
        raise SystemExit(0)

    def write(self, text: str) -> int:
        try:
            return int(self._stream.write(text))
        except BrokenPipeError:
            self._gone()

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._gone()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


# -------------------------------------------------------------------- webhooks
# Alert webhooks: endpoints as data and the outbox deliverer (library: _webhooks.py).

webhooks_app = typer.Typer(
    no_args_is_help=True, help="Alerts by webhook: endpoints and the deliverer (service role)."
)
app.add_typer(webhooks_app, name="webhooks")


@webhooks_app.command("set", epilog=EXIT_CODES_SHORT)
def webhooks_set(
    org: OrgArgument,
    url: Annotated[str, typer.Argument(metavar="URL", help="http:// or https:// endpoint.")],
    secret: Annotated[
        str | None,
        typer.Option("--secret", help="whsec_<base64> signing secret (default: a new one)."),
    ] = None,
    kinds: Annotated[
        list[str] | None,
        typer.Option("--kind", metavar="KIND", help="Alert kind to send (repeat; default all)."),
    ] = None,
    max_attempts: Annotated[int, typer.Option("--max-attempts", metavar="N")] = 8,
    retry_base: Annotated[
        int, typer.Option("--retry-base", metavar="SECONDS", help="First retry delay.")
    ] = 60,
    retry_cap: Annotated[
        int, typer.Option("--retry-cap", metavar="SECONDS", help="Longest retry delay.")
    ] = 21600,
    as_json: JsonOption = False,
) -> None:
    """Create or replace the organization's endpoint for URL; prints the secret once."""
    signing_secret = secret or new_webhook_secret()
    with service_role() as admin:
        endpoint = set_webhook_endpoint(
            admin,
            organization_id_of(admin, org),
            url,
            signing_secret,
            alert_kinds=kinds or None,
            max_attempts=max_attempts,
            retry_base_seconds=retry_base,
            retry_cap_seconds=retry_cap,
        )
    if as_json:
        print_json({**endpoint.model_dump(mode="json"), "secret": signing_secret})
        return
    console.print(
        f"[green]✓[/] Webhook {endpoint.id} → {escape(endpoint.url)} "
        f"({', '.join(endpoint.alert_kinds or ['every alert kind'])})",
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"secret: {signing_secret}", highlight=False, soft_wrap=True)


@webhooks_app.command("list", epilog=EXIT_CODES_SHORT)
def webhooks_list(org: OrgArgument, as_json: JsonOption = False) -> None:
    """The organization's webhook endpoints (without secrets)."""
    with service_role() as admin:
        endpoints = webhook_endpoints(admin, organization_id_of(admin, org))
    if as_json:
        print_json([endpoint.model_dump(mode="json") for endpoint in endpoints])
        return
    table = Table(box=None, pad_edge=False)
    for column in ("Endpoint", "URL", "Kinds", "Attempts", "Backoff"):
        table.add_column(column)
    for e in endpoints:
        table.add_row(
            str(e.id),
            escape(e.url),
            ", ".join(e.alert_kinds or ["all"]),
            str(e.max_attempts),
            f"{e.retry_base_seconds}s … {e.retry_cap_seconds}s",
        )
    console.print(table)


@webhooks_app.command("delete", epilog=EXIT_CODES_SHORT)
def webhooks_delete(
    endpoint_id: Annotated[str, typer.Argument(metavar="ENDPOINT_ID")],
    as_json: JsonOption = False,
) -> None:
    """Remove an endpoint and its deliveries."""
    if as_uuid(endpoint_id) is None:
        raise fail(f"ENDPOINT_ID must be a UUID, not {endpoint_id!r}", code=2)
    with service_role() as admin:
        delete_webhook_endpoint(admin, endpoint_id)
    if as_json:
        print_json({"deleted": True, "endpoint_id": endpoint_id})
        return
    console.print(f"[green]✓[/] Deleted webhook {endpoint_id}", highlight=False)


@webhooks_app.command("deliver", epilog=EXIT_CODES_SHORT)
def webhooks_deliver(
    once: Annotated[
        bool, typer.Option("--once", help="Deliver what is due now, then exit.")
    ] = False,
    batch: Annotated[int, typer.Option("--batch", metavar="N", help="Claimed at a time.")] = 10,
    lease: Annotated[
        int, typer.Option("--lease", metavar="SECONDS", help="More than batch * timeout.")
    ] = 120,
    timeout: Annotated[
        float, typer.Option("--timeout", metavar="SECONDS", help="Per HTTP request.")
    ] = 10.0,
    poll: Annotated[
        float,
        typer.Option("--poll", metavar="SECONDS", help="Look anyway this often (NOTIFY wakes)."),
    ] = 30.0,
    db_url: Annotated[
        str | None,
        typer.Option(
            "--db-url",
            metavar="URL",
            help="Wake on NOTIFY (default SUPABASE_DB_URL, or the local stack's).",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Send the alert webhook outbox: signed (Standard Webhooks), retried with backoff.

    Runs until interrupted, waking on NOTIFY ai_webhook_deliveries and polling as a
    fallback; with --once it drains what is due and exits (1 when a delivery failed for
    good). Several deliverers may run at once: each delivery is leased to one.
    """
    with service_role() as admin:
        listen_url = db_url or os.environ.get("SUPABASE_DB_URL")
        if listen_url is None and not os.environ.get("SUPABASE_URL"):
            listen_url = local_stack().db_url
        with WebhookDeliverer(admin, batch=batch, lease_seconds=lease, timeout=timeout) as worker:
            if once:
                results = worker.drain()
                if as_json:
                    print_json([result.as_json() for result in results])
                else:
                    for result in results:
                        _print_delivery(result)
                    console.print(f"{len(results)} attempt(s)", highlight=False)
                if any(result.status == "failed" for result in results):
                    raise fail("a webhook delivery failed for good (see ai_webhook_deliveries)")
                return
            on_result = (
                (lambda r: print(json.dumps(r.as_json()), flush=True))
                if as_json
                else _print_delivery
            )
            try:
                worker.run(db_url=listen_url, poll_interval=poll, on_result=on_result)
            except KeyboardInterrupt:
                return


def _print_delivery(result: DeliveryResult) -> None:
    mark = "[green]✓[/]" if result.ok else "[red]✗[/]"
    what = f"HTTP {result.http_status}" if result.http_status else (result.error or "")
    console.print(
        f"{mark} {result.delivery_id} {result.event_type} attempt {result.attempt} → "
        f"{escape(result.url)}: {escape(what)} ({result.status})",
        highlight=False,
        soft_wrap=True,
    )


def main() -> None:
    """Entry point of the ``tokens`` script."""
    sys.stdout = _QuietPipe(sys.stdout)
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
