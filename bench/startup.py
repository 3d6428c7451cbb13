"""Wall time of one-shot `k2 query …` commands on a small lake, against bare Python and against importing the
libraries a query cannot do without (the floor). Every command is a fresh process, as a user's shell runs it.

    .venv/bin/python bench/startup.py --runs 15

The lake: 200k trades and 200k quotes, 5 symbols x 2 days, landed through K2's writer in 25k-row commits.
The "heavy" column says whether the process imported pyiceberg, SQLAlchemy or pandas (K2's read path needs none).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from query import build_k2, make_data

FLOOR = "import numpy, pyarrow, pyarrow.compute, pydantic, typer, rich.console"  # what a query cannot avoid
PROBE = ("import atexit, sys; atexit.register(lambda: print('HEAVY', ','.join(sorted({m.split('.')[0] for m in "
         "sys.modules} & {'pyiceberg', 'sqlalchemy', 'pandas'})) or '-', file=sys.stderr))\n")


def wall_ms(command: list[str], env: dict[str, str], runs: int) -> tuple[float, str]:
    samples, heavy = [], "?"
    subprocess.run(command, env=env, capture_output=True, check=False)  # warm-up: page cache, compiled modules
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        samples.append((time.perf_counter() - started) * 1000)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed: {done.stderr.strip()[-400:]}")
        heavy = next((line.split()[1] for line in done.stderr.splitlines() if line.startswith("HEAVY")), heavy)
    return statistics.median(samples), heavy


def k2_probe(args: list[str]) -> list[str]:
    """`k2 ARGS` through the console entry point, reporting which heavy modules the process imported."""
    code = PROBE + f"import sys; sys.argv = ['k2', *{args!r}]\nfrom k2.cli.entry import main\nmain()\n"
    return [sys.executable, "-c", code]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--no-bytecode", action="store_true", help="keep PYTHONDONTWRITEBYTECODE as it is set")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="k2-startup-") as root:
        settings = build_k2(Path(root) / "home", make_data(200_000, 5, 2), 25_000)
        # as a user's shell runs it: Python caches compiled modules (this machine sets PYTHONDONTWRITEBYTECODE=1,
        # which recompiles every module of K2 on each start, ~75 ms); the first run of each command is discarded
        env = {**os.environ, "K2_HOME": str(settings.home)}
        if not options.no_bytecode:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
        day = ["--start", "2026-01-05", "--end", "2026-01-06"]
        rows: list[tuple[str, list[str]]] = [
            ("python -c pass (baseline)", [sys.executable, "-c", PROBE]),
            ("import numpy, pyarrow, pydantic, typer, rich (floor)", [sys.executable, "-c", PROBE + FLOOR]),
            ("k2 --help", k2_probe(["--help"])),
            ("k2 query bars -s S000 <day> -i 1h", k2_probe(["query", "bars", "-s", "S000", *day, "-i", "1h"])),
            ("k2 query trades -s S000 <day> --limit 20", k2_probe(["query", "trades", "-s", "S000", *day,
                                                                   "--limit", "20"])),
            ("k2 query last -s S000,S001 --at 2026-01-05T18:00Z",
             k2_probe(["query", "last", "-s", "S000,S001", "--at", "2026-01-05T18:00Z"])),
            ("k2 query summary (whole lake)", k2_probe(["query", "summary"])),
            ("k2 snapshots", k2_probe(["snapshots"])),
        ]
        print(f"{'command':<62} {'p50 ms':>8} {'÷ python':>9}  heavy imports")
        baseline = None
        for name, command in rows:
            p50, heavy = wall_ms(command, env, options.runs)
            baseline = baseline or p50
            print(f"{name:<62} {p50:>8.0f} {p50 / baseline:>9.1f}  {heavy}")


if __name__ == "__main__":
    main()
