"""Warp-specialized Hopper MLA decoding kernel with two softmax warpgroups that alternate pages (the default for
more than one 64-row query tile: ``launcher.WS2``).

Why (docs/perf-notes.md, "H200 session 4"): in ``ws_kernel`` one softmax warpgroup runs S(n) = Q K(n)^T and then
the softmax of page n, during which the tensor cores idle (~770 of ~3,440 cycles per page at h_q = 128, s_q = 2).
Here softmax warpgroup ``SW`` (0 or 1) owns the pages with ``page index % 2 == SW`` (page index = position in the
CTA's page sequence, so with the 2-stage ring it always uses ring stage SW): while one runs its softmax, the other's
S runs on the tensor cores.

The online softmax stays exact with one running row max shared by both: for page n the owner waits for M(n-1)
(published by the other warpgroup, ``mx_smem[(n-1) % 2]`` / ``m_ready``), takes M(n) = max(M(n-1), rowmax S(n)),
publishes it, and hands the P·V warpgroups P(n) = exp2(S(n) - M(n)) and alpha(n) = exp2(M(n-1) - M(n)) exactly as
``ws_kernel`` does, so the P·V warpgroups are ``ws_kernel._ws_pv``. Each softmax warpgroup keeps the
row sum of its own pages relative to the max of its last page; at a chunk's end warpgroup 1 hands its (l, m) to
warpgroup 0, which combines them, writes lse and hands 1/l to the P·V warpgroups. Q is staged by both (half each)
once both are done with the previous chunk's S (``q_free`` / ``q_ready``).

Registers: 16 warps share 65,536 (launch: 128 each): P·V 2 x 160, softmax 2 x 96.
"""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    warpgroup_mma,
    warpgroup_mma_wait,
)

from . import asm_mma as AM
from . import cluster as CL
from .kernel import _part_meta, _running_max, _ss_chunk, _stage_q
from .ws_kernel import (P_BAR, _any_ne, _finish_chunk, _has_work_after, _issue_q, _named_bar, _pdl_start,
                        _publish_p, _row_limits, _scaled_scores, _stamp, _ws_pv, _ws_shared)

NUM_WARPS = 4          # default partition = P·V warpgroup 0 (gets the rest of the registers: 160)
PV_REGS = 160          # setmaxnreg of P·V warpgroup 1
SM_REGS = 96           # setmaxnreg of each softmax warpgroup
MAXNREG = 128          # 16 warps x 128 = 65,536
CHUNK_WAIT = 2         # latent pieces per page: a page lands as its rope columns + CHUNK_WAIT latent pieces with
                       # their own mbarriers, and S starts before it has landed (0: one mbarrier per page; 2 or 4;
                       # docs/perf-notes.md "H200 session 5")
LAZY = 8               # the shared row max moves only when a page's row max exceeds it by more than LAZY (log2
                       # units; P <= 2^LAZY), so alpha is exactly 1 on almost every page and the P·V warpgroups
                       # skip the O rescale (a flag per page); 0: the exact running max, rescale every page
NAMED = 1              # as ws_kernel.NAMED (P published, stage read on named barriers instead of mbarriers);
                       # 2 (opt-in; H100: correct, not faster, docs/perf-notes.md "Session 12"): also the running
                       # max M(n) handed between the softmax warpgroups (named barriers M_BAR + SW: the producer's
                       # bar.arrive, the other's bar.sync)
M_BAR = gl.constexpr(6)   # named barrier ids 6 / 7 (NAMED = 2: "M of a page of softmax warpgroup SW published")
MC = 0                 # 1 (opt-in; H100: 2-6 % slower, docs/perf-notes.md "Session 11"): 2-CTA clusters along the
                       # row tiles (even tile counts), each page multicast into both CTAs, half by each
                       # (ws_kernel._issue_mc; inline PTX in cluster.py, shared-memory offsets and tensor-map
                       # parameters from a first compile: launcher._install_cluster_kernel; docs/cluster-multicast.md)
