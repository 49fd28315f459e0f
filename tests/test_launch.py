"""CachedKernel's TMA-descriptor fast path (flash_mla/launch.py), checked against Triton's own launcher (its
``CudaLauncher.__call__`` and tensor-descriptor wrapper) with a stand-in encoder: the real one needs a GPU driver."""
from types import SimpleNamespace

import pytest
import torch

driver = pytest.importorskip("triton.backends.nvidia.driver")

import flash_mla.launch as L  # noqa: E402
from flash_mla.launch import CachedKernel, DescriptorCache, _desc_launcher, expand_descriptors  # noqa: E402

SIG = {"q_ptr": "*bf16", "k_desc": "tensordesc<bf16[64, 64],L>", "n": "i32", "CAUSAL": "constexpr",
       "v_desc": "tensordesc<bf16[4, 64, 64],L3>", "out_ptr": "*bf16"}
METAS = [dict(swizzle=3, elem_type=10, block_size=[64, 64]), dict(swizzle=3, elem_type=10, block_size=[4, 64, 64])]


def fake_encode(calls):
    def encode(desc, meta):
        calls.append((desc.base.data_ptr(), tuple(desc.shape), meta["swizzle"]))
        return [("map", desc.base.data_ptr(), tuple(desc.block_shape), meta["swizzle"]), *desc.shape, *desc.strides]
    return encode


def desc(t, shape, strides, block):
    return SimpleNamespace(base=t, shape=list(shape), strides=list(strides), block_shape=list(block), padding="zero")


def cache_descs():
    cache = torch.zeros(4, 64, 1, 576)
    return (desc(cache, [256, 576], [576, 1], [64, 64]), desc(cache, [8, 256, 64], [64, 576, 1], [4, 64, 64]))


def test_cached_kernel_passes_what_tritons_launcher_passes(monkeypatch):
    """The whole CachedKernel launch, fast path on and off: the raw launcher must get identical arguments."""
    calls, seen = [], []
    monkeypatch.setattr(driver, "make_tensordesc_arg", fake_encode(calls))
    raw = lambda *a: seen.append(a)   # noqa: E731
    Run = type("Run", (SimpleNamespace,), {"__call__": driver.CudaLauncher.__call__})   # Triton's __call__
    run = Run(launch=driver.wrap_handle_tensordesc(raw, SIG, METAS), launch_cooperative_grid=False,
              launch_pdl=True, global_scratch_size=0, global_scratch_align=1, profile_scratch_size=0,
              profile_scratch_align=1)
    kernel = SimpleNamespace(run=run, function=1234, packed_metadata=("meta",),
                             launch_metadata=lambda grid, stream, *args: None)
    monkeypatch.setattr(L, "driver", SimpleNamespace(active=SimpleNamespace(get_current_device=lambda: 0,
                                                                            get_current_stream=lambda dev: 77)))
    ck = CachedKernel(SimpleNamespace(arg_names=list(SIG)))
    ck.compiled["key"] = kernel
    ck.fast["key"] = _desc_launcher(run)
    assert ck.fast["key"] is not None
    k, v = cache_descs()
    for flag in (False, True, True):
        monkeypatch.setattr(L, "FAST_DESCRIPTORS", flag)
        ck("key", (3, 1, 5), "q", k, 7, out_ptr="out", CAUSAL=True, v_desc=v)
    assert seen[0] == seen[1] == seen[2]
    assert seen[0][:5] == (3, 1, 5, 77, 1234) and seen[0][5:7] == (False, True)
    assert len(calls) == 2 + 2                  # Triton's path encodes both; the fast path once, then from cache


def test_expansion_matches_tritons_wrapper(monkeypatch):
    calls = []
    monkeypatch.setattr(driver, "make_tensordesc_arg", fake_encode(calls))
    seen = {}
    run = SimpleNamespace(launch=driver.wrap_handle_tensordesc(lambda *a: seen.setdefault("args", a), SIG, METAS))
    raw, positions, metas, keys = _desc_launcher(run)
    assert positions == [1, 4] and metas == METAS
    k, v = cache_descs()
    args = ("q", k, 7, True, v, "out")
    base = tuple(range(driver._BASE_ARGS_FORMAT_LEN))
    run.launch(*base, *args)
    dc = DescriptorCache(fake_encode(calls))
    assert tuple(expand_descriptors(args, positions, metas, keys, dc)) == seen["args"][len(base):]


def test_cache_key_is_the_geometry_and_the_metadata():
    calls = []
    dc = DescriptorCache(fake_encode(calls), size=2)
    a, b = torch.zeros(2, 64, 1, 576), torch.zeros(3, 64, 1, 576)
    meta = METAS[0]
    key = ("swizzle", 3)
    first = dc.get(desc(a, [128, 576], [576, 1], [64, 64]), key, meta)
    assert dc.get(desc(a, [128, 576], [576, 1], [64, 64]), key, meta) is first
    assert len(calls) == 1
    assert dc.get(desc(a, [128, 576], [576, 1], [64, 64]), ("swizzle", 2), dict(meta, swizzle=2))[0][3] == 2
    assert dc.get(desc(b, [192, 576], [576, 1], [64, 64]), key, meta)[0][1] == b.data_ptr()     # new base
    assert dc.get(desc(a, [128, 576], [576, 1], [32, 64]), key, meta)[0][2] == (32, 64)         # new box
    assert len(calls) == 4 and len(dc.entries) == 2                                             # LRU-bounded


def test_launcher_not_of_tritons_shape_is_not_bypassed(monkeypatch):
    run = SimpleNamespace(launch=driver.wrap_handle_tensordesc(lambda *a: a, {"x": "*fp32", "n": "i32"}, None))
    assert _desc_launcher(run) is None                                  # no descriptors: Triton's launcher as is
    run = SimpleNamespace(launch=driver.wrap_handle_tensordesc(lambda *a: a, SIG, METAS))
    monkeypatch.setattr(driver, "_BASE_ARGS_FORMAT", "iiiKKppOOOOOOO")
    assert _desc_launcher(run) is None                                  # other base arguments: no bypass
