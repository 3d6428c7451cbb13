"""Splitting a text file into CSV records by physical line, before any parser sees it, so that every record has
its true line number and a bad one costs only itself.

A record is one line, or several when a quoted field holds line breaks (RFC 4180); its number is the physical line
it starts on. Records that a parser would choke on are rejected here with the reason, and the good ones around
them go on: invalid UTF-8 (one bad byte used to abort a whole load), NUL bytes (binary garbage), and a quote that
never closes (which would otherwise swallow every line after it). All of it is numpy over the raw bytes; only the
rare lines with a high byte or an odd number of quotes are looked at one by one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from k2.errors import InputError
from k2.sources.report import RejectedRow

NEWLINE, QUOTE, NUL = 10, 34, 0
UTF8_BOM = b"\xef\xbb\xbf"
MAX_RECORD_LINES = 32  # a quoted field spanning more lines than this is an unclosed quote, not a field
I64 = npt.NDArray[np.int64]


@dataclass
class RecordBlock:
    """Consecutive good records of a file, each ending in a newline, with the physical line each starts on."""

    data: bytes
    lines: I64
    rejected: list[RejectedRow] = field(default_factory=list)
    blank: int = 0  # empty lines skipped (not rows)

    def __len__(self) -> int:
        return len(self.lines)


def open_text(path: Path) -> BinaryIO:
    """The file for reading, or InputError saying why it cannot be a CSV file."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path} is a directory, not a CSV file")
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror})") from None
    if path.stat().st_size == 0:
        handle.close()
        raise InputError(f"{path} is empty")
    return handle


def first_record(path: Path) -> str:
    """The first line of the file as text (a BOM dropped, a bad byte replaced): the header, or a sample row."""
    with open_text(path) as handle:
        head = handle.readline(1 << 20)
    return head.removeprefix(UTF8_BOM).decode("utf-8", errors="replace").rstrip("\r\n")


def read_records(path: Path, block_bytes: int, skip_first: bool = False) -> Iterator[RecordBlock]:
    """The file's records in blocks of about `block_bytes`; `skip_first` drops line 1 (a header)."""
    with open_text(path) as handle:
        carry, line = b"", 1
        first = True
        while True:
            chunk = handle.read(block_bytes)
            at_end = not chunk
            buffer = carry + chunk
            if first:
                buffer = buffer.removeprefix(UTF8_BOM)
            if not buffer:
                return
            if not at_end:
                cut = buffer.rfind(b"\n")
                if cut < 0:  # no line end yet: read on
                    carry = buffer
                    continue
                buffer, carry = buffer[: cut + 1], buffer[cut + 1 :]
            else:
                carry = b""
                if not buffer.endswith(b"\n"):
                    buffer += b"\n"
            block, consumed, line = _split(buffer, line, at_end)
            if consumed < len(buffer):  # a quoted field runs on into the next block
                carry = buffer[consumed:] + carry
            if first and skip_first:
                block = _without_line_one(block)
            first = False
            if len(block) or block.rejected:
                yield block
            if at_end and not carry:
                return


def _without_line_one(block: RecordBlock) -> RecordBlock:
    """The block without its header (line 1): the header is not a row, even when it was rejected."""
    rejected = [r for r in block.rejected if r.line != 1]
    if not len(block) or block.lines[0] != 1:
        return RecordBlock(block.data, block.lines, rejected, block.blank)
    quotes, end = 0, 0
    while True:  # the header's end, honouring quotes
        next_end = block.data.index(b"\n", end) + 1
        quotes += block.data.count(b'"', end, next_end)
        end = next_end
        if quotes % 2 == 0:
            return RecordBlock(block.data[end:], block.lines[1:], rejected, block.blank)


