"""Static memory planning: tensor lifetimes to offsets in one arena (no malloc at run time).

A tensor is live on the closed interval ``[first, last]`` of node indices (produced by node
``first``, last read by node ``last``); two tensors may share memory only if their intervals are
disjoint, so a node's output never aliases its inputs. Every offset is a multiple of the
alignment (16 bytes by default: SIMD loads, and the ``REFQ_ALIGN(16)`` arrays) and the arena size
is rounded up to it.

Lower bound: at each node the tensors live there must be disjoint, so the arena needs at least
``max over nodes of sum(round_up(size, align))`` bytes (rounding each size is exact here because
every offset is aligned). Several placements are tried and the smallest arena is kept: filling a
region of the lower bound's size from both ends in order of first use (optimal on chains), and
greedy best fit into the gaps between conflicting tensors in four orders (largest first,
longest lived first, largest area first, earliest first).

Persistent tensors (KV cache, recurrent state) live for the whole program: they get their own
static region (sequential, aligned) and never share the reusable arena.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from refq.errors import CodegenError

DEFAULT_ALIGNMENT = 16


@dataclass(frozen=True)
class TensorLife:
    """A tensor to place: ``size`` bytes, live from node ``first`` to node ``last`` inclusive."""

    name: str
    size: int
    first: int = 0
    last: int = 0
    persistent: bool = False


@dataclass(frozen=True)
class MemoryPlan:
    """Offsets of the arena (reusable) and static (persistent) tensors."""

    offsets: dict[str, int]  # transient tensors -> byte offset in the arena
    arena_size: int  # planned peak, a multiple of the alignment
    lower_bound: int  # largest total size of simultaneously live tensors (aligned)
    static_offsets: dict[str, int]  # persistent tensors -> offset in the static region
    static_size: int
    alignment: int
    strategy: str  # the heuristic whose placement was kept
    tried: dict[str, int] = field(default_factory=dict)  # strategy -> arena size

    @property
    def ratio(self) -> float:
        """arena_size / lower_bound (1.0 when both are 0)."""
        return 1.0 if self.lower_bound == 0 else self.arena_size / self.lower_bound

    @property
    def total_size(self) -> int:
        return self.arena_size + self.static_size

    def report(self) -> str:
        """One line for people: peak vs lower bound, static region, strategy."""
        return (
            f"arena {self.arena_size:,} bytes (lower bound {self.lower_bound:,}, "
            f"{self.ratio:.3f}x, {self.strategy}); static {self.static_size:,} bytes "
            f"for {len(self.static_offsets)} persistent tensors"
        )


def _round_up(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


def _check(tensors: Sequence[TensorLife], alignment: int) -> None:
    if alignment <= 0 or alignment & (alignment - 1):
        raise CodegenError(f"alignment {alignment} must be a positive power of two")
    seen: set[str] = set()
    for t in tensors:
        if t.name in seen:
            raise CodegenError(f"tensor {t.name!r} appears twice in the memory plan")
        seen.add(t.name)
        if isinstance(t.size, bool) or not isinstance(t.size, int) or t.size < 0:
            raise CodegenError(f"tensor {t.name!r} has size {t.size!r}; sizes are ints >= 0")
        for what, v in (("first", t.first), ("last", t.last)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise CodegenError(f"tensor {t.name!r} has {what} use {v!r}; node indices are >= 0")
        if t.first > t.last:
            raise CodegenError(
                f"tensor {t.name!r} is last used at node {t.last} before its first use {t.first}"
            )


def lower_bound(tensors: Iterable[TensorLife], alignment: int = DEFAULT_ALIGNMENT) -> int:
    """Max over nodes of the aligned sizes of the transient tensors live at that node."""
    events: dict[int, int] = {}
    for t in tensors:
        if t.persistent or t.size == 0:
            continue
        size = _round_up(t.size, alignment)
        events[t.first] = events.get(t.first, 0) + size
        events[t.last + 1] = events.get(t.last + 1, 0) - size
    peak = live = 0
    for node in sorted(events):
        live += events[node]
        peak = max(peak, live)
    return peak


def _overlap(a: TensorLife, b: TensorLife) -> bool:
    return a.first <= b.last and b.first <= a.last


def _place(order: Sequence[TensorLife], alignment: int) -> dict[str, int]:
    """Greedy: each tensor goes into the smallest gap (best fit) left by the already placed
    tensors whose lifetimes overlap its own, or above all of them."""
    placed: list[tuple[TensorLife, int, int]] = []  # (tensor, offset, aligned end)
    offsets: dict[str, int] = {}
    for t in order:
        size = _round_up(t.size, alignment)
        busy = sorted((off, end) for other, off, end in placed if _overlap(t, other))
        best: tuple[int, int] | None = None  # (gap size, offset)
        cursor = 0
        for off, end in busy:
            gap = off - cursor
            if gap >= size and (best is None or gap < best[0]):
                best = (gap, cursor)
            cursor = max(cursor, end)
        offset = best[1] if best is not None else cursor
        offsets[t.name] = offset
        placed.append((t, offset, offset + size))
    return offsets


_FOREVER = 1 << 62  # last use of the region's ends


def _place_two_ended(order: Sequence[TensorLife], alignment: int, target: int) -> dict[str, int]:
    """Fill a region of ``target`` bytes (the lower bound) from both ends.

    Each tensor goes into a gap between conflicting tensors (or the region's ends) that fits it,
    against the side whose neighbour stays live longest, so that memory about to be freed stays
    in one piece for later tensors; ties go to the smaller gap. On a chain this alternates bottom
    and top and reaches the lower bound. A tensor that fits nowhere goes above all conflicting
    tensors and the region grows.
    """
    placed: list[tuple[int, int, int, int]] = []  # (offset, aligned end, first use, last use)
    offsets: dict[str, int] = {}
    for t in order:
        size = _round_up(t.size, alignment)
        busy = sorted(
            (off, end, last)
            for off, end, first, last in placed
            if first <= t.last and t.first <= last
        )
        merged: list[tuple[int, int, int]] = []  # overlapping blocks joined, latest last use
        for off, end, last in busy:
            if merged and off < merged[-1][1]:
                m_off, m_end, m_last = merged[-1]
                merged[-1] = (m_off, max(m_end, end), max(m_last, last))
            else:
                merged.append((off, end, last))
        best: tuple[int, int, int] | None = None  # (-neighbour's last use, gap size, offset)
        below_end, below_last = 0, _FOREVER
        for off, end, last in [*(b for b in merged if b[0] < target), (target, target, _FOREVER)]:
            start, stop = below_end, min(off, target)
            if stop - start >= size:
                top = (stop - size) // alignment * alignment
                for pos, neighbour in ((start, below_last), (top, last)):
                    key = (-neighbour, stop - start, pos)
                    if best is None or key < best:
                        best = key
            if end > below_end:
                below_end, below_last = end, last
        if best is not None:
            offset = best[2]
        else:
            offset = max((end for _, end, _ in busy), default=0)
            target = max(target, offset + size)
        offsets[t.name] = offset
        placed.append((offset, offset + size, t.first, t.last))
    return offsets


_ORDERS: dict[str, Callable[[TensorLife], tuple]] = {
    "largest first": lambda t: (-t.size, t.first, t.name),
    "longest lived first": lambda t: (-(t.last - t.first), -t.size, t.name),
    "largest area first": lambda t: (-t.size * (t.last - t.first + 1), t.first, t.name),
    "earliest first": lambda t: (t.first, -t.size, t.name),
}


def plan_memory(tensors: Iterable[TensorLife], alignment: int = DEFAULT_ALIGNMENT) -> MemoryPlan:
    """Place every tensor: transient ones in the shared arena, persistent ones statically.

    Raises :class:`CodegenError` for duplicate names, negative sizes or inverted lifetimes.
    The returned plan is verified (:func:`verify_plan`) before it is returned.
    """
    items = list(tensors)
    _check(items, alignment)
    transient = [t for t in items if not t.persistent and t.size > 0]
    bound = lower_bound(transient, alignment)
    best: tuple[int, str, dict[str, int]] | None = None
    tried: dict[str, int] = {}
    candidates = [
        (name, lambda key=key: _place(sorted(transient, key=key), alignment))
        for name, key in _ORDERS.items()
    ]
    candidates.insert(
        0,
        (
            "two-ended by first use",
            lambda: _place_two_ended(
                sorted(transient, key=lambda t: (t.first, -t.size, t.name)), alignment, bound
            ),
        ),
    )
    for name, place in candidates:
        offsets = place()
        size = max((offsets[t.name] + _round_up(t.size, alignment) for t in transient), default=0)
        tried[name] = size
        if best is None or size < best[0]:
            best = (size, name, offsets)
        if size == bound:
            break  # optimal: no heuristic can do better
    assert best is not None
    arena_size, strategy, offsets = best
    for t in items:
        if not t.persistent and t.size == 0:
            offsets[t.name] = 0  # empty tensors occupy nothing
    static_offsets: dict[str, int] = {}
    cursor = 0
    for t in items:
        if t.persistent:
            static_offsets[t.name] = cursor
            cursor += _round_up(t.size, alignment)
    plan = MemoryPlan(
        offsets=offsets,
        arena_size=arena_size,
        lower_bound=bound,
        static_offsets=static_offsets,
        static_size=cursor,
        alignment=alignment,
        strategy=strategy,
        tried=tried,
    )
    verify_plan(items, plan)
    return plan


def verify_plan(tensors: Iterable[TensorLife], plan: MemoryPlan) -> None:
    """Raise :class:`CodegenError` unless ``plan`` places every tensor aligned, inside its region,
    and no two tensors live at the same time overlap in memory."""
    items = list(tensors)
    a = plan.alignment
    for t in items:
        table, limit, region = (
            (plan.static_offsets, plan.static_size, "static region")
            if t.persistent
            else (plan.offsets, plan.arena_size, "arena")
        )
        if t.name not in table:
            raise CodegenError(f"tensor {t.name!r} has no offset in the {region}")
        off = table[t.name]
        if off % a or off < 0 or (t.size and off + t.size > limit):
            raise CodegenError(
                f"tensor {t.name!r} at offset {off} (size {t.size}) is misaligned or outside "
                f"the {region} of {limit} bytes"
            )
    for group in (
        [t for t in items if not t.persistent and t.size],
        [t for t in items if t.persistent and t.size],
    ):
        table = plan.static_offsets if group and group[0].persistent else plan.offsets
        spans = sorted(group, key=lambda t: table[t.name])
        for i, x in enumerate(spans):
            x_end = table[x.name] + x.size
            for y in spans[i + 1 :]:
                if table[y.name] >= x_end:
                    break  # sorted by offset: no later tensor can overlap x either
                if x.persistent or _overlap(x, y):
                    raise CodegenError(
                        f"memory plan overlaps tensors {x.name!r} [{table[x.name]}, {x_end}) and "
                        f"{y.name!r} [{table[y.name]}, {table[y.name] + y.size}) while both live"
                    )
