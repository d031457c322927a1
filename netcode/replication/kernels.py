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

from sim.entities import SLOT_MASK
from sim.scalars import Float, Int

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
    dirty: np.ndarray,
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
    term); prio: float32[cap] this client's accumulators (updated); dirty: uint8[1], 0 only when
    every entry of ``prio`` is 0 (kept up to date); budget: max body bytes (< 0 = unlimited; must
    be >= header + the largest item, see ``min_budget``); out: uint8 big enough for an unlimited
    body; new_ids/new_src (len >= m + k): the client's known set after this snapshot; c_*: scratch
    (len >= m + k); stats: int64[N_STATS].

    Priorities: every pending item's accumulator grows by its weight each send and is reset when
    the item is sent (or unchanged). When everything fits the budget, every candidate ends at 0,
    so the accumulators are only read and written when the budget binds (or when ``dirty`` says
    some are not 0): a client's row of ``prio`` is usually not touched at all.
    """
    R = q_ring.shape[0]
    F = q_ring.shape[2]
    ABS = np.int64(1) << F
    cur = seq % R
    m = base_ids.shape[0]
    k = vis_ids.shape[0]
    nc = 0
    n_leave = 0
    n_update = 0
    n_enter = 0
    n_same = 0
    total = 0
    i = 0
    j = 0
    # -- candidates: merge the baseline ids with the visible ids (both sorted)
    while i < m or j < k:
        if j >= k or (i < m and base_ids[i] < vis_ids[j]):
            c_kind[nc] = K_LEAVE
            c_ref[nc] = i
            cost = _vlen(i)
            n_leave += 1
            i += 1
        elif i >= m or vis_ids[j] < base_ids[i]:
            slot = np.int64(vis_ids[j]) & SLOT_MASK
            cost = _vlen(vis_ids[j])
            for f in range(F):
                cost += _vlen(_zz(q_ring[cur, slot, f]))
            c_kind[nc] = K_ENTER
            c_ref[nc] = j
            n_enter += 1
            j += 1
        else:
            slot = np.int64(vis_ids[j]) & SLOT_MASK
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
                cost = 0
                n_same += 1
            else:
                c_kind[nc] = K_UPDATE
                cost += _vlen(i) + _vlen(mask)
                n_update += 1
            i += 1
            j += 1
        c_cost[nc] = cost
        total += cost
        c_sel[nc] = 1
        nc += 1

    # -- selection under the budget (cost bounds are exact or over: gaps <= indexes, counts <= candidates)
    binds: Any = False
    avail: Any = 0
    if budget >= 0:
        avail = budget - _vlen(n_leave) - _vlen(n_update) - _vlen(n_enter)
        binds = total > avail
    deferred = 0
    if binds or dirty[0]:
        near = radius > 0.0
        inv_r = 1.0 / radius if near else 0.0
        for t in range(nc):
            kind = c_kind[t]
            eid = vis_ids[c_ref[t]] if kind == K_ENTER else base_ids[c_ref[t]]
            slot = np.int64(eid) & SLOT_MASK
            if kind == K_SAME:
                prio[slot] = 0.0
                c_prio[t] = 0.0
                continue
            if kind == K_LEAVE:
                w = W_LEAVE
            else:
                w = W_BASE
                if near:
                    dx = px[slot] - vx
                    dy = py[slot] - vy
                    tt = 1.0 - np.sqrt(dx * dx + dy * dy) * inv_r
                    if tt > 0.0:
                        w += W_NEAR * tt
                if kind == K_ENTER:
                    w += W_ENTER
            prio[slot] += np.float32(w)
            c_prio[t] = prio[slot]
    if binds:
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
                deferred += 1
        n_leave = 0
        n_update = 0
        n_enter = 0
        for t in range(nc):
            if c_sel[t]:
                kind = c_kind[t]
                if kind == K_LEAVE:
                    n_leave += 1
                elif kind == K_UPDATE:
                    n_update += 1
                elif kind == K_ENTER:
                    n_enter += 1
    for t in range(nc):
        if c_kind[t] == K_SAME:
            c_sel[t] = 0

    # -- encode
    pos = 0
    pos = _put(out, pos, n_leave)
    prev = -1
    if n_leave:
        for t in range(nc):
            if c_kind[t] == K_LEAVE and c_sel[t]:
                idx = c_ref[t]
                pos = _put(out, pos, idx - prev - 1)
                prev = idx
    pos = _put(out, pos, n_update)
    upd_start = pos
    prev = -1
    if n_update:
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
    pos = _put(out, pos, n_enter)
    prev_id = np.int64(0)
    if n_enter:
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
    reset = binds or dirty[0]
    for t in range(nc):
        kind = c_kind[t]
        sel = c_sel[t]
        if kind == K_ENTER:
            if sel:
                new_ids[nk] = vis_ids[c_ref[t]]
                new_src[nk] = seq
                nk += 1
        elif kind == K_SAME or (sel and kind == K_UPDATE):
            new_ids[nk] = base_ids[c_ref[t]]
            new_src[nk] = seq
            nk += 1
        elif not sel:  # a deferred leave or update: the client keeps what it has
            new_ids[nk] = base_ids[c_ref[t]]
            new_src[nk] = base_src[c_ref[t]]
            nk += 1
        if reset and sel and kind != K_SAME:
            eid = vis_ids[c_ref[t]] if kind == K_ENTER else base_ids[c_ref[t]]
            prio[np.int64(eid) & SLOT_MASK] = 0.0
    if deferred:
        dirty[0] = 1
    elif dirty[0] and not binds:
        # Every candidate is 0 now; the row is clean unless an item deferred earlier has since
        # left both sets (its accumulator waits for it to come back).
        clean = True
        for s in range(prio.shape[0]):
            if prio[s] != 0.0:
                clean = False
                break
        if clean:
            dirty[0] = 0
    stats[ST_BYTES] = pos
    stats[ST_KNOWN] = nk
    stats[ST_LEAVE] = n_leave
    stats[ST_UPDATE] = n_update
    stats[ST_ENTER] = n_enter
    stats[ST_DEFERRED] = deferred
    stats[ST_UPDATE_BYTES] = upd_bytes
    stats[ST_CANDIDATES] = nc - n_same
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
