"""GPU check of the inline-PTX wgmma of ``compile_probe.py`` (Hopper only; not run yet as of 2026-12-07):

    python3 benchmarks/experiments/asm_wgmma/run_gpu.py

1. Correctness: S = Q K^T of two 64-key pages (stages 0 and 1 of the ring) by Gluon's ``warpgroup_mma`` and by the
   inline-PTX wgmmas, each against torch in fp32 (Q, K random bf16, loaded into the swizzled tiles with plain stores).
2. Speed: ``compile_probe.s_loop_probe`` (S of 2 x n_pairs pages plus an exp2 per score, one warpgroup per CTA,
   132 CTAs) timed by ``triton.testing.do_bench`` for the three builds (Gluon unrolled, Gluon runtime chunk loop,
   asm). A lower time for the asm build means the descriptor work it removes (R2UR, vector-register descriptors)
   was on the issue path of this loop.
"""
import sys

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared

import compile_probe as P
sys.path.insert(0, __file__.rsplit("/benchmarks/", 1)[0])
from flash_mla.hopper import cluster as CL  # noqa: E402


@gluon.jit
def s_check(q_ptr, k_ptr, out_ptr, USE_ASM: gl.constexpr, Q_OFF: gl.constexpr, K_OFF: gl.constexpr):
    tile_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([64, 64], gl.bfloat16)
    q_smem = gl.allocate_shared_memory(gl.bfloat16, [P.NV, 64, 64], tile_layout)
    k_smem = gl.allocate_shared_memory(gl.bfloat16, [2 * P.NV, 64, 64], tile_layout)
    ld: gl.constexpr = gl.BlockedLayout([1, 8], [8, 4], [4, 1], [1, 0])
    r = gl.arange(0, 64, layout=gl.SliceLayout(1, ld))
    c = gl.arange(0, 64, layout=gl.SliceLayout(0, ld))
    for i in gl.static_range(P.NV):
        q_smem.index(i).store(gl.load(q_ptr + r[:, None] * 576 + i * 64 + c[None, :]))
        for st in gl.static_range(2):
            k_smem.index(st * P.NV + i).store(gl.load(k_ptr + (st * 64 + r[:, None]) * 576 + i * 64 + c[None, :]))
    fence_async_shared()
    gl.thread_barrier()
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, 64, 16])
    rs = gl.arange(0, 64, layout=gl.SliceLayout(1, s_layout))
    cs = gl.arange(0, 64, layout=gl.SliceLayout(0, s_layout))
    for st in gl.static_range(2):
        s = gl.zeros([64, 64], gl.float32, layout=s_layout)
        if USE_ASM:
            s = P._s_asm(s, Q_OFF, K_OFF, st)
        else:
            s = P._s_gluon(s, q_smem, k_smem, st)
        gl.store(out_ptr + st * 4096 + rs[:, None] * 64 + cs[None, :], s)


def main() -> int:
    torch.manual_seed(0)
    q = torch.randn(64, 576, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(128, 576, device="cuda", dtype=torch.bfloat16)
    ref = torch.stack([q.float() @ k[st * 64:(st + 1) * 64].float().T for st in range(2)])
    ok = True
    out = torch.full((2, 64, 64), float("nan"), device="cuda")
    first = s_check[(1,)](q, k, out, USE_ASM=False, Q_OFF=0, K_OFF=0, num_warps=4)
    (q_off, k_off), offs = P.offsets(first)
    for use_asm in (False, True):
        out.fill_(float("nan"))
        kern = s_check[(1,)](q, k, out, USE_ASM=use_asm, Q_OFF=q_off, K_OFF=k_off, num_warps=4)
        assert CL.smem_offsets(kern) == offs
        err = ((out - ref).abs().max() / ref.abs().max()).item()
        good = bool(torch.isfinite(out).all()) and err < 1e-5
        ok &= good
        verdict = "OK" if good else "FAIL"
        print(f"S check, {'inline-PTX' if use_asm else 'gluon'} wgmma: max rel err {err:.2e} -> {verdict}")

    n_pairs, ctas = 2048, 132
    t_out = torch.empty(64, 64, device="cuda")
    first = P.s_loop_probe[(ctas,)](t_out, n_pairs, USE_ASM=0, Q_OFF=0, K_OFF=0, num_warps=4)
    (q_off, k_off), _ = P.offsets(first)
    times = {}
    names = {0: "gluon (chunks unrolled)", 2: "gluon (runtime chunk loop, as ws2)", 1: "inline-PTX"}
    for use_asm in (0, 2, 1, 0, 2, 1):
        fn = lambda: P.s_loop_probe[(ctas,)](t_out, n_pairs, USE_ASM=use_asm, Q_OFF=q_off, K_OFF=k_off,  # noqa: E731
                                             num_warps=4)
        times.setdefault(use_asm, []).append(triton.testing.do_bench(fn, warmup=50, rep=300))
    base = min(times[2])
    for v, name in names.items():
        t = min(times[v])
        print(f"S loop ({2 * n_pairs} pages per CTA, {ctas} CTAs), {name}: {t:.4f} ms, "
              f"/ runtime-loop gluon {t / base:.3f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
