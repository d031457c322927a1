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
def wander_player_step(
    x: np.float32, y: np.float32, vx: np.float32, vy: np.float32, dt: np.float32, width: np.float32, height: np.float32
) -> tuple[np.float32, np.float32]:
    """One wander player step: position += velocity·dt, clamped to the world (velocity unchanged).

    The single rule shared by `wander_move` and the client predictor (netcode/prediction.py).
    """
    nx = x + vx * dt
    ny = y + vy * dt
    return min(max(nx, _ZERO), width), min(max(ny, _ZERO), height)


@njit(cache=True)
def ship_step(
    x: np.float32,
    y: np.float32,
    vx: np.float32,
    vy: np.float32,
    tx: np.float32,
    ty: np.float32,
    dt: np.float32,
    width: np.float32,
    height: np.float32,
    accel: np.float32,
    max_speed: np.float32,
) -> tuple[np.float32, np.float32, np.float32, np.float32]:
    """One startales ship step: v += thrust·accel·dt, |v| <= max_speed, x += v·dt, clamp x to the world.

    Returns (x, y, vx, vy). The single rule shared by `startales_move` and the client predictor
    (netcode/prediction.py), so the two cannot drift apart.
    """
    nvx = vx + (tx * accel) * dt
    nvy = vy + (ty * accel) * dt
    sp2 = nvx * nvx + nvy * nvy
    if sp2 > max_speed * max_speed:
        s = max_speed / np.sqrt(sp2)
        nvx = nvx * s
        nvy = nvy * s
    nx = x + nvx * dt
    ny = y + nvy * dt
    return min(max(nx, _ZERO), width), min(max(ny, _ZERO), height), nvx, nvy


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
        if is_player[i] != 0:
            x[i], y[i] = wander_player_step(x[i], y[i], vx[i], vy[i], dt, width, height)
            continue
        nx, vx[i] = _reflect(x[i] + vx[i] * dt, vx[i], width)
        ny, vy[i] = _reflect(y[i] + vy[i] * dt, vy[i], height)
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
    for i in range(x.shape[0]):
        if alive[i] == 0:
            continue
        k = kind[i]
        if k == KIND_DRONE:
            nx, vx[i] = _reflect(x[i] + vx[i] * dt, vx[i], width)
            ny, vy[i] = _reflect(y[i] + vy[i] * dt, vy[i], height)
        elif k == KIND_SHIP:
            x[i], y[i], vx[i], vy[i] = ship_step(
                x[i], y[i], vx[i], vy[i], tx[i], ty[i], dt, width, height, accel, max_speed
            )
            continue
        else:
            continue
        x[i] = min(max(nx, _ZERO), width)
        y[i] = min(max(ny, _ZERO), height)
