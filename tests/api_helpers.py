"""Helpers for the HTTP API tests (the fixtures are in ``tests/api_fixtures.py``)."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

from fastapi import FastAPI


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    base_url: str
    ws_url: str
    app: FastAPI


async def wait_for(predicate, within: float = 5.0, interval: float = 0.02):  # type: ignore[no-untyped-def]
    """Poll an async predicate until it returns something truthy (the store is written off the request path)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)
