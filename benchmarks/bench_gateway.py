"""What daehwa's /v1/chat/completions adds in front of an instant upstream: requests/s, latency p50/p99, CPU/request.

Four processes (five with ``--compare``): the fake upstream in instant mode (``tests/fake_upstream.py --instant``:
precomputed replies), a real ``daehwa serve`` whose default model is that upstream (providers file, SQLite store, one
API key, logging at info),
the minimal FastAPI + httpx pass-through proxy of ``proxy_baseline.py`` in front of the same upstream, and this load
client. The same request goes to the upstream directly, through the baseline proxy and through daehwa, at each
concurrency, with the paths alternating per round so background load on a shared machine hits all alike.
"Added" is daehwa's latency minus the direct latency at the same percentile: auth, validation, the turn pipeline and
two store transactions
(the logged ``api`` conversation with the user's message and the streaming reply, then the reply with its usage),
plus the extra HTTP hop. "CPU/req" is the CPU time the daehwa server process spent per request (from /proc, Linux),
which other load on a shared machine disturbs much less than latency.

"ratio" is daehwa's CPU per request over the baseline proxy's (the issue's goal: at most 1.2).

    python benchmarks/bench_gateway.py                         # concurrency 1 and 32
    python benchmarks/bench_gateway.py --requests 2000 --concurrency 1 8 32 --stream
    git worktree add --detach /tmp/daehwa-main main
    python benchmarks/bench_gateway.py --compare /tmp/daehwa-main   # this tree and main's, side by side

``--compare`` runs a second daehwa server from another source tree (own SQLite file, same upstream) in the same
alternating rounds, so a change is measured against its base under the same background load.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
BODY = {"model": "up/fake-model", "messages": [{"role": "user", "content": "Say hello in one short sentence."}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"daehwa serve exited:\n{log.read_text()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"daehwa serve did not become healthy:\n{log.read_text()}")


async def load(url: str, headers: dict[str, str], n: int, concurrency: int, stream: bool) -> list[float]:
    """Latencies (seconds) of ``n`` requests from ``concurrency`` workers sharing keep-alive connections."""
    body = {**BODY, "stream": True} if stream else BODY
    latencies: list[float] = []
    remaining = n
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30, headers=headers) as client:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                start = time.perf_counter()
                r = await client.post(url, json=body)
                r.raise_for_status()
                if stream:
                    assert r.text.rstrip().endswith("data: [DONE]")
                latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def start_daehwa(
    data: Path, upstream_url: str, log_level: str, *, source: str | None = None
) -> tuple[subprocess.Popen[bytes], int, str, Path]:
    """A ``daehwa serve`` on its own SQLite file with one user and API key: (process, port, key, log file).

    ``source`` runs the daehwa package found in that directory instead (its working directory and ``PYTHONPATH``), e.g.
    a worktree of main."""
    data.mkdir(parents=True)
    (data / "providers.toml").write_text(
        f'[providers.up]\ntype = "openai"\nbase_url = "{upstream_url}"\nmodels = ["fake-model"]\n'
    )
    port = free_port()
    env = {
        **os.environ,
        "DAEHWA_DATA_DIR": str(data),
        "DAEHWA_DATABASE_URL": f"sqlite:///{data / 'bench.db'}",
        "DAEHWA_PROVIDERS_FILE": str(data / "providers.toml"),
        "DAEHWA_DEFAULT_MODEL": "up/fake-model",
        "DAEHWA_PORT": str(port),
        "DAEHWA_LOG_LEVEL": log_level,
    }
    cwd = ROOT  # ``python -m`` looks in the working directory first
    if source is not None:
        cwd = Path(source).resolve()
        env["PYTHONPATH"] = str(cwd)
    cli = [sys.executable, "-m", "daehwa"]
    subprocess.run(
        [*cli, "users", "create", "bench", "--no-password"], env=env, cwd=cwd, check=True, capture_output=True
    )
    made = subprocess.run(
        [*cli, "keys", "create", "--user", "bench"], env=env, cwd=cwd, check=True, capture_output=True
    )
    key = made.stdout.decode().strip().splitlines()[-1]
    log = data / "serve.log"
    with log.open("wb") as sink:
        server = subprocess.Popen([*cli, "serve"], env=env, cwd=cwd, stdout=sink, stderr=sink)
    return server, port, key, log


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` so far (Linux /proc), or None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests per path and concurrency")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds the requests are split into")
    parser.add_argument("--stream", action="store_true", help="stream: true (SSE) instead of one JSON response")
    parser.add_argument("--log-level", default="info", help="daehwa's DAEHWA_LOG_LEVEL (the issue measures at info)")
    parser.add_argument(
        "--compare",
        metavar="SOURCE_DIR",
        help="also run the daehwa found in this directory (e.g. a worktree of main) as 'compared', side by side",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        upstream = subprocess.Popen(
            [sys.executable, "-m", "tests.fake_upstream", "--instant"], cwd=ROOT, stdout=subprocess.PIPE
        )
        assert upstream.stdout is not None
        upstream_url = upstream.stdout.readline().decode().strip()  # http://127.0.0.1:PORT/v1
        proxy_port = free_port()
        proxy = [sys.executable, str(ROOT / "benchmarks" / "proxy_baseline.py"), "--upstream", upstream_url]
        # Its log goes to a file as daehwa's does (serve.log): both pay the same for writing their lines.
        with (data / "proxy.log").open("wb") as sink:
            baseline = subprocess.Popen([*proxy, "--port", str(proxy_port)], stdout=sink, stderr=sink)
        servers = {"daehwa": start_daehwa(data / "daehwa", upstream_url, args.log_level)}
        if args.compare:
            servers["compared"] = start_daehwa(data / "compared", upstream_url, args.log_level, source=args.compare)
        try:
            for server, port, _, log in servers.values():
                wait_healthy(f"http://127.0.0.1:{port}/healthz", server, log)
            wait_healthy(f"http://127.0.0.1:{proxy_port}/healthz", baseline, data / "daehwa" / "serve.log")
            paths: dict[str, tuple[str, dict[str, str]]] = {
                "direct": (f"{upstream_url}/chat/completions", {}),
                "baseline": (f"http://127.0.0.1:{proxy_port}/v1/chat/completions", {}),
            }
            pids = {"direct": upstream.pid, "baseline": baseline.pid}
            for name, (server, port, key, _) in servers.items():
                paths[name] = (f"http://127.0.0.1:{port}/v1/chat/completions", {"Authorization": f"Bearer {key}"})
                pids[name] = server.pid
            mode = "stream" if args.stream else "non-stream"
            print(f"/v1/chat/completions ({mode}), {args.requests} requests per path and concurrency")
            print(f"{'conc':>4} {'path':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU/req':>8}")
            names = tuple(pids)
            for concurrency in args.concurrency:
                results: dict[str, list[float]] = {name: [] for name in names}
                elapsed = {name: 0.0 for name in names}
                cpu: dict[str, float | None] = {name: 0.0 for name in names}
                for url, headers in paths.values():  # warm up connections and caches
                    asyncio.run(load(url, headers, min(100, args.requests), concurrency, args.stream))
                per_round = max(1, args.requests // args.rounds)
                for round_no in range(args.rounds):
                    order = names if round_no % 2 == 0 else names[::-1]
                    for name in order:
                        url, headers = paths[name]
                        start, cpu_start = time.perf_counter(), cpu_seconds(pids[name])
                        results[name] += asyncio.run(load(url, headers, per_round, concurrency, args.stream))
                        elapsed[name] += time.perf_counter() - start
                        cpu_end, spent = cpu_seconds(pids[name]), cpu[name]
                        if cpu_start is None or cpu_end is None or spent is None:
                            cpu[name] = None
                        else:
                            cpu[name] = spent + cpu_end - cpu_start
                for name in names:
                    lat = results[name]
                    spent = cpu[name]
                    cpu_text = "n/a" if spent is None else f"{spent / len(lat) * 1000:.2f}"
                    print(
                        f"{concurrency:>4} {name:>8} {len(lat) / elapsed[name]:>8.0f} "
                        f"{pct(lat, 50) * 1000:>8.2f} {pct(lat, 99) * 1000:>8.2f} {cpu_text:>8}"
                    )
                added50 = (pct(results["daehwa"], 50) - pct(results["direct"], 50)) * 1000
                added99 = (pct(results["daehwa"], 99) - pct(results["direct"], 99)) * 1000
                mean_added = (statistics.mean(results["daehwa"]) - statistics.mean(results["direct"])) * 1000
                print(f"{concurrency:>4}   added p50 {added50:.2f} ms, p99 {added99:.2f} ms, mean {mean_added:.2f} ms")
                theirs = cpu["baseline"]
                for name in servers:
                    ours = cpu[name]
                    if ours is not None and theirs:
                        ratio = (ours / len(results[name])) / (theirs / len(results["baseline"]))
                        print(f"{concurrency:>4}   CPU/req {name} / baseline proxy = {ratio:.2f} (goal <= 1.2)")
        finally:
            for server, *_ in servers.values():
                server.terminate()
                server.wait(15)
            baseline.terminate()
            baseline.wait(15)
            upstream.terminate()
            upstream.wait(15)


if __name__ == "__main__":
    main()
