"""The table view: K2 draws a table that fits itself (Rich's general layout cost most of a small query's wall
time), and it must look exactly as Rich draws it; a table too wide for the screen is left to Rich."""

from __future__ import annotations

import io
import random
import re

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

from k2.cli.output import box_table

ALPHABET = ["a", "Z", "9", ".", "-", " ", "é", "株"]  # "株" takes two cells on a terminal


def _by_rich(title: str | None, headers: list[str], right: list[bool], rows: list[list[str]], width: int) -> str:
    table = Table(title=title, show_lines=False)
    for name, is_right in zip(headers, right, strict=True):
        table.add_column(name, justify="right" if is_right else "left")
    for row in rows:
        table.add_row(*row)
    out = io.StringIO()
    Console(file=out, width=width, color_system=None, legacy_windows=False).print(table)
    return out.getvalue()


def _word(rng: random.Random, longest: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, longest))).strip()


def test_a_table_that_fits_is_drawn_exactly_as_rich_draws_it() -> None:
    rng = random.Random(7)
    drawn = 0
    for _ in range(300):
        columns = rng.randint(1, 8)
        headers = [_word(rng, 10) or "h" for _ in range(columns)]
        right = [rng.random() < 0.4 for _ in range(columns)]
        rows = [[_word(rng, 14) for _ in range(columns)] for _ in range(rng.randint(0, 12))]
        title = rng.choice([None, "trades", _word(rng, 30) or "t"])
        width = rng.choice([40, 80, 160])
        mine = box_table(title, headers, right, rows, width)
        natural = sum(max([cell_len(h), *(cell_len(r[i]) for r in rows)]) for i, h in enumerate(headers)) \
            + 3 * columns + 1
        if mine is None:  # Rich shrinks and wraps it: it must really not fit
            assert natural > width or (title is not None and cell_len(title) > natural)
            continue
        drawn += 1
        assert mine == _by_rich(title, headers, right, rows, width), (title, headers, rows)
        styled = box_table(title, headers, right, rows, width, styled=True)
        assert styled is not None and "\x1b[1m" in styled
        assert re.sub(r"\x1b\[[0-9;]*m", "", styled) == mine  # the terminal gets the same table, in bold/italic
    assert drawn > 150  # most cases took the fast path


def test_a_table_wider_than_the_screen_is_left_to_rich() -> None:
    assert box_table("t", ["a" * 50, "b" * 50], [False, True], [["x", "y"]], 80) is None
    assert box_table("a title longer than the table", ["a"], [False], [["x"]], 160) is None
    assert box_table(None, ["a"], [False], [["x"]], 160) is not None
    wide = box_table("t", ["a" * 150, "b" * 150], [False, True], [["x", "y"]], None)  # a file or a pipe: no limit
    assert wide is not None and all(len(line) == 307 for line in wide.splitlines()[1:])
