"""``daehwa streamlit``: the Streamlit chat app (``daehwa/streamlit_ui``) on a running daehwa server."""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Annotated

import typer

from .errors import ConfigError


def streamlit(
    server: Annotated[
        str, typer.Option("--server", "-s", help="The daehwa server the app talks to (its REST/SSE API).")
    ] = "http://127.0.0.1:8000",
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="DAEHWA_STREAMLIT_API_KEY",
            help="Log every visitor in with this key (else the app asks for a key or a password).",
        ),
    ] = None,
    language: Annotated[str, typer.Option(help="The app's language until the user picks one: ko or en.")] = "ko",
    host: Annotated[str, typer.Option(help="The address the app listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="The app's port.")] = 8501,
) -> None:
    """Open the Streamlit chat app on a daehwa server (needs: pip install "daehwa\\[streamlit]")."""
    if importlib.util.find_spec("streamlit") is None:
        raise ConfigError('The Streamlit app needs Streamlit: pip install "daehwa[streamlit]".')
    if language not in ("ko", "en"):
        raise ConfigError(f"--language must be ko or en, not {language!r}.")
    from .streamlit_ui import APP_FILE

    env = {**os.environ, "DAEHWA_STREAMLIT_SERVER": server, "DAEHWA_STREAMLIT_LANGUAGE": language}
    if api_key:
        env["DAEHWA_STREAMLIT_API_KEY"] = api_key
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP_FILE),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
    ]
    sys.stderr.write(f"daehwa streamlit: http://{host}:{port} (server {server})\n")
    sys.stderr.flush()
    os.execve(sys.executable, command, env)  # the app's process replaces this one: Ctrl-C and signals reach it
