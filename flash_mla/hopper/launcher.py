"""Host side of the Hopper kernel: TMA descriptor over the paged cache, grid, launch (no host sync)."""
from __future__ import annotations

import functools

import torch
import triton
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from ..launch import CachedKernel, alignment_key, device_capability, pdl_supported
from ..scheduler import device_guard
from . import cluster as CL
from . import kernel as K
from . import pair_kernel as P
from . import ws2_kernel as W2
from . import ws_kernel as W

_GL_DTYPE = {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16}

# Lock-step kernel configs (P through shared memory, overlap P V with the next Q K^T, one 3-D TMA box for the
# latent part), used as the default before the warp-specialized kernel. Override for experiments: CONFIG_OVERRIDE.
CONFIG_SMALL = (True, False, True)     # one row block (R <= 64): memory bound
CONFIG_LARGE = (True, True, True)      # several row blocks: compute bound
CONFIG_OVERRIDE = None
SEESAW = "seesaw"                      # warp-specialized seesaw kernel (kernel.mla_decode_seesaw_kernel)
SEESAW2 = "seesaw2"                    # same kernel, true seesaw order (CHAIN=1: softmax(n+1) before P V(n))
SEESAW3 = "seesaw3"                    # CHAIN=2: as SEESAW2, but P V(n) is issued before softmax(n+1)
_SEESAW_CHAIN = {SEESAW: 0, SEESAW2: 1, SEESAW3: 2}
WS = "ws"                              # softmax warpgroup + two P.V warpgroups (ws_kernel.mla_decode_ws_kernel)
PAIR = "pair"                          # two warpgroups, pages in pairs (pair_kernel.mla_decode_pair_kernel)
WS2 = "ws2"                            # two softmax warpgroups alternating pages + two P.V (ws2_kernel)


def pick_config(rows: int):
    """The warp-specialized kernels: with more than one 64-row tile (compute-bound shapes) the two-softmax-
    warpgroup kernel (ws2: 0.5–5 % faster there on H200), else the single-softmax one (ws: ~1–2 % faster on one
    tile); see docs/perf-notes.md. CONFIG_SMALL / CONFIG_LARGE select the lock-step kernel."""
    if CONFIG_OVERRIDE is not None:
        return CONFIG_OVERRIDE
    return WS2 if rows > K.BLOCK_M else WS


@functools.lru_cache(maxsize=None)
def _smem_layout(torch_dtype):
    return gl.NVMMASharedLayout.get_default_for([K.PAGE, K.CHUNK], _GL_DTYPE[torch_dtype])


