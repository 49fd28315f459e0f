"""CPU-only: the Hopper Gluon kernel compiles for sm_90a without spills, within 227 KB of shared memory,
and its PTX uses wgmma and TMA (cp.async.bulk.tensor). No GPU needed (ptxas ships with Triton)."""
import pytest

pytest.importorskip("triton.experimental.gluon")

from flash_mla.hopper.compile_check import SMEM_LIMIT, report_subprocess  # noqa: E402
from flash_mla.hopper.launcher import CONFIG_LARGE, CONFIG_SMALL  # noqa: E402

# ptxas hoists one 64-bit kernel-parameter address above the warp-specialize switch and spills it (8 bytes,
# stored once, reloaded in per-chunk setup code, never in the page loop; see docs/hopper-kernel.md).
WS_SPILL_BUDGET = 64
# The two-softmax-warpgroup kernel (ws2_kernel, default for more than 64 rows): 80 bytes of scalar spills in its
# 160-register P.V warpgroups (none with 176 / 80 registers, docs/perf-notes.md). Guard against it growing.
WS2_SPILL_BUDGET = 256
# The opt-in paired kernel (pair_kernel v5, not the default) spills ~0.5 KB at 255 registers per thread (O half,
# S, P and Q's rope tile in registers; docs/perf-notes.md "Session 16"). Guard against it growing.
PAIR_SPILL_BUDGET = 1200


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("config", sorted({CONFIG_SMALL, CONFIG_LARGE}))
def test_compiles_for_sm90a(dtype, causal, config):
    """The configurations the launcher uses: (P through smem, overlap P V with next Q K^T, 3-D TMA box)."""
    r = report_subprocess("lockstep", dtype, causal, config)
    assert r["sm90a"] and r["wgmma"] and r["tma"], r
    assert r["shared"] <= SMEM_LIMIT, r
    assert r["num_warps"] == 8, r
    assert r["n_spills"] == 0, r
    assert r["n_regs"] <= 255, r


# The warp-specialized kernels: (registers per thread at launch at most, spill bytes at most, whether ptxas may
# print performance notes). ws: softmax warpgroup + two P.V warpgroups, 12 warps, 168 at launch (the default for one
# tile); ws2: two softmax + two P.V warpgroups, 16 warps, 128 at launch (more tiles); pair: the opt-in paired
# kernel, two warpgroups (8 warps, up to 255), pages loaded as nine tiles by TMA (pair-raw0: through Gluon's TMA ops
# instead of inline PTX; pair-p0first-hint, pair-flashmla-order: the other flag settings). The notes would be an
# ignored setmaxnreg, a serialised wgmma or an injected warpgroup wait.
WS_KERNELS = {
    "ws": (168, WS_SPILL_BUDGET, False),
    "ws2": (128, WS2_SPILL_BUDGET, False),
    "ws-mbar": (168, WS_SPILL_BUDGET, False),      # NAMED = 0: the per-page hand-offs on mbarriers (the
    "ws2-mbar": (128, WS2_SPILL_BUDGET, False),    # default until 2026-12-06; kept as a fallback)
    "ws2-own": (128, WS2_SPILL_BUDGET, False),     # OWN = 1: each P.V warpgroup refills its own pieces (opt-in)
    "ws2-mc": (128, WS2_SPILL_BUDGET, False),      # MC = 1: 2-CTA cluster, pages multicast (opt-in)
    "ws2-mnamed": (128, WS2_SPILL_BUDGET, False),  # NAMED = 2: the running max on named barriers too (opt-in),
    "ws2-mnamed-own": (128, WS2_SPILL_BUDGET, False),  # also as the launcher runs it on two row tiles (OWN)
    "ws-qload": (168, WS_SPILL_BUDGET, False),     # Q_TMA = 0: the Q tile by plain loads (the fallback for q
                                                   # layouts with no single row stride; default until 2026-12-07)
    "ws-qtma2": (168, WS_SPILL_BUDGET + 32, False),  # Q_TMA = 2: and the next chunk's Q issued early (opt-in;
                                                     # 72 B: the hoisted descriptor address + the prefetch flag)
    "ws2-qload": (128, WS2_SPILL_BUDGET, False),
    "ws2-qload-own": (128, WS2_SPILL_BUDGET, False),
    "ws2-qtma2": (128, WS2_SPILL_BUDGET, False),    # Q_TMA = 2: the next chunk's Q by the last page's owner (opt-in)
    "ws2-qtma2-own": (128, WS2_SPILL_BUDGET, False),
    "ws-pdl": (168, WS_SPILL_BUDGET, False),       # PDL = 1: programmatic dependent launch (opt-in)
    "ws2-pdl": (128, WS2_SPILL_BUDGET, False),
    "ws2-gluon-s": (128, WS2_SPILL_BUDGET, False),  # ASM_S = 0: S's wgmmas from Gluon (the default: inline PTX)
    "ws2-gluon-s-own": (128, WS2_SPILL_BUDGET, False),
    "ws2-asmpv": (128, WS2_SPILL_BUDGET, False),   # and ASM_PV = 1: P.V's too, P as a register operand (192 / 64)
    "ws2-asmpv-own": (128, WS2_SPILL_BUDGET, False),
    "ws2-trace": (128, WS2_SPILL_BUDGET, False),   # TRACE = 1: the clock stamps of benchmarks/trace_ws.py
    "pair": (255, PAIR_SPILL_BUDGET, True),
    "pair-raw0": (255, PAIR_SPILL_BUDGET, True),
    "pair-p0first-hint": (255, PAIR_SPILL_BUDGET, True),
    "pair-flashmla-order": (255, PAIR_SPILL_BUDGET, True),   # P0_FIRST = PV0_FIRST = 0: FlashMLA's own order
    "pair-exact": (255, PAIR_SPILL_BUDGET, True),            # LAZY = 0: O rescaled on every page (FlashMLA)
    "pair-early": (255, PAIR_SPILL_BUDGET, True),            # EARLY_P0 = 1: P0 published before sc1 is in
    "pair-asm": (255, 64, False),   # ASM_S = 1: S from inline PTX (opt-in): 56 B of spills, no ptxas notes
    "pair-asmpv": (255, 64, False),  # and ASM_PV = 1: P.V from inline PTX too (opt-in): 8 B
}