OWN = None             # each P.V warpgroup refills the latent pieces it reads itself, each once its accumulator's
                       # wgmma is done (no cross-warpgroup wait; the rope piece, which holds P, after both as before);
                       # S runs over the pieces in landing order, rope last. Needs CHUNK_WAIT = 4 (OWN_CHUNK_WAIT).
                       # None (default): on when the query has at most OWN_TILES 64-row tiles (H100: 0.7-2.9 % faster
                       # with 2 tiles, 0.9-3.5 % slower with 4; docs/perf-notes.md "Session 11"); 0 / 1 force it
OWN_TILES = 2
OWN_CHUNK_WAIT = 4
Q_TMA = 1              # as ws_kernel.Q_TMA (1, the default: each softmax warpgroup TMAs its half of the Q tile; 2: the
                       # owner of a chunk's last page TMAs the next chunk's whole Q tile after its page loop, before
                       # the chunk's epilogue, on its own mbarrier q_land; 0: plain loads)
PDL = 0                # as ws_kernel.PDL (programmatic dependent launch, opt-in; not with MC: the launcher turns it
                       # off)
ASM_S = 1              # 1 (the default since 2026-12-07; H100: 0.1-2.1 % faster on the 12 compute-bound configs,
                       # docs/perf-notes.md "Session 21"): the softmax warpgroups issue S's wgmmas from inline PTX
                       # with their descriptors on the uniform datapath (asm_mma.py): ~130 SASS instructions of S issue
                       # per page instead of ~320. Shared-memory offsets from a first build (asm_constants; the
                       # launcher compiles twice). Not with MC (which keeps Gluon's S); 0: Gluon's S
ASM_PV = 0             # 1 (opt-in; H100: correct, 1.2-3.5 % slower than without; docs/perf-notes.md "Session 21"):
                       # the P.V warpgroups read P from shared memory once per page (into registers, the A operand of
                       # both m64n128 wgmmas, issued from inline PTX: asm_mma.pv_mma) instead of once per wgmma, 16 KB
                       # less shared-memory traffic per page (of 320); needs PV_REGS >= 176 (192 / 64 with ASM_S).
                       # Offsets as ASM_S. Not with MC
ASM_ZERO = dict(QS_OFF=0, QRS_OFF=0, KVS_OFF=0, KRS_OFF=0)
TRACE_BUF = None       # diagnostics, as ws_kernel.TRACE_BUF (both softmax warpgroups stamp their own pages)
TRACE_MODE = 1         # as ws_kernel.TRACE_MODE


def own_refill(tiles: int, mc: bool = False) -> bool:
    """Whether a launch over ``tiles`` 64-row query tiles uses the own-piece refill (``OWN``; never with ``MC``)."""
    if mc:
        return False
    return bool(OWN) if OWN is not None else tiles <= OWN_TILES


def chunk_wait(own: bool) -> int:
    """Latent pieces per page for a launch: OWN_CHUNK_WAIT with the own-piece refill, else CHUNK_WAIT."""
    return OWN_CHUNK_WAIT if own else int(CHUNK_WAIT)


