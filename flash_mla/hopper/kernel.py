"""Gluon (Hopper, sm_90a) MLA decoding kernel: split-KV flash attention over a paged latent cache.

One CTA = (64-row block of packed query rows, scheduler part); 8 warps = 2 warpgroups.

* Q tile ``64 x 576`` stays in shared memory for a whole (part, batch) chunk (plain loads, 9 chunks of 64 cols).
* KV pages (``64 x 576``: V = first 512 columns) stream through a 2-page ring by TMA (one mbarrier per stage
  carrying the byte count); the latent part is one 3-D box (TMA3D) or 8 boxes of 64 x 64, the rope part one box.
* ``S = Q K^T`` by ``warpgroup_mma`` (the 64 x 64 S is split by columns over the two warpgroups),
  online softmax in base 2, ``O += P V`` with P from shared memory (P_SMEM, aliased on the rope slot) or
  registers and V from shared memory; the ``64 x 512`` fp32 accumulator is split by columns (each warpgroup
  holds 64 x 256). With OVERLAP, ``P V`` of page n and ``Q K^T`` of page n + 1 are issued back to back.
* Keys past the chunk end (and causal) are masked in S; rows of the last page past the sequence end are
  zeroed in shared memory before P V so that NaN garbage can never reach the output.
* Output: whole-sequence chunks write ``out`` (q dtype) and ``lse`` (natural log) directly; split chunks write
  fp32 partials into ``o_accum``/``lse_accum`` at slot ``num_splits[b] + n_split_idx``.
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

BLOCK_M = 64
PAGE = 64
HEAD_DIM = 576
HEAD_DIM_V = 512
CHUNK = 64          # columns per TMA box / per Q staging load
NUM_WARPS = 8
LN2 = 0.6931471805599453
LOG2E = 1.4426950408889634


@gluon.jit
def _issue_page_at(k_desc, v_desc, kv_smem, kr_smem, bars, page, ok, stage,
                   NCHUNK: gl.constexpr, PAGE: gl.constexpr, CHUNK: gl.constexpr, TMA3D: gl.constexpr = True):
    """TMA cache page ``page`` (nothing unless ``ok``) into ring ``stage``: the 512 latent columns into
    ``kv_smem[stage]`` (with TMA3D one 8 x 64 x 64 box of the chunk-major view, else 8 boxes of 64 x 64), the
    64 rope columns into ``kr_smem[stage]``; one mbarrier carries the byte count."""
    row = page * PAGE
    bar = bars.index(stage)
    kv = kv_smem.index(stage)
    mbarrier.expect(bar, NCHUNK * PAGE * CHUNK * k_desc.dtype.primitive_bitwidth // 8, pred=ok)
    if TMA3D:
        dst = kv._reinterpret(v_desc.dtype, v_desc.block_type.shape, v_desc.layout)
        tma.async_copy_global_to_shared(v_desc, [0, row, 0], bar, dst, pred=ok)
    else:
        for c in gl.static_range(NCHUNK - 1):
            tma.async_copy_global_to_shared(k_desc, [row, c * CHUNK], bar, kv.slice(c * CHUNK, CHUNK, dim=1),
                                            pred=ok)
    tma.async_copy_global_to_shared(k_desc, [row, (NCHUNK - 1) * CHUNK], bar, kr_smem.index(stage), pred=ok)


@gluon.jit
def _issue_piece(k_desc, v_desc, kv_smem, kr_smem, bars, page, ok, stage, PIECE: gl.constexpr,
                 PAGE: gl.constexpr, CHUNK: gl.constexpr):
    """One TMA piece of a page into ring ``stage`` with its own mbarrier ``bars[(NL + 1) * stage + PIECE]``: PIECE 0
    the rope columns, PIECE k >= 1 the k-th of the NL latent boxes (``v_desc``'s box: NB x 64 x 64, NL = 8 / NB)."""
    row = page * PAGE
    NB: gl.constexpr = v_desc.block_type.shape[0]
    NL: gl.constexpr = kv_smem.shape[2] // CHUNK // NB
    eb: gl.constexpr = k_desc.dtype.primitive_bitwidth // 8
    bar = bars.index((NL + 1) * stage + PIECE)
    if PIECE == 0:
        mbarrier.expect(bar, PAGE * CHUNK * eb, pred=ok)
        tma.async_copy_global_to_shared(k_desc, [row, NL * NB * CHUNK], bar, kr_smem.index(stage), pred=ok)
    else:
        kv3 = kv_smem.index(stage)._reinterpret(v_desc.dtype, [NL * NB, PAGE, CHUNK], v_desc.layout)
        mbarrier.expect(bar, NB * PAGE * CHUNK * eb, pred=ok)
        tma.async_copy_global_to_shared(v_desc, [(PIECE - 1) * NB, row, 0], bar,
                                        kv3.slice((PIECE - 1) * NB, NB, dim=0), pred=ok)


@gluon.jit
def _issue_page_groups(k_desc, v_desc, kv_smem, kr_smem, bars, page, ok, stage,
                       PAGE: gl.constexpr, CHUNK: gl.constexpr):
    """As ``_issue_page_at``, in 1 + NL pieces with one mbarrier each (``_issue_piece``; rope first), so that
    ``Q K^T`` can start before the whole page has landed."""
    NL: gl.constexpr = kv_smem.shape[2] // CHUNK // v_desc.block_type.shape[0]
    for piece in gl.static_range(NL + 1):
        _issue_piece(k_desc, v_desc, kv_smem, kr_smem, bars, page, ok, stage, piece, PAGE, CHUNK)


@gluon.jit
def _issue_page(k_desc, v_desc, kv_smem, kr_smem, bars, bt_row_ptr, n, n_end, stage,
                NCHUNK: gl.constexpr, PAGE: gl.constexpr, CHUNK: gl.constexpr, TMA3D: gl.constexpr):
    """TMA page ``n`` of the sequence (nothing when ``n >= n_end``) into ring ``stage`` (see ``_issue_page_at``)."""
    ok = n < n_end
    page = gl.load(bt_row_ptr + n, mask=ok, other=0)   # entries past the last page are never read
    _issue_page_at(k_desc, v_desc, kv_smem, kr_smem, bars, page, ok, stage, NCHUNK, PAGE, CHUNK, TMA3D)


@gluon.jit
def _part_meta(meta_ptr, part):
    """This scheduler part's row of tile_scheduler_metadata:
    (begin_idx, begin_seqlen, end_idx, end_seqlen, begin_n_split)."""
    row = meta_ptr + part * 8
    return gl.load(row + 0), gl.load(row + 1), gl.load(row + 2), gl.load(row + 3), gl.load(row + 4)


@gluon.jit
def _split_slot(num_splits_ptr, bi, begin_idx, begin_n_split, no_split):
    """Workspace slot of this part's piece of sequence ``bi`` (only read for a split sequence)."""
    return gl.load(num_splits_ptr + bi, mask=not no_split, other=0) + gl.where(bi == begin_idx, begin_n_split, 0)


@gluon.jit
def _store_o(o, rows, cols, bi, no_split, slot, out_ptr, oacc_ptr, stride_oacc_b, stride_oacc_r, R,
             DV: gl.constexpr):
    """Normalised O rows: q-dtype ``out`` for a whole-sequence chunk, else fp32 partials at ``slot``."""
    mask = (rows < R)[:, None]
    if no_split:
        out_rows = out_ptr + (bi.to(gl.int64) * R + rows.to(gl.int64))[:, None] * DV + cols[None, :]
        gl.store(out_rows, o.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        acc_rows = (oacc_ptr + slot.to(gl.int64) * stride_oacc_b
                    + rows.to(gl.int64)[:, None] * stride_oacc_r + cols[None, :])
        gl.store(acc_rows, o, mask=mask)


@gluon.jit
def _store_lse(lse2, empty, rows, bi, no_split, slot, lse_ptr, lacc_ptr, stride_lacc_b, R, H_Q, S_Q):
    """Row log-sum-exp (``lse2`` in base 2; rows that saw no key: +inf in ``lse``, -inf in the partials)."""
    row_ok = rows < R
    if no_split:
        gl.store(lse_ptr + bi.to(gl.int64) * R + (rows % H_Q) * S_Q + rows // H_Q,
                 gl.where(empty, float("inf"), lse2 * 0.6931471805599453), mask=row_ok)
    else:
        gl.store(lacc_ptr + slot.to(gl.int64) * stride_lacc_b + rows,
                 gl.where(empty, float("-inf"), lse2 * 0.6931471805599453), mask=row_ok)


@gluon.jit
def _running_max(m_prev, rmax, LAZY: gl.constexpr = 0):
    """The running row max after a page with row max ``rmax``: max(m_prev, rmax), or with LAZY > 0 m_prev unless
    rmax exceeds it by more than LAZY (log2 units)."""
    if LAZY:
        m_new = gl.where(rmax > m_prev + LAZY, rmax, m_prev)
    else:
        m_new = gl.maximum(m_prev, rmax)
    return m_new


@gluon.jit
def _online_softmax(sv, m_prev, l_prev, LAZY: gl.constexpr = 0):
    """One page of the online softmax in base 2 on scaled, masked scores ``sv``: returns (m, alpha, P, l) with
    m = max(m_prev, rowmax sv), alpha = exp2(m_prev - m), P = exp2(sv - m), l = l_prev * alpha + rowsum P
    (rows with no visible key so far keep m = -inf and get alpha = P = 0). LAZY > 0: m stays m_prev unless
    rowmax sv > m_prev + LAZY (then alpha = 1 exactly and P <= 2^LAZY)."""
    m_new = _running_max(m_prev, gl.max(sv, axis=1), LAZY)
    m_use = gl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = gl.exp2(m_prev - m_use)
    p = gl.exp2(sv - m_use[:, None])
    return m_new, alpha, p, l_prev * alpha + gl.sum(p, axis=1)


@gluon.jit
def _stage_q(q_ptr, bi, stride_qb, stride_qs, stride_qh, m0, R, H_Q, q_smem, qr_smem,
             ld_layout: gl.constexpr, CHUNK: gl.constexpr, C_LO: gl.constexpr = 0, C_HI: gl.constexpr = -1):
    """Q tile of rows m0 .. m0+63 (packed s_q * h_q rows) of sequence ``bi`` -> shared memory: the latent
    columns into ``q_smem``, the rope columns into ``qr_smem`` (rows past R read as 0). Plain loads, 64 columns
    at a time (only 64-column chunks C_LO .. C_HI-1 of the 9 when given, the rope being chunk 8); the caller
    fences and synchronises before the tensor cores read it."""
    NCHUNK_V: gl.constexpr = q_smem.shape[1] // CHUNK
    BLOCK_M: gl.constexpr = q_smem.shape[0]
    HI: gl.constexpr = NCHUNK_V + 1 if C_HI < 0 else C_HI
    q_base = q_ptr + bi.to(gl.int64) * stride_qb
    rows_ld = m0 + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, ld_layout))
    cols_ld = gl.arange(0, CHUNK, layout=gl.SliceLayout(0, ld_layout))
    q_row_off = (rows_ld // H_Q).to(gl.int64) * stride_qs + (rows_ld % H_Q).to(gl.int64) * stride_qh
    for c in gl.static_range(C_LO, HI):
        qt = gl.load(q_base + q_row_off[:, None] + (c * CHUNK + cols_ld)[None, :], mask=(rows_ld < R)[:, None],
                     other=0.0)
        if c < NCHUNK_V:
            q_smem.slice(c * CHUNK, CHUNK, dim=1).store(qt)
        else:
            qr_smem.store(qt)


@gluon.jit
def _wait_page(kv_smem, bars, stage, phase, valid,
               PAGE: gl.constexpr, NCHUNK_V: gl.constexpr, CHUNK: gl.constexpr, ld_layout: gl.constexpr):
    """Wait for a page; if only its first ``valid`` rows are keys, zero the V rows after them (they may hold
    NaN, and 0 * NaN would poison P V) and make the zeros visible to the tensor cores."""
    mbarrier.wait(bars.index(stage), phase)
    if valid < PAGE:
        kv = kv_smem.index(stage)
        keep = (gl.arange(0, PAGE, layout=gl.SliceLayout(1, ld_layout)) < valid)[:, None]
        for c in gl.static_range(NCHUNK_V):
            view = kv.slice(c * CHUNK, CHUNK, dim=1)
            x = view.load(ld_layout)
            view.store(gl.where(keep, x, gl.zeros_like(x)))
        fence_async_shared()
        gl.thread_barrier()


@gluon.jit
def mla_decode_kernel(
    q_ptr, stride_qb, stride_qs, stride_qh,
    k_desc, v_desc,
    bt_ptr, stride_bt,
    seqlens_ptr, meta_ptr, num_splits_ptr,
    out_ptr, lse_ptr,
    oacc_ptr, stride_oacc_b, stride_oacc_r,
    lacc_ptr, stride_lacc_b,
    sm_scale_log2,
    R, H_Q, S_Q,
    CAUSAL: gl.constexpr, P_SMEM: gl.constexpr, OVERLAP: gl.constexpr, TMA3D: gl.constexpr,
    BLOCK_M: gl.constexpr, PAGE: gl.constexpr, D: gl.constexpr, DV: gl.constexpr, CHUNK: gl.constexpr,
    num_warps: gl.constexpr,
):
    gl.static_assert(num_warps == 8, "two warpgroups")
    NCHUNK: gl.constexpr = D // CHUNK
    NCHUNK_V: gl.constexpr = DV // CHUNK
    NUM_STAGES: gl.constexpr = 2
    dtype: gl.constexpr = k_desc.dtype

    pid_m = gl.program_id(0)
    part = gl.program_id(2)
    m0 = pid_m * BLOCK_M

    # ---- layouts -------------------------------------------------------------------------------------------
    # S (64 x 64): each warpgroup computes 32 key columns; O (64 x 512): each warpgroup holds 256 columns.
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 2],
                                                       instr_shape=[16, PAGE // 2, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 2],
                                                       instr_shape=[16, DV // 2, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    ld_layout: gl.constexpr = gl.BlockedLayout([1, 8], [8, 4], [8, 1], [1, 0])   # 64 x 64 tiles, 16 B / thread
    s_row: gl.constexpr = gl.SliceLayout(1, s_layout)
    s_col: gl.constexpr = gl.SliceLayout(0, s_layout)
    o_row: gl.constexpr = gl.SliceLayout(1, o_layout)
    o_col: gl.constexpr = gl.SliceLayout(0, o_layout)

    # ---- shared memory: Q 72 KB + 2 x 72 KB KV ring (+ P, aliased onto the rope slot) -----------------------
    smem_layout: gl.constexpr = k_desc.layout
    p_smem_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_M, PAGE], dtype)
    # 576 is not a power of two: the 512 latent columns and the 64 rope columns live in separate buffers.
    q_smem = gl.allocate_shared_memory(dtype, [BLOCK_M, DV], smem_layout)
    qr_smem = gl.allocate_shared_memory(dtype, [BLOCK_M, D - DV], smem_layout)
    kv_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES, PAGE, DV], smem_layout)
    kr_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES, PAGE, D - DV], smem_layout)
    bars = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(bars.index(i), count=1)

    # ---- this part's work ----------------------------------------------------------------------------------
    begin_idx, begin_seqlen, end_idx, end_seqlen, begin_n_split = _part_meta(meta_ptr, part)

    rows_s = m0 + gl.arange(0, BLOCK_M, layout=s_row)
    cols_s = gl.arange(0, PAGE, layout=s_col)
    tok_s = rows_s // H_Q

    it = 0  # pages consumed so far by this CTA: ring stage = it % 2, mbarrier phase = (it // 2) & 1
    for bi in range(begin_idx, end_idx + 1):
        L = gl.load(seqlens_ptr + bi)
        start = gl.where(bi == begin_idx, begin_seqlen, 0)
        end = gl.where(bi == end_idx, end_seqlen, L)
        no_split = (start == 0) & (end == L)
        if (end > start) | (L == 0):
            n_begin = start // PAGE
            n_end = (end + PAGE - 1) // PAGE
            bt_row = bt_ptr + bi.to(gl.int64) * stride_bt
            # Everyone is done with the previous chunk's Q and pages before we overwrite them.
            gl.thread_barrier()
            _issue_page(k_desc, v_desc, kv_smem, kr_smem, bars, bt_row, n_begin, n_end, it % 2,
                        NCHUNK, PAGE, CHUNK, TMA3D)
            _issue_page(k_desc, v_desc, kv_smem, kr_smem, bars, bt_row, n_begin + 1, n_end, (it + 1) % 2,
                        NCHUNK, PAGE, CHUNK, TMA3D)
            # Q tile -> shared memory (rows past R read as 0 and are never stored)
            _stage_q(q_ptr, bi, stride_qb, stride_qs, stride_qh, m0, R, H_Q, q_smem, qr_smem, ld_layout, CHUNK)
            fence_async_shared()
            gl.thread_barrier()

            # keys visible to a row: j < lim (causal: j <= L - s_q + token)
            if CAUSAL:
                lim = gl.minimum(end, L - S_Q + tok_s + 1)
            else:
                lim = gl.zeros([BLOCK_M], gl.int32, layout=s_row) + end

            m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, layout=s_row)
            l_i = gl.zeros([BLOCK_M], gl.float32, layout=s_row)
            acc = gl.zeros([BLOCK_M, DV], gl.float32, layout=o_layout)
            s = gl.zeros([BLOCK_M, PAGE], gl.float32, layout=s_layout)
            if OVERLAP:
                # S of the first page now; each iteration then issues P V of page n and Q K^T of page n + 1
                # back to back, so the tensor cores only idle during the softmax.
                if n_begin < n_end:
                    _wait_page(kv_smem, bars, it % 2, (it // 2) & 1, end - n_begin * PAGE,
                               PAGE, NCHUNK_V, CHUNK, ld_layout)
                    s = warpgroup_mma(q_smem, kv_smem.index(it % 2).permute((1, 0)), s, use_acc=False,
                                      is_async=True)
                    s = warpgroup_mma(qr_smem, kr_smem.index(it % 2).permute((1, 0)), s, is_async=True)
                    s = warpgroup_mma_wait(num_outstanding=0, deps=(s,))
            for n in range(n_begin, n_end):
                stage = it % 2
                kv = kv_smem.index(stage)
                if not OVERLAP:
                    _wait_page(kv_smem, bars, stage, (it // 2) & 1, end - n * PAGE, PAGE, NCHUNK_V, CHUNK, ld_layout)
                    s = warpgroup_mma(q_smem, kv.permute((1, 0)), s, use_acc=False, is_async=True)
                    s = warpgroup_mma(qr_smem, kr_smem.index(stage).permute((1, 0)), s, is_async=True)
                    s = warpgroup_mma_wait(num_outstanding=0, deps=(s,))

                # ---- online softmax (base 2) on S of page n ----
                key = n * PAGE + cols_s
                visible = key[None, :] < lim[:, None]
                s = gl.where(visible, s * sm_scale_log2, float("-inf"))
                m_i, alpha, p, l_i = _online_softmax(s, m_i, l_i)

                # ---- O = alpha * O + P V ----
                acc = acc * gl.convert_layout(alpha, o_row)[:, None]
                if P_SMEM:
                    # P through shared memory, in the rope slot of this stage (dead once S is computed):
                    # each warpgroup writes its 32 columns, both read all of P as the A operand.
                    p_smem = kr_smem.index(stage)._reinterpret(dtype, [BLOCK_M, PAGE], p_smem_layout)
                    p_smem.store(p.to(dtype))
                    fence_async_shared()
                    gl.thread_barrier()
                    acc_tok = warpgroup_mma(p_smem, kv, acc, is_async=True)
                else:
                    p_op = gl.convert_layout(p.to(dtype), p_layout)
                    acc_tok = warpgroup_mma(p_op, kv, acc, is_async=True)
                if OVERLAP:
                    if n + 1 < n_end:
                        nxt = (it + 1) % 2
                        _wait_page(kv_smem, bars, nxt, ((it + 1) // 2) & 1, end - (n + 1) * PAGE,
                                   PAGE, NCHUNK_V, CHUNK, ld_layout)
                        s_tok = warpgroup_mma(q_smem, kv_smem.index(nxt).permute((1, 0)), s, use_acc=False,
                                              is_async=True)
                        s_tok = warpgroup_mma(qr_smem, kr_smem.index(nxt).permute((1, 0)), s_tok, is_async=True)
                        acc, s = warpgroup_mma_wait(num_outstanding=0, deps=(acc_tok, s_tok))
                    else:
                        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc_tok,))
                else:
                    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc_tok,))
                # both warpgroups are done with this stage: refill it with page n + 2
                gl.thread_barrier()
                _issue_page(k_desc, v_desc, kv_smem, kr_smem, bars, bt_row, n + 2, n_end, stage,
                            NCHUNK, PAGE, CHUNK, TMA3D)
                it += 1

            # ---- epilogue ------------------------------------------------------------------------------------
            empty = l_i == 0.0
            inv_l = gl.where(empty, 0.0, 1.0 / gl.where(empty, 1.0, l_i))
            lse2 = m_i + gl.log2(gl.where(empty, 1.0, l_i))
            o = acc * gl.convert_layout(inv_l, o_row)[:, None]
            slot = _split_slot(num_splits_ptr, bi, begin_idx, begin_n_split, no_split)
            _store_o(o, m0 + gl.arange(0, BLOCK_M, layout=o_row), gl.arange(0, DV, layout=o_col), bi, no_split, slot,
                     out_ptr, oacc_ptr, stride_oacc_b, stride_oacc_r, R, DV)
            _store_lse(lse2, empty, rows_s, bi, no_split, slot, lse_ptr, lacc_ptr, stride_lacc_b, R, H_Q, S_Q)

    for i in gl.static_range(NUM_STAGES):
        mbarrier.invalidate(bars.index(i))


