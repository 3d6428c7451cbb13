"""Process-wide tuning, applied by long-running entry points (`k2 ingest`, `k2 demo`, benches), never by
library code: a library cannot know what else runs in its process."""

from __future__ import annotations

import gc


def tune_gc_for_streaming() -> None:
    """Consuming allocates millions of short-lived, acyclic objects: with the default thresholds the cyclic
    collector runs every 700 allocations and re-scans them. Objects alive now (imports, settings) are frozen out
    of its scans, and the young generation collects 100 times less often; cycles are still collected."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(70_000, 20, 20)
