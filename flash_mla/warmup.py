"""Compile the kernels a model will use before serving, so the first decode step does not pay for it.

Triton compiles each kernel variant on its first launch and stores the binary in its on-disk cache
(``~/.triton/cache``, or ``TRITON_CACHE_DIR``), so later processes load it instead of compiling again.
A variant is fixed by: dtype, ``h_q``/``s_q`` (rows per KV head pick the launch config), ``causal`` (when
``s_q > 1``), the page size and the backend — not by the batch size or the lengths. ``warmup`` runs one tiny
call per combination, which compiles (or loads) every kernel of that path: scheduler, attention, combine.

    import flash_mla
    flash_mla.warmup(num_heads_q=[128], seq_len_q=[1, 2], dtype=torch.bfloat16, causal=True)
"""
from __future__ import annotations

import itertools
import time

import torch

from .interface import flash_mla_with_kvcache
from .scheduler import get_mla_metadata


def warmup(
    num_heads_q=(128,),
    seq_len_q=(1,),
    dtype: torch.dtype = torch.bfloat16,
    causal: bool = True,
    page_size: int = 64,
    num_heads_k: int = 1,
    device: torch.device | str | None = None,
    backend: str | None = None,
) -> dict[tuple[int, int], float]:
    """Compile/load every kernel variant for these shapes; returns seconds spent per ``(h_q, s_q)``.

    Arguments mirror the model's decode call: ``num_heads_q`` and ``seq_len_q`` are iterables of the values
    it will use; ``device`` defaults to the current CUDA device (or CPU without CUDA).
    """
    if device is None:
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    timings = {}
    for h_q, s_q in itertools.product(num_heads_q, seq_len_q):
        start = time.perf_counter()
        seqlen = 2 * page_size + 1                      # more than one page, ends mid-page
        pages = -(-seqlen // page_size)
        k_cache = torch.randn(pages, page_size, num_heads_k, 576, dtype=dtype, device=device)
        block_table = torch.arange(pages, dtype=torch.int32, device=device)[None]
        cache_seqlens = torch.tensor([seqlen], dtype=torch.int32, device=device)
        q = torch.randn(1, s_q, h_q, 576, dtype=dtype, device=device)
        meta, splits = get_mla_metadata(cache_seqlens, s_q * h_q // num_heads_k, num_heads_k)
        flash_mla_with_kvcache(q, k_cache, block_table, cache_seqlens, 512, meta, splits, causal=causal,
                               backend=backend)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        timings[(h_q, s_q)] = time.perf_counter() - start
    return timings
