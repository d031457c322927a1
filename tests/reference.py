"""Plain numpy references of the movement kernels (the tests' oracle; bench.tick times them too).

Same signatures as `sim.movement`; same float32 operations in the same order, so the results are
bit-identical (tests/test_sim_movement.py).
"""

from __future__ import annotations

import numpy as np

_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)


def _reflect(p: np.ndarray, v: np.ndarray, lim: np.float32) -> tuple[np.ndarray, np.ndarray]:
    lo = p < _ZERO
    hi = p > lim
    p = np.where(lo, -p, np.where(hi, (lim + lim) - p, p))
    v = np.where(lo | hi, -v, v)
    return p, v


def drift_ref(
    x: np.ndarray,
    y: np.ndarray,
    vx: np.ndarray,
    vy: np.ndarray,
    alive: np.ndarray,
    npc_lo: int,
    npc_hi: int,
    dt: float | np.floating,
    width: float | np.floating,
    height: float | np.floating,
) -> None:
    d, w, h = np.float32(dt), np.float32(width), np.float32(height)
    s = slice(npc_lo, npc_hi)
    live = alive[s] != 0
    nx, nvx = _reflect(x[s] + vx[s] * d, vx[s], w)
    ny, nvy = _reflect(y[s] + vy[s] * d, vy[s], h)
    vx[s] = np.where(live, nvx, vx[s])
    vy[s] = np.where(live, nvy, vy[s])
    x[s] = np.where(live, np.minimum(np.maximum(nx, _ZERO), w), x[s])
    y[s] = np.where(live, np.minimum(np.maximum(ny, _ZERO), h), y[s])


def move_velocity_ref(
    x: np.ndarray,
    y: np.ndarray,
    vx: np.ndarray,
    vy: np.ndarray,
    alive: np.ndarray,
    lo: int,
    dt: float | np.floating,
    bounds: np.ndarray,
) -> None:
    d = np.float32(dt)
    s = slice(lo, None)
    live = alive[s] != 0
    x[s] = np.where(live, np.minimum(np.maximum(x[s] + vx[s] * d, bounds[0]), bounds[2]), x[s])
    y[s] = np.where(live, np.minimum(np.maximum(y[s] + vy[s] * d, bounds[1]), bounds[3]), y[s])


def move_thrust_ref(
    x: np.ndarray,
    y: np.ndarray,
    vx: np.ndarray,
    vy: np.ndarray,
    tx: np.ndarray,
    ty: np.ndarray,
    alive: np.ndarray,
    lo: int,
    dt: float | np.floating,
    bounds: np.ndarray,
    accel: float | np.floating,
    max_speed: float | np.floating,
) -> None:
    d, a, m = np.float32(dt), np.float32(accel), np.float32(max_speed)
    s = slice(lo, None)
    live = alive[s] != 0
    nvx = vx[s] + (tx[s] * a) * d
    nvy = vy[s] + (ty[s] * a) * d
    sp2 = nvx * nvx + nvy * nvy
    over = sp2 > m * m
    k = np.full_like(sp2, _ONE)
    np.divide(m, np.sqrt(sp2), out=k, where=over)
    nvx = np.where(over, nvx * k, nvx)
    nvy = np.where(over, nvy * k, nvy)
    nx = np.minimum(np.maximum(x[s] + nvx * d, bounds[0]), bounds[2])
    ny = np.minimum(np.maximum(y[s] + nvy * d, bounds[1]), bounds[3])
    vx[s] = np.where(live, nvx, vx[s])
    vy[s] = np.where(live, nvy, vy[s])
    x[s] = np.where(live, nx, x[s])
    y[s] = np.where(live, ny, y[s])
