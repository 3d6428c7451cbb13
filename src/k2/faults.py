"""Named crash points for tests: `K2_CRASH_AT=POINT[@N]` makes the process exit hard (`os._exit`) the N-th time
it reaches POINT, with no cleanup, as a power cut or SIGKILL would. Unset (the default) they cost one comparison.

The points mark each step of landing a batch, so a test can prove what survives a crash between any two of them.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable

CRASH_EXIT_CODE = 86

STARTUP = "startup"  # catalog and tables open, consumer created, before it subscribes
GROUP_JOIN = "group-join"  # partitions handed over by the group, before the consumer seeks and reads
BEFORE_ICEBERG_COMMIT = "before-iceberg-commit"  # data files written, not yet committed
AFTER_ICEBERG_COMMIT = "after-iceberg-commit"  # rows and offsets committed, quality not yet recorded
AFTER_QUALITY = "after-quality"  # quality recorded, Kafka group offsets not yet committed

POINTS = (STARTUP, GROUP_JOIN, BEFORE_ICEBERG_COMMIT, AFTER_ICEBERG_COMMIT, AFTER_QUALITY)


def parse_crash_spec(spec: str) -> tuple[str, int]:
    """'after-quality@2' → ('after-quality', 2); the count defaults to 1."""
    point, _, count = spec.partition("@")
    if point not in POINTS:
        raise ValueError(f"unknown crash point {point!r}: one of {', '.join(POINTS)}")
    if count and (not count.isdigit() or int(count) < 1):
        raise ValueError(f"crash point count {count!r} is not a positive integer")
    return point, int(count or 1)


class CrashPoints:
    """Counts arrivals at each point; exits the process at the configured one."""

    def __init__(self, spec: str | None = None) -> None:
        self._target = parse_crash_spec(spec) if spec else None
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.context: Callable[[], str] = lambda: ""

    def reach(self, point: str) -> None:
        if self._target is None or point != self._target[0]:
            return
        with self._lock:
            self._counts[point] = self._counts.get(point, 0) + 1
            if self._counts[point] != self._target[1]:
                return
            sys.stderr.write(f"k2: crash point {point}@{self._target[1]} reached; {self.context()}\n")
            sys.stderr.flush()
            os._exit(CRASH_EXIT_CODE)
