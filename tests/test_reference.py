"""The reference (the spec) against an independent, naive float64 formula written here.

The naive version loops over (sequence, query token, head) and gathers each key explicitly through
``k_cache[block_table[i, j // page], j % page]``; it shares no code with ``flash_mla.reference``.
"""
import math

import pytest
import torch

from conftest import DV, assert_lse_close, assert_out_close, make_problem
from flash_mla.reference import mla_decode_reference


def naive_mla(q, k_cache, block_table, seqlens, head_dim_v, softmax_scale, causal):
    """float64 loops: returns (out [b, s_q, h_q, dv] float64, lse [b, h_q, s_q] float64)."""
    b, s_q, h_q, d = q.shape
    page = k_cache.shape[1]
    h_kv = k_cache.shape[2]
    group = h_q // h_kv
    qd = q.double()
    out = torch.zeros(b, s_q, h_q, head_dim_v, dtype=torch.float64)
    lse = torch.zeros(b, h_q, s_q, dtype=torch.float64)
    for i in range(b):
        L = int(seqlens[i])
        for t in range(s_q):
            n_visible = min(L, max(0, L - s_q + t + 1)) if causal else L
            for h in range(h_q):
                kvh = h // group
                if n_visible == 0:
                    out[i, t, h] = 0.0
                    lse[i, h, t] = math.inf
                    continue
                keys = [k_cache[int(block_table[i, j // page]), j % page, kvh].double() for j in range(n_visible)]
                K = torch.stack(keys)                                   # [n, d]
                scores = [softmax_scale * float(torch.dot(qd[i, t, h], K[j])) for j in range(n_visible)]
                m = max(scores)
                w = [math.exp(s - m) for s in scores]
                total = sum(w)
                lse[i, h, t] = m + math.log(total)
                o = torch.zeros(head_dim_v, dtype=torch.float64)
                for j in range(n_visible):
                    o += (w[j] / total) * K[j, :head_dim_v]
                out[i, t, h] = o
    return out, lse


def check_against_naive(p, causal, scale):
    out, lse = mla_decode_reference(*p.args, DV, scale, causal)
    n_out, n_lse = naive_mla(p.q, p.k_cache, p.block_table, p.seqlens, DV,
                             scale if scale is not None else 576 ** -0.5, causal)
    assert out.shape == (p.q.shape[0], p.q.shape[1], p.q.shape[2], DV) and out.dtype == p.q.dtype
    assert lse.shape == (p.q.shape[0], p.q.shape[2], p.q.shape[1]) and lse.dtype == torch.float32
    if p.q.dtype == torch.float32:
        torch.testing.assert_close(out.double(), n_out, rtol=1e-5, atol=1e-5)
    else:
        assert_out_close(out, n_out.to(p.q.dtype))
    assert_lse_close(lse, n_lse.float())
    return out, lse


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("s_q", [1, 2, 3])
@pytest.mark.parametrize("page_size,seqlens", [
    (64, [1, 63, 64, 65]),
    (16, [0, 17, 48, 5]),
    (1, [3, 0, 7]),
])
def test_reference_matches_naive(dtype, causal, s_q, page_size, seqlens):
    p = make_problem(seqlens, s_q=s_q, h_q=4, page_size=page_size, dtype=dtype, seed=len(seqlens) + s_q)
    check_against_naive(p, causal, None)


@pytest.mark.parametrize("scale", [0.01, 0.3, None])
def test_reference_softmax_scale(scale):
    p = make_problem([70, 9], s_q=2, h_q=3, page_size=16, dtype=torch.float32, seed=3)
    check_against_naive(p, True, scale)


def test_reference_h_kv_grouping():
    """h_kv = 2: query head h uses KV head h // (h_q // h_kv)."""
    p = make_problem([33, 64, 5], s_q=2, h_q=6, h_kv=2, page_size=16, dtype=torch.float32, seed=5)
    check_against_naive(p, True, None)
    # Equivalently: each KV head's query heads alone against that KV head's cache.
    out, lse = mla_decode_reference(*p.args, DV, None, True)
    for kvh in range(2):
        heads = slice(3 * kvh, 3 * kvh + 3)
        o1, l1 = mla_decode_reference(p.q[:, :, heads].contiguous(), p.k_cache[:, :, kvh:kvh + 1].contiguous(),
                                      p.block_table, p.cache_seqlens, DV, None, True)
        torch.testing.assert_close(out[:, :, heads], o1)
        torch.testing.assert_close(lse[:, heads], l1)


@pytest.mark.parametrize("s_q", [2, 3, 4])
def test_causal_is_prefix_attention(s_q):
    """Causal token t of a length-L sequence == non-causal single-token attention over keys 0..L-s_q+t."""
    L = 40
    p = make_problem([L], s_q=s_q, h_q=4, page_size=16, dtype=torch.float32, seed=7)
    out, lse = mla_decode_reference(*p.args, DV, None, True)
    for t in range(s_q):
        prefix = torch.tensor([L - s_q + t + 1], dtype=torch.int32)
        o_t, l_t = mla_decode_reference(p.q[:, t:t + 1].contiguous(), p.k_cache, p.block_table, prefix, DV, None,
                                        False)
        torch.testing.assert_close(out[:, t], o_t[:, 0])
        torch.testing.assert_close(lse[:, :, t], l_t[:, :, 0])
    # And the last token sees every key, so it equals the non-causal result for that token.
    o_nc, l_nc = mla_decode_reference(*p.args, DV, None, False)
    torch.testing.assert_close(out[:, -1], o_nc[:, -1])
    assert not torch.allclose(out[:, 0], o_nc[:, 0])


def test_rows_with_no_visible_key():
    """L=1, s_q=3, causal: tokens 0 and 1 see no key (out 0, lse +inf); a length-0 sequence sees none at all."""
    p = make_problem([1, 0], s_q=3, h_q=2, page_size=16, dtype=torch.bfloat16, seed=11)
    out, lse = mla_decode_reference(*p.args, DV, None, True)
    assert torch.equal(out[0, :2], torch.zeros_like(out[0, :2]))
    assert torch.isposinf(lse[0, :, :2]).all()
    assert torch.isfinite(lse[0, :, 2]).all()
    # token 2 sees only key 0: softmax over one key returns that key's V exactly (up to the output cast)
    v0 = p.k_cache[p.block_table[0, 0], 0, 0, :DV]
    torch.testing.assert_close(out[0, 2], v0.expand(2, DV))
    for causal in (False, True):
        out, lse = mla_decode_reference(*p.args, DV, None, causal)
        assert torch.equal(out[1], torch.zeros_like(out[1]))
        assert torch.isposinf(lse[1]).all()
    check_against_naive(p, True, None)


@pytest.mark.parametrize("causal", [False, True])
def test_nan_past_end_does_not_leak(causal):
    p = make_problem([5, 64, 65, 0, 31], s_q=2, h_q=4, page_size=16, dtype=torch.bfloat16, seed=13)
    assert p.k_cache.isnan().any()            # the builder did poison the cache
    out, lse = mla_decode_reference(*p.args, DV, None, causal)
    assert not out.isnan().any() and not lse.isnan().any()
    clean = torch.nan_to_num(p.k_cache, nan=0.0)
    out2, lse2 = mla_decode_reference(p.q, clean, p.block_table, p.cache_seqlens, DV, None, causal)
    assert torch.equal(out, out2) and torch.equal(lse, lse2)


def test_page_layout_does_not_matter():
    """Same keys, different page size / shuffling: same result (up to float32 summation order)."""
    a = make_problem([50, 3], s_q=1, h_q=2, page_size=16, dtype=torch.float32, seed=17)
    keys = [torch.stack([a.k_cache[a.block_table[i, j // 16], j % 16] for j in range(L)])
            for i, L in enumerate(a.seqlens)]
    # pack the same keys contiguously with page size 1 in reverse page order
    flat = torch.cat(keys)                                   # [sum L, 1, d]
    n = flat.shape[0]
    kc = flat.flip(0)[:, None]                               # [n, 1, 1, d]
    bt = torch.full((2, 64), 2147480000, dtype=torch.int32)
    bt[0, :50] = torch.arange(n - 1, n - 51, -1, dtype=torch.int32)
    bt[1, :3] = torch.arange(n - 51, n - 54, -1, dtype=torch.int32)
    o1, l1 = mla_decode_reference(*a.args, DV)
    o2, l2 = mla_decode_reference(a.q, kc, bt, a.cache_seqlens, DV)
    torch.testing.assert_close(o1, o2)
    torch.testing.assert_close(l1, l2)
