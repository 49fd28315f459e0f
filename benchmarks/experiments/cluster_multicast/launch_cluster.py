"""UNTESTED (no GPU here): launch a Gluon kernel that was compiled with num_ctas=1 as 2-CTA clusters along grid
axis 0, by patching the CompiledKernel's packed metadata (num_warps, num_ctas, shared). Triton's launcher
(backends/nvidia/driver.py:_launch) then sets gridDimX = grid[0] * 2 and CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION
x = 2 (+ cluster scheduling policy SPREAD) for cuLaunchKernelEx. program_id(0) stays %ctaid.x (0 .. 2*grid[0]-1),
so pass grid[0] = number_of_CTAs / 2; CTAs 2k and 2k+1 form a cluster (%cluster_ctarank = ctaid.x % 2)."""


def as_cluster(jit_fn, grid, *args, cluster=2, **kwargs):
    ck = jit_fn.warmup(*args, grid=grid, **kwargs)           # compiles (or fetches from cache) without launching
    nw, nc, shared = ck.packed_metadata
    assert nc == 1, "compile with num_ctas=1: layouts stay per-CTA, program_id = %ctaid"
    ck.packed_metadata = (nw, cluster, shared)               # the cached object is what later launches reuse
    return ck

# usage: as_cluster(kern, (n_ctas // 2, 1, 1), *args, **consts); kern[(n_ctas // 2, 1, 1)](*args, **consts)
