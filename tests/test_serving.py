"""Serving-engine concerns on CPU: custom-op registration (opcheck, torch.compile fullgraph), padded
batches, checking mode, warm-up helper. GPU-only parts (CUDA graphs, streams, devices) are in
tests/test_gpu_serving.py."""
import pytest
import torch

import flash_mla
import flash_mla.interface
from flash_mla import flash_mla_with_kvcache, get_mla_metadata
from flash_mla.reference import mla_decode_reference
from conftest import DV, make_problem, needs_interpreter

CPU_BACKENDS = ["reference", pytest.param("triton", marks=needs_interpreter)]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_opcheck_mla_decode(backend):
    p = make_problem([70, 1, 129], s_q=2, h_q=16, page_size=16)
    meta, splits = get_mla_metadata(p.cache_seqlens, 2 * 16, 1, num_sm_parts=4)
    torch.library.opcheck(torch.ops.flash_mla.mla_decode.default,
                          (*p.args, DV, meta, splits, 576 ** -0.5, True, backend),
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))


def test_opcheck_get_mla_metadata():
    torch.library.opcheck(torch.ops.flash_mla.get_mla_metadata.default,
                          (torch.tensor([5, 300, 0, 64], dtype=torch.int32), 6),
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_torch_compile_fullgraph(backend):
    """A decode step (metadata + two layers) compiles without graph breaks and matches eager."""
    p = make_problem([200, 65, 3], s_q=1, h_q=16, page_size=64)
    k2 = torch.nan_to_num(p.k_cache) * 0.5

    def step(q, k1, k2, block_table, seqlens):
        meta, splits = get_mla_metadata(seqlens, q.shape[1] * q.shape[2], 1, num_sm_parts=3)
        o1, lse1 = flash_mla_with_kvcache(q, k1, block_table, seqlens, DV, meta, splits, causal=True,
                                          backend=backend)
        o2, lse2 = flash_mla_with_kvcache(o1.repeat(1, 1, 1, 2)[..., :576].contiguous(), k2, block_table,
                                          seqlens, DV, meta, splits, causal=True, backend=backend)
        return o2, lse1 + lse2

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    args = (p.q, p.k_cache, k2, p.block_table, p.cache_seqlens)
    got, want = compiled(*args), step(*args)
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1], want[1])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("s_q,causal", [(1, False), (2, True)])
def test_padded_batch(backend, s_q, causal):
    """cache_seqlens == 0 entries give out = 0, lse = +inf, and leave the other entries as they were."""
    p = make_problem([150, 0, 33, 0], s_q=s_q, h_q=16, page_size=16)
    meta, splits = get_mla_metadata(p.cache_seqlens, s_q * 16, 1, num_sm_parts=3)
    out, lse = flash_mla_with_kvcache(*p.args, DV, meta, splits, causal=causal, backend=backend)
    pad = torch.tensor([1, 3])
    assert torch.equal(out[pad].float(), torch.zeros_like(out[pad].float()))
    assert torch.isposinf(lse[pad]).all()
    real = torch.tensor([0, 2])
    sub_meta, sub_splits = get_mla_metadata(p.cache_seqlens[real], s_q * 16, 1, num_sm_parts=3)
    sub_out, sub_lse = flash_mla_with_kvcache(p.q[real], p.k_cache, p.block_table[real], p.cache_seqlens[real],
                                              DV, sub_meta, sub_splits, causal=causal, backend=backend)
    torch.testing.assert_close(out[real], sub_out)
    torch.testing.assert_close(lse[real], sub_lse)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_rows_without_keys(backend):
    """Causal with s_q > L: the first s_q - L query tokens see no key -> out 0, lse +inf."""
    p = make_problem([2, 40], s_q=4, h_q=16, page_size=16)
    meta, splits = get_mla_metadata(p.cache_seqlens, 4 * 16, 1, num_sm_parts=2)
    out, lse = flash_mla_with_kvcache(*p.args, DV, meta, splits, causal=True, backend=backend)
    assert torch.isposinf(lse[0, :, :2]).all() and torch.isfinite(lse[0, :, 2:]).all()
    assert (out[0, :2] == 0).all()
    ref_out, ref_lse = mla_decode_reference(*p.args, DV, None, True)
    torch.testing.assert_close(out.float(), ref_out.float(), atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(lse, ref_lse)


def _checked(p, meta, splits, **kw):
    return flash_mla_with_kvcache(*p.args, DV, meta, splits, causal=True, backend="reference", check=True, **kw)


def test_check_mode_accepts_good_input():
    p = make_problem([100, 64, 1], page_size=64)
    meta, splits = get_mla_metadata(p.cache_seqlens, 16, 1)
    _checked(p, meta, splits)


def test_check_mode_bad_page_id():
    p = make_problem([100, 64, 1], page_size=64)
    meta, splits = get_mla_metadata(p.cache_seqlens, 16, 1)
    p.block_table[0, 1] = p.k_cache.shape[0]          # one past the last page, and sequence 0 needs it
    with pytest.raises(ValueError, match=r"block_table\[0, 1\]"):
        _checked(p, meta, splits)
    p.block_table[0, 1] = -3
    with pytest.raises(ValueError, match=r"block_table\[0, 1\] = -3"):
        _checked(p, meta, splits)


def test_check_mode_seqlens_over_capacity_and_negative():
    p = make_problem([100, 64], page_size=64, extra_cols=0)
    meta, splits = get_mla_metadata(p.cache_seqlens, 16, 1)
    p.cache_seqlens[1] = p.block_table.shape[1] * 64 + 1
    with pytest.raises(ValueError, match=r"cache_seqlens\[1\].*capacity"):
        _checked(p, meta, splits)
    p.cache_seqlens[1] = -1
    with pytest.raises(ValueError, match=r"cache_seqlens\[1\] = -1"):
        _checked(p, meta, splits)


def test_check_mode_stale_metadata(monkeypatch):
    p = make_problem([100, 64, 500], page_size=64)
    meta, splits = get_mla_metadata(torch.tensor([1, 1, 1], dtype=torch.int32), 16, 1, num_sm_parts=4)
    with pytest.raises(ValueError, match="tile_scheduler_metadata"):
        _checked(p, meta, splits)
    monkeypatch.setenv("FLASH_MLA_CHECK", "1")      # the env var switches it on too
    with pytest.raises(ValueError, match="tile_scheduler_metadata"):
        flash_mla_with_kvcache(*p.args, DV, meta, splits, backend="reference")


def test_warmup_runs_each_variant(monkeypatch):
    seen = []
    real = flash_mla.interface._mla_decode_impl

    def spy(q, *args):
        seen.append((q.shape[1], q.shape[2], q.dtype))
        return real(q, *args)

    monkeypatch.setattr(flash_mla.interface, "_mla_decode_impl", spy)
    timings = flash_mla.warmup(num_heads_q=[16, 32], seq_len_q=[1, 2], dtype=torch.float16, device="cpu")
    assert sorted(timings) == [(16, 1), (16, 2), (32, 1), (32, 2)]
    assert sorted(seen) == sorted((s, h, torch.float16) for h in (16, 32) for s in (1, 2))
