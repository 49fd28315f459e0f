"""Exp 4 (proof of concept): a 2-stage TMA ring whose pages are *multicast* across a 2-CTA cluster, written in
Gluon 3.6 with inline PTX for the pieces Gluon has no API for:
  * %cluster_ctarank                      -> _ctarank()
  * barrier.cluster.arrive/wait           -> _cluster_sync()
  * fence.mbarrier_init.release.cluster   -> _fence_mbarrier_init()
  * shared-memory address of an allocation: `global_smem` symbol + allocation.offset (read back by a first compile,
    passed as constexpr, re-checked after the second compile)            -> _smem_base()
  * address of the __grid_constant__ CUtensorMap kernel param: mov <kernel>_param_0 + cvta.param  -> _desc_addr()
  * cp.async.bulk.tensor...multicast::cluster                         -> _tma_multicast()
  * remote mbarrier arrive: mapa.shared::cluster + mbarrier.arrive.release.cluster.shared::cluster -> _arrive_cta()
Each CTA TMAs HALF of every 64 x 64 bf16 page (rows rank*32 .. rank*32+31) to the same offset in both CTAs' smem;
each CTA's kv_ready expects the full page (8192 B); kv_free (count 2) gets one arrival from each CTA's consumers.
Variants: python exp4_mc_ring.py {nc1|nc2}
  nc1: compiled with num_ctas=1 (layouts unchanged, program_id = %ctaid), to be launched as a cluster by patching
       CompiledKernel.packed_metadata[1] = 2 (the launcher then sets CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION x=2 and
       gridDimX = 2 * grid[0])  -- launch NOT verified (no GPU).
  nc2: compiled with num_ctas=2 (every layout gets cga_layout=[[0]]/[[0,0]]: replicated per CTA) -> .reqnctapercluster 2.
"""
import sys
from common import *
from triton.experimental.gluon.language.nvidia.hopper import tma, mbarrier, fence_async_shared

PAGE, COLS, HALF = 64, 64, 32


# the pieces ws2's MC variant uses too (flash_mla/hopper/cluster.py); exp6 imports them from here by these names
from flash_mla.hopper.cluster import ctarank as _ctarank  # noqa: E402
from flash_mla.hopper.cluster import cluster_sync as _cluster_sync  # noqa: E402
from flash_mla.hopper.cluster import param_addr as _param_addr  # noqa: E402
from flash_mla.hopper.cluster import fence_mbarrier_init as _fence_mbarrier_init  # noqa: E402
from flash_mla.hopper.cluster import smem_base as _smem_base  # noqa: E402
from flash_mla.hopper.cluster import tma_multicast_2d as _tma_multicast  # noqa: E402


_desc_addr = _param_addr   # (tid, KNAME, IDX)


