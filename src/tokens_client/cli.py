"""The ``tokens`` command line: the local stack, the demo, and service-role admin."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console

from tokens_client.stack import Stack, StackError, StackStatus

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
stack_app = typer.Typer(no_args_is_help=True, help="The Docker-free local Supabase stack.")
app.add_typer(stack_app, name="stack")

console = Console()
err_console = Console(stderr=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


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
    """Start PostgreSQL, apply bootstrap + migrations + seed, start PostgREST, gateway, functions."""
    try:
        status = Stack().up()
    except StackError as error:
        raise fail(str(error)) from None
    if not as_json:
        console.print("[green]Local stack is running.[/]")
    _print_status(status, as_json)


@stack_app.command("down")
def stack_down() -> None:
    """Stop every component of the local stack (data is kept)."""
    try:
        Stack().down()
    except StackError as error:
        raise fail(str(error)) from None
    console.print("Local stack stopped.")


@stack_app.command("status")
def stack_status(as_json: JsonOption = False) -> None:
    """Print URLs and keys, like `supabase status`; exit 1 when something is down."""
    try:
        status = Stack().status()
    except StackError as error:
        raise fail(str(error)) from None
    _print_status(status, as_json)
    if not status.running:
        raise typer.Exit(1)


@stack_app.command("env")
def stack_env() -> None:
    """Print `export` lines for SUPABASE_URL, keys, JWT secret, DB URL, Stripe webhook secret."""
    try:
        status = Stack().status()
    except StackError as error:
        raise fail(str(error)) from None
    for key, value in status.as_env().items():
        print(f"export {key}={value}")


def main() -> None:
    """Entry point of the ``tokens`` script."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
