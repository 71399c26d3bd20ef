"""Shared fixtures. ``FakeProvider`` implements the real Provider interface: tests script it, production never does."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from daehwa.config import Settings
from daehwa.errors import DaehwaError
from daehwa.providers.base import ModelInfo, Provider, ProviderConfig, ProviderStatus
from daehwa.providers.registry import ProviderRegistry
from daehwa.services import Services, build_services
from daehwa.types import PARAM_NAMES, ProviderEvent, ProviderRequest, StreamEnd, TextDelta, Usage, User

from .fake_upstream import fake_upstream  # noqa: F401  (a fixture, shared by every test module)
from .redis_cluster import redis_cluster_url  # noqa: F401  (a session fixture: a throwaway 3-master cluster)

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
SHARED = Path(__file__).resolve().parents[2] / "shared"


def require(condition: bool, reason: str) -> None:
    """Skip a test whose backing service or package is missing, except in CI, where that is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass
class Script:
    """One scripted reply: text chunks, then optionally an error, with delays to simulate a model."""

    chunks: list[str] = field(default_factory=lambda: ["Hello", " there", "!"])
    error: DaehwaError | None = None  # raised after the chunks
    delay: float = 0.0  # before each chunk
    hang: bool = False  # after the chunks, wait forever (until cancelled)
    usage: Usage | None = None


class FakeProvider(Provider):
    """A scripted model: ``enqueue(Script(...))``; unscripted calls echo the last user message."""

    supported_params = frozenset(PARAM_NAMES)

    def __init__(self, name: str = "fake", *, models: Iterable[str] = ("echo",)) -> None:
        super().__init__(ProviderConfig(name=name, type="fake", models=tuple(models)), Settings())
        self.scripts: list[Script] = []
        self.requests: list[ProviderRequest] = []
        self.cancelled = 0
        self.started = asyncio.Event()

    def enqueue(self, *scripts: Script) -> FakeProvider:
        self.scripts.extend(scripts)
        return self

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        self.requests.append(request)
        self.started.set()
        script = self.scripts.pop(0) if self.scripts else Script(chunks=["echo: ", request.messages[-1].content])
        try:
            for chunk in script.chunks:
                if script.delay:
                    await asyncio.sleep(script.delay)
                yield TextDelta(chunk)
            if script.error is not None:
                raise script.error
            if script.hang:
                await asyncio.Event().wait()
            text = "".join(script.chunks)
            yield StreamEnd(usage=script.usage or Usage(len(request.messages) * 10, len(text)))
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise

    async def list_models(self) -> list[ModelInfo]:
        return [ModelInfo(id=f"{self.name}/{m}", provider=self.name, available=True) for m in self.config.models]

    def status(self) -> ProviderStatus:
        return ProviderStatus(available=True, loaded=True)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'test.db'}",
        default_model="fake",
        stream_flush_seconds=0.05,
        filter_output_action="off",  # streamed chunks arrive as sent; moderation tests turn it on
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture
def fake_provider() -> FakeProvider:
    return FakeProvider()


@pytest.fixture
async def services(settings: Settings, fake_provider: FakeProvider) -> AsyncIterator[Services]:
    svc = build_services(settings, providers=ProviderRegistry([fake_provider]))
    await svc.start()
    try:
        yield svc
    finally:
        await svc.aclose()


@pytest.fixture
async def alice(services: Services) -> User:
    return await services.store.create_user("alice", password_hash=None)


@pytest.fixture
async def bob(services: Services) -> User:
    return await services.store.create_user("bob", password_hash=None)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    require(SHARED.is_dir(), f"the shared data directory {SHARED} is missing")
    yield SHARED


@pytest.fixture(scope="session")
def model_cache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A joined-model cache that survives test runs (pytest's cache dir), so a model's join happens once."""
    cache = getattr(request.config, "cache", None)  # absent with -p no:cacheprovider
    if cache is None:
        return tmp_path_factory.mktemp("daehwa-models")
    return Path(cache.mkdir("daehwa-models"))
