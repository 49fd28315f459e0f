"""GPU checks for the cluster / multicast route (docs/cluster-multicast.md), one call of ~1 minute:

    cd benchmarks/experiments/cluster_multicast && python3 run_gpu.py          (on an H100; --compile-only here)

1. exp4's multicast ring, compiled with num_ctas=1 and launched as 2-CTA clusters by setting the compiled kernel's
   packed_metadata cluster field to 2: every CTA must see each page whole (its own half + the peer's multicast half),
   on one cluster and on enough clusters to fill the card.
2. co-residency: 2-CTA clusters whose CTAs hold ~218 KB of shared memory (as ws2 does: 1 CTA per SM) spin for
   200 us each, recording %smid and the global timer; CTAs that start after the first ones ended were not
   co-resident. Prints how many 2-CTA clusters the card runs at once (the bound on ws2's scheduler parts with
   clusters).
"""
import sys

from common import compile_sm90, gl, gluon
from exp4_mc_ring import COLS, HALF, PAGE, build_two_pass

from flash_mla.hopper import cluster as CL
from flash_mla.hopper.ws_kernel import _sreg

PROBE_COLS = (256, 128, 32, 16, 8)   # int32 [128, c] buffers: 225,280 B of shared memory, ~ws2's (224,280 B)
SPIN_NS = 200_000


@gluon.jit
def _touch(tid, C: gl.constexpr):
    """A [128, C] int32 shared buffer, filled and summed (so that the allocation stays)."""
    L2: gl.constexpr = gl.BlockedLayout([1, 4], [1, 32], [4, 1], [1, 0])
    buf = gl.allocate_shared_memory(gl.int32, [128, C], gl.SwizzledSharedLayout(1, 1, 1, [1, 0]))
    buf.store(gl.full([128, C], 1, gl.int32, L2) + gl.max(tid, axis=0))
    return buf


@gluon.jit
def probe_kernel(out_ptr, spin_ns, C0: gl.constexpr, C1: gl.constexpr, C2: gl.constexpr, C3: gl.constexpr,
                 C4: gl.constexpr):
    L1: gl.constexpr = gl.BlockedLayout([1], [32], [4], [0])
    L2: gl.constexpr = gl.BlockedLayout([1, 4], [1, 32], [4, 1], [1, 0])
    tid = gl.arange(0, 128, layout=L1)
    one = gl.arange(0, 1, layout=L1)
    t0 = _sreg("globaltimer")                                 # [1], the same in every thread
    b0 = _touch(tid, C0)
    b1 = _touch(tid, C1)
    b2 = _touch(tid, C2)
    b3 = _touch(tid, C3)
    b4 = _touch(tid, C4)
    t = t0
    while gl.max(t - t0, axis=0) < spin_ns:
        t = _sreg("globaltimer")
    gl.thread_barrier()
    x = (gl.sum(gl.sum(b0.load(L2), axis=1), axis=0) + gl.sum(gl.sum(b1.load(L2), axis=1), axis=0)
         + gl.sum(gl.sum(b2.load(L2), axis=1), axis=0) + gl.sum(gl.sum(b3.load(L2), axis=1), axis=0)
         + gl.sum(gl.sum(b4.load(L2), axis=1), axis=0))
    smid = CL.read_u32(tid, "%smid").to(gl.int64)
    rank = CL.ctarank(tid).to(gl.int64)
    pid = gl.program_id(0)
    first = tid == 0
    base = out_ptr + pid * 5
    gl.store(base + 0 + tid * 0, smid, mask=first)
    gl.store(base + 1 + tid * 0, rank, mask=first)
    gl.store(base + 2 + one, t0)
    gl.store(base + 3 + one, t)
    gl.store(base + 4 + tid * 0, smid * 0 + x, mask=first)


def build_probe():
    consts = {f"C{i}": c for i, c in enumerate(PROBE_COLS)}
    return compile_sm90(probe_kernel, {"out_ptr": "*i64", "spin_ns": "i64", **{k: "constexpr" for k in consts}},
                        consts, num_warps=4, num_ctas=1)


def build_ring():
    return build_two_pass("nc1")[0]


def as_cluster(k, cluster=2):
    """Launch the num_ctas=1 kernel ``k`` as ``cluster``-CTA clusters along x: Triton's launcher then uses
    gridDimX = grid[0] * cluster and CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION x = cluster."""
    nw, nc, shared = k.packed_metadata
    assert nc == 1
    k.packed_metadata = (nw, cluster, shared)
    return k


def run_ring(k, n_clusters, n_pages=10):
    import torch
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
    x = torch.randn(n_pages * PAGE, COLS, dtype=torch.bfloat16, device="cuda")
    layout = gl.NVMMASharedLayout(gl.NVMMASharedLayout.get_default_for([PAGE, COLS], gl.bfloat16).swizzle_byte_width,
                                  16, rank=2)
    desc = TensorDescriptor(x, [n_pages * PAGE, COLS], [COLS, 1], [HALF, COLS], layout)
    n_ctas = 2 * n_clusters
    out = torch.full((n_ctas, PAGE, COLS), float("nan"), dtype=torch.float32, device="cuda")
    consts = [None] * 10     # the constexpr parameters: ignored by the launcher
    k[(n_clusters, 1, 1)](desc, out, n_pages, *consts)
    torch.cuda.synchronize()
    ref = x.float().reshape(n_pages, PAGE, COLS).sum(0)
    err = (out - ref).abs().max().item()
    print(f"multicast ring, {n_clusters} cluster(s) of 2, {n_pages} pages: max |err| {err:.3e}",
          "OK" if err < 1e-2 else "WRONG")
    return err < 1e-2


def run_probe(k, n_clusters):
    import torch
    out = torch.zeros(2 * n_clusters, 5, dtype=torch.int64, device="cuda")
    k[(n_clusters, 1, 1)](out, SPIN_NS, *PROBE_COLS)
    torch.cuda.synchronize()
    smid, rank, t0, t1 = out[:, 0], out[:, 1], out[:, 2], out[:, 3]
    first_end = t1.min()
    late = int((t0 > first_end).sum())
    print(f"co-residency: {n_clusters} clusters of 2 x {k.metadata.shared} B smem: {2 * n_clusters - late} CTAs "
          f"started in the first wave, {late} later; distinct SMs {len(set(smid.tolist()))}; ranks "
          f"{sorted(set(rank.tolist()))}; start spread {(t0.max() - t0.min()).item() / 1e3:.1f} us")
    return late


def main():
    ring, probe = build_ring(), build_probe()
    print("compiled: ring shared", ring.metadata.shared, "B; probe shared", probe.metadata.shared, "B")
    if "--compile-only" in sys.argv:
        return
    import torch
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    as_cluster(ring)
    ok = run_ring(ring, 1) and run_ring(ring, sms // 2, n_pages=33)
    as_cluster(probe)
    fits = sms // 2
    while fits > 1 and run_probe(probe, fits) > 0:
        fits -= 1
    print(f"RESULT multicast ring {'correct' if ok else 'WRONG'}; {fits} 2-CTA clusters of ~218 KB smem run at once "
          f"on {sms} SMs")


if __name__ == "__main__":
    main()
