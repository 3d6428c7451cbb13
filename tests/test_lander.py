"""The lander thread: work runs in submission order, and nothing runs after the first failure."""

from __future__ import annotations

import threading
import time

import pytest

from k2.ingest.lander import Lander


def test_work_runs_in_order_and_drain_waits_for_all_of_it() -> None:
    done: list[int] = []

    def land(n: int) -> None:
        time.sleep(0.001 * (n % 3))
        done.append(n)

    lander: Lander[int] = Lander(land)
    for n in range(50):
        lander.submit(n)
    lander.drain()
    assert done == list(range(50))
    lander.close()


def test_submit_blocks_while_one_batch_waits_behind_the_one_in_progress() -> None:
    release = threading.Event()
    lander: Lander[int] = Lander(lambda n: release.wait(5))
    lander.submit(1)  # in progress
    lander.submit(2)  # waits
    third = threading.Thread(target=lander.submit, args=(3,))
    third.start()
    third.join(0.3)
    assert third.is_alive()  # back-pressure: a third batch is not taken while two are in flight
    release.set()
    third.join(5)
    lander.drain()
    lander.close()


def test_first_failure_stops_later_work_and_is_raised_to_the_submitter() -> None:
    done: list[int] = []

    def land(n: int) -> None:
        if n == 3:
            raise OSError("catalog unreachable")
        done.append(n)

    lander: Lander[int] = Lander(land)
    with pytest.raises(OSError, match="catalog unreachable"):
        for n in range(10):
            lander.submit(n)
        lander.drain()
    assert done == [0, 1, 2]  # nothing after the failed batch, not even what was already queued
    with pytest.raises(OSError):
        lander.submit(11)
    lander.close()
    assert done == [0, 1, 2]
