"""Warp-specialized Hopper MLA decoding kernel with a per-tile page ring (experimental, opt-in: ``launcher.TILE``).

Same split of work as ``ws_kernel`` (one softmax warpgroup computing S and the online softmax, two P·V
warpgroups each owning half of O), but the 2-page ring is managed per 64 x 64 tile instead of per page, the way
FlashMLA streams pages:

* each ring stage holds one page as 9 tiles (8 latent, 1 rope), each with its own mbarrier; the softmax
  warpgroup issues ``S = Q K^T`` tile by tile as the tiles land (rope first, then latent tiles in the order they
  are refilled);
* each P·V warpgroup holds its 64 x 256 half of O as four 64 x 64 accumulators and takes P from registers
  (an RS wgmma reads only V from shared memory); it retires its four wgmmas one by one and refills each latent
  tile with the page two ahead as soon as the wgmma that read it is done, so the next loads start a quarter
  of the way into P·V instead of after it; P·V warpgroup 0 refills the rope slot (where P lives) as soon as
  both warpgroups have P in registers;
* GATE (default on): the softmax warpgroup releases P(n) to the P·V warpgroups only once S(n + 1) is done, so
  ``Q K^T`` never shares the tensor cores with P·V and the softmax of page n + 1 runs under P·V(n).

Shared memory is the ws kernel's (Q 72 KB + 2 x 72 KB ring, P over each stage's rope slot).
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

from .kernel import _online_softmax, _part_meta, _split_slot, _ss_chunk, _ss_zero_v, _stage_q, _store_lse, _store_o
from .ws_kernel import _l2_prefetch, _next_page, _stamp

NUM_WARPS = 4          # default partition = the softmax warpgroup
PV_REGS = 192          # setmaxnreg of each P·V warpgroup (O half: 4 x 32 fp32 registers)
MAXNREG = 168          # 12 warps x 168 = the 64 K register file
L2PF = 0               # > 0: the softmax warpgroup prefetches into L2 the page L2PF ahead (ws_kernel.L2PF)
GATE = 1               # 1: P(n) is released after S(n + 1) is done; 0: right after the softmax of page n
TRACE_BUF = None       # diagnostics, as ws_kernel.TRACE_BUF
NT: gl.constexpr = gl.constexpr(9)   # tiles per page: 8 latent + 1 rope


@gluon.jit
def _load_tile(k_desc, kv_smem, kr_smem, ready, page, ok, stage, j: gl.constexpr, PAGE: gl.constexpr,
               CHUNK: gl.constexpr):
    """TMA tile ``j`` (columns j*64 .. +63; j = 8 is the rope) of cache page ``page`` into ring ``stage``."""
    bar = ready.index(stage * NT + j)
    mbarrier.expect(bar, PAGE * CHUNK * k_desc.dtype.primitive_bitwidth // 8, pred=ok)
    if j < NT - 1:
        dst = kv_smem.index(stage).slice(j * CHUNK, CHUNK, dim=1)
    else:
        dst = kr_smem.index(stage)
    tma.async_copy_global_to_shared(k_desc, [page * PAGE, j * CHUNK], bar, dst, pred=ok)


@gluon.jit
def _s_tile(s, j: gl.constexpr, FIRST: gl.constexpr, q_smem, qr_smem, kv, kr, ready, stage, ph,
            CHUNK: gl.constexpr, trace_ptr, it, EV: gl.constexpr, TRACE: gl.constexpr):
    """Wait for tile ``j`` of ``stage`` and issue its part of S = Q K^T (async; FIRST: S = instead of S +=)."""
    mbarrier.wait(ready.index(stage * NT + j), ph)
    _stamp(trace_ptr, it, EV, TRACE)
    if j == NT - 1:
        s = warpgroup_mma(qr_smem, kr.permute((1, 0)), s, use_acc=not FIRST, is_async=True)
    else:
        s = warpgroup_mma(q_smem.slice(j * CHUNK, CHUNK, dim=1), kv.slice(j * CHUNK, CHUNK, dim=1).permute((1, 0)),
                          s, use_acc=not FIRST, is_async=True)
    return s


@gluon.jit
def _tile_softmax(q_ptr, stride_qb, stride_qs, stride_qh,
                  q_smem, qr_smem, kv_smem, kr_smem, ax_smem, lx_smem,
                  ready, p_ready, l_ready, l_free,
                  seqlens_ptr, meta_ptr, num_splits_ptr, lse_ptr, lacc_ptr, stride_lacc_b,
                  sm_scale_log2, R, H_Q, S_Q,
                  CAUSAL: gl.constexpr, GATE: gl.constexpr, BLOCK_M: gl.constexpr, PAGE: gl.constexpr,
                  D: gl.constexpr, DV: gl.constexpr, CHUNK: gl.constexpr, trace_ptr, TRACE: gl.constexpr,
                  bt_ptr, stride_bt, kc_ptr, page_elems, L2PF: gl.constexpr):
    dtype: gl.constexpr = q_smem.dtype
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, PAGE, 16])
    ld_layout: gl.constexpr = gl.BlockedLayout([1, 8], [8, 4], [4, 1], [1, 0])
    s_row: gl.constexpr = gl.SliceLayout(1, s_layout)
    s_col: gl.constexpr = gl.SliceLayout(0, s_layout)
    p_smem_layout: gl.constexpr = kr_smem.layout

    part = gl.program_id(2)
    m0 = gl.program_id(0) * BLOCK_M
    begin_idx, begin_seqlen, end_idx, end_seqlen, begin_n_split = _part_meta(meta_ptr, part)

    s = gl.zeros([BLOCK_M, PAGE], gl.float32, layout=s_layout)
    it = 0
    c = 0
    for bi in range(begin_idx, end_idx + 1):
        L, start, end = _ss_chunk(seqlens_ptr, meta_ptr, part, bi, begin_idx, end_idx, begin_seqlen, end_seqlen)
        no_split = (start == 0) & (end == L)
        if (end > start) | (L == 0):
            _stage_q(q_ptr, bi, stride_qb, stride_qs, stride_qh, m0, R, H_Q, q_smem, qr_smem, ld_layout, CHUNK)
            fence_async_shared()
            gl.thread_barrier()

            rows_s = m0 + gl.arange(0, BLOCK_M, layout=s_row)
            if CAUSAL:
                lim = gl.minimum(end, L - S_Q + rows_s // H_Q + 1)
                lim_lo = gl.minimum(end, L - S_Q + m0 // H_Q + 1)
            else:
                lim = gl.zeros([BLOCK_M], gl.int32, layout=s_row) + end
                lim_lo = end
            m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, layout=s_row)
            l_i = gl.zeros([BLOCK_M], gl.float32, layout=s_row)
            n0 = start // PAGE
            for n in range(n0, (end + PAGE - 1) // PAGE):
                stage = it % 2
                ph = (it // 2) & 1
                kv = kv_smem.index(stage)
                kr = kr_smem.index(stage)
                _stamp(trace_ptr, it, 0, TRACE)
                # tile order: rope first (refilled earliest), then 0, 4, 1, 5, 2, 6, 3, 7 (as P.V frees them)
                s = _s_tile(s, NT - 1, True, q_smem, qr_smem, kv, kr, ready, stage, ph, CHUNK, trace_ptr, it, 3, TRACE)
                s = _s_tile(s, 0, False, q_smem, qr_smem, kv, kr, ready, stage, ph, CHUNK, trace_ptr, it, 4, TRACE)
                s = _s_tile(s, 4, False, q_smem, qr_smem, kv, kr, ready, stage, ph, CHUNK, trace_ptr, it, 5, TRACE)
                s = _s_tile(s, 1, False, q_smem, qr_smem, kv, kr, ready, stage, ph, CHUNK, trace_ptr, it, 6, TRACE)
                s = _s_tile(s, 5, False, q_smem, qr_smem, kv, kr, ready, stage, ph, CHUNK, trace_ptr, it, 7, TRACE)
                s = _s_tile(s, 2, False, q_smem, qr_smem, kv, kr, ready, stage, ph, CHUNK, trace_ptr, it, 8, TRACE)
                s = _s_tile(s, 6, False, q_smem, qr_smem, kv, kr, ready, stage, ph, CHUNK, trace_ptr, it, 9, TRACE)
                s = _s_tile(s, 3, False, q_smem, qr_smem, kv, kr, ready, stage, ph, CHUNK, trace_ptr, it, 10, TRACE)
                s = _s_tile(s, 7, False, q_smem, qr_smem, kv, kr, ready, stage, ph, CHUNK, trace_ptr, it, 11, TRACE)
                s = warpgroup_mma_wait(num_outstanding=0, deps=(s,))
                _stamp(trace_ptr, it, 1, TRACE)
                if GATE:
                    if n > n0:   # S(n) is done: P(n - 1) (published last iteration) may take the tensor cores
                        mbarrier.arrive(p_ready.index(1 - stage), count=1)
                # ---- online softmax (base 2); keys j < lim are visible ----
                if (n + 1) * PAGE <= lim_lo:
                    sv = s * sm_scale_log2
                else:
                    cols = gl.arange(0, PAGE, layout=s_col)
                    visible = cols[None, :] < (lim - n * PAGE)[:, None]
                    sv = gl.where(visible, s * sm_scale_log2, float("-inf"))
                m_i, alpha, p, l_i = _online_softmax(sv, m_i, l_i)
                ax_smem.index(stage).store(alpha)
                kr._reinterpret(dtype, [BLOCK_M, PAGE], p_smem_layout).store(p.to(dtype))
                fence_async_shared()
                gl.thread_barrier()
                if not GATE:
                    mbarrier.arrive(p_ready.index(stage), count=1)
                _stamp(trace_ptr, it, 2, TRACE)
                if L2PF > 0:
                    _l2_prefetch(kc_ptr, page_elems, bt_ptr + bi.to(gl.int64) * stride_bt, n + L2PF,
                                 (end + PAGE - 1) // PAGE)
                it += 1
            if GATE:
                if end > start:   # the chunk's last P
                    mbarrier.arrive(p_ready.index((it + 1) % 2), count=1)

            lb = c % 2
            mbarrier.wait(l_free.index(lb), ((c // 2) & 1) ^ 1)
            empty = l_i == 0.0
            lx_smem.index(lb).store(gl.where(empty, 0.0, 1.0 / gl.where(empty, 1.0, l_i)))
            gl.thread_barrier()
            mbarrier.arrive(l_ready.index(lb), count=1)
            lse2 = m_i + gl.log2(gl.where(empty, 1.0, l_i))
            slot = _split_slot(num_splits_ptr, bi, begin_idx, begin_n_split, no_split)
            _store_lse(lse2, empty, rows_s, bi, no_split, slot, lse_ptr, lacc_ptr, stride_lacc_b, R, H_Q, S_Q)
            c += 1


@gluon.jit
def _retire(acc, OUTSTANDING: gl.constexpr, j: gl.constexpr, k_desc, kv_smem, kr_smem, ready, lpage, lok, stage,
            PAGE: gl.constexpr, CHUNK: gl.constexpr):
    """Wait until at most OUTSTANDING P·V wgmmas are in flight (so the one on tile ``j`` is done: ``acc`` is
    final) and refill tile ``j`` of ``stage`` with the page two ahead."""
    acc = warpgroup_mma_wait(num_outstanding=OUTSTANDING, deps=(acc,))
    _load_tile(k_desc, kv_smem, kr_smem, ready, lpage, lok, stage, j, PAGE, CHUNK)
    return acc


@gluon.jit
def _tile_pv(WG: gl.constexpr, kv_smem, kr_smem, ax_smem, lx_smem,
             ready, p_ready, p_free, l_ready, l_free,
             seqlens_ptr, meta_ptr, num_splits_ptr, out_ptr, oacc_ptr, stride_oacc_b, stride_oacc_r, R,
             k_desc, bt_ptr, stride_bt,
             BLOCK_M: gl.constexpr, PAGE: gl.constexpr, D: gl.constexpr, DV: gl.constexpr, CHUNK: gl.constexpr,
             trace_ptr, TRACE: gl.constexpr):
    """P·V warpgroup ``WG`` (output columns WG*256 .. +255, latent tiles 4*WG .. 4*WG+3)."""
    HALF: gl.constexpr = DV // 2
    T0: gl.constexpr = WG * 4
    dtype: gl.constexpr = kv_smem.dtype
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, CHUNK, 16])
    a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    ld_layout: gl.constexpr = gl.BlockedLayout([1, 8], [8, 4], [4, 1], [1, 0])
    o_row: gl.constexpr = gl.SliceLayout(1, o_layout)
    o_col: gl.constexpr = gl.SliceLayout(0, o_layout)
    p_smem_layout: gl.constexpr = kr_smem.layout

    part = gl.program_id(2)
    m0 = gl.program_id(0) * BLOCK_M
    begin_idx, begin_seqlen, end_idx, end_seqlen, begin_n_split = _part_meta(meta_ptr, part)

    # load cursor: the page two ahead of the one being computed, and its block-table entry
    L0, start0, end0 = _ss_chunk(seqlens_ptr, meta_ptr, part, begin_idx, begin_idx, end_idx, begin_seqlen,
                                 end_seqlen)
    lbi, ln, ln_end, lpage = _next_page(begin_idx, start0 // PAGE - 1, (end0 + PAGE - 1) // PAGE, end_idx,
                                        seqlens_ptr, meta_ptr, part, begin_idx, begin_seqlen, end_seqlen,
                                        bt_ptr, stride_bt, PAGE)
    for st in gl.static_range(2):
        for j in gl.static_range(4):
            _load_tile(k_desc, kv_smem, kr_smem, ready, lpage, ln < ln_end, st, T0 + j, PAGE, CHUNK)
        if WG == 0:
            _load_tile(k_desc, kv_smem, kr_smem, ready, lpage, ln < ln_end, st, NT - 1, PAGE, CHUNK)
        lbi, ln, ln_end, lpage = _next_page(lbi, ln, ln_end, end_idx, seqlens_ptr, meta_ptr, part, begin_idx,
                                            begin_seqlen, end_seqlen, bt_ptr, stride_bt, PAGE)

    it = 0
    c = 0
    for bi in range(begin_idx, end_idx + 1):
        L, start, end = _ss_chunk(seqlens_ptr, meta_ptr, part, bi, begin_idx, end_idx, begin_seqlen, end_seqlen)
        no_split = (start == 0) & (end == L)
        if (end > start) | (L == 0):
            acc0 = gl.zeros([BLOCK_M, CHUNK], gl.float32, layout=o_layout)
            acc1 = gl.zeros([BLOCK_M, CHUNK], gl.float32, layout=o_layout)
            acc2 = gl.zeros([BLOCK_M, CHUNK], gl.float32, layout=o_layout)
            acc3 = gl.zeros([BLOCK_M, CHUNK], gl.float32, layout=o_layout)
            for n in range(start // PAGE, (end + PAGE - 1) // PAGE):
                stage = it % 2
                ph = (it // 2) & 1
                kv = kv_smem.index(stage)
                mbarrier.wait(p_ready.index(stage), ph)
                for j in gl.static_range(4):   # (already complete: S(n) waited for them)
                    mbarrier.wait(ready.index(stage * NT + T0 + j), ph)
                _stamp(trace_ptr, it, 12 + 2 * WG, TRACE)
                alpha = ax_smem.index(stage).load(o_row)
                p = kr_smem.index(stage)._reinterpret(dtype, [BLOCK_M, PAGE], p_smem_layout).load(a_layout)
                _ss_zero_v(kv, end - n * PAGE, WG, ld_layout, PAGE, HALF, CHUNK)
                gl.thread_barrier()
                mbarrier.arrive(p_free.index(stage), count=1)   # P and alpha read: the rope slot may refill
                acc0 = warpgroup_mma(p, kv.slice((T0 + 0) * CHUNK, CHUNK, dim=1), acc0 * alpha[:, None],
                                     is_async=True)
                acc1 = warpgroup_mma(p, kv.slice((T0 + 1) * CHUNK, CHUNK, dim=1), acc1 * alpha[:, None],
                                     is_async=True)
                acc2 = warpgroup_mma(p, kv.slice((T0 + 2) * CHUNK, CHUNK, dim=1), acc2 * alpha[:, None],
                                     is_async=True)
                acc3 = warpgroup_mma(p, kv.slice((T0 + 3) * CHUNK, CHUNK, dim=1), acc3 * alpha[:, None],
                                     is_async=True)
                lok = ln < ln_end
                if WG == 0:
                    mbarrier.wait(p_free.index(stage), ph)
                    fence_async_shared()
                    _load_tile(k_desc, kv_smem, kr_smem, ready, lpage, lok, stage, NT - 1, PAGE, CHUNK)
                acc0 = _retire(acc0, 3, T0 + 0, k_desc, kv_smem, kr_smem, ready, lpage, lok, stage, PAGE, CHUNK)
                acc1 = _retire(acc1, 2, T0 + 1, k_desc, kv_smem, kr_smem, ready, lpage, lok, stage, PAGE, CHUNK)
                acc2 = _retire(acc2, 1, T0 + 2, k_desc, kv_smem, kr_smem, ready, lpage, lok, stage, PAGE, CHUNK)
                acc3 = _retire(acc3, 0, T0 + 3, k_desc, kv_smem, kr_smem, ready, lpage, lok, stage, PAGE, CHUNK)
                _stamp(trace_ptr, it, 13 + 2 * WG, TRACE)
                lbi, ln, ln_end, lpage = _next_page(lbi, ln, ln_end, end_idx, seqlens_ptr, meta_ptr, part,
                                                    begin_idx, begin_seqlen, end_seqlen, bt_ptr, stride_bt, PAGE)
                it += 1

            lb = c % 2
            mbarrier.wait(l_ready.index(lb), (c // 2) & 1)
            inv_l = lx_smem.index(lb).load(o_row)
            gl.thread_barrier()
            mbarrier.arrive(l_free.index(lb), count=1)
            slot = _split_slot(num_splits_ptr, bi, begin_idx, begin_n_split, no_split)
            rows = m0 + gl.arange(0, BLOCK_M, layout=o_row)
            cols = WG * HALF + gl.arange(0, CHUNK, layout=o_col)
            _store_o(acc0 * inv_l[:, None], rows, cols + 0 * CHUNK, bi, no_split, slot,
                     out_ptr, oacc_ptr, stride_oacc_b, stride_oacc_r, R, DV)
            _store_o(acc1 * inv_l[:, None], rows, cols + 1 * CHUNK, bi, no_split, slot,
                     out_ptr, oacc_ptr, stride_oacc_b, stride_oacc_r, R, DV)
            _store_o(acc2 * inv_l[:, None], rows, cols + 2 * CHUNK, bi, no_split, slot,
                     out_ptr, oacc_ptr, stride_oacc_b, stride_oacc_r, R, DV)
            _store_o(acc3 * inv_l[:, None], rows, cols + 3 * CHUNK, bi, no_split, slot,
                     out_ptr, oacc_ptr, stride_oacc_b, stride_oacc_r, R, DV)
            c += 1


@gluon.jit
def mla_decode_tile_kernel(
    q_ptr, stride_qb, stride_qs, stride_qh,
    k_desc, v_desc,
    bt_ptr, stride_bt,
    seqlens_ptr, meta_ptr, num_splits_ptr,
    out_ptr, lse_ptr,
    oacc_ptr, stride_oacc_b, stride_oacc_r,
    lacc_ptr, stride_lacc_b,
    sm_scale_log2,
    R, H_Q, S_Q,
    trace_ptr, kc_ptr, page_elems,
    CAUSAL: gl.constexpr,
    BLOCK_M: gl.constexpr, PAGE: gl.constexpr, D: gl.constexpr, DV: gl.constexpr, CHUNK: gl.constexpr,
    PV_REGS: gl.constexpr, GATE: gl.constexpr, TRACE: gl.constexpr, L2PF: gl.constexpr,
    num_warps: gl.constexpr,
):
    gl.static_assert(num_warps == 4, "default partition = the softmax warpgroup")
    dtype: gl.constexpr = k_desc.dtype

    smem_layout: gl.constexpr = k_desc.layout
    vec_layout: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [0])
    q_smem = gl.allocate_shared_memory(dtype, [BLOCK_M, DV], smem_layout)
    qr_smem = gl.allocate_shared_memory(dtype, [BLOCK_M, D - DV], smem_layout)
    kv_smem = gl.allocate_shared_memory(dtype, [2, PAGE, DV], smem_layout)
    kr_smem = gl.allocate_shared_memory(dtype, [2, PAGE, D - DV], smem_layout)
    ax_smem = gl.allocate_shared_memory(gl.float32, [2, BLOCK_M], vec_layout)   # alpha per ring stage
    lx_smem = gl.allocate_shared_memory(gl.float32, [2, BLOCK_M], vec_layout)   # 1/l per chunk parity
    ready = gl.allocate_shared_memory(gl.int64, [2 * NT, 1], mbarrier.MBarrierLayout())
    p_ready = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    p_free = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    l_ready = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    l_free = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(2 * NT):
        mbarrier.init(ready.index(i), count=1)
    for i in gl.static_range(2):
        mbarrier.init(p_ready.index(i), count=1)
        mbarrier.init(p_free.index(i), count=2)
        mbarrier.init(l_ready.index(i), count=1)
        mbarrier.init(l_free.index(i), count=2)
    fence_async_shared()

    gl.warp_specialize([
        (_tile_softmax, (q_ptr, stride_qb, stride_qs, stride_qh,
                         q_smem, qr_smem, kv_smem, kr_smem, ax_smem, lx_smem,
                         ready, p_ready, l_ready, l_free,
                         seqlens_ptr, meta_ptr, num_splits_ptr, lse_ptr, lacc_ptr, stride_lacc_b,
                         sm_scale_log2, R, H_Q, S_Q, CAUSAL, GATE, BLOCK_M, PAGE, D, DV, CHUNK, trace_ptr, TRACE,
                         bt_ptr, stride_bt, kc_ptr, page_elems, L2PF)),
        (_tile_pv, (0, kv_smem, kr_smem, ax_smem, lx_smem, ready, p_ready, p_free, l_ready, l_free,
                    seqlens_ptr, meta_ptr, num_splits_ptr, out_ptr, oacc_ptr, stride_oacc_b,
                    stride_oacc_r, R, k_desc, bt_ptr, stride_bt, BLOCK_M, PAGE, D, DV, CHUNK, trace_ptr, TRACE)),
        (_tile_pv, (1, kv_smem, kr_smem, ax_smem, lx_smem, ready, p_ready, p_free, l_ready, l_free,
                    seqlens_ptr, meta_ptr, num_splits_ptr, out_ptr, oacc_ptr, stride_oacc_b,
                    stride_oacc_r, R, k_desc, bt_ptr, stride_bt, BLOCK_M, PAGE, D, DV, CHUNK, trace_ptr, TRACE)),
    ], [4, 4], [PV_REGS, PV_REGS])
