"""GPU correctness over FlashMLA's benchmark matrix (skipped without CUDA).

Every backend that applies on this GPU is compared with the float32 reference using FlashMLA's metric
(1 - cos_sim < 1e-5 on out and lse) plus relative L2 error, on the benchmark's inputs (varlen lengths,
shuffled pages) with NaN written into every cache row past each sequence's end.
"""
import itertools

import pytest
import torch

from flash_mla import flash_mla_with_kvcache, get_mla_metadata, resolve_backend
from flash_mla.bench import Config, cos_diff, make_inputs
from flash_mla.reference import mla_decode_reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

MATRIX = list(itertools.product((4096, 8192), (16, 32, 64, 128), (1, 2), (False, True)))


def protocol_inputs(s_k, h_q, s_q, varlen, dtype):
    """The benchmark's inputs (flash_mla.bench: varlen lengths, shuffled pages, NaN past each end)."""
    inp = make_inputs(Config(s_k, h_q, s_q, varlen), dtype, device="cuda")
    return inp["q"], inp["k_cache"], inp["block_table"], inp["cache_seqlens"]


def assert_close_flashmla(out, lse, ref_out, ref_lse, dtype):
    assert not out.isnan().any() and not lse.isnan().any()
    assert cos_diff(out, ref_out) < 1e-5
    fin = torch.isfinite(ref_lse)     # rows that saw no key (empty sequences): lse = +inf, out = 0
    assert torch.equal(lse[~fin], ref_lse[~fin])
    assert cos_diff(lse[fin], ref_lse[fin]) < 1e-5
    rel = ((out.double() - ref_out.double()).norm() / ref_out.double().norm()).item()
    assert rel < (1e-2 if dtype == torch.bfloat16 else 2e-3), rel
    torch.testing.assert_close(lse, ref_lse, atol=1e-3, rtol=1e-4)


