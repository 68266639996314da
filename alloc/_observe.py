"""Observing an arena: fragmentation indices per block size, and the arena map.

Plain Python and the standard library only: no ``ffi``/``lib`` here.  The
binding gathers the numbers from the C core (free-block counts per order,
per-cell byte counts) and hands them to these functions.

* :func:`order_table` -- Linux's ``unusable_free_index`` and
  ``__fragmentation_index`` (mm/vmstat.c) for a request of every block size.
* :func:`svg` / :func:`png` -- the arena map: the buddy tree's span cut into
  ``n`` equal cells laid out as rows of a memory map; every cell is a tiny
  stacked bar of its bytes (requested at the bottom, the wasted tail of live
  blocks above it, free above that, past the capacity at the top).
* :func:`cells_for` -- how many cells to ask the core for.

The layout, and why: a grid of ``cols`` columns (a power of two, about 4 px
per cell, 256 at the default width) and as many rows as the cells need (64
rows at most for :func:`cells_for`).  Each row is one contiguous stretch of
the address space, labelled on the left with its offset, so the picture
reads like a disk defragmenter's map: top-left is offset 0, reading order is
address order.  Inside a cell the four kinds of bytes are stacked as a bar,
so a fully used stretch is a solid dark band, a free stretch is a pale band,
and a fragmented stretch is a jagged skyline whose height says how full it is
-- the same picture for 4 KiB with three blocks (one tall strip, a cell per
16 bytes, where each block is visible) and for 16 GiB with a million blocks
(64 rows of 256 MiB, a cell per MiB, where density is visible).  Per row and
per kind the bars are one step-shaped ``<path>`` in which runs of equal cells
merge, so the SVG stays small (about 0.4 MB for 16384 all-different cells).
"""

from __future__ import annotations

import importlib
import operator
import os
from typing import (
    Any,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    TypedDict,
    Union,
)
from xml.sax.saxutils import escape, quoteattr

__all__ = ["OrderRow", "order_table", "cells_for", "svg", "png"]


# ---------------------------------------------------------------------------
# Fragmentation indices (Linux mm/vmstat.c)
# ---------------------------------------------------------------------------


class OrderRow(TypedDict):
    """One block size of :func:`order_table`."""

    block_size: int
    free_blocks: int
    unusable_free_index: float
    fragmentation_index: float


