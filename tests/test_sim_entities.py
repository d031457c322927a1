import numpy as np
import pytest

from sim.entities import MAX_GEN, EntityTable, TableFullError, add_entity_arrays, id_gen, id_slot, make_id, resolve
from sim.statehash import state_hash
from sim.world import World


def _table(capacity: int = 8) -> tuple[World, EntityTable]:
    world = World(capacity, seed=7)
    add_entity_arrays(world)
    return world, EntityTable(world)


def test_id_helpers_roundtrip() -> None:
    eid = make_id(123, 45)
    assert eid == (45 << 20) | 123
    assert id_slot(eid) == 123 and id_gen(eid) == 45
    assert make_id((1 << 20) - 1, MAX_GEN) == 0xFFFFFFFF


def test_spawn_lowest_free_slot_and_stale_id_never_resolves() -> None:
    world, table = _table()
    a, b, c = table.spawn(), table.spawn(), table.spawn()
    assert [table.slot_of(e) for e in (a, b, c)] == [0, 1, 2]
    assert table.despawn(b)
    assert table.slot_of(b) == -1
    assert not table.despawn(b)  # stale: refused
    b2 = table.spawn()
    assert table.slot_of(b2) == 1 and b2 != b  # same slot, new generation
    assert table.slot_of(b) == -1
    assert resolve(np.uint32(b), world.arrays["alive"], world.arrays["generation"]) == -1
    assert resolve(np.uint32(b2), world.arrays["alive"], world.arrays["generation"]) == 1
    assert not table.despawn(b)  # a stale id cannot kill the new occupant
    assert table.slot_of(b2) == 1
    assert world.spawn_counter == 4


def test_resolve_rejects_malformed_ids() -> None:
    world, table = _table()
    table.spawn()
    alive, gen = world.arrays["alive"], world.arrays["generation"]
    assert resolve(np.uint32(0), alive, gen) == -1  # generation 0 is never issued
    assert resolve(np.uint32(make_id(100, 1)), alive, gen) == -1  # slot beyond capacity
    assert table.slot_of(int(make_id(100, 1))) == -1
    assert table.slot_of(-1) == -1


def test_generation_exhaustion_retires_slot() -> None:
    world, table = _table(capacity=2)
    world.arrays["generation"][0] = MAX_GEN - 1
    last = table.spawn()
    assert table.slot_of(last) == 0 and id_gen(last) == MAX_GEN
    table.despawn(last)
    nxt = table.spawn()
    assert table.slot_of(nxt) == 1  # slot 0 is retired
    table.despawn(nxt)
    assert table.slot_of(table.spawn()) == 1
    with pytest.raises(TableFullError):
        table.spawn()
    assert table.slot_of(last) == -1


def test_spawn_range_and_spawn_many() -> None:
    _, table = _table(capacity=10)
    ids = table.spawn_many(3, 2, 6)
    assert [table.slot_of(int(e)) for e in ids] == [2, 3, 4]
    assert table.slot_of(table.spawn(2, 6)) == 5
    with pytest.raises(TableFullError):
        table.spawn(2, 6)
    with pytest.raises(TableFullError):
        table.spawn_many(5, 6, 10)


def test_world_bytes_roundtrip_preserves_hash() -> None:
    from sim.registry import make_game

    game = make_game("startales", {"planets": 6, "drones": 20, "max_players": 4})
    world = game.create_world(99)
    game.join(world)
    blob = world.to_bytes()
    back = World.from_bytes(blob)
    assert back.names() == world.names()
    assert back.tick == world.tick and back.seed == world.seed == 99 and back.capacity == world.capacity
    assert state_hash(back) == state_hash(world)
    cp = world.copy()
    assert state_hash(cp) == state_hash(world)
    cp.arrays["x"][0] += 1
    assert state_hash(cp) != state_hash(world)


def test_world_seed_full_u64_range() -> None:
    seed = (1 << 64) - 5
    w = World(4, seed)
    assert w.seed == seed
    assert World.from_bytes(w.to_bytes()).seed == seed
