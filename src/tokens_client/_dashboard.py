"""What the CLI shows: the guide's TokenDashboard, usage, organization and alert tables.

Pure rendering (rich renderables and JSON values from the client's models): no I/O, so
``tokens stats`` and ``tokens demo`` draw the same dashboard.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel
from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from tokens_client._models import (
    Alert,
    LedgerViolation,
    Organization,
    PlanChange,
    TokenStats,
    TokenTypeStats,
    UsageEntry,
    UsageGrouping,
    UsageReportRow,
)

# Columns a narrow terminal can do without, the first to go first.
DROPPABLE_COLUMNS = ("", "User id", "User", "Refunded", "Refreshes", "Purchased", "Held", "Left")
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


def moment(value: datetime | None) -> str:
    """A timestamp in UTC to the second (``2026-11-23 22:27:32``), ``—`` when absent."""
    if value is None:
        return "—"
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


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


def available_of(entry: TokenTypeStats) -> int:
    """What can be spent now: balance - held (the SQL's ``available``)."""
    if entry.available is not None:
        return entry.available
    return max(entry.balance - entry.reserved, 0)


def _type_row(entry: TokenTypeStats, holdings: bool) -> list[RenderableType]:
    extra: list[RenderableType] = []
    if holdings:
        extra = [
            Text(str(entry.purchased_balance), style="" if entry.purchased_balance else "dim"),
            Text(str(entry.reserved), style="" if entry.reserved else "dim"),
            Text(str(available_of(entry))),
        ]
    if entry.allocated <= 0 and entry.balance <= 0:
        return [
            Text(entry.token_type, style="dim"),
            balance_bar(0, 0),
            Text("0 / 0", style="dim"),
            Text("—", style="dim"),
            *extra,
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
        *extra,
        Text(day(entry.refresh_date)),
    ]


MODE_NOTES = {
    "monitor": "Monitor mode: nothing is refused; what enforce mode would refuse is recorded "
    "as an alert, and a deduction takes at most what is there.",
    "off": "Token checks are off: nothing is checked or charged.",
}


def stats_dashboard(stats: TokenStats, name: str | None = None) -> RenderableType:
    """The TokenDashboard: a bar per token type, totals, and a warning per low balance.

    Purchased, held (reserved) and available tokens get columns when the organization
    has any; a mode other than enforce is named in the title and explained below.
    """
    title = Text(f"{name or stats.organization_id} · {stats.plan} plan", style="bold")
    if stats.enforcement != "enforce":
        title.append(f" · {stats.enforcement} mode", style="bold magenta")
    holdings = stats.total_purchased > 0 or stats.total_reserved > 0
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("Token type", no_wrap=True)
    table.add_column("", no_wrap=True)
    table.add_column("Balance", justify="right", no_wrap=True)
    table.add_column("Left", justify="right", no_wrap=True)
    if holdings:
        table.add_column("Purchased", justify="right", no_wrap=True)
        table.add_column("Held", justify="right", no_wrap=True)
        table.add_column("Available", justify="right", no_wrap=True)
    table.add_column("Refreshes", no_wrap=True)
    for entry in stats.by_type:
        table.add_row(*_type_row(entry, holdings))
    table.add_section()
    total_available = stats.total_available
    if total_available is None:
        total_available = sum(available_of(entry) for entry in stats.by_type)
    totals: list[RenderableType] = []
    if holdings:
        totals = [
            Text(str(stats.total_purchased), style="bold"),
            Text(str(stats.total_reserved), style="bold"),
            Text(str(total_available), style="bold"),
        ]
    table.add_row(
        Text("Total", style="bold"),
        balance_bar(stats.total_balance, stats.total_allocated),
        Text(f"{stats.total_balance} / {stats.total_allocated}", style="bold"),
        Text(percent(stats.total_balance, stats.total_allocated), style="bold"),
        *totals,
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
    if holdings:
        notes.append(
            Text(
                "Purchased tokens are kept over refreshes and spent after the allowance; held "
                "tokens are reserved for AI calls in progress (available = balance - held).",
                style="dim",
            )
        )
    if stats.total_allocated == 0:
        notes.append(Text(f"AI features are not available on the {stats.plan} plan.", "dim"))
    if stats.enforcement in MODE_NOTES:
        notes.append(Text(MODE_NOTES[stats.enforcement], style="magenta"))
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


def usage_entries_table(entries: Sequence[UsageEntry], title: str) -> RenderableType:
    """``tokens usage --entries``: each charge with the id ``tokens refund`` takes."""
    if not entries:
        return Text(f"{title}: no usage.")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("When (UTC)", no_wrap=True)
    table.add_column("Usage id", no_wrap=True)
    table.add_column("Feature", no_wrap=True)
    table.add_column("Tokens", justify="right", no_wrap=True)
    table.add_column("User", no_wrap=True, style="dim")
    table.add_column("Refunded", no_wrap=True)
    for entry in entries:
        table.add_row(
            moment(entry.created_at),
            str(entry.id),
            entry.feature_used,
            str(entry.tokens_deducted),
            str(entry.user_id) if entry.user_id else "service role",
            moment(entry.refunded_at) if entry.refunded_at else "",
            style="dim" if entry.refunded_at else "",
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


THRESHOLD_KINDS = ("usage_80_percent", "balance_below_20_percent", "balance_exhausted")
_KIND_STYLES = {
    "usage_80_percent": "bold yellow",
    "balance_below_20_percent": "bold yellow",
    "balance_exhausted": "bold red",
    "refused": "",
}


def _fact(details: dict[str, Any], key: str) -> Any:
    value = details.get(key)
    return "?" if value is None else value


def alert_summary(alert: Alert) -> str:
    """The facts of an alert worth reading in one line (the JSON has all of them)."""
    details = alert.details
    if alert.kind in THRESHOLD_KINDS:
        text = (
            f"balance {_fact(details, 'balance')} of {_fact(details, 'allocated')} allocated, "
            f"{_fact(details, 'used')} used"
        )
        purchased = details.get("purchased_balance")
        return text + (f", {purchased} purchased" if purchased else "")
    parts = [str(details.get("feature") or "?")]
    if details.get("http_status") is not None:
        parts.append(f"HTTP {details['http_status']}")
    if alert.reason == "insufficient_tokens":
        parts.append(
            f"needed {_fact(details, 'required')}, available {_fact(details, 'available')}"
        )
    elif alert.reason == "rate_limited":
        parts.append(
            f"limit {_fact(details, 'limit')} per {_fact(details, 'window_seconds')} s, "
            f"retry after {_fact(details, 'retry_after_seconds')} s"
        )
    elif alert.reason == "feature_not_in_plan":
        parts.append(f"plan {_fact(details, 'plan')}")
    if details.get("refused") is False:
        charged = details.get("charged")
        parts.append(
            "not refused (monitor)" + (f", charged {charged}" if charged is not None else "")
        )
    if details.get("reservation_id"):
        parts.append(f"reservation {details['reservation_id']}")
    if details.get("user_id"):
        parts.append(f"user {details['user_id']}")
    return " · ".join(parts)


def alerts_table(alerts: Sequence[Alert], title: str) -> RenderableType:
    """``tokens alerts``: newest first, threshold crossings highlighted."""
    if not alerts:
        return Text(f"{title}: no alerts.")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("When (UTC)", no_wrap=True)
    table.add_column("Kind", no_wrap=True)
    table.add_column("Token type", no_wrap=True)
    table.add_column("Reason", no_wrap=True)
    table.add_column("Details")
    for alert in alerts:
        style = _KIND_STYLES.get(alert.kind, "")
        kind = Text(f"⚠ {alert.kind}" if alert.kind in THRESHOLD_KINDS else alert.kind, style)
        table.add_row(
            moment(alert.created_at),
            kind,
            alert.token_type,
            alert.reason or "—",
            Text(alert_summary(alert), style=style),
        )
    thresholds = sum(alert.kind in THRESHOLD_KINDS for alert in alerts)
    counts = Text(
        f"{len(alerts)} alert(s): {thresholds} threshold crossing(s), "
        f"{len(alerts) - thresholds} refusal(s)",
        style="dim",
    )
    return Group(Text(title, style="bold"), table, counts)


def plan_change_table(change: PlanChange) -> RenderableType:
    """``tokens plan``: allocation and balance of each token type, before → after."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("Token type", no_wrap=True)
    table.add_column("Allocation", justify="right", no_wrap=True)
    table.add_column("Balance", justify="right", no_wrap=True)
    for entry in change.changes:
        same = (entry.previous_allocation, entry.previous_balance) == (
            entry.allocation,
            entry.balance,
        )
        table.add_row(
            entry.token_type,
            f"{entry.previous_allocation} → {entry.allocation}",
            f"{entry.previous_balance} → {entry.balance}",
            style="dim" if same else "",
        )
    return table


def ledger_violations_table(
    violations: Sequence[LedgerViolation], names: dict[Any, str]
) -> RenderableType:
    """``tokens ledger verify``: each broken bookkeeping invariant."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("Organization")
    table.add_column("Token type", no_wrap=True)
    table.add_column("Violation", no_wrap=True, style="bold red")
    table.add_column("Expected", justify="right", no_wrap=True)
    table.add_column("Actual", justify="right", no_wrap=True)
    table.add_column("Details")
    for violation in violations:
        organization = violation.organization_id
        details = violation.details or {}
        table.add_row(
            names.get(organization) or str(organization or "—"),
            violation.token_type or "—",
            violation.violation,
            "—" if violation.expected is None else str(violation.expected),
            "—" if violation.actual is None else str(violation.actual),
            "; ".join(
                str(value) if key == "message" else f"{key} {value}"
                for key, value in details.items()
            ),
        )
    return table


def fit_to_width(renderable: Any, console: Console, width: int) -> Any:
    """``renderable`` with the tables in it narrowed to ``width``: the columns of
    :data:`DROPPABLE_COLUMNS` are dropped, least useful first, until the table fits."""
    if isinstance(renderable, Group):
        for index, item in enumerate(renderable.renderables):
            renderable.renderables[index] = fit_to_width(item, console, width)
        return renderable
    if not isinstance(renderable, Table):
        return renderable
    for header in DROPPABLE_COLUMNS:
        if (
            console.measure(renderable, options=console.options.update(width=10_000)).maximum
            <= width
        ):
            break
        renderable.columns = [c for c in renderable.columns if c.header != header]
    return renderable
