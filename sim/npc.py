"""NPC behaviour shared by the games: random heading changes (numba)."""

from __future__ import annotations

import numpy as np
from numba import njit

from sim.rng import STREAM_NPC_TURN, STREAM_NPC_TURN_ANGLE, rand_f64_01, rand_key, rand_u64_k, u64_to_f64_01
from sim.scalars import Float
from sim.world import META_NPC_HI, META_NPC_LO, META_SEED, META_TICK

_TWO_PI = 2.0 * np.pi


@njit(cache=True)
def npc_turns(meta: np.ndarray, alive: np.ndarray, vx: np.ndarray, vy: np.ndarray, speed: Float, p_turn: Float) -> None:
    """Each live NPC in the meta's NPC range turns with probability p_turn to a uniform heading.

    Keyed by (seed, STREAM_NPC_TURN, tick, slot) and (seed, STREAM_NPC_TURN_ANGLE, tick, slot).
    """
    seed = np.uint64(meta[META_SEED])
    tick = np.uint64(meta[META_TICK])
    key = rand_key(seed, np.uint64(STREAM_NPC_TURN), tick)
    for s in range(meta[META_NPC_LO], meta[META_NPC_HI]):
        if alive[s] == 0:
            continue
        if u64_to_f64_01(rand_u64_k(key, np.uint64(s))) < p_turn:
            theta = _TWO_PI * rand_f64_01(seed, np.uint64(STREAM_NPC_TURN_ANGLE), tick, np.uint64(s))
            vx[s] = np.float32(speed * np.cos(theta))
            vy[s] = np.float32(speed * np.sin(theta))


def headings_to_velocity(u: np.ndarray, speed: float) -> tuple[np.ndarray, np.ndarray]:
    """Uniform draws in [0, 1) → (vx, vy) float32 of a heading 2πu at `speed` (world creation)."""
    theta = _TWO_PI * u
    return (speed * np.cos(theta)).astype(np.float32), (speed * np.sin(theta)).astype(np.float32)
