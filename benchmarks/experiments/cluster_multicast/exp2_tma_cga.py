"""Exp 2: TMA load with num_ctas=2 and a CGA-layout'd NVMMASharedLayout. Does the lowering emit .multicast::cluster
when the destination layout broadcasts (cga_layout=[[0, 0]]), and what for a split ([[1, 0]])?
usage: python exp2_tma_cga.py {bcast|split|none1}"""
import sys
from common import *
from triton.experimental.gluon.language.nvidia.hopper import tma, mbarrier, fence_async_shared

@gluon.jit
def tma_kernel(desc, y_ptr, SL: gl.constexpr, BL: gl.constexpr, RL: gl.constexpr, M: gl.constexpr, N: gl.constexpr):
    smem = gl.allocate_shared_memory(gl.bfloat16, [M, N], SL)
    bar = gl.allocate_shared_memory(gl.int64, [1], BL)
    mbarrier.init(bar, count=1)
    fence_async_shared()
    mbarrier.expect(bar, desc.block_type.nbytes)
    tma.async_copy_global_to_shared(desc, [gl.program_id(0) * M, 0], bar, smem)
    mbarrier.wait(bar, 0)
    x = smem.load(RL)
    rows = gl.arange(0, M, layout=gl.SliceLayout(1, RL))
    cols = gl.arange(0, N, layout=gl.SliceLayout(0, RL))
    gl.store(y_ptr + rows[:, None] * N + cols[None, :], x)

mode = sys.argv[1]
M, N = 64, 64
if mode == "none1":
    nc, cga, bcga, rcga = 1, None, [], []
elif mode == "bcast":
    nc, cga, bcga, rcga = 2, [[0, 0]], [[0]], [[0, 0]]
elif mode == "split":
    nc, cga, bcga, rcga = 2, [[1, 0]], [[0]], [[1, 0]]
elif mode == "split_bar1":   # barrier split too (one barrier per CTA)
    nc, cga, bcga, rcga = 2, [[1, 0]], [[1]], [[1, 0]]
SL = gl.NVMMASharedLayout.get_default_for([M, N], gl.bfloat16, cga_layout=cga)
BL = mbarrier.MBarrierLayout(cga_layout=bcga)
RL = gl.BlockedLayout([1, 8], [4, 8], [4, 1], [1, 0], cga_layout=rcga)
sig = {"desc": f"tensordesc<bf16[{M}, {N}],{SL!r}>", "y_ptr": "*bf16", "SL": "constexpr", "BL": "constexpr",
       "RL": "constexpr", "M": "constexpr", "N": "constexpr"}
print("desc type:", sig["desc"])
def f():
    k = compile_sm90(tma_kernel, sig, {"SL": SL, "BL": BL, "RL": RL, "M": M, "N": N}, num_warps=4, num_ctas=nc)
    show(k, r"reqnctapercluster|explicitcluster|cluster|cp\.async\.bulk|mbarrier|mapa|barrier\.cluster|fence", maxl=60)
    for l in k.asm["ttgir"].splitlines():
        if "async_tma" in l or "local_alloc" in l or l.startswith("#shared") or "barrier_expect" in l or "init_barrier" in l:
            print("  [ttgir]", l.strip()[:260])
    print("  metadata keys:", sorted(k.metadata._asdict().keys()))
attempt(f"tma mode={mode}", f)
