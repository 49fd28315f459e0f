"""Portable split-KV MLA decoding kernel in Triton (any CUDA GPU; CPU through Triton's interpreter).

One program handles one (block of ``BLOCK_M`` query rows, KV head, scheduler part). The ``s_q * h_q / h_kv``
query rows that share a KV head are packed as the M dimension of the matmuls (row ``r`` is token
``r // ngroups``, head ``kv_head * ngroups + r % ngroups``), so each KV block is read once per row block.
The program walks its part's (sequence, key range) pieces from the tile scheduler (see ``scheduler.py``);
for each piece it runs an online softmax over ``BLOCK_N``-key blocks gathered through the block table:

    S = Q_nope · K_nopeᵀ + Q_rope · K_ropeᵀ        (K_nope = the first 512 dims = V)
    O = O · α + P · K_nope

A piece that is a whole sequence writes ``out``/``lse`` directly; a piece of a split sequence writes float32
partials (``o_accum``/``lse_accum``) that ``combine.py`` merges.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from triton.language.extra.cuda import gdc_launch_dependents

from .launch import CachedKernel, alignment_key, pdl_supported
from .scheduler import device_guard

LOG2E = 1.4426950408889634


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _key_rows(kv_base, bt_row, n0, offs_n, key_ok, page_size, stride_kp, stride_ks, PAGE_ALIGNED: tl.constexpr):
    """Pointers to the cache rows of keys ``offs_n`` (block starting at key ``n0``) of one sequence.

    PAGE_ALIGNED (page_size % BLOCK_N == 0): the block lies inside one page, so one block-table entry and
    a contiguous run of rows (cheap addressing). Otherwise one block-table lookup per key.
    Block-table entries are read only for keys below the piece's end (``key_ok``).
    """
    if PAGE_ALIGNED:
        page = tl.load(bt_row + n0 // page_size).to(tl.int64)
        return kv_base + page * stride_kp + (n0 % page_size + offs_n - n0) * stride_ks
    else:
        page = tl.load(bt_row + offs_n // page_size, mask=key_ok, other=0).to(tl.int64)
        return kv_base + page * stride_kp + (offs_n % page_size) * stride_ks


@triton.jit
def _mla_splitkv_kernel(
    Q, KV, BLOCK_TABLE, SEQLENS, META, NUM_SPLITS,
    OUT, LSE, O_ACC, LSE_ACC,
    stride_qb, stride_qs, stride_qh,
    stride_kp, stride_ks, stride_kh,
    stride_btb,
    stride_ob, stride_os, stride_oh,
    stride_lb, stride_lh,
    stride_ab, stride_ah, stride_ar,          # o_accum [splits, h_kv, R, dv] (last stride 1)
    stride_sb, stride_sh,                      # lse_accum [splits, h_kv, R] (last stride 1)
    scale_log2, s_q, ngroups, num_rows, page_size,
    D_V: tl.constexpr, D_ROPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, UPCAST: tl.constexpr, PAGE_ALIGNED: tl.constexpr, PDL: tl.constexpr,
):
    if PDL:
        gdc_launch_dependents()     # let the combine kernel be scheduled now; it waits for our results
    pid_m = tl.program_id(0)
    kv_head = tl.program_id(1)
    part = tl.program_id(2)

    begin_idx = tl.load(META + part * 8 + 0)
    begin_seq = tl.load(META + part * 8 + 1)
    end_idx = tl.load(META + part * 8 + 2)
    end_seq = tl.load(META + part * 8 + 3)
    begin_split = tl.load(META + part * 8 + 4)

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < num_rows
    tok = rows // ngroups
    head = kv_head * ngroups + rows % ngroups
    offs_v = tl.arange(0, D_V)
    offs_r = D_V + tl.arange(0, D_ROPE)
    offs_n0 = tl.arange(0, BLOCK_N)
    kv_base = KV + kv_head * stride_kh

    for bi in range(begin_idx, end_idx + 1):
        seqlen = tl.load(SEQLENS + bi)
        b64 = bi + tl.zeros([], tl.int64)     # 64-bit offsets: caches can exceed 2**31 elements
        start = tl.where(bi == begin_idx, begin_seq, 0)
        end = tl.where(bi == end_idx, end_seq, seqlen)
        split_idx = tl.where(bi == begin_idx, begin_split, 0)

        q_rows = Q + b64 * stride_qb + tok * stride_qs + head * stride_qh
        q_nope = tl.load(q_rows[:, None] + offs_v[None, :], mask=row_ok[:, None], other=0.0)
        q_rope = tl.load(q_rows[:, None] + offs_r[None, :], mask=row_ok[:, None], other=0.0)
        if UPCAST:
            q_nope = q_nope.to(tl.float32)
            q_rope = q_rope.to(tl.float32)
        # Last key each row may see (exclusive bound), causal or not.
        if CAUSAL:
            row_end = tl.minimum(seqlen - s_q + tok + 1, end)
        else:
            row_end = tl.zeros([BLOCK_M], tl.int32) + end

        bt_row = BLOCK_TABLE + b64 * stride_btb
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, D_V], tl.float32)
        for n0 in range(start, end, BLOCK_N):
            offs_n = n0 + offs_n0
            key_ok = offs_n < end
            k_rows = _key_rows(kv_base, bt_row, n0, offs_n, key_ok, page_size, stride_kp, stride_ks,
                               PAGE_ALIGNED)
            k_nope = tl.load(k_rows[:, None] + offs_v[None, :], mask=key_ok[:, None], other=0.0)
            k_rope = tl.load(k_rows[:, None] + offs_r[None, :], mask=key_ok[:, None], other=0.0)
            if UPCAST:
                k_nope = k_nope.to(tl.float32)
                k_rope = k_rope.to(tl.float32)
            s = tl.dot(q_nope, tl.trans(k_nope))
            s = tl.dot(q_rope, tl.trans(k_rope), s)
            s = s * scale_log2
            s = tl.where(offs_n[None, :] < row_end[:, None], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_use = tl.where(m_new == float("-inf"), 0.0, m_new)   # rows with no key yet
            alpha = tl.exp2(m_i - m_use)
            p = tl.exp2(s - m_use[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None]
            acc = tl.dot(p.to(k_nope.dtype), k_nope, acc)
            m_i = m_new

        seen = l_i > 0.0
        l_safe = tl.where(seen, l_i, 1.0)
        lse_val = (m_i + tl.log2(l_safe)) / 1.4426950408889634
        o = acc / l_safe[:, None]
        whole = (start == 0) & (end == seqlen)
        if whole:
            lse_val = tl.where(seen, lse_val, float("inf"))
            o_rows = b64 * stride_ob + tok * stride_os + head * stride_oh
            tl.store(OUT + o_rows[:, None] + offs_v[None, :], o.to(OUT.dtype.element_ty), mask=row_ok[:, None])
            tl.store(LSE + b64 * stride_lb + head * stride_lh + tok, lse_val, mask=row_ok)
        else:
            lse_val = tl.where(seen, lse_val, float("-inf"))
            slot = (tl.load(NUM_SPLITS + bi) + split_idx).to(tl.int64)
            a_rows = slot * stride_ab + kv_head * stride_ah + rows * stride_ar
            tl.store(O_ACC + a_rows[:, None] + offs_v[None, :], o, mask=row_ok[:, None])
            tl.store(LSE_ACC + slot * stride_sb + kv_head * stride_sh + rows, lse_val, mask=row_ok)


def pick_config(num_rows: int, device: torch.device) -> dict:
    """Block shape and launch parameters for a row count (see docs/perf-notes.md for how they were chosen)."""
    if interpreting() or device.type != "cuda":
        return dict(BLOCK_M=16 if num_rows <= 16 else 64, BLOCK_N=16, num_warps=4, num_stages=1)
    if num_rows <= 16:
        return dict(BLOCK_M=16, BLOCK_N=64, num_warps=8, num_stages=2)
    if num_rows <= 32:
        return dict(BLOCK_M=32, BLOCK_N=64, num_warps=8, num_stages=2)
    return dict(BLOCK_M=64, BLOCK_N=64, num_warps=8, num_stages=2)


def mla_decode_triton(q, k_cache, block_table, cache_seqlens, tile_scheduler_metadata, num_splits,
                      softmax_scale, causal, out, lse, o_accum, lse_accum, config=None):
    """Launch the split-KV kernel. Shapes as in ``interface.flash_mla_with_kvcache``; no host sync.

    ``o_accum`` ``[b + num_sm_parts, h_kv, R, dv]`` float32 and ``lse_accum`` ``[b + num_sm_parts, h_kv, R]``
    float32 receive the partial results of split sequences (R = s_q * h_q // h_kv).
    """
    b, s_q, h_q, d = q.shape
    h_kv = k_cache.shape[2]
    ngroups = h_q // h_kv
    num_rows = s_q * ngroups
    d_v = out.shape[-1]
    num_parts = tile_scheduler_metadata.shape[0]
    cfg = dict(config or pick_config(num_rows, q.device))
    block_m, block_n = cfg.pop("BLOCK_M"), cfg.pop("BLOCK_N")
    grid = (triton.cdiv(num_rows, block_m), h_kv, num_parts)
    causal = bool(causal and s_q > 1)
    # Every int argument below derives from these shapes/strides; outputs and workspace are fresh allocations.
    key = (q.device, q.dtype, q.shape[1:], q.stride(), k_cache.shape[1:], k_cache.stride(), block_table.stride(0),
           causal, block_m, block_n, tuple(cfg.items()), alignment_key(q, k_cache, block_table, cache_seqlens))
    with device_guard(q.device):
        _splitkv_launch(
            key, grid, q, k_cache, block_table, cache_seqlens, tile_scheduler_metadata, num_splits,
            out, lse, o_accum, lse_accum,
            q.stride(0), q.stride(1), q.stride(2),
            k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
            block_table.stride(0),
            out.stride(0), out.stride(1), out.stride(2),
            lse.stride(0), lse.stride(1),
            o_accum.stride(0), o_accum.stride(1), o_accum.stride(2),
            lse_accum.stride(0), lse_accum.stride(1),
            softmax_scale * LOG2E, s_q, ngroups, num_rows, k_cache.shape[1],
            d_v, d - d_v, block_m, block_n, causal, interpreting(), k_cache.shape[1] % block_n == 0,
            pdl_supported(q.device), **cfg,
        )


_splitkv_launch = CachedKernel(_mla_splitkv_kernel)
