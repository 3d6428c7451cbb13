"""Reading the landed Kafka offsets as snapshots pile up: K2's walk of the current ancestry (stops at the first
snapshot with offsets) against the old way (every snapshot sorted by sequence number), on the same metadata, with
loading the table's metadata (what any reader pays first) for scale.

    .venv/bin/python bench/offsets.py --snapshots 10 100 1000 3000

Prints µs per lookup (median of many) and the ratio to the sorting baseline.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from pyiceberg.table.metadata import TableMetadata

from k2.lake import writer
from k2.lake.catalog import ensure_table, open_catalog
from k2.lake.offsets import OFFSETS_PROPERTY, LandedOffsets, landed_offsets
from k2.schemas import Dataset
from k2.settings import Settings

sys.path.insert(0, str(Path(__file__).parent))
from query import p50_ms  # the benches share one timer


def sorted_lookup(metadata: TableMetadata, topic: str) -> LandedOffsets | None:
    """The pre-issue-13 lookup: all snapshots, newest sequence number first (also wrong after a rollback)."""
    for snapshot in sorted(metadata.snapshots, key=lambda s: s.sequence_number or 0, reverse=True):
        text = snapshot.summary.additional_properties.get(OFFSETS_PROPERTY) if snapshot.summary else None
        if text:
            offsets = LandedOffsets.from_json(text)
            if offsets.topic == topic:
                return offsets
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--snapshots", type=int, nargs="+", default=[10, 100, 1000, 3000])
    args = parser.parse_args()
    settings = Settings(home=Path(tempfile.mkdtemp(prefix="k2-bench-offsets-")))
    catalog = open_catalog(settings)
    table = ensure_table(catalog, settings, Dataset.TRADES)
    print(f"{'snapshots':>10}{'ancestry µs':>13}{'sorted µs':>11}{'ancestry/sorted':>17}{'load_table ms':>15}")
    made = 0
    for count in sorted(args.snapshots):
        while made < count:
            writer.commit_files(table, [], LandedOffsets("c", "t", {0: made, 1: made}))
            made += 1
        metadata = catalog.load_table(table.name()).metadata
        assert landed_offsets(metadata, "t") == sorted_lookup(metadata, "t")
        ours = p50_ms(lambda m=metadata: landed_offsets(m, "t"), 2_000) * 1000
        old = p50_ms(lambda m=metadata: sorted_lookup(m, "t"), 200) * 1000
        load = p50_ms(lambda: catalog.load_table(table.name()), 20)
        print(f"{count:>10,}{ours:>13.1f}{old:>11.1f}{ours / old:>17.3f}{load:>15.1f}", flush=True)


if __name__ == "__main__":
    main()
