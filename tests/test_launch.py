"""CachedKernel's TMA-descriptor fast path (flash_mla/launch.py), checked against Triton's own launcher wrapper
with a stand-in encoder (the real one needs a GPU driver)."""
from types import SimpleNamespace

import pytest
import torch

driver = pytest.importorskip("triton.backends.nvidia.driver")

from flash_mla.launch import DescriptorCache, _desc_launcher, expand_descriptors  # noqa: E402

SIG = {"q_ptr": "*bf16", "k_desc": "tensordesc<bf16[64, 64],L>", "n": "i32", "CAUSAL": "constexpr",
       "v_desc": "tensordesc<bf16[4, 64, 64],L3>", "out_ptr": "*bf16"}
METAS = [dict(swizzle=3, block_size=[64, 64]), dict(swizzle=3, block_size=[4, 64, 64])]


def fake_encode(calls):
    def encode(desc, meta):
        calls.append((desc.base.data_ptr(), tuple(desc.shape), meta["swizzle"]))
        return [("map", desc.base.data_ptr(), tuple(desc.block_shape), meta["swizzle"]), *desc.shape, *desc.strides]
    return encode


def desc(t, shape, strides, block):
    return SimpleNamespace(base=t, shape=list(shape), strides=list(strides), block_shape=list(block), padding="zero")


def test_fast_path_passes_what_tritons_wrapper_passes(monkeypatch):
    calls = []
    monkeypatch.setattr(driver, "make_tensordesc_arg", fake_encode(calls))
    seen = {}
    run = SimpleNamespace(launch=driver.wrap_handle_tensordesc(lambda *a: seen.setdefault("args", a), SIG, METAS))
    raw, positions, metas = _desc_launcher(run)
    assert positions == [1, 4] and metas == METAS

    cache = torch.zeros(4, 64, 1, 576)
    k = desc(cache, [256, 576], [576, 1], [64, 64])
    v = desc(cache, [8, 256, 64], [64, 576, 1], [4, 64, 64])
    args = ("q", k, 7, True, v, "out")
    base = tuple(range(driver._BASE_ARGS_FORMAT_LEN))
    run.launch(*base, *args)                                  # Triton's wrapper: encodes both descriptors
    want = seen.pop("args")
    assert want[:len(base)] == base
    dc = DescriptorCache(fake_encode(calls))
    got = expand_descriptors(args, positions, metas, dc)
    assert tuple(got) == want[len(base):]
    n = len(calls)
    assert tuple(expand_descriptors(args, positions, metas, dc)) == want[len(base):]
    assert len(calls) == n                                    # second launch: no re-encoding


def test_cache_key_is_the_geometry():
    calls = []
    dc = DescriptorCache(fake_encode(calls), size=2)
    a, b = torch.zeros(2, 64, 1, 576), torch.zeros(3, 64, 1, 576)
    meta = METAS[0]
    first = dc.get(desc(a, [128, 576], [576, 1], [64, 64]), meta)
    assert dc.get(desc(a, [128, 576], [576, 1], [64, 64]), meta) is first
    assert len(calls) == 1
    assert dc.get(desc(b, [192, 576], [576, 1], [64, 64]), meta)[0][1] == b.data_ptr()          # new base
    assert dc.get(desc(a, [128, 576], [576, 1], [32, 64]), meta)[0][2] == (32, 64)              # new box
    assert len(calls) == 3 and len(dc.entries) <= 2                                             # bounded


def test_launcher_without_descriptors_is_not_wrapped():
    run = SimpleNamespace(launch=driver.wrap_handle_tensordesc(lambda *a: a, {"x": "*fp32", "n": "i32"}, None))
    assert _desc_launcher(run) is None
