"""Movement kernels of both games, on raw arrays (in place).

``sim/reference.py`` holds numpy versions with the same signatures; both do the same float32
operations in the same order, so their results are bit-identical (tests check this).
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numba import njit

KIND_PLANET: Final = 0
KIND_DRONE: Final = 1
KIND_SHIP: Final = 2

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
def wander_move(
    x: np.ndarray,
    y: np.ndarray,
    vx: np.ndarray,
    vy: np.ndarray,
    alive: np.ndarray,
    is_player: np.ndarray,
    dt: np.float32,
    width: np.float32,
    height: np.float32,
) -> None:
    """Integrate live entities: NPCs reflect at the bounds, players are clamped to them."""
    for i in range(x.shape[0]):
        if alive[i] == 0:
            continue
        nx = x[i] + vx[i] * dt
        ny = y[i] + vy[i] * dt
        if is_player[i] == 0:
            nx, vx[i] = _reflect(nx, vx[i], width)
            ny, vy[i] = _reflect(ny, vy[i], height)
        x[i] = min(max(nx, _ZERO), width)
        y[i] = min(max(ny, _ZERO), height)


@njit(cache=True)
def startales_move(
    x: np.ndarray,
    y: np.ndarray,
    vx: np.ndarray,
    vy: np.ndarray,
    tx: np.ndarray,
    ty: np.ndarray,
    kind: np.ndarray,
    alive: np.ndarray,
    dt: np.float32,
    width: np.float32,
    height: np.float32,
    accel: np.float32,
    max_speed: np.float32,
) -> None:
    """Drones integrate and reflect; ships: v += thrust·accel·dt, |v| <= max_speed, clamp position."""
    ms2 = max_speed * max_speed
    for i in range(x.shape[0]):
        if alive[i] == 0:
            continue
        k = kind[i]
        if k == KIND_DRONE:
            nx, vx[i] = _reflect(x[i] + vx[i] * dt, vx[i], width)
            ny, vy[i] = _reflect(y[i] + vy[i] * dt, vy[i], height)
        elif k == KIND_SHIP:
            nvx = vx[i] + (tx[i] * accel) * dt
            nvy = vy[i] + (ty[i] * accel) * dt
            sp2 = nvx * nvx + nvy * nvy
            if sp2 > ms2:
                s = max_speed / np.sqrt(sp2)
                nvx = nvx * s
                nvy = nvy * s
            vx[i] = nvx
            vy[i] = nvy
            nx = x[i] + nvx * dt
            ny = y[i] + nvy * dt
        else:
            continue
        x[i] = min(max(nx, _ZERO), width)
        y[i] = min(max(ny, _ZERO), height)
