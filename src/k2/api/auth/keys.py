"""API keys: `k2_<id>_<secret>`, the secret hashed at rest with argon2id, in a SQLite file every worker reads.

The key is shown once, at creation; the store holds its id, owner, roles, expiry and hash. Verifying a secret costs
~0.1 s of argon2 by design, so a verified key is remembered in memory for a few seconds (by a SHA-256 of the whole
key, never the key itself): a revocation takes effect within that time in every worker.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

PREFIX = "k2_"
REMEMBER_SECONDS = 5.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    roles TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    revoked_at TEXT
)
"""


@dataclass(frozen=True)
class ApiKey:
    """A key's record (no secret)."""

    key_id: str
    owner: str
    roles: tuple[str, ...]
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None

    def usable(self, now: dt.datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


class KeyStore:
    """The key table in `path` (created on first use)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._hasher = PasswordHasher()
        self._remembered: dict[bytes, tuple[ApiKey, float]] = {}
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self._path, timeout=10)
        connection.execute(_SCHEMA)
        return connection

    def create(self, owner: str, roles: tuple[str, ...], expires_at: dt.datetime | None) -> tuple[str, ApiKey]:
        """A new key: (the key itself, to show once; its record)."""
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        record = ApiKey(key_id, owner, roles, _now(), expires_at, None)
        with self._connect() as connection:
            connection.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, NULL)",
                (key_id, owner, ",".join(roles), self._hasher.hash(secret), record.created_at.isoformat(),
                 expires_at.isoformat() if expires_at else None),
            )
        return f"{PREFIX}{key_id}_{secret}", record

    def list(self) -> list[ApiKey]:
        with self._connect() as connection:
            rows = connection.execute("SELECT key_id, owner, roles, created_at, expires_at, revoked_at "
                                      "FROM api_keys ORDER BY created_at").fetchall()
        return [_record(row) for row in rows]

    def revoke(self, key_id: str) -> bool:
        """Revoke `key_id`; False when there is no such (unrevoked) key."""
        with self._connect() as connection:
            changed = connection.execute("UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                                         (_now().isoformat(), key_id)).rowcount
        return changed == 1

    def any_usable(self) -> bool:
        if not self._path.exists():
            return False
        now = _now()
        return any(key.usable(now) for key in self.list())

    def verify(self, presented: str) -> ApiKey | None:
        """The key's record if `presented` is a usable key, else None."""
        digest = hashlib.sha256(presented.encode()).digest()
        with self._lock:
            remembered = self._remembered.get(digest)
        if remembered is not None and time.monotonic() - remembered[1] < REMEMBER_SECONDS:
            return remembered[0] if remembered[0].usable(_now()) else None
        record = self._check(presented)
        if record is not None:
            with self._lock:
                if len(self._remembered) > 10_000:  # bounded: a flood of distinct valid keys cannot grow it
                    self._remembered.clear()
                self._remembered[digest] = (record, time.monotonic())
        return record

    def _check(self, presented: str) -> ApiKey | None:
        if not presented.startswith(PREFIX) or presented.count("_") < 2:
            return None
        key_id, secret = presented[len(PREFIX):].split("_", 1)
        with self._connect() as connection:
            row = connection.execute("SELECT key_id, owner, roles, created_at, expires_at, revoked_at, secret_hash "
                                     "FROM api_keys WHERE key_id = ?", (key_id,)).fetchone()
        if row is None:
            return None
        try:
            self._hasher.verify(row[6], secret)
        except (VerificationError, InvalidHashError):
            return None
        record = _record(row[:6])
        return record if record.usable(_now()) else None


def _record(row: tuple[str, str, str, str, str | None, str | None]) -> ApiKey:
    key_id, owner, roles, created, expires, revoked = row
    return ApiKey(key_id, owner, tuple(r for r in roles.split(",") if r), dt.datetime.fromisoformat(created),
                  dt.datetime.fromisoformat(expires) if expires else None,
                  dt.datetime.fromisoformat(revoked) if revoked else None)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
