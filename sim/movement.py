"""Movement kernels: the engine's player-movement rules (sim/spec.py `Velocity`, `Thrust`) and NPC drift.

`velocity_step` and `thrust_step` are the single rules shared by the server's kernels and the
client predictor (netcode/prediction.py), so the two cannot drift apart. Scalars are cast to
float32 inside the kernels: the world is float32, whatever type a parameter arrives as.
`tests/reference.py` holds numpy twins doing the same float32 operations in the same order.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from sim.scalars import Float, Int

_ZERO = np.float32(0.0)


@njit(cache=True)
def _reflect(p: np.float32, v: np.float32, lim: np.float32) -> tuple[np.float32, np.float32]:
    """Mirror a coordinate that left [0, lim] back inside and flip its velocity component."""
    if p < _ZERO:
        return -p, -v
    if p > lim:
        return (lim + lim) - p, -v
    return p, v


@njit(cache=True)
def velocity_step(
    x: np.float32,
    y: np.float32,
    vx: np.float32,
    vy: np.float32,
    dt: np.float32,
    x0: np.float32,
    y0: np.float32,
    x1: np.float32,
    y1: np.float32,
) -> tuple[np.float32, np.float32]:
    """Position += velocity·dt, clamped to [x0, x1] × [y0, y1] (velocity unchanged)."""
    nx = x + vx * dt
    ny = y + vy * dt
    return min(max(nx, x0), x1), min(max(ny, y0), y1)


@njit(cache=True)
def thrust_step(
    x: np.float32,
    y: np.float32,
    vx: np.float32,
    vy: np.float32,
    tx: np.float32,
    ty: np.float32,
    dt: np.float32,
    x0: np.float32,
    y0: np.float32,
    x1: np.float32,
    y1: np.float32,
    accel: np.float32,
    max_speed: np.float32,
) -> tuple[np.float32, np.float32, np.float32, np.float32]:
    """v += thrust·accel·dt, |v| <= max_speed, x += v·dt, x clamped to the bounds; (x, y, vx, vy)."""
    nvx = vx + (tx * accel) * dt
    nvy = vy + (ty * accel) * dt
    sp2 = nvx * nvx + nvy * nvy
    if sp2 > max_speed * max_speed:
        s = max_speed / np.sqrt(sp2)
        nvx = nvx * s
        nvy = nvy * s
    nx = x + nvx * dt
    ny = y + nvy * dt
    return min(max(nx, x0), x1), min(max(ny, y0), y1), nvx, nvy


@njit(cache=True)
def move_velocity(
    x: np.ndarray,
    y: np.ndarray,
    vx: np.ndarray,
    vy: np.ndarray,
    alive: np.ndarray,
    lo: Int,
    dt: Float,
    bounds: np.ndarray,
) -> None:
    """Live entities of slots [lo, end): `velocity_step`."""
    d = np.float32(dt)
    x0, y0, x1, y1 = bounds[0], bounds[1], bounds[2], bounds[3]
    x, y, vx, vy, alive = x[lo:], y[lo:], vx[lo:], vy[lo:], alive[lo:]  # views: a loop from 0 vectorizes
    for i in range(x.shape[0]):
        if alive[i] != 0:
            x[i], y[i] = velocity_step(x[i], y[i], vx[i], vy[i], d, x0, y0, x1, y1)


@njit(cache=True)
def move_thrust(
    x: np.ndarray,
    y: np.ndarray,
    vx: np.ndarray,
    vy: np.ndarray,
    tx: np.ndarray,
    ty: np.ndarray,
    alive: np.ndarray,
    lo: Int,
    dt: Float,
    bounds: np.ndarray,
    accel: Float,
    max_speed: Float,
) -> None:
    """Live entities of slots [lo, end): `thrust_step` with their held thrust (tx, ty)."""
    d, a, m = np.float32(dt), np.float32(accel), np.float32(max_speed)
    x0, y0, x1, y1 = bounds[0], bounds[1], bounds[2], bounds[3]
    x, y, vx, vy, tx, ty, alive = x[lo:], y[lo:], vx[lo:], vy[lo:], tx[lo:], ty[lo:], alive[lo:]
    for i in range(x.shape[0]):
        if alive[i] != 0:
            x[i], y[i], vx[i], vy[i] = thrust_step(x[i], y[i], vx[i], vy[i], tx[i], ty[i], d, x0, y0, x1, y1, a, m)


@njit(cache=True)
def drift(
    x: np.ndarray,
    y: np.ndarray,
    vx: np.ndarray,
    vy: np.ndarray,
    alive: np.ndarray,
    npc_lo: Int,
    npc_hi: Int,
    dt: Float,
    width: Float,
    height: Float,
) -> None:
    """NPCs of slots [npc_lo, npc_hi) fly straight and bounce off the world's edges [0, w] × [0, h]."""
    d, w, h = np.float32(dt), np.float32(width), np.float32(height)
    x, y, vx, vy, alive = x[npc_lo:npc_hi], y[npc_lo:npc_hi], vx[npc_lo:npc_hi], vy[npc_lo:npc_hi], alive[npc_lo:npc_hi]
    for i in range(x.shape[0]):  # on views: a loop from 0 vectorizes
        if alive[i] == 0:
            continue
        nx, vx[i] = _reflect(x[i] + vx[i] * d, vx[i], w)
        ny, vy[i] = _reflect(y[i] + vy[i] * d, vy[i], h)
        x[i] = min(max(nx, _ZERO), w)
        y[i] = min(max(ny, _ZERO), h)