# The builds the launcher runs by default (ws for one tile, ws2 for more, ws2-own on two tiles, the -qload fallbacks
# for q layouts with no single row stride) compile in all four dtype / causal combinations; the opt-in variants in
# two (bf16 causal, fp16 not causal), which keeps CI's compile time down (each asm variant builds twice).
DEFAULT_KINDS = {"ws", "ws2", "ws2-own", "ws-qload", "ws2-qload", "ws2-qload-own"}
_COMBOS = [(d, c) for d in ("bf16", "fp16") for c in (False, True)]
_WS_CASES = [pytest.param(k, d, c, id=f"{k}-{d}-{'causal' if c else 'full'}") for k in sorted(WS_KERNELS)
             for d, c in (_COMBOS if k in DEFAULT_KINDS else [("bf16", True), ("fp16", False)])]


@pytest.mark.parametrize("kind,dtype,causal", _WS_CASES)
def test_warp_specialized_kernel_compiles_for_sm90a(kind, dtype, causal):
    """Each warp-specialized kernel: wgmma, TMA and per-partition setmaxnreg, within its register, spill and
    shared-memory bounds."""
    max_regs, spill_budget, notes_allowed = WS_KERNELS[kind]
    r = report_subprocess(kind, dtype, causal)
    assert r["sm90a"] and r["wgmma"] and r["tma"] and r["setmaxnreg"], r
    assert r["shared"] <= SMEM_LIMIT, r
    assert r["n_regs"] <= max_regs, r
    assert r["n_spills"] <= spill_budget, r
    if not notes_allowed:
        assert not r["ptxas_notes"], r
    if kind in ("ws", "ws2"):   # NAMED: P published (one per P.V warpgroup) and stage read are bar.arrive
        assert r["bar_arrive"] >= 3, r
    if kind.endswith("-mbar"):
        assert r["bar_arrive"] == 0, r
    if kind.endswith("-mc"):     # every TMA multicast, stage release to both CTAs, a cluster barrier at the start
        # and the end of each of the 4 partitions
        assert r["multicast"] == r["tma"] > 0 and r["mapa"] == 2 and r["cluster_barrier"] == 8, r
    else:
        assert r["multicast"] == 0 and r["cluster_barrier"] == 0, r
    if kind.endswith("-pdl"):
        # PDL: one griddepcontrol.wait, by the kernel body before the partitions start, and one launch_dependents
        # (the combine); none in a plain launch (the default)
        assert r["gdc_wait"] == 1 and r["gdc_launch"] == 1, r
    else:
        assert r["gdc_wait"] == 0 and r["gdc_launch"] == 0, r
    if kind.endswith("-own"):    # 5 TMA pieces per page, issued from both P.V warpgroups
        assert r["tma"] >= 15, r
    if kind.startswith("ws2") and not kind.startswith("ws2-gluon-s") and not kind.endswith("-mc"):
        # S unrolled from inline PTX (ASM_S, the default; not with MC): 9 tiles x 4 k-steps in each of the two
        # softmax warpgroups (Gluon's S has 8 per softmax warpgroup in the PTX: the rope tile's 4 and its chunk
        # loop's 4)
        assert r["wgmma"] >= 72, r
    if kind.startswith("ws2-gluon-s") or kind.endswith("-mc"):
        assert r["wgmma"] < 72, r


def test_ws2_own_refill_choice(monkeypatch):
    """ws2's own-piece refill: by default on for two row tiles, off for more and with 2-CTA clusters; OWN forces it,
    and it brings its CHUNK_WAIT."""
    import flash_mla.hopper.ws2_kernel as W2
    monkeypatch.setattr(W2, "OWN", None)
    assert [W2.own_refill(t) for t in (2, 3, 4, 8)] == [True, False, False, False]
    assert not W2.own_refill(2, mc=True)
    assert W2.chunk_wait(True) == W2.OWN_CHUNK_WAIT == 4 and W2.chunk_wait(False) == W2.CHUNK_WAIT
    monkeypatch.setattr(W2, "OWN", 1)
    assert W2.own_refill(4) and not W2.own_refill(4, mc=True)
    monkeypatch.setattr(W2, "OWN", 0)
    assert not W2.own_refill(2)


