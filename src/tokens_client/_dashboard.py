"""What the CLI shows: the guide's TokenDashboard, usage and organization tables, JSON.

Pure rendering (rich renderables and JSON values from the client's models): no I/O, so
``tokens stats`` and ``tokens demo`` draw the same dashboard.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel
from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from tokens_client._models import (
    Organization,
    TokenStats,
    TokenTypeStats,
    UsageGrouping,
    UsageReportRow,
)

BAR_WIDTH = 20
LOW_PERCENT = 20  # the guide's "low token warnings display (< 20%)"


def jsonable(value: Any) -> Any:
    """Models as ``model_dump(mode="json")``, recursively through lists and dicts."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    return value


def day(moment: datetime | None) -> str:
    """A timestamp as its UTC calendar day (``2026-12-23``), ``—`` when absent."""
    return moment.astimezone(timezone.utc).date().isoformat() if moment else "—"


def percent(part: int, whole: int) -> str:
    """``part`` of ``whole`` as a whole percentage (``85%``)."""
    return f"{100 * part / whole:.0f}%" if whole > 0 else "—"


def _bar_style(balance: int, allocated: int) -> str:
    if balance * 100 < allocated * LOW_PERCENT:
        return "red"
    return "yellow" if balance * 2 < allocated else "green"


def balance_bar(balance: int, allocated: int, width: int = BAR_WIDTH) -> Text:
    """``█████░░░``: the share of the allocation left (grants above it fill the bar)."""
    if allocated <= 0:
        return Text("·" * width, style="dim")
    filled = round(width * min(max(balance, 0), allocated) / allocated)
    bar = Text("█" * filled, style=_bar_style(balance, allocated))
    bar.append("░" * (width - filled), style="dim")
    return bar


def _type_row(entry: TokenTypeStats) -> list[RenderableType]:
    if entry.allocated <= 0 and entry.balance <= 0:
        return [
            Text(entry.token_type, style="dim"),
            balance_bar(0, 0),
            Text("0 / 0", style="dim"),
            Text("—", style="dim"),
            Text("not in plan", style="dim"),
        ]
    name = Text(entry.token_type)
    left = Text(f"{entry.percent_remaining:.0f}%")
    if entry.low:
        name = Text(f"⚠ {entry.token_type}", style="bold yellow")
        left.stylize("bold yellow")
    return [
        name,
        balance_bar(entry.balance, entry.allocated),
        Text(f"{entry.balance} / {entry.allocated}"),
        left,
        Text(day(entry.refresh_date)),
    ]


def stats_dashboard(stats: TokenStats, name: str | None = None) -> RenderableType:
    """The TokenDashboard: a bar per token type, totals, and a warning per low balance."""
    title = Text(f"{name or stats.organization_id} · {stats.plan} plan", style="bold")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("Token type", no_wrap=True)
    table.add_column("", no_wrap=True)
    table.add_column("Balance", justify="right", no_wrap=True)
    table.add_column("Left", justify="right", no_wrap=True)
    table.add_column("Refreshes", no_wrap=True)
    for entry in stats.by_type:
        table.add_row(*_type_row(entry))
    table.add_section()
    table.add_row(
        Text("Total", style="bold"),
        balance_bar(stats.total_balance, stats.total_allocated),
        Text(f"{stats.total_balance} / {stats.total_allocated}", style="bold"),
        Text(percent(stats.total_balance, stats.total_allocated), style="bold"),
        Text(f"{stats.total_used} used"),
    )
    notes: list[RenderableType] = []
    for entry in stats.by_type:
        if entry.low:
            notes.append(
                Text(
                    f"⚠ Low balance: {entry.token_type} has {entry.balance} of "
                    f"{entry.allocated} tokens left ({entry.percent_remaining:.0f}%); "
                    f"refreshes {day(entry.refresh_date)}",
                    style="bold yellow",
                )
            )
    if stats.total_allocated == 0:
        notes.append(Text(f"AI features are not available on the {stats.plan} plan.", "dim"))
    return Group(title, table, *notes)


_GROUP_TITLES: dict[UsageGrouping, str] = {"feature": "Feature", "user": "User", "day": "Day"}


def usage_table(rows: Sequence[UsageReportRow], by: UsageGrouping, title: str) -> RenderableType:
    """``tokens usage``: uses and tokens per feature, user or day, with a total."""
    if not rows:
        return Text(f"{title}: no usage.")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column(_GROUP_TITLES[by], no_wrap=True)
    if by == "user":
        table.add_column("User id", style="dim", no_wrap=True)
    table.add_column("Uses", justify="right")
    table.add_column("Tokens", justify="right")
    for row in rows:
        label = [row.label, row.key] if by == "user" else [row.label]
        table.add_row(*label, str(row.uses), str(row.tokens))
    table.add_section()
    total = ["Total", ""] if by == "user" else ["Total"]
    table.add_row(
        *total,
        str(sum(row.uses for row in rows)),
        str(sum(row.tokens for row in rows)),
        style="bold",
    )
    return Group(Text(title, style="bold"), table)


def organizations_table(organizations: Sequence[Organization]) -> RenderableType:
    """``tokens org list``."""
    if not organizations:
        return Text("No organizations yet: create one with `tokens org create NAME --plan pro`.")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("Name")
    table.add_column("Plan", no_wrap=True)
    table.add_column("Id", no_wrap=True, style="dim")
    for organization in organizations:
        table.add_row(organization.name, organization.plan, str(organization.id))
    return table
