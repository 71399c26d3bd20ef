"""Tokens per second through daehwa's LocalProvider versus calling xllamacpp directly.

Three paths generate from the same prompt with the same max_tokens, greedy, so they produce the same tokens:

- ``xllamacpp direct``: ``Server.handle_chat_completions`` on a Server built here with the same parameters;
- ``xllamacpp direct, same Server``: the same call on the very Server daehwa loaded (isolates daehwa's own cost
  from differences between two llama.cpp instances in one process);
- ``daehwa LocalProvider``: ``LocalProvider.stream`` (parameter checks, worker thread, asyncio bridge).

Runs rotate through the paths so background load on a shared machine hits all alike; each run's ratio is taken
against the direct runs of the same round. The goal: daehwa within 5%.

    python benchmarks/bench_local_model.py                      # qwen2.5-0.5b, 64 tokens, 3 runs each
    python benchmarks/bench_local_model.py --model smollm2-135m --max-tokens 128 --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import xllamacpp

from daehwa.config import Settings
from daehwa.providers.base import ProviderConfig
from daehwa.providers.local import LocalProvider
from daehwa.providers.modelfiles import ModelFiles
from daehwa.types import ChatMessage, GenerationParams, ProviderRequest, StreamEnd, TextDelta

PROMPT = "Write a long, detailed story about a lighthouse keeper and a storm."


@dataclass
class Run:
    tokens: int
    seconds: float
    ttft: float
    cpu_seconds: float  # process CPU time: less sensitive than wall time to other load on a shared machine

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds


def direct_server(path: Path, context_size: int, threads: int | None) -> xllamacpp.Server:
    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.n_parallel = 1
    params.n_ctx = context_size
    if threads is not None:
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
    params.ui = False
    params.verbosity = -1
    return xllamacpp.Server(params)


def run_direct(server: xllamacpp.Server, max_tokens: int) -> Run:
    body = {
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    first: list[float] = []
    usage: dict[str, int] = {}

    def on_chunk(chunk: dict) -> bool:  # type: ignore[type-arg]
        if not first and any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or ()):
            first.append(time.perf_counter())
        if chunk.get("usage"):
            usage.update(chunk["usage"])
        return False

    cpu = time.process_time()
    start = time.perf_counter()
    server.handle_chat_completions(body, on_chunk)
    end = time.perf_counter()
    return Run(usage["completion_tokens"], end - start, first[0] - start, time.process_time() - cpu)


async def run_daehwa(provider: LocalProvider, model: str, max_tokens: int) -> Run:
    request = ProviderRequest(
        model=model,
        messages=(ChatMessage("user", PROMPT),),
        params=GenerationParams(max_tokens=max_tokens, temperature=0.0),
    )
    first = None
    tokens = 0
    cpu = time.process_time()
    start = time.perf_counter()
    async for event in provider.stream(request):
        if isinstance(event, TextDelta) and first is None:
            first = time.perf_counter()
        elif isinstance(event, StreamEnd):
            assert event.usage is not None
            tokens = event.usage.completion_tokens
    end = time.perf_counter()
    assert first is not None
    return Run(tokens, end - start, first - start, time.process_time() - cpu)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-0.5b", help="catalog name or .gguf path")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--context-size", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="joined model cache (default: the settings')")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(
            data_dir=Path(data_dir),
            model_cache_dir=args.cache_dir or Settings().resolved_model_cache_dir(),
            local_model=args.model,
            local_parallel=1,
            local_context_size=args.context_size,
            local_threads=args.threads,
        )
        path = ModelFiles.from_settings(settings).ensure(
            args.model, lambda done, total: print(f"\rpreparing model {done * 100 // total}%", end="", flush=True)
        )
        print(f"\rmodel: {path}")
        provider = LocalProvider(ProviderConfig(name="local", type="local", default_model=args.model), settings)
        await provider.start()
        if not provider.status().available:
            raise SystemExit(provider.status().reason)
        model = provider.default_model
        shared = (await provider.engine(model)).server
        own = direct_server(path, args.context_size, args.threads)

        paths = {
            "xllamacpp direct": lambda: asyncio.to_thread(run_direct, own, args.max_tokens),
            "xllamacpp direct, same Server": lambda: asyncio.to_thread(run_direct, shared, args.max_tokens),
            "daehwa LocalProvider": lambda: run_daehwa(provider, model, args.max_tokens),
        }
        run_direct(own, 8)  # warm-up: page in the weights, fill the prompt caches
        await run_daehwa(provider, model, 8)
        results: dict[str, list[Run]] = {name: [] for name in paths}
        names = list(paths)
        for i in range(args.runs):
            for name in names[i % 3 :] + names[: i % 3]:  # rotate who goes first
                results[name].append(await paths[name]())

    print(f"\nmodel {args.model}, {args.max_tokens} tokens, {args.runs} runs each (median)\n")
    print("| path | tokens/s (median) | TTFT ms | CPU ms per token | tokens/s per run |")
    print("|---|---|---|---|---|")
    medians = {}
    for name, runs in results.items():
        medians[name] = statistics.median(r.tokens_per_second for r in runs)
        ttft = statistics.median(r.ttft for r in runs) * 1000
        cpu_ms = statistics.median(r.cpu_seconds / r.tokens for r in runs) * 1000
        each = " ".join(f"{r.tokens_per_second:.1f}" for r in runs)
        print(f"| {name} | {medians[name]:.1f} | {ttft:.0f} | {cpu_ms:.1f} | {each} |")
    ours = results["daehwa LocalProvider"]
    print()
    for name in names[:2]:
        # Runs of one round were back to back, so their ratio sees nearly the same background load.
        paired = statistics.median(
            b.tokens_per_second / a.tokens_per_second for a, b in zip(results[name], ours, strict=True)
        )
        print(f"daehwa vs {name}: median of per-round ratios {paired:.3f} ({(paired - 1) * 100:+.1f}%)")


if __name__ == "__main__":
    asyncio.run(main())
