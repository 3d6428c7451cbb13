"""The audit log: one JSON line per authorization decision (allowed or not), with the caller's key id or token
subject, never a secret. Lines are appended (every worker process to the same file)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from pathlib import Path

_LOCK = threading.Lock()
_LOGGERS: dict[Path, logging.Logger] = {}


def audit_logger(path: Path) -> logging.Logger:
    """The logger writing to `path` (one per file and process)."""
    with _LOCK:
        found = _LOGGERS.get(path)
        if found is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            found = logging.getLogger(f"k2.audit.{len(_LOGGERS)}")
            found.propagate = False
            found.setLevel(logging.INFO)
            handler = logging.FileHandler(path, mode="a", encoding="utf-8")
            handler.setFormatter(logging.Formatter("%(message)s"))
            found.addHandler(handler)
            _LOGGERS[path] = found
        return found


def record(logger: logging.Logger, *, caller: str, kind: str, route: str, allowed: bool, status: int,
           missing: str = "", reason: str = "") -> None:
    logger.info(json.dumps({
        "ts": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"), "caller": caller, "kind": kind,
        "route": route, "decision": "allow" if allowed else "deny", "status": status, "missing": missing or None,
        "reason": reason or None,
    }, separators=(",", ":")))
