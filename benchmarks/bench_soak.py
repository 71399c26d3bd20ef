"""Soak run: many concurrent conversations for minutes against an upstream that fails a third of its requests.

    python benchmarks/bench_soak.py [--duration 120] [--conversations 50] [--fault-rate 0.33]

The whole pipeline runs in this process (ChatService -> Router -> OpenAIProvider -> real HTTP -> SQLite), against
two fake OpenAI-compatible servers from tests/fake_upstream.py, each in its own thread: "up", the requested model,
which answers a random ``--fault-rate`` share of requests with a fault (500, 503, 429 + Retry-After, connection reset,
no first token in time, a stall or reset mid-stream, a malformed chunk), and "backup", the fallback model, which is
healthy but slower. Each conversation sends a turn, reads the reply as a client would, and sends the next at once.

Reports turns completed, outcomes (ok, fallback model, canned fallback reply, interrupted, error), time to first token
as the client saw it (p50/p99, every turn including fallbacks), breaker state changes, and process memory (RSS)
before and after. Numbers include the fake servers' CPU time: on a 2-core machine they are pessimistic.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from contextlib import aclosing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daehwa.chat import TurnDelta, TurnFinished, TurnRequest, TurnStarted
from daehwa.config import Settings
from daehwa.services import build_services
from tests.fake_upstream import FakeUpstream, Fault, Reply

REPLY = Reply(
    "Sure. Here is a short answer with a handful of words, streamed the way a model streams it.", chunk_delay=0.005
)
BACKUP = Reply("Backup model here: a shorter answer, a little slower.", chunk_delay=0.02)


def faults(first_token_timeout: float) -> list[Fault]:
    return [
        Fault.status(500),
        Fault.status(503),
        Fault.rate_limited(retry_after=0.2),
        Fault.reset(),
        Fault.delay_first_token(first_token_timeout * 2),
        Fault.stall_after(3),
        Fault.reset_after(3),
        Fault.malformed_chunk(after=0),
    ]


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def feed(
    up: FakeUpstream, backup: FakeUpstream, rate: float, choices: list[Fault], stop: asyncio.Event, calls: Counter
) -> None:
    """Keep the upstream's script topped up: a ``rate`` share of faults, the rest good replies."""
    rng = random.Random(42)
    while not stop.is_set():
        while up.pending < 200:
            up.enqueue(rng.choice(choices) if rng.random() < rate else REPLY)
        # The fake servers record every request; drop those records so the memory figures are daehwa's own.
        for name, server in (("up", up), ("backup", backup)):
            calls[name] += len(server.requests)
            server.requests.clear()
        await asyncio.sleep(0.05)


async def conversation(services, user, stop: asyncio.Event, ttfts: list[float], outcomes: Counter) -> None:  # type: ignore[no-untyped-def]
    conversation_id = None
    n = 0
    while not stop.is_set():
        n += 1
        started_at = time.perf_counter()
        first = None
        request = TurnRequest(user=user, content=f"Question {n}: tell me something.", conversation_id=conversation_id)
        try:
            async with aclosing(services.chat.turn(request)) as events:
                async for event in events:
                    if isinstance(event, TurnStarted):
                        conversation_id = event.conversation.id
                    elif isinstance(event, TurnDelta) and first is None:
                        first = time.perf_counter() - started_at
                    elif isinstance(event, TurnFinished):
                        kind = event.outcome.value
                        if kind == "fallback":
                            kind = "fallback model" if event.message.status.value == "complete" else "fallback reply"
                        outcomes[kind] += 1
        except Exception as exc:  # a turn refused before it started
            outcomes[f"raised {type(exc).__name__}"] += 1
        if first is not None:
            ttfts.append(first)
        if n % 20 == 0:
            conversation_id = None  # start a new conversation now and then, so contexts stay short


