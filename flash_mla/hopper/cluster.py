"""2-CTA cluster pieces Gluon 3.6 has no API for, as inline PTX (ws2_kernel's opt-in MC variant; design and the
compile-only evidence: docs/cluster-multicast.md).

* ``ctarank``: ``%cluster_ctarank``.
* ``cluster_sync``: ``barrier.cluster.arrive`` + ``wait``. It waits for every non-exited thread of the cluster, so
  in a warp-specialized kernel it must be executed at the start and at the end of every partition (never in the
  prologue: the worker warps are parked in Triton's dispatch loop there).
* ``fence_mbarrier_init``: makes the prologue's ``mbarrier.init`` visible to the peer CTA (before the first sync).
* ``smem_base``: the CTA's shared-memory window (``global_smem``); an allocation's address is that plus its
  ``allocation.offset``, which the launcher reads from a first compile (``smem_offsets``) and passes as a constexpr.
* ``desc_addr``: generic address of a ``__grid_constant__`` CUtensorMap kernel parameter (``<kernel>_param_<i>``;
  the launcher finds ``i`` in the first compile's PTX, ``tensormap_params``).
* ``tma_multicast_2d`` / ``_3d``: ``cp.async.bulk.tensor`` into the same offset of every CTA in ``mask``, each
  CTA's mbarrier at ``bar`` (same offset) counting the bytes.
* ``arrive_cta``: ``mbarrier.arrive`` on the mbarrier at the same offset in CTA ``cta`` (``mapa``; CUTLASS's
  consumer-release form, without ``.release.cluster`` which would add a ``MEMBAR.ALL.GPU``).
Each takes ``tid``, a [128] int32 tensor of the calling warpgroup (the elementwise form needs a tensor operand);
the TMA and the arrives act only where ``pred`` is non-zero (pass ``tid == 0``).
"""
from __future__ import annotations

import re

from triton.experimental import gluon
from triton.experimental.gluon import language as gl

KERNEL_NAME = "mla_decode_ws2_kernel"


@gluon.jit
def warpgroup_tid():
    return gl.arange(0, 128, layout=gl.BlockedLayout([1], [32], [4], [0]))


@gluon.constexpr_function
def _mov_u32_asm(src):
    return f"mov.u32 $0, {src};"


@gluon.jit
def read_u32(tid, SRC: gl.constexpr):
    """A 32-bit special register or symbol address (``%smid``, ``global_smem`` ...) in every thread of ``tid``."""
    return gl.inline_asm_elementwise(_mov_u32_asm(SRC), "=r,r", [tid], dtype=gl.int32, is_pure=True, pack=1)


@gluon.jit
def ctarank(tid):
    return read_u32(tid, "%cluster_ctarank")


