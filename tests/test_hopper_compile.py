"""CPU-only: the Hopper Gluon kernel compiles for sm_90a without spills, within 227 KB of shared memory,
and its PTX uses wgmma and TMA (cp.async.bulk.tensor). No GPU needed (ptxas ships with Triton)."""
import pytest

pytest.importorskip("triton.experimental.gluon")

from flash_mla.hopper.compile_check import SMEM_LIMIT, compile_sm90, compile_sm90_ws, ptxas_stats  # noqa: E402
from flash_mla.hopper.launcher import CONFIG_LARGE, CONFIG_SMALL  # noqa: E402

# ptxas hoists one 64-bit kernel-parameter address above the warp-specialize switch and spills it (8 bytes,
# stored once, reloaded in per-chunk setup code, never in the page loop; see docs/hopper-kernel.md).
WS_SPILL_BUDGET = 64


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("config", sorted({CONFIG_SMALL, CONFIG_LARGE}))
def test_compiles_for_sm90a(dtype, causal, config):
    """The configurations the launcher uses: (P through smem, overlap P V with next Q K^T, 3-D TMA box)."""
    k = compile_sm90(dtype, causal, *config)
    ptx = k.asm["ptx"]
    assert ".target sm_90a" in ptx
    assert "wgmma.mma_async" in ptx
    assert "cp.async.bulk.tensor" in ptx
    assert k.metadata.shared <= SMEM_LIMIT, k.metadata.shared
    assert k.metadata.num_warps == 8
    regs, spill_st, spill_ld = ptxas_stats(ptx)
    assert spill_st == 0 and spill_ld == 0, (regs, spill_st, spill_ld)
    assert regs <= 255


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("causal", [False, True])
def test_ws_kernel_compiles_for_sm90a(dtype, causal):
    """The default kernel: softmax warpgroup + two P.V warpgroups (setmaxnreg), 12 warps, 168 registers at launch."""
    k = compile_sm90_ws(dtype, causal)
    ptx = k.asm["ptx"]
    assert ".target sm_90a" in ptx
    assert "wgmma.mma_async" in ptx and "cp.async.bulk.tensor" in ptx
    assert "setmaxnreg.inc.sync.aligned.u32" in ptx
    assert k.metadata.shared <= SMEM_LIMIT, k.metadata.shared
    regs, spill_st, spill_ld = ptxas_stats(ptx)
    assert regs <= 168, regs
    assert spill_st + spill_ld <= WS_SPILL_BUDGET, (regs, spill_st, spill_ld)
