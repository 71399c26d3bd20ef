"""``daehwa users ...`` and ``daehwa keys ...``: accounts from the command line (mounted in ``daehwa.cli``).

Passwords come from a hidden prompt, or from the first line of stdin with ``--password-stdin`` (for scripts), never
from an argument (it would sit in the shell history). ``keys create`` prints the new key alone on its last line.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .accounts import Accounts
from .config import Settings
from .errors import DaehwaError, NotFound
from .stores import UserDeletion, open_store

T = TypeVar("T")

users_app = typer.Typer(help="Create, list and delete users.", no_args_is_help=True)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)


def _run(work: Callable[[Accounts], Awaitable[T]]) -> T:
    async def main() -> T:
        settings = Settings()
        store = open_store(settings.resolved_database_url(), settings)
        await store.open()
        try:
            return await work(Accounts(store, settings))
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except DaehwaError as exc:
        err.print(f"[bold red]error:[/] {escape(exc.message)}")  # messages quote user input, e.g. '[/x]'
        raise typer.Exit(2) from None


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
        if not password:
            err.print("[bold red]error:[/] --password-stdin read an empty line: pipe the password in.")
            raise typer.Exit(2)
        return password
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


@users_app.command("create")
def users_create(
    name: Annotated[str, typer.Argument(help="The user name (letters, digits, '.', '-', '_').")],
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
    admin: Annotated[bool, typer.Option("--admin", help="Make the user an admin.")] = False,
    no_password: Annotated[
        bool, typer.Option("--no-password", help="No password: the user signs in with API keys or login links.")
    ] = False,
) -> None:
    """Create a user (the password is asked for, or read from stdin)."""
    password = None if no_password else _read_password(password_stdin)
    user = _run(lambda a: a.create_user(name, password, is_admin=admin))
    out.print(f"Created {'admin ' if user.is_admin else ''}user {user.name} ({user.id}).")


@users_app.command("list")
def users_list() -> None:
    """List the users."""

    async def work(accounts: Accounts) -> None:
        table = Table("id", "name", "admin", "created")
        for user in await accounts.store.list_users():
            if user.anonymous:
                continue
            created = user.created_at.strftime("%Y-%m-%d %H:%M") if user.created_at else ""
            table.add_row(user.id, user.name, "yes" if user.is_admin else "", created)
        out.print(table)

    _run(work)


@users_app.command("passwd")
def users_passwd(
    name: Annotated[str, typer.Argument(help="The user.")],
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
) -> None:
    """Set a user's password; all their browser sessions and login links end (API keys keep working)."""
    password = _read_password(password_stdin)

    async def work(accounts: Accounts) -> int:
        user = await accounts.user_by_name(name)
        return await accounts.set_password(user.id, password)

    ended = _run(work)
    out.print(f"Password of {name} set.", markup=False)
    out.print(f"Ended {ended} browser session(s) and login link(s); API keys keep working.")


@users_app.command("delete")
def users_delete(
    name: Annotated[str, typer.Argument(help="The user.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a user and everything kept for them: conversations, interests, form records, API keys, sessions.

    Usage records stay for accounting, no longer linked to the user. The last admin cannot be deleted. Servers
    sharing a Redis or PostgreSQL store are told at once (their stop-signal channel): they stop the user's turns
    and forget the user's cached sessions and keys; any other stops accepting them within DAEHWA_AUTH_CACHE_SECONDS."""

    async def check(accounts: Accounts) -> None:
        await accounts.check_deletable(await accounts.user_by_name(name))

    _run(check)  # a missing user or the last admin fails before the question
    if not yes and not typer.confirm(
        f"Delete the user {name} and all their conversations? This cannot be undone.", default=False
    ):
        err.print("Nothing deleted.")
        raise typer.Exit(1)

    async def work(accounts: Accounts) -> UserDeletion:
        user_id = (await accounts.user_by_name(name)).id
        await _tell_servers(accounts, user_id)  # their turns of the user stop (and store) before the data goes
        try:
            return await accounts.delete_user(user_id)
        finally:
            await _tell_servers(accounts, user_id)

    done = _run(work)
    out.print(f"Deleted user {name}.", markup=False)
    out.print(
        f"Removed {done.conversations} conversation(s), {done.form_records} form record(s), {done.api_keys} API "
        f"key(s) and {done.sessions} session(s) or login link(s); kept {done.usage_detached} usage record(s), "
        "detached from the user."
    )


async def _tell_servers(accounts: Accounts, user_id: str) -> None:
    """The "user deleted" signal to the server processes sharing the store (``ActiveTurns.end_user``); best effort."""
    from .api.stream import ActiveTurns

    signals = accounts.store.stop_signals()
    # A server that misses it still stops accepting the user's credentials within the auth cache time.
    with contextlib.suppress(Exception):
        try:
            await signals.open(lambda _user, _conversation: None)
            await signals.publish(user_id, ActiveTurns.USER_DELETED)
        finally:
            await signals.close()


@users_app.command("login-link")
def users_login_link(name: Annotated[str, typer.Argument(help="The user.")]) -> None:
    """Print a one-time login link for a user (valid DAEHWA_LOGIN_LINK_HOURS)."""

    async def work(accounts: Accounts) -> str:
        user = await accounts.user_by_name(name)
        return accounts.login_link(await accounts.create_login_token(user.id))

    link = _run(work)
    out.print(link, markup=False)  # an IPv6 host is "[fe80::1]", which would read as markup


@keys_app.command("create")
def keys_create(
    user: Annotated[str, typer.Option("--user", "-u", help="Whose key it is.")],
    name: Annotated[str, typer.Option("--name", help="A label to tell keys apart.")] = "",
) -> None:
    """Create an API key; it is printed once, alone on the last line."""

    async def work(accounts: Accounts) -> tuple[str, str, str]:
        owner = await accounts.user_by_name(user)
        new = await accounts.create_api_key(owner.id, name)
        return new.record.id, owner.name, new.secret

    key_id, owner, secret = _run(work)
    out.print(f"Created API key {key_id} for {owner}. Store it now: it is not shown again.")
    print(secret)


@keys_app.command("list")
def keys_list(user: Annotated[str | None, typer.Option("--user", "-u", help="Only this user's keys.")] = None) -> None:
    """List API keys (their first characters only)."""

    async def work(accounts: Accounts) -> None:
        names = {u.id: u.name for u in await accounts.store.list_users()}
        owner_id = (await accounts.user_by_name(user)).id if user else None
        table = Table("id", "user", "name", "key", "created", "last used", "revoked")
        for key in await accounts.list_api_keys(owner_id):
            table.add_row(
                key.id,
                names.get(key.user_id, key.user_id),
                escape(key.name),  # a label set over HTTP may hold '[/x]', which would be markup
                f"{key.prefix}...",
                key.created_at.strftime("%Y-%m-%d %H:%M"),
                key.last_used_at.strftime("%Y-%m-%d %H:%M") if key.last_used_at else "",
                key.revoked_at.strftime("%Y-%m-%d %H:%M") if key.revoked_at else "",
            )
        out.print(table)

    _run(work)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (see 'daehwa keys list').")]) -> None:
    """Revoke an API key (a running server stops accepting it within DAEHWA_AUTH_CACHE_SECONDS)."""

    async def work(accounts: Accounts) -> None:
        if not await accounts.revoke_api_key(key_id):
            raise NotFound(f"There is no API key {key_id!r}: see 'daehwa keys list'.")

    _run(work)
    out.print(f"Revoked API key {key_id}.")
