"""Arena: a small top-down shooter, written only against the public game API (docs/writing-a-game.md).

Ships thrust around an 800×800 arena with 100 health and 8 ammo (one back every half second). FIRE
(action 1) shoots along the aim (ax, ay): at most one shot per FIRE_PERIOD on average (bursts of 3
absorb network jitter), one ammo each. A shot naming a target (``g``, the target's id) is a hit
claim, resolved with lag compensation: the server rewinds both ships to the tick the client
displayed (``ct``, within the connection's rewind bound) and checks the target was on the line of
fire within range; a confirmed hit does DAMAGE at once. Any other shot is a projectile, an entity
that flies for SHOT_LIFE seconds and hits the first ship it touches. A ship at 0 health is out
for RESPAWN seconds and comes back elsewhere with full health and ammo; its killer scores, and
scores earn achievements. Validators: fire rate, ammo, and hit claims the history refutes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numba import njit

from sim.brain import BotView, Brain, unit
from sim.entities import make_id, resolve, spawn_slot
from sim.events import EV_ACHIEVEMENT, REF_BAD_ACTION, REF_NO_TARGET, REF_OUT_OF_REACH, REF_REWIND, emit
from sim.events import REF_UNAFFORDABLE as REF_NO_AMMO
from sim.game_api import Game
from sim.history import hist_at, rewind_ok
from sim.rng import rand_f64_01
from sim.spec import MOVE_PLAYERS, Component, Draw, Fixed, Input, LagComp, Player, Style, Thrust, Whole
from sim.validate import refuse
from sim.violations import V_ACTION_RATE, V_BAD_ACTION, V_IMPOSSIBLE_HIT, V_UNAFFORDABLE, violate

SHIP, SHOT = 0, 1  # kind
FIRE = 1  # action
EV_HIT, EV_KILL, EV_RESPAWN = 4, 5, 6  # to the shooter: (target, its hp); (victim, score); to the ship: (x, y)
SIZE, SPEED, SHOT_SPEED, SHOT_LIFE = 800.0, 160.0, 400.0, 0.75  # units, u/s, u/s, s
RANGE, HIT_RADIUS, SLACK = SHOT_SPEED * SHOT_LIFE, 14.0, 60.0  # a claim missing by > SLACK is impossible
DAMAGE, MAX_AMMO, AMMO_EVERY, FIRE_PERIOD, FIRE_BURST, RESPAWN = 25, 8, 0.5, 0.25, 3, 1.0
ACH_FIRST_BLOOD, ACH_MARKSMAN, MARKSMAN = 0, 1, 3  # achievements (bit ids), kills for marksman
_STREAM = 100  # rng stream of respawn points (sim/rng.py's streams are below 100)


@njit(cache=True)
def fire(inp: Any, ev: Any, vio: Any, hist: Any, meta: np.ndarray, alive: np.ndarray,
         generation: np.ndarray, kind: np.ndarray, x: np.ndarray, y: np.ndarray, vx: np.ndarray, vy: np.ndarray,
         tx: np.ndarray, ty: np.ndarray, hp: np.ndarray, ammo: np.ndarray, ttl: np.ndarray, owner: np.ndarray,
         dead_until: np.ndarray, fire_tat: np.ndarray, score: np.ndarray, achievements: np.ndarray, player_lo: int,
         max_rewind: int, fire_period: int, shot_ticks: int, respawn_ticks: int) -> None:  # fmt: skip
    """The input system (after the shared rules): FIRE's validators, hit claims and projectiles."""
    now = inp.now
    for i in range(inp.n):
        slot = inp.slot[i]
        if slot < 0:
            continue
        p, eid, act = slot - player_lo, inp.eid[i], inp.action[i]
        if dead_until[p] > now:  # out until respawn: it cannot know yet; its inputs do nothing (shots stops it)
            continue
        if act != 0 and act != FIRE:
            violate(vio, V_BAD_ACTION, eid, act, 0.0)
            refuse(i, inp, ev, REF_BAD_ACTION)
            continue
        if act == FIRE:
            tat = max(fire_tat[p], now)
            if tat - now > (FIRE_BURST - 1) * fire_period:
                violate(vio, V_ACTION_RATE, eid, (tat - now) / fire_period + 1.0, FIRE_BURST)
                refuse(i, inp, ev, REF_BAD_ACTION)
                continue
            if ammo[slot] == 0:
                violate(vio, V_UNAFFORDABLE, eid, 1, 0)
                refuse(i, inp, ev, REF_NO_AMMO)
                continue
            n = math.hypot(inp.ax[i], inp.ay[i])
            ux, uy = (inp.ax[i] / n, inp.ay[i] / n) if n > 0 else (1.0, 0.0)
            target, reason, ts = np.int64(inp.target[i]), 0, -1
            if target != 0:  # a hit claim, judged where both ships were at the displayed tick
                ts = resolve(target, alive, generation)
                if ts < 0 or kind[ts] != SHIP or ts == slot or dead_until[ts - player_lo] > now:
                    reason = REF_NO_TARGET  # gone or dead since: not evidence of anything
                elif not rewind_ok(i, inp, max_rewind):
                    reason = REF_REWIND
                else:
                    ok1, sx, sy = hist_at(hist, eid, inp.client_tick[i])
                    ok2, hx, hy = hist_at(hist, target, inp.client_tick[i])
                    along = (hx - sx) * ux + (hy - sy) * uy
                    miss = max(abs((hy - sy) * ux - (hx - sx) * uy), along - RANGE, -along)
                    if not (ok1 and ok2):
                        reason = REF_NO_TARGET
                    elif miss > HIT_RADIUS:
                        reason = REF_OUT_OF_REACH
                        if miss > HIT_RADIUS + SLACK:
                            violate(vio, V_IMPOSSIBLE_HIT, eid, miss, HIT_RADIUS + SLACK)
            if reason != 0:
                refuse(i, inp, ev, reason)
                continue
            fire_tat[p] = tat + fire_period
            ammo[slot] -= 1
            if target != 0:
                hit(slot, ts, now, ev, generation, vx, vy, tx, ty, hp, dead_until, score, achievements, player_lo,
                    respawn_ticks)  # fmt: skip
            else:
                s = spawn_slot(alive, generation, meta, 0, player_lo)
                if s >= 0:
                    kind[s], owner[s], ttl[s], hp[s] = SHOT, eid, shot_ticks, 0
                    x[s], y[s] = x[slot], y[slot]
                    vx[s], vy[s] = np.float32(ux * SHOT_SPEED), np.float32(uy * SHOT_SPEED)