def edge_inputs(lens, s_q, h_q, dtype, page=64, seed=0):
    """Shuffled 64-row pages, NaN in every cache row past each sequence's end, garbage table entries after the
    last page (never valid indices), random q (the hopper_dev correctness cases)."""
    torch.manual_seed(seed)
    b = len(lens)
    seqlens = torch.tensor(lens, dtype=torch.int32, device="cuda")
    max_pages = -(-max(lens) // page) + 2
    nblk = b * max_pages + 3
    kc = torch.randn(nblk, page, 1, 576, dtype=dtype, device="cuda")
    bt = torch.randperm(nblk, device="cuda")[: b * max_pages].int().reshape(b, max_pages)
    for i, L in enumerate(lens):
        used = -(-L // page)
        if used and L % page:
            kc[bt[i, used - 1].long(), L % page:] = float("nan")
        kc[bt[i, used:].long()] = float("nan")
        bt[i, used:] = 2147480000
    q = torch.randn(b, s_q, h_q, 576, dtype=dtype, device="cuda")
    return q, kc, bt, seqlens


def backends_here(q, kc):
    names = ["triton"]
    if resolve_backend(q, kc, 512) == "hopper":
        names.append("hopper")
    return names


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("s_k,h_q,s_q,varlen", MATRIX)
def test_matrix(s_k, h_q, s_q, varlen, dtype):
    q, kc, bt, seqlens = protocol_inputs(s_k, h_q, s_q, varlen, dtype)
    meta, splits = get_mla_metadata(seqlens, s_q * h_q, 1)
    ref_out, ref_lse = mla_decode_reference(q, kc, bt, seqlens, 512, None, causal=True)
    for backend in backends_here(q, kc):
        out, lse = flash_mla_with_kvcache(q, kc, bt, seqlens, 512, meta, splits, causal=True, backend=backend)
        assert_close_flashmla(out, lse, ref_out, ref_lse, dtype)
        out2, lse2 = flash_mla_with_kvcache(q, kc, bt, seqlens, 512, meta, splits, causal=True, backend=backend)
        assert torch.equal(out, out2) and torch.equal(lse, lse2), f"{backend} is not deterministic"


@pytest.mark.parametrize("page", [1, 16, 32, 64, 128])
@pytest.mark.parametrize("s_q,h_q,causal", [(1, 16, False), (2, 64, True), (3, 128, True)])
def test_edge_lengths_pages(page, s_q, h_q, causal):
    """Lengths 0, 1, 63, 64, 65, page multiples and long ones, on every page size, both backends."""
    torch.manual_seed(page + s_q)
    lens = [0, 1, 2, 63, 64, 65, 127, 128, 129, 4 * page, 1000, 3000, 5000, 64 * 37]
    b = len(lens)
    seqlens = torch.tensor(lens, dtype=torch.int32, device="cuda")
    max_pages = -(-max(lens) // page) + 2
    nblk = b * max_pages + 3
    kc = torch.randn(nblk, page, 1, 576, dtype=torch.bfloat16, device="cuda")
    bt = torch.randperm(nblk, device="cuda")[: b * max_pages].int().reshape(b, max_pages)
    for i, L in enumerate(lens):
        used = -(-L // page)
        bt[i, used:] = 2147480000
        if used and L % page:
            kc[bt[i, used - 1].long(), L % page:] = float("nan")
    q = torch.randn(b, s_q, h_q, 640, dtype=torch.bfloat16, device="cuda")[..., 32:608]   # non-contiguous
    meta, splits = get_mla_metadata(seqlens, s_q * h_q, 1)
    ref_out, ref_lse = mla_decode_reference(q, kc, bt, seqlens, 512, None, causal=causal)
    for backend in backends_here(q, kc):
        out, lse = flash_mla_with_kvcache(q, kc, bt, seqlens, 512, meta, splits, causal=causal, backend=backend)
        assert not out.isnan().any(), backend
        torch.testing.assert_close(lse, ref_lse, atol=1e-3, rtol=1e-4)
        torch.testing.assert_close(out.float(), ref_out.float(), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("cfg", ["small", "large"])
@pytest.mark.parametrize("s_k,h_q,s_q,varlen", [(4096, 16, 1, True), (4096, 128, 2, True), (8192, 64, 2, False)])
def test_hopper_lockstep_variants(cfg, s_k, h_q, s_q, varlen):
    """The lock-step kernel (kernel.mla_decode_kernel) stays selectable via launcher.CONFIG_OVERRIDE."""
    q, kc, bt, seqlens = protocol_inputs(s_k, h_q, s_q, varlen, torch.bfloat16)
    if resolve_backend(q, kc, 512) != "hopper":
        pytest.skip("needs the Hopper backend")
    import flash_mla.hopper.launcher as hl
    meta, splits = get_mla_metadata(seqlens, s_q * h_q, 1)
    ref_out, ref_lse = mla_decode_reference(q, kc, bt, seqlens, 512, None, causal=True)
    hl.CONFIG_OVERRIDE = hl.CONFIG_SMALL if cfg == "small" else hl.CONFIG_LARGE
    try:
        out, lse = flash_mla_with_kvcache(q, kc, bt, seqlens, 512, meta, splits, causal=True, backend="hopper")
    finally:
        hl.CONFIG_OVERRIDE = None
    assert_close_flashmla(out, lse, ref_out, ref_lse, torch.bfloat16)


# kernel-id suffix -> the module constants it sets (in ws2_kernel for "ws2-..." ids, ws_kernel for "ws-...")
_VARIANTS = {
    "-cw0": {"CHUNK_WAIT": 0, "OWN": 0},   # (the own-piece refill, on for two row tiles, brings CHUNK_WAIT 4)
    "-mbar": {"NAMED": 0},                 # mbarrier hand-offs
    "-mnamed": {"NAMED": 2},               # the running max on named barriers too (ws2)
    "-own": {"OWN": 1, "CHUNK_WAIT": 4},   # own-piece refill, also with four row tiles (ws2)
    "-mc": {"MC": 1},                      # 2-CTA clusters (ws2)
    "-qload": {"Q_TMA": 0},                # the Q tile by plain loads (the fallback; the default is by TMA)
    "-qtma": {"Q_TMA": 1},                 # the Q tile by TMA (the default)
    "-qtma2": {"Q_TMA": 2},                # and the next chunk's Q issued at the end of a chunk's pages
    "-exact": {"LAZY": 0},                 # the exact running max, O rescaled on every page (pair)
    "-early": {"EARLY_P0": 1},             # P0 published before sc1 is in (pair; opt-in)
    "-pdl": {"PDL": 1},                    # programmatic dependent launch (opt-in; the default is a plain launch)
    "-gluon-s": {"ASM_S": 0},              # S's wgmmas from Gluon (ws2; the default issues them from inline PTX)
    "-asm": {"ASM_S": 1},                  # S's wgmmas from inline PTX (pair; opt-in)
    "-asm-pv": {"ASM_S": 1, "ASM_PV": 1},  # and P.V's, O as four quarters (pair; opt-in)
    "-asmpv": {"ASM_S": 1, "ASM_PV": 1, "PV_REGS": 192, "SM_REGS": 64},   # and P.V's, P read once per page (ws2)
}


def _set_variant(kernel, monkeypatch):
    """Set the ws / ws2 / pair module constants that ``kernel``'s suffix names (``_VARIANTS``)."""
    import flash_mla.hopper.pair_kernel as P
    import flash_mla.hopper.ws2_kernel as W2
    import flash_mla.hopper.ws_kernel as W
    mod = W2 if kernel.startswith("ws2") else P if kernel.startswith("pair") else W
    for suffix, consts in _VARIANTS.items():
        if kernel.endswith(suffix):
            for name, value in consts.items():
                monkeypatch.setattr(mod, name, value)


@pytest.mark.parametrize("lens,s_q,h_q,dtype,causal,parts", [
    ([1, 63, 64, 65, 130, 200], 1, 16, torch.bfloat16, False, None),     # odd / partial / single pages
    ([0, 100, 0, 64], 1, 16, torch.bfloat16, False, None),               # empty sequences
    ([5000, 3000, 65, 4097], 2, 64, torch.float16, True, 132),           # many splits, causal, fp16
    ([4096, 1000, 7000], 2, 128, torch.bfloat16, True, 132),             # several row blocks, splits
    ([300, 129, 3], 3, 48, torch.bfloat16, True, 16),                    # s_q = 3, padded row block
    ([0, 70, 0, 0, 130, 1, 0, 64, 200, 3], 2, 64, torch.bfloat16, True, 2),   # many chunks per CTA, empty ones
], ids=["partial-pages", "empty", "splits-causal-fp16", "h128-splits", "sq3-causal", "many-chunks"])
@pytest.mark.parametrize("kernel", ["ws", "ws2", "ws2-cw0", "pair", "pair-exact", "pair-early", "ws-mbar", "ws2-mbar",
                                    "ws2-own", "ws2-mc", "ws2-mnamed", "ws-qload", "ws2-qload", "ws-qtma2", "ws2-qtma2",
                                    "ws-pdl", "ws2-pdl", "ws2-gluon-s", "ws2-asmpv", "pair-asm",
                                    "pair-asm-pv"])
def test_hopper_forced_kernel(kernel, lens, s_q, h_q, dtype, causal, parts, monkeypatch):
    """Each warp-specialized kernel on every shape via launcher.CONFIG_OVERRIDE (the default picks ws for one
    64-row tile and ws2 for more; pair_kernel is opt-in, pair-exact: its LAZY = 0, pair-early: EARLY_P0 = 1;
    ws2-cw0: ws2 with one ring mbarrier per page; -mbar: NAMED = 0, the per-page hand-offs on mbarriers instead of the
    default named barriers; -own: OWN = 1 with CHUNK_WAIT = 4, each P.V warpgroup refills the pieces it read; -mc:
    MC = 1, 2-CTA clusters with multicast pages where the tile count is even, plain ws2 elsewhere; -mnamed: NAMED = 2,
    the running max between ws2's softmax warpgroups on named barriers too; -qload: Q_TMA = 0, the Q tile by plain
    loads (the fallback for q layouts without one row stride; the default is by TMA); -qtma2: Q_TMA = 2, the next
    chunk's Q issued early; -pdl: PDL = 1, a programmatic dependent launch instead of a plain one; ws2-gluon-s:
    ASM_S = 0, S's wgmmas from Gluon (the default, ASM_S = 1, issues them from inline PTX); ws2-asmpv: also ASM_PV =
    1, P.V's wgmmas from inline PTX with P as a register operand, at a 192 / 64 register split; pair-asm: the paired
    kernel's S from inline PTX; pair-asm-pv: its P.V too)."""
    q, kc, bt, seqlens = edge_inputs(lens, s_q, h_q, dtype)
    if resolve_backend(q, kc, 512) != "hopper":
        pytest.skip("needs the Hopper backend")
    import flash_mla.hopper.launcher as hl
    import flash_mla.scheduler as sched
    # FlashMLA's greedy layouts (the whole-sequence one would split none of the small cases; test_matrix runs it)
    monkeypatch.setattr(sched, "WHOLE_SEQUENCES", False)
    meta, splits = get_mla_metadata(seqlens, s_q * h_q, 1, num_sm_parts=parts)
    ref_out, ref_lse = mla_decode_reference(q, kc, bt, seqlens, 512, None, causal=causal)
    _set_variant(kernel, monkeypatch)
    monkeypatch.setattr(hl, "CONFIG_OVERRIDE",
                        hl.PAIR if kernel.startswith("pair") else hl.WS2 if kernel.startswith("ws2") else hl.WS)
    out, lse = flash_mla_with_kvcache(q, kc, bt, seqlens, 512, meta, splits, causal=causal, backend="hopper")
    # second call: the cached launch (descriptor cache), and bit-identical results
    out2, lse2 = flash_mla_with_kvcache(q, kc, bt, seqlens, 512, meta, splits, causal=causal, backend="hopper")
    assert_close_flashmla(out, lse, ref_out, ref_lse, dtype)
    assert torch.equal(out, out2) and torch.equal(lse, lse2), f"{kernel} is not deterministic"


@pytest.mark.parametrize("lens,s_q,h_q,causal,parts", [
    ([0, 100, 0, 64], 1, 128, False, 64),          # empty sequences, many empty parts
    ([1, 63, 65, 129], 2, 64, True, 8),            # single partial pages, causal
    ([5000, 0, 3000, 4097], 2, 128, True, 132),    # splits, an empty sequence among them
], ids=["empty-parts", "partial-pages", "splits-empty"])
@pytest.mark.parametrize("cw", [2, 4])
def test_hopper_mc_edges(lens, s_q, h_q, causal, parts, cw, monkeypatch):
    """ws2's MC variant (2-CTA clusters, multicast pages) on the edge cases of test_hopper_forced_kernel with an
    even number of row tiles (MC falls back to plain ws2 otherwise): empty sequences and parts, partial pages,
    splits; CHUNK_WAIT 2 and 4."""
    q, kc, bt, seqlens = edge_inputs(lens, s_q, h_q, torch.bfloat16)
    if resolve_backend(q, kc, 512) != "hopper":
        pytest.skip("needs the Hopper backend")
    import flash_mla.hopper.launcher as hl
    import flash_mla.hopper.ws2_kernel as W2
    monkeypatch.setattr(W2, "MC", 1)
    monkeypatch.setattr(W2, "CHUNK_WAIT", cw)
    monkeypatch.setattr(hl, "CONFIG_OVERRIDE", hl.WS2)
    import flash_mla.scheduler as sched
    monkeypatch.setattr(sched, "WHOLE_SEQUENCES", False)   # FlashMLA's greedy layouts (as test_hopper_forced_kernel)
    meta, splits = get_mla_metadata(seqlens, s_q * h_q, 1, num_sm_parts=parts)
    ref_out, ref_lse = mla_decode_reference(q, kc, bt, seqlens, 512, None, causal=causal)
    out, lse = flash_mla_with_kvcache(q, kc, bt, seqlens, 512, meta, splits, causal=causal, backend="hopper")
    assert_close_flashmla(out, lse, ref_out, ref_lse, torch.bfloat16)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("lazy", [8, 0], ids=["lazy", "exact"])
@pytest.mark.parametrize("kernel", ["ws", "ws2", "ws2-mbar", "ws2-own", "ws2-mc", "ws2-mnamed", "ws-qload",
                                    "ws2-qload", "ws-qtma2", "ws2-qtma2", "ws2-gluon-s", "ws2-asmpv", "pair",
                                    "pair-early", "pair-asm", "pair-asm-pv"])
def test_hopper_max_jumps(kernel, lazy, dtype, monkeypatch):
    """Scores whose running row max jumps by far more than the LAZY threshold in mid-sequence (keys of some pages
    scaled up), and drops again: the pages where the max moves are the only ones on which the P·V warpgroups
    rescale O (pair: the only ones on which a warp runs its O and P0 rescales, and pair-early's warpgroup 1
    rescales P0), so a lost rescale flag shows here (random scores alone move it only on the first pages)."""
    if kernel == "pair-early" and not lazy:
        pytest.skip("EARLY_P0 needs LAZY")
    q, kc, bt, seqlens = edge_inputs([4000, 2500, 700], 2, 128, dtype)
    if resolve_backend(q, kc, 512) != "hopper":
        pytest.skip("needs the Hopper backend")
    import flash_mla.hopper.launcher as hl
    import flash_mla.hopper.pair_kernel as P
    import flash_mla.hopper.ws2_kernel as W2
    import flash_mla.hopper.ws_kernel as W
    for i, (page, f) in enumerate([(9, 6.0), (30, 14.0), (2, 5.0)]):   # [sequence i] page: key scale
        kc[bt[i, page].long()] *= f
    kc[bt[0, 40].long(), :7] *= 20.0                                     # a few keys only
    meta, splits = get_mla_metadata(seqlens, 2 * 128, 1, num_sm_parts=8)
    ref_out, ref_lse = mla_decode_reference(q, kc, bt, seqlens, 512, None, causal=True)
    mod, config = ((W2, hl.WS2) if kernel.startswith("ws2") else (P, hl.PAIR) if kernel.startswith("pair")
                   else (W, hl.WS))
    monkeypatch.setattr(mod, "LAZY", lazy)
    _set_variant(kernel, monkeypatch)
    monkeypatch.setattr(hl, "CONFIG_OVERRIDE", config)
    out, lse = flash_mla_with_kvcache(q, kc, bt, seqlens, 512, meta, splits, causal=True, backend="hopper")
    assert_close_flashmla(out, lse, ref_out, ref_lse, dtype)


@pytest.mark.parametrize("layout", ["b1", "padded-rows", "sh-transposed", "h1"])
@pytest.mark.parametrize("kernel", ["ws", "ws2", "ws-qtma2", "ws2-qtma2"])
def test_hopper_q_tma_layouts(kernel, layout, monkeypatch):
    """Q_TMA = 1 on q layouts other than a contiguous batch: one sequence (no batch stride), rows 640 elements apart
    (a view into a wider buffer: the descriptor's row stride), (s_q, h_q) transposed (no single row stride: the
    launcher falls back to plain loads) and h_q = 1 with s_q = 2 (rows s_q apart)."""
    h_q = 128 if kernel.startswith("ws2") else 64
    s_q = 2 if kernel.startswith("ws2") else 1
    lens = [3000] if layout == "b1" else [3000, 700, 129]
    if layout == "h1":
        h_q, s_q = 1, 2
    elif layout == "sh-transposed" and s_q == 1:
        h_q, s_q = h_q // 2, 2       # with s_q = 1 a transposed (s_q, h_q) still has one row stride
    q, kc, bt, seqlens = edge_inputs(lens, s_q, h_q, torch.bfloat16)
    if resolve_backend(q, kc, 512) != "hopper":
        pytest.skip("needs the Hopper backend")
    import flash_mla.hopper.launcher as hl
    if layout == "padded-rows":
        wide = torch.randn(*q.shape[:3], 640, dtype=q.dtype, device="cuda")
        wide[..., :576] = q
        q = wide[..., :576]
    elif layout == "sh-transposed":
        q = q.transpose(1, 2).contiguous().transpose(1, 2)
        assert hl.q_descriptor(q) is None
    if layout != "sh-transposed":
        assert hl.q_descriptor(q) is not None
    meta, splits = get_mla_metadata(seqlens, s_q * h_q, 1, num_sm_parts=16)
    ref_out, ref_lse = mla_decode_reference(q, kc, bt, seqlens, 512, None, causal=True)
    _set_variant(kernel if kernel.endswith("qtma2") else f"{kernel}-qtma", monkeypatch)
    monkeypatch.setattr(hl, "CONFIG_OVERRIDE", hl.WS2 if kernel.startswith("ws2") else hl.WS)
    out, lse = flash_mla_with_kvcache(q, kc, bt, seqlens, 512, meta, splits, causal=True, backend="hopper")
    assert_close_flashmla(out, lse, ref_out, ref_lse, torch.bfloat16)


@pytest.mark.parametrize("kernel", ["ws", "ws2", "ws-pdl", "ws2-pdl"])
def test_hopper_pdl_inputs_written_just_before(kernel, monkeypatch):
    """Programmatic dependent launch (PDL = 1, opt-in; and the default plain launch): the attention kernel may be
    scheduled before the previous kernel on the stream has finished, and the combine before the attention kernel
    has. Each call here gets inputs that kernels wrote right before it (q, the cache, the block table, the lengths
    and the metadata, each first poisoned, behind a slow kernel), and four calls run back to back on the same
    stream, each on different inputs (workspace blocks are reused by the caching allocator): every result must
    match its own reference, bit for bit across repeats."""
    if not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] != 9:
        pytest.skip("needs a Hopper GPU")
    import flash_mla.hopper.launcher as hl
    h_q = 16 if kernel.split("-")[0] == "ws" else 128
    lens = [700, 3000, 64, 1500, 1]
    s_q = 2
    cases = []
    for seed in range(4):
        q, kc, bt, seqlens = edge_inputs(lens[seed:] + lens[:seed], s_q, h_q, torch.bfloat16, seed=seed)
        meta, splits = get_mla_metadata(seqlens, s_q * h_q, 1)
        ref = mla_decode_reference(q, kc, bt, seqlens, 512, None, causal=True)
        cases.append(((q, kc, bt, seqlens, meta, splits), ref))
    _set_variant(kernel, monkeypatch)
    monkeypatch.setattr(hl, "CONFIG_OVERRIDE", hl.WS2 if kernel.startswith("ws2") else hl.WS)
    slow = torch.randn(1 << 26, device="cuda")
    results = []
    for _ in range(2):
        fresh = [tuple(torch.full_like(t, float("nan")) if t.is_floating_point() else torch.full_like(t, -1)
                       for t in src) for src, _ in cases]
        torch.cuda.synchronize()
        outs = []
        for (src, _), dst in zip(cases, fresh):
            slow.mul_(1.0001)                       # a long kernel in front, so that the writes below queue behind it
            for d, t in zip(dst, src):
                d.copy_(t)                          # each input written by a kernel just before the call
            q, kc, bt, seqlens, meta, splits = dst
            outs.append(flash_mla_with_kvcache(q, kc, bt, seqlens, 512, meta, splits, causal=True, backend="hopper"))
        torch.cuda.synchronize()
        results.append(outs)
    for (_, (ref_out, ref_lse)), (out, lse), (out2, lse2) in zip(cases, results[0], results[1]):
        assert_close_flashmla(out, lse, ref_out, ref_lse, torch.bfloat16)
        assert torch.equal(out, out2) and torch.equal(lse, lse2)
