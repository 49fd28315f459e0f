"""Warp-specialized Hopper MLA decoding kernel: one softmax warpgroup and two P·V warpgroups (the default for one
64-row query tile; ``ws2_kernel``, which reuses the P·V warpgroups, for more).

Why: in the lock-step kernel (``kernel.mla_decode_kernel``) both warpgroups run the same program, so the tensor
cores idle while both do the softmax, and splitting the 64 x 64 S by columns makes each warpgroup re-read the whole
Q tile for an N = 32 wgmma (shared-memory bound). Here the work is split by *kind* instead:

* **softmax warpgroup** (default partition, 4 warps): stages the Q tile (64 x 576) in shared memory, computes the
  full ``S = Q K^T`` of each page (N = 64 wgmma: Q read once per page), the online softmax with the running row
  max (the only warpgroup that needs it: no cross-warpgroup reduction), writes ``P`` (bf16/fp16, into the rope
  slot of the page's ring stage, dead after ``Q K^T``) and ``alpha = exp2(m_old - m_new)`` to shared memory,
  then arrives on ``p_ready[stage]``. It keeps the row sums and writes ``lse``; at a chunk's end it hands
  ``1 / l`` to the P·V warpgroups.
* **two P·V warpgroups** (4 warps each): each owns half of the ``64 x 512`` fp32 output (64 x 256, 128 registers
  per thread). Per page: wait ``p_ready``, ``O *= alpha``, ``O += P V[:, half]``, arrive ``kv_free``.
  P·V warpgroup 0 also streams pages (64 x 576) through the 2-stage TMA ring (``kv_ready`` with the byte count,
  ``kv_free`` with 2 arrivals); a separate 1-warp producer does not fit (see ``MAXNREG``).

While the softmax warpgroup runs the softmax of page n on the CUDA cores, the tensor cores run the P·V of page
n - 1; while the P·V warpgroups rescale O, they run ``Q K^T`` of page n + 1. Tensor work per page: 64x64x576 +
64x512x64 (no duplicated Q reads).
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

from . import asm_mma as AM
from . import cluster as CL
from .kernel import (_issue_page_at, _issue_page_groups, _issue_piece, _online_softmax, _part_meta, _split_slot,
                     _ss_chunk, _ss_zero_v, _stage_q, _store_lse, _store_o)

NUM_WARPS = 4          # default partition = the softmax warpgroup
LAZY = 8               # the running row max moves only when a page's row max exceeds it by more than LAZY (log2
                       # units; P <= 2^LAZY): alpha is then exactly 1 on almost every page, and a per-page flag
                       # lets the P.V warpgroups skip the O rescale; 0: exact running max, rescale every page
PV_REGS = 192          # setmaxnreg of each P·V warpgroup (O half: 128 fp32 registers)
NAMED = 1              # 1: the per-page hand-offs "P published" (softmax -> each P.V warpgroup) and "stage read"
                       # (P.V warpgroup 1 -> 0, before the refill) on hardware named barriers (bar.arrive by the
                       # producer's threads, bar.sync by the consumer's) instead of mbarriers (arrive after a
                       # warpgroup bar.sync, try_wait loop); ids P_BAR + 2 * stage + P.V warpgroup and
                       # FREE_BAR + stage
Q_TMA = 1              # 1 (default): the Q tile of each chunk lands by TMA (a [b, s_q * h_q, 576] view of q, nine
                       # 64 x 64 boxes on one mbarrier; rows past s_q * h_q are the box's zero fill) instead of 288
                       # bytes-per-thread of plain loads whose smem stores Triton separates by barriers (two 64-column
                       # chunks in flight: ~5 round trips per chunk); where q's layout allows (launcher.q_descriptor),
                       # plain loads otherwise. H100: +0.3-2.4 % on the one-tile shapes (docs/perf-notes.md "Session
                       # 14"). 2: also the next chunk's Q issued right after a chunk's last S (under its last softmax):
                       # no faster than 1 on H100. 0: plain loads always
PDL = 0                # 1 (opt-in): programmatic dependent launch. The kernel is launched with programmatic stream
                       # serialization and waits (griddepcontrol.wait) for the previous kernel on the stream only
                       # right before its partitions start, after its shared-memory set-up; and it lets the split
                       # combine be scheduled at once (griddepcontrol.launch_dependents; the combine waits for this
                       # grid itself), as FlashMLA does for both. Correct, not faster under the benchmark protocol
                       # (H100: one-tile shapes 0.02-0.6 % slower, the rest within noise; the kernel starts 1.7 us
                       # earlier after a kernel, but its CTAs then wait for it; docs/perf-notes.md "Session 15")
P_BAR = gl.constexpr(10)   # named barrier ids 10-15 (Triton's partitions use 0-4, ws2_kernel.M_BAR 6 / 7,
                           # _any_ne 8 / 9)
FREE_BAR = gl.constexpr(14)
TRACE_BUF = None       # diagnostics: an int64 cuda tensor of 256 * 16 -> per-page SM clocks of CTA 0 (TRACE)
TRACE_MODE = 1         # with TRACE_BUF: 1 per-page stamps of CTA 0, 2 per-CTA timeline (32 slots per CTA)
MAXNREG = 168          # launch registers: 12 warps x 168 = 64,512, the pool the partitions' setmaxnreg values
                       # share (softmax 120 + 2 x P·V 192). ptxas allocates each setmaxnreg region to its own
                       # limit, but a region with an m64n256 wgmma below ~154 makes it ignore them all (C7507).


@gluon.constexpr_function
def _mov_sreg(name):
    """PTX reading 64-bit special register ``name`` (``clock64``, ``globaltimer``) into $0."""
    return f"mov.u64 $0, %{name};"


@gluon.jit
def _sreg(NAME: gl.constexpr):
    """Special register ``NAME`` as a [1] int64 tensor every thread of the warpgroup holds (timing diagnostics)."""
    z = gl.full([1], 0, gl.int32, layout=gl.BlockedLayout([1], [32], [4], [0]))
    return gl.inline_asm_elementwise(_mov_sreg(NAME), "=l,r", [z], dtype=gl.int64, is_pure=False, pack=1)


@gluon.constexpr_function
def _gdc_asm(op):
    """PTX: grid dependency control ``op`` (wait / launch_dependents); $0 is a dummy result."""
    return f"griddepcontrol.{op};\n\tmov.u32 $0, 0;"


@gluon.jit
def _pdl_start(PDL: gl.constexpr):
    """PDL: called by the kernel body (the default partition's 4 warps) right before ``warp_specialize``, after the
    shared-memory set-up, which touches no global memory. ``griddepcontrol.wait``: the previous kernel on the stream
    (which may write q, the cache, the metadata, or read the workspace this kernel writes) has completed and its
    writes are visible; every partition starts after this (Triton's warp-specialize hand-off), so no global access
    of the kernel precedes it. ``griddepcontrol.launch_dependents``: the split combine may be scheduled now (it runs
    ``griddepcontrol.wait`` for this grid before reading anything)."""
    if PDL:
        z = gl.full([128], 0, gl.int32, layout=gl.BlockedLayout([1], [32], [4], [0]))
        gl.inline_asm_elementwise(_gdc_asm("wait"), "=r,r", [z], dtype=gl.int32, is_pure=False, pack=1)
        gl.inline_asm_elementwise(_gdc_asm("launch_dependents"), "=r,r", [z], dtype=gl.int32, is_pure=False,
                                  pack=1)


@gluon.jit
def _stamp(trace_ptr, it, event: gl.constexpr, TRACE: gl.constexpr):
    """Timing diagnostics (TRACE == 1): SM clock of ``event`` for page ``it`` of CTA (0, 0, 0) into
    trace[it, event]."""
    if TRACE == 1:
        if (gl.program_id(0) == 0) & (gl.program_id(2) == 0) & (it < 256):
            t = _sreg("clock64")
            gl.store(trace_ptr + it * 16 + event + gl.arange(0, 1, layout=t.type.layout), t)


@gluon.jit
def _cta_stamp(trace_ptr, slot, value, TRACE: gl.constexpr):
    """Timing diagnostics (TRACE == 2, every CTA): trace[cta, slot .. slot + 2] = (global timer in ns, SM clock,
    ``value``), cta = program_id(2) * num_programs(0) + program_id(0); 32 slots per CTA."""
    if TRACE == 2:
        if slot < 30:
            ns = _sreg("globaltimer")
            clk = _sreg("clock64")
            cta = gl.program_id(2) * gl.num_programs(0) + gl.program_id(0)
            base = trace_ptr + cta.to(gl.int64) * 32 + slot + gl.arange(0, 1, layout=ns.type.layout)
            gl.store(base, ns)
            gl.store(base + 1, clk)
            gl.store(base + 2, gl.zeros_like(clk) + value)


@gluon.jit
def _row_limits(m0, L, end, H_Q, S_Q, CAUSAL: gl.constexpr, BLOCK_M: gl.constexpr, s_row: gl.constexpr):
    """Rows of the tile, each row's key limit (keys j < lim are visible) and the tile's smallest limit."""
    rows_s = m0 + gl.arange(0, BLOCK_M, layout=s_row)
    if CAUSAL:
        lim = gl.minimum(end, L - S_Q + rows_s // H_Q + 1)
        lim_lo = gl.minimum(end, L - S_Q + m0 // H_Q + 1)   # smallest lim of the tile (row m0)
    else:
        lim = gl.zeros([BLOCK_M], gl.int32, layout=s_row) + end
        lim_lo = end
    return rows_s, lim, lim_lo


@gluon.jit
def _scaled_scores(s, n, lim, lim_lo, sm_scale_log2, PAGE: gl.constexpr):
    """Page n's scores in base 2, keys past each row's limit at -inf."""
    if (n + 1) * PAGE <= lim_lo:
        sv = s * sm_scale_log2                 # every key of the page is visible to every row
    else:
        cols = gl.arange(0, PAGE, layout=gl.SliceLayout(0, s.type.layout))
        visible = cols[None, :] < (lim - n * PAGE)[:, None]
        sv = gl.where(visible, s * sm_scale_log2, float("-inf"))
    return sv


@gluon.constexpr_function
def _bar_red_or(bar):
    """PTX: $0 = $1 = 1 if $2 or $3 is non-zero in any of the 128 threads meeting at named barrier ``bar``, else 0."""
    return ("{ .reg .pred p, q; setp.ne.s32 p, $2, 0; setp.ne.or.s32 p, $3, 0, p; "
            f"bar.red.or.pred q, {bar}, 128, p; selp.s32 $0, 1, 0, q; selp.s32 $1, 1, 0, q; }}")


@gluon.jit
def _any_ne(a, b, BAR: gl.constexpr):
    """1 in every element when ``a != b`` in any row of the warpgroup, else 0: ``bar.red.or`` over its 128 threads
    on named barrier ``BAR`` (8 or 9; Triton's partitions use 0-4). ``a``, ``b``: [64] row vectors of the S
    accumulator layout (two rows per thread)."""
    gl.static_assert((BAR == 8) | (BAR == 9), "named barrier 8 or 9")
    ne = (a != b).to(gl.int32)
    return gl.inline_asm_elementwise(_bar_red_or(BAR), "=r,=r,r,r", [ne], dtype=gl.int32, is_pure=False, pack=2)


@gluon.constexpr_function
def _bar_asm(op, count):
    """PTX: named barrier $1 (a register) over ``count`` threads, ``op`` = arrive (producer) or sync (consumer)."""
    return f"bar.{op} $1, {count};\n\tmov.u32 $0, 0;"


@gluon.jit
def _named_bar(bar, COUNT: gl.constexpr, ARRIVE: gl.constexpr):
    """Hardware named barrier ``bar`` (an id, the same in the whole warpgroup, may be a runtime value) over ``COUNT``
    threads, called by all 128 threads of a warpgroup:
    ``bar.arrive`` (ARRIVE, the producer: its earlier shared-memory writes are ordered before the consumers' reads
    after their ``bar.sync``) or ``bar.sync`` (consumer). Unlike an mbarrier it has no phase: every arrive must be
    matched by the consumers' syncs before the producer arrives on it again. For NAMED's two hand-offs the ring
    guarantees it: the producer's next arrive on a stage's id (P of page n + 2; P.V warpgroup 1's "read" of page
    n + 2) comes after it waited for page n + 2 to land, whose TMA P.V warpgroup 0 issues only after its "stage
    read" sync of page n, which follows both P.V warpgroups' P syncs of page n."""
    ids = gl.full([128], 0, gl.int32, layout=gl.BlockedLayout([1], [32], [4], [0])) + bar
    gl.inline_asm_elementwise(_bar_asm("arrive" if ARRIVE else "sync", COUNT), "=r,r", [ids], dtype=gl.int32,
                              is_pure=False, pack=1)


@gluon.jit
def _publish_p(p, alpha, ax_slot, kr, ready, BLOCK_M: gl.constexpr, PAGE: gl.constexpr, NAMED: gl.constexpr = 0,
               p_bar=0):
    """alpha and P (in the cache dtype, over the page's rope slot: its Q K^T is done) to the P.V warpgroups
    (NAMED: named barriers ``p_bar`` and ``p_bar + 1``, one per P.V warpgroup, so neither waits for the other;
    else mbarrier ``ready``)."""
    ax_slot.store(alpha)
    kr._reinterpret(kr.dtype, [BLOCK_M, PAGE], kr.layout).store(p.to(kr.dtype))
    fence_async_shared()
    if NAMED:
        _named_bar(p_bar, 256, True)
        _named_bar(p_bar + 1, 256, True)
    else:
        gl.thread_barrier()
        mbarrier.arrive(ready, count=1)


@gluon.jit
def _finish_chunk(m, l_i, c, rows_s, bi, no_split, begin_idx, begin_n_split, lx_smem, l_ready, l_free,
                  num_splits_ptr, lse_ptr, lacc_ptr, stride_lacc_b, R, H_Q, S_Q):
    """Chunk epilogue of the softmax side: 1/l to the P.V warpgroups (buffer c % 2), lse (natural log) out."""
    lb = c % 2
    mbarrier.wait(l_free.index(lb), ((c // 2) & 1) ^ 1)
    empty = l_i == 0.0
    lx_smem.index(lb).store(gl.where(empty, 0.0, 1.0 / gl.where(empty, 1.0, l_i)))
    gl.thread_barrier()
    mbarrier.arrive(l_ready.index(lb), count=1)
    lse2 = m + gl.log2(gl.where(empty, 1.0, l_i))
    slot = _split_slot(num_splits_ptr, bi, begin_idx, begin_n_split, no_split)
    _store_lse(lse2, empty, rows_s, bi, no_split, slot, lse_ptr, lacc_ptr, stride_lacc_b, R, H_Q, S_Q)


@gluon.jit
def _issue_q(q_desc, q_smem, qr_smem, bar, bi, m0, CHUNK: gl.constexpr, C_LO: gl.constexpr = 0,
             C_HI: gl.constexpr = -1):
    """TMA the Q tile of rows m0 .. m0+63 of sequence ``bi`` (``q_desc``: q as [b, s_q * h_q, 576], box 1 x 64 x 64)
    into ``q_smem`` (latent, chunk-major view) and ``qr_smem`` (rope), 64-column chunks C_LO .. C_HI-1 of the 9 (all
    by default; the rope is chunk 8), arriving on ``bar`` with their byte count (rows past the view's end are zero
    fill, counted too). The caller makes sure the tensor cores are done reading the previous tile."""
    NV: gl.constexpr = q_smem.shape[1] // CHUNK
    BLOCK_M: gl.constexpr = q_smem.shape[0]
    HI: gl.constexpr = NV + 1 if C_HI < 0 else C_HI
    eb: gl.constexpr = q_desc.dtype.primitive_bitwidth // 8
    mbarrier.expect(bar, (HI - C_LO) * BLOCK_M * CHUNK * eb)
    q3 = q_smem._reinterpret(q_desc.dtype, [NV, BLOCK_M, CHUNK], q_desc.layout)
    for c in gl.static_range(C_LO, HI):
        if c < NV:
            tma.async_copy_global_to_shared(q_desc, [bi, m0, c * CHUNK], bar, q3.slice(c, 1, dim=0))
        else:
            tma.async_copy_global_to_shared(q_desc, [bi, m0, c * CHUNK], bar,
                                            qr_smem._reinterpret(q_desc.dtype, [1, BLOCK_M, CHUNK], q_desc.layout))


@gluon.jit
def _has_work_after(bi, seqlens_ptr, meta_ptr, part, begin_idx, end_idx, begin_seqlen, end_seqlen):
    """1 (int32) when the part has a chunk after ``bi`` and it has work (keys, or an empty sequence whose output
    is still written: the chunk loops' ``(end > start) | (L == 0)``), else 0 (Q_TMA = 2: its Q is issued early)."""
    nxt = 0
    if bi < end_idx:
        L, start, end = _ss_chunk(seqlens_ptr, meta_ptr, part, bi + 1, begin_idx, end_idx, begin_seqlen, end_seqlen)
        nxt = ((end > start) | (L == 0)).to(gl.int32)
    return nxt


@gluon.jit
def _ws_softmax(q_ptr, stride_qb, stride_qs, stride_qh,
                q_smem, qr_smem, kv_smem, kr_smem, ax_smem, lx_smem,
                kv_ready, p_ready, l_ready, l_free,
                seqlens_ptr, meta_ptr, num_splits_ptr, lse_ptr, lacc_ptr, stride_lacc_b,
                sm_scale_log2, R, H_Q, S_Q,
                CAUSAL: gl.constexpr, BLOCK_M: gl.constexpr, PAGE: gl.constexpr, D: gl.constexpr,
                DV: gl.constexpr, CHUNK: gl.constexpr, trace_ptr, TRACE: gl.constexpr, fl_smem,
                LAZY: gl.constexpr, NAMED: gl.constexpr = 0, q_desc=None, q_bar=None, Q_TMA: gl.constexpr = 0):
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, PAGE, 16])
    ld_layout: gl.constexpr = gl.BlockedLayout([1, 8], [8, 4], [4, 1], [1, 0])
    s_row: gl.constexpr = gl.SliceLayout(1, s_layout)

    part = gl.program_id(2)
    m0 = gl.program_id(0) * BLOCK_M
    begin_idx, begin_seqlen, end_idx, end_seqlen, begin_n_split = _part_meta(meta_ptr, part)

    s = gl.zeros([BLOCK_M, PAGE], gl.float32, layout=s_layout)
    it = 0   # pages of this CTA: ring stage = it % 2, phase = (it // 2) & 1
    c = 0    # chunks of this CTA: 1/l buffer = c % 2
    q_pre = 0   # Q_TMA = 2: this chunk's Q was issued after the previous chunk's last S
    for bi in range(begin_idx, end_idx + 1):
        L, start, end = _ss_chunk(seqlens_ptr, meta_ptr, part, bi, begin_idx, end_idx, begin_seqlen, end_seqlen)
        no_split = (start == 0) & (end == L)
        if (end > start) | (L == 0):
            # ---- Q tile -> shared memory (this warpgroup is its only reader; its last S has completed) ----
            if Q_TMA:
                if q_pre == 0:
                    gl.thread_barrier()   # (every warp past its wait for the previous chunk's last S)
                    _issue_q(q_desc, q_smem, qr_smem, q_bar, bi, m0, CHUNK)
                pre_next = 0   # Q_TMA = 2: the next chunk has work -> its Q goes right after this chunk's last S
                if Q_TMA == 2:
                    pre_next = _has_work_after(bi, seqlens_ptr, meta_ptr, part, begin_idx, end_idx, begin_seqlen,
                                               end_seqlen)
                mbarrier.wait(q_bar, c & 1)
                q_pre = 0
            else:
                _stage_q(q_ptr, bi, stride_qb, stride_qs, stride_qh, m0, R, H_Q, q_smem, qr_smem, ld_layout, CHUNK)
                fence_async_shared()
                gl.thread_barrier()

            rows_s, lim, lim_lo = _row_limits(m0, L, end, H_Q, S_Q, CAUSAL, BLOCK_M, s_row)
            m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, layout=s_row)
            l_i = gl.zeros([BLOCK_M], gl.float32, layout=s_row)
            for n in range(start // PAGE, (end + PAGE - 1) // PAGE):
                stage = it % 2
                kr = kr_smem.index(stage)
                _stamp(trace_ptr, it, 0, TRACE)
                mbarrier.wait(kv_ready.index(stage), (it // 2) & 1)
                _stamp(trace_ptr, it, 1, TRACE)
                s = warpgroup_mma(q_smem, kv_smem.index(stage).permute((1, 0)), s, use_acc=False, is_async=True)
                s = warpgroup_mma(qr_smem, kr.permute((1, 0)), s, is_async=True)
                s = warpgroup_mma_wait(num_outstanding=0, deps=(s,))
                _stamp(trace_ptr, it, 2, TRACE)
                if Q_TMA == 2:   # the chunk's last S is done: Q of the next chunk lands under this softmax + epilogue
                    if (pre_next != 0) & (n == (end + PAGE - 1) // PAGE - 1):
                        gl.thread_barrier()
                        _issue_q(q_desc, q_smem, qr_smem, q_bar, bi + 1, m0, CHUNK)
                        q_pre = 1
                # ---- online softmax (base 2); keys j < lim are visible ----
                sv = _scaled_scores(s, n, lim, lim_lo, sm_scale_log2, PAGE)
                if LAZY:
                    m_prev = m_i
                    m_i, alpha, p, l_i = _online_softmax(sv, m_i, l_i, LAZY)
                    fl_smem.index(stage).store(_any_ne(m_i, m_prev, 8))
                else:
                    m_i, alpha, p, l_i = _online_softmax(sv, m_i, l_i)
                _publish_p(p, alpha, ax_smem.index(stage), kr, p_ready.index(stage), BLOCK_M, PAGE, NAMED,
                           P_BAR + 2 * stage)
                _stamp(trace_ptr, it, 3, TRACE)
                it += 1

            # ---- epilogue: 1/l to the P.V warpgroups; lse (natural log) from here ----
            _finish_chunk(m_i, l_i, c, rows_s, bi, no_split, begin_idx, begin_n_split, lx_smem, l_ready, l_free,
                          num_splits_ptr, lse_ptr, lacc_ptr, stride_lacc_b, R, H_Q, S_Q)
            c += 1


@gluon.jit
def _next_page(bi, n, n_end, end_idx, seqlens_ptr, meta_ptr, part, begin_idx, begin_seqlen, end_seqlen,
               bt_ptr, stride_bt, PAGE: gl.constexpr):
    """The CTA's page after page ``n`` of chunk ``bi`` (pages run over the part's chunks in order; chunks with
    no keys have none) and its block-table entry. Returns (bi, n, n_end, page); ``n >= n_end`` (page 0) when
    there is none."""
    n += 1
    while (n >= n_end) & (bi < end_idx):
        bi += 1
        L, start, end = _ss_chunk(seqlens_ptr, meta_ptr, part, bi, begin_idx, end_idx, begin_seqlen, end_seqlen)
        n = start // PAGE
        n_end = (end + PAGE - 1) // PAGE
    page = gl.load(bt_ptr + bi.to(gl.int64) * stride_bt + n, mask=n < n_end, other=0)
    return bi, n, n_end, page


@gluon.jit
def _issue_ring_page(k_desc, v_desc, kv_smem, kr_smem, kv_ready, page, ok, stage, CW: gl.constexpr,
                     NCHUNK: gl.constexpr, PAGE: gl.constexpr, CHUNK: gl.constexpr):
    """TMA ``page`` into ring ``stage``: with one mbarrier (CW = 0, ``_issue_page_at``) or in pieces
    (``_issue_page_groups``)."""
    if CW:
        _issue_page_groups(k_desc, v_desc, kv_smem, kr_smem, kv_ready, page, ok, stage, PAGE, CHUNK)
    else:
        _issue_page_at(k_desc, v_desc, kv_smem, kr_smem, kv_ready, page, ok, stage, NCHUNK, PAGE, CHUNK)


@gluon.jit
def _issue_mc(kv_ready, page, ok, stage, lead, rank, sbase, kd, vd, CW: gl.constexpr, PAGE: gl.constexpr,
              CHUNK: gl.constexpr, NV: gl.constexpr, EB: gl.constexpr, KV_OFF: gl.constexpr, KR_OFF: gl.constexpr,
              RR_OFF: gl.constexpr):
    """MC (2-CTA cluster): ``page`` into ring ``stage`` of both CTAs. Every CTA expects the whole page on its own
    barriers (the peer's multicast bytes count there too; they may land before this expect, which the pending
    arrival covers); latent piece k + 1 is multicast by CTA k % 2, the rope piece by CTA 1 (32 / 40 KB each).
    Addresses: ``sbase`` + the allocations' offsets (``cluster.smem_offsets``); ``kd`` / ``vd``: the tensor maps."""
    NB: gl.constexpr = NV // CW
    mbarrier.expect(kv_ready.index((CW + 1) * stage), PAGE * CHUNK * EB, pred=ok)
    for k in gl.static_range(CW):
        mbarrier.expect(kv_ready.index((CW + 1) * stage + 1 + k), NB * PAGE * CHUNK * EB, pred=ok)
    go = lead * ok.to(gl.int32)
    row = page * PAGE
    for k in gl.static_range(CW):
        CL.tma_multicast_3d(go * (rank == k % 2).to(gl.int32),
                            sbase + (KV_OFF + k * NB * PAGE * CHUNK * EB) + stage * (PAGE * NV * CHUNK * EB), vd,
                            0, row, k * NB, sbase + RR_OFF + ((CW + 1) * stage + 1 + k) * 8, 3)
    CL.tma_multicast_2d(go * (rank == 1).to(gl.int32), sbase + KR_OFF + stage * (PAGE * CHUNK * EB), kd,
                        NV * CHUNK, row, sbase + RR_OFF + (CW + 1) * stage * 8, 3)


@gluon.jit
def _ws_pv(WG: gl.constexpr, kv_smem, kr_smem, ax_smem, lx_smem,
           kv_ready, kv_free, p_ready, l_ready, l_free,
           seqlens_ptr, meta_ptr, num_splits_ptr, out_ptr, oacc_ptr, stride_oacc_b, stride_oacc_r, R,
           k_desc, v_desc, bt_ptr, stride_bt,
           BLOCK_M: gl.constexpr, PAGE: gl.constexpr, D: gl.constexpr, DV: gl.constexpr, CHUNK: gl.constexpr,
           trace_ptr, TRACE: gl.constexpr, PV_N: gl.constexpr = 256, CW: gl.constexpr = 0,
           fl_smem=None, FLAG: gl.constexpr = False, NAMED: gl.constexpr = 0, OWN: gl.constexpr = 0,
           MC: gl.constexpr = 0, cl_free=None, KV_OFF: gl.constexpr = 0, KR_OFF: gl.constexpr = 0,
           RR_OFF: gl.constexpr = 0, CF_OFF: gl.constexpr = 0, KD_PARAM: gl.constexpr = 0,
           VD_PARAM: gl.constexpr = 0, ASM_PV: gl.constexpr = 0, KVS_OFF: gl.constexpr = 0):
    """P.V warpgroup ``WG`` (output columns WG*256 .. +255, as one 64 x 256 accumulator or, PV_N = 128, two 64 x 128
    ones: an m64n256 wgmma needs >= 154 registers at the kernel's entry, more than 16 warps have). Warpgroup 0 also
    drives the TMA ring: it issues the first two pages, and after each page waits for both warpgroups' P.V and
    refills the stage two pages ahead (CW > 0: the rope columns and CW latent pieces with one mbarrier each,
    ``kv_ready[(CW + 1) * stage + piece]``, instead of one ``kv_ready[stage]``). FLAG: the softmax side also
    publishes ``fl_smem[stage]`` (int32, the same in every slot), 0 when every alpha of the page is exactly 1: O
    is then not rescaled. OWN (ws2 with CW = 4, opt-in): each P.V warpgroup refills the two latent pieces it reads
    itself, each as soon as its accumulator's wgmma is done (pieces 1 + 2 WG, then 2 + 2 WG); warpgroup 0 the rope
    piece (which holds P) after both. MC (ws2, opt-in): 2-CTA cluster, each page multicast into both CTAs, half
    by each (``_issue_mc``); a stage is refilled once both CTAs have read it (``cl_free``: a local and a remote
    arrive per page). ASM_PV (ws2 with PV_N = 128, opt-in): P is read from shared memory once per page into
    registers and both accumulators' wgmmas take it as their A operand, issued from inline PTX (``asm_mma.pv_mma``;
    the ring's latent part at byte ``KVS_OFF``); O is then four 64 x 64 accumulators (m64n64 layout), two per
    wgmma."""
    HALF: gl.constexpr = DV // 2
    SPLIT: gl.constexpr = PV_N < HALF
    gl.static_assert((PV_N == HALF) | (2 * PV_N == HALF), "PV_N: 256 or 128")
    NCHUNK: gl.constexpr = D // CHUNK
    dtype: gl.constexpr = kv_smem.dtype
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, PV_N, 16])
    ld_layout: gl.constexpr = gl.BlockedLayout([1, 8], [8, 4], [4, 1], [1, 0])
    o_row: gl.constexpr = gl.SliceLayout(1, o_layout)
    o_col: gl.constexpr = gl.SliceLayout(0, o_layout)
    one_layout: gl.constexpr = gl.BlockedLayout([1], [32], [4], [0])   # a [1] tensor every thread holds
    p_smem_layout: gl.constexpr = kr_smem.layout
    # ASM_PV: O as four 64 x 64 quarters in the m64n64 accumulator layout, which is also P's (A-register) layout
    q_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, 64, 16])
    q_row: gl.constexpr = gl.SliceLayout(1, q_layout)
    q_col: gl.constexpr = gl.SliceLayout(0, q_layout)
    gl.static_assert((ASM_PV == 0) | SPLIT, "ASM_PV: two m64n128 accumulators per warpgroup")
    BF16: gl.constexpr = dtype == gl.bfloat16

    part = gl.program_id(2)
    m0 = gl.program_id(0) * BLOCK_M
    begin_idx, begin_seqlen, end_idx, end_seqlen, begin_n_split = _part_meta(meta_ptr, part)

    # load cursor (warpgroup 0): the next page to load and its block-table entry, read one page ahead so that
    # the global load is off the path from "stage free" to "TMA issued"
    lbi = begin_idx
    ln = 0
    ln_end = 0
    lpage = 0
    gl.static_assert((not OWN) or (SPLIT and CW == 4), "OWN: two accumulators per warpgroup, CHUNK_WAIT 4")
    gl.static_assert((MC == 0) | ((CW > 0) & (OWN == 0) & (NAMED != 0)), "MC: with CHUNK_WAIT > 0, NAMED, not OWN")
    EB: gl.constexpr = dtype.primitive_bitwidth // 8
    lead = 0
    rank = 0
    sbase = 0
    kd = 0
    vd = 0
    if MC:   # the peer's barriers are initialised (prologue + fence) once every partition of both CTAs is here
        tid = CL.warpgroup_tid()
        CL.cluster_sync(tid)
        lead = (tid == 0).to(gl.int32)
        rank = CL.ctarank(tid)
        sbase = CL.smem_base(tid)
        kd = CL.desc_addr(tid, KD_PARAM)
        vd = CL.desc_addr(tid, VD_PARAM)
    if (WG == 0) | OWN:   # (OWN: warpgroup 1 keeps the same cursor: it refills its own pieces)
        # an empty part (begin_idx = batch > end_idx) has no sequence to read: cache_seqlens[begin_idx] and its
        # block-table row would be out of bounds, and no page may be issued (nobody would wait for it)
        if begin_idx <= end_idx:
            L0, start0, end0 = _ss_chunk(seqlens_ptr, meta_ptr, part, begin_idx, begin_idx, end_idx, begin_seqlen,
                                         end_seqlen)
            lbi, ln, ln_end, lpage = _next_page(lbi, start0 // PAGE - 1, (end0 + PAGE - 1) // PAGE, end_idx,
                                                seqlens_ptr, meta_ptr, part, begin_idx, begin_seqlen, end_seqlen,
                                                bt_ptr, stride_bt, PAGE)
            for j in gl.static_range(2):
                if WG == 0:
                    if MC:
                        _issue_mc(kv_ready, lpage, ln < ln_end, j, lead, rank, sbase, kd, vd, CW, PAGE, CHUNK,
                                  NCHUNK - 1, EB, KV_OFF, KR_OFF, RR_OFF)
                    else:
                        _issue_ring_page(k_desc, v_desc, kv_smem, kr_smem, kv_ready, lpage, ln < ln_end, j, CW,
                                         NCHUNK, PAGE, CHUNK)
                lbi, ln, ln_end, lpage = _next_page(lbi, ln, ln_end, end_idx, seqlens_ptr, meta_ptr, part,
                                                    begin_idx, begin_seqlen, end_seqlen, bt_ptr, stride_bt, PAGE)

    it = 0
    c = 0
    if WG == 0:
        _cta_stamp(trace_ptr, 0, end_idx - begin_idx + 1, TRACE)
    for bi in range(begin_idx, end_idx + 1):
        L, start, end = _ss_chunk(seqlens_ptr, meta_ptr, part, bi, begin_idx, end_idx, begin_seqlen, end_seqlen)
        no_split = (start == 0) & (end == L)
        if (end > start) | (L == 0):
            if ASM_PV:
                o0 = gl.zeros([BLOCK_M, 64], gl.float32, layout=q_layout)
                o1 = gl.zeros([BLOCK_M, 64], gl.float32, layout=q_layout)
                o2 = gl.zeros([BLOCK_M, 64], gl.float32, layout=q_layout)
                o3 = gl.zeros([BLOCK_M, 64], gl.float32, layout=q_layout)
            else:
                acc = gl.zeros([BLOCK_M, PV_N], gl.float32, layout=o_layout)
                if SPLIT:
                    acc1 = gl.zeros([BLOCK_M, PV_N], gl.float32, layout=o_layout)
            for n in range(start // PAGE, (end + PAGE - 1) // PAGE):
                stage = it % 2
                ph = (it // 2) & 1
                kv = kv_smem.index(stage)
                _stamp(trace_ptr, it, 4 + 4 * WG, TRACE)
                if CW:   # the pieces with this warpgroup's latent half (``_issue_page_groups``)
                    for j in gl.static_range(CW // 2):
                        mbarrier.wait(kv_ready.index((CW + 1) * stage + 1 + WG * (CW // 2) + j), ph)
                else:
                    mbarrier.wait(kv_ready.index(stage), ph)
                if NAMED:
                    _named_bar(P_BAR + 2 * stage + WG, 256, False)
                else:
                    mbarrier.wait(p_ready.index(stage), ph)
                _stamp(trace_ptr, it, 5 + 4 * WG, TRACE)
                _ss_zero_v(kv, end - n * PAGE, WG, ld_layout, PAGE, HALF, CHUNK)
                rescale = True
                if FLAG:   # the [1] slice every thread loads reduces to a scalar without any exchange
                    rescale = gl.max(fl_smem.index(stage).slice(0, 1).load(one_layout), axis=0) != 0
                p_smem = kr_smem.index(stage)._reinterpret(dtype, [BLOCK_M, PAGE], p_smem_layout)
                if ASM_PV:
                    if rescale:
                        alpha = ax_smem.index(stage).load(q_row)
                        o0 = o0 * alpha[:, None]
                        o1 = o1 * alpha[:, None]
                        o2 = o2 * alpha[:, None]
                        o3 = o3 * alpha[:, None]
                    p = p_smem.load(q_layout)
                    v_off: gl.constexpr = KVS_OFF + WG * HALF * PAGE * EB     # this warpgroup's four 64-column tiles
                    o0, o1 = AM.pv_mma(o0, o1, p, stage * (PAGE * DV * EB), v_off, BF16)
                    o2, o3 = AM.pv_mma(o2, o3, p, stage * (PAGE * DV * EB), v_off + 2 * PAGE * 64 * EB, BF16)
                    if OWN:   # as below
                        o0, o1, o2, o3 = AM.mma_wait4(o0, o1, o2, o3, 1)
                        _issue_piece(k_desc, v_desc, kv_smem, kr_smem, kv_ready, lpage, ln < ln_end, stage,
                                     1 + 2 * WG, PAGE, CHUNK)
                    o0, o1, o2, o3 = AM.mma_wait4(o0, o1, o2, o3, 0)
                    if OWN:
                        _issue_piece(k_desc, v_desc, kv_smem, kr_smem, kv_ready, lpage, ln < ln_end, stage,
                                     2 + 2 * WG, PAGE, CHUNK)
                else:
                    if rescale:
                        alpha = ax_smem.index(stage).load(o_row)
                        acc = acc * alpha[:, None]
                        if SPLIT:
                            acc1 = acc1 * alpha[:, None]    # both scaled before either wgmma reads them
                    acc = warpgroup_mma(p_smem, kv.slice(WG * HALF, PV_N, dim=1), acc, is_async=True)
                    if SPLIT:
                        acc1 = warpgroup_mma(p_smem, kv.slice(WG * HALF + PV_N, PV_N, dim=1), acc1, is_async=True)
                if ASM_PV == 0:   # (ASM_PV waited above)
                    if OWN:   # each accumulator's 2 latent tiles refilled (piece 1 + 2 WG, then 2 + 2 WG) once read:
                        # all but the last wgmma group done means acc is complete
                        acc, acc1 = warpgroup_mma_wait(num_outstanding=1, deps=(acc, acc1))
                        _issue_piece(k_desc, v_desc, kv_smem, kr_smem, kv_ready, lpage, ln < ln_end, stage,
                                     1 + 2 * WG, PAGE, CHUNK)
                        acc, acc1 = warpgroup_mma_wait(num_outstanding=0, deps=(acc, acc1))
                        _issue_piece(k_desc, v_desc, kv_smem, kr_smem, kv_ready, lpage, ln < ln_end, stage,
                                     2 + 2 * WG, PAGE, CHUNK)
                    elif SPLIT:
                        acc, acc1 = warpgroup_mma_wait(num_outstanding=0, deps=(acc, acc1))
                    else:
                        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
                _stamp(trace_ptr, it, 6 + 4 * WG, TRACE)
                if NAMED:   # warpgroup 1 -> 0: "done reading this stage" (each thread after its own wgmma wait)
                    _named_bar(FREE_BAR + stage, 256, WG == 1)
                else:
                    gl.thread_barrier()
                    mbarrier.arrive(kv_free.index(stage), count=1)
                if WG == 0:
                    # both P.V done with this stage -> refill it, then look up the page after
                    if not NAMED:
                        mbarrier.wait(kv_free.index(stage), ph)
                    if MC:   # this CTA has read the stage: tell both CTAs, then wait until the peer has too
                        CL.arrive_cta(lead, sbase + CF_OFF + stage * 8, rank)
                        CL.arrive_cta(lead, sbase + CF_OFF + stage * 8, 1 - rank)
                        mbarrier.wait(cl_free.index(stage), ph)
                    fence_async_shared()
                    if MC:
                        _issue_mc(kv_ready, lpage, ln < ln_end, stage, lead, rank, sbase, kd, vd, CW, PAGE, CHUNK,
                                  NCHUNK - 1, EB, KV_OFF, KR_OFF, RR_OFF)
                    elif OWN:      # the rope slot (P) only: the latent pieces went as each was read
                        _issue_piece(k_desc, v_desc, kv_smem, kr_smem, kv_ready, lpage, ln < ln_end, stage, 0,
                                     PAGE, CHUNK)
                    else:
                        _issue_ring_page(k_desc, v_desc, kv_smem, kr_smem, kv_ready, lpage, ln < ln_end, stage, CW,
                                         NCHUNK, PAGE, CHUNK)
                if (WG == 0) | OWN:
                    lbi, ln, ln_end, lpage = _next_page(lbi, ln, ln_end, end_idx, seqlens_ptr, meta_ptr, part,
                                                        begin_idx, begin_seqlen, end_seqlen, bt_ptr, stride_bt, PAGE)
                _stamp(trace_ptr, it, 7 + 4 * WG, TRACE)
                it += 1

            lb = c % 2
            mbarrier.wait(l_ready.index(lb), (c // 2) & 1)
            if ASM_PV:
                inv_q = lx_smem.index(lb).load(q_row)
            else:
                inv_l = lx_smem.index(lb).load(o_row)
            gl.thread_barrier()
            mbarrier.arrive(l_free.index(lb), count=1)
            slot = _split_slot(num_splits_ptr, bi, begin_idx, begin_n_split, no_split)
            if ASM_PV:
                rows_q = m0 + gl.arange(0, BLOCK_M, layout=q_row)
                cols_q = WG * HALF + gl.arange(0, 64, layout=q_col)
                quarters = (o0, o1, o2, o3)   # (as the paired kernel stores its quarters)
                for j in gl.static_range(4):
                    _store_o(quarters[j] * inv_q[:, None], rows_q, cols_q + 64 * j, bi, no_split, slot, out_ptr,
                             oacc_ptr, stride_oacc_b, stride_oacc_r, R, DV)
            else:
                rows_o = m0 + gl.arange(0, BLOCK_M, layout=o_row)
                _store_o(acc * inv_l[:, None], rows_o, WG * HALF + gl.arange(0, PV_N, layout=o_col), bi, no_split,
                         slot, out_ptr, oacc_ptr, stride_oacc_b, stride_oacc_r, R, DV)
                if SPLIT:
                    _store_o(acc1 * inv_l[:, None], rows_o, WG * HALF + PV_N + gl.arange(0, PV_N, layout=o_col),
                             bi, no_split, slot, out_ptr, oacc_ptr, stride_oacc_b, stride_oacc_r, R, DV)
            if WG == 0:   # TRACE == 2: end of chunk c (its O stored), pages so far
                _cta_stamp(trace_ptr, 3 + 3 * c, it, TRACE)
            c += 1
    if MC:   # no CTA leaves while the peer may still arrive on its barriers
        CL.cluster_sync(CL.warpgroup_tid())


@gluon.jit
def _ws_shared(k_desc, BLOCK_M: gl.constexpr, PAGE: gl.constexpr, D: gl.constexpr, DV: gl.constexpr):
    """Shared memory of the ws kernels, barriers initialised (the caller fences): Q 72 KB + 2 x 72 KB page ring
    (P aliased on each stage's rope slot), alpha and the LAZY rescale flag per ring stage, 1/l per chunk parity;
    mbarriers kv_ready, kv_free (both P.V warpgroups), p_ready, l_ready, l_free (both P.V warpgroups), two of each."""
    dtype: gl.constexpr = k_desc.dtype
    smem_layout: gl.constexpr = k_desc.layout
    vec_layout: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [0])
    q_smem = gl.allocate_shared_memory(dtype, [BLOCK_M, DV], smem_layout)
    qr_smem = gl.allocate_shared_memory(dtype, [BLOCK_M, D - DV], smem_layout)
    kv_smem = gl.allocate_shared_memory(dtype, [2, PAGE, DV], smem_layout)
    kr_smem = gl.allocate_shared_memory(dtype, [2, PAGE, D - DV], smem_layout)
    ax_smem = gl.allocate_shared_memory(gl.float32, [2, BLOCK_M], vec_layout)
    lx_smem = gl.allocate_shared_memory(gl.float32, [2, BLOCK_M], vec_layout)
    fl_smem = gl.allocate_shared_memory(gl.int32, [2, BLOCK_M], vec_layout)
    kv_ready = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    kv_free = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    p_ready = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    l_ready = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    l_free = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(2):
        mbarrier.init(kv_ready.index(i), count=1)
        mbarrier.init(kv_free.index(i), count=2)
        mbarrier.init(p_ready.index(i), count=1)
        mbarrier.init(l_ready.index(i), count=1)
        mbarrier.init(l_free.index(i), count=2)
    return (q_smem, qr_smem, kv_smem, kr_smem, ax_smem, lx_smem, fl_smem, kv_ready, kv_free, p_ready, l_ready,
            l_free)


@gluon.jit
def mla_decode_ws_kernel(
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
    PV_REGS: gl.constexpr, TRACE: gl.constexpr, LAZY: gl.constexpr, NAMED: gl.constexpr,
    num_warps: gl.constexpr, Q_TMA: gl.constexpr = 0, PDL: gl.constexpr = 0,
):
    gl.static_assert(num_warps == 4, "default partition = the softmax warpgroup")
    (q_smem, qr_smem, kv_smem, kr_smem, ax_smem, lx_smem, fl_smem,
     kv_ready, kv_free, p_ready, l_ready, l_free) = _ws_shared(k_desc, BLOCK_M, PAGE, D, DV)
    q_bar = kv_ready   # (a placeholder without Q_TMA: a partition argument cannot be None)
    if Q_TMA:   # Q landed (one phase per chunk)
        q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
        mbarrier.init(q_bar, count=1)
    fence_async_shared()
    _pdl_start(PDL)

    gl.warp_specialize([
        (_ws_softmax, (q_ptr, stride_qb, stride_qs, stride_qh,
                       q_smem, qr_smem, kv_smem, kr_smem, ax_smem, lx_smem,
                       kv_ready, p_ready, l_ready, l_free,
                       seqlens_ptr, meta_ptr, num_splits_ptr, lse_ptr, lacc_ptr, stride_lacc_b,
                       sm_scale_log2, R, H_Q, S_Q, CAUSAL, BLOCK_M, PAGE, D, DV, CHUNK, trace_ptr, TRACE,
                       fl_smem, LAZY, NAMED, q_desc, q_bar, Q_TMA)),
        (_ws_pv, (0, kv_smem, kr_smem, ax_smem, lx_smem, kv_ready, kv_free, p_ready, l_ready, l_free,
                   seqlens_ptr, meta_ptr, num_splits_ptr, out_ptr, oacc_ptr, stride_oacc_b,
                   stride_oacc_r, R, k_desc, v_desc, bt_ptr, stride_bt, BLOCK_M, PAGE, D, DV, CHUNK, trace_ptr,
                   TRACE, 256, 0, fl_smem, LAZY != 0, NAMED)),
        (_ws_pv, (1, kv_smem, kr_smem, ax_smem, lx_smem, kv_ready, kv_free, p_ready, l_ready, l_free,
                   seqlens_ptr, meta_ptr, num_splits_ptr, out_ptr, oacc_ptr, stride_oacc_b,
                   stride_oacc_r, R, k_desc, v_desc, bt_ptr, stride_bt, BLOCK_M, PAGE, D, DV, CHUNK, trace_ptr,
                   TRACE, 256, 0, fl_smem, LAZY != 0, NAMED)),
    ], [4, 4], [PV_REGS, PV_REGS])
