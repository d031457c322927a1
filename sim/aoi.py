"""Interest management (area of interest): a uniform spatial grid and batched radius queries.

The grid is rebuilt every send by a counting sort over the entity slots (``grid_build``): cells
are about the view radius wide, entities outside the bounds are clamped into the edge cells (the
distance test always uses the true position, so clamping never loses a neighbour). Within a cell,
slots are in ascending order.

``cell_order`` lays the live entities out in cell order (positions and ids, sorted by id within a
cell) once per send; ``visible_ids`` then answers a batch of viewers at once into a CSR result:
viewer ``v`` sees ``ids[offsets[v]:offsets[v + 1]]``, sorted, always including its own entity (when
alive), every live entity within its radius (``dx² + dy² <= r²``, float64) and the always-relevant
ids. Each cell's matches are a sorted run and the runs are merged, so no viewer sorts.

Everything is arrays in, arrays out; ``AoiGrid`` only owns the buffers and grows the output.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
from numba import njit

from sim.scalars import Float, Int

MAX_CELLS_PER_AXIS: Final = 1024
_NO_IDS: Final = np.zeros(0, dtype=np.uint32)


@njit(cache=True)
def cell_index(p: Float, lo: Float, inv: Float, n: Int) -> int:
    """Cell index of a coordinate, clamped to [0, n) (NaN goes to 0)."""
    f = (p - lo) * inv
    if not f >= 0.0:
        return 0
    if f >= n:
        return n - 1
    return int(f)


@njit(cache=True)
def grid_build(
    x: np.ndarray,
    y: np.ndarray,
    alive: np.ndarray,
    x0: Float,
    y0: Float,
    inv_cx: Float,
    inv_cy: Float,
    nx: Int,
    ny: Int,
    cell_start: np.ndarray,
    cursor: np.ndarray,
    items: np.ndarray,
    cell_of: np.ndarray,
) -> int:
    """Counting sort of the live slots into cells; returns the number of live slots.

    x, y: float64[cap]; alive: uint8[cap]; cell_start: int32[nx*ny+1]; cursor: int32[nx*ny];
    items: int32[cap] (slots grouped by cell, ascending within a cell); cell_of: int32[cap] (-1 dead).
    """
    ncell = nx * ny
    for c in range(ncell + 1):
        cell_start[c] = 0
    n = x.shape[0]
    live = 0
    for i in range(n):
        if alive[i] == 0:
            cell_of[i] = -1
            continue
        c = cell_index(y[i], y0, inv_cy, ny) * nx + cell_index(x[i], x0, inv_cx, nx)
        cell_of[i] = c
        cell_start[c + 1] += 1
        live += 1
    for c in range(ncell):
        cell_start[c + 1] += cell_start[c]
        cursor[c] = cell_start[c]
    for i in range(n):
        c = cell_of[i]
        if c >= 0:
            items[cursor[c]] = i
            cursor[c] += 1
    return live


@njit(cache=True)
def cell_order(
    cell_start: np.ndarray,
    items: np.ndarray,
    px: np.ndarray,
    py: np.ndarray,
    id_by_slot: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    ids: np.ndarray,
) -> None:
    """Positions and ids of the live slots in the grid's cell order (``items``), sorted by
    id within each cell: what ``visible_ids`` reads, contiguous per cell and mergeable by id."""
    ncell = cell_start.shape[0] - 1
    for t in range(cell_start[ncell]):
        s = items[t]
        xs[t] = px[s]
        ys[t] = py[s]
        ids[t] = id_by_slot[s]
    for c in range(ncell):
        a = cell_start[c]
        for i in range(a + 1, cell_start[c + 1]):  # insertion sort: cells are small and nearly sorted
            k = ids[i]
            kx = xs[i]
            ky = ys[i]
            j = i - 1
            while j >= a and ids[j] > k:
                ids[j + 1] = ids[j]
                xs[j + 1] = xs[j]
                ys[j + 1] = ys[j]
                j -= 1
            ids[j + 1] = k
            xs[j + 1] = kx
            ys[j + 1] = ky


@njit(cache=True)
def _merge_runs(buf: np.ndarray, tmp: np.ndarray, rs: np.ndarray, nr: Int) -> None:
    """Merge the sorted runs buf[rs[i]:rs[i + 1]] (i < nr) into one sorted run, in place."""
    width = 1
    src = buf
    dst = tmp
    while width < nr:
        i = 0
        while i < nr:
            a0 = rs[i]
            a1 = rs[min(i + width, nr)]
            b1 = rs[min(i + 2 * width, nr)]
            p = a0
            q = a1
            o = a0
            while p < a1 and q < b1:
                if src[q] < src[p]:
                    dst[o] = src[q]
                    q += 1
                else:
                    dst[o] = src[p]
                    p += 1
                o += 1
            while p < a1:
                dst[o] = src[p]
                p += 1
                o += 1
            while q < b1:
                dst[o] = src[q]
                q += 1
                o += 1
            i += 2 * width
        src, dst = dst, src
        width *= 2
    if src is not buf:
        for t in range(rs[0], rs[nr]):
            buf[t] = src[t]


@njit(cache=True)
def visible_ids(
    vx: np.ndarray,
    vy: np.ndarray,
    vr: np.ndarray,
    own_id: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    ids: np.ndarray,
    x0: Float,
    y0: Float,
    inv_cx: Float,
    inv_cy: Float,
    nx: Int,
    ny: Int,
    cell_start: np.ndarray,
    always: np.ndarray,
    offsets: np.ndarray,
    out: np.ndarray,
    tmp: np.ndarray,
) -> int:
    """Sorted entity ids each viewer sees, into CSR (offsets: int64[nv+1], out: uint32[...]).

    Viewer ``v`` at (vx, vy) with radius vr sees the entity ``own_id[v]`` (its own, 0: none or not
    alive) and every live entity within the radius (dx² + dy² <= r², float64), plus the
    ``always`` ids (sorted, live); a NaN position or negative radius sees only those. The grid is
    ``grid_build``'s (cells ``cell_start``), with the entities in ``cell_order``'s layout (xs, ys, ids).
    Each cell's matches are a sorted run; the runs are merged (no per-viewer sort). ``tmp`` is as
    long as ``out``. Returns the total written, or -1 when ``out`` is too small (grow both).
    """
    nv = vx.shape[0]
    cap = out.shape[0]
    na = always.shape[0]
    rs = np.empty(cell_start.shape[0] + 3, dtype=np.int64)
    pos = 0
    offsets[0] = 0
    for v in range(nv):
        start = pos
        px = vx[v]
        py = vy[v]
        r = vr[v]
        me = own_id[v]
        nr = 0
        if r >= 0.0 and px == px and py == py:
            r2 = r * r
            cx_lo = cell_index(px - r, x0, inv_cx, nx)
            cx_hi = cell_index(px + r, x0, inv_cx, nx)
            cy_lo = cell_index(py - r, y0, inv_cy, ny)
            cy_hi = cell_index(py + r, y0, inv_cy, ny)
            for cy in range(cy_lo, cy_hi + 1):
                for cx in range(cx_lo, cx_hi + 1):
                    c = cy * nx + cx
                    run = pos
                    for t in range(cell_start[c], cell_start[c + 1]):
                        dx = xs[t] - px
                        dy = ys[t] - py
                        if dx * dx + dy * dy <= r2 and ids[t] != me:
                            if pos >= cap:
                                return -1
                            out[pos] = ids[t]
                            pos += 1
                    if pos > run:
                        rs[nr] = run
                        nr += 1
        if me != 0:
            if pos >= cap:
                return -1
            rs[nr] = pos
            nr += 1
            out[pos] = me
            pos += 1
        if na:
            if pos + na > cap:
                return -1
            rs[nr] = pos
            nr += 1
            for a in range(na):
                out[pos] = always[a]
                pos += 1
        rs[nr] = pos
        if nr > 32:
            out[start:pos].sort()
        elif nr > 1:
            _merge_runs(out, tmp, rs, nr)
        if na and pos - start > 1:  # an always-relevant entity may also be in view
            w = start + 1
            for t in range(start + 1, pos):
                if out[t] != out[w - 1]:
                    out[w] = out[t]
                    w += 1
            pos = w
        offsets[v + 1] = pos
    return pos


class AoiGrid:
    """Owns the grid and query buffers for one entity table (capacity slots) over fixed bounds."""

    def __init__(self, capacity: int, bounds: tuple[float, float, float, float], cell: float) -> None:
        x0, y0, x1, y1 = (float(b) for b in bounds)
        if not (x1 > x0 and y1 > y0 and cell > 0):
            raise ValueError(f"bad AOI grid: bounds {bounds}, cell {cell}")
        self.capacity = capacity
        self.x0, self.y0 = x0, y0
        self.nx = max(1, math.ceil(min(float(MAX_CELLS_PER_AXIS), (x1 - x0) / cell)))
        self.ny = max(1, math.ceil(min(float(MAX_CELLS_PER_AXIS), (y1 - y0) / cell)))
        self.inv_cx = self.nx / (x1 - x0)
        self.inv_cy = self.ny / (y1 - y0)
        ncell = self.nx * self.ny
        self.cell_start = np.zeros(ncell + 1, dtype=np.int32)
        self._cursor = np.zeros(ncell, dtype=np.int32)
        self.items = np.zeros(capacity, dtype=np.int32)
        self.cell_of = np.full(capacity, -1, dtype=np.int32)
        self._x = np.zeros(capacity, dtype=np.float64)
        self._y = np.zeros(capacity, dtype=np.float64)
        self._cell_x = np.zeros(capacity, dtype=np.float64)  # cell order (`order`)
        self._cell_y = np.zeros(capacity, dtype=np.float64)
        self._cell_ids = np.zeros(capacity, dtype=np.uint32)
        self._out = np.zeros(max(4096, capacity), dtype=np.uint32)
        self._tmp = np.zeros_like(self._out)
        self._offsets = np.zeros(1, dtype=np.int64)

    def build(self, x: np.ndarray, y: np.ndarray, alive: np.ndarray) -> int:
        """Bin every live slot (x, y: by slot, any float dtype; alive: uint8/bool by slot)."""
        self._x[:] = x
        self._y[:] = y
        live = grid_build(
            self._x, self._y, alive.view(np.uint8), self.x0, self.y0, self.inv_cx, self.inv_cy,
            np.int64(self.nx), np.int64(self.ny), self.cell_start, self._cursor, self.items, self.cell_of,
        )  # fmt: skip
        return int(live)

    def order(self, ids_by_slot: np.ndarray) -> None:
        """Lay the entities of the last `build` out in cell order with their ids (uint32 by slot)."""
        cell_order(self.cell_start, self.items, self._x, self._y, ids_by_slot, self._cell_x, self._cell_y,
                   self._cell_ids)  # fmt: skip

    def query(
        self,
        vx: np.ndarray,
        vy: np.ndarray,
        radius: np.ndarray | float,
        own_id: np.ndarray,
        always: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """CSR (offsets int64[nv+1], ids uint32[total]) of what each viewer sees, after `order`
        (views, valid until the next query). `own_id`: each viewer's own entity id (0: none)."""
        vx = np.ascontiguousarray(vx, dtype=np.float64)
        vy = np.ascontiguousarray(vy, dtype=np.float64)
        vr = np.ascontiguousarray(np.broadcast_to(np.asarray(radius, dtype=np.float64), vx.shape))
        own = np.ascontiguousarray(own_id, dtype=np.uint32)
        alw = _NO_IDS if always is None else np.ascontiguousarray(always, dtype=np.uint32)
        nv = vx.shape[0]
        if self._offsets.shape[0] < nv + 1:
            self._offsets = np.zeros(nv + 1, dtype=np.int64)
        while True:
            total = visible_ids(
                vx, vy, vr, own, self._cell_x, self._cell_y, self._cell_ids, self.x0, self.y0, self.inv_cx,
                self.inv_cy, np.int64(self.nx), np.int64(self.ny), self.cell_start, alw, self._offsets, self._out,
                self._tmp,
            )  # fmt: skip
            if total >= 0:
                return self._offsets[: nv + 1], self._out[:total]
            self._out = np.zeros(2 * self._out.shape[0], dtype=np.uint32)
            self._tmp = np.zeros_like(self._out)


def warmup() -> None:
    """Compile (or load) the AOI kernels."""
    g = AoiGrid(8, (0.0, 0.0, 10.0, 10.0), 2.0)
    x = np.linspace(0.0, 10.0, 8)
    alive = np.ones(8, dtype=np.uint8)
    g.build(x, x, alive)
    g.order(np.arange(1, 9, dtype=np.uint32))
    g.query(
        np.array([1.0]),
        np.array([1.0]),
        np.array([3.0]),
        np.array([1], dtype=np.uint32),
        np.array([2], dtype=np.uint32),
    )
