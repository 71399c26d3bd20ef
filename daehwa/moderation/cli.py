"""``daehwa filter``: check text against the word lists, and reload the lists of a running server."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import httpx
import typer

from ..config import Settings
from ..errors import ConfigError
from .wordfilter import WordFilter

filter_app = typer.Typer(help="Check text against the banned-word lists, or reload them on a running server.")


@filter_app.command("check")
def check(
    words: Annotated[
        list[Path] | None,
        typer.Option("--words", help="A banned-word list (repeatable). Default: the lists from the settings."),
    ] = None,
    allow: Annotated[list[Path] | None, typer.Option("--allow", help="An allow-list (repeatable).")] = None,
    builtin: Annotated[
        bool | None, typer.Option("--builtin/--no-builtin", help="Also load the product's own lists.")
    ] = None,
) -> None:
    """Read lines from standard input; write one JSON object per line: text, blocked, matches, masked.

    Offsets (start, end) are in characters of the line. With --words or --allow only the files given are used
    (plus the built-in lists unless --no-builtin); without, the lists configured in the settings.
    """
    settings = Settings()
    if words or allow:
        word_files, allow_files = list(words or []), list(allow or [])
    else:
        word_files, allow_files = settings.filter_word_files, settings.filter_allow_files
    use_builtin = settings.filter_builtin_list if builtin is None else builtin
    try:
        moderator = WordFilter(word_files, allow_files, builtin=use_builtin)
    except ConfigError as exc:
        typer.echo(f"Error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    out = sys.stdout
    for raw in sys.stdin:
        line = raw[:-1] if raw.endswith("\n") else raw
        line = line[:-1] if line.endswith("\r") else line
        result = moderator.check(line)
        record = {
            "text": line,
            "blocked": result.hit,
            "matches": [
                {"word": m.word, "category": m.category, "start": m.start, "end": m.end} for m in result.matches
            ],
            "masked": result.masked,
        }
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
    out.flush()


@filter_app.command("reload")
def reload(
    url: Annotated[
        str | None, typer.Option("--url", help="The server's base URL. Default: http://HOST:PORT from the settings.")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", help="An admin API key (or set DAEHWA_API_KEY).", show_default=False),
    ] = None,
) -> None:
    """Ask a running server to re-read its word lists (POST /api/admin/filter/reload; admin only)."""
    settings = Settings()
    base = (url or f"http://{settings.host}:{settings.port}").rstrip("/")
    key = api_key or os.environ.get("DAEHWA_API_KEY")
    if not key:
        typer.echo("Error: an admin API key is needed: pass --api-key or set DAEHWA_API_KEY.", err=True)
        raise typer.Exit(2)
    endpoint = f"{base}/api/admin/filter/reload"
    try:
        response = httpx.post(endpoint, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    except httpx.HTTPError as exc:
        typer.echo(f"Error: cannot reach {endpoint} ({type(exc).__name__}): is `daehwa serve` running there?", err=True)
        raise typer.Exit(1) from None
    if response.status_code in (401, 403):
        typer.echo(f"Error: the server refused the key ({response.status_code}): use an admin's API key.", err=True)
        raise typer.Exit(1)
    if response.status_code >= 400:
        typer.echo(f"Error: the server answered {response.status_code}: {_error_message(response)}", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(response.json(), ensure_ascii=False))


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message"))
    return json.dumps(body, ensure_ascii=False)[:200]
