"""The hand-written RFC 6455 frame reader: reassembly, masking, limits, count-only truncation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netcode.ws_frames import (
    OP_BINARY,
    OP_CONT,
    OP_PING,
    FrameError,
    FrameReader,
    client_frame,
    frame_header,
    server_frame,
)


@given(st.lists(st.binary(max_size=70000), min_size=1, max_size=5), st.integers(1, 5000))
def test_any_split_of_the_stream_gives_the_same_messages(payloads: list[bytes], chunk: int) -> None:
    stream = b"".join(server_frame(OP_BINARY, p) for p in payloads)
    r = FrameReader()
    got = []
    for i in range(0, len(stream), chunk):
        got += r.feed(stream[i : i + chunk])
    assert got == [(OP_BINARY, p) for p in payloads]


def test_masked_client_frames_are_unmasked_and_unmasked_ones_refused() -> None:
    r = FrameReader(require_mask=True)
    assert r.feed(client_frame(OP_BINARY, b"hello")) == [(OP_BINARY, b"hello")]
    with pytest.raises(FrameError) as e:
        FrameReader(require_mask=True).feed(server_frame(OP_BINARY, b"x"))
    assert e.value.code == 1002


def test_oversize_is_refused_on_the_header() -> None:
    r = FrameReader(max_size=100, require_mask=True)
    with pytest.raises(FrameError) as e:
        r.feed(frame_header(OP_BINARY, 2**40, masked=True))
    assert e.value.code == 1009


def test_fragments_reassembled_or_refused() -> None:
    first = bytes((OP_BINARY, 3)) + b"abc"  # FIN clear
    last = bytes((0x80 | OP_CONT, 3)) + b"def"
    assert FrameReader().feed(first + last) == [(OP_BINARY, b"abcdef")]
    with pytest.raises(FrameError) as e:
        FrameReader(allow_fragments=False).feed(first)
    assert e.value.code == 1003


def test_count_only_truncation_skips_bodies_across_chunks() -> None:
    big = bytes(range(256)) * 200  # 51200 bytes
    stream = server_frame(OP_BINARY, big) + server_frame(OP_PING, b"p") + server_frame(OP_BINARY, b"small")
    r = FrameReader()
    r.truncate_at, r.truncate_over = 48, 4096
    got = []
    for i in range(0, len(stream), 1000):
        got += r.feed(stream[i : i + 1000])
    assert got == [(OP_BINARY, big[:48]), (OP_PING, b"p"), (OP_BINARY, b"small")]
