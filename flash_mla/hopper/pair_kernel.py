"""Paired ("seesaw") Hopper MLA decoding kernel: two warpgroups, pages taken two at a time (opt-in, not the default).

After FlashMLA's schedule (csrc/sm90/decode/dense/splitkv_mla.cuh and its deep-dive note), written in Gluon. One
CTA = 64 packed query rows x one scheduler part; 8 warps = two warpgroups, each holding half of the ``64 x 512`` fp32
output (64 x 256 = 128 registers per thread). Pages of a chunk are taken in pairs (k0, k1): k0 lives in ring stage
0, k1 in stage 1. Warpgroup 0 computes ``S0 = Q K0^T``, warpgroup 1 ``S1 = Q K1^T`` (each a full 64 x 64 S, Q read
once per page). One running max ``m`` lives in shared memory. Per pair:

=====================================================  =======================================================
warpgroup 0                                             warpgroup 1
=====================================================  =======================================================
softmax(S0) against m -> m_a, sc0, P0; publish all     (wait) O1 *= sc0; O1 += P0 V0[:, 256:] (async) while
three (P0 over stage 0's rope slot)                     softmax(S1) against m_a -> m_b, sc1, P1; publish all
O0 *= sc0; O0 += P0 V0[:, :256] (P0 from registers)     P0 V0 done: refill V0-right + rope with page k0 + 2
refill V0-left with page k0 + 2                         O1 *= sc1; O1 += P1 V1[:, 256:] (P1 from registers)
(wait) O0 *= sc1; O0 += P1 V1[:, :256] (P1 from smem)   refill V1-right + rope with page k1 + 2
refill V1-left with page k1 + 2; S0' = Q K0'^T          S1' = Q K1'^T, right half first, as the halves land
=====================================================  =======================================================

So one warpgroup's softmax runs while the other's GEMMs keep the tensor cores busy, and each half of a page is
refilled by the warpgroup that last reads it as soon as its P V is done. Warpgroup 1 folds P0 in before its own
softmax (O1 = (O1 sc0 + P0 V0R) sc1 + P1 V1R), so P0 is published unscaled together with the max. Pages are loaded
in two halves (latent columns 0-255 as one 4 x 64 x 64 TMA box; columns 256-511 + rope), one mbarrier per half.

Hand-offs between the warpgroups use hardware named barriers (``bar.arrive`` by the producer, ``bar.sync`` by the
consumer, 256 threads): ids ``BAR_*`` below (Triton's own partition barriers use 0-2).

A page that does not exist (an odd page count: the last pair has no k1) is loaded from page 0 of the cache (the
masked page-table read), its scores are masked to -inf and its V rows zeroed before the P V, so its data never
reaches O. Rows of the last page past the chunk end are zeroed in V likewise (they may hold NaN).

Measured on H200 (docs/perf-notes.md): correct, but slower than the default warp-specialized kernel
(``ws_kernel``): the half-page refills are throughput-bound and one load latency stays on every pair's period.
"""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)

from .kernel import _part_meta, _split_slot, _ss_chunk, _ss_zero_v, _store_lse, _store_o
from .ws_kernel import _named_bar, _stamp

NUM_WARPS = 4          # default partition = warpgroup 0; warpgroup 1 is the one worker partition
                       # (8 warps in all: up to 255 registers per thread at launch, no maxnreg)
WG1_REGS = 240         # setmaxnreg of warpgroup 1
V_BOX = 4              # 64-column tiles per latent TMA box: a page is loaded in halves
TRACE_BUF = None       # diagnostics: an int64 cuda tensor of 256 * 16 -> per-pair SM clocks of CTA 0 (TRACE)

BAR_CTA = gl.constexpr(8)      # both warpgroups: chunk boundaries, row-sum exchange
BAR_SC0 = gl.constexpr(9)      # wg0 -> wg1: m_a (in sM), sc0 and P0 of page k0 published
BAR_SC1 = gl.constexpr(10)     # wg1 -> wg0: m_b (in sM), sc1 and P1 of page k1 published
M_INIT = gl.constexpr(-1.0e30)              # running max before the first key (finite: no inf - inf)


