"""CPU-only checks of ``flash_mla.hopper.asm_mma``, the wgmmas issued from inline PTX (ws2's default S; opt-in P.V
variants): their shared-memory descriptor constants must be the ones Triton builds for the same tiles, and the PTX
blocks must name the operands their callers pass (a wrong descriptor reads the wrong bytes silently on the GPU)."""
import re

import pytest

pytest.importorskip("triton.experimental.gluon")

from flash_mla.hopper import asm_mma as AM  # noqa: E402
from flash_mla.hopper.compile_check import ptx_subprocess  # noqa: E402


@pytest.fixture(scope="module")
def gluon_ws2_ptx():
    """ws2 with Gluon's S (ASM_S = 0): its P.V wgmmas (A = P, K-major; B = V, MN-major) are Triton's own. Compiled in
    a fresh interpreter: under TRITON_INTERPRET (CI) an in-process build fails unless Triton's cache already has it."""
    return ptx_subprocess("ws2-gluon-s", "bf16", True)


def test_descriptor_constants_match_triton(gluon_ws2_ptx):
    """Triton ORs the high half of each wgmma descriptor onto ``address >> 4``: 128-byte swizzle, 1024-byte stride
    byte offset, and for V's 64-column tiles (8 KB apart) an 8 KB leading byte offset."""
    consts = {int(c) for c in re.findall(r"or\.b64\s+%rd\d+, %rd\d+, (\d+);", gluon_ws2_ptx)}
    assert AM.DESC_HI in consts, sorted(consts)
    assert AM.DESC_HI_V in consts, sorted(consts)
    assert AM.DESC_HI == (1 << 62) | (64 << 32) and AM.DESC_HI_V == AM.DESC_HI | (512 << 16)


def _operands(ptx: str) -> set[int]:
    return {int(i) for i in re.findall(r"\$(\d+)", ptx)}


def test_tile_asm_operands():
    """S tile: accumulator $0..$31 only (the tied inputs $32..$63 are the same registers); k-steps 32 bytes apart."""
    ptx = AM._tile_asm(4096, 65536, True, True)
    assert _operands(ptx) == set(range(32))
    assert ptx.count("wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16") == 4
    assert [int(x) for x in re.findall(r"add\.s64 da, d0, (\d+);", ptx)] == [(4096 + 32 * k) >> 4 for k in range(4)]
    assert "setp.ne.b32 p, 0, 0;" in ptx     # FIRST: the first k-step overwrites the accumulator
    assert "f16.f16" in AM._tile_asm(0, 0, False, False)


def test_register_a_operands():
    """Register-A blocks: four consecutive 32-bit registers of P per k-step, after the accumulator's operands."""
    ra = AM._tile_ra_asm(8192, True)
    assert _operands(ra) == set(range(32)) | set(range(64, 80))
    pv = AM._pv_asm(16384, True)      # ws2 ASM_PV: m64n128, the stage offset in $144
    assert _operands(pv) == set(range(64)) | set(range(128, 145))
    assert ", db, q, 1, 1, 1;" in pv     # V is MN-major: imm-trans-b = 1
    assert [int(x) - AM.DESC_HI_V for x in re.findall(r"add\.s64 db, d0, (\d+);",
                                                       AM._pv256_asm(None, 32768, True))] == \
        [(32768 + 2048 * k) >> 4 for k in range(4)]
    ss = AM._pv256_asm(1024, 32768, True)     # P from shared memory: two descriptors, no register A
    assert _operands(ss) == set(range(128))
    assert ss.count("add.s64 da, d0,") == 4 and ", da, db, q, 1, 1, 0, 1;" in ss
