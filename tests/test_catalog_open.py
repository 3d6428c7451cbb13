"""Opening a fresh catalog from several places at once (an ingest and a `k2 maintain` started together, or two
threads of one test): pyiceberg's SqlCatalog creates its tables when it opens, and two openers race to do it."""

from __future__ import annotations

import threading
from pathlib import Path

from k2.lake.catalog import open_catalog
from k2.settings import Settings


def test_concurrent_openers_of_a_fresh_catalog_all_succeed(tmp_path: Path) -> None:
    failures: list[BaseException] = []
    for attempt in range(12):
        settings = Settings(home=tmp_path / f"home{attempt}")
        start = threading.Barrier(6)

        def open_it(settings: Settings = settings, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                open_catalog(settings).list_namespaces()
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert not failures, failures[:3]
