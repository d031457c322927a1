"""numba kernel of one send group: the batched delta encode (visibility: sim/aoi.py).

``encode_group`` encodes every client of a group in one call: it finds each client's baseline (the
known set it stored for the acknowledged snapshot), runs ``encode_client``, stores the client's
new known set and writes whole frames (optionally with their RFC 6455 header) into one buffer, so
the caller does no per-client work beyond one socket write.

Known sets live in an arena by ring entry: ``arena_ids[ri]`` / ``arena_src[ri]`` hold, from 0 to
``arena_fill[ri]``, every known set stored during the send held by ring entry ``ri``; client ``c``'s
is ``[cl_off[c, ri], cl_off[c, ri] + cl_len[c, ri])`` when ``cl_seq[c, ri]`` equals that send's seq.
A ring entry's row is reused (fill reset to 0) when the entry is, which is exactly when every known
set stored in it stops being a usable baseline.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numba import njit

from netcode.replication.kernels import ST_KNOWN, encode_client
from netcode.ws_frames import put_header
from sim.scalars import Int

FRAME_OVERHEAD: Final = 56  # msgpack map header + keys + three uint64 + bin32 header (45) + ws header (10)


@njit(cache=True)
def _mp_uint_len(v: Int) -> int:
    if v < 128:
        return 1
    if v < 0x100:
        return 2
    if v < 0x10000:
        return 3
    if v <= 0xFFFFFFFF:
        return 5
    return 9


@njit(cache=True)
def _mp_uint(buf: np.ndarray, pos: Int, v: Int) -> int:
    """msgpack's canonical (shortest) encoding of a non-negative int at buf[pos]; new pos."""
    v = np.int64(v)
    if v < 128:
        buf[pos] = np.uint8(v)
        return pos + 1
    if v < 0x100:
        buf[pos] = np.uint8(0xCC)
        buf[pos + 1] = np.uint8(v)
        return pos + 2
    if v < 0x10000:
        buf[pos] = np.uint8(0xCD)
        n = 2
    elif v <= 0xFFFFFFFF:
        buf[pos] = np.uint8(0xCE)
        n = 4
    else:
        buf[pos] = np.uint8(0xCF)
        n = 8
    for b in range(n):
        buf[pos + n - b] = np.uint8((v >> (8 * b)) & 0xFF)
    return pos + 1 + n


@njit(cache=True)
def _mp_key(buf: np.ndarray, pos: Int, ch: Int) -> int:
    """A one-character msgpack fixstr at buf[pos]; new pos."""
    buf[pos] = np.uint8(0xA1)
    buf[pos + 1] = np.uint8(ch)
    return pos + 2