def _as_count(value: object, name: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not bool")
    try:
        n = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}") from None
    if n < 0:
        raise ValueError(f"{name} must be >= 0, not {n}")
    return int(n)


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def order_table(min_size: int, free_blocks: Sequence[int]) -> List[OrderRow]:
    """Per block size, ascending: the free-block count and Linux's two
    fragmentation indices for a request of exactly that size.

    ``free_blocks[k]`` is the number of free blocks of ``min_size << k``
    bytes.  The definitions are those of Linux's mm/vmstat.c
    (``fill_contig_page_info``, ``unusable_free_index``,
    ``__fragmentation_index``) with a minimum block in the role of a page:
    for a request of order ``j`` (``request = min_size << j`` bytes),

    * ``free_bytes`` = Σ ``free_blocks[k] * (min_size << k)`` (the kernel's
      ``free_pages``, in bytes), ``free_block_count`` = Σ ``free_blocks[k]``
      (``free_blocks_total``), and ``suitable`` = Σ over k ≥ j of
      ``free_blocks[k] << (k - j)`` (``free_blocks_suitable``: how many
      requests of order j the free blocks could serve);
    * ``unusable_free_index`` = the share of the free bytes held in blocks
      too small for the request: ``(free_bytes - suitable * request) /
      free_bytes``, from 0 (every free byte usable) to 1.  With nothing free
      the kernel returns 1 ("no free memory is interpreted as all free
      memory is unusable"), and so does this function;
    * ``fragmentation_index``: 0 when nothing is free; -1 when a block large
      enough is free (the kernel's -1000: the request would succeed, so the
      index does not apply); otherwise ``1 - (1 + free_bytes / request) /
      free_block_count`` -- towards 1 the request fails because the free
      memory is in too many small pieces (external fragmentation), towards 0
      (or below, down to -0.5 with a single free block half the request's
      size) because there is too little of it.

    The kernel computes both in fixed point, truncating to 3 decimals
    (``1000 - (1000 + free_pages * 1000 / requested) / free_blocks_total``
    with integer divisions, printed as ``0.594``); these are the exact
    values as floats (``0.59375``), each rounded once.  They may differ from
    the kernel's in the third decimal.

    O(number of orders).  Raises ``ValueError`` if ``min_size`` is not a
    power of two or a count is negative, ``TypeError`` if one is not an
    integer.
    """
    m = _as_count(min_size, "min_size")
    if not _is_power_of_two(m):
        raise ValueError(f"min_size must be a power of two, not {m}")
    counts = [_as_count(c, f"free_blocks[{k}]") for k, c in enumerate(free_blocks)]
    orders = len(counts)
    # In minimum blocks (the kernel's pages): free_pages and free_blocks_total.
    free_units = sum(c << k for k, c in enumerate(counts))
    total = sum(counts)
    # suitable[j] = sum_{k >= j} counts[k] << (k - j), by Horner from the top.
    suitable = [0] * (orders + 1)
    for j in range(orders - 1, -1, -1):
        suitable[j] = counts[j] + 2 * suitable[j + 1]
    rows: List[OrderRow] = []
    for j in range(orders):
        request = 1 << j  # in minimum blocks
        if free_units == 0:
            unusable = 1.0
        else:
            unusable = (free_units - (suitable[j] << j)) / free_units
        if total == 0:
            frag = 0.0
        elif suitable[j]:
            frag = -1.0
        else:
            # 1 - (1 + free/request) / total, as one exact division.
            frag = (request * total - request - free_units) / (request * total)
        rows.append(
            {
                "block_size": m << j,
                "free_blocks": counts[j],
                "unusable_free_index": unusable,
                "fragmentation_index": frag,
            }
        )
    return rows


# ---------------------------------------------------------------------------
# The arena map: layout
# ---------------------------------------------------------------------------

#: Okabe-Ito colours (distinct for the common colour-vision deficiencies)
#: and far apart in lightness, so they also survive greyscale printing.
REQUESTED_COLOR = "#0072B2"  # blue, dark
WASTED_COLOR = "#E69F00"  # orange, mid
FREE_COLOR = "#D4E6F4"  # very pale; stands out from the white page
PAST_COLOR = "#C8C8C8"  # grey under dark grey diagonal hatching
PAST_HATCH_COLOR = "#7A7A7A"
INK = "#222222"
MUTED = "#555555"
FONT = "DejaVu Sans, Verdana, Arial, Helvetica, sans-serif"

_MARGIN_LEFT = 84  # room for "15.75 GiB"
_MARGIN_RIGHT = 16
_MIN_CELL_PX = 4  # the narrowest cell a column count may give
_ROWS = 64  # rows of cells_for(): the grid is cols x 64
_GRID_PX = 704  # target height of the grid
_MIN_WIDTH = 480
_PAST_PATTERN = "alloc-arena-past"
_NEED_MPL = "render to PNG needs matplotlib: pip install matplotlib (or the plot extra)"


def _columns(width: int) -> int:
    """Largest power of two of columns with cells >= 4 px at ``width``."""
    grid = width - _MARGIN_LEFT - _MARGIN_RIGHT
    cols = 1
    while cols * 2 * _MIN_CELL_PX <= grid:
        cols *= 2
    return cols


def _check_width(width: object) -> int:
    w = _as_count(width, "width")
    if w < _MIN_WIDTH:
        raise ValueError(f"width must be at least {_MIN_WIDTH} pixels, not {w}")
    return w


