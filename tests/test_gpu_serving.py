"""Serving on the GPU: CUDA graphs, streams, non-default devices, torch.compile, padded batches, checking
mode (skipped without CUDA). Runs on every backend that applies here (hopper where it does, and triton)."""
import pytest
import torch

from flash_mla import flash_mla_with_kvcache, get_mla_metadata, resolve_backend
from flash_mla.reference import mla_decode_reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DV = 512


def problem(b=8, s_q=1, h_q=64, max_len=3000, page=64, device="cuda", seed=0, dtype=torch.bfloat16):
    gen = torch.Generator(device=device).manual_seed(seed)
    width = -(-max_len // page) + 1
    nblk = b * width
    seqlens = torch.randint(1, max_len + 1, (b,), generator=gen, device=device, dtype=torch.int32)
    bt = torch.randperm(nblk, generator=gen, device=device).int().reshape(b, width)
    kc = torch.randn(nblk, page, 1, 576, generator=gen, device=device, dtype=dtype)
    q = torch.randn(b, s_q, h_q, 576, generator=gen, device=device, dtype=dtype)
    return q, kc, bt, seqlens


def backends(q, kc):
    return ["triton"] + (["hopper"] if resolve_backend(q, kc, DV) == "hopper" else [])


def check(out, lse, q, kc, bt, seqlens, causal):
    ref_out, ref_lse = mla_decode_reference(q, kc, bt, seqlens, DV, None, causal)
    torch.testing.assert_close(lse, ref_lse, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(out.float(), ref_out.float(), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("s_q", [1, 2])
def test_cuda_graph_capture_and_replay(s_q):
    q, kc, bt, seqlens = problem(s_q=s_q)
    for backend in backends(q, kc):
        def step():
            meta, splits = get_mla_metadata(seqlens, s_q * q.shape[2], 1)
            return flash_mla_with_kvcache(q, kc, bt, seqlens, DV, meta, splits, causal=True, backend=backend)

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):          # warm up (compiles) outside the capture
            step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out, lse = step()
        for seed in (1, 2, 3):                  # new contents, same shapes
            nq, nkc, nbt, nsl = problem(s_q=s_q, seed=seed)
            q.copy_(nq), kc.copy_(nkc), bt.copy_(nbt), seqlens.copy_(nsl)
            graph.replay()
            torch.cuda.synchronize()
            check(out, lse, q, kc, bt, seqlens, True)


def test_non_default_stream():
    """The kernels run on the current stream: inputs written on a busy side stream are seen correctly."""
    q, kc, bt, seqlens = problem()
    meta, splits = get_mla_metadata(seqlens, q.shape[1] * q.shape[2], 1)
    for backend in backends(q, kc):
        flash_mla_with_kvcache(q, kc, bt, seqlens, DV, meta, splits, backend=backend)   # compile first
        torch.cuda.synchronize()
        s = torch.cuda.Stream()
        q2 = torch.empty_like(q)
        with torch.cuda.stream(s):
            torch.cuda._sleep(50_000_000)       # keep the stream busy so a wrong-stream launch would race
            q2.copy_(q * 2)
            out, lse = flash_mla_with_kvcache(q2, kc, bt, seqlens, DV, meta, splits, backend=backend)
        s.synchronize()
        check(out, lse, q2, kc, bt, seqlens, False)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_second_device():
    with torch.cuda.device(0):                  # current device stays cuda:0
        q, kc, bt, seqlens = problem(device="cuda:1")
        meta, splits = get_mla_metadata(seqlens, q.shape[1] * q.shape[2], 1)
        assert meta.device == torch.device("cuda:1")
        for backend in backends(q, kc):
            out, lse = flash_mla_with_kvcache(q, kc, bt, seqlens, DV, meta, splits, backend=backend)
            assert out.device == torch.device("cuda:1")
            check(out, lse, q, kc, bt, seqlens, False)


def test_torch_compile_inductor_fullgraph():
    q, kc, bt, seqlens = problem(s_q=2)

    def step(q, kc, bt, seqlens):
        meta, splits = get_mla_metadata(seqlens, q.shape[1] * q.shape[2], 1)
        out, lse = flash_mla_with_kvcache(q * 0.5, kc, bt, seqlens, DV, meta, splits, causal=True)
        return out.float().sum(-1), lse

    torch._dynamo.reset()
    got = torch.compile(step, fullgraph=True)(q, kc, bt, seqlens)
    want = step(q, kc, bt, seqlens)
    torch.testing.assert_close(got[0], want[0], atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(got[1], want[1])


def test_padded_batch_gpu():
    q, kc, bt, seqlens = problem(b=16, s_q=2)
    seqlens[::3] = 0
    meta, splits = get_mla_metadata(seqlens, q.shape[1] * q.shape[2], 1)
    for backend in backends(q, kc):
        out, lse = flash_mla_with_kvcache(q, kc, bt, seqlens, DV, meta, splits, causal=True, backend=backend)
        assert (out[::3] == 0).all() and torch.isposinf(lse[::3]).all()
        check(out, lse, q, kc, bt, seqlens, True)


def test_check_mode_gpu():
    q, kc, bt, seqlens = problem()
    meta, splits = get_mla_metadata(seqlens, q.shape[1] * q.shape[2], 1)
    bt[2, 0] = 10 ** 9
    with pytest.raises(ValueError, match=r"block_table\[2, 0\]"):
        flash_mla_with_kvcache(q, kc, bt, seqlens, DV, meta, splits, check=True)


def test_flashmla_readme_snippet():
    """FlashMLA's README usage, unchanged, over a few layers sharing one metadata."""
    b, s_q, h_q, h_kv, dv, num_layers = 4, 2, 128, 1, 512, 3
    q, kc, block_table, cache_seqlens = problem(b=b, s_q=s_q, h_q=h_q)
    from flash_mla import get_mla_metadata, flash_mla_with_kvcache

    tile_scheduler_metadata, num_splits = get_mla_metadata(cache_seqlens, s_q * h_q // h_kv, h_kv)

    for i in range(num_layers):
        q_i, kvcache_i = q * (i + 1), kc
        o_i, lse_i = flash_mla_with_kvcache(
            q_i, kvcache_i, block_table, cache_seqlens, dv,
            tile_scheduler_metadata, num_splits, causal=True,
        )
        check(o_i, lse_i, q_i, kvcache_i, block_table, cache_seqlens, True)
