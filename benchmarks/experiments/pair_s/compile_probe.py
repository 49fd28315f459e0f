"""Compile-only probe (no GPU): can Gluon express the operands of a kernel whose S = Q K^T covers two pages per
wgmma (m64n128), with the two resident pages interleaved column chunk by column chunk in one [128, 576] buffer?
(docs/perf-notes.md, end of "Session 15": the shared-memory wavefront model and the next kernel to try.)

    python3 benchmarks/experiments/pair_s/compile_probe.py

One warpgroup: Q [64, 576] and the page pair KV [128, 576] (rows 0-63 page A, 64-127 page B; NVMMA 128-byte
swizzle, so each 64-column chunk of both pages is one contiguous 16 KB block: a refill unit), each 64 x 64 tile
landed by its own TMA box. S = Q KV^T as 9 chunks of m64n128k16 wgmmas; P = S in bf16 over the pair's rope
columns (dead after S; ws2 does the same per page), so the shared memory is Q 72 KB + the pair 144 KB; then
O[:, 0:256] += P[:, 0:64] V_A[:, 0:256] + P[:, 64:128] V_B[:, 0:256] (row slices of the same buffer as m64n256 B
operands). Prints registers, spills, shared memory and the wgmma shapes found in the PTX. Nothing here is timed
or run; it only checks that the layout and operand views compile to the intended instructions.

Result (Triton 3.6, 2026-12-07): 157 registers, no spills, 221,192 B of shared memory (limit 232,448), wgmma
m64n128k16 (S) and m64n256k16 (P V), 27 TMA copies (9 per page and 9 for Q: the chunk-interleaved pair cannot
take a page as one 3-D box, since a box lands densely; so a refill is per 16 KB column chunk, which is the refill
unit the design wants anyway).
"""
import re
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon._runtime import GluonASTSource
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma, warpgroup_mma,
                                                               warpgroup_mma_wait)

sys.path.insert(0, __file__.rsplit("/benchmarks/", 1)[0])
from flash_mla.hopper.compile_check import ptxas_stats  # noqa: E402


@gluon.jit
def pair_s_probe(k_desc, q_desc, out_ptr, M: gl.constexpr, PAGE: gl.constexpr, D: gl.constexpr,
                 DV: gl.constexpr, CHUNK: gl.constexpr):
    dtype: gl.constexpr = k_desc.dtype
    layout: gl.constexpr = k_desc.layout                 # 64 x 64 tile, 128-byte swizzle
    big: gl.constexpr = gl.NVMMASharedLayout.get_default_for([2 * PAGE, DV], dtype)
    q_smem = gl.allocate_shared_memory(dtype, [M, DV], big)               # latent part of Q
    qr_smem = gl.allocate_shared_memory(dtype, [M, D - DV], layout)       # rope part
    kv = gl.allocate_shared_memory(dtype, [2 * PAGE, DV], big)            # the page pair's latent columns,
    kr = gl.allocate_shared_memory(dtype, [2 * PAGE, D - DV], layout)     # chunk-interleaved; rope columns
    bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    mbarrier.init(bar, count=1)
    fence_async_shared()
    NV: gl.constexpr = DV // CHUNK
    mbarrier.expect(bar, (M + 2 * PAGE) * D * 2)
    for c in gl.static_range(NV):
        tma.async_copy_global_to_shared(q_desc, [0, c * CHUNK], bar, q_smem.slice(c * CHUNK, CHUNK, dim=1))
        for j in gl.static_range(2):
            tma.async_copy_global_to_shared(k_desc, [j * PAGE, c * CHUNK], bar,
                                            kv.slice(j * PAGE, PAGE, dim=0).slice(c * CHUNK, CHUNK, dim=1))
    tma.async_copy_global_to_shared(q_desc, [0, DV], bar, qr_smem)
    for j in gl.static_range(2):
        tma.async_copy_global_to_shared(k_desc, [j * PAGE, DV], bar, kr.slice(j * PAGE, PAGE, dim=0))
    mbarrier.wait(bar, 0)

    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, 2 * PAGE, 16])
    s = gl.zeros([M, 2 * PAGE], gl.float32, layout=s_layout)
    s = warpgroup_mma(qr_smem, kr.permute((1, 0)), s, use_acc=False, is_async=True)
    for c in gl.static_range(NV):    # S over both pages: one m64n128 wgmma group per 64-column chunk
        s = warpgroup_mma(q_smem.slice(c * CHUNK, CHUNK, dim=1), kv.slice(c * CHUNK, CHUNK, dim=1).permute((1, 0)),
                          s, is_async=True)
    s = warpgroup_mma_wait(num_outstanding=0, deps=(s,))
    # P (64 x 128) over the pair's rope columns (128 x 64, 16 KB), dead once S is done: as ws2 puts P over a page's
    p_smem = kr._reinterpret(dtype, [M, 2 * PAGE], kr.layout)   # rope slot. Shared memory: Q 72 + pair 144 KB
    p_smem.store(s.to(dtype))
    fence_async_shared()

    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, DV // 2, 16])
    o = gl.zeros([M, DV // 2], gl.float32, layout=o_layout)
    for j in gl.static_range(2):     # P V per page: row slices of the pair buffer as m64n256 B operands
        o = warpgroup_mma(p_smem.slice(j * PAGE, PAGE, dim=1), kv.slice(j * PAGE, PAGE, dim=0).slice(0, DV // 2, dim=1),
                          o, is_async=True)
    o = warpgroup_mma_wait(num_outstanding=0, deps=(o,))
    rows = gl.arange(0, M, layout=gl.SliceLayout(1, o_layout))
    cols = gl.arange(0, DV // 2, layout=gl.SliceLayout(0, o_layout))
    gl.store(out_ptr + rows[:, None] * (DV // 2) + cols[None, :], o)


def main() -> int:
    layout = gl.NVMMASharedLayout.get_default_for([64, 64], gl.bfloat16)
    desc = f"tensordesc<bf16[64, 64],{layout!r}>"
    sig = {"k_desc": desc, "q_desc": desc, "out_ptr": "*fp32", "M": "constexpr", "PAGE": "constexpr",
           "D": "constexpr", "DV": "constexpr", "CHUNK": "constexpr"}
    consts = {"M": 64, "PAGE": 64, "D": 576, "DV": 512, "CHUNK": 64}
    src = GluonASTSource(pair_s_probe, sig, consts, {})
    k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
    ptx = k.asm["ptx"]
    regs, st, ld, notes = ptxas_stats(ptx)
    shapes = sorted(set(re.findall(r"wgmma\.mma_async\.sync\.aligned\.(m\d+n\d+k\d+)", ptx)))
    print(f"compiled for sm_90a: {regs} registers, {st + ld} spill bytes, ptxas notes {notes}, "
          f"shared {k.metadata.shared} B; wgmma shapes {shapes}; "
          f"{len(re.findall(r'cp.async.bulk.tensor', ptx))} TMA copies")
    return 0


if __name__ == "__main__":
    sys.exit(main())
