"""Journal record codec: round trip, corruption detection, size."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from persistence.journal_codec import (
    COMPACT_INPUT_DTYPE,
    EXTENDED_RECORD_SIZE,
    INPUT_RECORD_SIZE,
    JOURNAL_INPUT_DTYPE,
    JournalCorruptError,
    TickRecord,
    decode_tick,
    encode_tick,
    inputs_from_columns,
    make_inputs,
    record_overhead,
)


def sample_inputs(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    arr = make_inputs(n)
    arr["eid"] = rng.integers(0, 2**32, n, dtype=np.uint32)
    arr["seq"] = np.arange(n, dtype=np.uint32) + 7
    arr["client_tick"] = rng.integers(0, 2**32, n, dtype=np.uint32)
    arr["dx"] = rng.uniform(-1, 1, n).astype(np.float32)
    arr["dy"] = rng.uniform(-1, 1, n).astype(np.float32)
    arr["action"] = rng.integers(-(2**31), 2**31, n, dtype=np.int32)
    arr["arg"] = rng.integers(-(2**31), 2**31, n, dtype=np.int32)
    return arr


def test_dtype_is_packed_28_or_40_bytes() -> None:
    assert COMPACT_INPUT_DTYPE.itemsize == INPUT_RECORD_SIZE == 28
    assert JOURNAL_INPUT_DTYPE.itemsize == EXTENDED_RECORD_SIZE == 40
    assert JOURNAL_INPUT_DTYPE.isalignedstruct is False


def test_extended_inputs_round_trip_and_cost_only_their_ticks() -> None:
    """A tick with a transfer (arg2, arg3, txn) is written extended; every other tick stays compact."""
    plain = sample_inputs(4)
    gift = plain.copy()
    gift["arg2"][2], gift["arg3"][2], gift["txn"][2] = 1, 250, 0xFFFFFFFF
    compact_blob, extended_blob = encode_tick(9, [], [], plain), encode_tick(9, [], [], gift)
    assert compact_blob[1] == 1 and extended_blob[1] == 2
    assert len(extended_blob) - len(compact_blob) == 4 * (40 - 28)
    assert decode_tick(extended_blob).inputs.tobytes() == gift.tobytes()
    back = decode_tick(compact_blob).inputs
    assert back.dtype == JOURNAL_INPUT_DTYPE and back.tobytes() == plain.tobytes()


def test_round_trip_basic() -> None:
    inputs = sample_inputs(5)
    joins = [(1 << 20 | 3, "alice"), (1 << 20 | 4, "bob")]
    blob = encode_tick(1234, joins, [99, 100], inputs)
    rec = decode_tick(blob)
    assert rec == TickRecord(1234, joins, [99, 100], inputs)
    assert rec.inputs.dtype == JOURNAL_INPUT_DTYPE
    assert rec.inputs.flags.writeable
    assert rec.inputs.tobytes() == inputs.tobytes()


def test_empty_tick_is_small() -> None:
    blob = encode_tick(10**6, [], [], make_inputs(0))
    assert decode_tick(blob) == TickRecord(10**6, [], [], make_inputs(0))
    assert len(blob) == 12  # magic, version, 3-byte tick varint, 3 counts, CRC


def test_bytes_per_input_is_the_raw_record() -> None:
    base = len(encode_tick(500_000, [], [], make_inputs(0)))
    for n in (1, 10, 1000):
        assert len(encode_tick(500_000, [], [], sample_inputs(n))) - base == 28 * n + (1 if n >= 128 else 0)
    assert record_overhead(500_000) == base


def test_preserves_nan_and_negative_zero_bits() -> None:
    arr = make_inputs(3)
    arr["dx"] = [np.nan, -0.0, np.inf]
    arr["dy"] = np.frombuffer(np.array([0x7FC00001, 0xFFFFFFFF, 1], dtype="<u4").tobytes(), "<f4")
    rec = decode_tick(encode_tick(1, [], [], arr))
    assert rec.inputs.tobytes() == arr.tobytes()


def test_converts_equivalent_dtype_and_rejects_others() -> None:
    big = np.dtype([(n, JOURNAL_INPUT_DTYPE[n].newbyteorder(">")) for n in JOURNAL_INPUT_DTYPE.names])
    arr = sample_inputs(4)
    assert decode_tick(encode_tick(3, [], [], arr.astype(big))).inputs.tobytes() == arr.tobytes()
    swapped = np.zeros(2, dtype=[("seq", "<u4"), ("eid", "<u4")])
    with pytest.raises(TypeError):
        encode_tick(3, [], [], swapped)
    with pytest.raises(ValueError):
        encode_tick(3, [], [], make_inputs(4).reshape(2, 2))
    with pytest.raises(ValueError):
        encode_tick(3, [(2**32, "x")], [], make_inputs(0))
    with pytest.raises(ValueError):
        encode_tick(3, [], [-1], make_inputs(0))
    with pytest.raises(ValueError):
        encode_tick(-1, [], [], make_inputs(0))


def test_inputs_from_columns() -> None:
    src = sample_inputs(6)
    cols = {name: np.ascontiguousarray(src[name]) for name in JOURNAL_INPUT_DTYPE.names}
    assert inputs_from_columns(**cols).tobytes() == src.tobytes()


def test_every_single_byte_flip_is_detected() -> None:
    blob = encode_tick(77, [(5, "zoë")], [6], sample_inputs(3))
    for i in range(len(blob)):
        for bit in (0x01, 0x80):
            bad = bytearray(blob)
            bad[i] ^= bit
            with pytest.raises(JournalCorruptError):
                decode_tick(bytes(bad))


def test_every_truncation_is_detected() -> None:
    blob = encode_tick(77, [(5, "zoë")], [6], sample_inputs(3))
    for cut in range(len(blob)):
        with pytest.raises(JournalCorruptError):
            decode_tick(blob[:cut])
    with pytest.raises(JournalCorruptError):
        decode_tick(blob + b"\x00")


def test_garbage_is_rejected_not_crashing() -> None:
    rng = np.random.default_rng(5)
    for n in range(0, 200, 7):
        with pytest.raises(JournalCorruptError):
            decode_tick(rng.bytes(n))
    with pytest.raises(JournalCorruptError):
        decode_tick("not bytes")  # type: ignore[arg-type]


def test_valid_crc_but_lying_counts_is_rejected() -> None:
    import struct
    import zlib

    # A header claiming 10**9 inputs must not allocate anything.
    body = bytearray((0xA7, 1))
    body += bytes([5, 0, 0]) + b"\x80\x94\xeb\xdc\x03"
    body += struct.pack("<I", zlib.crc32(body))
    with pytest.raises(JournalCorruptError):
        decode_tick(bytes(body))


input_arrays = hnp.arrays(JOURNAL_INPUT_DTYPE, st.integers(0, 40))
join_lists = st.lists(st.tuples(st.integers(0, 2**32 - 1), st.text(max_size=40)), max_size=8)
leave_lists = st.lists(st.integers(0, 2**32 - 1), max_size=8)


@settings(max_examples=100, deadline=None)
@given(tick=st.integers(0, 2**63 - 1), joins=join_lists, leaves=leave_lists, inputs=input_arrays)
def test_round_trip_property(tick: int, joins: list[tuple[int, str]], leaves: list[int], inputs: np.ndarray) -> None:
    blob = encode_tick(tick, joins, leaves, inputs)
    rec = decode_tick(blob)
    assert rec.tick == tick
    assert rec.joins == joins
    assert rec.leaves == leaves
    assert rec.inputs.tobytes() == inputs.tobytes()  # bitwise, NaN payloads included
    assert len(blob) >= 10 + 28 * len(inputs)


@settings(max_examples=100, deadline=None)
@given(joins=join_lists, inputs=input_arrays, data=st.data())
def test_random_byte_corruption_property(joins: list[tuple[int, str]], inputs: np.ndarray, data: st.DataObject) -> None:
    blob = encode_tick(42, joins, [], inputs)
    i = data.draw(st.integers(0, len(blob) - 1))
    flip = data.draw(st.integers(1, 255))
    bad = bytearray(blob)
    bad[i] ^= flip
    with pytest.raises(JournalCorruptError):
        decode_tick(bytes(bad))