# =============================================================================================================
# "Seesaw" variant (compute-bound shapes): warp-specialized, two 4-warp compute partitions + a 1-warp TMA loader.
#
# Pages of a chunk are owned alternately by the two compute warpgroups (owner = ring stage = CTA page counter % 2).
# The owner computes the full 64 x 64 S = Q K^T of its page (N = 64 wgmma: Q is read once per page, not twice),
# the new running row max m_j = max(m_{j-1}, rowmax S), P_j = exp2(S - m_j), and publishes m_j and P_j (bf16, in
# the rope slot of the stage, dead after Q K^T) through shared memory with one mbarrier arrive. Each warpgroup
# keeps half of O (64 x 256 fp32) and adds P_j V_j[:, its half] for every page. A warpgroup that does not own
# page j first issues Q K^T of page j + 1 (which it owns), then waits for P_j: the S of one warpgroup is computed
# while the other runs its softmax, and one's softmax runs under the other's P V.
# Row sums: each warpgroup sums P over the pages it owns (rescaled with its O); the two halves meet in the epilogue.
# =============================================================================================================
@gluon.jit
def _ss_chunk(seqlens_ptr, meta_ptr, part, bi, begin_idx, end_idx, begin_seqlen, end_seqlen):
    L = gl.load(seqlens_ptr + bi)
    start = gl.where(bi == begin_idx, begin_seqlen, 0)
    end = gl.where(bi == end_idx, end_seqlen, L)
    return L, start, end


