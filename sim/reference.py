"""Plain numpy references of the movement kernels (tests and bench only, never the tick path).

Same signatures as ``sim.movement``; same float32 operations in the same order.
"""

from __future__ import annotations

import numpy as np

from sim.movement import KIND_DRONE, KIND_SHIP

_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)


def _reflect(p: np.ndarray, v: np.ndarray, lim: np.float32) -> tuple[np.ndarray, np.ndarray]:
    lo = p < _ZERO
    hi = p > lim
    p = np.where(lo, -p, np.where(hi, (lim + lim) - p, p))
    v = np.where(lo | hi, -v, v)
    return p, v


def _clamp(p: np.ndarray, lim: np.float32) -> np.ndarray:
    return np.minimum(np.maximum(p, _ZERO), lim)


def wander_move_ref(
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
    live = alive != 0
    npc = live & (is_player == 0)
    nx = x + vx * dt
    ny = y + vy * dt
    rx, rvx = _reflect(nx, vx, width)
    ry, rvy = _reflect(ny, vy, height)
    nx = np.where(npc, rx, nx)
    ny = np.where(npc, ry, ny)
    vx[:] = np.where(npc, rvx, vx)
    vy[:] = np.where(npc, rvy, vy)
    x[:] = np.where(live, _clamp(nx, width), x)
    y[:] = np.where(live, _clamp(ny, height), y)


def startales_move_ref(
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
    live = alive != 0
    drone = live & (kind == KIND_DRONE)
    ship = live & (kind == KIND_SHIP)
    # drones
    dx_, dvx = _reflect(x + vx * dt, vx, width)
    dy_, dvy = _reflect(y + vy * dt, vy, height)
    # ships
    nvx = vx + (tx * accel) * dt
    nvy = vy + (ty * accel) * dt
    sp2 = nvx * nvx + nvy * nvy
    over = sp2 > max_speed * max_speed
    s = np.full_like(sp2, _ONE)
    np.divide(max_speed, np.sqrt(sp2), out=s, where=over)
    nvx = np.where(over, nvx * s, nvx)
    nvy = np.where(over, nvy * s, nvy)
    sx = x + nvx * dt
    sy = y + nvy * dt
    new_x = np.where(drone, dx_, np.where(ship, sx, x))
    new_y = np.where(drone, dy_, np.where(ship, sy, y))
    moving = drone | ship
    vx[:] = np.where(drone, dvx, np.where(ship, nvx, vx))
    vy[:] = np.where(drone, dvy, np.where(ship, nvy, vy))
    x[:] = np.where(moving, _clamp(new_x, width), x)
    y[:] = np.where(moving, _clamp(new_y, height), y)
