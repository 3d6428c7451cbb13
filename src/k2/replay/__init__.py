"""Replay: history as one merged stream of trades and quotes, in exact event order, at any speed, resumable and
pinned to Iceberg snapshots (docs/decisions/0012-replay.md)."""
