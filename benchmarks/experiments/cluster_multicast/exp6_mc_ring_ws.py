"""Exp 6: the multicast ring of exp4 in a warp-specialized Gluon kernel (num_ctas=1; cluster launch by the host):
a 1-warp producer partition issues the multicast TMAs (inline asm, desc address from the kernel param), the
4-warp default partition consumes and releases each stage to both CTAs (mapa + remote arrive).
barrier.cluster.arrive/wait is executed at the start and the end of EVERY partition (all warps of the CTA must
arrive; see the comment in mc_ring_ws_kernel). Checks that the inline-asm pieces (kernel-param symbol, global_smem, %cluster_ctarank) work inside partitions."""
from common import *
from triton.experimental.gluon.language.nvidia.hopper import mbarrier
from exp4_mc_ring import (_ctarank, _cluster_sync, _fence_mbarrier_init, _smem_base, _desc_addr, _tma_multicast,
                          _arrive_cta, PAGE, COLS, HALF)


@gluon.jit
def _producer(bars, n_pages, KV_OFF: gl.constexpr, BAR_OFF: gl.constexpr, KNAME: gl.constexpr,
              PAGE: gl.constexpr, COLS: gl.constexpr, HALF: gl.constexpr):
    tid = gl.arange(0, 32, layout=gl.BlockedLayout([1], [32], [1], [0]))
    _cluster_sync(tid)       # every warp of the CTA (worker partitions too) must arrive on barrier.cluster
    leader = (tid == 0).to(gl.int32)
    rank = _ctarank(tid)
    smem = _smem_base(tid)
    daddr = _desc_addr(tid, KNAME, 0)
    for it in range(n_pages):
        s = it % 2
        ph = (it // 2) & 1
        mbarrier.wait(bars.index(2 + s), ph ^ 1, pred=it >= 2)
        mbarrier.expect(bars.index(s), PAGE * COLS * 2)
        _tma_multicast(leader, smem + KV_OFF + s * (PAGE * COLS * 2) + rank * (HALF * COLS * 2), daddr,
                       0, it * PAGE + rank * HALF, smem + BAR_OFF + s * 8, 3)
    _cluster_sync(tid)


@gluon.jit
def _consumer(kv, bars, out_ptr, n_pages, RL: gl.constexpr, L1: gl.constexpr, BAR_OFF: gl.constexpr,
              PAGE: gl.constexpr, COLS: gl.constexpr):
    tid = gl.arange(0, 128, layout=L1)
    _fence_mbarrier_init(tid)
    _cluster_sync(tid)
    leader = (tid == 0).to(gl.int32)
    smem = _smem_base(tid)
    acc = gl.zeros([PAGE, COLS], gl.float32, RL)
    for it in range(n_pages):
        s = it % 2
        mbarrier.wait(bars.index(s), (it // 2) & 1)
        acc += kv.index(s).load(RL).to(gl.float32)
        gl.thread_barrier()
        _arrive_cta(leader, smem + BAR_OFF + (2 + s) * 8, 0)
        _arrive_cta(leader, smem + BAR_OFF + (2 + s) * 8, 1)
    rows = gl.arange(0, PAGE, layout=gl.SliceLayout(1, RL))
    cols = gl.arange(0, COLS, layout=gl.SliceLayout(0, RL))
    gl.store(out_ptr + gl.program_id(0) * PAGE * COLS + rows[:, None] * COLS + cols[None, :], acc)
    _cluster_sync(tid)


@gluon.jit
def mc_ring_ws_kernel(desc, out_ptr, n_pages, SL: gl.constexpr, L1: gl.constexpr, RL: gl.constexpr,
                      KV_OFF: gl.constexpr, BAR_OFF: gl.constexpr, KNAME: gl.constexpr,
                      PAGE: gl.constexpr, COLS: gl.constexpr, HALF: gl.constexpr):
    kv = gl.allocate_shared_memory(gl.bfloat16, [2, PAGE, COLS], SL)
    bars = gl.allocate_shared_memory(gl.int64, [4, 1], mbarrier.MBarrierLayout())
    tid = gl.arange(0, 128, layout=L1)
    for i in gl.static_range(2):
        mbarrier.init(bars.index(i), count=1)
        mbarrier.init(bars.index(2 + i), count=2)
    # NOT here: barrier.cluster waits for all non-exited threads of the cluster, and the worker warps sit in
    # Triton's warp-specialize dispatch loop (barrier.sync 1) outside the partitions -> the cluster syncs are
    # done at the start and the end of every partition instead.
    gl.warp_specialize([
        (_consumer, (kv, bars, out_ptr, n_pages, RL, L1, BAR_OFF, PAGE, COLS)),
        (_producer, (bars, n_pages, KV_OFF, BAR_OFF, KNAME, PAGE, COLS, HALF)),
    ], [1], [48])


def build(kv_off=0, bar_off=0):
    SL = gl.NVMMASharedLayout.get_default_for([PAGE, COLS], gl.bfloat16)
    consts = {"SL": SL, "L1": gl.BlockedLayout([1], [32], [4], [0]),
              "RL": gl.BlockedLayout([1, 8], [4, 8], [4, 1], [1, 0]),
              "KV_OFF": kv_off, "BAR_OFF": bar_off, "KNAME": "mc_ring_ws_kernel", "PAGE": PAGE, "COLS": COLS,
              "HALF": HALF}
    sig = {"desc": f"tensordesc<bf16[{HALF}, {COLS}],{SL!r}>", "out_ptr": "*fp32", "n_pages": "i32"}
    sig.update({k: "constexpr" for k in consts})
    return compile_sm90(mc_ring_ws_kernel, sig, consts, num_warps=4)


def f():
    offs = smem_offsets(build())
    print("pass 1 allocation offsets:", offs)
    kv_off = [o for o, t in offs if "bf16" in t][0]
    bar_off = [o for o, t in offs if "i64" in t][0]
    k = build(kv_off, bar_off)
    assert smem_offsets(k) == offs
    show(k, r"multicast|mapa|cvta\.param|barrier\.cluster|cluster_ctarank|setmaxnreg", maxl=20)
    open("exp6_ws.ptx", "w").write(k.asm["ptx"]); open("exp6_ws.cubin", "wb").write(k.asm["cubin"])
    print("cubin bytes:", len(k.asm["cubin"]))
attempt("warp-specialized multicast ring", f)
