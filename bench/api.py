"""REST API throughput and latency against calling the engine in-process: what HTTP costs.

Builds N trades + N quotes (20 symbols x 5 days) in a K2 lake through K2's writer in 250k-row commits (as
`k2 ingest` leaves them), starts `k2 serve` on loopback, and drives it from a second process (`--client`) with C
concurrent keep-alive connections, for each query:
- last: the last trade at or before a random moment, one random symbol (`/v1/trades/last`);
- bars: 1-minute bars of a random symbol-day (`/v1/bars`, JSON, 1,440 rows at most).
The baseline is the same calls on a `QueryEngine` in this process (sequential, then from C threads). Every
request is checked for status 200; a failed request fails the run. Latencies are per request, wall clock.

    .venv/bin/python bench/api.py --ticks 2000000 --seconds 10 --concurrency 1 8
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

FIRST_DAY = dt.date(2026, 1, 5)
DAYS = 5
SYMBOLS = [f"S{i:03d}" for i in range(20)]


def request_path(kind: str, rng: random.Random) -> str:
    symbol = rng.choice(SYMBOLS)
    day = FIRST_DAY + dt.timedelta(days=rng.randrange(DAYS))
    if kind == "last":
        moment = dt.datetime.combine(day, dt.time(), dt.UTC) + dt.timedelta(seconds=rng.randrange(86_400))
        return "/v1/trades/last?" + urllib.parse.urlencode({"symbols": symbol, "at": moment.isoformat()})
    span = {"start": day.isoformat(), "end": (day + dt.timedelta(days=1)).isoformat()}
    return "/v1/bars?" + urllib.parse.urlencode({"symbols": symbol, "interval": "1m", **span})


def engine_call(engine: object, kind: str, rng: random.Random) -> Callable[[], object]:
    from k2.query.engine import QueryEngine, TimeRange
    from k2.schemas import Dataset

    assert isinstance(engine, QueryEngine)
    symbol = rng.choice(SYMBOLS)
    day = dt.datetime.combine(FIRST_DAY + dt.timedelta(days=rng.randrange(DAYS)), dt.time(), dt.UTC)
    if kind == "last":
        moment = day + dt.timedelta(seconds=rng.randrange(86_400))
        return lambda: engine.last(Dataset.TRADES, [symbol], moment)
    return lambda: engine.bars([symbol], "1m", TimeRange(day, day + dt.timedelta(days=1)))


def summarize(latencies: list[float], seconds: float) -> dict[str, float]:
    ordered = sorted(latencies)
    return {"requests": len(ordered), "rps": len(ordered) / seconds, "p50": statistics.median(ordered) * 1000,
            "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000}


def run_threads(concurrency: int, seconds: float, one: Callable[[random.Random], None]) -> dict[str, float]:
    """`concurrency` threads each call `one` in a loop for `seconds`; per-call latencies."""
    stop = time.perf_counter() + seconds
    latencies: list[list[float]] = [[] for _ in range(concurrency)]

    def worker(index: int) -> None:
        rng = random.Random(index)
        while time.perf_counter() < stop:
            started = time.perf_counter()
            one(rng)
            latencies[index].append(time.perf_counter() - started)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    return summarize([x for each in latencies for x in each], time.perf_counter() - started)


# ------------------------------------------------------------------------------------------- client process


def client(port: int, kind: str, concurrency: int, seconds: float) -> None:
    """The load generator (a process of its own): keep-alive connections, one per thread."""
    local = threading.local()

    def one(rng: random.Random) -> None:
        if not hasattr(local, "connection"):
            local.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        local.connection.request("GET", request_path(kind, rng))
        response = local.connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise SystemExit(f"{response.status}: {body[:300]!r}")

    for warm in range(20):
        one(random.Random(1000 + warm))
    print(json.dumps(run_threads(concurrency, seconds, one)))


def over_http(port: int, kind: str, concurrency: int, seconds: float) -> dict[str, float]:
    result = subprocess.run([sys.executable, __file__, "--client", kind, "--port", str(port), "--concurrency",
                             str(concurrency), "--seconds", str(seconds)], capture_output=True, text=True, check=True)
    return dict(json.loads(result.stdout))


def start_server(home: Path, workers: int) -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    env = {**os.environ, "K2_HOME": str(home), "K2_KAFKA_BOOTSTRAP": "127.0.0.1:1", "K2_LOG_LEVEL": "WARNING"}
    server = subprocess.Popen([sys.executable, "-m", "k2.cli", "serve", "--port", str(port), "--workers",
                               str(workers)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health/live")
            status = connection.getresponse().status
            connection.close()
            if status == 200:
                return server, port
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("k2 serve did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=2_000_000, help="trades, and as many quotes")
    parser.add_argument("--home", type=Path, help="reuse a lake built by an earlier run")
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--workers", type=int, default=1, help="`k2 serve --workers`")
    parser.add_argument("--client", choices=["last", "bars"])
    parser.add_argument("--port", type=int)
    options = parser.parse_args()
    if options.client:
        client(options.port, options.client, options.concurrency[0], options.seconds)
        return
    home = options.home
    if home is None or not home.exists():
        from query import build_k2, make_data

        home = home or Path(tempfile.mkdtemp(prefix="k2-api-bench-")) / "home"
        started = time.perf_counter()
        build_k2(home, make_data(options.ticks, len(SYMBOLS), DAYS), 250_000)
        print(f"built {options.ticks:,} trades + {options.ticks:,} quotes in {time.perf_counter() - started:.0f}s "
              f"at {home}")

    from k2.query.engine import QueryEngine
    from k2.settings import Settings

    engine = QueryEngine(Settings(home=home))
    rows = []
    for kind in ("last", "bars"):
        for warm in range(20):
            engine_call(engine, kind, random.Random(warm))()
        for concurrency in options.concurrency:
            local = run_threads(concurrency, options.seconds, lambda rng, k=kind: engine_call(engine, k, rng)())
            rows.append((kind, "in-process engine", concurrency, local))
    engine.close()
    server, port = start_server(home, options.workers)
    try:
        for kind in ("last", "bars"):
            for concurrency in options.concurrency:
                rows.append((kind, f"HTTP, {options.workers} worker(s)", concurrency,
                             over_http(port, kind, concurrency, options.seconds)))
    finally:
        server.terminate()
        server.wait(30)
    baseline = {(kind, c): r for kind, mode, c, r in rows if mode == "in-process engine"}
    print(f"\n{'query':<6} {'mode':<22} {'conc':>5} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'req/s ÷ in-proc':>16} {'p50 ÷ in-proc':>14}")
    for kind, mode, concurrency, result in rows:
        base = baseline[(kind, concurrency)]
        print(f"{kind:<6} {mode:<22} {concurrency:>5} {int(result['requests']):>9,} {result['rps']:>8,.0f} "
              f"{result['p50']:>8.2f} {result['p99']:>8.2f} {result['rps'] / base['rps']:>16.2f} "
              f"{result['p50'] / base['p50']:>14.2f}")


if __name__ == "__main__":
    main()
