"""Soak run: many concurrent conversations for minutes against an upstream that fails a third of its requests.

    python benchmarks/bench_soak.py [--duration 120] [--conversations 50] [--fault-rate 0.33]
    python benchmarks/bench_soak.py --duration 600 --conversations 30 --tracemalloc   # where memory goes

The whole pipeline runs in this process (ChatService -> Router -> OpenAIProvider -> real HTTP -> SQLite), against
two fake OpenAI-compatible servers from tests/fake_upstream.py, run in a child process so that this process's memory
is daehwa's own (the fakes keep a record of every request): "up", the requested model,
which answers a random ``--fault-rate`` share of requests with a fault (500, 503, 429 + Retry-After, connection reset,
no first token in time, a stall or reset mid-stream, a malformed chunk), and "backup", the fallback model, which is
healthy but slower. Each conversation sends a turn, reads the reply as a client would, and sends the next at once.

Reports turns completed, outcomes (ok, fallback model, canned fallback reply, interrupted, error), time to first token
as the client saw it (p50/p99, every turn including fallbacks), breaker state changes, and process memory (RSS)
over time. The fake servers compete for the same cores: on a 2-core machine the numbers are pessimistic.

``--tracemalloc`` looks for leaks: after ``--warmup`` seconds of load it snapshots the Python heap every
``--snapshot-every`` seconds, and prints the traced total per snapshot, the live objects that would pile up if
something leaked (tasks, background saves, breakers, bulkheads, metric series), the allocation sites that grew most
between the first and the last snapshot (and whether they still grew in the second half), and the object types whose
count grew. Growth that stops (caches filling up) and growth per turn (a leak) look different there. tracemalloc
slows the process down several-fold and its own bookkeeping shows up in RSS: take RSS figures from a run without it.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import multiprocessing
import random
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from contextlib import aclosing
from pathlib import Path
from typing import Any

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


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


def malloc_mib() -> tuple[float, float] | None:
    """glibc's view of its heap, all arenas: (in use, free but kept), MiB. SQLite's page cache and other C allocations
    live there, where tracemalloc cannot see them (Python's small objects live in obmalloc's own arenas). None off
    glibc."""
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return (info.uordblks + info.hblkhd) / 2**20, info.fordblks / 2**20


def malloc_trim() -> float | None:
    """Give glibc's free memory back to the system and return RSS afterwards: what is left is memory in use."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        return None
    return rss_mib()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def serve_fakes(conn: Any, rate: float, first_token_timeout: float) -> None:
    """Child process: run both fake servers and keep "up"'s script topped up (a ``rate`` share of faults) until the
    parent sends anything; then answer with the number of calls each server got."""
    rng = random.Random(42)
    choices = faults(first_token_timeout)
    with FakeUpstream(default=REPLY) as up, FakeUpstream(default=BACKUP) as backup:
        conn.send((up.base_url, backup.base_url))
        while not conn.poll(0.05):
            while up.pending < 200:
                up.enqueue(rng.choice(choices) if rng.random() < rate else REPLY)
            for server in (up, backup):
                server.requests.clear()  # the fakes record every request; only the count is wanted here
        conn.recv()
        conn.send({"up": up.request_count, "backup": backup.request_count})


def live_objects(services: Any) -> dict[str, int]:
    """Counts of what would pile up if something leaked: tasks, background saves, per-model state, metric series."""
    return {
        "tasks": len(asyncio.all_tasks()),
        "background saves": len(services.chat._background),
        "breakers": len(services.router._breakers),
        "bulkheads": len(services.router._bulkheads),
        # every label set adds samples: label values without a bound show up here
        "metric samples": sum(len(family.samples) for family in services.metrics.registry.collect()),
    }


async def conversation(  # type: ignore[no-untyped-def]
    services, user, stop: asyncio.Event, ttfts: list[float], outcomes: Counter, made_up: float = 0.0
) -> None:
    conversation_id = None
    n = 0
    rng = random.Random(user.id)
    while not stop.is_set():
        n += 1
        started_at = time.perf_counter()
        first = None
        # A client naming a model no one configured: the provider passes any name on, so each is a route of its own.
        model = f"up/made-up-{rng.getrandbits(48):x}" if made_up and rng.random() < made_up else None
        request = TurnRequest(
            user=user, content=f"Question {n}: tell me something.", conversation_id=conversation_id, model=model
        )
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


