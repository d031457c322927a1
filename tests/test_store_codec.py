"""Journal record codec, format 3: round trip, the column mask, corruption detection, old formats."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from persistence.journal_codec import (
    FORMAT,
    JournalCorruptError,
    JournalFormatError,
    TickRecord,
    campaign_format_meta,
    campaign_layout,
    decode_tick,
    encode_tick,
    layout_from_json,
    layout_to_json,
    record_overhead,
)
from sim.registry import make_game

# The startales layout (eid, seq, client_tick, dx, dy, action, arg, arg2, arg3, txn, bound): 42 bytes.
LAYOUT = make_game("startales").input_batch(1).dtype


def sample_inputs(n: int, seed: int = 1, rare: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    arr = np.zeros(n, dtype=LAYOUT)
    arr["eid"] = rng.integers(1, 2**32, n, dtype=np.uint32)
    arr["seq"] = np.arange(n, dtype=np.uint32) + 7
    arr["client_tick"] = rng.integers(0, 2**32, n, dtype=np.uint32)
    arr["dx"] = rng.uniform(-1, 1, n).astype(np.float32)
    arr["dy"] = rng.uniform(-1, 1, n).astype(np.float32)
    arr["action"] = rng.integers(-(2**31), 2**31, n, dtype=np.int32)
    arr["arg"] = rng.integers(-(2**31), 2**31, n, dtype=np.int32)
    if rare:
        arr["arg3"], arr["txn"], arr["bound"] = 250, 0xFFFFFFFF, 9
    return arr


def test_layout_is_the_game_batch_packed() -> None:
    assert LAYOUT.names == ("eid", "seq", "client_tick", "dx", "dy", "action", "arg", "arg2", "arg3", "txn", "bound")
    assert LAYOUT.itemsize == 42 and LAYOUT.isalignedstruct is False
    assert layout_from_json(layout_to_json(LAYOUT)) == LAYOUT
    assert make_game("wander").input_batch(1).dtype.itemsize == 22  # eid, seq, client_tick, dx, dy, bound


def test_zero_columns_cost_nothing_and_come_back_as_zeros() -> None:
    """A column zero in every input of a tick is left out: a plain tick pays for 28 bytes an input,
    a tick with a transfer (arg3, txn) and a lag bound for the columns it uses."""
    plain, rare = sample_inputs(4), sample_inputs(4, rare=True)
    base = record_overhead(9, LAYOUT) + 1  # + the one-byte column mask
    assert len(encode_tick(9, [], [], plain)) - base == 4 * 28
    assert len(encode_tick(9, [], [], rare)) - base - 1 == 4 * (28 + 4 + 4 + 2)  # (a 2-byte mask)
    for arr in (plain, rare):
        back = decode_tick(encode_tick(9, [], [], arr), LAYOUT).inputs
        assert back.dtype == LAYOUT and back.tobytes() == arr.tobytes()
    present = decode_tick(encode_tick(9, [], [], plain), LAYOUT, expand=False).inputs
    assert present.dtype.names == ("eid", "seq", "client_tick", "dx", "dy", "action", "arg")


def test_round_trip_basic() -> None:
    inputs = sample_inputs(5)
    joins = [(1 << 20 | 3, "alice"), (1 << 20 | 4, "bob")]
    rec = decode_tick(encode_tick(1234, joins, [99, 100], inputs), LAYOUT)
    assert rec == TickRecord(1234, joins, [99, 100], inputs)
    assert rec.inputs.flags.writeable


def test_empty_tick_is_small() -> None:
    empty = np.zeros(0, dtype=LAYOUT)
    blob = encode_tick(10**6, [], [], empty)
    assert decode_tick(blob, LAYOUT) == TickRecord(10**6, [], [], empty)
    assert len(blob) == 12  # magic, format, 3-byte tick varint, 3 counts, CRC


def test_preserves_nan_and_negative_zero_bits() -> None:
    arr = sample_inputs(3)
    arr["dx"] = [np.nan, -0.0, np.inf]
    arr["dy"] = np.frombuffer(np.array([0x7FC00001, 0xFFFFFFFF, 1], dtype="<u4").tobytes(), "<f4")
    assert decode_tick(encode_tick(1, [], [], arr), LAYOUT).inputs.tobytes() == arr.tobytes()


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        encode_tick(3, [], [], sample_inputs(4).reshape(2, 2))
    with pytest.raises(ValueError):
        encode_tick(3, [(2**32, "x")], [], sample_inputs(0))
    with pytest.raises(ValueError):
        encode_tick(3, [], [-1], sample_inputs(0))
    with pytest.raises(ValueError):
        encode_tick(-1, [], [], sample_inputs(0))


def test_older_formats_are_refused_naming_the_version() -> None:
    """Records and campaigns of formats 1 and 2 (fixed inputs, before the game API) are refused
    with a message naming the version; there is no migration."""
    body = bytearray((0xA7, 2, 5, 0, 0, 0))
    body += struct.pack("<I", zlib.crc32(body))
    with pytest.raises(JournalFormatError, match="journal format 2"):
        decode_tick(bytes(body), LAYOUT)
    with pytest.raises(JournalFormatError, match=f"journal format 1-2 .*reads format {FORMAT} only"):
        campaign_layout({"game": "startales", "seed": "1"})  # a campaign written before format 3
    assert campaign_layout(campaign_format_meta(LAYOUT)) == LAYOUT


def test_every_single_byte_flip_is_detected() -> None:
    blob = encode_tick(77, [(5, "zoë")], [6], sample_inputs(3))
    for i in range(len(blob)):
        for bit in (0x01, 0x80):
            bad = bytearray(blob)
            bad[i] ^= bit
            with pytest.raises(JournalCorruptError):
                decode_tick(bytes(bad), LAYOUT)


def test_every_truncation_is_detected() -> None:
    blob = encode_tick(77, [(5, "zoë")], [6], sample_inputs(3))
    for cut in range(len(blob)):
        with pytest.raises(JournalCorruptError):
            decode_tick(blob[:cut], LAYOUT)
    with pytest.raises(JournalCorruptError):
        decode_tick(blob + b"\x00", LAYOUT)


def test_garbage_is_rejected_not_crashing() -> None:
    rng = np.random.default_rng(5)
    for n in range(0, 200, 7):
        with pytest.raises(JournalCorruptError):
            decode_tick(rng.bytes(n), LAYOUT)
    with pytest.raises(JournalCorruptError):
        decode_tick("not bytes", LAYOUT)  # type: ignore[arg-type]


def test_valid_crc_but_lying_counts_or_mask_is_rejected() -> None:
    # A header claiming 10**9 inputs must not allocate anything.
    body = bytearray((0xA7, FORMAT))
    body += bytes([5, 0, 0]) + b"\x80\x94\xeb\xdc\x03" + b"\x07"
    body += struct.pack("<I", zlib.crc32(body))
    with pytest.raises(JournalCorruptError):
        decode_tick(bytes(body), LAYOUT)
    body = bytearray((0xA7, FORMAT, 5, 0, 0, 1)) + b"\x80\x80\x80\x01"  # a mask beyond the layout's columns
    body += bytes(4)
    body += struct.pack("<I", zlib.crc32(body))
    with pytest.raises(JournalCorruptError):
        decode_tick(bytes(body), LAYOUT)


input_arrays = hnp.arrays(LAYOUT, st.integers(0, 40))
join_lists = st.lists(st.tuples(st.integers(0, 2**32 - 1), st.text(max_size=40)), max_size=8)
leave_lists = st.lists(st.integers(0, 2**32 - 1), max_size=8)


@settings(max_examples=100, deadline=None)
@given(tick=st.integers(0, 2**63 - 1), joins=join_lists, leaves=leave_lists, inputs=input_arrays)
def test_round_trip_property(tick: int, joins: list[tuple[int, str]], leaves: list[int], inputs: np.ndarray) -> None:
    blob = encode_tick(tick, joins, leaves, inputs)
    rec = decode_tick(blob, LAYOUT)
    assert rec.tick == tick
    assert rec.joins == joins
    assert rec.leaves == leaves
    assert rec.inputs.tobytes() == inputs.tobytes()  # bitwise, NaN payloads included


@settings(max_examples=100, deadline=None)
@given(joins=join_lists, inputs=input_arrays, data=st.data())
def test_random_byte_corruption_property(joins: list[tuple[int, str]], inputs: np.ndarray, data: st.DataObject) -> None:
    blob = encode_tick(42, joins, [], inputs)
    i = data.draw(st.integers(0, len(blob) - 1))
    flip = data.draw(st.integers(1, 255))
    bad = bytearray(blob)
    bad[i] ^= flip
    with pytest.raises(JournalCorruptError):
        decode_tick(bytes(bad), LAYOUT)


def test_the_small_batch_path_encodes_byte_for_byte_like_the_numpy_one() -> None:
    """A small campaign's tick takes a plain-Python path to find the used columns; it must write
    exactly what the numpy path writes, for any mix of zero and non-zero columns."""
    from persistence import journal_codec as jc

    rng = np.random.default_rng(7)
    layout = jc.layout_of(LAYOUT)
    for _ in range(300):
        n = int(rng.integers(1, jc._SMALL + 1))
        rows = np.zeros(n, dtype=LAYOUT)
        for name in LAYOUT.names or ():
            if rng.random() < 0.5:
                col = rows[name]
                live = rng.random(n) < 0.5
                col[live] = rng.integers(1, 1000, size=int(live.sum())).astype(col.dtype)
        assert jc._columns_small(rows, layout) == jc._columns(rows, layout)
        blob = jc.encode_tick(5, [], [], rows)
        assert jc.decode_tick(blob, LAYOUT).inputs.tobytes() == rows.tobytes()
