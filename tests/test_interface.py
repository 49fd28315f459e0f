"""Public API: argument validation, backend resolution/dispatch, FlashMLA's README usage, defaults."""
import pytest
import torch

import flash_mla
import flash_mla.interface as iface
from conftest import DV, assert_matches_reference, make_problem, needs_interpreter
from flash_mla import flash_mla_with_kvcache, get_mla_metadata, resolve_backend
from flash_mla.reference import mla_decode_reference


@pytest.fixture
def no_backend_env(monkeypatch):
    monkeypatch.delenv("FLASH_MLA_BACKEND", raising=False)


def base_args(dtype=torch.bfloat16, s_q=1, h_q=16, h_kv=1, seqlens=(65, 3)):
    p = make_problem(list(seqlens), s_q=s_q, h_q=h_q, h_kv=h_kv, page_size=64, dtype=dtype, seed=1)
    meta, ns = get_mla_metadata(p.cache_seqlens, s_q * h_q // h_kv, h_kv, num_sm_parts=2)
    return dict(q=p.q, k_cache=p.k_cache, block_table=p.block_table, cache_seqlens=p.cache_seqlens,
                head_dim_v=DV, tile_scheduler_metadata=meta, num_splits=ns)


def strided_last(t):
    """Same values as ``t`` with a last-dim stride of 2."""
    big = torch.zeros(t.shape[:-1] + (2 * t.shape[-1],), dtype=t.dtype)
    v = big[..., ::2]
    v.copy_(t)
    assert v.stride(-1) == 2
    return v


META = torch.device("meta")

BAD = {
    # name: (mutation of the keyword arguments, exception type, regex the message must match)
    "q_not_tensor": (lambda a: a.update(q=a["q"].tolist()), TypeError, r"^q must be a torch\.Tensor"),
    "q_fp32": (lambda a: a.update(q=a["q"].float()), TypeError, r"^q must have dtype"),
    "q_int": (lambda a: a.update(q=a["q"].to(torch.int32)), TypeError, r"^q must have dtype"),
    "q_rank3": (lambda a: a.update(q=a["q"][:, 0]), ValueError, r"^q must have 4 dimensions"),
    "q_d512": (lambda a: a.update(q=a["q"][..., :512].contiguous(), k_cache=a["k_cache"][..., :512].contiguous()),
               ValueError, r"^q: head dim d must be 576"),
    "q_last_dim_strided": (lambda a: a.update(q=strided_last(a["q"])), ValueError,
                           r"^q: the last dimension must be contiguous"),
    "q_empty_batch": (lambda a: a.update(q=a["q"][:0]), ValueError, r"^q: batch, s_q and h_q must be positive"),
    "k_dtype_mismatch": (lambda a: a.update(k_cache=a["k_cache"].half()), TypeError, r"^k_cache must have dtype"),
    "k_rank3": (lambda a: a.update(k_cache=a["k_cache"][:, :, 0]), ValueError, r"^k_cache must have 4 dimensions"),
    "k_device": (lambda a: a.update(k_cache=a["k_cache"].to(META)), ValueError, r"^k_cache is on meta"),
    "k_d_mismatch": (lambda a: a.update(k_cache=a["k_cache"][..., :512].contiguous()), ValueError,
                     r"^k_cache: last dim must equal"),
    "k_last_dim_strided": (lambda a: a.update(k_cache=strided_last(a["k_cache"])), ValueError,
                           r"^k_cache: the last dimension must be contiguous"),
    "h_q_not_multiple_of_h_kv": (lambda a: a.update(k_cache=a["k_cache"].expand(-1, -1, 3, -1).contiguous()),
                                 ValueError, r"h_q=16 must be a multiple of k_cache's h_kv=3"),
    "head_dim_v_576": (lambda a: a.update(head_dim_v=576), ValueError, r"^head_dim_v must be 512"),
    "head_dim_v_128": (lambda a: a.update(head_dim_v=128), ValueError, r"^head_dim_v must be 512"),
    "bt_int64": (lambda a: a.update(block_table=a["block_table"].long()), TypeError, r"^block_table must have dtype"),
    "bt_rank1": (lambda a: a.update(block_table=a["block_table"][0]), ValueError,
                 r"^block_table must have 2 dimensions"),
    "bt_batch": (lambda a: a.update(block_table=a["block_table"][:1]), ValueError, r"^block_table: first dim"),
    "bt_device": (lambda a: a.update(block_table=a["block_table"].to(META)), ValueError, r"^block_table is on meta"),
    "bt_last_dim_strided": (lambda a: a.update(block_table=strided_last(a["block_table"])), ValueError,
                            r"^block_table: the last dimension must be contiguous"),
    "seqlens_int64": (lambda a: a.update(cache_seqlens=a["cache_seqlens"].long()), TypeError,
                      r"^cache_seqlens must have dtype"),
    "seqlens_batch": (lambda a: a.update(cache_seqlens=torch.cat([a["cache_seqlens"], a["cache_seqlens"]])),
                      ValueError, r"^cache_seqlens: length must be the batch size"),
    "seqlens_rank2": (lambda a: a.update(cache_seqlens=a["cache_seqlens"][None]), ValueError,
                      r"^cache_seqlens must have 1 dimensions"),
    "seqlens_noncontig": (lambda a: a.update(cache_seqlens=torch.stack([a["cache_seqlens"]] * 2, 1)[:, 0]),
                          ValueError, r"^cache_seqlens must be contiguous"),
    "meta_shape": (lambda a: a.update(tile_scheduler_metadata=a["tile_scheduler_metadata"][:, :7].contiguous()),
                   ValueError, r"^tile_scheduler_metadata must be a contiguous \[num_sm_parts, 8\]"),
    "meta_dtype": (lambda a: a.update(tile_scheduler_metadata=a["tile_scheduler_metadata"].long()), TypeError,
                   r"^tile_scheduler_metadata must have dtype"),
    "meta_rank": (lambda a: a.update(tile_scheduler_metadata=a["tile_scheduler_metadata"].flatten()), ValueError,
                  r"^tile_scheduler_metadata must have 2 dimensions"),
    # CUDA grids: the split merge puts 4 query rows per program on grid z, the kernels the parts (both <= 65535)
    "rows_per_kv_head": (lambda a: a.update(q=a["q"][:, :, :1].expand(-1, 2, 131071, -1)), ValueError,
                         r"^q: s_q \* h_q / h_kv = 262142 query rows per KV head; at most 262140"),
    "meta_parts": (lambda a: a.update(tile_scheduler_metadata=torch.zeros(65536, 8, dtype=torch.int32)), ValueError,
                   r"^tile_scheduler_metadata: at most 65535 parts"),
    "num_splits_shape": (lambda a: a.update(num_splits=a["num_splits"][:-1].contiguous()), ValueError,
                         r"^num_splits must be a contiguous \[batch \+ 1\]"),
    "num_splits_dtype": (lambda a: a.update(num_splits=a["num_splits"].long()), TypeError,
                         r"^num_splits must have dtype"),
    "num_splits_device": (lambda a: a.update(num_splits=a["num_splits"].to(META)), ValueError,
                          r"^num_splits is on meta"),
}


@pytest.mark.parametrize("backend", ["reference", "triton", None])
@pytest.mark.parametrize("case", list(BAD))
def test_validation_errors_name_the_argument(no_backend_env, case, backend):
    args = base_args()
    mutate, exc, match = BAD[case]
    mutate(args)
    with pytest.raises(exc, match=match):
        flash_mla_with_kvcache(**args, backend=backend)


def test_valid_base_args_pass(no_backend_env):
    """The validation cases above start from arguments that are accepted."""
    out, lse = flash_mla_with_kvcache(**base_args(), backend="reference")
    assert out.shape == (2, 1, 16, DV) and out.dtype == torch.bfloat16
    assert lse.shape == (2, 16, 1) and lse.dtype == torch.float32


@pytest.mark.parametrize("backend", ["cuda", "Triton", "gluon"])
def test_unknown_backend(monkeypatch, backend):
    args = base_args()
    monkeypatch.delenv("FLASH_MLA_BACKEND", raising=False)
    with pytest.raises(ValueError, match="backend must be one of"):
        flash_mla_with_kvcache(**args, backend=backend)
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend(args["q"], args["k_cache"], DV, backend)


def test_hopper_backend_refused_on_cpu(no_backend_env):
    with pytest.raises(ValueError, match="hopper"):
        flash_mla_with_kvcache(**base_args(), backend="hopper")


def test_backend_resolution_on_cpu(monkeypatch, no_backend_env):
    a = base_args()
    q, k = a["q"], a["k_cache"]
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert resolve_backend(q, k, DV) == "reference"
    assert resolve_backend(q, k, DV, "auto") == "reference"
    assert resolve_backend(q, k, DV, "reference") == "reference"
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        resolve_backend(q, k, DV, "triton")
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        flash_mla_with_kvcache(**a, backend="triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert resolve_backend(q, k, DV) == "triton"
    assert resolve_backend(q, k, DV, "triton") == "triton"
    assert resolve_backend(q, k, DV, "reference") == "reference"


def test_backend_env_var(monkeypatch):
    a = base_args()
    q, k = a["q"], a["k_cache"]
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("FLASH_MLA_BACKEND", "reference")
    assert resolve_backend(q, k, DV) == "reference"
    assert resolve_backend(q, k, DV, "triton") == "triton"      # an explicit argument beats the env var
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setenv("FLASH_MLA_BACKEND", "triton")
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        resolve_backend(q, k, DV)
    monkeypatch.setenv("FLASH_MLA_BACKEND", "bogus")
    with pytest.raises(ValueError, match="backend must be one of"):
        flash_mla_with_kvcache(**a)


def _forbid(name):
    def f(*args, **kwargs):
        raise AssertionError(f"{name} must not be called")
    return f


def test_dispatch_reference(monkeypatch):
    """The reference backend runs mla_decode_reference (and no Triton kernel), bit-identically."""
    monkeypatch.setattr(iface, "mla_decode_triton", _forbid("mla_decode_triton"))
    monkeypatch.setattr(iface, "combine_splits", _forbid("combine_splits"))
    monkeypatch.setenv("FLASH_MLA_BACKEND", "reference")
    a = base_args(s_q=2)
    out, lse = flash_mla_with_kvcache(**a, causal=True)
    ref_out, ref_lse = mla_decode_reference(a["q"], a["k_cache"], a["block_table"], a["cache_seqlens"], DV,
                                            576 ** -0.5, True)
    assert torch.equal(out, ref_out) and torch.equal(lse, ref_lse)


@needs_interpreter
def test_dispatch_triton(monkeypatch):
    monkeypatch.setattr(iface, "mla_decode_reference", _forbid("mla_decode_reference"))
    monkeypatch.setenv("FLASH_MLA_BACKEND", "triton")
    a = base_args(s_q=2)
    out, lse = flash_mla_with_kvcache(**a, causal=True)
    ref_out, ref_lse = mla_decode_reference(a["q"], a["k_cache"], a["block_table"], a["cache_seqlens"], DV,
                                            None, True)
    assert_matches_reference(out, lse, ref_out, ref_lse)


@pytest.mark.parametrize("backend", ["reference", pytest.param("triton", marks=needs_interpreter)])
def test_readme_usage(monkeypatch, backend):
    """FlashMLA's README snippet, verbatim in its calls: metadata once per step, shared by every layer."""
    monkeypatch.setenv("FLASH_MLA_BACKEND", backend)
    from flash_mla import flash_mla_with_kvcache, get_mla_metadata   # noqa: F811  (as in the README)

    b, s_q, h_q, h_kv, dv, num_layers = 3, 2, 16, 1, 512, 3
    p = make_problem([70, 1, 130], s_q=s_q, h_q=h_q, page_size=64, dtype=torch.bfloat16, seed=100)
    cache_seqlens, block_table = p.cache_seqlens, p.block_table     # shared by every layer
    gen = torch.Generator().manual_seed(0)
    nan = p.k_cache.isnan()
    qs = [torch.randn(p.q.shape, generator=gen).to(p.q.dtype) for _ in range(num_layers)]
    caches = [torch.randn(p.k_cache.shape, generator=gen).to(p.k_cache.dtype).masked_fill(nan, float("nan"))
              for _ in range(num_layers)]

    tile_scheduler_metadata, num_splits = get_mla_metadata(cache_seqlens, s_q * h_q // h_kv, h_kv)

    for i in range(num_layers):
        q_i, kvcache_i = qs[i], caches[i]
        o_i, lse_i = flash_mla_with_kvcache(
            q_i, kvcache_i, block_table, cache_seqlens, dv,
            tile_scheduler_metadata, num_splits, causal=True,
        )
        ref_out, ref_lse = mla_decode_reference(q_i, kvcache_i, block_table, cache_seqlens, dv, None, True)
        assert o_i.shape == (b, s_q, h_q, dv) and lse_i.shape == (b, h_q, s_q)
        assert_matches_reference(o_i, lse_i, ref_out, ref_lse)


@pytest.mark.parametrize("backend", ["reference", pytest.param("triton", marks=needs_interpreter)])
def test_default_softmax_scale(no_backend_env, backend):
    """Default scale = 576 ** -0.5: with a single key, lse == scale * <q, k> exactly (up to fp32 rounding)."""
    p = make_problem([1, 1], s_q=1, h_q=4, page_size=16, dtype=torch.float16, seed=2)
    meta, ns = get_mla_metadata(p.cache_seqlens, 4, 1)
    out, lse = flash_mla_with_kvcache(*p.args, DV, meta, ns, backend=backend)
    k0 = torch.stack([p.k_cache[p.block_table[i, 0], 0, 0] for i in range(2)]).double()   # [b, d]
    dots = torch.einsum("bhd,bd->bh", p.q[:, 0].double(), k0)
    torch.testing.assert_close(lse[:, :, 0].double(), dots * 576 ** -0.5, rtol=1e-5, atol=1e-5)
    out_e, lse_e = flash_mla_with_kvcache(*p.args, DV, meta, ns, softmax_scale=576 ** -0.5, backend=backend)
    assert torch.equal(out, out_e) and torch.equal(lse, lse_e)
    _, lse_other = flash_mla_with_kvcache(*p.args, DV, meta, ns, softmax_scale=0.1, backend=backend)
    torch.testing.assert_close(lse_other[:, :, 0].double(), dots * 0.1, rtol=1e-5, atol=1e-5)


def test_package_exports():
    assert flash_mla.flash_mla_with_kvcache is iface.flash_mla_with_kvcache
    assert flash_mla.get_mla_metadata is iface.get_mla_metadata
    assert isinstance(flash_mla.__version__, str)