@gluon.constexpr_function
def _own_tile(ch):
    """OWN: the latent tile that S takes ``ch``-th (pieces land in the order 1, 3, 2, 4: tiles 0 1 | 4 5 | 2 3 | 6 7)."""
    pr = ch // 2
    return (pr % 2) * 4 + (pr // 2) * 2 + ch % 2


@gluon.jit
def _ws2_softmax(SW: gl.constexpr, q_ptr, stride_qb, stride_qs, stride_qh,
                 q_smem, qr_smem, kv_smem, kr_smem, ax_smem, lx_smem, mx_smem, lp_smem, fl_smem,
                 kv_ready, p_ready, l_ready, l_free, m_ready, q_ready, q_free, lp_ready,
                 seqlens_ptr, meta_ptr, num_splits_ptr, lse_ptr, lacc_ptr, stride_lacc_b,
                 sm_scale_log2, R, H_Q, S_Q,
                 CAUSAL: gl.constexpr, BLOCK_M: gl.constexpr, PAGE: gl.constexpr, DV: gl.constexpr,
                 CHUNK: gl.constexpr, trace_ptr, TRACE: gl.constexpr, CW: gl.constexpr, LAZY: gl.constexpr,
                 NAMED: gl.constexpr = 0, OWN: gl.constexpr = 0, MC: gl.constexpr = 0, q_desc=None,
                 Q_TMA: gl.constexpr = 0, q_land=None, ASM_S: gl.constexpr = 0, QS_OFF: gl.constexpr = 0,
                 QRS_OFF: gl.constexpr = 0, KVS_OFF: gl.constexpr = 0, KRS_OFF: gl.constexpr = 0):
    dtype: gl.constexpr = q_smem.dtype
    BF16: gl.constexpr = dtype == gl.bfloat16
    TILE: gl.constexpr = PAGE * CHUNK * 2                        # bytes of one 64 x 64 tile (16-bit dtypes)
    KV_STAGE: gl.constexpr = KVS_OFF + SW * PAGE * DV * 2        # (ASM_S) this warpgroup's ring stage, latent part
    KR_STAGE: gl.constexpr = KRS_OFF + SW * TILE                 # and rope tile
    if MC:   # (see _ws_pv)
        CL.cluster_sync(CL.warpgroup_tid())
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, PAGE, 16])
    ld_layout: gl.constexpr = gl.BlockedLayout([1, 8], [8, 4], [4, 1], [1, 0])
    s_row: gl.constexpr = gl.SliceLayout(1, s_layout)
    NV: gl.constexpr = DV // CHUNK
    tile_layout: gl.constexpr = kr_smem.layout   # 2-D swizzle of one 64 x 64 tile; in a 3-D view dim 0 is a batch

    part = gl.program_id(2)
    m0 = gl.program_id(0) * BLOCK_M
    begin_idx, begin_seqlen, end_idx, end_seqlen, begin_n_split = _part_meta(meta_ptr, part)
    kv = kv_smem.index(SW)      # pages of this warpgroup always sit in ring stage SW
    kr = kr_smem.index(SW)
    # chunk-major views (8 x 64 x 64) of Q's latent part and of the stage: S runs as a loop over the chunks, so
    # its wgmma descriptors are computed per chunk instead of 36 of them staying live (96 registers here)
    q3 = q_smem._reinterpret(dtype, [NV, BLOCK_M, CHUNK], tile_layout)
    kv3 = kv._reinterpret(dtype, [NV, PAGE, CHUNK], tile_layout)

    s = gl.zeros([BLOCK_M, PAGE], gl.float32, layout=s_layout)
    it0 = 0   # CTA page index of the chunk's first page
    c = 0     # chunks with work
    q_pre = 0   # Q_TMA = 2: this chunk's Q was issued by the owner of the previous chunk's last page, after its S
    for bi in range(begin_idx, end_idx + 1):
        L, start, end = _ss_chunk(seqlens_ptr, meta_ptr, part, bi, begin_idx, end_idx, begin_seqlen, end_seqlen)
        no_split = (start == 0) & (end == L)
        if (end > start) | (L == 0):
            n0 = start // PAGE
            n_end = (end + PAGE - 1) // PAGE
            pre_next = 0   # Q_TMA = 2: the next chunk's Q goes right after this chunk's last S
            if Q_TMA == 2:
                # ---- Q tile by TMA on q_land (one issuer); q_ready: both warpgroups here (orders warpgroup 1's
                # next lp_smem write after warpgroup 0's epilogue reads, as below) ----
                if q_pre == 0:
                    if SW == 0:
                        mbarrier.wait(q_free, (c & 1) ^ 1)
                        _issue_q(q_desc, q_smem, qr_smem, q_land, bi, m0, CHUNK)
                if n_end > n0:
                    pre_next = _has_work_after(bi, seqlens_ptr, meta_ptr, part, begin_idx, end_idx, begin_seqlen,
                                               end_seqlen)
                mbarrier.arrive(q_ready, count=1)
                mbarrier.wait(q_ready, c & 1)
                mbarrier.wait(q_land, c & 1)
                q_pre = 0
            else:
                # ---- Q tile: both warpgroups done with the previous chunk's S -> each stages its half ----
                mbarrier.wait(q_free, (c & 1) ^ 1)
                # SW 0: latent columns 0-255; SW 1: 256-511 and the rope columns
                if Q_TMA:   # by TMA: each warpgroup's expect is one of q_ready's two arrivals
                    _issue_q(q_desc, q_smem, qr_smem, q_ready, bi, m0, CHUNK, SW * (NV // 2),
                             NV // 2 + SW * (NV // 2 + 1))
                else:
                    _stage_q(q_ptr, bi, stride_qb, stride_qs, stride_qh, m0, R, H_Q, q_smem, qr_smem, ld_layout,
                             CHUNK, SW * (NV // 2), NV // 2 + SW * (NV // 2 + 1))
                    fence_async_shared()
                    gl.thread_barrier()
                    mbarrier.arrive(q_ready, count=1)
                mbarrier.wait(q_ready, c & 1)

            rows_s, lim, lim_lo = _row_limits(m0, L, end, H_Q, S_Q, CAUSAL, BLOCK_M, s_row)
            l_w = gl.zeros([BLOCK_M], gl.float32, layout=s_row)                 # row sum of this warpgroup's pages,
            m_w = gl.full([BLOCK_M], float("-inf"), gl.float32, layout=s_row)   # relative to M of its last page
            # the owner of the chunk's last page issues the next chunk's Q (all of it) after its page loop, once
            # both are past their S (Q_TMA = 2)
            early = (pre_next != 0) & ((it0 + n_end - 1 - n0) % 2 == SW)
            for n in range(n0 + (SW + it0) % 2, n_end, 2):
                g = it0 + n - n0                     # CTA page index (g % 2 == SW)
                ph = (g // 2) & 1
                _stamp(trace_ptr, g, 0, TRACE)
                # CW > 0: the page lands in 1 + CW pieces (rope, CW latent pieces) with their own mbarriers: S
                # starts on the rope piece and waits for each latent piece just before its first chunk
                if ASM_S and OWN:   # as below, the wgmmas from inline PTX (asm_mma)
                    mbarrier.wait(kv_ready.index(5 * SW + 1), ph)
                    s = AM.tile_mma(s, QS_OFF, KV_STAGE, True, BF16)
                    s = AM.mma_wait(s, 1)
                    for ch in gl.static_range(1, NV):
                        if ch % 2 == 0:
                            mbarrier.wait(kv_ready.index(5 * SW + 1 + _own_tile(ch) // 2), ph)
                        s = AM.tile_mma(s, QS_OFF + _own_tile(ch) * TILE, KV_STAGE + _own_tile(ch) * TILE, False,
                                        BF16)
                        s = AM.mma_wait(s, 1)
                    mbarrier.wait(kv_ready.index(5 * SW), ph)
                    _stamp(trace_ptr, g, 1, TRACE)
                    s = AM.tile_mma(s, QRS_OFF, KR_STAGE, False, BF16)
                elif ASM_S:
                    mbarrier.wait(kv_ready.index((CW + 1) * SW), ph)
                    _stamp(trace_ptr, g, 1, TRACE)
                    s = AM.tile_mma(s, QRS_OFF, KR_STAGE, True, BF16)
                    s = AM.mma_wait(s, 1)
                    for ch in gl.static_range(NV):
                        if CW:
                            if ch % (NV // CW) == 0:
                                mbarrier.wait(kv_ready.index((CW + 1) * SW + 1 + ch // (NV // CW)), ph)
                        s = AM.tile_mma(s, QS_OFF + ch * TILE, KV_STAGE + ch * TILE, False, BF16)
                        s = AM.mma_wait(s, 1)
                elif OWN:   # pieces land in the order 1, 3 (each P.V warpgroup's first), 2, 4, rope
                    mbarrier.wait(kv_ready.index(5 * SW + 1), ph)
                    s = warpgroup_mma(q3.index(0), kv3.index(0).permute((1, 0)), s, use_acc=False, is_async=True)
                    s = warpgroup_mma_wait(num_outstanding=1, deps=(s,))
                    for ch in range(1, NV):
                        pr = ch // 2
                        base = (pr % 2) * 4 + (pr // 2) * 2        # tiles 0 1 | 4 5 | 2 3 | 6 7
                        if ch % 2 == 0:
                            mbarrier.wait(kv_ready.index(5 * SW + 1 + base // 2), ph)
                        s = warpgroup_mma(q3.index(base + ch % 2), kv3.index(base + ch % 2).permute((1, 0)), s,
                                          is_async=True)
                        s = warpgroup_mma_wait(num_outstanding=1, deps=(s,))
                    mbarrier.wait(kv_ready.index(5 * SW), ph)
                    _stamp(trace_ptr, g, 1, TRACE)
                    s = warpgroup_mma(qr_smem, kr.permute((1, 0)), s, is_async=True)
                else:
                    mbarrier.wait(kv_ready.index((CW + 1) * SW), ph)     # (CW = 0: the page's one mbarrier)
                    _stamp(trace_ptr, g, 1, TRACE)
                    s = warpgroup_mma(qr_smem, kr.permute((1, 0)), s, use_acc=False, is_async=True)
                    s = warpgroup_mma_wait(num_outstanding=1, deps=(s,))     # (does not wait: one group in flight)
                    for ch in range(NV):
                        if CW:
                            if ch % (NV // CW) == 0:
                                mbarrier.wait(kv_ready.index((CW + 1) * SW + 1 + ch // (NV // CW)), ph)
                        s = warpgroup_mma(q3.index(ch), kv3.index(ch).permute((1, 0)), s, is_async=True)
                        s = warpgroup_mma_wait(num_outstanding=1, deps=(s,))
                if ASM_S:
                    s = AM.mma_wait(s, 0)
                else:
                    s = warpgroup_mma_wait(num_outstanding=0, deps=(s,))
                _stamp(trace_ptr, g, 2, TRACE)
                sv = _scaled_scores(s, n, lim, lim_lo, sm_scale_log2, PAGE)
                # ---- shared running max: M(n) = max(M(n-1) from the other warpgroup, rowmax S(n)) (LAZY: M(n)
                # stays M(n-1) unless rowmax S(n) exceeds it by more than LAZY) ----
                rmax = gl.max(sv, axis=1)
                m_prev = gl.full([BLOCK_M], float("-inf"), gl.float32, layout=s_row)
                if n > n0:
                    if NAMED == 2:   # the other's arrive of page n - 1 (every arrive is matched, below)
                        _named_bar(M_BAR + 1 - SW, 256, False)
                    else:
                        mbarrier.wait(m_ready.index(1 - SW), ((g - 1) // 2) & 1)
                    m_prev = mx_smem.index(1 - SW).load(s_row)
                _stamp(trace_ptr, g, 12, TRACE)     # (X split: M(n-1) in)
                m_set = _running_max(m_prev, rmax, LAZY)
                if LAZY:
                    flag = _any_ne(m_set, m_prev, 8 + SW)    # one bit for the page: does any row's max move?
                mx_smem.index(SW).store(m_set)
                gl.thread_barrier()   # (also orders the read-back below within this warpgroup)
                if NAMED == 2:
                    _named_bar(M_BAR + SW, 256, True)
                else:
                    mbarrier.arrive(m_ready.index(SW), count=1)
                # read back after the arrive: the exps below depend on it, so the compiler cannot schedule them
                # before the hand-off (it did: the other warpgroup then waited for this one's exps)
                m_new = mx_smem.index(SW).load(s_row)
                _stamp(trace_ptr, g, 13, TRACE)     # (M(n) published and read back)
                m_use = gl.where(m_new == float("-inf"), 0.0, m_new)
                alpha = gl.exp2(m_prev - m_use)
                p = gl.exp2(sv - m_use[:, None])
                l_w = gl.where(m_w == float("-inf"), 0.0, l_w * gl.exp2(m_w - m_use)) + gl.sum(p, axis=1)
                _stamp(trace_ptr, g, 14, TRACE)     # (exps and row sums done)
                if LAZY:
                    fl_smem.index(SW).store(flag)
                _publish_p(p, alpha, ax_smem.index(SW), kr, p_ready.index(SW), BLOCK_M, PAGE, NAMED,
                           P_BAR + 2 * SW)
                m_w = m_new
                _stamp(trace_ptr, g, 3, TRACE)
            # NAMED = 2: the other warpgroup syncs on each page's M arrive at its next page; the chunk's last page's
            # arrive is matched here, by the warpgroup that does not own it. A named barrier has no phase, so each
            # arrive must be matched before the next on its id: the owner's next arrive (page + 2, or in the next
            # chunk, after q_ready, which needs this warpgroup's arrival at the next chunk's start; Q_TMA < 2: also
            # after q_free, which needs its arrival below) follows this sync.
            if NAMED == 2:
                if n_end > n0:
                    if (it0 + n_end - 1 - n0) % 2 != SW:
                        _named_bar(M_BAR + 1 - SW, 256, False)
            # this warpgroup's S of the chunk are done (each page ended with a thread barrier, NAMED: the barrier
            # below; a chunk without a page for it read nothing): the other may overwrite its half of Q
            if NAMED:
                gl.thread_barrier()
            mbarrier.arrive(q_free, count=1)
            if Q_TMA == 2:   # the owner of the chunk's last page: the next chunk's Q, under this epilogue
                if early:
                    mbarrier.wait(q_free, c & 1)
                    _issue_q(q_desc, q_smem, qr_smem, q_land, bi + 1, m0, CHUNK)
            q_pre = pre_next
            it0 += n_end - n0

            # ---- epilogue: warpgroup 1 hands (l, m) to warpgroup 0, which writes 1/l and lse. No lp_free
            # barrier: warpgroup 1 writes lp_smem again only after q_ready of the next chunk, which needs warpgroup
            # 0's arrival, made after these reads (keep that order if the Q hand-off moves) ----
            if SW == 1:
                lp_smem.index(0).store(l_w)
                lp_smem.index(1).store(m_w)
                gl.thread_barrier()
                mbarrier.arrive(lp_ready, count=1)
            else:
                mbarrier.wait(lp_ready, c & 1)
                l_o = lp_smem.index(0).load(s_row)
                m_o = lp_smem.index(1).load(s_row)
                gl.thread_barrier()
                m_fin = gl.maximum(m_w, m_o)
                m_fu = gl.where(m_fin == float("-inf"), 0.0, m_fin)
                l_i = (gl.where(m_w == float("-inf"), 0.0, l_w * gl.exp2(m_w - m_fu))
                       + gl.where(m_o == float("-inf"), 0.0, l_o * gl.exp2(m_o - m_fu)))
                _finish_chunk(m_fu, l_i, c, rows_s, bi, no_split, begin_idx, begin_n_split, lx_smem, l_ready,
                              l_free, num_splits_ptr, lse_ptr, lacc_ptr, stride_lacc_b, R, H_Q, S_Q)
            c += 1
    if MC:
        CL.cluster_sync(CL.warpgroup_tid())


@gluon.jit
def mla_decode_ws2_kernel(
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
    q_desc,
    CAUSAL: gl.constexpr,
    BLOCK_M: gl.constexpr, PAGE: gl.constexpr, D: gl.constexpr, DV: gl.constexpr, CHUNK: gl.constexpr,
    PV_REGS: gl.constexpr, SM_REGS: gl.constexpr, TRACE: gl.constexpr, CW: gl.constexpr, LAZY: gl.constexpr,
    NAMED: gl.constexpr, OWN: gl.constexpr, num_warps: gl.constexpr,
    MC: gl.constexpr = 0, KV_OFF: gl.constexpr = 0, KR_OFF: gl.constexpr = 0,
    RR_OFF: gl.constexpr = 0, CF_OFF: gl.constexpr = 0, KD_PARAM: gl.constexpr = 0, VD_PARAM: gl.constexpr = 0,
    Q_TMA: gl.constexpr = 0, PDL: gl.constexpr = 0,
    ASM_S: gl.constexpr = 0, QS_OFF: gl.constexpr = 0, QRS_OFF: gl.constexpr = 0, KVS_OFF: gl.constexpr = 0,
    KRS_OFF: gl.constexpr = 0, ASM_PV: gl.constexpr = 0,
):
    gl.static_assert(num_warps == 4, "default partition = P·V warpgroup 0")
    gl.static_assert((MC == 0) | (PDL == 0), "PDL: not with MC (the launcher turns it off)")
    gl.static_assert((CW == 0) | (CW == 2) | (CW == 4) | (CW == 8), "CHUNK_WAIT: 0 or latent pieces per page")
    gl.static_assert((MC == 0) | (Q_TMA == 0), "Q_TMA: not with MC (the launcher turns it off)")
    gl.static_assert((MC == 0) | (ASM_S == 0), "ASM_S: not with MC (the launcher turns it off)")
    gl.static_assert((MC == 0) | (ASM_PV == 0), "ASM_PV: not with MC (the launcher turns it off)")
    # the ws kernel's shared memory (Q, 2-stage ring, alpha, flag, 1/l, ring / P / 1/l barriers) + the hand-offs
    # between the two softmax warpgroups
    (q_smem, qr_smem, kv_smem, kr_smem, ax_smem, lx_smem, fl_smem,
     kv_ready, kv_free, p_ready, l_ready, l_free) = _ws_shared(k_desc, BLOCK_M, PAGE, D, DV)
    vec_layout: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [0])
    bar_layout: gl.constexpr = mbarrier.MBarrierLayout()
    mx_smem = gl.allocate_shared_memory(gl.float32, [2, BLOCK_M], vec_layout)   # running max M(n), by n % 2
    lp_smem = gl.allocate_shared_memory(gl.float32, [2, BLOCK_M], vec_layout)   # softmax warpgroup 1's (l, m)
    m_ready = gl.allocate_shared_memory(gl.int64, [2, 1], bar_layout)
    q_ready = gl.allocate_shared_memory(gl.int64, [1], bar_layout)
    q_free = gl.allocate_shared_memory(gl.int64, [1], bar_layout)
    lp_ready = gl.allocate_shared_memory(gl.int64, [1], bar_layout)
    for i in gl.static_range(2):
        mbarrier.init(m_ready.index(i), count=1)
    mbarrier.init(q_ready, count=2)
    mbarrier.init(q_free, count=2)
    mbarrier.init(lp_ready, count=1)
    q_land = q_ready   # (a placeholder unless Q_TMA = 2)
    if Q_TMA == 2:   # the Q tile landed (one TMA issuer per chunk; q_ready then only gathers both warpgroups)
        q_land = gl.allocate_shared_memory(gl.int64, [1], bar_layout)
        mbarrier.init(q_land, count=1)
    if CW:   # 1 + CW ring barriers per stage (rope, latent pieces) instead of one
        ring_ready = gl.allocate_shared_memory(gl.int64, [2 * (CW + 1), 1], bar_layout)
        for i in gl.static_range(2 * (CW + 1)):
            mbarrier.init(ring_ready.index(i), count=1)
    else:
        ring_ready = kv_ready
    cl_free = kv_free   # (a placeholder without MC: a partition argument cannot be None)
    if MC:   # stage read by both CTAs (a local and a remote arrive); [3, 1]: a shape no other allocation has, so
        # that the launcher can find its offset
        cl_free = gl.allocate_shared_memory(gl.int64, [3, 1], bar_layout)
        for i in gl.static_range(2):
            mbarrier.init(cl_free.index(i), count=2)
        CL.fence_mbarrier_init(CL.warpgroup_tid())
    fence_async_shared()
    _pdl_start(PDL)

    gl.warp_specialize([
        (_ws_pv, (0, kv_smem, kr_smem, ax_smem, lx_smem, ring_ready, kv_free, p_ready, l_ready, l_free,
                  seqlens_ptr, meta_ptr, num_splits_ptr, out_ptr, oacc_ptr, stride_oacc_b, stride_oacc_r, R,
                  k_desc, v_desc, bt_ptr, stride_bt, BLOCK_M, PAGE, D, DV, CHUNK, trace_ptr, TRACE, 128, CW,
                  fl_smem, LAZY != 0, NAMED, OWN, MC, cl_free, KV_OFF, KR_OFF, RR_OFF, CF_OFF, KD_PARAM,
                  VD_PARAM, ASM_PV, KVS_OFF)),
        (_ws_pv, (1, kv_smem, kr_smem, ax_smem, lx_smem, ring_ready, kv_free, p_ready, l_ready, l_free,
                  seqlens_ptr, meta_ptr, num_splits_ptr, out_ptr, oacc_ptr, stride_oacc_b, stride_oacc_r, R,
                  k_desc, v_desc, bt_ptr, stride_bt, BLOCK_M, PAGE, D, DV, CHUNK, trace_ptr, TRACE, 128, CW,
                  fl_smem, LAZY != 0, NAMED, OWN, MC, cl_free, KV_OFF, KR_OFF, RR_OFF, CF_OFF, KD_PARAM,
                  VD_PARAM, ASM_PV, KVS_OFF)),
        (_ws2_softmax, (0, q_ptr, stride_qb, stride_qs, stride_qh, q_smem, qr_smem, kv_smem, kr_smem, ax_smem,
                        lx_smem, mx_smem, lp_smem, fl_smem, ring_ready, p_ready, l_ready, l_free, m_ready, q_ready,
                        q_free, lp_ready, seqlens_ptr, meta_ptr, num_splits_ptr, lse_ptr, lacc_ptr, stride_lacc_b,
                        sm_scale_log2, R, H_Q, S_Q, CAUSAL, BLOCK_M, PAGE, DV, CHUNK, trace_ptr, TRACE, CW, LAZY,
                        NAMED, OWN, MC, q_desc, Q_TMA, q_land, ASM_S, QS_OFF, QRS_OFF, KVS_OFF, KRS_OFF)),
        (_ws2_softmax, (1, q_ptr, stride_qb, stride_qs, stride_qh, q_smem, qr_smem, kv_smem, kr_smem, ax_smem,
                        lx_smem, mx_smem, lp_smem, fl_smem, ring_ready, p_ready, l_ready, l_free, m_ready, q_ready,
                        q_free, lp_ready, seqlens_ptr, meta_ptr, num_splits_ptr, lse_ptr, lacc_ptr, stride_lacc_b,
                        sm_scale_log2, R, H_Q, S_Q, CAUSAL, BLOCK_M, PAGE, DV, CHUNK, trace_ptr, TRACE, CW, LAZY,
                        NAMED, OWN, MC, q_desc, Q_TMA, q_land, ASM_S, QS_OFF, QRS_OFF, KVS_OFF, KRS_OFF)),
    ], [4, 4, 4], [PV_REGS, SM_REGS, SM_REGS])


def asm_constants(first_compile) -> dict:
    """ASM_S's constexprs: the shared-memory offsets of Q's latent part and rope, and of the ring's latent part and
    rope tiles, read from ``first_compile`` (a build with ``ASM_ZERO``, which has the same layout)."""
    offs = CL.smem_offsets(first_compile)
    return dict(QS_OFF=CL.find_offset(offs, "64x512x"), QRS_OFF=CL.find_offset(offs, "64x64x"),
                KVS_OFF=CL.find_offset(offs, "2x64x512x"), KRS_OFF=CL.find_offset(offs, "2x64x64x"))