@gluon.jit
def _arrive_cta(pred, bar, cta):
    """pred != 0: arrive (release, cluster scope) on the mbarrier at the same smem offset as `bar` in CTA `cta`.
    (cluster.arrive_cta is the CTA-scope form MC uses: no MEMBAR.ALL.GPU; this PoC keeps the strict one.)"""
    gl.inline_asm_elementwise(
        "{ .reg .pred p; .reg .b32 ra; setp.ne.b32 p, $1, 0; mapa.shared::cluster.u32 ra, $2, $3;\n"
        "@p mbarrier.arrive.release.cluster.shared::cluster.b64 _, [ra]; }\nmov.u32 $0, 0;",
        "=r,r,r,r", [pred, bar, cta], dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def mc_ring_kernel(desc, out_ptr, n_pages, SL: gl.constexpr, L1: gl.constexpr, RL: gl.constexpr, BL: gl.constexpr,
                   KV_OFF: gl.constexpr, BAR_OFF: gl.constexpr, KNAME: gl.constexpr,
                   PAGE: gl.constexpr, COLS: gl.constexpr, HALF: gl.constexpr):
    kv = gl.allocate_shared_memory(gl.bfloat16, [2, PAGE, COLS], SL)
    bars = gl.allocate_shared_memory(gl.int64, [4, 1], BL)          # 0, 1: kv_ready; 2, 3: kv_free
    tid = gl.arange(0, 128, layout=L1)
    leader = (tid == 0).to(gl.int32)
    rank = _ctarank(tid)
    for i in gl.static_range(2):
        mbarrier.init(bars.index(i), count=1)          # own expect_tx arrival; bytes from both CTAs' TMAs
        mbarrier.init(bars.index(2 + i), count=2)      # one arrival from each CTA's consumers
    _fence_mbarrier_init(tid)
    _cluster_sync(tid)                                  # peers' barriers initialised before any multicast / remote arrive
    smem = _smem_base(tid)
    daddr = _desc_addr(tid, KNAME, 0)
    acc = gl.zeros([PAGE, COLS], gl.float32, RL)
    for it in range(n_pages):
        s = it % 2
        ph = (it // 2) & 1
        mbarrier.wait(bars.index(2 + s), ph ^ 1, pred=it >= 2)   # stage free in BOTH CTAs
        mbarrier.expect(bars.index(s), PAGE * COLS * 2)          # whole page: own half + peer's half
        _tma_multicast(leader, smem + KV_OFF + s * (PAGE * COLS * 2) + rank * (HALF * COLS * 2), daddr,
                       0, it * PAGE + rank * HALF, smem + BAR_OFF + s * 8, 3)
        mbarrier.wait(bars.index(s), ph)
        acc += kv.index(s).load(RL).to(gl.float32)
        gl.thread_barrier()                                       # every thread of this CTA has read stage s
        _arrive_cta(leader, smem + BAR_OFF + (2 + s) * 8, 0)
        _arrive_cta(leader, smem + BAR_OFF + (2 + s) * 8, 1)
    _cluster_sync(tid)                                  # nobody exits while a peer may still write into its smem
    rows = gl.arange(0, PAGE, layout=gl.SliceLayout(1, RL))
    cols = gl.arange(0, COLS, layout=gl.SliceLayout(0, RL))
    pid = gl.program_id(0)
    gl.store(out_ptr + pid * PAGE * COLS + rows[:, None] * COLS + cols[None, :], acc)


def build(mode, kv_off=0, bar_off=0):
    nc = 1 if mode == "nc1" else 2
    c1 = [] if nc == 1 else [[0]]
    c2 = [] if nc == 1 else [[0, 0]]
    SL = gl.NVMMASharedLayout.get_default_for([PAGE, COLS], gl.bfloat16)
    SL3 = gl.NVMMASharedLayout(SL.swizzle_byte_width, 16, rank=2, cga_layout=c2)
    DL = gl.NVMMASharedLayout(SL.swizzle_byte_width, 16, rank=2, cga_layout=c2)
    consts = {"SL": SL3, "L1": gl.BlockedLayout([1], [32], [4], [0], cga_layout=c1),
              "RL": gl.BlockedLayout([1, 8], [4, 8], [4, 1], [1, 0], cga_layout=c2),
              "BL": mbarrier.MBarrierLayout(cga_layout=c1),
              "KV_OFF": kv_off, "BAR_OFF": bar_off, "KNAME": "mc_ring_kernel", "PAGE": PAGE, "COLS": COLS, "HALF": HALF}
    sig = {"desc": f"tensordesc<bf16[{HALF}, {COLS}],{DL!r}>", "out_ptr": "*fp32", "n_pages": "i32"}
    sig.update({k: "constexpr" for k in consts})
    return compile_sm90(mc_ring_kernel, sig, consts, num_warps=4, num_ctas=nc)


def build_two_pass(mode="nc1"):
    """``build`` twice: the second compile gets the allocation offsets the first one had (asserted unchanged)."""
    offs = smem_offsets(build(mode))
    kv_off = [o for o, t in offs if "bf16" in t][0]
    bar_off = [o for o, t in offs if "i64" in t][0]
    k = build(mode, kv_off, bar_off)
    assert smem_offsets(k) == offs, "allocation offsets moved between the two compiles"
    return k, offs


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "nc1"
    def f():
        k, offs = build_two_pass(mode)
        print("allocation offsets (both passes):", offs)
        show(k, r"\.entry|reqnctapercluster|explicitcluster|cluster|multicast|mapa|cvta\.param|global_smem|mbarrier\.(init|arrive)|fence\.mbarrier", maxl=60)
        open(f"exp4_{mode}.ptx", "w").write(k.asm["ptx"])
        open(f"exp4_{mode}.cubin", "wb").write(k.asm["cubin"])
        print("cubin bytes:", len(k.asm["cubin"]))
    attempt(f"mc ring {mode}", f)
