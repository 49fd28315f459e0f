"""Paired ("seesaw") Hopper MLA decoding kernel: two warpgroups, pages taken two at a time (opt-in, not the default).

FlashMLA's schedule (csrc/kernels/splitkv_mla.cu and its deep-dive note), written in Gluon. One CTA = 64 packed
query rows x one scheduler part; 8 warps = two warpgroups, each holding half of the ``64 x 512`` fp32 output
(64 x 256 = 128 registers per thread). Pages of a chunk are taken in pairs (k0, k1): k0 lives in ring stage 0, k1
in stage 1. Warpgroup 0 computes ``S0 = Q K0^T``, warpgroup 1 ``S1 = Q K1^T`` (each a full 64 x 64 S). One running
max ``m`` lives in shared memory. Per pair (v5, 2026-12-07):

==========================================================  ======================================================
warpgroup 0                                                  warpgroup 1
==========================================================  ======================================================
softmax(S0) against m -> m_a, sc0, P0; publish m_a, sc0      (wait) softmax(S1) against m_a -> m_b, sc1, P1;
O0 = O0 sc0 + P0 V0[:, :256]  (P0 from registers)            publish m_b, sc1; P1 -> smem
(wait) P0 sc1 -> smem (over stage 0's rope tile, dead      O1 = O1 sc0 sc1 + P1 V1[:, 256:] (P1 from registers)
after S0); refill tiles 0-3 of stage 0 (page k0 + 2)         (wait) O1 += (P0 sc1) V0[:, 256:]; release P1
(wait) O0 = O0 sc1 + P1 V1[:, :256] (async)                  P1 V1R done: refill tiles 4-8 of stage 1 (k1 + 2)
S(k0 + 2) on tiles 0-3 as they land                          P0 V0R done: refill tiles 4-8 of stage 0 (k0 + 2)
P1 V1L done: refill tiles 0-3 of stage 1 (page k1 + 2)       S(k1 + 2): tiles 4-7, rope, then 0-3, as they land
S(k0 + 2) on tiles 4-7 and the rope tile
==========================================================  ======================================================

So one warpgroup's softmax runs while the other's GEMMs keep the tensor cores busy, and each 64-column tile of a page
is refilled by the warpgroup that last reads it as soon as its P V is done. Each page lands as nine 64 x 64 tiles
(8 latent, 1 rope), each on its own mbarrier, and S is issued tile by tile as they land. Q's rope tile is held in
registers (the A operand of the rope wgmma); its latent part sits in shared memory.

Hand-offs between the warpgroups use hardware named barriers (``bar.arrive`` by the producer, ``bar.sync`` by the
consumer, 256 threads): ids ``BAR_*`` below (Triton's own partition barriers use 0-2).

An odd page count leaves the last pair without k1: nothing is loaded for it and its S is not computed; its scores are
all masked (-inf, so P1 = 0, sc1 = 1) and the V1 halves are zeroed before the (zero) P1 V1 products, so stale or
uninitialised shared memory never reaches O. Rows of the last page past the chunk end are zeroed in V likewise (they
may hold NaN).

The tile loads and waits are inline PTX (``RAW``); ``P0_FIRST`` / ``PV0_FIRST`` / ``HINT`` select orderings and an
L2 policy measured against FlashMLA's own order (the table above is the default: P0 published before the refill).
``LAZY`` (default on) lets the running max lag by up to 2^8, so sc0 / sc1 are 1 on almost every page and each warp
skips the O and P0 rescales; ``EARLY_P0`` (opt-in) publishes P0 relative to m_a right after warpgroup 0's softmax.
H100: LAZY 1.4–3.7 % faster on the multi-tile shapes, EARLY_P0 level (docs/perf-notes.md "Session 20").

Measured on H100 (2026-12-07, docs/perf-notes.md "Session 16"): correct, but 8-12 % slower than the default
two-softmax-warpgroup kernel (``ws2_kernel``) on the multi-tile (compute-bound) shapes and 2-4 % slower on one tile;
FlashMLA's CUDA build of this schedule is ~10 % faster than ws2 there. The per-pair trace puts ~35 % of each pair's
period outside tensor work: the two softmaxes (~600-750 cycles each) and the P hand-offs, with each page tile's
refill landing ~1,500-2,000 cycles after issue.
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
from .kernel import _part_meta, _running_max, _split_slot, _ss_chunk, _ss_zero_v, _stage_q, _store_lse, _store_o
from .lazy import _lazy_scale, _lazy_scale_p
from .ws_kernel import _named_bar, _row_limits, _stamp

NUM_WARPS = 4          # default partition = warpgroup 0; warpgroup 1 is the one worker partition
                       # (8 warps in all: up to 255 registers per thread at launch, no maxnreg)
WG1_REGS = 256         # setmaxnreg of warpgroup 1
V_BOX = 1              # 64-column tiles per latent TMA box: a page lands as nine single tiles
RQ_REG = 1             # Q's rope tile in registers (FlashMLA's rQ8: 16 registers, one shared-memory read of it per
                       # chunk instead of per page); 0: read from shared memory by every rope wgmma
P0_FIRST = 1           # 1: warpgroup 0 publishes P0 before it issues the refill of tiles 0-3 (FlashMLA: after;
                       # H100: 2-3 % faster at h_q 128 s_q 2, level elsewhere, docs/perf-notes.md "Session 16")
PV0_FIRST = 0          # 1: warpgroup 1 runs (P0 sc1) V0-right before P1 V1-right, so stage 0's tiles 4-8 (which
                       # warpgroup 0's next S waits for) are refilled one P V earlier (FlashMLA: P1 V1R first; H100:
                       # 1-2 % slower on the multi-tile shapes, docs/perf-notes.md "Session 16")
HINT = 0               # RAW only: 1 = the tile loads carry an L2 evict-first policy (FlashMLA's EVICT_FIRST on K)
RAW = 1                # the tile loads (mbarrier expect + TMA, one thread) and the tile waits as inline PTX: Triton's
                       # membar pass puts a warpgroup bar.sync before every mbarrier op and TMA copy of the Gluon ops
                       # (two per tile, ~135 cycles per tile issued on H100, v5's trace). Needs the shared-memory
                       # offsets and tensor-map parameter indices of a first compile (``raw_constants``; the launcher
                       # compiles twice)
LAZY = 8               # the running max moves only when a page's row max exceeds it by more than LAZY (log2 units;
                       # P <= 2^LAZY, as ws2_kernel.LAZY): sc0 / sc1 are then exactly 1 on almost every page, and each
                       # warp skips its O rescales (a warp vote and a branch, ``_lazy_scale``); 0: the exact running
                       # max, O rescaled every page (FlashMLA)
EARLY_P0 = 0           # 1 (needs LAZY, not with PV0_FIRST; H100: level with 0, docs/perf-notes.md "Session 20"):
                       # warpgroup 0 publishes P0 relative to its own max m_a right after its softmax, before P0 V0L,
                       # instead of P0 * sc1 once warpgroup 1's max is in; warpgroup 1 uses it as is when sc1 == 1
                       # in all its rows (LAZY: almost every pair) and otherwise rescales it in shared memory first.
                       # Takes the sc1 wait and P0's rescale off the chain wg0 softmax -> P0 published -> wg1's
                       # P0 V0R -> refill of stage 0
ASM_S = 0              # 1 (opt-in; needs RAW and RQ_REG): S's wgmmas (the 8 latent tiles and the rope tile, its A from
                       # registers) from inline PTX with their descriptors on the uniform datapath (asm_mma.py, as
                       # ws2_kernel.ASM_S), Q's offset from the first compile (raw_constants)
ASM_PV = 0             # 1 (opt-in; needs ASM_S): the P.V wgmmas (m64n256: P from registers or shared memory) from
                       # inline PTX too (asm_mma.pv256_ra / pv256_ss), O held as four m64n64 quarters in S's layout
                       # (so P and the row scales need no layout conversion); P1's offset from raw_constants
TRACE_BUF = None       # diagnostics: an int64 cuda tensor of 256 * 16 -> per-pair SM clocks of CTA 0 (TRACE)
KERNEL_NAME = gl.constexpr("mla_decode_pair_kernel")
RAW_ZERO = dict(KV_OFF=0, KR_OFF=0, BAR_OFF=0, KD_PARAM=0, VD_PARAM=0, Q_OFF=0, P1_OFF=0)
# positions in ``RC``, the kernel's one constexpr tuple of these settings (the partitions pass it down whole)
(RC_RAW, RC_KV_OFF, RC_KR_OFF, RC_BAR_OFF, RC_KD_PARAM, RC_VD_PARAM, RC_P0_FIRST, RC_HINT, RC_PV0_FIRST, RC_LAZY,
 RC_EARLY_P0, RC_ASM_S, RC_Q_OFF, RC_ASM_PV, RC_P1_OFF) = (gl.constexpr(i) for i in range(15))

NT = gl.constexpr(9)           # 64 x 64 tiles per page: 8 latent + the rope tile (index 8)
BAR_CTA = gl.constexpr(8)      # both warpgroups: chunk boundaries, row-sum exchange
BAR_SC0 = gl.constexpr(9)      # wg0 -> wg1: m_a (in sM) and sc0 of page k0 published
BAR_SC1 = gl.constexpr(10)     # wg1 -> wg0: m_b (in sM) and sc1 of page k1 published
BAR_P0 = gl.constexpr(11)      # wg0 -> wg1: P0 * sc1 in shared memory
BAR_P1 = gl.constexpr(12)      # wg1 -> wg0: P1 in shared memory, wg1's two P V issued
M_INIT = gl.constexpr(-1.0e30)              # running max before the first key (finite: no inf - inf)


@gluon.jit
def _bar(bar_id: gl.constexpr, ARRIVE: gl.constexpr):
    """Named barrier over both warpgroups (256 threads): ``bar.arrive`` (producer) or ``bar.sync`` (consumer).
    bar.arrive -> bar.sync orders the producer's earlier shared-memory writes before the consumer's reads."""
    _named_bar(bar_id, 256, ARRIVE)


@gluon.constexpr_function
def _raw_load_asm(stage, t0, t1, nv, kv_off, kr_off, bar_off, page, dv, drope, chunk, eb, hint=0):
    """PTX: thread $1 != 0 expects and issues TMA tiles t0 .. t1-1 of a page (row $5) into ring stage ``stage``
    ($2: the CTA's shared-memory base, $3 / $4: the latent / rope tensor maps' generic addresses)."""
    tile = page * chunk * eb
    lines = ["{ .reg .pred p; .reg .b32 b, d, c0, c1; .reg .b64 pol; setp.ne.b32 p, $1, 0; mov.b32 c0, 0;"]
    hint_sfx, hint_op = "", ""
    if hint:
        lines.append("createpolicy.fractional.L2::evict_first.b64 pol, 1.0;")
        hint_sfx, hint_op = ".L2::cache_hint", ", pol"
    for t in range(t0, t1):
        bar = bar_off + 8 * ((nv + 1) * stage + t)   # (nv + 1 = NT mbarriers per stage)
        lines.append(f"add.u32 b, $2, {bar};")
        lines.append(f"@p mbarrier.arrive.expect_tx.shared::cta.b64 _, [b], {tile};")
        if t < nv:
            dst = kv_off + stage * page * dv * eb + t * tile
            lines.append(f"add.u32 d, $2, {dst}; mov.b32 c1, {t};")
            lines.append("@p cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes"
                         f"{hint_sfx} [d], [$3, {{c0, $5, c1}}], [b]{hint_op};")
        else:
            dst = kr_off + stage * page * drope * eb
            lines.append(f"add.u32 d, $2, {dst}; mov.b32 c1, {nv * chunk};")
            lines.append("@p cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
                         f"{hint_sfx} [d], [$4, {{c1, $5}}], [b]{hint_op};")
    lines.append("}\n\tmov.u32 $0, 0;")
    return "\n\t".join(lines)


_WAIT_ASM = gl.constexpr("{ .reg .pred c; waitLoop: mbarrier.try_wait.parity.shared::cta.b64 c, [$1], $2; "
                         "@!c bra.uni waitLoop; }\n\tmov.u32 $0, 0;")


@gluon.jit
def _raw_wait(addr, ph):
    """Wait (every thread) for phase ``ph`` of the mbarrier at shared address ``addr`` (a [128] tensor)."""
    gl.inline_asm_elementwise(_WAIT_ASM, "=r,r,r", [addr, addr * 0 + ph], dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def _bar_wait(bars, idx, ph, base, BAR_OFF: gl.constexpr, RAW: gl.constexpr):
    """Wait for phase ``ph`` of tile mbarrier ``idx`` (RAW: inline PTX on its address, no membar bar.sync)."""
    if RAW:
        _raw_wait(base + (BAR_OFF + 8 * idx), ph)
    else:
        mbarrier.wait(bars.index(idx), ph)


@gluon.jit
def _load_tiles_raw(base, row, STAGE: gl.constexpr, T0: gl.constexpr, T1: gl.constexpr, KV_OFF: gl.constexpr,
                    KR_OFF: gl.constexpr, BAR_OFF: gl.constexpr, KD_PARAM: gl.constexpr, VD_PARAM: gl.constexpr,
                    PAGE: gl.constexpr, DV: gl.constexpr, DR: gl.constexpr, CHUNK: gl.constexpr, EB: gl.constexpr,
                    HINT: gl.constexpr = 0):
    """``_load_tiles`` as one inline-PTX block issued by thread 0 of the warpgroup (``base``: [128] shared base)."""
    tid = CL.warpgroup_tid()
    vd = CL.param_addr(tid, KERNEL_NAME, VD_PARAM)
    kd = CL.param_addr(tid, KERNEL_NAME, KD_PARAM)
    gl.inline_asm_elementwise(
        _raw_load_asm(STAGE, T0, T1, DV // CHUNK, KV_OFF, KR_OFF, BAR_OFF, PAGE, DV, DR, CHUNK, EB, HINT),
        "=r,r,r,l,l,r", [(tid == 0).to(gl.int32), base, vd, kd, tid * 0 + row], dtype=gl.int32, is_pure=False,
        pack=1)


@gluon.jit
def _load_tiles(k_desc, v_desc, kv_smem, kr_smem, bars, STAGE: gl.constexpr, T0: gl.constexpr, T1: gl.constexpr,
                page, PAGE: gl.constexpr, CHUNK: gl.constexpr):
    """TMA tiles T0 .. T1-1 of cache page ``page`` into ring stage ``STAGE``, tile t on mbarrier 9 STAGE + t
    (t < 8: latent columns 64 t .. 64 t + 63 through ``v_desc``'s 1 x 64 x 64 box; t = 8: the rope columns)."""
    row = page * PAGE
    NV: gl.constexpr = kv_smem.shape[2] // CHUNK
    tile_bytes: gl.constexpr = PAGE * CHUNK * k_desc.dtype.primitive_bitwidth // 8
    kv3 = kv_smem.index(STAGE)._reinterpret(v_desc.dtype, [NV, PAGE, CHUNK], v_desc.layout)
    for t in gl.static_range(T0, T1):
        bar = bars.index(NT * STAGE + t)
        mbarrier.expect(bar, tile_bytes)
        if t < NV:
            tma.async_copy_global_to_shared(v_desc, [t, row, 0], bar, kv3.slice(t, 1, dim=0))
        else:
            tma.async_copy_global_to_shared(k_desc, [row, NV * CHUNK], bar, kr_smem.index(STAGE))


@gluon.jit
def _refill(k_desc, v_desc, kv_smem, kr_smem, bars, STAGE: gl.constexpr, T0: gl.constexpr, T1: gl.constexpr, page,
            base, RC: gl.constexpr, PAGE: gl.constexpr, CHUNK: gl.constexpr):
    """Tiles T0 .. T1-1 of ``page`` into ``STAGE``: ``_load_tiles_raw`` under RAW, else ``_load_tiles``."""
    if RC[RC_RAW]:
        _load_tiles_raw(base, page * PAGE, STAGE, T0, T1, RC[RC_KV_OFF], RC[RC_KR_OFF], RC[RC_BAR_OFF],
                        RC[RC_KD_PARAM], RC[RC_VD_PARAM], PAGE, kv_smem.shape[2], kr_smem.shape[2], CHUNK,
                        k_desc.dtype.primitive_bitwidth // 8, RC[RC_HINT])
    else:
        _load_tiles(k_desc, v_desc, kv_smem, kr_smem, bars, STAGE, T0, T1, page, PAGE, CHUNK)


@gluon.jit
def _s_tiles(s, T0: gl.constexpr, T1: gl.constexpr, FIRST: gl.constexpr, q3, kt3, bars, STAGE: gl.constexpr, ph,
             base, RC: gl.constexpr, PENDING: gl.constexpr = 0):
    """Issue S (+)= Q[:, tile] K[:, tile]^T (async) for latent tiles T0 .. T1-1 of the page in ``STAGE``, each after
    its mbarrier (FIRST: the first one overwrites S). A loop over the tiles, so that each tile's wgmma descriptors are
    computed in the loop rather than hoisted out of the page loop (64 of them would stay live). Each tile's wgmma
    group is allowed to stay in flight behind the next one, plus ``PENDING`` older groups. ASM_S: the tiles
    unrolled, each from inline PTX (``asm_mma.tile_mma``: constant descriptors, nothing to hoist)."""
    if RC[RC_ASM_S]:
        TILE: gl.constexpr = q3.shape[1] * q3.shape[2] * (q3.dtype.primitive_bitwidth // 8)
        BF16: gl.constexpr = q3.dtype == gl.bfloat16
        for t in gl.static_range(T0, T1):
            _bar_wait(bars, NT * STAGE + t, ph, base, RC[RC_BAR_OFF], RC[RC_RAW])
            s = AM.tile_mma(s, RC[RC_Q_OFF] + t * TILE, RC[RC_KV_OFF] + (STAGE * (NT - 1) + t) * TILE,
                            FIRST and t == T0, BF16)
            s = AM.mma_wait(s, 1 + PENDING)
    else:
        _bar_wait(bars, NT * STAGE + T0, ph, base, RC[RC_BAR_OFF], RC[RC_RAW])
        s = warpgroup_mma(q3.index(T0), kt3.index(T0).permute((1, 0)), s, use_acc=not FIRST, is_async=True)
        s = warpgroup_mma_wait(num_outstanding=1 + PENDING, deps=(s,))
        for t in range(T0 + 1, T1):
            _bar_wait(bars, NT * STAGE + t, ph, base, RC[RC_BAR_OFF], RC[RC_RAW])
            s = warpgroup_mma(q3.index(t), kt3.index(t).permute((1, 0)), s, is_async=True)
            s = warpgroup_mma_wait(num_outstanding=1 + PENDING, deps=(s,))
    return s


@gluon.jit
def _s_rope(s, rq, kr, bars, STAGE: gl.constexpr, ph, base, RC: gl.constexpr):
    """Issue S += Q_rope K_rope^T (async) once the rope tile of ``STAGE`` has landed; Q's rope tile from registers
    (ASM_S: in S's layout, the wgmma from inline PTX, ``asm_mma.tile_mma_ra``)."""
    _bar_wait(bars, NT * STAGE + NT - 1, ph, base, RC[RC_BAR_OFF], RC[RC_RAW])
    if RC[RC_ASM_S]:
        TILE: gl.constexpr = kr.shape[0] * kr.shape[1] * (kr.dtype.primitive_bitwidth // 8)
        s = AM.tile_mma_ra(s, rq, RC[RC_KR_OFF] + STAGE * TILE, kr.dtype == gl.bfloat16)
    else:
        s = warpgroup_mma(rq, kr.permute((1, 0)), s, is_async=True)
    return s


@gluon.jit
def _masked(s, n, lim, lim_lo, PAGE: gl.constexpr):
    """Page n's raw scores with keys past each row's limit at -inf (unscaled: the softmax folds the scale into one
    FFMA per score, ``exp2(s * scale - m)``, and scales the row max instead, so the scale must be positive: the
    launcher routes other scales to the ws kernels)."""
    if (n + 1) * PAGE <= lim_lo:
        sm = s
    else:
        cols = gl.arange(0, PAGE, layout=gl.SliceLayout(0, s.type.layout))
        sm = gl.where(cols[None, :] < (lim - n * PAGE)[:, None], s, float("-inf"))
    return sm


@gluon.jit
def _o_scale(acc, sc, RC: gl.constexpr):
    """O's rows times ``sc`` (S's row layout; LAZY: ``_lazy_scale``); O one m64n256 accumulator, or (ASM_PV) a tuple
    of four m64n64 quarters in S's layout."""
    if RC[RC_ASM_PV]:
        out = (_lazy_scale(acc[0], sc, RC[RC_LAZY]), _lazy_scale(acc[1], sc, RC[RC_LAZY]),
               _lazy_scale(acc[2], sc, RC[RC_LAZY]), _lazy_scale(acc[3], sc, RC[RC_LAZY]))
    else:
        out = _lazy_scale(acc, gl.convert_layout(sc, gl.SliceLayout(1, acc.type.layout)), RC[RC_LAZY])
    return out


@gluon.jit
def _o_pv_reg(acc, pb, kv, COL0: gl.constexpr, STAGE: gl.constexpr, RC: gl.constexpr):
    """O += P V[:, COL0 : COL0 + 256] (async), P (``pb``, 16-bit, S's layout) from registers, V the page in ring
    stage ``STAGE`` (``kv``)."""
    HALF: gl.constexpr = kv.shape[1] // 2
    if RC[RC_ASM_PV]:
        EB: gl.constexpr = kv.dtype.primitive_bitwidth // 8
        out = AM.pv256_ra(acc, pb, RC[RC_KV_OFF] + STAGE * kv.shape[0] * kv.shape[1] * EB + COL0 * kv.shape[0] * EB,
                          kv.dtype == gl.bfloat16)
    else:
        a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=acc.type.layout, k_width=2)
        out = warpgroup_mma(gl.convert_layout(pb, a_layout), kv.slice(COL0, HALF, dim=1), acc, is_async=True)
    return out


@gluon.jit
def _o_pv_smem(acc, p_smem, P_OFF: gl.constexpr, kv, COL0: gl.constexpr, STAGE: gl.constexpr, RC: gl.constexpr):
    """As ``_o_pv_reg`` with P in shared memory (``p_smem``, at byte ``P_OFF`` for ASM_PV)."""
    HALF: gl.constexpr = kv.shape[1] // 2
    if RC[RC_ASM_PV]:
        EB: gl.constexpr = kv.dtype.primitive_bitwidth // 8
        out = AM.pv256_ss(acc, P_OFF,
                          RC[RC_KV_OFF] + STAGE * kv.shape[0] * kv.shape[1] * EB + COL0 * kv.shape[0] * EB,
                          kv.dtype == gl.bfloat16)
    else:
        out = warpgroup_mma(p_smem, kv.slice(COL0, HALF, dim=1), acc, is_async=True)
    return out


@gluon.jit
def _o_wait(acc, N: gl.constexpr, RC: gl.constexpr):
    """``wgmma.wait_group N`` with O tied through it."""
    if RC[RC_ASM_PV]:
        out = AM.mma_wait4(acc[0], acc[1], acc[2], acc[3], N)
    else:
        out = warpgroup_mma_wait(num_outstanding=N, deps=(acc,))
    return out


@gluon.jit
def _wg0_pair(s, acc, l_i, ph, k0, n_end, end, lim, lim_lo, sm_scale_log2, bt_row, q3, rq,
              kv_smem, kr_smem, p1_smem, sm_smem, sc0_smem, sc1_smem, bars, k_desc, v_desc,
              LAST: gl.constexpr, PAGE: gl.constexpr, CHUNK: gl.constexpr, trace_ptr, it, TRACE: gl.constexpr,
              base, RC: gl.constexpr):
    """Warpgroup 0's share of pair (k0, k0 + 1); ``s`` = S of page k0. Returns S of page k0 + 2 (unless LAST)."""
    dtype: gl.constexpr = kv_smem.dtype
    HALF: gl.constexpr = kv_smem.shape[2] // 2
    NV: gl.constexpr = kv_smem.shape[2] // CHUNK
    s_row: gl.constexpr = gl.SliceLayout(1, s.type.layout)
    ld_layout: gl.constexpr = gl.BlockedLayout([1, 8], [8, 4], [4, 1], [1, 0])
    kv0 = kv_smem.index(0)
    kv1 = kv_smem.index(1)
    p0_smem = kr_smem.index(0)      # P0 (scaled) over stage 0's rope tile: dead after S0, refilled after P0 V0R

    _stamp(trace_ptr, it, 0, TRACE)
    if not LAST:   # block-table entries of the next pair, read early (off the refill path)
        pg0 = gl.load(bt_row + k0 + 2)
        has3 = k0 + 3 < n_end
        pg1 = gl.load(bt_row + k0 + 3, mask=has3, other=0)
    # ---- softmax of page k0 against the running max m; publish m_a and sc0 ----
    sv = _masked(s, k0, lim, lim_lo, PAGE)
    m_old = sm_smem.load(s_row)
    m_new = _running_max(m_old, gl.max(sv, axis=1) * sm_scale_log2, RC[RC_LAZY])
    sc0 = gl.exp2(m_old - m_new)
    sm_smem.store(m_new)
    sc0_smem.store(sc0)
    _bar(BAR_SC0, True)
    p = gl.exp2(sv * sm_scale_log2 - m_new[:, None])
    l_i = l_i * sc0 + gl.sum(p, axis=1)
    pb = p.to(dtype)      # (P0 is kept in the input dtype only: 16 registers instead of 32 until sc1 is in)
    if RC[RC_EARLY_P0]:   # P0 relative to m_a -> shared memory for warpgroup 1 now (it applies sc1 if needed)
        p0_smem.store(pb)
        fence_async_shared()
        _bar(BAR_P0, True)
    _stamp(trace_ptr, it, 1, TRACE)
    # ---- O0 = O0 * sc0 + P0 V0-left (P0 from registers) ----
    _ss_zero_v(kv0, end - k0 * PAGE, 0, ld_layout, PAGE, HALF, CHUNK)
    acc = _o_scale(acc, sc0, RC)
    acc = _o_pv_reg(acc, pb, kv0, 0, 0, RC)
    acc = _o_wait(acc, 0, RC)
    _stamp(trace_ptr, it, 2, TRACE)
    # ---- warpgroup 1's max is in; tiles 0-3 of stage 0 are free: the next pair's first page ----
    _bar(BAR_SC1, False)
    if not LAST:
        if not (RC[RC_P0_FIRST] | RC[RC_EARLY_P0]):   # (P0_FIRST = 0: FlashMLA's order, the refill first)
            _refill(k_desc, v_desc, kv_smem, kr_smem, bars, 0, 0, NV // 2, pg0, base, RC, PAGE, CHUNK)
    # ---- P0 relative to m_b -> shared memory for warpgroup 1 ----
    sc1 = sc1_smem.load(s_row)
    if not RC[RC_EARLY_P0]:
        p0_smem.store(_lazy_scale_p(pb, sc1, RC[RC_LAZY]))
        fence_async_shared()
        _bar(BAR_P0, True)
    if not LAST:
        if RC[RC_P0_FIRST] | RC[RC_EARLY_P0]:
            _refill(k_desc, v_desc, kv_smem, kr_smem, bars, 0, 0, NV // 2, pg0, base, RC, PAGE, CHUNK)
    _stamp(trace_ptr, it, 3, TRACE)
    l_i = l_i * sc1
    acc = _o_scale(acc, sc1, RC)
    _ss_zero_v(kv1, end - (k0 + 1) * PAGE, 0, ld_layout, PAGE, HALF, CHUNK)
    # ---- O0 += P1 V1-left (P1 from warpgroup 1 through shared memory) ----
    _bar(BAR_P1, False)
    _stamp(trace_ptr, it, 4, TRACE)
    acc = _o_pv_smem(acc, p1_smem, RC[RC_P1_OFF], kv1, 0, 1, RC)
    if not LAST:
        # S of page k0 + 2 on tiles 0-3 (issued right after P0 V0L: landed by now) under P1 V1L
        kt0 = kv0._reinterpret(dtype, [NV, PAGE, CHUNK], kr_smem.layout)
        s = _s_tiles(s, 0, NV // 2, True, q3, kt0, bars, 0, ph, base, RC, 1)
        acc = _o_wait(acc, 1, RC)
        _stamp(trace_ptr, it, 5, TRACE)
        if has3:   # V1-left free: the next pair's second page, tiles 0-3
            _refill(k_desc, v_desc, kv_smem, kr_smem, bars, 1, 0, NV // 2, pg1, base, RC, PAGE, CHUNK)
        s = _s_tiles(s, NV // 2, NV, False, q3, kt0, bars, 0, ph, base, RC)
        s = _s_rope(s, rq, kr_smem.index(0), bars, 0, ph, base, RC)
        s = warpgroup_mma_wait(num_outstanding=0, deps=(s,))
        _stamp(trace_ptr, it, 6, TRACE)
        ph = ph ^ 1
    else:
        acc = _o_wait(acc, 0, RC)
    return s, acc, l_i, ph


@gluon.jit
def _wg1_pair(s, acc, l_i, ph, k0, n_end, end, lim, lim_lo, sm_scale_log2, bt_row, q3, rq,
              kv_smem, kr_smem, p1_smem, sm_smem, sc0_smem, sc1_smem, bars, k_desc, v_desc,
              LAST: gl.constexpr, PAGE: gl.constexpr, CHUNK: gl.constexpr, trace_ptr, it, TRACE: gl.constexpr,
              base, RC: gl.constexpr):
    """Warpgroup 1's share of pair (k0, k0 + 1); ``s`` = S of page k0 + 1 (stale if that page does not exist: its
    scores are all masked). Returns S of page k0 + 3 (unless LAST, or that page does not exist)."""
    dtype: gl.constexpr = kv_smem.dtype
    HALF: gl.constexpr = kv_smem.shape[2] // 2
    NV: gl.constexpr = kv_smem.shape[2] // CHUNK
    s_row: gl.constexpr = gl.SliceLayout(1, s.type.layout)
    ld_layout: gl.constexpr = gl.BlockedLayout([1, 8], [8, 4], [4, 1], [1, 0])
    k1 = k0 + 1
    kv0 = kv_smem.index(0)
    kv1 = kv_smem.index(1)
    p0_smem = kr_smem.index(0)

    _stamp(trace_ptr, it, 8, TRACE)
    if not LAST:   # block-table entries of the next pair, read early (off the refill path)
        pg0 = gl.load(bt_row + k0 + 2)
        has3 = k0 + 3 < n_end
        pg1 = gl.load(bt_row + k0 + 3, mask=has3, other=0)
    sv = _masked(s, k1, lim, lim_lo, PAGE)     # a missing k1: all -inf
    rmax = gl.max(sv, axis=1) * sm_scale_log2
    # ---- softmax of page k1 against m_a; publish m_b and sc1 ----
    _bar(BAR_SC0, False)
    _stamp(trace_ptr, it, 9, TRACE)
    m_old = sm_smem.load(s_row)
    sc0 = sc0_smem.load(s_row)
    m_new = _running_max(m_old, rmax, RC[RC_LAZY])
    sc1 = gl.exp2(m_old - m_new)
    sm_smem.store(m_new)
    sc1_smem.store(sc1)
    _bar(BAR_SC1, True)
    p = gl.exp2(sv * sm_scale_log2 - m_new[:, None])
    scale = sc0 * sc1
    l_i = l_i * scale + gl.sum(p, axis=1)
    pb = p.to(dtype)
    p1_smem.store(pb)
    _stamp(trace_ptr, it, 10, TRACE)
    _ss_zero_v(kv1, end - k1 * PAGE, 1, ld_layout, PAGE, HALF, CHUNK)
    acc = _o_scale(acc, scale, RC)
    if RC[RC_PV0_FIRST]:
        # ---- PV0_FIRST: O1 = O1 * sc0 * sc1 + (P0 sc1) V0-right + P1 V1-right: stage 0's tiles 4-8, which
        # warpgroup 0's next S waits for, are refilled one P V earlier ----
        fence_async_shared()
        _bar(BAR_P0, False)
        _ss_zero_v(kv0, end - k0 * PAGE, 1, ld_layout, PAGE, HALF, CHUNK)
        acc = _o_pv_smem(acc, p0_smem, RC[RC_KR_OFF], kv0, HALF, 0, RC)
        acc = _o_pv_reg(acc, pb, kv1, HALF, 1, RC)
        _bar(BAR_P1, True)
        _stamp(trace_ptr, it, 11, TRACE)
        if not LAST:
            acc = _o_wait(acc, 1, RC)     # P0 V0R done: V0-right + rope (P0) free
            _refill(k_desc, v_desc, kv_smem, kr_smem, bars, 0, NV // 2, NT, pg0, base, RC, PAGE, CHUNK)
            acc = _o_wait(acc, 0, RC)     # P1 V1R done: V1-right + rope free
            if has3:
                _refill(k_desc, v_desc, kv_smem, kr_smem, bars, 1, NV // 2, NT, pg1, base, RC, PAGE, CHUNK)
    else:
        # ---- O1 = O1 * sc0 * sc1 + P1 V1-right (P1 from registers) ----
        acc = _o_pv_reg(acc, pb, kv1, HALF, 1, RC)
        fence_async_shared()
        # ---- O1 += (P0 sc1) V0-right; then P1 is released to warpgroup 0 ----
        _bar(BAR_P0, False)
        _ss_zero_v(kv0, end - k0 * PAGE, 1, ld_layout, PAGE, HALF, CHUNK)
        if RC[RC_EARLY_P0]:   # P0 is relative to m_a: scale its rows by sc1 unless every sc1 is 1 (LAZY: rare)
            if gl.max((sc1 != 1.0).to(gl.int32), axis=0) != 0:
                p0 = p0_smem.load(s.type.layout)
                p0_smem.store((p0.to(gl.float32) * sc1[:, None]).to(dtype))
                fence_async_shared()
                gl.thread_barrier()
        acc = _o_pv_smem(acc, p0_smem, RC[RC_KR_OFF], kv0, HALF, 0, RC)
        _bar(BAR_P1, True)
        _stamp(trace_ptr, it, 11, TRACE)
        if not LAST:
            acc = _o_wait(acc, 1, RC)     # P1 V1R done: V1-right + rope free
            if has3:
                _refill(k_desc, v_desc, kv_smem, kr_smem, bars, 1, NV // 2, NT, pg1, base, RC, PAGE, CHUNK)
            acc = _o_wait(acc, 0, RC)     # P0 V0R done: V0-right + rope (P0) free
            _refill(k_desc, v_desc, kv_smem, kr_smem, bars, 0, NV // 2, NT, pg0, base, RC, PAGE, CHUNK)
    if not LAST:
        _stamp(trace_ptr, it, 12, TRACE)
        if has3:   # S of page k0 + 3: tiles 4-7 and the rope (this warpgroup's refills) first, then 0-3
            kt1 = kv1._reinterpret(dtype, [NV, PAGE, CHUNK], kr_smem.layout)
            s = _s_tiles(s, NV // 2, NV, True, q3, kt1, bars, 1, ph, base, RC)
            s = _s_rope(s, rq, kr_smem.index(1), bars, 1, ph, base, RC)
            s = _s_tiles(s, 0, NV // 2, False, q3, kt1, bars, 1, ph, base, RC)
            s = warpgroup_mma_wait(num_outstanding=0, deps=(s,))
            _stamp(trace_ptr, it, 14, TRACE)
            ph = ph ^ 1
    else:
        acc = _o_wait(acc, 0, RC)
    return s, acc, l_i, ph


@gluon.jit
def _pair_step(WG: gl.constexpr, LAST: gl.constexpr, s, acc, l_i, ph, k0, n_end, end, lim, lim_lo, sm_scale_log2,
               bt_row, q3, rq, kv_smem, kr_smem, p1_smem, sm_smem, sc0_smem, sc1_smem, bars,
               k_desc, v_desc, PAGE: gl.constexpr, CHUNK: gl.constexpr, trace_ptr, it, TRACE: gl.constexpr, base,
               RC: gl.constexpr):
    """Warpgroup ``WG``'s share of the pair starting at page k0 (``_wg0_pair`` / ``_wg1_pair``)."""
    if WG == 0:
        s, acc, l_i, ph = _wg0_pair(s, acc, l_i, ph, k0, n_end, end, lim, lim_lo, sm_scale_log2, bt_row, q3, rq,
                                    kv_smem, kr_smem, p1_smem, sm_smem, sc0_smem, sc1_smem, bars, k_desc, v_desc,
                                    LAST, PAGE, CHUNK, trace_ptr, it, TRACE, base, RC)
    else:
        s, acc, l_i, ph = _wg1_pair(s, acc, l_i, ph, k0, n_end, end, lim, lim_lo, sm_scale_log2, bt_row, q3, rq,
                                    kv_smem, kr_smem, p1_smem, sm_smem, sc0_smem, sc1_smem, bars, k_desc, v_desc,
                                    LAST, PAGE, CHUNK, trace_ptr, it, TRACE, base, RC)
    return s, acc, l_i, ph


@gluon.jit
def _pair_wg(WG: gl.constexpr,
             q_ptr, stride_qb, stride_qs, stride_qh,
             q_smem, qr_smem, kv_smem, kr_smem, p1_smem, sm_smem, sc0_smem, sc1_smem, lx_smem, bars,
             k_desc, v_desc, bt_ptr, stride_bt, seqlens_ptr, meta_ptr, num_splits_ptr,
             out_ptr, lse_ptr, oacc_ptr, stride_oacc_b, stride_oacc_r, lacc_ptr, stride_lacc_b,
             sm_scale_log2, R, H_Q, S_Q,
             CAUSAL: gl.constexpr, BLOCK_M: gl.constexpr, PAGE: gl.constexpr, D: gl.constexpr, DV: gl.constexpr,
             CHUNK: gl.constexpr, trace_ptr, TRACE: gl.constexpr, RQ_REG: gl.constexpr, RC: gl.constexpr):
    """One warpgroup (``WG`` 0 or 1) of the paired kernel: all chunks of this CTA's scheduler part."""
    HALF: gl.constexpr = DV // 2
    NCHUNK: gl.constexpr = D // CHUNK
    NV: gl.constexpr = DV // CHUNK
    dtype: gl.constexpr = q_smem.dtype
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, PAGE, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, HALF, 16])
    rq_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=s_layout, k_width=2)
    s_row: gl.constexpr = gl.SliceLayout(1, s_layout)
    o_row: gl.constexpr = gl.SliceLayout(1, o_layout)
    o_col: gl.constexpr = gl.SliceLayout(0, o_layout)
    tile_layout: gl.constexpr = kr_smem.layout
    ld_layout: gl.constexpr = gl.BlockedLayout([1, 8], [8, 4], [4, 1], [1, 0])   # Q staged by plain loads
    q3 = q_smem._reinterpret(dtype, [NV, BLOCK_M, CHUNK], tile_layout)
    kt = kv_smem.index(WG)._reinterpret(dtype, [NV, PAGE, CHUNK], tile_layout)

    part = gl.program_id(2)
    m0 = gl.program_id(0) * BLOCK_M
    begin_idx, begin_seqlen, end_idx, end_seqlen, begin_n_split = _part_meta(meta_ptr, part)
    base = CL.smem_base(CL.warpgroup_tid())   # (RAW: the shared addresses of the ring and its mbarriers)

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
            mine = n0 + WG < n_end          # this warpgroup's first page exists
            # ---- chunk start: the previous chunk is done on both sides; load the first pair, stage Q ----
            _bar(BAR_CTA, False)
            if mine:
                page = gl.load(bt_row + n0 + WG)
                _refill(k_desc, v_desc, kv_smem, kr_smem, bars, WG, 0, NT, page, base, RC, PAGE, CHUNK)
            if WG == 0:
                _stage_q(q_ptr, bi, stride_qb, stride_qs, stride_qh, m0, R, H_Q, q_smem, qr_smem, ld_layout, CHUNK,
                         0, 5)
                sm_smem.store(gl.full([BLOCK_M], M_INIT, gl.float32, layout=s_row))
            else:
                _stage_q(q_ptr, bi, stride_qb, stride_qs, stride_qh, m0, R, H_Q, q_smem, qr_smem, ld_layout, CHUNK,
                         5, NCHUNK)
            fence_async_shared()
            _bar(BAR_CTA, False)
            if RC[RC_ASM_S]:   # in S's (the m64n64 accumulator) layout, which is wgmma's A-register layout
                rq = qr_smem.load(s_layout)
            elif RQ_REG:
                rq = qr_smem.load(rq_layout)      # Q's rope tile: the register A operand of the rope wgmma
            else:
                rq = qr_smem

            rows_s, lim, lim_lo = _row_limits(m0, L, end, H_Q, S_Q, CAUSAL, BLOCK_M, s_row)
            l_i = gl.zeros([BLOCK_M], gl.float32, layout=s_row)
            if RC[RC_ASM_PV]:   # O as four 64 x 64 quarters in S's layout
                acc = (gl.zeros([BLOCK_M, PAGE], gl.float32, layout=s_layout),
                       gl.zeros([BLOCK_M, PAGE], gl.float32, layout=s_layout),
                       gl.zeros([BLOCK_M, PAGE], gl.float32, layout=s_layout),
                       gl.zeros([BLOCK_M, PAGE], gl.float32, layout=s_layout))
            else:
                acc = gl.zeros([BLOCK_M, HALF], gl.float32, layout=o_layout)
            if mine:
                s = _s_tiles(s, 0, NV, True, q3, kt, bars, WG, ph, base, RC)
                s = _s_rope(s, rq, kr_smem.index(WG), bars, WG, ph, base, RC)
                s = warpgroup_mma_wait(num_outstanding=0, deps=(s,))
                ph = ph ^ 1
            for i in range(npair - 1):
                s, acc, l_i, ph = _pair_step(WG, False, s, acc, l_i, ph, n0 + 2 * i, n_end, end, lim, lim_lo,
                                             sm_scale_log2, bt_row, q3, rq, kv_smem, kr_smem, p1_smem, sm_smem,
                                             sc0_smem, sc1_smem, bars, k_desc, v_desc, PAGE, CHUNK,
                                             trace_ptr, it, TRACE, base, RC)
                it += 1
            if npair > 0:
                s, acc, l_i, ph = _pair_step(WG, True, s, acc, l_i, ph, n0 + 2 * (npair - 1), n_end, end, lim,
                                             lim_lo, sm_scale_log2, bt_row, q3, rq, kv_smem, kr_smem, p1_smem,
                                             sm_smem, sc0_smem, sc1_smem, bars, k_desc, v_desc, PAGE, CHUNK,
                                             trace_ptr, it, TRACE, base, RC)

            # ---- epilogue: add the two warpgroups' row sums; both are relative to the final max in sM ----
            lx_smem.index(WG).store(l_i)
            _bar(BAR_CTA, False)
            l_i = l_i + lx_smem.index(1 - WG).load(s_row)
            m_i = sm_smem.load(s_row)
            empty = l_i == 0.0
            inv_l = gl.where(empty, 0.0, 1.0 / gl.where(empty, 1.0, l_i))
            slot = _split_slot(num_splits_ptr, bi, begin_idx, begin_n_split, no_split)
            if RC[RC_ASM_PV]:
                for j in gl.static_range(4):
                    _store_o(acc[j] * inv_l[:, None], m0 + gl.arange(0, BLOCK_M, layout=s_row),
                             WG * HALF + j * PAGE + gl.arange(0, PAGE, layout=gl.SliceLayout(0, s_layout)), bi,
                             no_split, slot, out_ptr, oacc_ptr, stride_oacc_b, stride_oacc_r, R, DV)
            else:
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
              CHUNK: gl.constexpr, trace_ptr, TRACE: gl.constexpr, RQ_REG: gl.constexpr, RC: gl.constexpr):
    _pair_wg(1, q_ptr, stride_qb, stride_qs, stride_qh,
             q_smem, qr_smem, kv_smem, kr_smem, p1_smem, sm_smem, sc0_smem, sc1_smem, lx_smem, bars,
             k_desc, v_desc, bt_ptr, stride_bt, seqlens_ptr, meta_ptr, num_splits_ptr,
             out_ptr, lse_ptr, oacc_ptr, stride_oacc_b, stride_oacc_r, lacc_ptr, stride_lacc_b,
             sm_scale_log2, R, H_Q, S_Q, CAUSAL, BLOCK_M, PAGE, D, DV, CHUNK, trace_ptr, TRACE, RQ_REG, RC)


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
    WG1_REGS: gl.constexpr, TRACE: gl.constexpr, RQ_REG: gl.constexpr, RAW: gl.constexpr, P0_FIRST: gl.constexpr,
    HINT: gl.constexpr, PV0_FIRST: gl.constexpr, LAZY: gl.constexpr, EARLY_P0: gl.constexpr,
    KV_OFF: gl.constexpr, KR_OFF: gl.constexpr, BAR_OFF: gl.constexpr, KD_PARAM: gl.constexpr,
    VD_PARAM: gl.constexpr,
    num_warps: gl.constexpr,
    ASM_S: gl.constexpr = 0, Q_OFF: gl.constexpr = 0, ASM_PV: gl.constexpr = 0, P1_OFF: gl.constexpr = 0,
):
    gl.static_assert(num_warps == 4, "default partition = warpgroup 0")
    gl.static_assert((EARLY_P0 == 0) | ((LAZY != 0) & (PV0_FIRST == 0)), "EARLY_P0: with LAZY, not with PV0_FIRST")
    gl.static_assert((ASM_S == 0) | ((RAW != 0) & (RQ_REG != 0)), "ASM_S: with RAW and RQ_REG")
    gl.static_assert((ASM_PV == 0) | (ASM_S != 0), "ASM_PV: with ASM_S")
    dtype: gl.constexpr = k_desc.dtype
    # shared memory: Q 72 KB (its rope tile read once into registers per chunk) + 2 x 72 KB pages (P0 over stage
    # 0's rope tile) + P1 8 KB
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
    bars = gl.allocate_shared_memory(gl.int64, [2 * NT, 1], mbarrier.MBarrierLayout())   # (stage, tile)
    for i in gl.static_range(2 * NT):
        mbarrier.init(bars.index(i), count=1)
    fence_async_shared()

    RC: gl.constexpr = (RAW, KV_OFF, KR_OFF, BAR_OFF, KD_PARAM, VD_PARAM, P0_FIRST, HINT, PV0_FIRST, LAZY, EARLY_P0,
                        ASM_S, Q_OFF, ASM_PV, P1_OFF)
    gl.warp_specialize([
        (_pair_wg, (0, q_ptr, stride_qb, stride_qs, stride_qh,
                    q_smem, qr_smem, kv_smem, kr_smem, p1_smem, sm_smem, sc0_smem, sc1_smem, lx_smem, bars,
                    k_desc, v_desc, bt_ptr, stride_bt, seqlens_ptr, meta_ptr, num_splits_ptr,
                    out_ptr, lse_ptr, oacc_ptr, stride_oacc_b, stride_oacc_r, lacc_ptr, stride_lacc_b,
                    sm_scale_log2, R, H_Q, S_Q, CAUSAL, BLOCK_M, PAGE, D, DV, CHUNK, trace_ptr, TRACE, RQ_REG, RC)),
        (_pair_wg1, (q_ptr, stride_qb, stride_qs, stride_qh,
                     q_smem, qr_smem, kv_smem, kr_smem, p1_smem, sm_smem, sc0_smem, sc1_smem, lx_smem, bars,
                     k_desc, v_desc, bt_ptr, stride_bt, seqlens_ptr, meta_ptr, num_splits_ptr,
                     out_ptr, lse_ptr, oacc_ptr, stride_oacc_b, stride_oacc_r, lacc_ptr, stride_lacc_b,
                     sm_scale_log2, R, H_Q, S_Q, CAUSAL, BLOCK_M, PAGE, D, DV, CHUNK, trace_ptr, TRACE, RQ_REG, RC)),
    ], [4], [WG1_REGS])


def raw_constants(first_compile) -> dict:
    """RAW's constexprs (shared-memory offsets of the ring, its rope tiles and its 18 tile mbarriers; the tensor
    maps' parameter indices) read from ``first_compile``, a build with ``RAW_ZERO`` (they change neither the
    allocation nor the parameter list, so a second build with them has the same layout: callers check it)."""
    offs = CL.smem_offsets(first_compile)
    kd, vd = CL.tensormap_params(first_compile.asm["ptx"], KERNEL_NAME.value)[:2]
    return dict(KV_OFF=CL.find_offset(offs, "2x64x512x"), KR_OFF=CL.find_offset(offs, "2x64x64x"),
                BAR_OFF=CL.find_offset(offs, f"{2 * NT.value}x1xi64"), KD_PARAM=kd, VD_PARAM=vd,
                Q_OFF=CL.find_offset(offs, "64x512x"), P1_OFF=_second_64x64(offs))


def _second_64x64(offs) -> int:
    """P1's offset: of the two 64 x 64 allocations, Q's rope tile comes first in program order, P1 second."""
    hits = [o for o, t in offs if t.startswith("!ttg.memdesc<64x64x")]
    if len(hits) != 2:
        raise RuntimeError(f"expected two 64 x 64 shared allocations (Q's rope, P1), found {len(hits)}: {offs}")
    return hits[1]