class HeapWatch:
    """tracemalloc snapshots during the run, and counts of the live objects a leak would pile up."""

    def __init__(self, services: Any, frames: int, middle: float) -> None:
        self.services = services
        self.frames = frames
        self.middle = middle  # seconds into the run: the snapshot kept for "did it still grow later?"
        # (seconds, turns, snapshot). Only the first, the first past the middle and the latest are kept: a snapshot
        # holds a Python object per live allocation, too much memory to keep them all.
        self.first: tuple[float, int, tracemalloc.Snapshot] | None = None
        self.mid: tuple[float, int, tracemalloc.Snapshot] | None = None
        self.last: tuple[float, int, tracemalloc.Snapshot] | None = None
        self.types: list[Counter[str]] = []
        self.rows: list[str] = []

    def snap(self, elapsed: float, turns: int) -> None:
        gc.collect()
        snapshot = tracemalloc.take_snapshot().filter_traces(
            (
                tracemalloc.Filter(False, tracemalloc.__file__),
                tracemalloc.Filter(False, __file__),  # this script's own lists (time to first token of every turn)
                tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
                tracemalloc.Filter(False, "<unknown>"),
            )
        )
        traced = sum(stat.size for stat in snapshot.statistics("filename"))
        kinds = Counter(type(o).__name__ for o in gc.get_objects())
        self.types = [self.types[0], kinds] if self.types else [kinds]  # first and latest only
        taken = (elapsed, turns, snapshot)
        if self.first is None:
            self.first = taken
        else:
            if self.mid is None and elapsed >= self.middle:
                self.mid = taken
            self.last = taken
        live = ", ".join(f"{k} {v:,}" for k, v in live_objects(self.services).items())
        heap = malloc_mib()
        c_heap = f", malloc {heap[0]:.0f} used + {heap[1]:.0f} free MiB" if heap else ""
        row = (
            f"  {elapsed:5.0f}s: {turns:6,} turns, traced {traced / 2**20:6.1f} MiB, RSS {rss_mib():5.0f} MiB"
            f"{c_heap}; {live}"
        )
        self.rows.append(row)
        print(row, flush=True)

    def report(self) -> None:
        if self.first is None or self.last is None:
            print("tracemalloc: fewer than two snapshots (make --duration longer than --warmup + --snapshot-every)")
            return
        (t0, n0, first), (t1, n1, last) = self.first, self.last
        tm, nm, middle = self.mid or self.first
        turns = max(1, n1 - n0)
        grew = last.compare_to(first, "lineno")
        later = {stat.traceback[0]: stat.size_diff for stat in last.compare_to(middle, "lineno")}
        total = sum(stat.size_diff for stat in grew)
        print()
        print(
            f"tracemalloc, {t0:.0f} s -> {t1:.0f} s ({turns:,} turns): traced heap {total / 1024:+,.0f} KiB, "
            f"{total / turns:+,.0f} B per turn; from {tm:.0f} s on: "
            f"{sum(later.values()) / 1024:+,.0f} KiB over {max(1, n1 - nm):,} turns"
        )
        print("  top growing sites (first -> last snapshot, and the part after the middle one):")
        for stat in grew[:15]:
            frame = stat.traceback[0]
            print(
                f"    {stat.size_diff / 1024:+9,.0f} KiB {stat.count_diff:+8,} blocks  "
                f"(after middle {later.get(frame, 0) / 1024:+8,.0f} KiB)  {frame.filename}:{frame.lineno}"
            )
        if self.frames > 1:
            print("  where the top three were allocated from:")
            by_trace = last.compare_to(first, "traceback")
            for stat in by_trace[:3]:
                print(f"    {stat.size_diff / 1024:+,.0f} KiB:")
                for line in stat.traceback.format(limit=self.frames)[-2 * self.frames :]:
                    print(f"      {line}")
        kinds = self.types[-1] - self.types[0]
        print("  object types whose count grew most: " + ", ".join(f"{k} {v:+,}" for k, v in kinds.most_common(10)))


