"""``daehwa usage``: tokens, turns and cost per user and model, from the store's usage records."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from .config import load_settings
from .errors import NotFound
from .pricing import parse_since, usage_report

out = Console(highlight=False, soft_wrap=True)


def usage(
    user: Annotated[str | None, typer.Option("--user", "-u", help="Only this user (by name).")] = None,
    since: Annotated[
        str | None, typer.Option(help="From when: YYYY-MM-DD (UTC), an ISO date-time, 'today', or 7d / 24h.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Tokens, turns and cost per user and model (every user unless --user)."""
    settings = load_settings()
    report = asyncio.run(_report(settings, user, since))
    if as_json:
        out.print(json.dumps(report, ensure_ascii=False, indent=2), markup=False)
        return
    print_report(report)


async def _report(settings: Any, user: str | None, since: str | None) -> dict[str, Any]:
    from .stores import open_store

    start = parse_since(since)
    store = open_store(settings.resolved_database_url(), settings=settings)
    await store.open()
    try:
        user_id = None
        if user is not None:
            record = await store.get_user_by_name(user)
            if record is None:
                raise NotFound(f"No user named {user!r}: 'daehwa users list' shows them.")
            user_id = record.user.id
        return usage_report(await store.usage_totals(user_id=user_id, since=start), start)
    finally:
        await store.close()


def print_report(report: dict[str, Any]) -> None:
    rows = report["totals"]
    if not rows:
        out.print("No usage recorded" + (f" since {report['since']}." if report["since"] else " yet."))
        return
    table = Table("user", "model", "turns", "prompt", "completion", "total tokens", "cost (USD)")
    for row in rows:
        table.add_row(
            row["user"] or row["user_id"],
            row["model"],
            f"{row['turns']:,}",
            f"{row['prompt_tokens']:,}",
            f"{row['completion_tokens']:,}",
            f"{row['total_tokens']:,}",
            f"{row['cost']:.4f}",
        )
    total = report["sum"]
    table.add_section()
    table.add_row(
        "all",
        "",
        f"{total['turns']:,}",
        f"{total['prompt_tokens']:,}",
        f"{total['completion_tokens']:,}",
        f"{total['total_tokens']:,}",
        f"{total['cost']:.4f}",
    )
    out.print(table)
    if report["since"]:
        out.print(f"since {report['since']}")