@gluon.jit
def _ss_zero_v(kv, valid, WG: gl.constexpr, ld_layout: gl.constexpr, PAGE: gl.constexpr, HALF: gl.constexpr,
               CHUNK: gl.constexpr):
    """Rows of the last page past the sequence end may hold NaN: zero them in this warpgroup's half of V."""
    if valid < PAGE:
        keep = (gl.arange(0, PAGE, layout=gl.SliceLayout(1, ld_layout)) < valid)[:, None]
        for cc in gl.static_range(HALF // CHUNK):
            view = kv.slice(WG * HALF + cc * CHUNK, CHUNK, dim=1)
            x = view.load(ld_layout)
            view.store(gl.where(keep, x, gl.zeros_like(x)))
        fence_async_shared()
        gl.thread_barrier()


@gluon.jit
def _ss_softmax(s, m_prev, l_i, lim, n, cols_s, sm_scale_log2, mx_smem, p_smem, p_ready, stage, dtype: gl.constexpr):
    """Owner's softmax of page n: m = max(m_prev, rowmax S), P = exp2(S - m) -> smem, publish m and P (one arrive
    on p_ready[stage]); returns (m, exp2(m_prev - m), l * that + rowsum P)."""
    PAGE: gl.constexpr = s.shape[1]
    cols = gl.arange(0, PAGE, layout=gl.SliceLayout(0, s.type.layout))   # re-materialised, not carried
    visible = cols[None, :] < (lim - n * PAGE)[:, None]
    sv = gl.where(visible, s * sm_scale_log2, float("-inf"))
    m_new, alpha, p, l_i = _online_softmax(sv, m_prev, l_i)
    mx_smem.index(stage).store(m_new)
    p_smem.store(p.to(dtype))
    fence_async_shared()
    gl.thread_barrier()
    mbarrier.arrive(p_ready.index(stage), count=1)
    return m_new, alpha, l_i


@gluon.jit
def _ss_loader(k_desc, v_desc, kv_smem, kr_smem, kv_ready, kv_free, bt_ptr, stride_bt, seqlens_ptr, meta_ptr, part,
               PAGE: gl.constexpr, CHUNK: gl.constexpr, NCHUNK: gl.constexpr):
    begin_idx, begin_seqlen, end_idx, end_seqlen, _ = _part_meta(meta_ptr, part)
    nbytes: gl.constexpr = NCHUNK * PAGE * CHUNK * k_desc.dtype.primitive_bitwidth // 8
    it = 0
    for bi in range(begin_idx, end_idx + 1):
        L, start, end = _ss_chunk(seqlens_ptr, meta_ptr, part, bi, begin_idx, end_idx, begin_seqlen, end_seqlen)
        if (end > start) | (L == 0):
            bt_row = bt_ptr + bi.to(gl.int64) * stride_bt
            for n in range(start // PAGE, (end + PAGE - 1) // PAGE):
                stage = it % 2
                mbarrier.wait(kv_free.index(stage), ((it // 2) & 1) ^ 1)
                fence_async_shared()   # the consumers' generic smem accesses (P, zeroed rows) before TMA writes
                page = gl.load(bt_row + n)
                row = page * PAGE
                bar = kv_ready.index(stage)
                mbarrier.expect(bar, nbytes)
                dst = kv_smem.index(stage)._reinterpret(v_desc.dtype, v_desc.block_type.shape, v_desc.layout)
                tma.async_copy_global_to_shared(v_desc, [0, row, 0], bar, dst)
                tma.async_copy_global_to_shared(k_desc, [row, (NCHUNK - 1) * CHUNK], bar, kr_smem.index(stage))
                it += 1


@gluon.jit
def _ss_compute(WG: gl.constexpr,
                q_ptr, stride_qb, stride_qs, stride_qh,
                q_smem, qr_smem, kv_smem, kr_smem, mx_smem, lx_smem,
                kv_ready, kv_free, p_ready, q_ready, q_free, l_ready,
                seqlens_ptr, meta_ptr, num_splits_ptr, part, m0,
                out_ptr, lse_ptr, oacc_ptr, stride_oacc_b, stride_oacc_r, lacc_ptr, stride_lacc_b,
                sm_scale_log2, R, H_Q, S_Q,
                CAUSAL: gl.constexpr, BLOCK_M: gl.constexpr, PAGE: gl.constexpr, D: gl.constexpr,
                DV: gl.constexpr, CHUNK: gl.constexpr, CHAIN: gl.constexpr):
    NCHUNK: gl.constexpr = D // CHUNK
    NCHUNK_V: gl.constexpr = DV // CHUNK
    HALF: gl.constexpr = DV // 2
    dtype: gl.constexpr = q_smem.dtype
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, PAGE, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, HALF, 16])
    ld_layout: gl.constexpr = gl.BlockedLayout([1, 8], [8, 4], [4, 1], [1, 0])
    s_row: gl.constexpr = gl.SliceLayout(1, s_layout)
    s_col: gl.constexpr = gl.SliceLayout(0, s_layout)
    o_row: gl.constexpr = gl.SliceLayout(1, o_layout)
    o_col: gl.constexpr = gl.SliceLayout(0, o_layout)
    ld_row: gl.constexpr = gl.SliceLayout(1, ld_layout)
    ld_col: gl.constexpr = gl.SliceLayout(0, ld_layout)
    p_smem_layout: gl.constexpr = kr_smem.layout   # 64 x 64 tile, same swizzle as the rope slot it aliases

    begin_idx, begin_seqlen, end_idx, end_seqlen, begin_n_split = _part_meta(meta_ptr, part)

    cols_s = 0   # CHAIN != 0: the softmax re-materialises its column indices

    it = 0   # CTA page counter (stage = it % 2 = owner warpgroup)
    c = 0    # chunks processed
    for bi in range(begin_idx, end_idx + 1):
        L, start, end = _ss_chunk(seqlens_ptr, meta_ptr, part, bi, begin_idx, end_idx, begin_seqlen, end_seqlen)
        no_split = (start == 0) & (end == L)
        if (end > start) | (L == 0):
            n_begin = start // PAGE
            n_end = (end + PAGE - 1) // PAGE
            # ---- Q: each warpgroup stages its share of the 9 column chunks ----
            mbarrier.wait(q_free, (c & 1) ^ 1)
            q_base = q_ptr + bi.to(gl.int64) * stride_qb
            rows_ld = m0 + gl.arange(0, BLOCK_M, layout=ld_row)
            cols_ld = gl.arange(0, CHUNK, layout=ld_col)
            ld_row_ok = rows_ld < R
            q_row_off = (rows_ld // H_Q).to(gl.int64) * stride_qs + (rows_ld % H_Q).to(gl.int64) * stride_qh
            for cc in gl.static_range(NCHUNK):
                if (cc < 5) == (WG == 0):
                    qp = q_base + q_row_off[:, None] + (cc * CHUNK + cols_ld)[None, :]
                    qt = gl.load(qp, mask=ld_row_ok[:, None], other=0.0)
                    if cc < NCHUNK_V:
                        q_smem.slice(cc * CHUNK, CHUNK, dim=1).store(qt)
                    else:
                        qr_smem.store(qt)
            fence_async_shared()
            gl.thread_barrier()
            mbarrier.arrive(q_ready, count=1)
            mbarrier.wait(q_ready, c & 1)

            if CAUSAL:
                lim = gl.minimum(end, L - S_Q + (m0 + gl.arange(0, BLOCK_M, layout=s_row)) // H_Q + 1)
            else:
                lim = gl.zeros([BLOCK_M], gl.int32, layout=s_row) + end

            m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, layout=s_row)
            l_i = gl.zeros([BLOCK_M], gl.float32, layout=s_row)
            acc = gl.zeros([BLOCK_M, HALF], gl.float32, layout=o_layout)
            s = gl.zeros([BLOCK_M, PAGE], gl.float32, layout=s_layout)
            if CHAIN == 0:
                have_s = n_end < 0          # S of the current page already computed (runtime bool)
                for n in range(n_begin, n_end):
                    stage = it % 2
                    ph = (it // 2) & 1
                    kv = kv_smem.index(stage)
                    p_smem = kr_smem.index(stage)._reinterpret(dtype, [BLOCK_M, PAGE], p_smem_layout)
                    mbarrier.wait(kv_ready.index(stage), ph)
                    if stage == WG:
                        # ---- owner: S (unless prefetched), max, P -> smem, publish, then our half of P V ----
                        if not have_s:
                            s = warpgroup_mma(q_smem, kv.permute((1, 0)), s, use_acc=False, is_async=True)
                            s = warpgroup_mma(qr_smem, kr_smem.index(stage).permute((1, 0)), s, is_async=True)
                            s = warpgroup_mma_wait(num_outstanding=0, deps=(s,))
                        key = n * PAGE + gl.arange(0, PAGE, layout=s_col)
                        visible = key[None, :] < lim[:, None]
                        sv = gl.where(visible, s * sm_scale_log2, float("-inf"))
                        m_new, alpha, p, l_i = _online_softmax(sv, m_i, l_i)
                        mx_smem.index(stage).store(m_new)
                        p_smem.store(p.to(dtype))
                        fence_async_shared()
                        gl.thread_barrier()
                        mbarrier.arrive(p_ready.index(stage), count=1)
                        have_s = n_end < 0
                        _ss_zero_v(kv, end - n * PAGE, WG, ld_layout, PAGE, HALF, CHUNK)
                        acc = acc * gl.convert_layout(alpha, o_row)[:, None]
                        acc = warpgroup_mma(p_smem, kv.slice(WG * HALF, HALF, dim=1), acc, is_async=True)
                        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
                    else:
                        # ---- not owner: first issue S of the next page (ours), then take m_j, P_j ----
                        if n + 1 < n_end:
                            nxt = (it + 1) % 2
                            mbarrier.wait(kv_ready.index(nxt), ((it + 1) // 2) & 1)
                            s_tok = warpgroup_mma(q_smem, kv_smem.index(nxt).permute((1, 0)), s, use_acc=False,
                                                  is_async=True)
                            s_tok = warpgroup_mma(qr_smem, kr_smem.index(nxt).permute((1, 0)), s_tok, is_async=True)
                            mbarrier.wait(p_ready.index(stage), ph)
                            m_new = mx_smem.index(stage).load(s_row)
                            alpha = gl.exp2(m_i - gl.where(m_new == float("-inf"), 0.0, m_new))
                            _ss_zero_v(kv, end - n * PAGE, WG, ld_layout, PAGE, HALF, CHUNK)
                            acc = acc * gl.convert_layout(alpha, o_row)[:, None]
                            acc_tok = warpgroup_mma(p_smem, kv.slice(WG * HALF, HALF, dim=1), acc, is_async=True)
                            acc, s = warpgroup_mma_wait(num_outstanding=0, deps=(acc_tok, s_tok))
                            have_s = n_end >= 0
                        else:
                            mbarrier.wait(p_ready.index(stage), ph)
                            m_new = mx_smem.index(stage).load(s_row)
                            alpha = gl.exp2(m_i - gl.where(m_new == float("-inf"), 0.0, m_new))
                            _ss_zero_v(kv, end - n * PAGE, WG, ld_layout, PAGE, HALF, CHUNK)
                            acc = acc * gl.convert_layout(alpha, o_row)[:, None]
                            acc = warpgroup_mma(p_smem, kv.slice(WG * HALF, HALF, dim=1), acc, is_async=True)
                            acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
                        l_i = l_i * alpha
                    m_i = m_new
                    gl.thread_barrier()
                    mbarrier.arrive(kv_free.index(stage), count=1)
                    it += 1
            else:
                # ---- true seesaw (FlashMLA order). At a partner page n we first issue S(n+1) (our page), then
                # wait for the partner's m_n, run softmax(n+1) from m_n at once and publish m_{n+1}, P_{n+1};
                # only then P_n V_n (and, next iteration, P_{n+1} V_{n+1}). The softmaxes of consecutive pages
                # form the only cross-warpgroup chain; each one runs under the other warpgroup's two P V. ----
                alpha_p = gl.zeros([BLOCK_M], gl.float32, layout=s_row)   # scale for our published page
                have_p = n_end < 0          # our next page's S/softmax already done (runtime bool)
                for n in range(n_begin, n_end):
                    stage = it % 2
                    ph = (it // 2) & 1
                    kv = kv_smem.index(stage)
                    p_smem = kr_smem.index(stage)._reinterpret(dtype, [BLOCK_M, PAGE], p_smem_layout)
                    mbarrier.wait(kv_ready.index(stage), ph)
                    if stage == WG:
                        if not have_p:
                            # first page of the chunk is ours: S, softmax, publish
                            s = warpgroup_mma(q_smem, kv.permute((1, 0)), s, use_acc=False, is_async=True)
                            s = warpgroup_mma(qr_smem, kr_smem.index(stage).permute((1, 0)), s, is_async=True)
                            s = warpgroup_mma_wait(num_outstanding=0, deps=(s,))
                            m_i, alpha_p, l_i = _ss_softmax(s, m_i, l_i, lim, n, cols_s, sm_scale_log2, mx_smem,
                                                            p_smem, p_ready, stage, dtype)
                        have_p = n_end < 0
                        _ss_zero_v(kv, end - n * PAGE, WG, ld_layout, PAGE, HALF, CHUNK)
                        acc = acc * gl.convert_layout(alpha_p, o_row)[:, None]
                        acc = warpgroup_mma(p_smem, kv.slice(WG * HALF, HALF, dim=1), acc, is_async=True)
                        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
                    else:
                        if n + 1 < n_end:
                            nxt = (it + 1) % 2
                            mbarrier.wait(kv_ready.index(nxt), ((it + 1) // 2) & 1)
                            s = warpgroup_mma(q_smem, kv_smem.index(nxt).permute((1, 0)), s, use_acc=False,
                                              is_async=True)
                            s = warpgroup_mma(qr_smem, kr_smem.index(nxt).permute((1, 0)), s, is_async=True)
                            mbarrier.wait(p_ready.index(stage), ph)
                            m_j = mx_smem.index(stage).load(s_row)
                            alpha1 = gl.exp2(m_i - gl.where(m_j == float("-inf"), 0.0, m_j))
                            if CHAIN == 2:
                                # P_n V_n goes to the tensor cores before our softmax(n+1), behind S(n+1)
                                _ss_zero_v(kv, end - n * PAGE, WG, ld_layout, PAGE, HALF, CHUNK)
                                acc = acc * gl.convert_layout(alpha1, o_row)[:, None]
                                acc = warpgroup_mma(p_smem, kv.slice(WG * HALF, HALF, dim=1), acc, is_async=True)
                                s = warpgroup_mma_wait(num_outstanding=1, deps=(s,))
                            else:
                                s = warpgroup_mma_wait(num_outstanding=0, deps=(s,))
                            p2_smem = kr_smem.index(nxt)._reinterpret(dtype, [BLOCK_M, PAGE], p_smem_layout)
                            m_i, alpha_p, l_i = _ss_softmax(s, m_j, l_i * alpha1, lim, n + 1, cols_s, sm_scale_log2,
                                                            mx_smem, p2_smem, p_ready, nxt, dtype)
                            have_p = n_end >= 0
                            if CHAIN == 2:
                                acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
                            else:
                                _ss_zero_v(kv, end - n * PAGE, WG, ld_layout, PAGE, HALF, CHUNK)
                                acc = acc * gl.convert_layout(alpha1, o_row)[:, None]
                                acc = warpgroup_mma(p_smem, kv.slice(WG * HALF, HALF, dim=1), acc, is_async=True)
                                acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
                        else:
                            mbarrier.wait(p_ready.index(stage), ph)
                            m_j = mx_smem.index(stage).load(s_row)
                            alpha1 = gl.exp2(m_i - gl.where(m_j == float("-inf"), 0.0, m_j))
                            l_i = l_i * alpha1
                            m_i = m_j
                            _ss_zero_v(kv, end - n * PAGE, WG, ld_layout, PAGE, HALF, CHUNK)
                            acc = acc * gl.convert_layout(alpha1, o_row)[:, None]
                            acc = warpgroup_mma(p_smem, kv.slice(WG * HALF, HALF, dim=1), acc, is_async=True)
                            acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
                    gl.thread_barrier()
                    mbarrier.arrive(kv_free.index(stage), count=1)
                    it += 1
            mbarrier.arrive(q_free, count=1)

            # ---- epilogue: combine the two warpgroups' row sums ----
            lbuf = (c & 1) * 2
            lx_smem.index(lbuf + WG).store(l_i)
            gl.thread_barrier()
            mbarrier.arrive(l_ready.index(lbuf + WG), count=1)
            mbarrier.wait(l_ready.index(lbuf + 1 - WG), (c // 2) & 1)
            l_i = l_i + lx_smem.index(lbuf + 1 - WG).load(s_row)
            empty = l_i == 0.0
            inv_l = gl.where(empty, 0.0, 1.0 / gl.where(empty, 1.0, l_i))
            lse2 = m_i + gl.log2(gl.where(empty, 1.0, l_i))
            o = acc * gl.convert_layout(inv_l, o_row)[:, None]
            slot = _split_slot(num_splits_ptr, bi, begin_idx, begin_n_split, no_split)
            _store_o(o, m0 + gl.arange(0, BLOCK_M, layout=o_row), WG * HALF + gl.arange(0, HALF, layout=o_col), bi,
                     no_split, slot, out_ptr, oacc_ptr, stride_oacc_b, stride_oacc_r, R, DV)
            if WG == 0:
                _store_lse(lse2, empty, m0 + gl.arange(0, BLOCK_M, layout=s_row), bi, no_split, slot, lse_ptr,
                           lacc_ptr, stride_lacc_b, R, H_Q, S_Q)
            c += 1


SEESAW_NUM_WARPS = 4        # default partition (warpgroup 0); + 4 warps (warpgroup 1) + 1 loader warp
SEESAW_REGS = (240, 24)
SEESAW_MAXNREG = 168


@gluon.jit
def mla_decode_seesaw_kernel(
    q_ptr, stride_qb, stride_qs, stride_qh,
    k_desc, v_desc,
    bt_ptr, stride_bt,
    seqlens_ptr, meta_ptr, num_splits_ptr,
    out_ptr, lse_ptr,
    oacc_ptr, stride_oacc_b, stride_oacc_r,
    lacc_ptr, stride_lacc_b,
    sm_scale_log2,
    R, H_Q, S_Q,
    CAUSAL: gl.constexpr,
    BLOCK_M: gl.constexpr, PAGE: gl.constexpr, D: gl.constexpr, DV: gl.constexpr, CHUNK: gl.constexpr,
    REGS1: gl.constexpr, REGS_LOAD: gl.constexpr, CHAIN: gl.constexpr,
    num_warps: gl.constexpr,
):
    gl.static_assert(num_warps == 4, "default partition = one warpgroup")
    NCHUNK: gl.constexpr = D // CHUNK
    dtype: gl.constexpr = k_desc.dtype
    pid_m = gl.program_id(0)
    part = gl.program_id(2)
    m0 = pid_m * BLOCK_M

    smem_layout: gl.constexpr = k_desc.layout
    vec_layout: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [0])
    q_smem = gl.allocate_shared_memory(dtype, [BLOCK_M, DV], smem_layout)
    qr_smem = gl.allocate_shared_memory(dtype, [BLOCK_M, D - DV], smem_layout)
    kv_smem = gl.allocate_shared_memory(dtype, [2, PAGE, DV], smem_layout)
    kr_smem = gl.allocate_shared_memory(dtype, [2, PAGE, D - DV], smem_layout)
    mx_smem = gl.allocate_shared_memory(gl.float32, [2, BLOCK_M], vec_layout)
    lx_smem = gl.allocate_shared_memory(gl.float32, [4, BLOCK_M], vec_layout)
    kv_ready = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    kv_free = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    p_ready = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    l_ready = gl.allocate_shared_memory(gl.int64, [4, 1], mbarrier.MBarrierLayout())
    q_ready = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    q_free = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    for i in gl.static_range(2):
        mbarrier.init(kv_ready.index(i), count=1)
        mbarrier.init(kv_free.index(i), count=2)
        mbarrier.init(p_ready.index(i), count=1)
    for i in gl.static_range(4):
        mbarrier.init(l_ready.index(i), count=1)
    mbarrier.init(q_ready, count=2)
    mbarrier.init(q_free, count=2)
    fence_async_shared()

    gl.warp_specialize([
        (_ss_compute, (0, q_ptr, stride_qb, stride_qs, stride_qh,
          q_smem, qr_smem, kv_smem, kr_smem, mx_smem, lx_smem,
          kv_ready, kv_free, p_ready, q_ready, q_free, l_ready,
          seqlens_ptr, meta_ptr, num_splits_ptr, part, m0,
          out_ptr, lse_ptr, oacc_ptr, stride_oacc_b, stride_oacc_r, lacc_ptr, stride_lacc_b,
          sm_scale_log2, R, H_Q, S_Q, CAUSAL, BLOCK_M, PAGE, D, DV, CHUNK, CHAIN)),
        (_ss_compute, (1, q_ptr, stride_qb, stride_qs, stride_qh,
          q_smem, qr_smem, kv_smem, kr_smem, mx_smem, lx_smem,
          kv_ready, kv_free, p_ready, q_ready, q_free, l_ready,
          seqlens_ptr, meta_ptr, num_splits_ptr, part, m0,
          out_ptr, lse_ptr, oacc_ptr, stride_oacc_b, stride_oacc_r, lacc_ptr, stride_lacc_b,
          sm_scale_log2, R, H_Q, S_Q, CAUSAL, BLOCK_M, PAGE, D, DV, CHUNK, CHAIN)),
        (_ss_loader, (k_desc, v_desc, kv_smem, kr_smem, kv_ready, kv_free, bt_ptr, stride_bt, seqlens_ptr,
                      meta_ptr, part, PAGE, CHUNK, NCHUNK)),
    ], [4, 1], [REGS1, REGS_LOAD])