async def run(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="daehwa-soak-"))
    mp = multiprocessing.get_context("spawn")
    ours, theirs = mp.Pipe()
    fakes = mp.Process(target=serve_fakes, args=(theirs, args.fault_rate, args.first_token_timeout), daemon=True)
    fakes.start()
    try:
        up_url, backup_url = ours.recv()
        providers = workdir / "providers.toml"
        providers.write_text(
            f'[providers.up]\ntype = "openai"\nbase_url = "{up_url}"\nmodels = ["m"]\n\n'
            f'[providers.backup]\ntype = "openai"\nbase_url = "{backup_url}"\nmodels = ["m"]\n'
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
        watch: HeapWatch | None = None
        if args.tracemalloc:
            tracemalloc.start(args.tracemalloc_frames)
            watch = HeapWatch(services, args.tracemalloc_frames, (args.warmup + args.duration) / 2)

        started = time.perf_counter()
        workers = [
            asyncio.create_task(conversation(services, u, stop, ttfts, outcomes, args.made_up_models)) for u in users
        ]
        report_every = max(10.0, args.duration / 6)
        next_report = started + report_every
        next_snapshot = started + args.warmup
        rss_timeline: list[str] = []
        while time.perf_counter() - started < args.duration:
            await asyncio.sleep(0.5)
            now = time.perf_counter()
            if watch is not None and now >= next_snapshot:
                next_snapshot += args.snapshot_every
                watch.snap(now - started, sum(outcomes.values()))
            if now >= next_report:
                next_report += report_every
                rss_timeline.append(f"{rss_mib():.0f}")
                print(
                    f"  {now - started:5.0f}s: {sum(outcomes.values()):,} turns, "
                    f"RSS {rss_timeline[-1]} MiB, breaker {services.router.model_state('up/m')}",
                    flush=True,
                )
        stop.set()
        await asyncio.gather(*workers)
        elapsed = time.perf_counter() - started
        await services.chat.drain()
        if watch is not None:
            watch.snap(elapsed, sum(outcomes.values()))
        gc.collect()
        rss_after = rss_mib()
        live = live_objects(services)
        rss_trimmed = malloc_trim()
        m = services.metrics.registry
        transitions = {
            state: int(
                m.get_sample_value("daehwa_circuit_breaker_transitions_total", {"model": "up/m", "state": state}) or 0
            )
            for state in ("open", "half-open", "closed")
        }
        await services.aclose()
        ours.send("stop")
        calls = ours.recv()
    finally:
        fakes.join(15)
        if fakes.is_alive():
            fakes.kill()

    total = sum(outcomes.values())
    print()
    print(f"duration {elapsed:.0f} s, {args.conversations} concurrent conversations, fault rate {args.fault_rate:.0%}")
    print(
        f"turns completed: {total:,} ({total / elapsed:.1f}/s); calls to 'up': {calls['up']:,}, "
        f"to 'backup': {calls['backup']:,}"
    )
    for kind, count in outcomes.most_common():
        print(f"  {kind:16s} {count:7,}  ({count / total:.1%})")
    print(
        f"time to first token (client): p50 {percentile(ttfts, 0.5) * 1000:.0f} ms, "
        f"p99 {percentile(ttfts, 0.99) * 1000:.0f} ms, max {max(ttfts) * 1000:.0f} ms, "
        f"mean {statistics.fmean(ttfts) * 1000:.0f} ms"
    )
    print(f"breaker of up/m: {transitions}")
    print(
        f"memory (RSS): before {rss_before:.0f} MiB, after {rss_after:.0f} MiB ({rss_after - rss_before:+.0f} MiB); "
        f"every {report_every:.0f} s: {', '.join(rss_timeline)} MiB"
        + (f"; {rss_trimmed:.0f} MiB once malloc_trim() returned glibc's free memory" if rss_trimmed else "")
    )
    print("left at the end: " + ", ".join(f"{k} {v:,}" for k, v in live.items()))
    if watch is not None:
        print("heap snapshots:")
        print("\n".join(watch.rows))
        watch.report()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of load (default 120)")
    parser.add_argument("--conversations", type=int, default=50, help="concurrent conversations (default 50)")
    parser.add_argument("--fault-rate", type=float, default=1 / 3, help="share of upstream requests that fail")
    parser.add_argument(
        "--first-token-timeout", type=float, default=1.0, help="DAEHWA_FIRST_TOKEN_TIMEOUT for the run (default 1 s)"
    )
    parser.add_argument(
        "--made-up-models", type=float, default=0.0, help="share of turns that name a model never seen before"
    )
    parser.add_argument("--tracemalloc", action="store_true", help="snapshot the heap to find what grows (slower)")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds of load before the first heap snapshot")
    parser.add_argument("--snapshot-every", type=float, default=60.0, help="seconds between heap snapshots")
    parser.add_argument("--tracemalloc-frames", type=int, default=1, help="stack depth kept per allocation")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