@gluon.jit
def _bar(bar_id: gl.constexpr, ARRIVE: gl.constexpr):
    """Named barrier over both warpgroups (256 threads): ``bar.arrive`` (producer) or ``bar.sync`` (consumer).
    bar.arrive -> bar.sync orders the producer's earlier shared-memory writes before the consumer's reads."""
    _named_bar(bar_id, 256, ARRIVE)


@gluon.jit
def _load_half(k_desc, v_desc, kv_smem, kr_smem, bars, STAGE: gl.constexpr, H: gl.constexpr, page,
               PAGE: gl.constexpr, CHUNK: gl.constexpr):
    """TMA half ``H`` of cache page ``page`` into ring stage ``STAGE`` on barrier (STAGE, H): H = 0 the latent
    columns 0-255 (one 4 x 64 x 64 box), H = 1 the latent columns 256-511 and the 64 rope columns."""
    row = page * PAGE
    bar = bars.index(2 * STAGE + H)
    NB: gl.constexpr = v_desc.block_type.shape[0]          # 64-column tiles per box (4)
    tile_bytes: gl.constexpr = PAGE * CHUNK * k_desc.dtype.primitive_bitwidth // 8
    mbarrier.expect(bar, (NB + H) * tile_bytes)
    kv3 = kv_smem.index(STAGE)._reinterpret(v_desc.dtype, [2 * NB, PAGE, CHUNK], v_desc.layout)
    tma.async_copy_global_to_shared(v_desc, [H * NB, row, 0], bar, kv3.slice(H * NB, NB, dim=0))
    if H == 1:
        tma.async_copy_global_to_shared(k_desc, [row, 2 * NB * CHUNK], bar, kr_smem.index(STAGE))


@gluon.jit
def _qk_half(s, H: gl.constexpr, first: gl.constexpr, q_smem, qr_smem, kv_smem, kr_smem, bars, STAGE: gl.constexpr,
             ph):
    """Wait for half ``H`` of the page in ``STAGE`` and issue S (+)= Q[:, half] K[:, half]^T (async); half 1
    includes the rope columns."""
    HW: gl.constexpr = q_smem.shape[1] // 2
    mbarrier.wait(bars.index(2 * STAGE + H), ph)
    s = warpgroup_mma(q_smem.slice(H * HW, HW, dim=1), kv_smem.index(STAGE).slice(H * HW, HW, dim=1).permute((1, 0)),
                      s, use_acc=not first, is_async=True)
    if H == 1:
        s = warpgroup_mma(qr_smem, kr_smem.index(STAGE).permute((1, 0)), s, is_async=True)
    return s


@gluon.jit
def _scores(s, n, lim, lim_lo, sm_scale_log2, PAGE: gl.constexpr):
    """Scaled base-2 scores of page ``n``; keys at or past a row's ``lim`` (or a missing page) -> -inf."""
    if (n + 1) * PAGE > lim_lo:
        cols = gl.arange(0, PAGE, layout=gl.SliceLayout(0, s.type.layout))
        sv = gl.where(cols[None, :] < (lim - n * PAGE)[:, None], s * sm_scale_log2, float("-inf"))
    else:
        sv = s * sm_scale_log2
    return sv