@njit(cache=True)
def encode_group(
    vis_ids: np.ndarray,
    vis_off: np.ndarray,
    rows: np.ndarray,
    clients: np.ndarray,
    acks: np.ndarray,
    ack_seqs: np.ndarray,
    ring_tick: np.ndarray,
    ring_seq: np.ndarray,
    seq: Int,
    tick: Int,
    cl_seq: np.ndarray,
    cl_off: np.ndarray,
    cl_len: np.ndarray,
    arena_ids: np.ndarray,
    arena_src: np.ndarray,
    arena_fill: np.ndarray,
    q_ring: np.ndarray,
    px: np.ndarray,
    py: np.ndarray,
    view: np.ndarray,
    prio: np.ndarray,
    prio_dirty: np.ndarray,
    budget: Int,
    ws: bool,
    frames: np.ndarray,
    frame_off: np.ndarray,
    baselines: np.ndarray,
    base_ri: np.ndarray,
    needs: np.ndarray,
    out: np.ndarray,
    c_kind: np.ndarray,
    c_ref: np.ndarray,
    c_cost: np.ndarray,
    c_prio: np.ndarray,
    c_sel: np.ndarray,
    stats: np.ndarray,
) -> int:
    """`encode_client` for a group of clients, each body wrapped in its msgpack delta frame
    ``{"t":"d","k":tick,"b":baseline,"a":ack_seq,"e":bin}`` (byte-identical to ``msgpack.packb``),
    preceded by its RFC 6455 header (FIN, binary, unmasked) when ``ws``.

    Client b (clients[b], a row of prio/prio_dirty/cl_*) sees vis_ids[vis_off[rows[b]]:vis_off[rows[b] + 1]]
    and acknowledged snapshot id acks[b] (0: none); view[b] = (x, y, radius). Output: frame b =
    frames[frame_off[b]:frame_off[b + 1]], baselines[b] (the snapshot id the delta applies to),
    stats[b] (encode_client's); the client's new known set is stored in the arena.

    Nothing is changed unless every buffer is big enough: then it returns -1 with needs =
    (largest m + k, sum of m + k, frame bytes bound, largest body bound); grow and call again.
    Returns the total frame bytes.
    """
    R = q_ring.shape[0]
    F = q_ring.shape[2]
    nb = clients.shape[0]
    cur = seq % R
    # -- plan: baselines and sizes (no state changes)
    max_need = 0
    sum_need = 0
    fbound = 0
    max_body = 0
    for b in range(nb):
        c = clients[b]
        a = acks[b]
        bri = -1
        if a > 0:
            for r in range(R):
                if ring_tick[r] == a:
                    s = ring_seq[r]
                    if s >= 0 and cl_seq[c, r] == s:
                        bri = r
                    break
        base_ri[b] = bri
        baselines[b] = a if bri >= 0 else 0
        m = cl_len[c, bri] if bri >= 0 else 0
        row = rows[b]
        need = m + vis_off[row + 1] - vis_off[row]
        body = 16 + need * (15 + 10 * F)
        if budget >= 0 and budget < body:
            body = budget
        max_need = max(max_need, need)
        max_body = max(max_body, 16 + need * (15 + 10 * F))
        sum_need += need
        fbound += body + FRAME_OVERHEAD
    needs[0] = max_need
    needs[1] = sum_need
    needs[2] = fbound
    needs[3] = max_body
    fill = arena_fill[cur]
    if (
        max_need > c_kind.shape[0]
        or max_body > out.shape[0]
        or fill + sum_need > arena_ids.shape[1]
        or fbound > frames.shape[0]
    ):
        return -1
    # -- encode
    fpos = 0
    frame_off[0] = 0
    for b in range(nb):
        c = clients[b]
        row = rows[b]
        vis = vis_ids[vis_off[row] : vis_off[row + 1]]
        bri = base_ri[b]
        if bri >= 0:
            o = cl_off[c, bri]
            bi = arena_ids[bri, o : o + cl_len[c, bri]]
            bs = arena_src[bri, o : o + cl_len[c, bri]]
        else:
            bi = arena_ids[cur, 0:0]
            bs = arena_src[cur, 0:0]
        need = bi.shape[0] + vis.shape[0]
        st = stats[b]
        n = encode_client(
            vis, bi, bs, q_ring, ring_seq, seq, px, py, view[b, 0], view[b, 1], view[b, 2], prio[c],
            prio_dirty[c : c + 1], budget, out, arena_ids[cur, fill : fill + need],
            arena_src[cur, fill : fill + need], c_kind, c_ref, c_cost, c_prio, c_sel, st,
        )  # fmt: skip
        nk = st[ST_KNOWN]
        cl_seq[c, cur] = seq
        cl_off[c, cur] = fill
        cl_len[c, cur] = nk
        fill += nk
        # the frame: [ws header] msgpack fixmap(5) t=d k=tick b=baseline a=ack_seq e=bin(body)
        bl = baselines[b]
        binhdr = 2 if n < 0x100 else (3 if n < 0x10000 else 5)
        size = 1 + 4 + 2 + _mp_uint_len(tick) + 2 + _mp_uint_len(bl) + 2 + _mp_uint_len(ack_seqs[b]) + 2 + binhdr + n
        p = fpos
        if ws:
            p = put_header(frames, p, 0x82, 0, size)  # FIN, binary, unmasked
        frames[p] = np.uint8(0x85)  # fixmap(5)
        p = _mp_key(frames, p + 1, 116)  # "t"
        p = _mp_key(frames, p, 100)  # "d"
        p = _mp_key(frames, p, 107)  # "k"
        p = _mp_uint(frames, p, tick)
        p = _mp_key(frames, p, 98)  # "b"
        p = _mp_uint(frames, p, bl)
        p = _mp_key(frames, p, 97)  # "a"
        p = _mp_uint(frames, p, ack_seqs[b])
        p = _mp_key(frames, p, 101)  # "e"
        if n < 0x100:
            frames[p] = np.uint8(0xC4)
            frames[p + 1] = np.uint8(n)
            p += 2
        elif n < 0x10000:
            frames[p] = np.uint8(0xC5)
            frames[p + 1] = np.uint8(n >> 8)
            frames[p + 2] = np.uint8(n & 0xFF)
            p += 3
        else:
            frames[p] = np.uint8(0xC6)
            for s in range(4):
                frames[p + 4 - s] = np.uint8((n >> (8 * s)) & 0xFF)
            p += 5
        for t in range(n):
            frames[p + t] = out[t]
        fpos = p + n
        frame_off[b + 1] = fpos
    arena_fill[cur] = fill
    return fpos
