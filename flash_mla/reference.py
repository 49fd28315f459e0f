"""The specification of the op, in plain PyTorch with float32 math.

Every backend is tested against this function; on CPU tensors it is also the default backend.

Semantics (FlashMLA's ``flash_mla_with_kvcache``, absorbed MLA):

- ``q``            ``[b, s_q, h_q, d]``                     bf16 / fp16 / fp32
- ``k_cache``      ``[num_blocks, page_size, h_kv, d]``     same dtype as ``q``
- ``block_table``  ``[b, max_blocks]`` int32: key ``j`` of sequence ``i`` lives in
  ``k_cache[block_table[i, j // page_size], j % page_size]``
- ``cache_seqlens`` ``[b]`` int32: number of keys ``L`` of each sequence
- V is ``k_cache[..., :head_dim_v]`` (the same cache rows).
- query head ``h`` uses KV head ``h // (h_q // h_kv)``.
- ``causal`` with ``s_q > 1``: query token ``t`` sees keys ``0 .. L - s_q + t``.
- A query row that sees no key gets ``out = 0`` and ``lse = +inf`` (FlashAttention's convention).

Returns ``out [b, s_q, h_q, head_dim_v]`` in q's dtype and ``lse [b, h_q, s_q]`` float32 (natural log).
Block-table entries past each sequence's last page are never read, and cache rows past each
sequence's length never influence the result (they may hold NaN).
"""
from __future__ import annotations

import math

import torch


def gather_kv(k_cache: torch.Tensor, block_table_row: torch.Tensor, seqlen: int) -> torch.Tensor:
    """Keys ``0 .. seqlen-1`` of one sequence: ``[seqlen, h_kv, d]`` (reads only the pages needed)."""
    page_size = k_cache.shape[1]
    num_pages = -(-seqlen // page_size)
    pages = block_table_row[:num_pages].long()
    return k_cache[pages].flatten(0, 1)[:seqlen]


def mla_decode_reference(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    block_table: torch.Tensor,
    cache_seqlens: torch.Tensor,
    head_dim_v: int,
    softmax_scale: float | None = None,
    causal: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference MLA decode; see the module docstring for shapes and semantics.

    Synchronises with the device (reads ``cache_seqlens`` on the host): it is the spec, not a fast path.
    """
    b, s_q, h_q, d = q.shape
    h_kv = k_cache.shape[2]
    ngroups = h_q // h_kv
    if softmax_scale is None:
        softmax_scale = d ** -0.5
    out = torch.empty(b, s_q, h_q, head_dim_v, dtype=q.dtype, device=q.device)
    lse = torch.empty(b, h_q, s_q, dtype=torch.float32, device=q.device)
    seqlens = cache_seqlens.tolist()
    for i in range(b):
        L = int(seqlens[i])
        kv = gather_kv(k_cache, block_table[i], L).float()            # [L, h_kv, d]
        kv = kv.repeat_interleave(ngroups, dim=1)                   # [L, h_q, d]
        qi = q[i].float()                                           # [s_q, h_q, d]
        scores = torch.einsum("shd,lhd->hsl", qi, kv) * softmax_scale  # [h_q, s_q, L]
        keys = torch.arange(L, device=q.device)
        visible = torch.ones(s_q, L, dtype=torch.bool, device=q.device)
        if causal:
            last = L - s_q + torch.arange(s_q, device=q.device)     # last visible key per token
            visible = keys[None, :] <= last[:, None]
        scores = scores.masked_fill(~visible[None], -math.inf)
        row_lse = torch.logsumexp(scores, dim=-1)                   # [h_q, s_q]; -inf if no key
        empty = torch.isneginf(row_lse)
        probs = torch.exp(scores - row_lse.masked_fill(empty, 0.0)[..., None])
        o = torch.einsum("hsl,lhv->shv", probs, kv[..., :head_dim_v])
        out[i] = o.to(q.dtype)
        lse[i] = row_lse.masked_fill(empty, math.inf)
    return out, lse
