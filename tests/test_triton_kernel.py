"""The portable Triton split-KV kernel (+ combine), run on CPU through Triton's interpreter, vs the reference.

Inputs come from ``conftest.make_problem``: shuffled pages, a block table wider than needed with out-of-range
entries past each sequence's pages, and NaN in every cache slot past each sequence's end.
"""
import pytest
import torch

import flash_mla.interface as iface
import flash_mla.scheduler as sched
from conftest import DV, SENTINEL_PAGE, assert_matches_reference, make_problem, needs_interpreter
from flash_mla import flash_mla_with_kvcache, get_mla_metadata
from flash_mla.reference import mla_decode_reference

pytestmark = needs_interpreter


def run_triton(q, k_cache, block_table, cache_seqlens, *, causal, parts=None, scale=None):
    h_q, h_kv = q.shape[2], k_cache.shape[2]
    meta, ns = get_mla_metadata(cache_seqlens, q.shape[1] * h_q // h_kv, h_kv, num_sm_parts=parts)
    out, lse = flash_mla_with_kvcache(q, k_cache, block_table, cache_seqlens, DV, meta, ns,
                                      softmax_scale=scale, causal=causal, backend="triton")
    return out, lse, ns


def check(p, *, causal, parts=None, scale=None, q=None, k_cache=None, block_table=None):
    q = p.q if q is None else q
    k_cache = p.k_cache if k_cache is None else k_cache
    block_table = p.block_table if block_table is None else block_table
    out, lse, ns = run_triton(q, k_cache, block_table, p.cache_seqlens, causal=causal, parts=parts, scale=scale)
    ref_out, ref_lse = mla_decode_reference(q, k_cache, block_table, p.cache_seqlens, DV, scale, causal)
    assert_matches_reference(out, lse, ref_out, ref_lse)
    return out, lse, ns


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("s_q", [1, 2, 3])
def test_varlen(dtype, causal, s_q):
    # 1, 63, 64, 65 around the 64-key block; 128 = an exact multiple of the page size; 0 = empty sequence
    p = make_problem([1, 63, 64, 65, 128, 0], s_q=s_q, h_q=16, page_size=64, dtype=dtype, seed=s_q)
    check(p, causal=causal)


@pytest.mark.parametrize("h_q,seqlens", [(1, [65, 3]), (5, [17, 64]), (16, [40, 2]), (128, [5, 40])])
@pytest.mark.parametrize("s_q", [1, 3])
def test_num_heads(h_q, seqlens, s_q):
    p = make_problem(seqlens, s_q=s_q, h_q=h_q, page_size=64, dtype=torch.bfloat16, seed=h_q)
    check(p, causal=True)


@pytest.mark.parametrize("page_size", [1, 16, 64, 128])
@pytest.mark.parametrize("causal", [False, True])
def test_page_sizes(page_size, causal):
    # 128 = a multiple of every page size here; 33 ends mid-page for pages > 1
    p = make_problem([0, 1, 33, 128, 70], s_q=2, h_q=8, page_size=page_size, dtype=torch.bfloat16,
                     seed=page_size)
    check(p, causal=causal)


@pytest.mark.parametrize("parts", [1, 2, 3, 5])
@pytest.mark.parametrize("s_q,h_q", [(1, 16), (2, 16), (3, 4)])
def test_forced_splits(parts, s_q, h_q):
    """Few SM parts and long-ish sequences: sequences are cut across parts and merged by the combine."""
    seqlens = [300, 1200, 0, 64, 1]
    p = make_problem(seqlens, s_q=s_q, h_q=h_q, page_size=16, dtype=torch.bfloat16, seed=parts)
    _, _, ns = check(p, causal=True, parts=parts)
    if parts > 1:
        assert ns[-1].item() > len(seqlens), "no sequence was split: the combine path is not exercised"


def test_more_splits_than_combine_block():
    """One sequence cut into more than 32 pieces (the combine kernel's BLOCK_S) exercises its split loop."""
    p = make_problem([4200, 1], s_q=1, h_q=2, page_size=64, dtype=torch.bfloat16, seed=22)
    _, _, ns = check(p, causal=False, parts=80)
    assert ns[1].item() > 32


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_split_piece_where_rows_see_no_key(dtype, monkeypatch):
    """seqlens [1, 65], 2 parts: sequence 1 is cut at key 64 (FlashMLA's greedy; the whole-sequence layout would put
    both sequences in one part). With s_q=3 causal, tokens 0 and 1 of sequence 1 see no key in its second piece
    (partial lse -inf), and sequence 0's tokens 0, 1 see no key at all (out 0, lse +inf)."""
    monkeypatch.setattr(sched, "WHOLE_SEQUENCES", False)
    p = make_problem([1, 65], s_q=3, h_q=16, page_size=64, dtype=dtype, seed=21)
    meta, ns = get_mla_metadata(p.cache_seqlens, 3 * 16, 1, num_sm_parts=2)
    assert ns.tolist() == [0, 1, 3], "schedule changed: this test no longer splits sequence 1 at key 64"
    out, lse, _ = check(p, causal=True, parts=2)
    assert torch.equal(out[0, :2], torch.zeros_like(out[0, :2]))
    assert torch.isposinf(lse[0, :, :2]).all()


def test_h_kv_2(monkeypatch):
    monkeypatch.setattr(sched, "WHOLE_SEQUENCES", False)   # FlashMLA's greedy splits sequence 2 on 3 parts
    p = make_problem([65, 7, 130], s_q=2, h_q=8, h_kv=2, page_size=16, dtype=torch.bfloat16, seed=4)
    _, _, ns = check(p, causal=True, parts=3)
    assert ns[-1].item() > 3
    check(p, causal=False)


def test_noncontiguous_inputs():
    p = make_problem([700, 1, 0, 65], s_q=2, h_q=16, page_size=16, dtype=torch.bfloat16, seed=8)
    b, s_q, h_q, d = p.q.shape
    big_q = torch.randn(b, s_q + 1, h_q + 3, d + 64).to(p.q.dtype)
    q = big_q[:, 1:, 2:2 + h_q, 32:32 + d]
    q.copy_(p.q)
    assert not q.is_contiguous() and q.stride(-1) == 1
    big_k = torch.full(p.k_cache.shape[:-1] + (d + 64,), float("nan"), dtype=p.k_cache.dtype)
    k_cache = big_k[..., 64:]
    k_cache.copy_(p.k_cache)
    assert not k_cache.is_contiguous() and k_cache.stride(-1) == 1
    big_bt = torch.full((b * 2, p.block_table.shape[1] + 5), SENTINEL_PAGE, dtype=torch.int32)
    block_table = big_bt[::2, 1:1 + p.block_table.shape[1]]
    block_table.copy_(p.block_table)
    assert not block_table.is_contiguous() and block_table.stride(-1) == 1
    out, lse, ns = check(p, causal=True, parts=3, q=q, k_cache=k_cache, block_table=block_table)
    assert ns[-1].item() > 4
    out2, lse2, _ = run_triton(p.q, p.k_cache, p.block_table, p.cache_seqlens, causal=True, parts=3)
    assert torch.equal(out, out2) and torch.equal(lse, lse2)


def test_block_table_much_wider_than_needed():
    p = make_problem([3, 64, 65], s_q=1, h_q=16, page_size=16, dtype=torch.bfloat16, extra_cols=100, seed=9)
    assert (p.block_table == SENTINEL_PAGE).sum() > 200
    check(p, causal=False, parts=2)


class _NaNEmptyTorch:
    """Stands in for the ``torch`` module inside flash_mla.interface: ``empty`` returns NaN-filled tensors."""

    def __init__(self):
        self.calls = 0

    def empty(self, *args, **kwargs):
        self.calls += 1
        t = torch.empty(*args, **kwargs)
        return t.fill_(float("nan"))

    def __getattr__(self, name):
        return getattr(torch, name)


@pytest.mark.parametrize("parts", [None, 2])
@pytest.mark.parametrize("causal", [False, True])
def test_poisoned_outputs_and_workspace(monkeypatch, parts, causal):
    """Every buffer the interface allocates (out, lse, o_accum, lse_accum) starts as NaN: the kernels must
    write every element of out/lse and read only workspace slots they wrote."""
    fake = _NaNEmptyTorch()
    monkeypatch.setattr(iface, "torch", fake)
    monkeypatch.setattr(sched, "WHOLE_SEQUENCES", False)   # parts = 2: FlashMLA's greedy splits sequence 2
    p = make_problem([1, 0, 700, 65], s_q=3, h_q=16, page_size=16, dtype=torch.bfloat16, seed=12)
    out, lse, ns = check(p, causal=causal, parts=parts)
    assert fake.calls >= 4, "the NaN-filling torch.empty was not used by the interface"
    if parts == 2:
        assert ns[-1].item() > 4


@pytest.mark.parametrize("scale", [0.02, 0.3])
def test_custom_softmax_scale(scale):
    p = make_problem([700, 1, 0, 65], s_q=2, h_q=16, page_size=16, dtype=torch.bfloat16, seed=14)
    out, lse, ns = check(p, causal=True, parts=3, scale=scale)
    assert ns[-1].item() > 4
    out_d, lse_d, _ = run_triton(*p.args, causal=True, parts=3)
    assert not torch.equal(lse, lse_d)      # the scale is actually used


def test_default_softmax_scale_is_576_rsqrt():
    p = make_problem([65, 9], s_q=1, h_q=16, page_size=16, dtype=torch.bfloat16, seed=15)
    out_d, lse_d, _ = run_triton(*p.args, causal=False, parts=2)
    out_e, lse_e, _ = run_triton(*p.args, causal=False, parts=2, scale=576 ** -0.5)
    assert torch.equal(out_d, out_e) and torch.equal(lse_d, lse_e)


def test_deterministic(monkeypatch):
    """Bit-identical results run to run, with split sequences (FlashMLA's greedy on 6 parts: 8 pieces)."""
    monkeypatch.setattr(sched, "WHOLE_SEQUENCES", False)
    p = make_problem([300, 65, 1, 0, 129], s_q=2, h_q=16, page_size=16, dtype=torch.bfloat16, seed=16)
    o1, l1, ns = run_triton(*p.args, causal=True, parts=6)
    o2, l2, _ = run_triton(*p.args, causal=True, parts=6)
    assert ns[-1].item() > 5
    assert torch.equal(o1, o2) and torch.equal(l1, l2)


def test_auto_backend_is_triton_when_interpreting():
    """With the interpreter on, the default backend on CPU is triton, and it agrees with the reference."""
    p = make_problem([65, 2], s_q=1, h_q=16, page_size=64, dtype=torch.bfloat16, seed=18)
    meta, ns = get_mla_metadata(p.cache_seqlens, 16, 1)
    out, lse = flash_mla_with_kvcache(*p.args, DV, meta, ns)
    assert iface.resolve_backend(p.q, p.k_cache, DV) == "triton"
    out_t, lse_t, _ = run_triton(*p.args, causal=False)
    assert torch.equal(out, out_t) and torch.equal(lse, lse_t)
