"""Shared input builders and accuracy metrics for the CPU test suite.

Run as ``TRITON_INTERPRET=1 python -m pytest -q tests``: tests that launch a Triton kernel on CPU tensors
need Triton's interpreter and skip (with ``needs_interpreter``) when it is not on. The variable must be set
before ``triton`` is imported, so it cannot be switched on from inside the session.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import torch

# FlashMLA's metric (its tests' ``cal_diff``): 1 - 2<x,y> / (|x|^2 + |y|^2) in float64; it is bounded below by
# 1 - cos_sim, so ``< 1e-5`` implies ``1 - cos_sim < 1e-5``.
from flash_mla.bench import cos_diff  # noqa: F401  (re-exported to the tests)

D = 576           # q / k head dim (512 latent + 64 rope)
DV = 512          # v head dim
SENTINEL_PAGE = 2147480000   # block-table entries past a sequence's last page (never to be read)

INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") == "1"
needs_interpreter = pytest.mark.skipif(
    not INTERPRETING,
    reason="Triton kernels on CPU tensors need TRITON_INTERPRET=1 set before triton is imported "
           "(run: TRITON_INTERPRET=1 python -m pytest -q tests)")


@dataclass
class Problem:
    q: torch.Tensor              # [b, s_q, h_q, D]
    k_cache: torch.Tensor        # [num_blocks, page_size, h_kv, D] (NaN in every slot past a sequence's end)
    block_table: torch.Tensor    # [b, width] int32, shuffled pages, SENTINEL_PAGE past each sequence's pages
    cache_seqlens: torch.Tensor  # [b] int32
    seqlens: list
    page_size: int

    @property
    def args(self):
        return self.q, self.k_cache, self.block_table, self.cache_seqlens


def make_problem(seqlens, *, s_q=1, h_q=16, h_kv=1, page_size=64, dtype=torch.bfloat16, extra_pages=3,
                 extra_cols=2, seed=0) -> Problem:
    """A random decode problem with a shuffled paged cache.

    - pages are a random permutation of ``0 .. num_blocks-1``; ``extra_pages`` pages belong to no sequence;
    - ``block_table`` is ``extra_cols`` wider than the longest sequence needs, and every entry past a
      sequence's last needed page is ``SENTINEL_PAGE`` (out of range: reading it would crash or garble);
    - every cache slot past each sequence's end (its last partial page, and all unused pages) holds NaN.
    """
    gen = torch.Generator().manual_seed(seed)
    seqlens = [int(s) for s in seqlens]
    b = len(seqlens)
    pages_per_seq = [-(-L // page_size) for L in seqlens]
    needed = sum(pages_per_seq)
    num_blocks = needed + extra_pages
    assert num_blocks >= 1
    perm = torch.randperm(num_blocks, generator=gen).tolist()
    width = max(pages_per_seq + [0]) + extra_cols
    assert width >= 1
    block_table = torch.full((b, width), SENTINEL_PAGE, dtype=torch.int32)
    k_cache = torch.randn(num_blocks, page_size, h_kv, D, generator=gen).to(dtype)
    used = 0
    for i, (L, n) in enumerate(zip(seqlens, pages_per_seq)):
        pages = perm[used:used + n]
        used += n
        block_table[i, :n] = torch.tensor(pages, dtype=torch.int32)
        if n and L % page_size:
            k_cache[pages[-1], L % page_size:] = float("nan")    # past the end, in the last partial page
    for p in perm[used:]:
        k_cache[p] = float("nan")                                 # pages no sequence owns
    q = torch.randn(b, s_q, h_q, D, generator=gen).to(dtype)
    return Problem(q, k_cache, block_table, torch.tensor(seqlens, dtype=torch.int32), seqlens, page_size)


# ----------------------------------------------------------------------------------------------- metrics



def rel_l2(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.double().flatten(), y.double().flatten()
    return ((x - y).norm() / y.norm().clamp_min(1e-30)).item()


OUT_REL_L2 = {torch.bfloat16: 1e-2, torch.float16: 1e-3, torch.float32: 1e-5}


def assert_out_close(out: torch.Tensor, ref: torch.Tensor, dtype=None):
    """``out`` vs reference ``ref``: same shape/dtype, no NaN/inf, FlashMLA metric and relative L2 error."""
    dtype = dtype or ref.dtype
    assert out.shape == ref.shape and out.dtype == ref.dtype, (out.shape, out.dtype, ref.shape, ref.dtype)
    assert torch.isfinite(out).all(), "non-finite values in out"
    if ref.abs().max() == 0:          # e.g. every row saw no key: must be exactly zero
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
        return
    cd = cos_diff(out, ref)
    assert cd < 1e-5, f"1 - cos_sim = {cd}"
    err = rel_l2(out, ref)
    assert err < OUT_REL_L2[dtype], f"relative L2 error {err} >= {OUT_REL_L2[dtype]}"


def assert_lse_close(lse: torch.Tensor, ref: torch.Tensor, rtol=1e-5, atol=1e-5):
    """float32 lse: +inf exactly where the reference has +inf; finite entries close (cos metric + elementwise)."""
    assert lse.shape == ref.shape and lse.dtype == torch.float32, (lse.shape, lse.dtype)
    assert not lse.isnan().any(), "NaN in lse"
    inf_ref = torch.isinf(ref)
    assert torch.equal(torch.isinf(lse), inf_ref), "inf positions of lse differ from the reference"
    assert torch.equal(lse[inf_ref], ref[inf_ref]), "inf signs of lse differ from the reference"
    fin = ~inf_ref
    if fin.any():
        assert cos_diff(lse[fin], ref[fin]) < 1e-5
        torch.testing.assert_close(lse[fin], ref[fin], rtol=rtol, atol=atol)


def assert_matches_reference(out, lse, ref_out, ref_lse):
    assert_out_close(out, ref_out)
    assert_lse_close(lse, ref_lse)
