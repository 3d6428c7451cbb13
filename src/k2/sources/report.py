"""What reading a source file did: rows read and valid, and every rejected row with its line and reason."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RejectedRow:
    line: int
    reason: str


@dataclass
class LoadStats:
    rows_read: int = 0
    rows_valid: int = 0
    interrupted: bool = False
    rejected: list[RejectedRow] = field(default_factory=list)

    @property
    def rows_rejected(self) -> int:
        return len(self.rejected)