def test_q_descriptor_views():
    """Q_TMA's descriptor: q as [b, s_q * h_q, 576] with one row stride where q's layout has one; None (plain loads)
    where it does not or where TMA's 16-byte rules fail."""
    import torch

    from flash_mla.hopper.launcher import q_descriptor
    q = torch.randn(3, 2, 16, 576, dtype=torch.bfloat16)
    d = q_descriptor(q)
    assert list(d.shape) == [3, 32, 576] and list(d.strides) == [2 * 16 * 576, 576, 1]
    assert list(d.block_shape) == [1, 64, 64]
    wide = torch.randn(3, 1, 16, 640, dtype=torch.bfloat16)[..., :576]           # rows 640 apart
    assert list(q_descriptor(wide).strides) == [16 * 640, 640, 1]
    one = torch.randn(1, 2, 1, 576, dtype=torch.bfloat16)                          # b = 1, h_q = 1: rows s_q apart
    assert list(q_descriptor(one).shape) == [1, 2, 576] and q_descriptor(one).strides[1] == 576
    assert q_descriptor(q.transpose(1, 2).contiguous().transpose(1, 2)) is None   # (s_q, h_q) not one stride
    odd = torch.randn(3, 1, 16, 580, dtype=torch.bfloat16)[..., :576]              # 1,160-byte rows
    assert q_descriptor(odd) is None
    base = torch.randn(3 * 16 * 576 + 1, dtype=torch.bfloat16)[1:].view(3, 1, 16, 576)   # 2-byte offset base
    assert q_descriptor(base) is None
    assert q_descriptor(torch.randn(1, 1, 1, 576, dtype=torch.bfloat16).expand(3, 1, 16, 576)) is None   # broadcast


def test_unchecked_descriptors_pass_the_checks():
    """The launcher builds its descriptors without TensorDescriptor's checks (``launcher._descriptor``); each view it
    builds (cache K and V boxes, q) equals the checked construction, whose checks it passes."""
    import dataclasses

    import torch
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    from flash_mla.hopper.launcher import make_descriptors, q_descriptor
    cache = torch.randn(5, 64, 1, 576, dtype=torch.float16)
    q = torch.randn(3, 2, 16, 640, dtype=torch.float16)[..., :576]
    descs = [*make_descriptors(cache), *make_descriptors(cache, 4), q_descriptor(q)]
    for d in descs:
        fields = {f.name: getattr(d, f.name) for f in dataclasses.fields(TensorDescriptor)}
        assert TensorDescriptor(**fields) == d
    assert descs[0].shape == [5 * 64, 576] and descs[3].block_shape == [4, 64, 64]


def test_pair_raw_tile_loads():
    """pair_kernel's RAW build issues its 36 tile copies (4 x 9: each warpgroup's first page, and the refills of both
    stages) from inline PTX, so Triton's membar pass has fewer warpgroup barriers to insert than in the build through
    Gluon's TMA / mbarrier ops, and only HINT = 1 puts an L2 policy on them."""
    raw = report_subprocess("pair", "bf16", True)
    gluon_ops = report_subprocess("pair-raw0", "bf16", True)
    hint = report_subprocess("pair-p0first-hint", "bf16", True)
    assert raw["tma"] == gluon_ops["tma"] == hint["tma"] == 36, (raw, gluon_ops, hint)
    assert raw["bar_sync"] < gluon_ops["bar_sync"], (raw, gluon_ops)
    assert raw["cache_hint"] == 0 and gluon_ops["cache_hint"] == 0, (raw, gluon_ops)
    assert hint["cache_hint"] == 36, hint


def test_launcher_compile_twice_uses_the_first_builds_constants():
    """launcher._compile_twice (ws2's MC, the paired kernel's RAW): the second build gets the constants read from
    the first, and a layout that moves between the two builds is an error, not a kernel with wrong addresses."""
    from types import SimpleNamespace

    from flash_mla.hopper.launcher import _compile_twice

    calls = []

    def warmup(*args, grid, **kwargs):
        calls.append(kwargs)
        return SimpleNamespace(offset=kwargs.get("SHIFT", 0) + 100)   # a build whose layout depends on SHIFT

    launch = SimpleNamespace(fn=SimpleNamespace(warmup=warmup))
    stable = _compile_twice(launch, (1, 1, 1), (), {"OFF": 0}, lambda k: {"OFF": 100}, "test")
    assert [c["OFF"] for c in calls] == [0, 100] and stable.offset == 100
    with pytest.raises(RuntimeError, match="moved"):
        _compile_twice(launch, (1, 1, 1), (), {"OFF": 0, "SHIFT": 0},
                       lambda k: {"OFF": k.offset, "SHIFT": k.offset}, "test")