async def run(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="daehwa-soak-"))
    with FakeUpstream(default=REPLY) as up, FakeUpstream(default=BACKUP) as backup:
        providers = workdir / "providers.toml"
        providers.write_text(
            f'[providers.up]\ntype = "openai"\nbase_url = "{up.base_url}"\nmodels = ["m"]\n\n'
            f'[providers.backup]\ntype = "openai"\nbase_url = "{backup.base_url}"\nmodels = ["m"]\n'
        )
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            data_dir=workdir,
            providers_file=providers,
            default_model="up/m",
            fallback_models=("backup/m",),
            first_token_timeout=args.first_token_timeout,
            stream_idle_timeout=args.first_token_timeout,
            first_token_deadline=args.first_token_timeout * 3,
        )
        services = build_services(settings)
        await services.start()
        users = [await services.store.create_user(f"user{i}", password_hash=None) for i in range(args.conversations)]
        stop = asyncio.Event()
        calls: Counter[str] = Counter()
        feeder = asyncio.create_task(feed(up, backup, args.fault_rate, faults(args.first_token_timeout), stop, calls))
        ttfts: list[float] = []
        outcomes: Counter[str] = Counter()

        # Warm-up (imports, connection pools, SQLite caches), then measure from a settled baseline.
        warm = asyncio.create_task(conversation(services, users[0], stop, [], Counter()))
        await asyncio.sleep(3)
        stop.set()
        await warm
        stop.clear()
        gc.collect()
        rss_before = rss_mib()

        started = time.perf_counter()
        workers = [asyncio.create_task(conversation(services, u, stop, ttfts, outcomes)) for u in users]
        report_every = max(10.0, args.duration / 6)
        next_report = started + report_every
        while time.perf_counter() - started < args.duration:
            await asyncio.sleep(0.5)
            if time.perf_counter() >= next_report:
                next_report += report_every
                print(
                    f"  {time.perf_counter() - started:5.0f}s: {sum(outcomes.values()):,} turns, "
                    f"RSS {rss_mib():.0f} MiB, breaker {services.router.model_state('up/m')}",
                    flush=True,
                )
        stop.set()
        await asyncio.gather(*workers)
        elapsed = time.perf_counter() - started
        feeder.cancel()
        await services.chat.drain()
        gc.collect()
        rss_after = rss_mib()
        m = services.metrics.registry
        transitions = {
            state: int(
                m.get_sample_value("daehwa_circuit_breaker_transitions_total", {"model": "up/m", "state": state}) or 0
            )
            for state in ("open", "half-open", "closed")
        }
        upstream_calls = calls["up"] + len(up.requests)
        backup_calls = calls["backup"] + len(backup.requests)
        await services.aclose()

    total = sum(outcomes.values())
    print()
    print(f"duration {elapsed:.0f} s, {args.conversations} concurrent conversations, fault rate {args.fault_rate:.0%}")
    print(
        f"turns completed: {total:,} ({total / elapsed:.1f}/s); calls to 'up': {upstream_calls:,}, "
        f"to 'backup': {backup_calls:,}"
    )
    for kind, count in outcomes.most_common():
        print(f"  {kind:16s} {count:7,}  ({count / total:.1%})")
    print(
        f"time to first token (client): p50 {percentile(ttfts, 0.5) * 1000:.0f} ms, "
        f"p99 {percentile(ttfts, 0.99) * 1000:.0f} ms, max {max(ttfts) * 1000:.0f} ms, "
        f"mean {statistics.fmean(ttfts) * 1000:.0f} ms"
    )
    print(f"breaker of up/m: {transitions}")
    print(f"memory (RSS): before {rss_before:.0f} MiB, after {rss_after:.0f} MiB ({rss_after - rss_before:+.0f} MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of load (default 120)")
    parser.add_argument("--conversations", type=int, default=50, help="concurrent conversations (default 50)")
    parser.add_argument("--fault-rate", type=float, default=1 / 3, help="share of upstream requests that fail")
    parser.add_argument(
        "--first-token-timeout", type=float, default=1.0, help="DAEHWA_FIRST_TOKEN_TIMEOUT for the run (default 1 s)"
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
