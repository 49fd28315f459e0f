"""Merge the partial results of split sequences (Triton; any CUDA GPU, or the interpreter).

For a query row of a sequence with ``n > 1`` splits, with partial outputs ``o_i`` (each normalised over its
own keys) and partial log-sum-exps ``lse_i`` (natural log, ``-inf`` for a piece in which the row saw no key)::

    lse = log(sum_i exp(lse_i))          out = sum_i exp(lse_i - lse) * o_i

A row that saw no key in any piece gets ``out = 0`` and ``lse = +inf``. Sequences with a single split were
written straight to ``out``/``lse`` by the attention kernel: their programs return at once.

On sm_90+ the kernel is launched with programmatic dependent launch (PDL): it is scheduled while the attention
kernel runs and waits for it with ``griddepcontrol.wait``, hiding the launch gap (FlashMLA does the same).
"""
from __future__ import annotations

import triton
import triton.language as tl

from triton.language.extra.cuda import gdc_wait

from .launch import CachedKernel, pdl_supported
from .scheduler import device_guard


@triton.jit
def _mla_combine_kernel(
    NUM_SPLITS, O_ACC, LSE_ACC, OUT, LSE,
    stride_ab, stride_ah, stride_ar,
    stride_sb, stride_sh,
    stride_ob, stride_os, stride_oh,
    stride_lb, stride_lh,
    ngroups, num_rows,
    D_V: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr, PDL: tl.constexpr,
):
    if PDL:
        # Launched as a programmatic dependent of the attention kernel: wait for its results.
        gdc_wait()
    bi = tl.program_id(0)
    kv_head = tl.program_id(1)
    split_begin = tl.load(NUM_SPLITS + bi)
    n = tl.load(NUM_SPLITS + bi + 1) - split_begin
    if n > 1:
        rows = tl.program_id(2) * BLOCK_R + tl.arange(0, BLOCK_R)
        row_ok = rows < num_rows
        lse_rows = LSE_ACC + kv_head * stride_sh + rows
        # Pass 1: max and sum of exp over the splits' lse.
        m = tl.full([BLOCK_R], float("-inf"), tl.float32)
        for s0 in range(0, n, BLOCK_S):
            offs_s = s0 + tl.arange(0, BLOCK_S)
            ptrs = lse_rows[:, None] + (split_begin + offs_s).to(tl.int64)[None, :] * stride_sb
            part = tl.load(ptrs, mask=row_ok[:, None] & (offs_s < n)[None, :], other=float("-inf"))
            m = tl.maximum(m, tl.max(part, 1))
        m_use = tl.where(m == float("-inf"), 0.0, m)
        total = tl.zeros([BLOCK_R], tl.float32)
        for s0 in range(0, n, BLOCK_S):
            offs_s = s0 + tl.arange(0, BLOCK_S)
            ptrs = lse_rows[:, None] + (split_begin + offs_s).to(tl.int64)[None, :] * stride_sb
            part = tl.load(ptrs, mask=row_ok[:, None] & (offs_s < n)[None, :], other=float("-inf"))
            total += tl.sum(tl.exp(part - m_use[:, None]), 1)
        seen = total > 0.0
        lse = tl.where(seen, m_use + tl.log(tl.where(seen, total, 1.0)), float("inf"))
        # Pass 2: weighted sum of the partial outputs.
        offs_v = tl.arange(0, D_V)
        acc = tl.zeros([BLOCK_R, D_V], tl.float32)
        for i in range(0, n):
            slot = (split_begin + i).to(tl.int64)
            w = tl.exp(tl.load(LSE_ACC + slot * stride_sb + kv_head * stride_sh + rows, mask=row_ok,
                               other=float("-inf")) - lse)
            o_ptrs = O_ACC + slot * stride_ab + kv_head * stride_ah + rows * stride_ar
            o = tl.load(o_ptrs[:, None] + offs_v[None, :], mask=row_ok[:, None], other=0.0)
            acc += w[:, None] * o
        tok = rows // ngroups
        head = kv_head * ngroups + rows % ngroups
        out_ptrs = OUT + (bi + tl.zeros([], tl.int64)) * stride_ob + tok * stride_os + head * stride_oh
        tl.store(out_ptrs[:, None] + offs_v[None, :], acc.to(OUT.dtype.element_ty), mask=row_ok[:, None])
        tl.store(LSE + (bi + tl.zeros([], tl.int64)) * stride_lb + head * stride_lh + tok, lse, mask=row_ok)


COMBINE_BLOCK_R = 4    # query rows per combine program (grid z = ceil(rows per KV head / COMBINE_BLOCK_R))


def combine_splits(num_splits, o_accum, lse_accum, out, lse, block_r: int = COMBINE_BLOCK_R):
    """Merge split partials into ``out`` ``[b, s_q, h_q, dv]`` and ``lse`` ``[b, h_q, s_q]`` (in place).

    ``o_accum`` ``[b + num_sm_parts, h_kv, R, dv]`` float32, ``lse_accum`` ``[b + num_sm_parts, h_kv, R]``
    float32, ``num_splits`` ``[b + 1]`` int32 as produced by ``get_mla_metadata``.
    """
    b, s_q, h_q, d_v = out.shape
    h_kv = o_accum.shape[1]
    num_rows = o_accum.shape[2]
    grid = (b, h_kv, triton.cdiv(num_rows, block_r))
    # All int arguments derive from out's shape and the workspace's shape (fresh, contiguous allocations).
    pdl = pdl_supported(out.device)
    key = (out.device, out.dtype, out.shape[1:], o_accum.shape[1:], block_r, num_splits.data_ptr() % 16 == 0)
    with device_guard(out.device):
        _combine_launch(
            key, grid, num_splits, o_accum, lse_accum, out, lse,
            o_accum.stride(0), o_accum.stride(1), o_accum.stride(2),
            lse_accum.stride(0), lse_accum.stride(1),
            out.stride(0), out.stride(1), out.stride(2),
            lse.stride(0), lse.stride(1),
            h_q // h_kv, num_rows,
            d_v, block_r, 32, pdl, num_warps=4, launch_pdl=pdl,
        )


_combine_launch = CachedKernel(_mla_combine_kernel)
