"""Counter-based, stateless RNG (splitmix64 mixing); every function is usable inside kernels.

``rand_u64(seed, stream, a, b)`` = mix(mix(mix(mix(seed) ^ stream) ^ a) ^ b). Kernels that draw
for many ``b`` (slots) with the same (seed, stream, a) hoist ``rand_key`` out of the loop and call
``rand_u64_k(key, b)``; both give the same numbers.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numba import njit

from sim.scalars import Float, Int

# streams (separate uses of the RNG)
STREAM_NPC_X: Final = 1
STREAM_NPC_Y: Final = 2
STREAM_NPC_HEADING: Final = 3
STREAM_NPC_TURN: Final = 4  # per tick: does the NPC turn?
STREAM_NPC_TURN_ANGLE: Final = 5  # per tick: its new heading
STREAM_SPAWN_X: Final = 6  # keyed on the spawn counter
STREAM_SPAWN_Y: Final = 7
STREAM_PLANET_X: Final = 8
STREAM_PLANET_Y: Final = 9
STREAM_PLANET_RES: Final = 10
STREAM_PLANET_DEPOSIT: Final = 11

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_S40 = np.uint64(40)
_F64_UNIT = 1.0 / 9007199254740992.0  # 2**-53
_F32_UNIT = np.float32(1.0 / 16777216.0)  # 2**-24


@njit(cache=True)
def splitmix64(x: Int) -> Int:
    z = np.uint64(x) + _GAMMA
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(cache=True)
def rand_key(seed: Int, stream: Int, a: Int) -> Int:
    return splitmix64(splitmix64(splitmix64(np.uint64(seed)) ^ np.uint64(stream)) ^ np.uint64(a))


@njit(cache=True)
def rand_u64_k(key: Int, b: Int) -> Int:
    return splitmix64(np.uint64(key) ^ np.uint64(b))


@njit(cache=True)
def rand_u64(seed: Int, stream: Int, a: Int, b: Int) -> Int:
    return rand_u64_k(rand_key(seed, stream, a), b)


@njit(cache=True)
def u64_to_f64_01(u: Int) -> Float:
    return np.float64(np.uint64(u) >> _S11) * _F64_UNIT


@njit(cache=True)
def u64_to_f32_01(u: Int) -> Float:
    return np.float32(np.uint64(u) >> _S40) * _F32_UNIT


@njit(cache=True)
def rand_f64_01(seed: Int, stream: Int, a: Int, b: Int) -> Float:
    """Uniform float64 in [0, 1) with 53 random bits."""
    return u64_to_f64_01(rand_u64(seed, stream, a, b))


@njit(cache=True)
def rand_f32_01(seed: Int, stream: Int, a: Int, b: Int) -> Float:
    """Uniform float32 in [0, 1) with 24 random bits."""
    return u64_to_f32_01(rand_u64(seed, stream, a, b))


@njit(cache=True)
def fill_f64_01(out: np.ndarray, seed: Int, stream: Int, a: Int) -> None:
    """out[i] = rand_f64_01(seed, stream, a, i) for every i (world generation, tests)."""
    key = rand_key(seed, stream, a)
    for i in range(out.shape[0]):
        out[i] = u64_to_f64_01(rand_u64_k(key, np.uint64(i)))


def uniform_f64(n: int, seed: int, stream: int, a: int = 0) -> np.ndarray:
    """n uniform draws in [0, 1): element i is rand_f64_01(seed, stream, a, i)."""
    out = np.empty(n, dtype=np.float64)
    fill_f64_01(out, np.uint64(seed & 0xFFFFFFFFFFFFFFFF), np.uint64(stream), np.uint64(a))
    return out