@gluon.jit
def _stage_q_cols(q_ptr, bi, stride_qb, stride_qs, stride_qh, m0, R, H_Q, q_smem, qr_smem,
                  C0: gl.constexpr, C1: gl.constexpr, CHUNK: gl.constexpr):
    """Column chunks C0 .. C1-1 (64 columns each; chunk 8 = rope) of the Q tile -> shared memory (rows past R: 0)."""
    BLOCK_M: gl.constexpr = q_smem.shape[0]
    NCHUNK_V: gl.constexpr = q_smem.shape[1] // CHUNK
    ld_layout: gl.constexpr = gl.BlockedLayout([1, 8], [8, 4], [4, 1], [1, 0])
    q_base = q_ptr + bi.to(gl.int64) * stride_qb
    rows = m0 + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, ld_layout))
    cols = gl.arange(0, CHUNK, layout=gl.SliceLayout(0, ld_layout))
    row_off = (rows // H_Q).to(gl.int64) * stride_qs + (rows % H_Q).to(gl.int64) * stride_qh
    for c in gl.static_range(C0, C1):
        qt = gl.load(q_base + row_off[:, None] + (c * CHUNK + cols)[None, :], mask=(rows < R)[:, None], other=0.0)
        if c < NCHUNK_V:
            q_smem.slice(c * CHUNK, CHUNK, dim=1).store(qt)
        else:
            qr_smem.store(qt)


@gluon.jit
def _wg0_pair(s, acc, l_i, ph, k0, n_end, end, lim, lim_lo, sm_scale_log2, bt_row,
              q_smem, qr_smem, kv_smem, kr_smem, p0_smem, p1_smem, sm_smem, sc0_smem, sc1_smem, bars, k_desc,
              v_desc, LAST: gl.constexpr, PAGE: gl.constexpr, CHUNK: gl.constexpr, trace_ptr, it,
              TRACE: gl.constexpr):
    """Warpgroup 0's share of pair (k0, k0 + 1); ``s`` = S of page k0. Returns S of page k0 + 2 (unless LAST)."""
    dtype: gl.constexpr = q_smem.dtype
    HALF: gl.constexpr = acc.shape[1]
    o_layout: gl.constexpr = acc.type.layout
    o_row: gl.constexpr = gl.SliceLayout(1, o_layout)
    s_row: gl.constexpr = gl.SliceLayout(1, s.type.layout)
    a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    ld_layout: gl.constexpr = gl.BlockedLayout([1, 8], [8, 4], [4, 1], [1, 0])

    _stamp(trace_ptr, it, 0, TRACE)
    if not LAST:   # block-table entries of the next pair, read early (off the refill path)
        pg0 = gl.load(bt_row + k0 + 2)
        pg1 = gl.load(bt_row + k0 + 3, mask=k0 + 3 < n_end, other=0)
    # ---- softmax of page k0 against the running max m; publish m_a, sc0 and P0 together ----
    sv = _scores(s, k0, lim, lim_lo, sm_scale_log2, PAGE)
    m_old = sm_smem.load(s_row)
    m_new = gl.maximum(m_old, gl.max(sv, axis=1))
    sc0 = gl.exp2(m_old - m_new)
    p = gl.exp2(sv - m_new[:, None])
    l_i = l_i * sc0 + gl.sum(p, axis=1)
    pb = p.to(dtype)
    sm_smem.store(m_new)
    sc0_smem.store(sc0)
    p0_smem.store(pb)
    fence_async_shared()
    _bar(BAR_SC0, True)
    _stamp(trace_ptr, it, 1, TRACE)
    # ---- O0 = O0 * sc0 + P0 V0-left (P0 from registers) ----
    kv0 = kv_smem.index(0)
    _ss_zero_v(kv0, end - k0 * PAGE, 0, ld_layout, PAGE, HALF, CHUNK)
    acc = acc * gl.convert_layout(sc0, o_row)[:, None]
    acc = warpgroup_mma(gl.convert_layout(pb, a_layout), kv0.slice(0, HALF, dim=1), acc, is_async=True)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
    _stamp(trace_ptr, it, 2, TRACE)
    # ---- V0-left is free: start the next pair's first page; take warpgroup 1's max, sc1 and P1 ----
    if not LAST:
        _load_half(k_desc, v_desc, kv_smem, kr_smem, bars, 0, 0, pg0, PAGE, CHUNK)
    _bar(BAR_SC1, False)
    _stamp(trace_ptr, it, 3, TRACE)
    sc1 = sc1_smem.load(s_row)
    l_i = l_i * sc1
    kv1 = kv_smem.index(1)
    _ss_zero_v(kv1, end - (k0 + 1) * PAGE, 0, ld_layout, PAGE, HALF, CHUNK)
    # ---- O0 = O0 * sc1 + P1 V1-left (P1 from warpgroup 1 through shared memory) ----
    acc = acc * gl.convert_layout(sc1, o_row)[:, None]
    acc = warpgroup_mma(p1_smem, kv1.slice(0, HALF, dim=1), acc, is_async=True)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
    _stamp(trace_ptr, it, 4, TRACE)
    if not LAST:
        # V1-left free: the next pair's second page; then S of page k0 + 2, half by half as it lands
        _load_half(k_desc, v_desc, kv_smem, kr_smem, bars, 1, 0, pg1, PAGE, CHUNK)
        s = _qk_half(s, 0, True, q_smem, qr_smem, kv_smem, kr_smem, bars, 0, ph)
        _stamp(trace_ptr, it, 5, TRACE)
        s = _qk_half(s, 1, False, q_smem, qr_smem, kv_smem, kr_smem, bars, 0, ph)
        s = warpgroup_mma_wait(num_outstanding=0, deps=(s,))
        _stamp(trace_ptr, it, 6, TRACE)
        ph = ph ^ 1
    return s, acc, l_i, ph


@gluon.jit
def _wg1_pair(s, acc, l_i, ph, k0, n_end, end, lim, lim_lo, sm_scale_log2, bt_row,
              q_smem, qr_smem, kv_smem, kr_smem, p0_smem, p1_smem, sm_smem, sc0_smem, sc1_smem, bars, k_desc,
              v_desc, LAST: gl.constexpr, PAGE: gl.constexpr, CHUNK: gl.constexpr, trace_ptr, it,
              TRACE: gl.constexpr):
    """Warpgroup 1's share of pair (k0, k0 + 1); ``s`` = S of page k0 + 1 (garbage if it does not exist).
    Returns S of page k0 + 3 (unless LAST)."""
    dtype: gl.constexpr = q_smem.dtype
    HALF: gl.constexpr = acc.shape[1]
    o_layout: gl.constexpr = acc.type.layout
    o_row: gl.constexpr = gl.SliceLayout(1, o_layout)
    s_row: gl.constexpr = gl.SliceLayout(1, s.type.layout)
    a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    ld_layout: gl.constexpr = gl.BlockedLayout([1, 8], [8, 4], [4, 1], [1, 0])
    k1 = k0 + 1

    _stamp(trace_ptr, it, 8, TRACE)
    if not LAST:   # block-table entries of the next pair, read early (off the refill path)
        pg0 = gl.load(bt_row + k0 + 2)
        pg1 = gl.load(bt_row + k0 + 3, mask=k0 + 3 < n_end, other=0)
    sv = _scores(s, k1, lim, lim_lo, sm_scale_log2, PAGE)
    # ---- O1 = O1 * sc0 + P0 V0-right first (P0 unscaled, relative to m_a), under our softmax ----
    _bar(BAR_SC0, False)
    _stamp(trace_ptr, it, 9, TRACE)
    kv0 = kv_smem.index(0)
    _ss_zero_v(kv0, end - k0 * PAGE, 1, ld_layout, PAGE, HALF, CHUNK)
    sc0 = sc0_smem.load(s_row)
    acc = acc * gl.convert_layout(sc0, o_row)[:, None]
    acc = warpgroup_mma(p0_smem, kv0.slice(HALF, HALF, dim=1), acc, is_async=True)
    # ---- softmax of page k1 against m_a; publish m_b, sc1 and P1 together ----
    m_old = sm_smem.load(s_row)
    m_new = gl.maximum(m_old, gl.max(sv, axis=1))
    sc1 = gl.exp2(m_old - m_new)
    p = gl.exp2(sv - m_new[:, None])
    l_i = l_i * (sc0 * sc1) + gl.sum(p, axis=1)
    pb = p.to(dtype)
    sm_smem.store(m_new)
    sc1_smem.store(sc1)
    p1_smem.store(pb)
    fence_async_shared()
    _bar(BAR_SC1, True)
    _stamp(trace_ptr, it, 10, TRACE)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
    _stamp(trace_ptr, it, 11, TRACE)
    if not LAST:   # P0 V0 done: V0-right + rope (and P0) free -> the next pair's first page
        _load_half(k_desc, v_desc, kv_smem, kr_smem, bars, 0, 1, pg0, PAGE, CHUNK)
    # ---- O1 = O1 * sc1 + P1 V1-right (P1 from registers) ----
    kv1 = kv_smem.index(1)
    _ss_zero_v(kv1, end - k1 * PAGE, 1, ld_layout, PAGE, HALF, CHUNK)
    acc = acc * gl.convert_layout(sc1, o_row)[:, None]
    acc = warpgroup_mma(gl.convert_layout(pb, a_layout), kv1.slice(HALF, HALF, dim=1), acc, is_async=True)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
    _stamp(trace_ptr, it, 12, TRACE)
    if not LAST:
        # V1-right + rope free -> the next pair's second page; S of page k0 + 3 (right half first: ours)
        _load_half(k_desc, v_desc, kv_smem, kr_smem, bars, 1, 1, pg1, PAGE, CHUNK)
        s = _qk_half(s, 1, True, q_smem, qr_smem, kv_smem, kr_smem, bars, 1, ph)
        s = _qk_half(s, 0, False, q_smem, qr_smem, kv_smem, kr_smem, bars, 1, ph)
        s = warpgroup_mma_wait(num_outstanding=0, deps=(s,))
        _stamp(trace_ptr, it, 14, TRACE)
        ph = ph ^ 1
    return s, acc, l_i, ph


@gluon.jit
def _pair_step(WG: gl.constexpr, LAST: gl.constexpr, s, acc, l_i, ph, k0, n_end, end, lim, lim_lo, sm_scale_log2,
               bt_row, q_smem, qr_smem, kv_smem, kr_smem, p0_smem, p1_smem, sm_smem, sc0_smem, sc1_smem, bars,
               k_desc, v_desc, PAGE: gl.constexpr, CHUNK: gl.constexpr, trace_ptr, it, TRACE: gl.constexpr):
    """Warpgroup ``WG``'s share of the pair starting at page k0 (``_wg0_pair`` / ``_wg1_pair``)."""
    if WG == 0:
        s, acc, l_i, ph = _wg0_pair(s, acc, l_i, ph, k0, n_end, end, lim, lim_lo, sm_scale_log2, bt_row,
                                    q_smem, qr_smem, kv_smem, kr_smem, p0_smem, p1_smem, sm_smem, sc0_smem, sc1_smem,
                                    bars, k_desc, v_desc, LAST, PAGE, CHUNK, trace_ptr, it, TRACE)
    else:
        s, acc, l_i, ph = _wg1_pair(s, acc, l_i, ph, k0, n_end, end, lim, lim_lo, sm_scale_log2, bt_row,
                                    q_smem, qr_smem, kv_smem, kr_smem, p0_smem, p1_smem, sm_smem, sc0_smem, sc1_smem,
                                    bars, k_desc, v_desc, LAST, PAGE, CHUNK, trace_ptr, it, TRACE)
    return s, acc, l_i, ph


@gluon.jit
def _pair_wg(WG: gl.constexpr,
             q_ptr, stride_qb, stride_qs, stride_qh,
             q_smem, qr_smem, kv_smem, kr_smem, p1_smem, sm_smem, sc0_smem, sc1_smem, lx_smem, bars,
             k_desc, v_desc, bt_ptr, stride_bt, seqlens_ptr, meta_ptr, num_splits_ptr,
             out_ptr, lse_ptr, oacc_ptr, stride_oacc_b, stride_oacc_r, lacc_ptr, stride_lacc_b,
             sm_scale_log2, R, H_Q, S_Q,
             CAUSAL: gl.constexpr, BLOCK_M: gl.constexpr, PAGE: gl.constexpr, D: gl.constexpr, DV: gl.constexpr,
             CHUNK: gl.constexpr, trace_ptr, TRACE: gl.constexpr):
    """One warpgroup (``WG`` 0 or 1) of the paired kernel: all chunks of this CTA's scheduler part."""
    HALF: gl.constexpr = DV // 2
    NCHUNK: gl.constexpr = D // CHUNK
    dtype: gl.constexpr = q_smem.dtype
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, PAGE, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, HALF, 16])
    s_row: gl.constexpr = gl.SliceLayout(1, s_layout)
    o_row: gl.constexpr = gl.SliceLayout(1, o_layout)
    o_col: gl.constexpr = gl.SliceLayout(0, o_layout)
    # P0 goes over the rope slot of stage 0 (dead once S0 is done; refilled only after P0 V0-right)
    p0_smem = kr_smem.index(0)

    part = gl.program_id(2)
    m0 = gl.program_id(0) * BLOCK_M
    begin_idx, begin_seqlen, end_idx, end_seqlen, begin_n_split = _part_meta(meta_ptr, part)

    it = 0   # pairs of this CTA (trace index)
    ph = 0   # phase of this warpgroup's stage barriers (stage WG: warpgroup WG is their only waiter)
    s = gl.zeros([BLOCK_M, PAGE], gl.float32, layout=s_layout)
    for bi in range(begin_idx, end_idx + 1):
        L, start, end = _ss_chunk(seqlens_ptr, meta_ptr, part, bi, begin_idx, end_idx, begin_seqlen, end_seqlen)
        no_split = (start == 0) & (end == L)
        if (end > start) | (L == 0):
            n0 = start // PAGE
            n_end = (end + PAGE - 1) // PAGE
            npair = (n_end - n0 + 1) // 2
            bt_row = bt_ptr + bi.to(gl.int64) * stride_bt
            # ---- chunk start: the previous chunk is done on both sides; stage Q (5 + 4 column chunks) ----
            _bar(BAR_CTA, False)
            if WG == 0:
                _stage_q_cols(q_ptr, bi, stride_qb, stride_qs, stride_qh, m0, R, H_Q, q_smem, qr_smem, 0, 5, CHUNK)
                sm_smem.store(gl.full([BLOCK_M], M_INIT, gl.float32, layout=s_row))
            else:
                _stage_q_cols(q_ptr, bi, stride_qb, stride_qs, stride_qh, m0, R, H_Q, q_smem, qr_smem, 5, NCHUNK,
                              CHUNK)
            fence_async_shared()
            if npair > 0:
                nw = n0 + WG
                page = gl.load(bt_row + nw, mask=nw < n_end, other=0)
                _load_half(k_desc, v_desc, kv_smem, kr_smem, bars, WG, 0, page, PAGE, CHUNK)
                _load_half(k_desc, v_desc, kv_smem, kr_smem, bars, WG, 1, page, PAGE, CHUNK)
            _bar(BAR_CTA, False)

            rows_s = m0 + gl.arange(0, BLOCK_M, layout=s_row)
            if CAUSAL:
                lim = gl.minimum(end, L - S_Q + rows_s // H_Q + 1)
                lim_lo = gl.minimum(end, L - S_Q + m0 // H_Q + 1)
            else:
                lim = gl.zeros([BLOCK_M], gl.int32, layout=s_row) + end
                lim_lo = end
            l_i = gl.zeros([BLOCK_M], gl.float32, layout=s_row)
            acc = gl.zeros([BLOCK_M, HALF], gl.float32, layout=o_layout)
            if npair > 0:
                s = _qk_half(s, 0, True, q_smem, qr_smem, kv_smem, kr_smem, bars, WG, ph)
                s = _qk_half(s, 1, False, q_smem, qr_smem, kv_smem, kr_smem, bars, WG, ph)
                s = warpgroup_mma_wait(num_outstanding=0, deps=(s,))
                ph = ph ^ 1
            for i in range(npair - 1):
                s, acc, l_i, ph = _pair_step(WG, False, s, acc, l_i, ph, n0 + 2 * i, n_end, end, lim, lim_lo,
                                             sm_scale_log2, bt_row, q_smem, qr_smem, kv_smem, kr_smem, p0_smem,
                                             p1_smem, sm_smem, sc0_smem, sc1_smem, bars, k_desc, v_desc, PAGE, CHUNK,
                                             trace_ptr, it, TRACE)
                it += 1
            if npair > 0:
                s, acc, l_i, ph = _pair_step(WG, True, s, acc, l_i, ph, n0 + 2 * (npair - 1), n_end, end, lim,
                                             lim_lo, sm_scale_log2, bt_row, q_smem, qr_smem, kv_smem, kr_smem,
                                             p0_smem, p1_smem, sm_smem, sc0_smem, sc1_smem, bars, k_desc, v_desc,
                                             PAGE, CHUNK, trace_ptr, it, TRACE)

            # ---- epilogue: add the two warpgroups' row sums; both are relative to the final max in sM ----
            lx_smem.index(WG).store(l_i)
            _bar(BAR_CTA, False)
            l_i = l_i + lx_smem.index(1 - WG).load(s_row)
            m_i = sm_smem.load(s_row)
            empty = l_i == 0.0
            inv_l = gl.where(empty, 0.0, 1.0 / gl.where(empty, 1.0, l_i))
            slot = _split_slot(num_splits_ptr, bi, begin_idx, begin_n_split, no_split)
            _store_o(acc * gl.convert_layout(inv_l, o_row)[:, None], m0 + gl.arange(0, BLOCK_M, layout=o_row),
                     WG * HALF + gl.arange(0, HALF, layout=o_col), bi, no_split, slot,
                     out_ptr, oacc_ptr, stride_oacc_b, stride_oacc_r, R, DV)
            if WG == 0:
                _store_lse(m_i + gl.log2(gl.where(empty, 1.0, l_i)), empty, rows_s, bi, no_split, slot, lse_ptr,
                           lacc_ptr, stride_lacc_b, R, H_Q, S_Q)


@gluon.jit
def _pair_wg1(q_ptr, stride_qb, stride_qs, stride_qh,
              q_smem, qr_smem, kv_smem, kr_smem, p1_smem, sm_smem, sc0_smem, sc1_smem, lx_smem, bars,
              k_desc, v_desc, bt_ptr, stride_bt, seqlens_ptr, meta_ptr, num_splits_ptr,
              out_ptr, lse_ptr, oacc_ptr, stride_oacc_b, stride_oacc_r, lacc_ptr, stride_lacc_b,
              sm_scale_log2, R, H_Q, S_Q,
              CAUSAL: gl.constexpr, BLOCK_M: gl.constexpr, PAGE: gl.constexpr, D: gl.constexpr, DV: gl.constexpr,
              CHUNK: gl.constexpr, trace_ptr, TRACE: gl.constexpr):
    _pair_wg(1, q_ptr, stride_qb, stride_qs, stride_qh,
             q_smem, qr_smem, kv_smem, kr_smem, p1_smem, sm_smem, sc0_smem, sc1_smem, lx_smem, bars,
             k_desc, v_desc, bt_ptr, stride_bt, seqlens_ptr, meta_ptr, num_splits_ptr,
             out_ptr, lse_ptr, oacc_ptr, stride_oacc_b, stride_oacc_r, lacc_ptr, stride_lacc_b,
             sm_scale_log2, R, H_Q, S_Q, CAUSAL, BLOCK_M, PAGE, D, DV, CHUNK, trace_ptr, TRACE)


@gluon.jit
def mla_decode_pair_kernel(
    q_ptr, stride_qb, stride_qs, stride_qh,
    k_desc, v_desc,
    bt_ptr, stride_bt,
    seqlens_ptr, meta_ptr, num_splits_ptr,
    out_ptr, lse_ptr,
    oacc_ptr, stride_oacc_b, stride_oacc_r,
    lacc_ptr, stride_lacc_b,
    sm_scale_log2,
    R, H_Q, S_Q,
    trace_ptr,
    CAUSAL: gl.constexpr,
    BLOCK_M: gl.constexpr, PAGE: gl.constexpr, D: gl.constexpr, DV: gl.constexpr, CHUNK: gl.constexpr,
    WG1_REGS: gl.constexpr, TRACE: gl.constexpr,
    num_warps: gl.constexpr,
):
    gl.static_assert(num_warps == 4, "default partition = warpgroup 0")
    dtype: gl.constexpr = k_desc.dtype
    # shared memory: Q 72 KB + 2 x 72 KB pages (P0 over stage 0's rope slot) + P1 8 KB
    smem_layout: gl.constexpr = k_desc.layout
    vec_layout: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [0])
    q_smem = gl.allocate_shared_memory(dtype, [BLOCK_M, DV], smem_layout)
    qr_smem = gl.allocate_shared_memory(dtype, [BLOCK_M, D - DV], smem_layout)
    kv_smem = gl.allocate_shared_memory(dtype, [2, PAGE, DV], smem_layout)
    kr_smem = gl.allocate_shared_memory(dtype, [2, PAGE, D - DV], smem_layout)
    p1_smem = gl.allocate_shared_memory(dtype, [BLOCK_M, PAGE], smem_layout)
    sm_smem = gl.allocate_shared_memory(gl.float32, [BLOCK_M], vec_layout)      # running row max (base 2)
    sc0_smem = gl.allocate_shared_memory(gl.float32, [BLOCK_M], vec_layout)     # rescale of page k0
    sc1_smem = gl.allocate_shared_memory(gl.float32, [BLOCK_M], vec_layout)     # rescale of page k1
    lx_smem = gl.allocate_shared_memory(gl.float32, [2, BLOCK_M], vec_layout)   # row sums per warpgroup
    bars = gl.allocate_shared_memory(gl.int64, [4, 1], mbarrier.MBarrierLayout())   # (stage, half)
    for i in gl.static_range(4):
        mbarrier.init(bars.index(i), count=1)
    fence_async_shared()

    gl.warp_specialize([
        (_pair_wg, (0, q_ptr, stride_qb, stride_qs, stride_qh,
                    q_smem, qr_smem, kv_smem, kr_smem, p1_smem, sm_smem, sc0_smem, sc1_smem, lx_smem, bars,
                    k_desc, v_desc, bt_ptr, stride_bt, seqlens_ptr, meta_ptr, num_splits_ptr,
                    out_ptr, lse_ptr, oacc_ptr, stride_oacc_b, stride_oacc_r, lacc_ptr, stride_lacc_b,
                    sm_scale_log2, R, H_Q, S_Q, CAUSAL, BLOCK_M, PAGE, D, DV, CHUNK, trace_ptr, TRACE)),
        (_pair_wg1, (q_ptr, stride_qb, stride_qs, stride_qh,
                     q_smem, qr_smem, kv_smem, kr_smem, p1_smem, sm_smem, sc0_smem, sc1_smem, lx_smem, bars,
                     k_desc, v_desc, bt_ptr, stride_bt, seqlens_ptr, meta_ptr, num_splits_ptr,
                     out_ptr, lse_ptr, oacc_ptr, stride_oacc_b, stride_oacc_r, lacc_ptr, stride_lacc_b,
                     sm_scale_log2, R, H_Q, S_Q, CAUSAL, BLOCK_M, PAGE, D, DV, CHUNK, trace_ptr, TRACE)),
    ], [4], [WG1_REGS])
