"""Public API (FlashMLA's, drop-in): argument validation and backend dispatch.

Backends:
    ``"hopper"``    Gluon kernel for sm_90 (d=576, dv=512, page size 64, bf16/fp16, h_kv=1).
    ``"triton"``    portable Triton kernel (any CUDA GPU; CPU tensors under ``TRITON_INTERPRET=1``).
    ``"reference"`` plain PyTorch (``reference.py``); synchronises with the device.
``"auto"`` (the default) picks hopper where it applies, else triton on CUDA; on CPU, triton when
interpreting, else reference. ``backend=`` or the ``FLASH_MLA_BACKEND`` environment variable forces one.

The op is registered with ``torch.library`` as ``flash_mla::mla_decode`` (with a fake implementation), so a
model calling ``flash_mla_with_kvcache`` compiles under ``torch.compile(fullgraph=True)``; the Python wrapper
only validates shapes/dtypes (no device synchronisation) before calling it.

Checking mode (``check=True`` or ``FLASH_MLA_CHECK=1``; off by default because it synchronises): before the
launch, verifies that every block-table entry a sequence needs names a cache page, that ``cache_seqlens`` fit
the block table, and that the scheduler metadata was computed from these ``cache_seqlens``.
"""
from __future__ import annotations

import os

import torch

from .combine import COMBINE_BLOCK_R, combine_splits
from .reference import mla_decode_reference
from .scheduler import MAX_GRID_YZ, fixed_overhead, get_mla_metadata, schedule_host  # get_mla_metadata is re-exported
from .triton_kernel import interpreting, mla_decode_triton

SUPPORTED_D = 576
SUPPORTED_DV = 512
BACKENDS = ("auto", "hopper", "triton", "reference")


def _hopper():
    """The Hopper backend module, or None where it cannot load (e.g. a Triton without Gluon)."""
    try:
        from . import hopper
    except ImportError:
        return None
    return hopper


def resolve_backend(q: torch.Tensor, k_cache: torch.Tensor, head_dim_v: int, backend: str | None = None) -> str:
    """The backend that ``flash_mla_with_kvcache`` will run for these inputs."""
    backend = backend or os.environ.get("FLASH_MLA_BACKEND") or "auto"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "hopper":
        hopper = _hopper()
        if q.device.type != "cuda" or hopper is None or not hopper.supports(q, k_cache, head_dim_v):
            raise ValueError("backend='hopper' needs an sm_90 GPU, d=576, dv=512, page size 64, h_kv=1, bf16/fp16")
        return backend
    if backend != "auto":
        if backend == "triton" and q.device.type == "cpu" and not interpreting():
            raise ValueError("backend='triton' on CPU tensors needs TRITON_INTERPRET=1")
        return backend
    if q.device.type == "cuda":
        hopper = _hopper()
        if hopper is not None and hopper.supports(q, k_cache, head_dim_v):
            return "hopper"
        return "triton"
    return "triton" if interpreting() else "reference"


def _check_tensor(name, t, *, dims, dtypes, device=None):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != dims:
        raise ValueError(f"{name} must have {dims} dimensions, got shape {tuple(t.shape)}")
    if t.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype {' or '.join(map(str, dtypes))}, got {t.dtype}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device}, expected {device} (the device of q)")


