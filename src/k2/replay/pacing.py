"""Pacing a replay at N times real time, and measuring how late each event came out.

Each event has a target wall time: the start, plus its event-time offset divided by the speed, minus the gaps the
replay skips (a gap between consecutive events longer than the threshold, overnight or over a weekend, is
compressed to nothing). Events are handed on in slices as their targets pass; the lateness of every event
(hand-over time minus target) goes into a fixed histogram (log-spaced bins, 1 µs to ~20 min, 5% apart), so the
percentiles cost no memory per event.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa

from k2.arrow_util import micros
from k2.obs.metrics import REPLAY_LATENESS_SECONDS

_EDGES_US = np.concatenate([[0.0], np.geomspace(1.0, 1.2e9, 430)])


class PacingStats:
    def __init__(self) -> None:
        self._counts = np.zeros(len(_EDGES_US), np.int64)
        self.events = 0

    def add(self, late_us: np.ndarray) -> None:
        bins = np.searchsorted(_EDGES_US, np.maximum(late_us, 0), "right") - 1
        self._counts += np.bincount(bins, minlength=len(_EDGES_US))[: len(_EDGES_US)]
        self.events += len(late_us)

    def percentile_ms(self, q: float) -> float | None:
        """The q-th percentile of lateness in ms (upper edge of its bin: at most 5% over), None before any event."""
        if self.events == 0:
            return None
        rank = int(np.ceil(q / 100 * self.events))
        index = int(np.searchsorted(np.cumsum(self._counts), max(rank, 1)))
        upper = _EDGES_US[min(index + 1, len(_EDGES_US) - 1)]
        return float(upper) / 1000


class Pacer:
    """Hands batches on no earlier than their events' targets (speed None: as fast as possible)."""

    def __init__(self, speed: float | None, skip_gaps_us: int | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        if speed is not None and speed <= 0:
            raise ValueError("speed must be positive")
        self._speed = speed
        self._skip = skip_gaps_us
        self._clock, self._sleep = clock, sleep
        self._origin_ts: int | None = None
        self._origin_wall = 0.0
        self._last_ts = 0
        self._skipped = 0
        self.stats = PacingStats()

    def hold(self, seconds: float) -> None:
        """The replay was paused for `seconds`: every later target moves by as much."""
        self._origin_wall += seconds

    def paced(self, batch: pa.RecordBatch, keep_going: Callable[[], bool] = lambda: True) -> Iterator[pa.RecordBatch]:
        """`batch` in slices, each handed on once its events' targets have passed."""
        if self._speed is None or batch.num_rows == 0:
            yield batch
            return
        ts = micros(batch.column("ts"))
        if self._origin_ts is None:
            self._origin_ts, self._origin_wall, self._last_ts = int(ts[0]), self._clock(), int(ts[0])
        steps = np.diff(ts, prepend=self._last_ts)
        if self._skip is not None:
            skipped = self._skipped + np.cumsum(np.where(steps > self._skip, steps, 0))
            self._skipped = int(skipped[-1])
        else:
            skipped = np.zeros(len(ts), np.int64)
        self._last_ts = int(ts[-1])
        targets = self._origin_wall + (ts - self._origin_ts - skipped) / (self._speed * 1e6)
        done = 0
        while done < len(ts) and keep_going():
            now = self._clock()
            ready = int(np.searchsorted(targets, now, "right"))
            if ready <= done:
                self._sleep(min(targets[done] - now, 0.05))  # short naps: a pause or stop is seen quickly
                continue
            late_us = (now - targets[done:ready]) * 1e6
            self.stats.add(late_us)
            REPLAY_LATENESS_SECONDS.observe(float(late_us.max()) / 1e6)  # per slice: the latest event of it
            yield batch.slice(done, ready - done)
            done = ready
