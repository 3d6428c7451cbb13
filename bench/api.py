"""REST API throughput and latency against calling the engine in-process: what HTTP costs, and what the hot cache
and authentication change.

Builds N trades + N quotes (20 symbols x 5 days) in a K2 lake through K2's writer in 250k-row commits (as
`k2 ingest` leaves them), starts `k2 serve` on loopback, and drives it from a second process (`--client`) with C
concurrent keep-alive connections, for each query kind:
- last: the last trade at or before a moment, one symbol (`/v1/trades/last`) — the point query of the SLO;
- bars: 1-minute bars of a symbol-day (`/v1/bars`, JSON);
- mix: 80% last, 20% bars.
Requests are drawn from a fixed pool of `--distinct` different ones (what dashboards and desks ask again and
again); with the hot cache on, the first draw of each is a miss and the rest are hits. The baseline is the same
calls on a `QueryEngine` in this process. Every request is checked for status 200 (a failure fails the run).
Server configurations: the hot cache off and on (`K2_API_CACHE_MB`), with API-key authentication (`--auth`) or
without. Rate limiting is off for the measurement.

    .venv/bin/python bench/api.py --ticks 2000000 --seconds 5 --concurrency 1 8
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
KINDS = ("last", "bars", "mix")


def pick(kind: str, rng: random.Random) -> tuple[str, str, dt.datetime]:
    """(query, symbol, moment) of one request of `kind`."""
    query = kind if kind != "mix" else ("last" if rng.random() < 0.8 else "bars")
    day = dt.datetime.combine(FIRST_DAY + dt.timedelta(days=rng.randrange(DAYS)), dt.time(), dt.UTC)
    moment = day + dt.timedelta(seconds=rng.randrange(86_400)) if query == "last" else day
    return query, rng.choice(SYMBOLS), moment


def pool(kind: str, distinct: int) -> list[tuple[str, str, dt.datetime]]:
    """The fixed set of different requests the clients draw from."""
    rng = random.Random(7)
    return [pick(kind, rng) for _ in range(distinct)]


def request_path(query: str, symbol: str, moment: dt.datetime) -> str:
    if query == "last":
        return "/v1/trades/last?" + urllib.parse.urlencode({"symbols": symbol, "at": moment.isoformat()})
    span = {"start": moment.date().isoformat(), "end": (moment.date() + dt.timedelta(days=1)).isoformat()}
    return "/v1/bars?" + urllib.parse.urlencode({"symbols": symbol, "interval": "1m", **span})


def engine_call(engine: object, query: str, symbol: str, moment: dt.datetime) -> object:
    from k2.query.engine import QueryEngine, TimeRange
    from k2.schemas import Dataset

    assert isinstance(engine, QueryEngine)
    if query == "last":
        return engine.last(Dataset.TRADES, [symbol], moment)
    return engine.bars([symbol], "1m", TimeRange(moment, moment + dt.timedelta(days=1)))


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
    with ThreadPoolExecutor(concurrency) as threads:
        list(threads.map(worker, range(concurrency)))
    return summarize([x for each in latencies for x in each], time.perf_counter() - started)


# ------------------------------------------------------------------------------------------- client process


def client(port: int, kind: str, concurrency: int, seconds: float, distinct: int, key: str) -> None:
    """The load generator (a process of its own): keep-alive connections, one per thread."""
    local = threading.local()
    paths = [request_path(*request) for request in pool(kind, distinct)]
    headers = {"X-API-Key": key} if key else {}

    def one(rng: random.Random) -> None:
        if not hasattr(local, "connection"):
            local.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        local.connection.request("GET", rng.choice(paths), headers=headers)
        response = local.connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise SystemExit(f"{response.status}: {body[:300]!r}")

    for warm in range(20):
        one(random.Random(1000 + warm))
    print(json.dumps(run_threads(concurrency, seconds, one)))


def over_http(port: int, kind: str, concurrency: int, seconds: float, distinct: int, key: str) -> dict[str, float]:
    result = subprocess.run([sys.executable, __file__, "--client", kind, "--port", str(port), "--concurrency",
                             str(concurrency), "--seconds", str(seconds), "--distinct", str(distinct),
                             "--key", key], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"the load generator failed: {result.stdout[-500:]} {result.stderr[-500:]}")
    return dict(json.loads(result.stdout))


def start_server(home: Path, workers: int, extra_env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    env = {**os.environ, "K2_HOME": str(home), "K2_KAFKA_BOOTSTRAP": "127.0.0.1:1", "K2_LOG_LEVEL": "WARNING",
           "K2_API_RATE_LIMIT": "off", **extra_env}
    server = subprocess.Popen([sys.executable, "-m", "k2.cli", "serve", "--port", str(port), "--workers",
                               str(workers)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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
            if server.poll() is not None:
                raise SystemExit(f"k2 serve exited: {server.stderr.read().decode()[-800:]}") from None  # type: ignore[union-attr]
            time.sleep(0.2)
    server.kill()
    raise SystemExit("k2 serve did not start")


def api_key(home: Path) -> str:
    from k2.api.auth.keys import KeyStore
    from k2.settings import Settings

    return KeyStore(Settings(home=home).keys_db).create("bench", ("reader",), None)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=2_000_000, help="trades, and as many quotes")
    parser.add_argument("--home", type=Path, help="reuse a lake built by an earlier run")
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--workers", type=int, default=1, help="`k2 serve --workers`")
    parser.add_argument("--distinct", type=int, default=500, help="different requests the clients draw from")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--auth", action="store_true", help="also measure with API-key authentication on")
    parser.add_argument("--redis", action="store_true",
                        help="also measure the hot cache with its Redis tier (starts a loopback redis-server)")
    parser.add_argument("--client", choices=KINDS)
    parser.add_argument("--port", type=int)
    parser.add_argument("--key", default="")
    options = parser.parse_args()
    if options.client:
        client(options.port, options.client, options.concurrency[0], options.seconds, options.distinct, options.key)
        return
    home = options.home
    if home is None or not home.exists():
        from query import build_k2, make_data

        home = home or Path(tempfile.mkdtemp(prefix="k2-api-bench-")) / "home"
        started = time.perf_counter()
        build_k2(home, make_data(options.ticks, len(SYMBOLS), DAYS), 250_000)
        print(f"built {options.ticks:,} trades + {options.ticks:,} quotes in {time.perf_counter() - started:.0f}s "
              f"at {home}")
    rows = in_process(home, options)
    configs = [("HTTP, cache off", {"K2_API_CACHE_MB": "0"}, ""), ("HTTP, hot cache", {}, "")]
    if options.auth:
        configs.append(("HTTP, hot cache, API key", {"K2_API_AUTH": "on"}, api_key(home)))
    redis = start_redis() if options.redis else None
    if redis is not None:
        configs.append(("HTTP, hot cache + Redis tier", {"K2_API_CACHE_REDIS": "on", "K2_REDIS_URL": redis[1]}, ""))
    try:
        measure_configs(home, options, configs, rows)
    finally:
        if redis is not None:
            redis[0].terminate()
    report(rows)


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    import shutil

    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("--redis needs redis-server (apt-get install redis-server)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                               "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return server, f"redis://127.0.0.1:{port}/0"


def measure_configs(home: Path, options: argparse.Namespace, configs: list[tuple[str, dict[str, str], str]],
                    rows: list[tuple[str, str, int, dict[str, float]]]) -> None:
    for label, env, key in configs:
        server, port = start_server(home, options.workers, env)
        try:
            for kind in options.kinds:
                for concurrency in options.concurrency:
                    result = over_http(port, kind, concurrency, options.seconds, options.distinct, key)
                    rows.append((kind, f"{label} ({options.workers}w)", concurrency, result))
        finally:
            server.terminate()
            server.wait(30)


def in_process(home: Path, options: argparse.Namespace) -> list[tuple[str, str, int, dict[str, float]]]:
    from k2.query.engine import QueryEngine
    from k2.settings import Settings

    engine = QueryEngine(Settings(home=home))
    rows = []
    for kind in options.kinds:
        requests = pool(kind, options.distinct)
        for request in requests[:20]:
            engine_call(engine, *request)
        for concurrency in options.concurrency:
            result = run_threads(concurrency, options.seconds,
                                 lambda rng, r=requests: engine_call(engine, *rng.choice(r)) and None)
            rows.append((kind, "in-process engine", concurrency, result))
    engine.close()
    return rows


def report(rows: list[tuple[str, str, int, dict[str, float]]]) -> None:
    baseline = {(kind, c): r for kind, mode, c, r in rows if mode == "in-process engine"}
    print(f"\n{'query':<6} {'mode':<34} {'conc':>5} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'req/s ÷ in-proc':>16} {'p50 ÷ in-proc':>14}")
    for kind, mode, concurrency, result in rows:
        base = baseline[(kind, concurrency)]
        print(f"{kind:<6} {mode:<34} {concurrency:>5} {int(result['requests']):>9,} {result['rps']:>8,.0f} "
              f"{result['p50']:>8.2f} {result['p99']:>8.2f} {result['rps'] / base['rps']:>16.2f} "
              f"{result['p50'] / base['p50']:>14.2f}")


if __name__ == "__main__":
    main()
