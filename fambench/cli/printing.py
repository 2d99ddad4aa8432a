"""What the commands print: display frames as rich tables that fit the terminal, fambench's
warnings as one stderr line each, and the stale runs a results directory holds."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pandas as pd
from rich import box
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from fambench.cli import console, err_console

# The columns a narrow terminal loses first.
_DROP_ORDER = (
    "best dev WER\n(95% CI)",
    "peak MB",
    "steps/s",
    "hparams",
    "against",
    "interval",
    "test WER",
    "train s",
)
_TEXT_COLUMNS = {
    "hparams", "runs", "pairing", "verdict", "comparison", "metric", "against", "interval",
}  # fmt: skip


def _min_width(frame: pd.DataFrame) -> int:
    # What rich_table needs: whole lines for number columns and their headers, the longest
    # word for text, one space of padding each side, and a column of slack for rich's rounding.
    total = 2
    for column in frame.columns:
        values = [Text.from_markup(str(v)).plain for v in frame[column]]
        if column in _TEXT_COLUMNS:
            pieces = [w for v in [*values, str(column)] for w in v.split()]
        else:
            pieces = [line for v in [*values, str(column)] for line in v.split("\n")]
        total += max((len(w) for w in pieces), default=0) + 3
    return total


def rich_table(frame: pd.DataFrame, title: str | None = None) -> Table:
    """A rich Table of a display frame (strings; the column named by
    ``frame.attrs["markup_column"]`` holds rich markup, every other cell is plain text)."""
    table = Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD)
    markup = frame.attrs.get("markup_column")
    cells = {
        column: [
            Text.from_markup(str(v)) if column == markup else Text(str(v)) for v in frame[column]
        ]
        for column in frame.columns
    }
    for column in frame.columns:
        # Only free text wraps on a narrow terminal; numbers keep their width (a number wrapped
        # or cropped reads as another number).
        widest = max((line.cell_len for v in cells[column] for line in v.split()), default=0)
        text = column in _TEXT_COLUMNS
        table.add_column(
            str(column), overflow="fold", min_width=None if text else widest, no_wrap=not text
        )
    for i in range(len(frame)):
        table.add_row(*(cells[column][i] for column in frame.columns))
    return table


def fitted_table(frame: pd.DataFrame, title: str) -> Table:
    """rich_table without the least important columns the terminal has no room for."""
    hidden: list[str] = []
    for column in [*_DROP_ORDER, None]:
        table = rich_table(frame.drop(columns=hidden), title)
        if _min_width(frame.drop(columns=hidden)) <= console.width:
            break
        if column in frame.columns:
            hidden.append(column)
    if hidden:
        names = ", ".join(c.replace("\n", " ") for c in hidden)
        table.caption = f"terminal too narrow: {names} hidden (--format markdown shows all)"
    return table


def print_tables(tables: Sequence[tuple[str, pd.DataFrame]]) -> None:
    """Each (title, display frame) as a fitted table."""
    for title, frame in tables:
        console.print(fitted_table(frame, title))


class _WarningLines(logging.Handler):
    """A warning of fambench's modules (a run skipped, a duplicate run) as one stderr line."""

    def emit(self, record: logging.LogRecord) -> None:
        text = " ".join(record.getMessage().split("\n"))
        err_console.print(f"[yellow]warning:[/] {escape(text)}", highlight=False, soft_wrap=True)


@contextmanager
def warnings_on_stderr() -> Iterator[None]:
    """While the block runs, fambench's warnings go to stderr as "warning: ...", a line each."""
    logger = logging.getLogger("fambench")
    handler = _WarningLines(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def print_stale(runs: pd.DataFrame) -> None:
    """One stderr line per stale run: where it is and the command that resumes it."""
    for _, run in runs[runs["status"] == "stale"].iterrows():
        command = f"`{run['command']}`" if run.get("command") else "the command that started it"
        err_console.print(
            f"[yellow]stale:[/] {escape(str(run['run_dir']))}: its process is gone; "
            f"rerun {escape(command)} to resume it",
            highlight=False,
            soft_wrap=True,
        )