def _validate(q, k_cache, block_table, cache_seqlens, head_dim_v, tile_scheduler_metadata, num_splits):
    _check_tensor("q", q, dims=4, dtypes=(torch.bfloat16, torch.float16))
    dev = q.device
    _check_tensor("k_cache", k_cache, dims=4, dtypes=(q.dtype,), device=dev)
    _check_tensor("block_table", block_table, dims=2, dtypes=(torch.int32,), device=dev)
    _check_tensor("cache_seqlens", cache_seqlens, dims=1, dtypes=(torch.int32,), device=dev)
    _check_tensor("tile_scheduler_metadata", tile_scheduler_metadata, dims=2, dtypes=(torch.int32,), device=dev)
    _check_tensor("num_splits", num_splits, dims=1, dtypes=(torch.int32,), device=dev)
    b, s_q, h_q, d = q.shape
    num_blocks, page_size, h_kv, d_k = k_cache.shape
    if d != SUPPORTED_D:
        raise ValueError(f"q: head dim d must be {SUPPORTED_D} (512 latent + 64 rope), got {d}")
    if d_k != d:
        raise ValueError(f"k_cache: last dim must equal q's head dim {d}, got {d_k}")
    if head_dim_v != SUPPORTED_DV:
        raise ValueError(f"head_dim_v must be {SUPPORTED_DV}, got {head_dim_v}")
    if b < 1 or s_q < 1 or h_q < 1:
        raise ValueError(f"q: batch, s_q and h_q must be positive, got shape {tuple(q.shape)}")
    if num_blocks < 1 or page_size < 1 or h_kv < 1:
        raise ValueError(f"k_cache: num_blocks, page_size and h_kv must be positive, got {tuple(k_cache.shape)}")
    if h_q % h_kv != 0:
        raise ValueError(f"q's head count h_q={h_q} must be a multiple of k_cache's h_kv={h_kv}")
    if q.stride(-1) != 1:
        raise ValueError("q: the last dimension must be contiguous (stride 1)")
    if k_cache.stride(-1) != 1:
        raise ValueError("k_cache: the last dimension must be contiguous (stride 1)")
    if block_table.shape[0] != b:
        raise ValueError(f"block_table: first dim must be the batch size {b}, got {block_table.shape[0]}")
    if block_table.stride(-1) != 1:
        raise ValueError("block_table: the last dimension must be contiguous (stride 1)")
    if cache_seqlens.shape[0] != b:
        raise ValueError(f"cache_seqlens: length must be the batch size {b}, got {cache_seqlens.shape[0]}")
    if not cache_seqlens.is_contiguous():
        raise ValueError("cache_seqlens must be contiguous")
    if s_q * (h_q // h_kv) > MAX_GRID_YZ * COMBINE_BLOCK_R:   # the split merge's grid z
        raise ValueError(f"q: s_q * h_q / h_kv = {s_q * (h_q // h_kv)} query rows per KV head; at most "
                         f"{MAX_GRID_YZ * COMBINE_BLOCK_R} are supported")
    if tile_scheduler_metadata.shape[0] > MAX_GRID_YZ:
        raise ValueError(f"tile_scheduler_metadata: at most {MAX_GRID_YZ} parts (rows), got "
                         f"{tile_scheduler_metadata.shape[0]}")
    if tile_scheduler_metadata.shape[1] != 8 or not tile_scheduler_metadata.is_contiguous():
        raise ValueError("tile_scheduler_metadata must be a contiguous [num_sm_parts, 8] tensor from get_mla_metadata, "
                         f"got shape {tuple(tile_scheduler_metadata.shape)}")
    if num_splits.shape[0] != b + 1 or not num_splits.is_contiguous():
        raise ValueError(f"num_splits must be a contiguous [batch + 1] = [{b + 1}] tensor from get_mla_metadata, "
                         f"got shape {tuple(num_splits.shape)}")


_VALIDATED: dict = {}   # call signature -> backend, for eager calls (validation is per signature, not per call)


def _validated_backend(q, k_cache, block_table, cache_seqlens, head_dim_v, tile_scheduler_metadata, num_splits,
                       backend):
    """``_validate`` + ``resolve_backend``, remembered per signature (shapes, strides, dtypes, devices, backend):
    a decode loop calls with the same signature every layer and step, and the checks cost more host time
    than the launch. Nothing here depends on tensor contents or addresses."""
    key = (head_dim_v, backend, os.environ.get("FLASH_MLA_BACKEND"))
    for t in (q, k_cache, block_table, cache_seqlens, tile_scheduler_metadata, num_splits):
        if not isinstance(t, torch.Tensor):
            key = None
            break
        key += (t.shape, t.stride(), t.dtype, t.device)
    chosen = _VALIDATED.get(key) if key is not None else None
    if chosen is None:
        _validate(q, k_cache, block_table, cache_seqlens, head_dim_v, tile_scheduler_metadata, num_splits)
        chosen = resolve_backend(q, k_cache, head_dim_v, backend)
        if len(_VALIDATED) > 4096:
            _VALIDATED.clear()
        _VALIDATED[key] = chosen
    return chosen


def _check_contents(k_cache, block_table, cache_seqlens, tile_scheduler_metadata, num_splits, num_rows):
    """Checking mode: raise ValueError on contents that would make the kernels read outside the cache."""
    num_blocks, page_size = k_cache.shape[0], k_cache.shape[1]
    seqlens = cache_seqlens.long()
    if (seqlens < 0).any():
        i = int(torch.nonzero(seqlens < 0)[0, 0])
        raise ValueError(f"cache_seqlens[{i}] = {int(seqlens[i])} is negative")
    capacity = block_table.shape[1] * page_size
    if (seqlens > capacity).any():
        i = int(torch.nonzero(seqlens > capacity)[0, 0])
        raise ValueError(f"cache_seqlens[{i}] = {int(seqlens[i])} exceeds the block table's capacity "
                         f"({block_table.shape[1]} pages x {page_size})")
    pages_needed = (seqlens + page_size - 1) // page_size
    needed = torch.arange(block_table.shape[1], device=block_table.device)[None, :] < pages_needed[:, None]
    bad = needed & ((block_table < 0) | (block_table >= num_blocks))
    if bad.any():
        i, j = (int(x) for x in torch.nonzero(bad)[0])
        raise ValueError(f"block_table[{i}, {j}] = {int(block_table[i, j])} is not a page of k_cache "
                         f"(num_blocks = {num_blocks}) but sequence {i} needs it")
    meta, splits = schedule_host(cache_seqlens.tolist(), tile_scheduler_metadata.shape[0], fixed_overhead(num_rows))
    if meta != tile_scheduler_metadata.tolist() or splits != num_splits.tolist():
        raise ValueError("tile_scheduler_metadata/num_splits do not match cache_seqlens: call get_mla_metadata "
                         f"(cache_seqlens, {num_rows}, h_kv) again after changing cache_seqlens")


def _mla_decode_impl(
    q: torch.Tensor, k_cache: torch.Tensor, block_table: torch.Tensor, cache_seqlens: torch.Tensor,
    head_dim_v: int, tile_scheduler_metadata: torch.Tensor, num_splits: torch.Tensor,
    softmax_scale: float, causal: bool, backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The op behind ``flash_mla_with_kvcache`` (arguments already validated, backend resolved)."""
    if backend == "reference":
        return mla_decode_reference(q, k_cache, block_table, cache_seqlens, head_dim_v, softmax_scale, causal)
    b, s_q, h_q, _ = q.shape
    h_kv = k_cache.shape[2]
    num_rows = s_q * h_q // h_kv
    num_parts = tile_scheduler_metadata.shape[0]
    out = torch.empty(b, s_q, h_q, head_dim_v, dtype=q.dtype, device=q.device)
    lse = torch.empty(b, h_q, s_q, dtype=torch.float32, device=q.device)
    o_accum = torch.empty(b + num_parts, h_kv, num_rows, head_dim_v, dtype=torch.float32, device=q.device)
    lse_accum = torch.empty(b + num_parts, h_kv, num_rows, dtype=torch.float32, device=q.device)
    args = (q, k_cache, block_table, cache_seqlens, tile_scheduler_metadata, num_splits, softmax_scale, causal,
            out, lse)
    if backend == "hopper" and _hopper().tma_aligned(k_cache):
        # h_kv == 1: the kernel takes the workspace without its head dim
        _hopper().mla_decode_hopper(*args, o_accum[:, 0], lse_accum[:, 0])
    else:
        mla_decode_triton(*args, o_accum, lse_accum)
    combine_splits(num_splits, o_accum, lse_accum, out, lse)
    return out, lse


# Registered as a custom op for torch.compile; eager calls skip its dispatcher (~15 us a call on the host).
_mla_decode_op = torch.library.custom_op("flash_mla::mla_decode", mutates_args=())(_mla_decode_impl)


@_mla_decode_op.register_fake
def _mla_decode_fake(q, k_cache, block_table, cache_seqlens, head_dim_v, tile_scheduler_metadata, num_splits,
                     softmax_scale, causal, backend):
    b, s_q, h_q, _ = q.shape
    return q.new_empty(b, s_q, h_q, head_dim_v), q.new_empty(b, h_q, s_q, dtype=torch.float32)


def flash_mla_with_kvcache(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    block_table: torch.Tensor,
    cache_seqlens: torch.Tensor,
    head_dim_v: int,
    tile_scheduler_metadata: torch.Tensor,
    num_splits: torch.Tensor,
    softmax_scale: float | None = None,
    causal: bool = False,
    backend: str | None = None,
    check: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MLA decoding attention over a paged KV cache.

    Arguments:
        q: ``[batch_size, seq_len_q, num_heads_q, head_dim]`` bf16/fp16, head_dim = 576.
        k_cache: ``[num_blocks, page_block_size, num_heads_k, head_dim]``, q's dtype. V is ``k_cache[..., :head_dim_v]``.
        block_table: ``[batch_size, max_num_blocks_per_seq]`` int32.
        cache_seqlens: ``[batch_size]`` int32.
        head_dim_v: 512.
        tile_scheduler_metadata: ``[num_sm_parts, 8]`` int32, from ``get_mla_metadata``.
        num_splits: ``[batch_size + 1]`` int32, from ``get_mla_metadata``.
        softmax_scale: default ``head_dim ** -0.5``.
        causal: query token ``t`` of a length-``L`` sequence sees keys ``0 .. L - seq_len_q + t``.
        backend: ``"auto"``/None, ``"hopper"``, ``"triton"`` or ``"reference"`` (see the module docstring).
        check: validate block_table/cache_seqlens/metadata contents first (synchronises); default
            ``FLASH_MLA_CHECK=1`` in the environment, else off.

    Returns:
        out: ``[batch_size, seq_len_q, num_heads_q, head_dim_v]`` in q's dtype.
        softmax_lse: ``[batch_size, num_heads_q, seq_len_q]`` float32 (natural log; +inf for a row with no key).
    """
    if torch.compiler.is_compiling():
        _validate(q, k_cache, block_table, cache_seqlens, head_dim_v, tile_scheduler_metadata, num_splits)
        chosen = resolve_backend(q, k_cache, head_dim_v, backend)
        op = _mla_decode_op
    else:
        chosen = _validated_backend(q, k_cache, block_table, cache_seqlens, head_dim_v, tile_scheduler_metadata,
                                    num_splits, backend)
        op = _mla_decode_impl
    b, s_q, h_q, d = q.shape
    if softmax_scale is None:
        softmax_scale = d ** -0.5
    if check is None:
        check = os.environ.get("FLASH_MLA_CHECK", "0") == "1"
    if check:
        _check_contents(k_cache, block_table, cache_seqlens, tile_scheduler_metadata, num_splits,
                        s_q * h_q // k_cache.shape[2])
    return op(q, k_cache, block_table, cache_seqlens, head_dim_v, tile_scheduler_metadata, num_splits,
              float(softmax_scale), bool(causal), chosen)
