"""CPU-only: the Hopper Gluon kernel compiles for sm_90a without spills, within 227 KB of shared memory,
and its PTX uses wgmma and TMA (cp.async.bulk.tensor). No GPU needed (ptxas ships with Triton)."""
import pytest

pytest.importorskip("triton.experimental.gluon")

from flash_mla.hopper.compile_check import SMEM_LIMIT, report_subprocess  # noqa: E402
from flash_mla.hopper.launcher import CONFIG_LARGE, CONFIG_SMALL  # noqa: E402

# ptxas hoists one 64-bit kernel-parameter address above the warp-specialize switch and spills it (8 bytes,
# stored once, reloaded in per-chunk setup code, never in the page loop; see docs/hopper-kernel.md).
WS_SPILL_BUDGET = 64
# The two-softmax-warpgroup kernel (ws2_kernel, default for more than 64 rows) has 96 registers per softmax
# warpgroup; ~150 bytes of scalar spills outside the page loop. Guard against it growing.
WS2_SPILL_BUDGET = 256
# The opt-in paired kernel (pair_kernel, not the default) spills ~1 KB: hoisted 64-bit wgmma descriptors of the
# Q K^T halves, reloaded once per page (docs/perf-notes.md). Guard against it growing.
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


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("causal", [False, True])
def test_ws_kernel_compiles_for_sm90a(dtype, causal):
    """The default kernel: softmax warpgroup + two P.V warpgroups (setmaxnreg), 12 warps, 168 registers at launch."""
    r = report_subprocess("ws", dtype, causal)
    assert r["sm90a"] and r["wgmma"] and r["tma"] and r["setmaxnreg"], r
    assert r["shared"] <= SMEM_LIMIT, r
    assert r["n_regs"] <= 168, r
    assert r["n_spills"] <= WS_SPILL_BUDGET, r
    assert not r["ptxas_notes"], r     # no ignored setmaxnreg, no serialised wgmma, no injected waits


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("causal", [False, True])
def test_ws2_kernel_compiles_for_sm90a(dtype, causal):
    """Two softmax + two P.V warpgroups: 16 warps, 128 registers at launch, per-partition setmaxnreg honoured."""
    r = report_subprocess("ws2", dtype, causal)
    assert r["sm90a"] and r["wgmma"] and r["tma"] and r["setmaxnreg"], r
    assert r["shared"] <= SMEM_LIMIT, r
    assert r["n_regs"] <= 128, r
    assert r["n_spills"] <= WS2_SPILL_BUDGET, r
    assert not r["ptxas_notes"], r


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("causal", [False, True])
def test_pair_kernel_compiles_for_sm90a(dtype, causal):
    """The opt-in paired kernel: two warpgroups (8 warps, up to 255 registers), pages loaded in halves by TMA."""
    r = report_subprocess("pair", dtype, causal)
    assert r["sm90a"] and r["wgmma"] and r["tma"] and r["setmaxnreg"], r
    assert r["shared"] <= SMEM_LIMIT, r
    assert r["n_regs"] <= 255, r
    assert r["n_spills"] <= PAIR_SPILL_BUDGET, r