@njit(cache=True)
def hit(shooter: int, ts: int, now: int, ev: Any, generation: np.ndarray, vx: np.ndarray, vy: np.ndarray,
        tx: np.ndarray, ty: np.ndarray, hp: np.ndarray, dead_until: np.ndarray, score: np.ndarray,
        achievements: np.ndarray, player_lo: int, respawn_ticks: int) -> None:  # fmt: skip
    """`shooter` hits the ship in slot `ts`: damage, and at 0 health a kill, a score, achievements."""
    me, victim = make_id(shooter, generation[shooter]), make_id(ts, generation[ts])
    hp[ts] = max(0, hp[ts] - DAMAGE)
    emit(ev, EV_HIT, me, victim, hp[ts])
    if hp[ts] > 0:
        return
    p = shooter - player_lo
    dead_until[ts - player_lo] = now + respawn_ticks
    vx[ts] = vy[ts] = tx[ts] = ty[ts] = 0.0
    score[p] += 1
    emit(ev, EV_KILL, me, victim, score[p])
    for ach, kills in ((ACH_FIRST_BLOOD, 1), (ACH_MARKSMAN, MARKSMAN)):
        if score[p] >= kills and achievements[p] & (1 << ach) == 0:
            achievements[p] |= 1 << ach
            emit(ev, EV_ACHIEVEMENT, me, ach, 0)


@njit(cache=True)
def shots(now: int, alive: np.ndarray, generation: np.ndarray, x: np.ndarray, y: np.ndarray, vx: np.ndarray,
          vy: np.ndarray, tx: np.ndarray, ty: np.ndarray, hp: np.ndarray, ttl: np.ndarray, owner: np.ndarray,
          dead_until: np.ndarray, score: np.ndarray, achievements: np.ndarray, ammo: np.ndarray, ammo_at: np.ndarray,
          ev: Any, player_lo: int, dt: np.float32, ammo_ticks: int, respawn_ticks: int,
          seed: np.uint64) -> None:  # fmt: skip
    """Projectiles fly and hit; the dead stay put, then respawn; ammo comes back."""
    for s in range(player_lo):
        if alive[s] == 0:
            continue
        x[s] += vx[s] * dt
        y[s] += vy[s] * dt
        ttl[s] -= 1
        shooter = resolve(owner[s], alive, generation)
        for t in range(player_lo, alive.shape[0]):
            near = (x[t] - x[s]) ** 2 + (y[t] - y[s]) ** 2 <= HIT_RADIUS * HIT_RADIUS
            if near and alive[t] and t != shooter and dead_until[t - player_lo] <= now and hp[t] > 0:
                if shooter >= 0:
                    hit(shooter, t, now, ev, generation, vx, vy, tx, ty, hp, dead_until, score, achievements,
                        player_lo, respawn_ticks)  # fmt: skip
                ttl[s] = 0
                break
        if ttl[s] <= 0 or not (0 <= x[s] <= SIZE and 0 <= y[s] <= SIZE):
            alive[s] = 0
    for t in range(player_lo, alive.shape[0]):
        p = t - player_lo
        if alive[t] == 0:
            continue
        if dead_until[p] > now:
            vx[t] = vy[t] = tx[t] = ty[t] = 0.0
        elif dead_until[p] > 0:
            dead_until[p] = 0
            hp[t], ammo[t] = 100, MAX_AMMO
            x[t] = np.float32(SIZE * rand_f64_01(seed, _STREAM, now, 2 * t))
            y[t] = np.float32(SIZE * rand_f64_01(seed, _STREAM, now, 2 * t + 1))
            emit(ev, EV_RESPAWN, make_id(t, generation[t]), int(x[t]), int(y[t]))
        if now >= ammo_at[p]:
            ammo_at[p] = now + ammo_ticks
            ammo[t] = min(MAX_AMMO, ammo[t] + 1)


