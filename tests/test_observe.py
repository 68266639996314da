"""alloc._observe: Linux's fragmentation indices per order, and the arena map.

Plain Python: the inputs come from a tiny pure-Python buddy allocator below
(``Buddy``), not from the C core, so these tests pin the module's own
arithmetic and drawing.  Run as a script it regenerates the sample pictures:

    python tests/test_observe.py docs/    # docs/arena-sample.svg/.png, ...
"""

from __future__ import annotations

import heapq
import importlib.util
import math
import random
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # importable as a script too (python tests/...)

from alloc import _observe  # noqa: E402
from alloc._observe import cells_for, order_table, png, svg  # noqa: E402

SVG_NS = "{http://www.w3.org/2000/svg}"
HAVE_MPL = importlib.util.find_spec("matplotlib") is not None
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


# ---------------------------------------------------------------------------
# A reference buddy allocator in pure Python (placement as README states:
# smallest block size with a free block, lowest offset, keep the lower half)
# ---------------------------------------------------------------------------


class Buddy:
    def __init__(self, capacity: int, min_size: int) -> None:
        self.m = min_size
        self.capacity = capacity
        self.span = max(min_size, 1 << (capacity - 1).bit_length())
        self.top = (self.span // min_size).bit_length() - 1  # highest order
        self.free: List[set] = [set() for _ in range(self.top + 1)]
        self.heaps: List[List[int]] = [[] for _ in range(self.top + 1)]
        self.live: Dict[int, Tuple[int, int]] = {}  # offset -> (order, requested)
        off = 0  # [0, capacity) as maximal aligned blocks, all free
        while off + min_size <= capacity:
            k = self.top
            while off % (min_size << k) or off + (min_size << k) > capacity:
                k -= 1
            self._put(k, off)
            off += min_size << k

    def _put(self, k: int, off: int) -> None:
        self.free[k].add(off)
        heapq.heappush(self.heaps[k], off)

    def _lowest(self, k: int) -> Optional[int]:
        h = self.heaps[k]
        while h and h[0] not in self.free[k]:
            heapq.heappop(h)
        return h[0] if h else None

    def order(self, size: int) -> int:
        k = 0
        while (self.m << k) < size:
            k += 1
        return k

    def alloc(self, size: int) -> Optional[int]:
        need = self.order(size)
        k = need
        while k <= self.top and not self.free[k]:
            k += 1
        if k > self.top:
            return None
        off = self._lowest(k)
        assert off is not None
        self.free[k].discard(off)
        while k > need:  # split, keep the lower half
            k -= 1
            self._put(k, off + (self.m << k))
        self.live[off] = (need, size)
        return off

    def release(self, off: int) -> None:
        k, _ = self.live.pop(off)
        while k < self.top:
            buddy = off ^ (self.m << k)
            if buddy not in self.free[k]:
                break
            self.free[k].discard(buddy)
            off = min(off, buddy)
            k += 1
        self._put(k, off)

    def free_counts(self) -> List[int]:
        return [len(s) for s in self.free]

    def stats(self) -> Dict[str, object]:
        requested = sum(r for _, r in self.live.values())
        in_blocks = sum(self.m << k for k, _ in self.live.values())
        counts = self.free_counts()
        largest = max((self.m << k for k, c in enumerate(counts) if c), default=0)
        return {
            "bytes_total": self.capacity,
            "bytes_allocated": requested,
            "bytes_wasted": in_blocks - requested,
            "bytes_free": self.capacity - in_blocks,
            "largest_free": largest,
            "live_blocks": len(self.live),
        }

    def cells(self, n: int) -> Tuple[List[int], List[int], List[int]]:
        """Per-cell bytes (requested, wasted, free) over the span cut in n."""
        cell = self.span // n
        req, was, fre = [0] * n, [0] * n, [0] * n

        def add(arr: List[int], lo: int, hi: int) -> None:
            while lo < hi:
                i = lo // cell
                end = min(hi, (i + 1) * cell)
                arr[i] += end - lo
                lo = end

        for off, (k, r) in self.live.items():
            add(req, off, off + r)
            add(was, off + r, off + (self.m << k))
        for k, offs in enumerate(self.free):
            for off in offs:
                add(fre, off, off + (self.m << k))
        return req, was, fre


def churn(capacity: int, min_size: int, lo: int, hi: int, seed: int,
          p_alloc: float = 0.6) -> Buddy:
    """Random churn (log-uniform sizes lo..hi, frees of random live blocks)
    until the first refused allocation."""
    rnd = random.Random(seed)
    b = Buddy(capacity, min_size)
    live: List[int] = []
    while True:
        if live and rnd.random() > p_alloc:
            i = rnd.randrange(len(live))
            live[i], live[-1] = live[-1], live[i]
            b.release(live.pop())
            continue
        size = int(math.exp(rnd.uniform(math.log(lo), math.log(hi))))
        off = b.alloc(size)
        if off is None:
            return b
        live.append(off)


def render_args(b: Buddy, width: int = 1200, title: str = "arena"):
    n = cells_for(width, span=b.span, min_size=b.m)
    req, was, fre = b.cells(n)
    return (req, was, fre), dict(capacity=b.capacity, span=b.span, width=width,
                                 title=title, caption=b.stats())


def parse(text: str) -> ET.Element:
    return ET.fromstring(text)


def elements(root: ET.Element, cls: str) -> List[ET.Element]:
    return [e for e in root.iter() if e.get("class") == cls]


def group_text(root: ET.Element, gid: str) -> List[str]:
    for g in root.iter(SVG_NS + "g"):
        if g.get("id") == gid:
            return ["".join(t.itertext()) for t in g.iter(SVG_NS + "text")]
    return []


# ---------------------------------------------------------------------------
# order_table: hand-worked examples
# ---------------------------------------------------------------------------


def _row(table, block_size):
    (row,) = [r for r in table if r["block_size"] == block_size]
    return row


def test_order_table_shape_and_keys():
    t = order_table(16, [2, 1, 0, 1])
    assert [r["block_size"] for r in t] == [16, 32, 64, 128]
    assert [r["free_blocks"] for r in t] == [2, 1, 0, 1]
    for r in t:
        assert set(r) == {"block_size", "free_blocks", "unusable_free_index",
                          "fragmentation_index"}
        assert isinstance(r["unusable_free_index"], float)
        assert isinstance(r["fragmentation_index"], float)


def test_order_table_a_block_large_enough_everywhere():
    # min 16; free: 2 x 16, 1 x 32, 0 x 64, 1 x 128.
    # In 16-byte units ("pages"): free_pages = 2*1 + 1*2 + 1*8 = 12.
    # suitable(j) = sum_{k>=j} count[k] << (k-j):
    #   j=0: 2 + 2 + 0 + 8 = 12  -> usable 12*1 = 12 pages: unusable 0/12 = 0
    #   j=1: 1 + 0 + 4     = 5   -> usable 5*2  = 10 pages: unusable 2/12 = 1/6
    #   j=2: 0 + 2         = 2   -> usable 2*4  = 8  pages: unusable 4/12 = 1/3
    #   j=3: 1             = 1   -> usable 1*8  = 8  pages: unusable 4/12 = 1/3
    # suitable > 0 at every order: fragmentation index -1 throughout.
    t = order_table(16, [2, 1, 0, 1])
    assert [r["unusable_free_index"] for r in t] == [0.0, 1 / 6, 1 / 3, 1 / 3]
    assert [r["fragmentation_index"] for r in t] == [-1.0] * 4


def test_order_table_requests_that_would_fail():
    # min 16; free: 3 x 16, 1 x 32 -> free 80 bytes (5 pages) in 4 blocks.
    #   16 B: suitable 3 + 2 = 5: unusable 0, index -1
    #   32 B: suitable 1: usable 2 of 5 pages: unusable 3/5, index -1
    #   64 B: nothing large enough: unusable 5/5 = 1;
    #         index = 1 - (1 + 80/64) / 4 = 1 - 2.25/4 = 0.4375
    #         (kernel: 1000 - (1000 + 5000/4)/4 = 1000 - 562 = 438 -> 0.438)
    #  128 B: index = 1 - (1 + 80/128) / 4 = 1 - 1.625/4 = 0.59375
    #         (kernel: 1000 - (1000 + 5000/8)/4 = 1000 - 406 = 594 -> 0.594)
    t = order_table(16, [3, 1, 0, 0])
    assert [r["unusable_free_index"] for r in t] == [0.0, 0.6, 1.0, 1.0]
    assert [r["fragmentation_index"] for r in t] == [-1.0, -1.0, 0.4375, 0.59375]


def test_order_table_pages_translate_to_min_blocks():
    # The same free lists with min 4096 (Linux's own page size) give the
    # same indices: they depend on blocks per order, not on bytes.
    assert [(r["unusable_free_index"], r["fragmentation_index"])
            for r in order_table(4096, [3, 1, 0, 0])] == \
           [(r["unusable_free_index"], r["fragmentation_index"])
            for r in order_table(16, [3, 1, 0, 0])]
    assert [r["block_size"] for r in order_table(4096, [3, 1, 0, 0])] == \
        [4096, 8192, 16384, 32768]


def test_order_table_nothing_free():
    # free_pages = 0: the kernel's unusable_free_index returns 1000 ("no free
    # memory is interpreted as all free memory is unusable") -> 1.0;
    # __fragmentation_index returns 0 when free_blocks_total is 0.
    t = order_table(16, [0, 0, 0, 0])
    assert [r["unusable_free_index"] for r in t] == [1.0] * 4
    assert [r["fragmentation_index"] for r in t] == [0.0] * 4


def test_order_table_everything_free_in_one_block():
    # One free 128-byte block: every request fits; nothing is unusable.
    t = order_table(16, [0, 0, 0, 1])
    assert [r["unusable_free_index"] for r in t] == [0.0] * 4
    assert [r["fragmentation_index"] for r in t] == [-1.0] * 4


def test_order_table_all_free_in_min_blocks():
    # 8 free 16-byte blocks (128 bytes, 8 pages), none larger.
    #   16 B: fits: unusable 0, index -1
    #   32 B: unusable 8/8 = 1; index = 1 - (1 + 128/32)/8 = 1 - 5/8 = 0.375
    #   64 B: index = 1 - (1 + 2)/8 = 0.625
    #  128 B: index = 1 - (1 + 1)/8 = 0.75   -- towards 1: fragmentation
    t = order_table(16, [8, 0, 0, 0])
    assert [r["unusable_free_index"] for r in t] == [0.0, 1.0, 1.0, 1.0]
    assert [r["fragmentation_index"] for r in t] == [-1.0, 0.375, 0.625, 0.75]


def test_order_table_request_bigger_than_anything():
    # One free 16 B and one free 32 B block (48 bytes); request 128 B:
    #   index = 1 - (1 + 48/128)/2 = 1 - 1.375/2 = 0.3125
    # A single free 64-byte block against a 128-byte request: lack of
    # memory, not fragmentation; the kernel's formula goes below 0:
    #   index = 1 - (1 + 64/128)/1 = -0.5   (kernel: 1000 - 1500 = -500)
    assert order_table(16, [1, 1, 0, 0])[3]["fragmentation_index"] == 0.3125
    assert order_table(16, [1, 1, 0, 0])[3]["unusable_free_index"] == 1.0
    assert order_table(16, [0, 0, 1, 0])[3]["fragmentation_index"] == -0.5
    assert order_table(16, [0, 0, 1, 0])[2]["fragmentation_index"] == -1.0


def test_order_table_matches_the_kernel_fixed_point():
    # The kernel's integers, from mm/vmstat.c, on random free lists: ours
    # is the exact value; the kernel truncates twice, so it is >= ours and
    # at most 0.002 above.
    rnd = random.Random(5)
    for _ in range(500):
        counts = [rnd.choice([0, 0, 1, 2, 7, 100]) for _ in range(rnd.randint(1, 12))]
        free_pages = sum(c << k for k, c in enumerate(counts))
        total = sum(counts)
        for j, row in enumerate(order_table(64, counts)):
            suitable = sum(c << (k - j) for k, c in enumerate(counts) if k >= j)
            if free_pages == 0:
                unusable = 1000
            else:
                unusable = (free_pages - (suitable << j)) * 1000 // free_pages
            if total == 0:
                frag = 0
            elif suitable:
                frag = -1000
            else:
                frag = 1000 - (1000 + free_pages * 1000 // (1 << j)) // total
            assert 0 <= row["unusable_free_index"] * 1000 - unusable < 1
            assert 0 <= frag - row["fragmentation_index"] * 1000 < 2


def test_order_table_large_and_empty():
    assert order_table(16, []) == []
    t = order_table(1, [0] * 40 + [1])  # a 1 TiB block of 1-byte minimum
    assert t[-1]["block_size"] == 1 << 40
    assert t[0]["unusable_free_index"] == 0.0


def test_order_table_bad_input():
    with pytest.raises(ValueError):
        order_table(24, [1])
    with pytest.raises(ValueError):
        order_table(0, [1])
    with pytest.raises(ValueError):
        order_table(16, [1, -1])
    with pytest.raises(TypeError):
        order_table(16, [1.0])
    with pytest.raises(TypeError):
        order_table(16, [True])


def test_order_table_agrees_with_a_simulated_arena():
    b = churn(1 * MiB, 64, 64, 16384, seed=3)
    counts = b.free_counts()
    t = order_table(64, counts)
    st = b.stats()
    # A request of the largest free size fits, the next does not.
    largest = st["largest_free"]
    for r in t:
        assert (r["fragmentation_index"] == -1.0) == (r["block_size"] <= largest)
        if r["block_size"] > largest:
            assert r["unusable_free_index"] == 1.0


# ---------------------------------------------------------------------------
# cells_for
# ---------------------------------------------------------------------------


def test_cells_for():
    assert cells_for(1200) == 256 * 64
    for w in (480, 600, 800, 1200, 2000, 4000):
        n = cells_for(w)
        assert n & (n - 1) == 0
        assert (w - 100) / (n // 64) >= 4  # cells at least 4 px wide
    assert cells_for(600) < cells_for(1200) <= cells_for(2400)
    # Capped so that a cell holds at least one minimum block.
    assert cells_for(1200, span=4 * KiB, min_size=16) == 256
    assert cells_for(1200, span=16 * GiB, min_size=16) == 16384
    assert cells_for(1200, span=16, min_size=16) == 1
    with pytest.raises(ValueError):
        cells_for(479)
    with pytest.raises(ValueError):
        cells_for(1200, span=3000)


# ---------------------------------------------------------------------------
# The SVG
# ---------------------------------------------------------------------------


def tiny() -> Buddy:
    b = Buddy(4 * KiB, 16)
    b.alloc(100)  # 128-byte block: 28 bytes wasted
    b.alloc(1000)  # 1024-byte block: 24 wasted
    b.alloc(16)
    return b


def test_svg_tiny_arena():
    b = tiny()
    (req, was, fre), kw = render_args(b, title="tiny <arena> & co")
    assert len(req) == 256
    text = svg(req, was, fre, **kw)
    root = parse(text)
    assert root.tag == SVG_NS + "svg"
    assert root.get("width") == "1200"
    assert "".join(root.find(SVG_NS + "title").itertext()) == "tiny <arena> & co"
    # The three kinds present are drawn; nothing is past the capacity.
    for cls in ("requested", "wasted", "free"):
        assert elements(root, cls), cls
    assert not elements(root, "past")
    legend = " ".join(group_text(root, "legend"))
    assert "requested: 1.09 KiB (27.2%)" in legend  # 1116 / 4096 = 0.2725
    assert "wasted" in legend and "free" in legend
    assert "past capacity" not in legend
    caption = " ".join(group_text(root, "caption"))
    assert "bytes allocated: 1.09 KiB (1,116 B)" in caption
    assert "bytes wasted: 52 B" in caption
    assert "live blocks: 3" in caption
    assert "largest free: 2 KiB (2,048 B)" in caption
    assert group_text(root, "offsets") == ["0"]


def test_svg_four_kinds_and_capacity_line():
    b = churn(60 * MiB, 4096, 4096, 1 << 20, seed=1)
    (req, was, fre), kw = render_args(b)
    root = parse(svg(req, was, fre, **kw))
    for cls in ("requested", "wasted", "free", "past"):
        assert elements(root, cls), cls
    legend = " ".join(group_text(root, "legend"))
    assert "past capacity (not memory): 4 MiB" in legend
    offsets = group_text(root, "offsets")
    assert offsets[0] == "0" and "16 MiB" in offsets and "32 MiB" in offsets
    # 60 MiB ends inside a row of 1 MiB? No: at a row boundary, so no line;
    # the ruler's ticks are the only lines.
    assert len(list(root.iter(SVG_NS + "line"))) == 5


def test_svg_capacity_inside_a_row_is_marked():
    # 3 KiB + 512 of a 4 KiB tree, 16 cells of 256 B in one row.
    cap, span, n = 3584, 4096, 16
    cell = span // n
    req = [cell] * 14 + [0, 0]
    zeros = [0] * n
    root = parse(svg(req, zeros, zeros, capacity=cap, span=span, title="t",
                     caption={}))
    lines = list(root.iter(SVG_NS + "line"))
    assert len(lines) == 6  # 5 ruler ticks + the end of the capacity
    assert lines[-1].get("x1") == lines[-1].get("x2")
    assert elements(root, "past") and not elements(root, "free")


def test_svg_run_merging_and_size():
    # A uniform arena is a handful of elements whatever the cell count.
    n = 16384
    span = 16 * GiB
    cell = span // n
    root = parse(svg([cell] * n, [0] * n, [0] * n, capacity=span, span=span,
                     title="full", caption={}))
    paths = elements(root, "requested")
    assert len(paths) == 64  # one per row
    assert all(len(p.get("d")) < 40 for p in paths)  # one run per row
    # Worst case: every cell different.
    rnd = random.Random(0)
    req, was, fre = [], [], []
    for _ in range(n):
        a, b2 = sorted(rnd.randrange(cell + 1) for _ in range(2))
        req.append(a)
        was.append(b2 - a)
        fre.append(cell - b2)
    t0 = time.perf_counter()
    text = svg(req, was, fre, capacity=span, span=span, title="worst",
               caption={"bytes_total": span})
    elapsed = time.perf_counter() - t0
    assert len(text.encode()) < 2_000_000
    assert elapsed < 2.0  # about 0.1 s here; generous for slow CI machines
    parse(text)


def test_svg_more_cells_than_the_width_merge_exactly():
    b = churn(4 * MiB, 64, 64, 16384, seed=2)
    req, was, fre = b.cells(65536)  # 4x cells_for(1200)
    merged = svg(req, was, fre, capacity=b.capacity, span=b.span, title="m",
                 caption={})
    g = 4
    direct = svg(*[[sum(v[i:i + g]) for i in range(0, len(v), g)]
                   for v in (req, was, fre)],
                 capacity=b.capacity, span=b.span, title="m", caption={})
    assert merged == direct


def test_svg_inconsistent_cells_are_refused():
    with pytest.raises(ValueError, match="cell 1"):
        svg([16, 8], [0, 0], [0, 0], capacity=32, span=32, title="t", caption={})
    with pytest.raises(ValueError, match="same length"):
        svg([16, 16], [0], [0, 0], capacity=32, span=32, title="t", caption={})
    with pytest.raises(ValueError, match="power of two"):
        svg([1, 1, 1], [0] * 3, [0] * 3, capacity=3, span=3, title="t", caption={})
    with pytest.raises(ValueError, match="exceeds"):
        svg([16], [0], [0], capacity=32, span=16, title="t", caption={})
    with pytest.raises(ValueError, match="negative"):
        svg([-1], [17], [0], capacity=16, span=16, title="t", caption={})
    with pytest.raises(ValueError):
        svg([16], [0], [0], capacity=16, span=16, width=100, title="t", caption={})


def test_svg_caption_values_are_formatted_and_escaped():
    root = parse(svg([16], [0], [0], capacity=16, span=16, title="t", caption={
        "bytes_total": 16 * GiB, "fragmentation": 0.123456, "name": "<a&b>",
        "free_blocks": {16: 1}, "long": "x" * 500,
    }))
    cap = group_text(root, "caption")
    assert "bytes total: 16 GiB (17,179,869,184 B)" in cap
    assert "fragmentation: 0.1235" in cap
    assert "name: <a&b>" in cap
    assert "free blocks: {16: 1}" in cap
    assert max(len(c) for c in cap) < 80


def test_svg_a_sixteen_gib_arena_reads():
    # 16 GiB, 16384 cells of 1 MiB: offsets label every other row in GiB.
    span = 16 * GiB
    n = cells_for(1200, span=span, min_size=64)
    cell = span // n
    rnd = random.Random(1)
    req = [rnd.randrange(cell // 2) for _ in range(n)]
    was = [r // 8 for r in req]
    fre = [cell - r - w for r, w in zip(req, was)]
    root = parse(svg(req, was, fre, capacity=span, span=span, title="16 GiB",
                     caption={"live_blocks": 1_000_000}))
    offsets = group_text(root, "offsets")
    assert offsets[:3] == ["0", "512 MiB", "1 GiB"]
    assert offsets[-1] == "15.5 GiB"
    assert "live blocks: 1,000,000" in group_text(root, "caption")
    assert int(root.get("height")) < 1000


# ---------------------------------------------------------------------------
# The PNG
# ---------------------------------------------------------------------------


@pytest.mark.skipif(not HAVE_MPL, reason="matplotlib not installed")
def test_png_is_written(tmp_path):
    b = tiny()
    (req, was, fre), kw = render_args(b, width=800)
    out = tmp_path / "arena.png"
    png(out, req, was, fre, **kw)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w = int.from_bytes(data[16:20], "big")
    h = int.from_bytes(data[20:24], "big")
    assert w == 800
    assert h == int(parse(svg(req, was, fre, **kw)).get("height"))


def test_png_without_matplotlib(monkeypatch, tmp_path):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError) as info:
        png(tmp_path / "x.png", [16], [0], [0], capacity=16, span=16, title="t",
            caption={})
    assert isinstance(info.value, ModuleNotFoundError)
    assert str(info.value) == (
        "render to PNG needs matplotlib: pip install matplotlib (or the plot extra)"
    )
    assert not (tmp_path / "x.png").exists()


def test_module_imports_no_compiled_core():
    src = Path(_observe.__file__).read_text()
    assert "_buddy" not in src and "import matplotlib" not in src


# ---------------------------------------------------------------------------
# Sample pictures: python tests/test_observe.py docs/
# ---------------------------------------------------------------------------


def _write(b: Buddy, out: Path, name: str, title: str) -> None:
    (req, was, fre), kw = render_args(b, title=title)
    (out / f"arena-{name}.svg").write_text(svg(req, was, fre, **kw))
    png(out / f"arena-{name}.png", req, was, fre, **kw)


def _million(span: int, seed: int) -> Buddy:
    """16 GiB with about a million live blocks (64 B .. 64 KiB)."""
    rnd = random.Random(seed)
    b = Buddy(span, 64)
    live: List[int] = []
    while len(b.live) < 1_000_000:
        if live and rnd.random() < 0.3:
            i = rnd.randrange(len(live))
            live[i], live[-1] = live[-1], live[i]
            b.release(live.pop())
            continue
        size = int(math.exp(rnd.uniform(math.log(64), math.log(65536))))
        off = b.alloc(size)
        assert off is not None
        live.append(off)
    return b


def main(argv: Sequence[str]) -> None:
    out = Path(argv[0]) if argv else ROOT / "docs"
    b = churn(60 * MiB, 64, 64, 16384, seed=7)
    _write(b, out, "sample",
           "60 MiB arena after churn (64 B .. 16 KiB) up to the first refusal")
    rnd = random.Random(1)
    for off in rnd.sample(sorted(b.live), len(b.live) // 2):
        b.release(off)
    _write(b, out, "holes", "The same arena after freeing half its blocks at random")
    _write(tiny(), out, "tiny", "4 KiB arena, three blocks (100, 1000 and 16 bytes)")
    if "--big" in argv:
        _write(_million(16 * GiB, 11), out, "16gib",
               "16 GiB arena, a million live blocks (64 B .. 64 KiB)")


if __name__ == "__main__":
    main(sys.argv[1:])
