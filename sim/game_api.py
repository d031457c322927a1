"""The game API: a game is a subclass of `Game` that declares its parts (sim/spec.py) and its systems.

Everything else is derived from the declaration: the world's arrays, the replicated record and its
quantization, the input batch (and so the session's range checks and the journal's layout), the
welcome's constants and `spec`, the player movement (server and client predictor), the warm-up,
the state hash. A game overrides only the hooks it needs: `on_create` (place what the seed
generates), `on_join`, `on_leave`, `restore_progress`, `derive` (extra parameters).

Systems are numba kernels called once per tick in order, each with its arguments bound by
parameter name: a component, player field or table of the world (``x``, ``bal_metal``), a
parameter (a constant, a config value, ``dt``, ``player_lo``, ``max_rewind`` or one from `derive`),
or one of the engine's names:

    inp    the tick's inputs (sim/inputs.py): columns by name, `slot`, `accepted`, `n`, `now`; the
           shared input rules ran before the game's input system (sim/validate.py)
    ev     the event buffer (sim/events.py emit);  vio  the violation buffer (sim/violations.py)
    hist   the lag-compensation ring (sim/history.py), for games that declare `lag`
    now    the tick being stepped (int64);  meta  the world's scalars;  seed  the campaign seed

`bind(kernel, speed="drone_speed")` binds a parameter to another name. See docs/writing-a-game.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import numpy as np

from sim.entities import MAX_CAPACITY, SLOT_MASK, EntityTable, add_entity_arrays, ids_of
from sim.events import SHARED_EVENTS, EventBuffer
from sim.history import add_history, hist_view, history_rows, record_history
from sim.inputs import InputBatch
from sim.movement import move_thrust, move_velocity
from sim.pacing import add_pace, pace_limits, reset_pace
from sim.rng import STREAM_SPAWN_X, STREAM_SPAWN_Y, uniform_f64
from sim.spec import (
    MOVE_PLAYERS,
    Component,
    ConfigSpec,
    Draw,
    Fixed,
    Input,
    LagComp,
    Move,
    Player,
    Table,
    Thrust,
    Velocity,
    read_config,
    resolve,
)
from sim.statehash import state_hash
from sim.validate import admit_inputs, apply_inputs
from sim.world import META_NPC_HI, META_NPC_LO, META_PLAYER_LO, META_TICK, World

ENGINE_NAMES: Final = frozenset({"inp", "ev", "vio", "hist", "now", "meta", "seed"})
BASE_CONFIG: Final[ConfigSpec] = {"tick_rate": (60, 1, 1000), "max_players": (64, 1, MAX_CAPACITY // 2)}
_INP, _NOW, _N = 0, 1, 2  # the arguments that change every tick


@dataclass(frozen=True)
class Bound:
    """A system with some parameters bound to other names (`bind`)."""

    kernel: Any
    names: Mapping[str, str]


def bind(kernel: Any, **names: str) -> Bound:
    """`kernel` with parameter p bound to the world or parameter name names[p]."""
    return Bound(kernel, names)


def _entry_point(kernel: Any, args: list[Any]) -> Any:
    """The compiled entry point of `kernel` for these arguments' types, or the kernel itself.

    A numba dispatcher types every argument on every call before it picks the compiled code; for
    named tuples that runs in Python and costs microseconds per call. A system's arguments keep
    their types for the life of its binding (the same arrays, typed scalars, an input tuple of the
    same columns), so the code picked at the first call is the code of every later call."""
    try:
        return kernel.overloads[tuple(kernel.typeof_pyval(a) for a in args)].entry_point
    except (AttributeError, KeyError, TypeError):
        return kernel


def _params_of(kernel: Any) -> tuple[str, ...]:
    fn = getattr(kernel, "py_func", kernel)
    code = fn.__code__
    return tuple(code.co_varnames[: code.co_argcount])


def _typed(v: object) -> Any:
    if isinstance(v, bool | np.bool_):
        return np.int64(v)
    if isinstance(v, int | np.integer):
        return np.int64(v)
    if isinstance(v, float | np.floating):
        return np.float32(v)
    return v


class Game:
    """The base of every game. See the module docstring and docs/writing-a-game.md."""

    # -- what a game declares ---------------------------------------------------------------------
    name: ClassVar[str] = ""
    components: ClassVar[tuple[Component, ...]] = ()  # fields of every entity
    players: ClassVar[tuple[Player, ...]] = ()  # fields of every player slot
    tables: ClassVar[tuple[Table, ...]] = ()  # game-wide arrays
    inputs: ClassVar[tuple[Input, ...]] = ()  # what a client may send each tick
    config: ClassVar[ConfigSpec] = {}  # key -> (default, lo, hi); tick_rate and max_players are added
    constants: ClassVar[Mapping[str, float | int]] = {}  # parameters, sent in the welcome
    statics: ClassVar[int | str] = 0  # entities in slots [0, statics) (a number or a config key)
    npcs: ClassVar[int | str] = 0  # entities in slots [statics, statics + npcs)
    view_radius: ClassVar[float] = 0.0  # interest management radius (0: the whole world)
    relevant: ClassVar[tuple[str, int] | None] = None  # (component, value): seen by every client
    move: ClassVar[Move | None] = None  # the players' movement rule
    lag: ClassVar[LagComp | None] = None  # lag compensation
    on_inputs: ClassVar[Any] = None  # the input system (default: the shared rules and the move)
    systems: ClassVar[tuple[Any, ...]] = ()  # kernels (or `bind(...)`, MOVE_PLAYERS), in order
    events: ClassVar[Mapping[int, str]] = {}  # the game's event kinds (4 and up) by name
    actions: ClassVar[Mapping[int, str]] = {}  # named values of the input "action", if any
    draw: ClassVar[Draw] = Draw()
    brain: ClassVar[type | None] = None  # the bot brain (engine/tools/bots.py); None: a generic one
    resources: ClassVar[tuple[str, ...]] = ()  # player fields that are balances (EV_BALANCE's id)
    durable: ClassVar[tuple[str, ...]] = ()  # player fields a returning player gets back
    warm_config: ClassVar[Mapping[str, int]] = {}  # a small config for the warm-up

    # -- derived ----------------------------------------------------------------------------------
    def __init__(self, config: Mapping[str, object] | None = None) -> None:
        cls = type(self)
        if not cls.name:
            raise TypeError(f"{cls.__name__}: a game needs a name")
        self.cfg = read_config(config, {**BASE_CONFIG, **cls.config}, cls.name)
        self.tick_rate = self.cfg["tick_rate"]
        self.max_players = self.cfg["max_players"]
        self.npc_lo = self._count(cls.statics)
        self.npc_hi = self.npc_lo + self._count(cls.npcs)
        self.player_lo = self.npc_hi
        self.capacity = self.player_lo + self.max_players
        if self.capacity > MAX_CAPACITY:
            raise ValueError(f"{cls.name}: capacity {self.capacity} > {MAX_CAPACITY}")
        self.max_rewind = math.ceil(cls.lag.max_rewind_s * self.tick_rate - 1e-9) if cls.lag else 0
        self.history_rows = history_rows(self.tick_rate, self.max_rewind) if cls.lag else 0
        params: dict[str, Any] = {k: _typed(v) for k, v in cls.constants.items()}
        params.update({k: np.int64(v) for k, v in self.cfg.items()})
        params.update(
            dt=np.float32(1.0 / self.tick_rate),
            player_lo=np.int64(self.player_lo),
            npc_lo=np.int64(self.npc_lo),
            npc_hi=np.int64(self.npc_hi),
            max_rewind=np.int64(self.max_rewind),
        )
        params.update({k: _typed(v) for k, v in self.derive(self.cfg).items()})
        self.params = params
        self.record_dtype = np.dtype(
            [("id", "<u4")] + [(c.name, np.dtype(c.dtype).newbyteorder("<")) for c in self._replicated()]
        )
        self._check()
        self._bindings: dict[tuple[int, int, int], tuple[tuple[object, ...], list[Any]]] = {}

    def _count(self, ref: int | str) -> int:
        return self.cfg[ref] if isinstance(ref, str) else int(ref)

    def _replicated(self) -> list[Component]:
        return [c for c in self.components if c.replicate is not None]

    def _check(self) -> None:
        names = [c.name for c in self.components] + [p.name for p in self.players] + [t.name for t in self.tables]
        taken = {"alive", "generation", "is_player", "last_seq", "fp_pace", "meta", "hist_x", "hist_y",
                 "hist_tick", "hist_id", "hist_since"}  # fmt: skip
        for n in names:
            if n in taken or n in ENGINE_NAMES or names.count(n) > 1:
                raise ValueError(f"{self.name}: field name {n!r} is the engine's or repeated")
        need = {"x", "y", "vx", "vy"} if self.move else {"x", "y"} if self.lag else set()
        if not need <= set(names):
            raise ValueError(f"{self.name}: its move/lag declaration needs components {sorted(need)}")
        keys = [i.key for i in self.inputs]
        if len(set(keys)) != len(keys) or {"t", "s", "ct", "ack"} & set(keys):
            raise ValueError(f"{self.name}: input keys repeat or take one of t, s, ct, ack")
        if self.move and not set(self.move.keys) <= {i.name for i in self.inputs if i.type == "f32"}:
            raise ValueError(f"{self.name}: move keys must be f32 inputs")

    # -- hooks a game may override ----------------------------------------------------------------
    def derive(self, cfg: Mapping[str, int]) -> Mapping[str, Any]:
        """Extra parameters computed from the config (typed scalars or arrays)."""
        return {}

    def on_create(self, world: World) -> None:
        """Campaign creation: place the statics and NPCs (already spawned) from `world.seed`."""

    def on_join(self, world: World, slot: int) -> None:
        """A player ship spawned in `slot` (its fields are at their defaults): place it."""
        a = world.arrays
        if "x" in a and "width" in self.params and "height" in self.params:
            a["x"][slot], a["y"][slot] = self.spawn_point(world)

    def on_leave(self, world: World, slot: int) -> None:
        """The player ship in `slot` is about to leave the world."""

    def spawn_point(self, world: World) -> tuple[np.float32, np.float32]:
        """A uniform position over [0, width] × [0, height], keyed on the spawn counter."""
        k = world.spawn_counter
        w, h = float(self.params["width"]), float(self.params["height"])
        x = np.float32(uniform_f64(1, world.seed, STREAM_SPAWN_X, k)[0] * w)
        y = np.float32(uniform_f64(1, world.seed, STREAM_SPAWN_Y, k)[0] * h)
        return x, y

    def progress(self, world: World, slot: int) -> dict[str, Any]:
        """A player's durable progress (persisted by the engine): its resources and durable fields."""
        a, p = world.arrays, slot - self.player_lo
        return {
            "resources": {str(r): int(a[f][p]) for r, f in enumerate(self.resources)},
            **{f: a[f][p].item() for f in self.durable},
        }

    def restore_progress(self, world: World, eid: int, progress: Mapping[str, object]) -> None:
        """Give a fresh ship a returning player's progress; malformed values are ignored."""
        slot = EntityTable(world).slot_of(eid)
        if slot < 0:
            return
        a, p = world.arrays, slot - self.player_lo
        res = progress.get("resources")
        if isinstance(res, Mapping):
            for r, f in enumerate(self.resources):
                v = res.get(str(r), res.get(r, 0))
                if isinstance(v, int) and 0 <= v < 2**62:
                    a[f][p] = v
        for f in self.durable:
            v = progress.get(f)
            if isinstance(v, int) and 0 <= v < 2**32:
                a[f][p] = v
        pos = progress.get("pos")  # [x, y, vx, vy] when saved: a reconnect is no teleport
        if (
            self.move is not None
            and isinstance(pos, list)
            and len(pos) == 4
            and all(isinstance(v, float) and math.isfinite(v) for v in pos)
        ):
            bounds, _ = self._move()
            x0, y0, x1, y1 = (float(b) for b in bounds)
            vx, vy = pos[2], pos[3]
            speed, top = math.hypot(vx, vy), self._top_speed()
            if speed > top:  # never faster than the rules allow
                vx, vy = vx * top / speed, vy * top / speed
            a["x"][slot], a["y"][slot] = min(max(pos[0], x0), x1), min(max(pos[1], y0), y1)
            a["vx"][slot], a["vy"][slot] = vx, vy

    def _top_speed(self) -> float:
        """The fastest a player may move under the move binding."""
        m = self.move
        if isinstance(m, Thrust):
            return float(resolve(m.max_speed, self.params, "move max_speed"))
        assert m is not None
        _, scale = self._move()
        reach = {i.name: max(abs(i.lo), abs(i.hi)) for i in self.inputs}
        return float(scale) * math.hypot(reach[m.keys[0]], reach[m.keys[1]])

    # -- the world --------------------------------------------------------------------------------
    def create_world(self, seed: int) -> World:
        """Campaign creation from a seed."""
        world = World(self.capacity, seed)
        add_entity_arrays(world)
        for c in self.components:
            world.add(c.name, c.dtype, fill=c.default)
        if isinstance(self.move, Thrust):
            for n in ("tx", "ty"):
                if n not in world.arrays:
                    world.add(n, np.float32)
        for p in self.players:
            world.add(p.name, p.dtype, self.max_players, fill=p.default)
        for t in self.tables:
            world.add(t.name, t.dtype, int(resolve(t.length, self.params, t.name)), fill=t.fill)
        meta = world.meta
        meta[META_NPC_LO], meta[META_NPC_HI], meta[META_PLAYER_LO] = self.npc_lo, self.npc_hi, self.player_lo
        table = EntityTable(world)
        table.spawn_many(self.npc_lo, 0, self.npc_lo)
        table.spawn_many(self.npc_hi - self.npc_lo, self.npc_lo, self.npc_hi)
        add_pace(world)
        self.on_create(world)
        if self.lag is not None:
            lo, hi = self._lag_slots()
            add_history(world, lo, hi, self.history_rows)
        return world

    def _lag_slots(self) -> tuple[int, int]:
        assert self.lag is not None
        return (self.npc_lo, self.npc_hi) if self.lag.slots == "npcs" else (self.player_lo, self.capacity)

    def _reset(self, world: World, slot: int) -> None:
        a = world.arrays
        for c in self.components:
            a[c.name][slot] = c.default
        for n in ("tx", "ty", "is_player", "last_seq"):
            if n in a:
                a[n][slot] = 0
        p = slot - self.player_lo
        for f in self.players:
            a[f.name][p] = f.default

    def join(self, world: World) -> int:
        """Spawn a player ship; returns its entity id."""
        eid = EntityTable(world).spawn(self.player_lo, world.capacity)
        slot = eid & SLOT_MASK
        self._reset(world, slot)
        world.arrays["is_player"][slot] = 1
        reset_pace(world, slot)
        self.on_join(world, slot)
        return eid

    def leave(self, world: World, eid: int) -> None:
        """Despawn a player ship (a stale or non-player id is ignored)."""
        table = EntityTable(world)
        slot = table.slot_of(eid)
        if slot < 0 or not world.arrays["is_player"][slot]:
            return
        self.on_leave(world, slot)
        table.despawn(eid)
        self._reset(world, slot)

    def replicate(self, world: World, out: np.ndarray) -> int:
        """Fill `out` (record_dtype, len >= capacity) with every live entity; return the count."""
        a = world.arrays
        idx = np.flatnonzero(a["alive"])
        n = len(idx)
        if len(out) < n:
            raise ValueError(f"replicate: out holds {len(out)} records, {n} needed")
        out["id"][:n] = ids_of(a["generation"], idx)
        for c in self._replicated():
            out[c.name][:n] = a[c.name][idx]
        return n

    def always_relevant(self, world: World) -> np.ndarray | None:
        """Sorted ids every client sees whatever its view radius (the `relevant` declaration)."""
        if self.relevant is None:
            return None
        field, value = self.relevant
        a = world.arrays
        return np.sort(ids_of(a["generation"], np.flatnonzero((a["alive"] != 0) & (a[field] == value))))

    def state_hash(self, world: World) -> int:
        return state_hash(world)

    # -- the tick ---------------------------------------------------------------------------------
    def input_batch(self, capacity: int) -> InputBatch:
        return InputBatch(capacity, self.inputs)

    def event_buffer(self, capacity: int) -> EventBuffer:
        return EventBuffer(capacity)

    def step(self, world: World, inputs: InputBatch, events: EventBuffer) -> None:
        """One tick: the input system, the systems in order, tick + 1, the lag-compensation ring."""
        statics, calls = self._binding(world, inputs, events)
        meta = statics[0]
        now = meta[META_TICK]
        inp = inputs.view(now)
        n = np.int64(inputs.n)
        for call in calls:
            fn, args, dyn, first = call
            for pos, kind in dyn:
                args[pos] = inp if kind == _INP else now if kind == _NOW else n
            fn(*args)
            if first:  # the first call of this binding: from now on, its compiled entry point
                call[0], call[3] = _entry_point(fn, args), False
        meta[META_TICK] = now + 1
        if self.lag is not None:
            a = world.arrays
            h = statics[1]
            record_history(now + 1, h.lo, a["alive"], a["generation"], a["x"], a["y"], h.x, h.y, h.tick, h.id, h.since)

    def _binding(self, world: World, inputs: InputBatch, events: EventBuffer) -> tuple[tuple[Any, ...], list[Any]]:
        key = (id(world), id(inputs), id(events))
        hit = self._bindings.get(key)
        if hit is not None and hit[0][2] is world and hit[0][3] is inputs and hit[0][4] is events:
            return hit
        if len(self._bindings) > 4:
            self._bindings.clear()
        a = world.arrays
        hist = hist_view(world, self._lag_slots()[0]) if self.lag is not None else None
        engine: dict[str, Any] = {
            "ev": events.view,
            "vio": events.violations.view,
            "hist": hist,
            "meta": a["meta"],
            "seed": np.uint64(world.seed),
        }
        admit, apply = self._input_passes(world, inputs, events)
        calls: list[Any] = [admit]
        on_inputs = type(self).on_inputs  # (read on the class: a kernel there is not a bound method)
        systems = [*([on_inputs] if on_inputs is not None else []), apply, *self.systems]
        if MOVE_PLAYERS not in systems:
            systems.insert(systems.index(apply) + 1, MOVE_PLAYERS)
        for system in systems:
            if system is apply:
                calls.append(apply)
                continue
            if system is MOVE_PLAYERS:
                if self.move is not None:
                    calls.append(self._move_call(world))
                continue
            kernel, names = (system.kernel, system.names) if isinstance(system, Bound) else (system, {})
            args: list[Any] = []
            dyn: list[tuple[int, int]] = []
            for p in _params_of(kernel):
                name = names.get(p, p)
                if name == "inp" or name == "now":
                    dyn.append((len(args), _INP if name == "inp" else _NOW))
                    args.append(None)
                elif name in engine:
                    if engine[name] is None:
                        raise ValueError(f"{self.name}: {kernel} takes {name!r}, which needs a `lag` declaration")
                    args.append(engine[name])
                elif name in a:
                    args.append(a[name])
                elif name in self.params:
                    args.append(self.params[name])
                else:
                    raise ValueError(f"{self.name}: {kernel} parameter {p!r}: no field, parameter or engine name")
            calls.append([kernel, args, dyn, True])
        entry = ((a["meta"], hist, world, inputs, events), calls)
        self._bindings[key] = entry
        return entry

    def _move(self) -> tuple[np.ndarray, np.float32]:
        """The move binding's bounds (float32 [x0, y0, x1, y1]) and input scale (speed, or 1 for thrust)."""
        m = self.move
        assert m is not None
        bounds = np.array([resolve(b, self.params, "move bounds") for b in m.bounds], dtype=np.float32)
        scale = np.float32(resolve(m.speed, self.params, "move speed")) if isinstance(m, Velocity) else np.float32(1)
        return bounds, scale

    def _move_call(self, world: World) -> list[Any]:
        a, m = world.arrays, self.move
        bounds, _ = self._move()
        lo, dt = np.int64(self.player_lo), self.params["dt"]
        if isinstance(m, Thrust):
            accel = np.float32(resolve(m.accel, self.params, "move accel"))
            top = np.float32(resolve(m.max_speed, self.params, "move max_speed"))
            args = [a["x"], a["y"], a["vx"], a["vy"], a["tx"], a["ty"], a["alive"], lo, dt, bounds, accel, top]
            return [move_thrust, args, [], True]
        return [move_velocity, [a["x"], a["y"], a["vx"], a["vy"], a["alive"], lo, dt, bounds], [], True]

    def _input_passes(self, world: World, inputs: InputBatch, events: EventBuffer) -> tuple[list[Any], list[Any]]:
        """The calls of the shared input rules (before the game's input system) and of applying the
        accepted inputs (after it): sim/validate.py."""
        a, m, cols = world.arrays, self.move, inputs.columns
        burst, margin = pace_limits(self.tick_rate)
        if m is None:
            mx = my = np.zeros(inputs.capacity, dtype=np.float32)
            ix, iy, scale = np.zeros(1, np.float32), np.zeros(1, np.float32), np.float32(0)
        else:
            mx, my = cols[m.keys[0]], cols[m.keys[1]]
            ix, iy = (a["tx"], a["ty"]) if isinstance(m, Thrust) else (a["vx"], a["vy"])
            scale = self._move()[1]
        seen_seq, seen_tick = np.zeros(world.capacity, np.int64), np.full(world.capacity, -1, np.int64)
        admit = [admit_inputs, [None, None, cols["eid"], cols["seq"], cols["client_tick"], mx, my, inputs.slot,
                                inputs.accepted, a["alive"], a["generation"], a["is_player"], a["last_seq"], seen_seq,
                                seen_tick, a["fp_pace"], np.int64(burst), np.int64(margin), events.view,
                                events.violations.view], [(0, _N), (1, _NOW)], True]  # fmt: skip
        apply = [apply_inputs, [None, cols["seq"], mx, my, inputs.slot, inputs.accepted, a["last_seq"], ix, iy, scale],
                 [(0, _N)], True]  # fmt: skip
        return admit, apply

    # -- what the engine and clients are told -----------------------------------------------------
    def welcome_constants(self) -> dict[str, float | int]:
        """The welcome's `world`: the constants, the config and the lag-compensation limits."""
        out: dict[str, float | int] = {**self.constants, **self.cfg}
        if self.lag is not None:
            out.update(max_rewind_ticks=self.max_rewind, history_ticks=self.history_rows)
        return out

    def replicated_fields(self) -> list[tuple[str, str, float, float, float]]:
        """(name, "fixed" | "int", lo, hi, step) of every replicated component, in record order."""
        out = []
        for c in self._replicated():
            q = c.replicate
            assert q is not None
            lo, hi = resolve(q.lo, self.params, c.name), resolve(q.hi, self.params, c.name)
            kind, step = ("fixed", float(q.step)) if isinstance(q, Fixed) else ("int", 1.0)
            out.append((c.name, kind, lo, hi, step))
        return out

    def wire_spec(self) -> dict[str, Any]:
        """The welcome's `spec` (docs/protocol.md): inputs, move binding, events, draw hints, actions."""
        move: dict[str, Any] = {"rule": "none"}
        if self.move is not None:
            m = self.move
            bounds, _ = self._move()
            keys = {i.name: i.key for i in self.inputs}
            move = {"rule": m.rule, "in": [keys[m.keys[0]], keys[m.keys[1]]], "bounds": [float(b) for b in bounds]}
            if isinstance(m, Velocity):
                move["speed"] = resolve(m.speed, self.params, "speed")
            else:
                move["accel"] = resolve(m.accel, self.params, "accel")
                move["max_speed"] = resolve(m.max_speed, self.params, "max_speed")
        spec: dict[str, Any] = {
            "inputs": [[i.key, i.type, *((float(i.lo), float(i.hi)) if i.type == "f32" else (int(i.lo), int(i.hi)))]
                       for i in self.inputs],
            "move": move,
            "events": {str(k): v for k, v in sorted({**SHARED_EVENTS, **self.events}.items())},
            "draw": self.draw.wire(),
        }
        if self.actions:
            spec["actions"] = {str(k): v for k, v in sorted(self.actions.items())}
        return spec

    def warmup(self) -> None:
        """Compile (or load) every kernel this game runs, on a tiny world of it."""
        from sim.warm import exercise

        exercise(type(self)({**self.warm_config, "tick_rate": self.tick_rate}))