@functools.lru_cache(maxsize=None)
def _smem_layout_3d(torch_dtype, box=K.HEAD_DIM_V // K.CHUNK):
    return gl.NVMMASharedLayout.get_default_for([box, K.PAGE, K.CHUNK], _GL_DTYPE[torch_dtype])


def _descriptor(base, shape, strides, block_shape, layout) -> TensorDescriptor:
    """``TensorDescriptor(base, shape, strides, block_shape, layout)`` without its ``__post_init__`` checks (rank,
    16-byte base and strides, positive shape, contiguous last dimension): ~2.3 us of host time per descriptor, three
    descriptors per launch. Only for geometry the launcher has checked already (``supports``, ``tma_aligned``,
    ``q_descriptor``); ``tests/test_hopper_compile.py`` builds the same geometries through the checks."""
    d = object.__new__(TensorDescriptor)
    d.base, d.shape, d.strides, d.block_shape, d.layout, d.padding = base, shape, strides, block_shape, layout, "zero"
    return d


def make_descriptors(k_cache, v_box: int = K.HEAD_DIM_V // K.CHUNK):
    """TMA descriptors over the cache: ``k_desc`` views it as ``[num_blocks*64, 576]`` (box 64 x 64);
    ``v_desc`` views its latent part chunk-major as ``[8, num_blocks*64, 64]`` (box v_box x 64 x 64: the whole
    latent part, or half of it), whose box lands in shared memory exactly in the swizzled ``[64, 512]`` layout the
    tensor cores read."""
    rows = k_cache.shape[0] * K.PAGE
    rs = k_cache.stride(1)
    k_desc = _descriptor(k_cache, [rows, K.HEAD_DIM], [rs, 1], [K.PAGE, K.CHUNK], _smem_layout(k_cache.dtype))
    nv = K.HEAD_DIM_V // K.CHUNK
    v_desc = _descriptor(k_cache, [nv, rows, K.CHUNK], [K.CHUNK, rs, 1], [v_box, K.PAGE, K.CHUNK],
                         _smem_layout_3d(k_cache.dtype, v_box))
    return k_desc, v_desc


def q_descriptor(q: torch.Tensor):
    """TMA descriptor over q as ``[b, s_q * h_q, 576]`` (box 1 x 64 x 64, the 3-D layout of ``make_descriptors``'
    latent view: a box lands as one 64 x 64 chunk of the swizzled Q tile), or None where q's layout has no such
    view (its (s_q, h_q) rows not one stride apart, rows or sequences overlapping (broadcast q), strides or base
    not 16-byte aligned): the kernels then stage Q with plain loads. Rows past s_q * h_q of a 64-row tile are the
    box's zero fill. (A new q address costs one descriptor encode per launch: q changes every call.)"""
    b, s_q, h_q, d = q.shape
    rows = s_q * h_q
    if h_q > 1:
        row_stride = q.stride(2)
        if s_q > 1 and q.stride(1) != h_q * row_stride:
            return None
    else:
        row_stride = q.stride(1) if s_q > 1 else d
    batch_stride = q.stride(0) if b > 1 else rows * row_stride
    es = q.element_size()
    if q.stride(3) != 1 or (row_stride * es) % 16 or (batch_stride * es) % 16 or q.data_ptr() % 16:
        return None
    if row_stride < d or batch_stride < rows * row_stride:   # broadcast or overlapping rows: plain loads
        return None
    return _descriptor(q, [b, rows, K.HEAD_DIM], [batch_stride, row_stride, 1], [1, K.BLOCK_M, K.CHUNK],
                       _smem_layout_3d(q.dtype, 1))


def supports(q: torch.Tensor, k_cache: torch.Tensor, head_dim_v: int) -> bool:
    """Whether the Hopper kernel handles these inputs (sm_90, d=576, dv=512, page 64, h_kv=1, bf16/fp16)."""
    if not (isinstance(q, torch.Tensor) and isinstance(k_cache, torch.Tensor)):
        return False
    if q.device.type != "cuda" or k_cache.device != q.device:
        return False
    if device_capability(q.device) != (9, 0):
        return False
    if q.dtype not in _GL_DTYPE or k_cache.dtype != q.dtype or q.dim() != 4 or k_cache.dim() != 4:
        return False
    if q.shape[-1] != K.HEAD_DIM or k_cache.shape[-1] != K.HEAD_DIM or head_dim_v != K.HEAD_DIM_V:
        return False
    if k_cache.shape[1] != K.PAGE or k_cache.shape[2] != 1:
        return False
    # TMA: 16-byte row stride; pages must tile a 2-D [num_blocks * 64, 576] view. (The base address is checked
    # at launch by ``tma_aligned``: torch.compile cannot trace data_ptr, and the caller falls back to Triton.)
    es = k_cache.element_size()
    row_stride = k_cache.stride(1)
    if k_cache.stride(-1) != 1 or q.stride(-1) != 1:
        return False
    if (row_stride * es) % 16 or (k_cache.shape[0] > 1 and k_cache.stride(0) != K.PAGE * row_stride):
        return False
    if k_cache.shape[0] * K.PAGE >= 2**31:
        return False
    return True


def tma_aligned(k_cache: torch.Tensor) -> bool:
    """TMA needs a 16-byte aligned base address (a view into a cache at an odd offset may not have one)."""
    return k_cache.data_ptr() % 16 == 0


_launch = CachedKernel(K.mla_decode_kernel)
_launch_seesaw = CachedKernel(K.mla_decode_seesaw_kernel)
_launch_ws = CachedKernel(W.mla_decode_ws_kernel)
_launch_pair = CachedKernel(P.mla_decode_pair_kernel)
_launch_ws2 = CachedKernel(W2.mla_decode_ws2_kernel)


def _q_arg(launch, q_desc, k_desc):
    """The Q descriptor argument of the ws / ws2 kernels (``k_desc`` as a placeholder where they stage Q with
    plain loads)."""
    if launch is _launch_ws or launch is _launch_ws2:
        return (q_desc if q_desc is not None else k_desc,)
    return ()


def _trace_arg(launch, dummy):
    """The trace buffer argument of the kernels that take one (diagnostics; ``dummy`` when tracing is off)."""
    if launch is _launch_ws:
        return (W.TRACE_BUF if W.TRACE_BUF is not None else dummy,)
    if launch is _launch_pair:
        return (P.TRACE_BUF if P.TRACE_BUF is not None else dummy,)
    if launch is _launch_ws2:
        return (W2.TRACE_BUF if W2.TRACE_BUF is not None else dummy,)
    return ()


def mla_decode_hopper(q, k_cache, block_table, cache_seqlens, tile_scheduler_metadata, num_splits,
                      softmax_scale: float, causal: bool, out, lse, o_accum, lse_accum) -> None:
    """Split-KV MLA decode on Hopper; see ``kernel.py``. Launches on the current stream of q's device."""
    b, s_q, h_q, d = q.shape
    rows = s_q * h_q
    num_parts = tile_scheduler_metadata.shape[0]
    grid = (triton.cdiv(rows, K.BLOCK_M), 1, num_parts)
    cfg = pick_config(rows)
    if cfg == PAIR and not softmax_scale > 0:   # (the paired kernel scales row maxima: positive scales only)
        cfg = WS2 if rows > K.BLOCK_M else WS
    v_box = K.HEAD_DIM_V // K.CHUNK      # 64-column tiles per TMA box of the latent part
    if cfg == WS2:
        mc = bool(W2.MC) and grid[0] % 2 == 0      # 2-CTA clusters need an even number of row tiles
        own = W2.own_refill(grid[0], mc)
        cw = W2.chunk_wait(own)
    if cfg == PAIR:
        v_box = P.V_BOX
    elif cfg == WS2 and cw:
        v_box //= cw
    k_desc, v_desc = make_descriptors(k_cache, v_box)
    # the module whose Q_TMA / PDL apply: ws or ws2, not in 2-CTA clusters (MC) and not for the other kernels
    ws_mod = W if cfg == WS else W2 if cfg == WS2 and not mc else None
    q_tma = int(ws_mod.Q_TMA) if ws_mod else 0
    q_desc = q_descriptor(q) if q_tma else None
    q_tma = q_tma if q_desc is not None else 0
    pdl = bool(ws_mod and ws_mod.PDL and pdl_supported(q.device))
    if cfg == WS:
        launch = _launch_ws
        variant = dict(PV_REGS=W.PV_REGS, LAZY=int(W.LAZY), NAMED=int(W.NAMED), Q_TMA=q_tma, PDL=int(pdl),
                       TRACE=W.TRACE_MODE if W.TRACE_BUF is not None else 0, num_warps=W.NUM_WARPS,
                       maxnreg=W.MAXNREG, launch_pdl=bool(pdl))
    elif cfg == WS2:
        launch = _launch_ws2
        variant = dict(PV_REGS=W2.PV_REGS, SM_REGS=W2.SM_REGS, CW=cw, LAZY=int(W2.LAZY),
                       NAMED=int(W2.NAMED), OWN=int(own), MC=int(mc), **CL.MC_ZERO, Q_TMA=q_tma, PDL=int(pdl),
                       ASM_S=int(bool(W2.ASM_S) and not mc), ASM_PV=int(bool(W2.ASM_PV) and not mc), **W2.ASM_ZERO,
                       TRACE=W2.TRACE_MODE if W2.TRACE_BUF is not None else 0, num_warps=W2.NUM_WARPS,
                       maxnreg=W2.MAXNREG, launch_pdl=bool(pdl))
    elif cfg == PAIR:
        launch = _launch_pair
        variant = dict(WG1_REGS=P.WG1_REGS, RQ_REG=int(P.RQ_REG), RAW=int(P.RAW), P0_FIRST=int(P.P0_FIRST),
                       HINT=int(P.HINT), PV0_FIRST=int(P.PV0_FIRST), LAZY=int(P.LAZY), EARLY_P0=int(P.EARLY_P0),
                       ASM_S=int(P.ASM_S), ASM_PV=int(P.ASM_PV),
                       **P.RAW_ZERO,
                       TRACE=P.TRACE_BUF is not None, num_warps=P.NUM_WARPS)
    elif cfg in _SEESAW_CHAIN:      # experimental warp-specialized variants (opt-in)
        launch = _launch_seesaw
        variant = dict(REGS1=K.SEESAW_REGS[0], REGS_LOAD=K.SEESAW_REGS[1], CHAIN=_SEESAW_CHAIN[cfg],
                       num_warps=K.SEESAW_NUM_WARPS, maxnreg=K.SEESAW_MAXNREG)
    else:
        launch = _launch
        p_smem, overlap, tma3d = cfg
        variant = dict(P_SMEM=bool(p_smem), OVERLAP=bool(overlap), TMA3D=bool(tma3d), num_warps=K.NUM_WARPS)
    # Every int argument derives from these shapes/strides; outputs and workspace are fresh allocations.
    key = (q.device, q.dtype, q.shape[1:], q.stride(), k_cache.shape, k_cache.stride(), block_table.stride(0),
           bool(causal), cfg, tuple(variant.items()), alignment_key(q, block_table, cache_seqlens,
                                                                     tile_scheduler_metadata, num_splits))
    args = (q, q.stride(0), q.stride(1), q.stride(2),
            k_desc, v_desc,
            block_table, block_table.stride(0),
            cache_seqlens, tile_scheduler_metadata, num_splits,
            out, lse,
            o_accum, o_accum.stride(0), o_accum.stride(1),
            lse_accum, lse_accum.stride(0),
            float(softmax_scale) * K.LOG2E,
            rows, h_q, s_q,
            *(_trace_arg(launch, lse_accum)), *(_q_arg(launch, q_desc, k_desc)))
    kwargs = dict(CAUSAL=bool(causal) and s_q > 1,
                  BLOCK_M=K.BLOCK_M, PAGE=K.PAGE, D=K.HEAD_DIM, DV=K.HEAD_DIM_V, CHUNK=K.CHUNK,
                  **variant)
    with device_guard(q.device):
        if cfg == WS2 and variant["MC"]:
            grid = (grid[0] // 2, grid[1], grid[2])   # clusters: Triton's launcher multiplies x by the cluster size
            if key not in launch.compiled:
                _install_cluster_kernel(launch, key, grid, args, kwargs)
        if cfg == WS2 and (variant["ASM_S"] or variant["ASM_PV"]) and key not in launch.compiled:
            launch.install(key, _compile_twice(launch, grid, args, kwargs, W2.asm_constants, "ws2 ASM_S / ASM_PV"))
        if cfg == PAIR and variant["RAW"] and key not in launch.compiled:
            _install_pair_raw(launch, key, grid, args, kwargs)
        launch(key, grid, *args, **kwargs)


def _compile_twice(launch, grid, args, kwargs, constants, what: str):
    """``cluster.compile_twice`` through Triton's warmup of ``launch`` (the constants zeroed in ``kwargs``)."""
    return CL.compile_twice(lambda kw: launch.fn.warmup(*args, grid=grid, **kw), kwargs, constants, what)


def _install_pair_raw(launch, key, grid, args, kwargs) -> None:
    """pair_kernel's RAW variant: the build with the shared-memory offsets and tensor-map parameter indices its
    inline PTX needs (``pair_kernel.raw_constants``), launched for ``key`` from now on."""
    launch.install(key, _compile_twice(launch, grid, args, kwargs, P.raw_constants, "pair RAW"))


def _install_cluster_kernel(launch, key, grid, args, kwargs) -> None:
    """ws2's MC variant: compile it with ``MC_ZERO``, read the shared-memory offsets and tensor-map parameter indices
    its inline PTX needs from that build (``cluster.mc_constants``), compile again with them (the layout must not
    move: ``_compile_twice``), and set the compiled kernel's cluster size to 2 before its first launch."""
    kernel = _compile_twice(launch, grid, args, kwargs, lambda k: CL.mc_constants(k, kwargs["CW"]), "ws2 MC")
    run = kernel.run   # Triton sizes global / profile scratch by its own num_ctas (1) x grid: there must be none
    if getattr(run, "global_scratch_size", 0) or getattr(run, "profile_scratch_size", 0):
        raise RuntimeError("ws2 MC: the kernel needs scratch memory, which a patched cluster launch would undersize")
    num_warps, num_ctas, shared = kernel.packed_metadata
    kernel.packed_metadata = (num_warps, 2, shared)
    launch.install(key, kernel)

