"""Backup and restore times (RPO/RTO) on an existing lake, with a plain `cp -r` of the same home as the baseline.

    .venv/bin/python bench/recovery.py --home /tmp/k2runs/scale/home --to /tmp/k2runs/backups

1. `k2 backup` of the whole lake (full), and again with nothing new (incremental: the cost of a frequent schedule),
   against `cp -r` of the catalog and warehouse.
2. The lake moved aside (as if lost), `k2 restore` of the newest point, the answers compared with the original's,
   then the original put back. Nothing of the original is changed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from k2.query.engine import QueryEngine
from k2.recovery.backup import backup
from k2.recovery.restore import restore
from k2.settings import Settings


def answers(settings: Settings) -> object:
    engine = QueryEngine(settings)
    return engine.counts().to_pylist(), engine.bars(None, "1d").to_pylist()


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--to", required=True, help="backup location (emptied first when a local directory)")
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    settings = Settings(home=args.home)
    lake = [args.home / "catalog.db", args.home / "warehouse"]
    if "://" not in args.to:
        shutil.rmtree(args.to, ignore_errors=True)
    before = answers(settings)
    size = sum(tree_bytes(p) if p.is_dir() else p.stat().st_size for p in lake)

    baseline = Path(f"{args.to.rstrip('/')}-cp")
    shutil.rmtree(baseline, ignore_errors=True)
    baseline.mkdir(parents=True)
    started = time.perf_counter()
    subprocess.run(["cp", "-r", *map(str, lake), str(baseline)], check=True)
    copy_s = time.perf_counter() - started
    shutil.rmtree(baseline)

    full = backup(settings, args.to, args.workers)
    again = backup(settings, args.to, args.workers)

    aside = args.home.with_name(args.home.name + ".aside")
    aside.mkdir()
    for path in lake:
        path.rename(aside / path.name)
    try:
        started = time.perf_counter()
        restored = restore(settings, args.to, workers=args.workers)
        restore_s = time.perf_counter() - started
        same = answers(settings) == before
    finally:
        for path in lake:
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
            (aside / path.name).rename(path)
        aside.rmdir()

    rows = [
        ("cp -r catalog + warehouse (baseline)", copy_s, size, "-"),
        ("k2 backup, full", full.seconds, full.bytes_copied, f"{full.files_copied:,} files"),
        ("k2 backup, nothing new (incremental)", again.seconds, again.bytes_copied,
         f"{again.files_copied:,} copied, {again.files_already_there:,} there"),
        ("k2 restore, newest point", restore_s, restored.bytes_copied, f"{restored.files_copied:,} files"),
    ]
    print(f"lake: {size / 1e6:,.0f} MB, {len(full.point.files):,} files; answers after restore equal: {same}")
    print(f"{'what':40} {'s':>8} {'MB':>9} {'MB/s':>8} {'÷ cp -r':>8}  files")
    for name, seconds, moved, files in rows:
        rate = moved / 1e6 / seconds if seconds else 0.0
        print(f"{name:40} {seconds:8.2f} {moved / 1e6:9.1f} {rate:8.1f} {seconds / copy_s:8.2f}  {files}")
    if not same:
        sys.exit("the restored lake answers differently")


if __name__ == "__main__":
    main()