def _split(buffer: bytes, first_line: int, at_end: bool) -> tuple[RecordBlock, int, int]:
    """Records of `buffer` (whole lines): the good ones, the rejected ones, how many bytes were used (less than all
    when a record continues past the end), and the line number that follows."""
    data = np.frombuffer(buffer, dtype=np.uint8)
    ends = np.flatnonzero(data == NEWLINE) + 1  # each line's end, after its newline
    starts = np.concatenate(([0], ends[:-1]))
    if b'"' in buffer:  # the parity of each line's quotes: odd means a quoted field goes on to the next line
        quotes = np.bitwise_xor.reduceat((data == QUOTE).view(np.uint8), starts) if len(starts) else starts
    else:
        quotes = np.zeros(len(starts), dtype=np.uint8)
    suspect_lines = np.empty(0, dtype=np.int64)
    if not buffer.isascii() or b"\x00" in buffer:  # lines with bytes that may not be UTF-8 text (rare)
        suspect = np.flatnonzero((data >= 0x80) | (data == NUL))
        suspect_lines = np.unique(np.searchsorted(ends, suspect, side="right"))
    odd = np.flatnonzero(quotes & 1)
    keep = np.ones(len(starts), dtype=bool)  # per first line: the record survives
    continuation = np.zeros(len(starts), dtype=bool)
    reasons: dict[int, str] = {}
    used_lines = len(starts)
    index = 0
    for first in odd.tolist():  # rare: quoted fields across lines, or a stray quote
        if first < index:
            continue
        last, parity = first, 1
        while parity and last + 1 < len(starts) and last - first < MAX_RECORD_LINES:
            last += 1
            parity ^= int(quotes[last] & 1)
        if parity and last + 1 == len(starts) and not at_end and last - first < MAX_RECORD_LINES:
            used_lines = first  # may close in the next block: hand these lines back
            break
        if parity:
            keep[first] = False
            reasons[first] = "a quoted field is never closed (unbalanced quote)"
            index = first + 1
            continue
        continuation[first + 1 : last + 1] = True
        index = last + 1
    starts, ends = starts[:used_lines], ends[:used_lines]
    keep, continuation = keep[:used_lines], continuation[:used_lines]
    heads = np.flatnonzero(~continuation)
    record_starts = starts[heads]
    record_ends = np.concatenate((starts[heads[1:]], ends[-1:])).astype(np.int64)
    blank = (record_ends - record_starts <= 1) | (
        (record_ends - record_starts == 2) & (data[np.minimum(record_starts, len(data) - 1)] == 13))
    _reject_bad_bytes(buffer, suspect_lines[suspect_lines < used_lines], continuation, keep, reasons, starts, ends)
    good = keep[heads] & ~blank
    rejected = [RejectedRow(first_line + int(h), reasons[int(h)]) for h in heads[~keep[heads]]]
    if good.all():
        out = buffer[: int(record_ends[-1])] if len(record_ends) else b""
    else:
        lengths = record_ends - record_starts
        mask = np.repeat(good, lengths)
        out = data[int(record_starts[0]) : int(record_ends[-1])][mask].tobytes() if len(lengths) else b""
    consumed = int(ends[-1]) if len(ends) else 0
    block = RecordBlock(out, first_line + heads[good], rejected, int((blank & keep[heads]).sum()))
    return block, consumed, first_line + used_lines


def _reject_bad_bytes(
    buffer: bytes, suspect_lines: I64, continuation: npt.NDArray[np.bool_], keep: npt.NDArray[np.bool_],
    reasons: dict[int, str], starts: I64, ends: I64,
) -> None:
    """Records with a NUL byte, or with bytes that are not UTF-8, are rejected (the reason names the byte).
    `suspect_lines` hold such bytes; only their records are decoded, one by one."""
    heads = set()
    for line in suspect_lines.tolist():
        while continuation[line]:  # the record's first line
            line -= 1
        heads.add(line)
    for head in sorted(heads):
        if not keep[head]:
            continue
        last = head
        while last + 1 < len(continuation) and continuation[last + 1]:
            last += 1
        record = buffer[int(starts[head]) : int(ends[last])]
        zero = record.find(b"\x00")
        if zero >= 0:
            keep[head], reasons[head] = False, f"binary data: a NUL byte at position {zero + 1} of the line"
            continue
        try:
            record.decode("utf-8")
        except UnicodeDecodeError as exc:
            keep[head] = False
            byte = record[exc.start]
            reasons[head] = f"not valid UTF-8 text: byte 0x{byte:02X} at position {exc.start + 1} of the line"
