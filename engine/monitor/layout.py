"""Tables and bars that fit the width they are given, for ``engine events``.

A screen is a list of lines; a line is a list of ``(text, style)`` segments (styles are names
the painter maps to terminal attributes). Nothing here touches a terminal.

Fitting a table (``fit``): every column has a priority (0: always shown). When the natural
widths do not fit, first the long column names give way to their abbreviation, then the
flexible columns (ids, names) cut their values (with an ellipsis at the end, never a column
name), then columns are dropped, the highest priority number first, and the rest fitted
again. Column names are shown whole or not at all; no line is wider than the width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

Segment = tuple[str, str]
Line = list[Segment]
#: one cell: its text, or (text, style)
Cell = Any

#: control characters (a newline or an escape in a task's message) shown as spaces: one
#: character each, so the widths hold, and nothing reaches the terminal as a command
CONTROL = {code: " " for code in (*range(0x20), *range(0x7f, 0xa0))}
ELLIPSIS = "…"
RULE = "─"
GAP = 2


def use_ascii() -> None:
    """For terminals without UTF-8: an ASCII ellipsis and rule."""
    global ELLIPSIS, RULE
    ELLIPSIS, RULE = "~", "-"


@dataclass(frozen=True)
class Column:
    name: str
    #: priority: 0 is always shown; columns with the highest number are dropped first
    priority: int = 0
    #: the abbreviation used when space is short (whole, never a cut name)
    short: str | None = None
    right: bool = False
    #: values may be cut down to this width (0: never cut)
    flex: int = 0
    #: cut values at their start, keeping the end (dotted task names: the last part)
    keep_end: bool = False


@dataclass
class Fitted:
    column: Column
    header: str
    width: int


def cut(text: str, width: int, keep_end: bool = False) -> str:
    """``text`` in at most ``width`` characters, an ellipsis where it was cut."""
    if len(text) <= width:
        return text
    if width <= 0:
        return ""
    if not keep_end:
        return text[:width - 1] + ELLIPSIS
    tail = text[len(text) - width + 1:]
    dot = tail.find(".")
    return ELLIPSIS + (tail[dot + 1:] if 0 <= dot < len(tail) - 1 else tail)


def _cell_text(cell: Cell) -> str:
    return cell[0] if isinstance(cell, tuple) else str(cell)


def _try(columns: Sequence[Column], natural: list[int], width: int) -> list[Fitted] | None:
    """The widths for these columns within ``width``, or None when they cannot fit."""
    gaps = GAP * (len(columns) - 1)
    fitted = [Fitted(c, c.name, max(len(c.name), n)) for c, n in zip(columns, natural)]

    def spare() -> int:
        return width - gaps - sum(f.width for f in fitted)

    if spare() < 0:   # the abbreviations
        for f, n in zip(fitted, natural):
            if f.column.short:
                f.header, f.width = f.column.short, max(len(f.column.short), n)
    if spare() < 0:   # the flexible columns cut their values
        for f, n in zip(fitted, natural):
            if f.column.flex:
                f.width = max(len(f.header), min(n, f.column.flex))
    if spare() < 0:
        return None
    for f in fitted:   # full names come back where there is room
        if f.header != f.column.name and len(f.column.name) - f.width <= spare():
            grow = max(len(f.column.name) - f.width, 0)
            f.header, f.width = f.column.name, f.width + grow
    short = [(f, n) for f, n in zip(fitted, natural) if f.column.flex and f.width < n]
    left = spare()
    while short and left > 0:   # then the flexible columns share what is left, a column each
        for f, n in short:
            if left > 0 and f.width < n:
                f.width += 1
                left -= 1
        short = [(f, n) for f, n in short if f.width < n]
    return fitted


def fit(columns: Sequence[Column], rows: Sequence[Sequence[Cell]], width: int
        ) -> tuple[list[Fitted], list[int]]:
    """The columns shown, with header text and width, and their indexes into each row."""
    natural = [max([0] + [len(_cell_text(row[i])) for row in rows]) for i in range(len(columns))]
    shown = list(range(len(columns)))
    while True:
        fitted = _try([columns[i] for i in shown], [natural[i] for i in shown], width)
        if fitted is not None:
            return fitted, shown
        droppable = [i for i in shown if columns[i].priority > 0]
        if not droppable:
            break
        shown.remove(max(droppable, key=lambda i: (columns[i].priority, i)))
    # only the columns always shown, and still too wide: each at least its name
    fitted = [Fitted(columns[i], columns[i].short or columns[i].name, 0) for i in shown]
    for f, i in zip(fitted, shown):
        f.width = max(len(f.header), min(natural[i], f.column.flex or natural[i]))
    return fitted, shown


def _pad(text: str, width: int, column: Column) -> str:
    text = cut(text, width, column.keep_end)
    return text.rjust(width) if column.right else text.ljust(width)


def table(columns: Sequence[Column], rows: Sequence[Sequence[Cell]], width: int, *,
          row_styles: Sequence[str] | None = None, limit: int | None = None,
          first: int = 0) -> list[Line]:
    """The header line and the rows ``first`` .. ``first + limit`` as lines of ``width``
    at most. ``row_styles`` gives a style per row ("selected" fills the whole line)."""
    fitted, shown = fit(columns, rows, width)
    gap = " " * GAP
    header: Line = []
    for n, f in enumerate(fitted):
        header.append((("" if n == 0 else gap) + _pad(f.header, f.width, f.column),
                       "header"))
    lines = [clip(header, width)]
    end = len(rows) if limit is None else first + limit
    for index in range(first, min(end, len(rows))):
        row, row_style = rows[index], (row_styles[index] if row_styles else "")
        line: Line = []
        for n, (f, i) in enumerate(zip(fitted, shown)):
            cell = row[i]
            text, style = (cell if isinstance(cell, tuple) else (str(cell), ""))
            if n:
                line.append((gap, row_style))
            line.append((_pad(text, f.width, f.column), row_style or style))
        if row_style == "selected":
            used = sum(len(t) for t, _ in line)
            line.append((" " * max(width - used, 0), row_style))
        lines.append(clip(line, width))
    return lines


def clip(line: Line, width: int) -> Line:
    """The line cut at ``width`` characters (the last resort of every layout), control
    characters made spaces."""
    out: Line = []
    left = width
    for text, style in line:
        if left <= 0:
            break
        out.append((text[:left].translate(CONTROL), style))
        left -= len(out[-1][0])
    return out


def bar(items: Sequence[tuple[str, str, int]], width: int, sep: str = "  ") -> Line:
    """One line of ``(text, style, priority)`` items: those of the highest priority number
    are left out until the rest fits (each item whole), in their order."""
    kept = list(range(len(items)))

    def size() -> int:
        return sum(len(items[i][0]) for i in kept) + len(sep) * (len(kept) - 1)

    while kept and size() > width:
        kept.remove(max(kept, key=lambda i: (items[i][2], i)))
    line: Line = []
    for n, i in enumerate(kept):
        if n:
            line.append((sep, ""))
        line.append((items[i][0], items[i][1]))
    return clip(line, width)


def rule(title: str, width: int, style: str = "bold") -> Line:
    """``── title ─────`` across the width."""
    head = f"{RULE}{RULE} {cut(title, max(width - 4, 0))} " if width > 6 else ""
    return clip([(head, style), (RULE * max(width - len(head), 0), "dim")], width)


def fields(items: Sequence[tuple[str, str, str]], width: int, limit: int) -> list[Line]:
    """``label value`` items flowed into at most ``limit`` lines of ``width``: an item goes
    on the current line if it fits there whole, else it starts a line; a value longer than
    a line is broken at spaces onto the next lines (cut only when the lines run out)."""
    lines: list[Line] = [[]]
    used = 0
    for label, value, style in items:
        size = len(label) + bool(label) + len(value)
        if lines[-1] and used + 3 + size > width:
            lines.append([])
            used = 0
        if lines[-1]:
            lines[-1].append(("   ", ""))
            used += 3
        if label:
            lines[-1].append((label + " ", "label"))
            used += len(label) + 1
        words = value.split(" ")
        text = ""
        for word in words:
            piece = (" " if text else "") + word
            if used + len(text) + len(piece) > width and text:
                lines[-1].append((text, style))
                lines.append([])
                used, text, piece = 0, "", "  " + word
            text += piece
        lines[-1].append((text, style))
        used += len(text)
    if len(lines) > limit:
        lines = lines[:limit]
        last = lines[-1]
        if last:
            text, style = last[-1]
            last[-1] = (text + ELLIPSIS, style)
    return [clip(line, width) for line in lines[:max(limit, 0)]]
