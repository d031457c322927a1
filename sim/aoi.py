"""Interest management (area of interest): a uniform spatial grid and batched radius queries.

The grid is rebuilt every send by a counting sort over the entity slots (``grid_build``): cells
are about the view radius wide, entities outside the bounds are clamped into the edge cells (the
distance test always uses the true position, so clamping never loses a neighbour). Within a cell,
slots are in ascending order.

``aoi_query`` answers a batch of viewers at once into a CSR result: viewer ``v`` sees
``slots[offsets[v]:offsets[v + 1]]``, sorted by slot, always including its own slot (when that
slot is alive) and every live slot within its radius (``dx² + dy² <= r²``, float64).

Everything is arrays in, arrays out; ``AoiGrid`` only owns the buffers and grows the output.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
from numba import njit

from sim.scalars import Float, Int

MAX_CELLS_PER_AXIS: Final = 1024


@njit(cache=True)
def _cell(p: Float, lo: Float, inv: Float, n: Int) -> int:
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
        c = _cell(y[i], y0, inv_cy, ny) * nx + _cell(x[i], x0, inv_cx, nx)
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
def aoi_query(
    vx: np.ndarray,
    vy: np.ndarray,
    vr: np.ndarray,
    own: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    x0: Float,
    y0: Float,
    inv_cx: Float,
    inv_cy: Float,
    nx: Int,
    ny: Int,
    cell_start: np.ndarray,
    items: np.ndarray,
    cell_of: np.ndarray,
    offsets: np.ndarray,
    out: np.ndarray,
) -> int:
    """Visible slots of each viewer into CSR (offsets: int64[nv+1], out: int32[...]).

    vx, vy, vr: float64[nv] viewer position and radius; own: int64[nv] the viewer's own slot or -1.
    Returns the total written, or -1 when ``out`` is too small (grow it and call again).
    """
    nv = vx.shape[0]
    cap = out.shape[0]
    pos = 0
    offsets[0] = 0
    for v in range(nv):
        start = pos
        px = vx[v]
        py = vy[v]
        r = vr[v]
        me = own[v]
        if r >= 0.0 and px == px and py == py:
            r2 = r * r
            cx_lo = _cell(px - r, x0, inv_cx, nx)
            cx_hi = _cell(px + r, x0, inv_cx, nx)
            cy_lo = _cell(py - r, y0, inv_cy, ny)
            cy_hi = _cell(py + r, y0, inv_cy, ny)
            for cy in range(cy_lo, cy_hi + 1):
                for cx in range(cx_lo, cx_hi + 1):
                    c = cy * nx + cx
                    for t in range(cell_start[c], cell_start[c + 1]):
                        s = items[t]
                        if s == me:
                            continue
                        dx = x[s] - px
                        dy = y[s] - py
                        if dx * dx + dy * dy <= r2:
                            if pos >= cap:
                                return -1
                            out[pos] = s
                            pos += 1
        if me >= 0 and me < cell_of.shape[0] and cell_of[me] >= 0:
            if pos >= cap:
                return -1
            out[pos] = me
            pos += 1
        if pos - start > 1:
            out[start:pos] = np.sort(out[start:pos])
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
        self._out = np.zeros(max(1024, capacity), dtype=np.int32)
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

    def query(
        self, vx: np.ndarray, vy: np.ndarray, radius: np.ndarray, own: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """CSR (offsets int64[nv+1], slots int32[total]) of what each viewer sees (views, valid
        until the next query)."""
        vx = np.ascontiguousarray(vx, dtype=np.float64)
        vy = np.ascontiguousarray(vy, dtype=np.float64)
        vr = np.ascontiguousarray(np.broadcast_to(np.asarray(radius, dtype=np.float64), vx.shape))
        own = np.ascontiguousarray(own, dtype=np.int64)
        nv = vx.shape[0]
        if self._offsets.shape[0] < nv + 1:
            self._offsets = np.zeros(nv + 1, dtype=np.int64)
        while True:
            total = aoi_query(
                vx, vy, vr, own, self._x, self._y, self.x0, self.y0, self.inv_cx, self.inv_cy,
                np.int64(self.nx), np.int64(self.ny), self.cell_start, self.items, self.cell_of,
                self._offsets, self._out,
            )  # fmt: skip
            if total >= 0:
                return self._offsets[: nv + 1], self._out[:total]
            self._out = np.zeros(2 * self._out.shape[0], dtype=np.int32)


def warmup() -> None:
    """Compile (or load) the AOI kernels."""
    g = AoiGrid(8, (0.0, 0.0, 10.0, 10.0), 2.0)
    x = np.linspace(0.0, 10.0, 8)
    alive = np.ones(8, dtype=np.uint8)
    g.build(x, x, alive)
    g.query(np.array([1.0]), np.array([1.0]), np.array([3.0]), np.array([0]))