@gluon.jit
def cluster_sync(tid):
    gl.inline_asm_elementwise("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;\n\t"
                              "mov.u32 $0, 0;", "=r,r", [tid], dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def fence_mbarrier_init(tid):
    gl.inline_asm_elementwise("fence.mbarrier_init.release.cluster;\n\tmov.u32 $0, 0;", "=r,r", [tid],
                              dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def smem_base(tid):
    return read_u32(tid, "global_smem")


@gluon.constexpr_function
def _desc_asm(kname, idx):
    return "{ .reg .b64 t; mov.b64 t, " + f"{kname or KERNEL_NAME}_param_{idx}" + "; cvta.param.u64 $0, t; }"


@gluon.jit
def param_addr(tid, KNAME: gl.constexpr, IDX: gl.constexpr):
    """Generic address of parameter ``IDX`` (a CUtensorMap) of kernel ``KNAME``."""
    return gl.inline_asm_elementwise(_desc_asm(KNAME, IDX), "=l,r", [tid], dtype=gl.int64, is_pure=True, pack=1)


@gluon.jit
def desc_addr(tid, IDX: gl.constexpr):
    """``param_addr`` of ws2's kernel (``KERNEL_NAME``)."""
    return param_addr(tid, "", IDX)


@gluon.constexpr_function
def _tma_mc_asm(dims, mask):
    coords = ", ".join(f"${i}" for i in range(4, 4 + dims))
    bar = 4 + dims
    return ("{ .reg .pred p; .reg .b16 m; setp.ne.b32 p, $1, 0; mov.b16 m, " + str(mask) + ";\n\t"
            f"@p cp.async.bulk.tensor.{dims}d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster"
            f" [$2], [$3, {{{coords}}}], [${bar}], m; }}\n\tmov.u32 $0, 0;")


@gluon.jit
def tma_multicast_2d(pred, dst, desc, c0, c1, bar, MASK: gl.constexpr):
    """Box at coordinates (c0 innermost, c1) of the 2-D tensor map at ``desc`` -> ``dst`` in every CTA of MASK."""
    gl.inline_asm_elementwise(_tma_mc_asm(2, MASK), "=r,r,r,l,r,r,r", [pred, dst, desc, c0, c1, bar],
                              dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def tma_multicast_3d(pred, dst, desc, c0, c1, c2, bar, MASK: gl.constexpr):
    """As ``tma_multicast_2d`` for a 3-D tensor map (c0 innermost)."""
    gl.inline_asm_elementwise(_tma_mc_asm(3, MASK), "=r,r,r,l,r,r,r,r", [pred, dst, desc, c0, c1, c2, bar],
                              dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def arrive_cta(pred, bar, cta):
    gl.inline_asm_elementwise(
        "{ .reg .pred p; .reg .b32 ra; setp.ne.b32 p, $1, 0; mapa.shared::cluster.u32 ra, $2, $3;\n\t"
        "@p mbarrier.arrive.shared::cluster.b64 _, [ra]; }\n\tmov.u32 $0, 0;",
        "=r,r,r,r", [pred, bar, cta], dtype=gl.int32, is_pure=False, pack=1)


# ---- host side: what the second compile needs from the first ----

def smem_offsets(compiled, capability: int = 90) -> list[tuple[int, str]]:
    """(allocation.offset, memdesc type) of every ``ttg.local_alloc`` of ``compiled``, in program order, by running
    the shared-memory allocation passes of Triton's NVIDIA ``make_llir`` on its TTGIR."""
    import os
    import tempfile

    from triton._C.libtriton import ir, nvidia, passes
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import CUDABackend, get_ptx_version_from_options
    backend = CUDABackend(GPUTarget("cuda", capability, 32))
    ctx = ir.context()
    ir.load_dialects(ctx)
    backend.load_dialects(ctx)
    with tempfile.NamedTemporaryFile("w", suffix=".ttgir", delete=False) as f:
        f.write(compiled.asm["ttgir"])
        path = f.name
    try:
        mod = ir.parse_mlir_module(path, ctx)
    finally:
        os.unlink(path)
    pm = ir.pass_manager(ctx)
    passes.ttgpuir.add_combine_tensor_select_and_if(pm)
    passes.ttgpuir.add_allocate_warp_groups(pm)
    passes.convert.add_scf_to_cf(pm)
    passes.gluon.add_inliner(pm)
    opts = backend.parse_options({})
    nvidia.passes.ttgpuir.add_allocate_shared_memory_nv(pm, capability, get_ptx_version_from_options(opts, capability))
    pm.run(mod, "alloc")
    out = []
    for line in str(mod).splitlines():
        m = re.search(r"ttg\.local_alloc \{allocation\.offset = (\d+) : i32\}.*-> (!ttg\.memdesc<[^>]*>)", line)
        if m:
            out.append((int(m.group(1)), m.group(2)))
    return out


def find_offset(offsets, shape: str) -> int:
    """The offset of the one allocation whose memdesc starts with ``shape`` (e.g. ``"2x64x512x"``)."""
    hits = [o for o, t in offsets if t.startswith(f"!ttg.memdesc<{shape}")]
    if len(hits) != 1:
        raise RuntimeError(f"expected one shared allocation of shape {shape}, found {len(hits)}: {offsets}")
    return hits[0]


def tensormap_params(ptx: str, kernel_name: str = KERNEL_NAME) -> list[int]:
    """Indices of the kernel's 128-byte CUtensorMap parameters, in order (k_desc, v_desc, then q_desc's place)."""
    return [int(i) for i in re.findall(rf"\.param \.align 64 \.b8 {kernel_name}_param_(\d+)\[128\]", ptx)]


def compile_twice(build, consts: dict, constants, what: str):
    """The two-pass build of a kernel with inline PTX on shared-memory addresses (ws2's MC, the paired kernel's RAW):
    ``build(consts)`` with the constants zeroed, read them from that build (``constants(compiled) -> dict``), build
    again with them and check that the layout did not move (else ``RuntimeError``). Used by the launcher (Triton's
    warmup) and by ``compile_check`` (``triton.compile`` for sm_90a)."""
    first = build(consts)
    found = constants(first)
    kernel = build({**consts, **found})
    if constants(kernel) != found:
        raise RuntimeError(f"{what}: the shared-memory layout moved between the two compiles")
    return kernel


MC_ZERO = dict(KV_OFF=0, KR_OFF=0, RR_OFF=0, CF_OFF=0, KD_PARAM=0, VD_PARAM=0)


def mc_constants(first_compile, chunk_wait: int) -> dict:
    """The MC constexprs of ws2 (shared-memory offsets of the ring, its ``2 (chunk_wait + 1)`` piece barriers and
    cl_free; the tensor maps' parameter indices) read from ``first_compile``, a kernel compiled with ``MC_ZERO``
    (they change neither the allocation nor the parameter list, so the second compile with them has the same
    layout: callers assert it)."""
    offs = smem_offsets(first_compile)
    kd, vd = tensormap_params(first_compile.asm["ptx"])[:2]   # (a third: the Q descriptor argument)
    return dict(KV_OFF=find_offset(offs, "2x64x512x"), KR_OFF=find_offset(offs, "2x64x64x"),
                RR_OFF=find_offset(offs, f"{2 * (chunk_wait + 1)}x1xi64"), CF_OFF=find_offset(offs, "3x1xi64"),
                KD_PARAM=kd, VD_PARAM=vd)
