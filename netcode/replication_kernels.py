"""numba kernels of delta replication: quantize, per-client delta encode with a byte budget, decode.

Wire layout of a delta body (see docs/replication.md): all integers are LEB128 varints; signed
values are zigzag-coded first.

    n_leave,  n_leave  x  gap(baseline index)
    n_update, n_update x  gap(baseline index), mask, values
    n_enter,  n_enter  x  gap(entity id), F x zigzag(value)

``gap`` of a sorted sequence: first = value, then value - previous - 1 for baseline indexes and
value - previous for entity ids (previous starts at 0). ``mask`` bit f (f < F) = field f changed,
followed by zigzag(new - old) per set bit in field order; bit F (ABS) = the baseline value is
unknown to the server, followed by F zigzag(absolute value).
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
from numba import njit

from sim.scalars import Float, Int

SLOT_MASK: Final = 0xFFFFF
RING: Final = 32

# candidate kinds
K_LEAVE: Final = 0
K_UPDATE: Final = 1
K_ENTER: Final = 2
K_SAME: Final = 3  # visible, known, unchanged: costs nothing

# priority weights per send (the accumulator adds one of these each send an item waits)
W_BASE: Final = 1.0  # every pending item
W_NEAR: Final = 2.0  # x (1 - d / radius) for items near the viewer
W_ENTER: Final = 1.0  # a new entity matters more than a small move
W_LEAVE: Final = 2.0  # leaving is cheap and fixes a ghost

# stats slots
ST_BYTES: Final = 0
ST_KNOWN: Final = 1
ST_LEAVE: Final = 2
ST_UPDATE: Final = 3
ST_ENTER: Final = 4
ST_DEFERRED: Final = 5
ST_UPDATE_BYTES: Final = 6
ST_CANDIDATES: Final = 7
N_STATS: Final = 8


@njit(cache=True)
def quantize_kernel(
    vals: np.ndarray, offset: np.ndarray, inv_step: np.ndarray, qmin: np.ndarray, qmax: np.ndarray, out: np.ndarray
) -> None:
    """out[i, f] = clip(floor((vals[i, f] - offset[f]) * inv_step[f] + 0.5), qmin[f], qmax[f]); NaN -> qmin.

    vals: float64[n, F]; offset, inv_step: float64[F]; qmin, qmax: int64[F]; out: int32[n, F].
    """
    n, F = vals.shape
    for i in range(n):
        for f in range(F):
            v = (vals[i, f] - offset[f]) * inv_step[f] + 0.5
            if v != v:
                out[i, f] = qmin[f]
                continue
            v = np.floor(v)
            if v <= qmin[f]:
                out[i, f] = qmin[f]
            elif v >= qmax[f]:
                out[i, f] = qmax[f]
            else:
                out[i, f] = np.int64(v)


@njit(cache=True)
def scatter_rows(slots: np.ndarray, ids: np.ndarray, q: np.ndarray, id_dst: np.ndarray, q_dst: np.ndarray) -> None:
    """id_dst[:] = 0; id_dst[slots] = ids; q_dst[slots] = q (slots: int64[n], q: int32[n, F])."""
    for s in range(id_dst.shape[0]):
        id_dst[s] = 0
    F = q.shape[1]
    for i in range(slots.shape[0]):
        s = slots[i]
        id_dst[s] = ids[i]
        for f in range(F):
            q_dst[s, f] = q[i, f]


@njit(cache=True)
def slots_to_sorted_ids(offsets: np.ndarray, slots: np.ndarray, id_by_slot: np.ndarray, out: np.ndarray) -> None:
    """Per CSR segment: the entity ids of the slots (0 skipped as id 0 never happens for live
    slots), sorted ascending. out: uint32[len(slots)]."""
    for v in range(offsets.shape[0] - 1):
        a = offsets[v]
        b = offsets[v + 1]
        for t in range(a, b):
            out[t] = id_by_slot[slots[t]]
        if b - a > 1:
            out[a:b] = np.sort(out[a:b])


@njit(cache=True)
def _zz(d: Int) -> Any:
    d = np.int64(d)
    return (d << 1) ^ (d >> 63)


@njit(cache=True)
def _unzz(z: Int) -> Any:
    z = np.int64(z)
    return (z >> 1) ^ -(z & 1)


@njit(cache=True)
def _vlen(v: Int) -> int:
    v = np.int64(v)
    n = 1
    while v >= 128:
        v >>= 7
        n += 1
    return n


@njit(cache=True)
def _put(buf: np.ndarray, pos: Int, v: Int) -> int:
    v = np.int64(v)
    while v >= 128:
        buf[pos] = np.uint8((v & 0x7F) | 0x80)
        v >>= 7
        pos += 1
    buf[pos] = np.uint8(v)
    return pos + 1


@njit(cache=True)
def _get(buf: np.ndarray, pos: Int) -> tuple[Any, Any]:
    """(value, new pos); new pos = -1 on a truncated or over-long varint."""
    n = buf.shape[0]
    v = np.int64(0)
    shift = 0
    while True:
        if pos >= n or shift > 56:
            return np.int64(0), -1
        b = np.int64(buf[pos])
        pos += 1
        v |= (b & 0x7F) << shift
        if b < 128:
            return v, pos
        shift += 7


@njit(cache=True)
def encode_client(
    vis_ids: np.ndarray,
    base_ids: np.ndarray,
    base_src: np.ndarray,
    q_ring: np.ndarray,
    ring_seq: np.ndarray,
    seq: Int,
    px: np.ndarray,
    py: np.ndarray,
    vx: Float,
    vy: Float,
    radius: Float,
    prio: np.ndarray,
    budget: Int,
    out: np.ndarray,
    new_ids: np.ndarray,
    new_src: np.ndarray,
    c_kind: np.ndarray,
    c_ref: np.ndarray,
    c_cost: np.ndarray,
    c_prio: np.ndarray,
    c_sel: np.ndarray,
    stats: np.ndarray,
) -> int:
    """Encode one client's delta body into ``out``; returns its length.

    vis_ids: uint32[k] sorted (what the client sees now); base_ids: uint32[m] sorted and
    base_src: int64[m] (the send seq whose shared-ring values the client holds for each id) of the
    acknowledged baseline (m = 0 for none); q_ring: int32[RING, cap, F] by slot; ring_seq:
    int64[RING] (seq held by each ring entry); seq: this send (q_ring[seq % RING] is current);
    px, py: float64[cap] positions now; (vx, vy, radius): the viewer (radius <= 0: no proximity
    term); prio: float32[cap] this client's accumulators (updated); budget: max body bytes (< 0 =
    unlimited; must be >= header + the largest item, see ``min_budget``); out: uint8 big enough for
    an unlimited body; new_ids/new_src (len >= m + k): the client's known set after this snapshot;
    c_*: scratch (len >= m + k); stats: int64[N_STATS].
    """
    R = q_ring.shape[0]
    F = q_ring.shape[2]
    ABS = np.int64(1) << F
    cur = seq % R
    m = base_ids.shape[0]
    k = vis_ids.shape[0]
    near = radius > 0.0
    inv_r = 1.0 / radius if near else 0.0
    nc = 0
    n_kind = np.zeros(4, dtype=np.int64)
    i = 0
    j = 0
    while i < m or j < k:
        if j >= k or (i < m and base_ids[i] < vis_ids[j]):
            eid = base_ids[i]
            slot = np.int64(eid) & SLOT_MASK
            c_kind[nc] = K_LEAVE
            c_ref[nc] = i
            c_cost[nc] = _vlen(i)
            prio[slot] += np.float32(W_LEAVE)
            c_prio[nc] = prio[slot]
            i += 1
        else:
            eid = vis_ids[j]
            slot = np.int64(eid) & SLOT_MASK
            w = W_BASE
            if near:
                dx = px[slot] - vx
                dy = py[slot] - vy
                t = 1.0 - np.sqrt(dx * dx + dy * dy) * inv_r
                if t > 0.0:
                    w += W_NEAR * t
            if i >= m or vis_ids[j] < base_ids[i]:
                cost = _vlen(eid)
                for f in range(F):
                    cost += _vlen(_zz(q_ring[cur, slot, f]))
                c_kind[nc] = K_ENTER
                c_ref[nc] = j
                c_cost[nc] = cost
                prio[slot] += np.float32(w + W_ENTER)
                c_prio[nc] = prio[slot]
            else:
                src = base_src[i]
                sri = src % R
                cost = 0
                mask = np.int64(0)
                if ring_seq[sri] == src:
                    for f in range(F):
                        d = np.int64(q_ring[cur, slot, f]) - np.int64(q_ring[sri, slot, f])
                        if d != 0:
                            mask |= np.int64(1) << f
                            cost += _vlen(_zz(d))
                else:
                    mask = ABS
                    for f in range(F):
                        cost += _vlen(_zz(q_ring[cur, slot, f]))
                c_ref[nc] = i
                if mask == 0:
                    c_kind[nc] = K_SAME
                    c_cost[nc] = 0
                    prio[slot] = 0.0
                    c_prio[nc] = 0.0
                else:
                    c_kind[nc] = K_UPDATE
                    c_cost[nc] = cost + _vlen(i) + _vlen(mask)
                    prio[slot] += np.float32(w)
                    c_prio[nc] = prio[slot]
                i += 1
            j += 1
        n_kind[c_kind[nc]] += 1
        nc += 1

    # -- selection under the budget (cost bounds are exact or over: gaps <= indexes, counts <= candidates)
    for t in range(nc):
        c_sel[t] = 1 if c_kind[t] != K_SAME else 0
    if budget >= 0:
        avail = budget - _vlen(n_kind[K_LEAVE]) - _vlen(n_kind[K_UPDATE]) - _vlen(n_kind[K_ENTER])
        total = 0
        for t in range(nc):
            total += c_cost[t]
        if total > avail:
            order = np.argsort(-c_prio[:nc], kind="mergesort")
            used = 0
            for o in range(nc):
                t = order[o]
                if c_kind[t] == K_SAME:
                    continue
                if used + c_cost[t] <= avail:
                    used += c_cost[t]
                else:
                    c_sel[t] = 0

    # -- encode
    n_sel = np.zeros(3, dtype=np.int64)
    for t in range(nc):
        if c_kind[t] != K_SAME and c_sel[t]:
            n_sel[c_kind[t]] += 1
    pos = 0
    pos = _put(out, pos, n_sel[K_LEAVE])
    prev = -1
    for t in range(nc):
        if c_kind[t] == K_LEAVE and c_sel[t]:
            idx = c_ref[t]
            pos = _put(out, pos, idx - prev - 1)
            prev = idx
    pos = _put(out, pos, n_sel[K_UPDATE])
    upd_start = pos
    prev = -1
    for t in range(nc):
        if c_kind[t] == K_UPDATE and c_sel[t]:
            idx = c_ref[t]
            slot = np.int64(base_ids[idx]) & SLOT_MASK
            src = base_src[idx]
            sri = src % R
            pos = _put(out, pos, idx - prev - 1)
            prev = idx
            if ring_seq[sri] == src:
                mask = np.int64(0)
                for f in range(F):
                    if q_ring[cur, slot, f] != q_ring[sri, slot, f]:
                        mask |= np.int64(1) << f
                pos = _put(out, pos, mask)
                for f in range(F):
                    if (mask >> f) & 1:
                        pos = _put(out, pos, _zz(np.int64(q_ring[cur, slot, f]) - np.int64(q_ring[sri, slot, f])))
            else:
                pos = _put(out, pos, ABS)
                for f in range(F):
                    pos = _put(out, pos, _zz(q_ring[cur, slot, f]))
    upd_bytes = pos - upd_start
    pos = _put(out, pos, n_sel[K_ENTER])
    prev_id = np.int64(0)
    for t in range(nc):
        if c_kind[t] == K_ENTER and c_sel[t]:
            eid = np.int64(vis_ids[c_ref[t]])
            slot = eid & SLOT_MASK
            pos = _put(out, pos, eid - prev_id)
            prev_id = eid
            for f in range(F):
                pos = _put(out, pos, _zz(q_ring[cur, slot, f]))

    # -- the client's known set after this snapshot (merge order = ascending id), reset priorities
    nk = 0
    deferred = 0
    for t in range(nc):
        kind = c_kind[t]
        sel = c_sel[t]
        eid = vis_ids[c_ref[t]] if kind == K_ENTER else base_ids[c_ref[t]]
        slot = np.int64(eid) & SLOT_MASK
        if kind == K_SAME or (sel and kind != K_LEAVE):
            new_ids[nk] = eid
            new_src[nk] = seq
            nk += 1
        elif not sel and kind != K_ENTER:
            new_ids[nk] = eid
            new_src[nk] = base_src[c_ref[t]]
            nk += 1
        if kind != K_SAME:
            if sel:
                prio[slot] = 0.0
            else:
                deferred += 1
    stats[ST_BYTES] = pos
    stats[ST_KNOWN] = nk
    stats[ST_LEAVE] = n_sel[K_LEAVE]
    stats[ST_UPDATE] = n_sel[K_UPDATE]
    stats[ST_ENTER] = n_sel[K_ENTER]
    stats[ST_DEFERRED] = deferred
    stats[ST_UPDATE_BYTES] = upd_bytes
    stats[ST_CANDIDATES] = nc - n_kind[K_SAME]
    return pos


@njit(cache=True)
def decode_body(
    buf: np.ndarray,
    base_ids: np.ndarray,
    base_q: np.ndarray,
    work_q: np.ndarray,
    removed: np.ndarray,
    e_ids: np.ndarray,
    e_q: np.ndarray,
    out_ids: np.ndarray,
    out_q: np.ndarray,
) -> int:
    """Apply a delta body to a baseline (base_ids uint32[m] sorted, base_q int32[m, F]).

    Scratch: work_q int32[m, F], removed uint8[m], e_ids uint32[E], e_q int32[E, F] with
    E >= len(buf) // (F + 1) + 1. Output: out_ids uint32[m + E], out_q int32[m + E, F]
    (sorted by id). Returns the entity count, or a negative error code on a malformed body
    (-1 truncated, -2 bad index/mask, -3 an entering id already present, -4 trailing bytes).
    """
    m = base_ids.shape[0]
    F = base_q.shape[1]
    ABS = np.int64(1) << F
    for t in range(m):
        removed[t] = 0
        for f in range(F):
            work_q[t, f] = base_q[t, f]
    pos = 0
    n, pos = _get(buf, pos)
    if pos < 0:
        return -1
    prev = np.int64(-1)
    for _ in range(n):
        g, pos = _get(buf, pos)
        if pos < 0:
            return -1
        idx = prev + 1 + g
        if idx >= m:
            return -2
        removed[idx] = 1
        prev = idx
    n, pos = _get(buf, pos)
    if pos < 0:
        return -1
    prev = np.int64(-1)
    for _ in range(n):
        g, pos = _get(buf, pos)
        if pos < 0:
            return -1
        idx = prev + 1 + g
        if idx >= m or removed[idx]:
            return -2
        prev = idx
        mask, pos = _get(buf, pos)
        if pos < 0:
            return -1
        if mask == ABS:
            for f in range(F):
                z, pos = _get(buf, pos)
                if pos < 0:
                    return -1
                work_q[idx, f] = _unzz(z)
        elif mask == 0 or mask > ABS:
            return -2
        else:
            for f in range(F):
                if (mask >> f) & 1:
                    z, pos = _get(buf, pos)
                    if pos < 0:
                        return -1
                    work_q[idx, f] = np.int64(work_q[idx, f]) + _unzz(z)
    n, pos = _get(buf, pos)
    if pos < 0:
        return -1
    if n > e_ids.shape[0]:
        return -2
    prev_id = np.int64(0)
    for e in range(n):
        g, pos = _get(buf, pos)
        if pos < 0:
            return -1
        eid = prev_id + g
        if (e > 0 and g == 0) or eid > 0xFFFFFFFF or eid == 0:
            return -2
        prev_id = eid
        e_ids[e] = eid
        for f in range(F):
            z, pos = _get(buf, pos)
            if pos < 0:
                return -1
            e_q[e, f] = _unzz(z)
    if pos != buf.shape[0]:
        return -4
    # merge the surviving baseline with the entering ids
    i = 0
    e = 0
    o = 0
    while i < m or e < n:
        if i < m and removed[i]:
            i += 1
            continue
        if e >= n or (i < m and base_ids[i] < e_ids[e]):
            out_ids[o] = base_ids[i]
            for f in range(F):
                out_q[o, f] = work_q[i, f]
            i += 1
        elif i >= m or e_ids[e] < base_ids[i]:
            out_ids[o] = e_ids[e]
            for f in range(F):
                out_q[o, f] = e_q[e, f]
            e += 1
        else:
            return -3
        o += 1
    return o


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
def encode_batch(
    vis_ids: np.ndarray,
    vis_off: np.ndarray,
    rows: np.ndarray,
    base_ids: np.ndarray,
    base_src: np.ndarray,
    base_off: np.ndarray,
    q_ring: np.ndarray,
    ring_seq: np.ndarray,
    seq: Int,
    px: np.ndarray,
    py: np.ndarray,
    view: np.ndarray,
    prio: np.ndarray,
    clients: np.ndarray,
    budget: Int,
    tick: Int,
    baselines: np.ndarray,
    ack_seqs: np.ndarray,
    frames: np.ndarray,
    frame_off: np.ndarray,
    new_ids: np.ndarray,
    new_src: np.ndarray,
    new_off: np.ndarray,
    out: np.ndarray,
    c_kind: np.ndarray,
    c_ref: np.ndarray,
    c_cost: np.ndarray,
    c_prio: np.ndarray,
    c_sel: np.ndarray,
    stats: np.ndarray,
) -> int:
    """`encode_client` for a group of clients in one call, each body wrapped in its msgpack delta
    frame ``{"t":"d","k":tick,"b":baseline,"a":ack_seq,"e":bin}`` (byte-identical to
    ``msgpack.packb``).

    Client b (clients[b], a row of prio) sees vis_ids[vis_off[rows[b]]:vis_off[rows[b] + 1]];
    its baseline is base_ids/base_src[base_off[b]:base_off[b + 1]]; view[b] = (x, y, radius).
    Output: frame b = frames[frame_off[b]:frame_off[b + 1]]; its known set after this snapshot =
    new_ids/new_src[new_off[b]:new_off[b + 1]]; stats[b] = encode_client's stats. ``frames`` must
    hold every frame (body bound + 46 header bytes each), new_ids/new_src the sum of m + k, and
    out/c_* the largest client's (see `encode_client`). Returns the total frame bytes.
    """
    nb = clients.shape[0]
    fpos = 0
    npos = 0
    frame_off[0] = 0
    new_off[0] = 0
    for b in range(nb):
        r = rows[b]
        vis = vis_ids[vis_off[r] : vis_off[r + 1]]
        bi = base_ids[base_off[b] : base_off[b + 1]]
        bs = base_src[base_off[b] : base_off[b + 1]]
        need = bi.shape[0] + vis.shape[0]
        st = stats[b]
        n = encode_client(
            vis, bi, bs, q_ring, ring_seq, seq, px, py, view[b, 0], view[b, 1], view[b, 2], prio[clients[b]],
            budget, out, new_ids[npos : npos + need], new_src[npos : npos + need], c_kind, c_ref, c_cost,
            c_prio, c_sel, st,
        )  # fmt: skip
        npos += st[ST_KNOWN]
        new_off[b + 1] = npos
        p = fpos
        frames[p] = np.uint8(0x85)  # fixmap(5)
        p = _mp_key(frames, p + 1, 116)  # "t"
        p = _mp_key(frames, p, 100)  # "d"
        p = _mp_key(frames, p, 107)  # "k"
        p = _mp_uint(frames, p, tick)
        p = _mp_key(frames, p, 98)  # "b"
        p = _mp_uint(frames, p, baselines[b])
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
    return fpos
