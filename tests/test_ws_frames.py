"""The hand-written RFC 6455 frame reader: reassembly, masking, limits, the rules Autobahn checks
(reserved bits, opcodes, control frames, fragments, UTF-8, close frames, 64-bit lengths) and the
good frames of a read that also holds a bad one."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netcode.ws_frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_TEXT,
    FrameReader,
    client_frame,
    close_payload,
    frame_header,
    parse_close,
    server_frame,
    valid_close_code,
)


@given(st.lists(st.binary(max_size=70000), min_size=1, max_size=5), st.integers(1, 5000))
def test_any_split_of_the_stream_gives_the_same_messages(payloads: list[bytes], chunk: int) -> None:
    stream = b"".join(server_frame(OP_BINARY, p) for p in payloads)
    r = FrameReader()
    got = []
    for i in range(0, len(stream), chunk):
        got += r.feed(stream[i : i + chunk])
    assert got == [(OP_BINARY, p) for p in payloads]


def _raw(b0: int, payload: bytes, masked: bool = True) -> bytes:
    """A frame with any first byte (FIN, RSV, opcode), masked with a zero key when `masked`."""
    n = len(payload)
    hdr = frame_header(OP_BINARY, n, masked=masked)
    return bytes((b0,)) + hdr[1:] + (b"\x00\x00\x00\x00" if masked else b"") + payload


def _server_reader(**kw: int) -> FrameReader:
    return FrameReader(masked=True, **kw)


def test_masked_client_frames_are_unmasked_and_unmasked_ones_refused() -> None:
    r = _server_reader()
    assert r.feed(client_frame(OP_BINARY, b"hello")) == [(OP_BINARY, b"hello")]
    r = _server_reader()
    assert r.feed(server_frame(OP_BINARY, b"x")) == [] and r.error is not None and r.error.code == 1002
    r = FrameReader()  # a client must refuse a masked server frame
    assert r.feed(client_frame(OP_BINARY, b"x")) == [] and r.error is not None and r.error.code == 1002


def test_oversize_is_refused_on_the_header() -> None:
    r = FrameReader(max_size=100, masked=True)
    r.feed(frame_header(OP_BINARY, 2**40, masked=True))
    assert r.error is not None and r.error.code == 1009 and r.buffered == 0


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (_raw(0x80 | 0x40 | OP_BINARY, b"rsv1"), 1002),
        (_raw(0x80 | 0x10 | OP_TEXT, b"rsv3"), 1002),
        (_raw(0x80 | 0x3, b"reserved data opcode"), 1002),
        (_raw(0x80 | 0xB, b"reserved control opcode"), 1002),
        (_raw(OP_PING, b"fragmented ping"), 1002),
        (_raw(0x80 | OP_PING, b"p" * 126), 1002),
        (_raw(0x80 | OP_CONT, b"stray continuation"), 1002),
        (_raw(0x80 | OP_TEXT, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"), 1007),
        (_raw(0x80 | OP_CLOSE, b"\x03"), 1002),
        (_raw(0x80 | OP_CLOSE, (1005).to_bytes(2, "big")), 1002),
        (_raw(0x80 | OP_CLOSE, (2999).to_bytes(2, "big")), 1002),
        (_raw(0x80 | OP_CLOSE, (1000).to_bytes(2, "big") + b"\xff"), 1007),
        (bytes((0x82, 0xFF)) + (2**63 + 5).to_bytes(8, "big") + b"\x00" * 4, 1002),
    ],
)
def test_rfc6455_violations_fail_with_their_code(frame: bytes, code: int) -> None:
    r = _server_reader(max_size=1 << 20)
    assert r.feed(frame) == []
    assert r.error is not None and r.error.code == code
    assert r.feed(client_frame(OP_BINARY, b"later")) == []  # a failed reader reads nothing more


def test_good_frames_before_a_bad_one_come_out_in_order() -> None:
    good = [client_frame(OP_BINARY, b"one"), client_frame(OP_PING, b"p"), client_frame(OP_TEXT, "två".encode())]
    r = _server_reader()
    got = r.feed(b"".join(good) + _raw(0x80 | 0x40 | OP_BINARY, b"bad") + client_frame(OP_BINARY, b"after"))
    assert got == [(OP_BINARY, b"one"), (OP_PING, b"p"), (OP_TEXT, "två".encode())]
    assert r.error is not None and r.error.code == 1002


def test_fragments_reassembled_with_control_frames_between() -> None:
    first = _raw(OP_TEXT, "héllo ".encode()[:3])  # FIN clear, ends inside a 2-byte character
    ping = client_frame(OP_PING, b"between")
    last = _raw(0x80 | OP_CONT, "héllo ".encode()[3:] + b"world")
    r = _server_reader()
    assert r.feed(first + ping + last) == [(OP_PING, b"between"), (OP_TEXT, "héllo world".encode())]
    assert r.error is None and not r.pending


def test_fragmented_message_bound_and_interleaving() -> None:
    r = _server_reader(max_size=100, max_message=150)
    r.feed(_raw(OP_BINARY, b"a" * 100))
    assert r.error is None
    r.feed(_raw(0x80 | OP_CONT, b"b" * 60))
    assert r.error is not None and r.error.code == 1009
    r = _server_reader()
    r.feed(_raw(OP_BINARY, b"a") + _raw(0x80 | OP_BINARY, b"new message"))  # no CONT in between
    assert r.error is not None and r.error.code == 1002


def test_invalid_utf8_fails_fast_in_a_fragment() -> None:
    r = _server_reader()
    r.feed(_raw(OP_TEXT, "κόσμε".encode()))
    assert r.error is None
    r.feed(_raw(OP_CONT, b"\xf4\x90\x80\x80"))  # beyond U+10FFFF: invalid before the message ends
    assert r.error is not None and r.error.code == 1007


def test_close_frame_is_validated_and_ends_the_stream() -> None:
    r = _server_reader()
    got = r.feed(client_frame(OP_CLOSE, close_payload(4000, "bye")) + client_frame(OP_BINARY, b"after"))
    assert got == [(OP_CLOSE, (4000).to_bytes(2, "big") + b"bye")] and r.closed
    assert parse_close(b"") == (1005, "")
    assert [c for c in (999, 1000, 1004, 1005, 1006, 1011, 1015, 3000, 4999, 5000) if valid_close_code(c)] == [
        1000, 1011, 3000, 4999,
    ]  # fmt: skip
    with pytest.raises(ValueError):
        close_payload(1005)
    assert len(close_payload(1000, "é" * 200)) <= 125  # cut on a character boundary
    close_payload(1000, "é" * 200)[2:].decode("utf-8")


def test_count_only_truncation_skips_bodies_across_chunks() -> None:
    big = bytes(range(256)) * 200  # 51200 bytes
    stream = server_frame(OP_BINARY, big) + server_frame(OP_PING, b"p") + server_frame(OP_BINARY, b"small")
    r = FrameReader()
    r.truncate_at, r.truncate_over = 48, 4096
    got = []
    for i in range(0, len(stream), 1000):
        got += r.feed(stream[i : i + 1000])
    assert got == [(OP_BINARY, big[:48]), (OP_PING, b"p"), (OP_BINARY, b"small")]


def test_frame_header_matches_every_length_form() -> None:
    assert frame_header(OP_BINARY, 5) == b"\x82\x05"
    assert frame_header(OP_BINARY, 126) == b"\x82\x7e\x00\x7e"
    assert frame_header(OP_TEXT, 70000, masked=True) == b"\x81\xff" + (70000).to_bytes(8, "big")


def test_invalid_utf8_fails_before_its_frame_is_complete() -> None:
    frame = client_frame(OP_TEXT, "κόσμε".encode() + b"\xf4\x90\x80\x80" + b"tail" * 50)
    r = _server_reader()
    assert r.feed(frame[:12]) == [] and r.error is None  # valid so far
    assert r.feed(frame[12:20]) == [] and r.error is not None and r.error.code == 1007
    ok = client_frame(OP_TEXT, "κόσμε héllo".encode())
    r = _server_reader()
    for i in range(len(ok)):  # a character split across reads is not an error
        got = r.feed(ok[i : i + 1])
    assert got == [(OP_TEXT, "κόσμε héllo".encode())] and r.error is None
    # a fragment goes on from the message's state: its first byte completes a character
    first, rest = "é".encode()[:1], "é".encode()[1:] + b"x" * 40
    r = _server_reader()
    r.feed(_raw(OP_TEXT, first))
    cont = _raw(0x80 | OP_CONT, rest)
    r.feed(cont[:10])
    assert r.error is None
    assert r.feed(cont[10:]) == [(OP_TEXT, first + rest)]