class ArenaBrain(Brain):
    """Chase the nearest ship and fire at it: close up, claiming the hit (honest: only what its own
    view shows on the line of fire, at the tick it shows it), farther away a projectile. At most
    one shot per 0.4 s, with ammo to spare."""

    decode_all = True

    def start(self, n: int) -> None:
        self.last_shot = [-(10**9)] * n
        self.counts = {"shots": 0, "claims": 0}

    def next_input(self, i: int, view: BotView | None) -> dict[str, float | int]:
        if view is None:
            return super().next_input(i, view)
        e = view.entities
        mine, ships = e[e["id"] == view.player], e[(e["kind"] == SHIP) & (e["id"] != view.player) & (e["hp"] > 0)]
        if mine.size == 0 or mine["hp"][0] == 0 or ships.size == 0:
            return super().next_input(i, view)
        dx, dy = ships["x"] - mine["x"][0], ships["y"] - mine["y"][0]
        k = int(np.argmin(dx * dx + dy * dy))
        d = math.hypot(dx[k], dy[k])
        tx, ty = unit(float(dx[k]) / max(d, 1e-6), float(dy[k]) / max(d, 1e-6))
        out: dict[str, float | int] = {"dx": tx if d > 120 else -tx, "dy": ty if d > 120 else -ty, "ax": tx, "ay": ty}
        if d < RANGE * 0.9 and mine["ammo"][0] >= 3 and view.tick - self.last_shot[i] >= 24:
            self.last_shot[i] = view.tick
            claim = d < RANGE / 2  # a claim at the tick it shows (the input's client tick)
            out.update(a=FIRE, g=int(ships["id"][k]) if claim else 0)
            self.counts["shots"] += 1
            self.counts["claims"] += claim
        return out


class Arena(Game):
    name = "arena"
    components = (
        Component("kind", "u1", replicate=Whole(0, 1)),
        Component("x", "f4", replicate=Fixed(0, "width", 1 / 16)),
        Component("y", "f4", replicate=Fixed(0, "height", 1 / 16)),
        Component("vx", "f4", replicate=Fixed(-SHOT_SPEED, SHOT_SPEED, 1 / 32)),
        Component("vy", "f4", replicate=Fixed(-SHOT_SPEED, SHOT_SPEED, 1 / 32)),
        Component("hp", "u1", 100, replicate=Whole(0, 100)),
        Component("ammo", "u1", MAX_AMMO, replicate=Whole(0, MAX_AMMO)),
        Component("ttl", "i4"),
        Component("owner", "u4"),
    )
    players = (Player("dead_until", "i8"), Player("fire_tat", "i8"), Player("ammo_at", "i8"), Player("score", "i4"),
               Player("achievements", "u4"))  # fmt: skip
    inputs = (Input("dx"), Input("dy"), Input("ax"), Input("ay"), Input("action", "i32", 0, 255, key="a"),
              Input("target", "u32", 0, 2**32 - 1, key="g"))  # fmt: skip
    config = {"shots": (256, 1, 1 << 16), "max_players": (64, 1, 1024)}
    constants = {"width": SIZE, "height": SIZE, "speed": SPEED, "accel": 2 * SPEED, "shot_speed": SHOT_SPEED,
                 "hit_radius": HIT_RADIUS, "damage": DAMAGE, "max_ammo": MAX_AMMO}  # fmt: skip
    npcs = "shots"
    view_radius = 450.0
    move = Thrust(("dx", "dy"), accel="accel", max_speed="speed")
    lag = LagComp("players", 0.35)
    on_inputs = fire
    systems = (shots, MOVE_PLAYERS)
    events = {EV_HIT: "hit", EV_KILL: "kill", EV_RESPAWN: "respawn"}
    actions = {FIRE: "fire"}
    draw = Draw("kind", {SHIP: Style("ship", "#e0603a", 14.0, "ship"), SHOT: Style("circle", "#ffffff", 3.0, "")})
    brain = ArenaBrain
    durable = ("achievements",)
    warm_config = {"shots": 8, "max_players": 4}

    def derive(self, cfg: Mapping[str, int]) -> Mapping[str, Any]:
        rate = cfg["tick_rate"]
        return {"fire_period": round(FIRE_PERIOD * rate), "shot_ticks": round(SHOT_LIFE * rate),
                "ammo_ticks": round(AMMO_EVERY * rate), "respawn_ticks": round(RESPAWN * rate)}  # fmt: skip