def cells_for(width: int, *, span: Optional[int] = None, min_size: int = 1) -> int:
    """How many cells to ask the core for, to draw the map ``width`` pixels
    wide: ``cols * 64`` where ``cols`` is the largest power of two giving
    cells of at least 4 px (16384 at the default 1200).

    With ``span`` (the buddy tree's size) the count is capped so that a cell
    is at least ``min_size`` bytes: a 4 KiB arena of 16-byte blocks gets 256
    cells, one per minimum block, not 16384 empty fractions of a byte.  The
    result is always a power of two.
    """
    cells = _columns(_check_width(width)) * _ROWS
    if span is not None:
        s = _as_count(span, "span")
        m = _as_count(min_size, "min_size")
        if not _is_power_of_two(s) or not _is_power_of_two(m):
            raise ValueError("span and min_size must be powers of two")
        cells = min(cells, max(1, s // m))
    return cells


def _human(n: float) -> str:
    """Bytes in binary units, at most two decimals: 0, 512 B, 1.5 KiB, 16 MiB."""
    if n == 0:
        return "0"
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    v = float(n)
    k = 0
    while abs(v) >= 1024 and k < len(units) - 1:
        v /= 1024
        k += 1
    if k == 0:
        return f"{int(n)} B"
    text = f"{v:.2f}".rstrip("0").rstrip(".")
    return f"{text} {units[k]}"


def _fmt_value(key: str, value: object) -> str:
    """A caption value: byte counts in units with the exact figure."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        if "bytes" in key or key in ("largest_free", "min_size", "capacity"):
            return f"{_human(value)} ({value:,} B)" if value >= 1024 else f"{value:,} B"
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 60 else text[:59] + "\u2026"


class _Poly(NamedTuple):
    kind: str  # requested | wasted | free | past | swatch-<kind>
    points: List[Tuple[float, float]]


class _Text(NamedTuple):
    x: float
    y: float
    text: str
    size: float
    anchor: str  # start | middle | end
    color: str
    bold: bool
    group: str  # header | offsets | ruler | legend | caption


class _Line(NamedTuple):
    x1: float
    y1: float
    x2: float
    y2: float
    color: str
    width: float


class _Scene(NamedTuple):
    width: int
    height: int
    polys: List[_Poly]  # in drawing order
    lines: List[_Line]
    texts: List[_Text]
    title: str


def _r1(v: float) -> float:
    return round(v, 1)


def _rect(kind: str, x: float, y: float, w: float, h: float) -> _Poly:
    x0, y0, x1, y1 = _r1(x), _r1(y), _r1(x + w), _r1(y + h)
    return _Poly(kind, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)])


def _skyline(
    kind: str, heights: Sequence[float], xs: Sequence[float], base: float, up: bool
) -> Optional[_Poly]:
    """A step-shaped polygon of bars standing on ``base`` (growing up, or
    hanging down from it when ``up`` is False); runs of equal heights merge.
    ``xs`` has one more entry than ``heights`` (the cells' edges)."""
    if not any(heights):
        return None
    sign = -1.0 if up else 1.0
    pts: List[Tuple[float, float]] = [(xs[0], base)]
    n = len(heights)
    c = 0
    while c < n:
        h = heights[c]
        e = c + 1
        while e < n and heights[e] == h:
            e += 1
        y = _r1(base + sign * h)
        pts.append((xs[c], y))
        pts.append((xs[e], y))
        c = e
    pts.append((xs[n], base))
    return _Poly(kind, pts)


def _validate_cells(
    requested: Sequence[int],
    wasted: Sequence[int],
    free: Sequence[int],
    capacity: int,
    span: int,
) -> Tuple[List[int], List[int], List[int], List[int], int]:
    """Check the inputs and derive the past-capacity bytes of every cell."""
    cap = _as_count(capacity, "capacity")
    sp = _as_count(span, "span")
    if not _is_power_of_two(sp):
        raise ValueError(f"span must be a power of two, not {sp}")
    if cap > sp:
        raise ValueError(f"capacity {cap} exceeds the span {sp}")
    req, was, fre = list(requested), list(wasted), list(free)
    n = len(req)
    if len(was) != n or len(fre) != n:
        raise ValueError(
            f"requested, wasted and free must have the same length "
            f"({n}, {len(was)}, {len(fre)})"
        )
    if not _is_power_of_two(n):
        raise ValueError(f"the number of cells must be a power of two, not {n}")
    if n > sp:
        raise ValueError(f"{n} cells cannot split a span of {sp} bytes")
    cell = sp // n
    past: List[int] = []
    for i in range(n):
        r, w, f = req[i], was[i], fre[i]
        if r < 0 or w < 0 or f < 0:
            raise ValueError(f"cell {i}: negative byte count ({r}, {w}, {f})")
        start = i * cell
        p = max(0, start + cell - max(start, cap))  # bytes at or past capacity
        if r + w + f + p != cell:
            raise ValueError(
                f"cell {i} (offsets {start}..{start + cell}): requested {r} + "
                f"wasted {w} + free {f} + past capacity {p} != {cell} bytes"
            )
        past.append(p)
    return req, was, fre, past, cell


def _merge(values: List[int], group: int) -> List[int]:
    return [sum(values[i : i + group]) for i in range(0, len(values), group)]


def _wrap(
    items: Sequence[Tuple[str, float]], x0: float, x1: float, gap: float
) -> List[List[Tuple[int, float]]]:
    """Flow items of estimated widths into lines between x0 and x1:
    lines of (item index, x)."""
    lines: List[List[Tuple[int, float]]] = [[]]
    x = x0
    for i, (_, w) in enumerate(items):
        if lines[-1] and x + w > x1:
            lines.append([])
            x = x0
        lines[-1].append((i, x))
        x += w + gap
    return lines


def _flow(pieces: Sequence[str], sep: str, width: float, size: float) -> List[str]:
    """Greedy lines of ``pieces`` joined by ``sep``; a piece too long for a
    line on its own is broken between words."""
    out: List[str] = []
    for piece in pieces:
        if out and _text_px(out[-1] + sep + piece, size) <= width:
            out[-1] += sep + piece
            continue
        line = ""
        for word in piece.split(" "):
            if line and _text_px(line + " " + word, size) > width:
                out.append(line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        out.append(line)
    return out


def _text_px(text: str, size: float) -> float:
    """A generous estimate of a sans-serif string's width."""
    return len(text) * size * 0.6


def _scene(
    requested: Sequence[int],
    wasted: Sequence[int],
    free: Sequence[int],
    capacity: int,
    span: int,
    width: int,
    title: str,
    caption: Mapping[str, object],
) -> _Scene:
    W = _check_width(width)
    req, was, fre, past, cell = _validate_cells(requested, wasted, free, capacity, span)
    cap, sp = int(capacity), int(span)
    totals = (sum(req), sum(was), sum(fre), sum(past))

    # More cells than the width can show: merge neighbours (sums are exact).
    most = _columns(W) * _ROWS
    if len(req) > most:
        g = len(req) // most
        req, was, fre, past = (_merge(v, g) for v in (req, was, fre, past))
        cell *= g
    n = len(req)
    cols = min(n, _columns(W))
    rows = n // cols
    pitch = max(8, min(50, _GRID_PX // rows))
    gap = 1 if pitch < 10 else 2
    rh = pitch - gap
    gx = float(_MARGIN_LEFT)
    gw = float(W - _MARGIN_LEFT - _MARGIN_RIGHT)
    row_bytes = cell * cols
    xs = [_r1(gx + gw * c / cols) for c in range(cols + 1)]

    polys: List[_Poly] = []
    lines: List[_Line] = []
    texts: List[_Text] = []

    # Header.
    texts.append(_Text(gx, 26, title, 17, "start", INK, True, "header"))
    if cap == sp:
        what = f"{_human(cap)} arena"
    else:
        what = f"{_human(cap)} arena in a {_human(sp)} buddy tree"
    pieces = [
        what,
        f"{rows} row{'s' if rows > 1 else ''} of {_human(row_bytes)}, "
        f"{cols} cell{'s' if cols > 1 else ''} of {_human(cell)} each",
        "each cell is a bar of its bytes, stacked from the bottom: "
        "requested, wasted, free, past capacity",
    ]
    sub_lines = _flow(pieces, " \u00b7 ", gw, 12)
    for i, sub_line in enumerate(sub_lines):
        texts.append(_Text(gx, 46 + 16 * i, sub_line, 12, "start", MUTED, False, "header"))

    # Ruler: offsets within a row.
    gy = 82.0 + 16 * (len(sub_lines) - 1)
    ticks = min(cols, 4 if gw >= 4 * 80 else 2)
    for t in range(ticks + 1):
        x = gx + gw * t / ticks
        label = "+0" if t == 0 else "+" + _human(row_bytes * t // ticks)
        anchor = "start" if t == 0 else "end" if t == ticks else "middle"
        texts.append(_Text(x, gy - 12, label, 11, anchor, MUTED, False, "ruler"))
        lines.append(_Line(x, gy - 8, x, gy - 2, MUTED, 1))

    # The grid: per row a pale "free" background, then the stacked bars.
    q = rh / cell  # px per byte
    label_every = 1
    while label_every * pitch < 15:
        label_every *= 2
    for r in range(rows):
        y = gy + r * pitch
        base = _r1(y + rh)
        lo, hi = r * cols, (r + 1) * cols
        if any(fre[lo:hi]):
            polys.append(_rect("free", gx, y, gw, rh))
        used = [_r1(q * (req[i] + was[i])) for i in range(lo, hi)]
        mine = [_r1(q * req[i]) for i in range(lo, hi)]
        gone = [_r1(q * past[i]) for i in range(lo, hi)]
        for kind, hs, b, up in (
            ("wasted", used, base, True),  # requested + wasted; requested on top
            ("requested", mine, base, True),
            ("past", gone, _r1(y), False),
        ):
            if kind == "wasted" and hs == mine:
                continue  # nothing wasted in this row
            p = _skyline(kind, hs, xs, b, up)
            if p is not None:
                polys.append(p)
        if r % label_every == 0:
            texts.append(
                _Text(gx - 6, y + rh / 2 + 4, _human(r * row_bytes), 11, "end", INK,
                      False, "offsets")
            )
    grid_bottom = gy + rows * pitch - gap

    # The end of the capacity, where it falls inside a row.
    if 0 < cap < sp and cap % row_bytes:
        r = cap // row_bytes
        x = gx + gw * (cap % row_bytes) / row_bytes
        y = gy + r * pitch
        lines.append(_Line(_r1(x), y - 2, _r1(x), y + rh + 2, INK, 1.5))

    # Legend: the four kinds with their totals.
    y = grid_bottom + 30
    entries = [
        ("requested", "requested", totals[0]),
        ("wasted", "wasted (internal fragmentation)", totals[1]),
        ("free", "free", totals[2]),
    ]
    if totals[3]:
        entries.append(("past", "past capacity (not memory)", totals[3]))
    items: List[Tuple[str, float]] = []
    for kind, name, total in entries:
        label = f"{name}: {_human(total)}"
        if kind != "past" and cap:
            label += f" ({100.0 * total / cap:.1f}%)"
        items.append((label, 20 + _text_px(label, 12)))
    legend_lines = _wrap(items, gx, gx + gw, 16)
    for ln, placed in enumerate(legend_lines):
        for i, x in placed:
            yy = y + ln * 22
            polys.append(_rect("swatch-" + entries[i][0], x, yy - 11, 14, 14))
            texts.append(_Text(x + 20, yy + 1, items[i][0], 12, "start", INK, False,
                               "legend"))
    y += (len(legend_lines) - 1) * 22 + 30

    # Caption: the statistics the caller passed.
    # A grid of equal columns, filled row by row, so the figures line up.
    stats = [
        f"{k.replace('_', ' ')}: {_fmt_value(k, v)}" for k, v in caption.items()
    ]
    last = y - 20
    if stats:
        col_w = max(_text_px(s, 12) for s in stats) + 24
        per_line = max(1, min(len(stats), int((gw + 24) // col_w)))
        col_w = max(col_w, (gw + 24) / per_line)
        for i, s in enumerate(stats):
            ln, c = divmod(i, per_line)
            texts.append(_Text(gx + c * col_w, y + ln * 18, s, 12, "start", MUTED,
                               False, "caption"))
            last = y + ln * 18
    height = int(last + 14)
    return _Scene(W, height, polys, lines, texts, title)


# ---------------------------------------------------------------------------
# The arena map: SVG
# ---------------------------------------------------------------------------


def _num(v: float) -> str:
    s = f"{v:.1f}"
    return s[:-2] if s.endswith(".0") else s


def _path_d(points: Sequence[Tuple[float, float]]) -> str:
    """Absolute path data; axis-parallel moves as H/V, duplicates dropped."""
    x, y = points[0]
    out = [f"M{_num(x)} {_num(y)}"]
    for px, py in points[1:]:
        if px == x and py == y:
            continue
        if py == y:
            out.append(f"H{_num(px)}")
        elif px == x:
            out.append(f"V{_num(py)}")
        else:
            out.append(f"L{_num(px)} {_num(py)}")
        x, y = px, py
    out.append("Z")
    return "".join(out)


_SVG_FILL = {
    "requested": REQUESTED_COLOR,
    "wasted": WASTED_COLOR,
    "free": FREE_COLOR,
    "past": f"url(#{_PAST_PATTERN})",
}


def svg(
    requested: Sequence[int],
    wasted: Sequence[int],
    free: Sequence[int],
    *,
    capacity: int,
    span: int,
    width: int = 1200,
    title: str,
    caption: Mapping[str, object],
) -> str:
    """The arena map as a self-contained SVG document (a string).

    The buddy tree spans ``span`` bytes (a power of two >= ``capacity``),
    cut into ``n = len(requested)`` equal cells (``n`` a power of two) of
    ``span // n`` bytes.  For cell ``i``: ``requested[i]`` bytes of live
    blocks were requested, ``wasted[i]`` are live blocks' tails beyond the
    request, ``free[i]`` are in free blocks, and the rest must be exactly the
    cell's bytes at or past ``capacity``; otherwise ``ValueError`` names the
    cell.  More cells than the width can show (``cells_for(width)``) are
    merged, summing neighbours.

    Drawn: a title, a ruler of offsets within a row, the grid of cells
    (offsets on the left), a legend with each kind's total (and share of the
    capacity), and ``caption``'s items as ``key: value`` (byte counts in
    binary units with the exact figure).  Elements carry ``class`` names
    ``requested``, ``wasted``, ``free``, ``past`` and groups the ids
    ``map``, ``offsets``, ``legend``, ``caption``.
    """
    sc = _scene(requested, wasted, free, capacity, span, width, title, caption)
    out: List[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{sc.width}" '
        f'height="{sc.height}" viewBox="0 0 {sc.width} {sc.height}" '
        f'font-family={quoteattr(FONT)}>',
        f"<title>{escape(sc.title)}</title>",
        f'<defs><pattern id="{_PAST_PATTERN}" width="6" height="6" '
        f'patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
        f'<rect width="6" height="6" fill="{PAST_COLOR}"/>'
        f'<rect width="2" height="6" fill="{PAST_HATCH_COLOR}"/></pattern></defs>',
        f'<rect width="{sc.width}" height="{sc.height}" fill="#ffffff"/>',
        '<g id="map">',
    ]
    in_legend = False
    for p in sc.polys:
        kind = p.kind
        if kind.startswith("swatch-"):
            if not in_legend:
                out.append('</g><g id="legend-swatches">')
                in_legend = True
        fill = _SVG_FILL[kind[len("swatch-"):] if in_legend else kind]
        if len(p.points) == 4 and p.points[0][1] == p.points[1][1]:
            (x0, y0), (x1, _), (_, y1) = p.points[0], p.points[1], p.points[2]
            out.append(
                f'<rect class="{kind}" x="{_num(x0)}" y="{_num(y0)}" '
                f'width="{_num(x1 - x0)}" height="{_num(y1 - y0)}" fill="{fill}"/>'
            )
        else:
            out.append(f'<path class="{kind}" fill="{fill}" d="{_path_d(p.points)}"/>')
    out.append("</g>")
    for ln in sc.lines:
        out.append(
            f'<line x1="{_num(ln.x1)}" y1="{_num(ln.y1)}" x2="{_num(ln.x2)}" '
            f'y2="{_num(ln.y2)}" stroke="{ln.color}" stroke-width="{ln.width}"/>'
        )
    group = None
    for t in sc.texts:
        if t.group != group:
            if group is not None:
                out.append("</g>")
            out.append(f'<g id="{t.group}">')
            group = t.group
        weight = ' font-weight="bold"' if t.bold else ""
        anchor = "" if t.anchor == "start" else f' text-anchor="{t.anchor}"'
        out.append(
            f'<text x="{_num(t.x)}" y="{_num(t.y)}" font-size="{_num(t.size)}" '
            f'fill="{t.color}"{anchor}{weight}>{escape(t.text)}</text>'
        )
    if group is not None:
        out.append("</g>")
    out.append("</svg>\n")
    return "\n".join(out)


# ---------------------------------------------------------------------------
# The arena map: PNG (matplotlib, imported only here)
# ---------------------------------------------------------------------------


def _matplotlib() -> Tuple[Any, Any, Any]:
    """matplotlib's Figure, Agg canvas and PolyCollection, or a clear
    ``ModuleNotFoundError``.  Imported by name so that neither importing
    this module nor type-checking it needs matplotlib."""
    try:
        figure = importlib.import_module("matplotlib.figure")
        agg = importlib.import_module("matplotlib.backends.backend_agg")
        collections = importlib.import_module("matplotlib.collections")
    except ImportError as exc:
        raise ModuleNotFoundError(_NEED_MPL, name="matplotlib") from exc
    return figure.Figure, agg.FigureCanvasAgg, collections.PolyCollection


def png(
    path: Union[str, "os.PathLike[str]"],
    requested: Sequence[int],
    wasted: Sequence[int],
    free: Sequence[int],
    *,
    capacity: int,
    span: int,
    width: int = 1200,
    title: str,
    caption: Mapping[str, object],
) -> None:
    """Write the arena map of :func:`svg` as a PNG file ``width`` pixels
    wide, drawn with matplotlib (Agg, no pyplot, no global state).

    Raises ``ModuleNotFoundError`` (an ``ImportError``) saying
    "render to PNG needs matplotlib: pip install matplotlib (or the plot
    extra)" when matplotlib is not installed; ``ValueError`` for
    inconsistent cells, as :func:`svg`.
    """
    sc = _scene(requested, wasted, free, capacity, span, width, title, caption)
    Figure, FigureCanvasAgg, PolyCollection = _matplotlib()
    dpi = 100.0
    pt = 72.0 / dpi  # points per pixel
    fig = Figure(figsize=(sc.width / dpi, sc.height / dpi), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(0, sc.width)
    ax.set_ylim(sc.height, 0)
    ax.set_axis_off()

    # Consecutive shapes of one kind go into one collection, in order.
    def flush(kind: str, verts: List[List[Tuple[float, float]]]) -> None:
        if not verts:
            return
        base = kind[len("swatch-"):] if kind.startswith("swatch-") else kind
        if base == "past":
            coll = PolyCollection(
                verts, facecolors=PAST_COLOR, edgecolors=PAST_HATCH_COLOR,
                linewidths=0.0, hatch="////", antialiaseds=True,
            )
        else:
            color = {"requested": REQUESTED_COLOR, "wasted": WASTED_COLOR,
                     "free": FREE_COLOR}[base]
            coll = PolyCollection(
                verts, facecolors=color, edgecolors="none", linewidths=0.0,
                antialiaseds=True,
            )
        ax.add_collection(coll, autolim=False)

    batch: List[List[Tuple[float, float]]] = []
    batch_kind = ""
    for p in sc.polys:
        if p.kind != batch_kind:
            flush(batch_kind, batch)
            batch, batch_kind = [], p.kind
        batch.append(p.points)
    flush(batch_kind, batch)

    for ln in sc.lines:
        ax.plot([ln.x1, ln.x2], [ln.y1, ln.y2], color=ln.color,
                linewidth=ln.width * pt, solid_capstyle="butt")
    ha = {"start": "left", "middle": "center", "end": "right"}
    for t in sc.texts:
        ax.text(
            t.x, t.y, t.text, fontsize=t.size * pt, color=t.color,
            ha=ha[t.anchor], va="baseline",
            fontweight="bold" if t.bold else "normal",
            fontfamily="DejaVu Sans",  # bundled with matplotlib
        )
    fig.savefig(os.fspath(path), format="png", dpi=dpi, facecolor="white")
