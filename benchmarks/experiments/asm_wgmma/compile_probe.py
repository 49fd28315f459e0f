"""Compile-only probe (no GPU): S = Q K^T of a 64 x 576 page as Gluon's ``warpgroup_mma`` against the same wgmmas
written as inline PTX (``flash_mla.hopper.asm_mma``), whose shared-memory descriptors are built from the
``global_smem`` symbol and constants.

    python3 benchmarks/experiments/asm_wgmma/compile_probe.py [--sass]

Why (docs/hopper-kernel.md, "Where the compute-bound gap stands"): in the paired kernel's SASS each wgmma's
descriptors are built on the vector pipe (IMAD) and moved to uniform registers (R2UR), ~130 instructions per pair and
warpgroup that FlashMLA's build issues on the uniform datapath. This checks whether an inline-PTX wgmma can hold an
m64n64 fp32 accumulator (32 registers per thread, ``pack=32``) in place across asm blocks, and what ptxas makes of
constant descriptors: the SASS instruction mix of the page loop of both variants is printed.

One warpgroup, Q [9, 64, 64] and a 2-stage ring [18, 64, 64] (bf16, 128-byte swizzle), nothing loaded (the
contents do not matter for a compile). The page loop runs over pairs of pages so that each stage is a constexpr.
"""
import re
import subprocess
import sys
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon._runtime import GluonASTSource
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, warpgroup_mma, warpgroup_mma_wait

sys.path.insert(0, __file__.rsplit("/benchmarks/", 1)[0])
from flash_mla.hopper import asm_mma as AM  # noqa: E402
from flash_mla.hopper import cluster as CL  # noqa: E402
from flash_mla.hopper.compile_check import ptxas_stats  # noqa: E402

NV = gl.constexpr(9)   # 64-column tiles per page (8 latent + rope)
TILE = gl.constexpr(64 * 64 * 2)


@gluon.jit
def _s_asm(s, Q_OFF: gl.constexpr, K_OFF: gl.constexpr, STAGE: gl.constexpr):
    """S of one page by ``flash_mla.hopper.asm_mma`` (the inline-PTX wgmma that ws2_kernel.ASM_S uses)."""
    for ch in gl.static_range(NV):
        s = AM.tile_mma(s, Q_OFF + ch * TILE, K_OFF + (STAGE * NV + ch) * TILE, ch == 0, True)
    return AM.mma_wait(s, 0)


@gluon.jit
def _s_gluon_loop(s, q_smem, k_smem, STAGE: gl.constexpr):
    """As ws2's softmax warpgroups run S: a runtime loop over the chunks (descriptors computed per chunk, not kept)."""
    s = warpgroup_mma(q_smem.index(0), k_smem.index(STAGE * NV).permute((1, 0)), s, use_acc=False, is_async=True)
    s = warpgroup_mma_wait(num_outstanding=1, deps=(s,))
    for ch in range(1, NV):
        s = warpgroup_mma(q_smem.index(ch), k_smem.index(STAGE * NV + ch).permute((1, 0)), s, is_async=True)
        s = warpgroup_mma_wait(num_outstanding=1, deps=(s,))
    return warpgroup_mma_wait(num_outstanding=0, deps=(s,))


@gluon.jit
def _s_gluon(s, q_smem, k_smem, STAGE: gl.constexpr):
    for ch in gl.static_range(NV):
        s = warpgroup_mma(q_smem.index(ch), k_smem.index(STAGE * NV + ch).permute((1, 0)), s, use_acc=ch > 0,
                          is_async=True)
    return warpgroup_mma_wait(num_outstanding=0, deps=(s,))


@gluon.jit
def s_loop_probe(out_ptr, n_pairs, USE_ASM: gl.constexpr, Q_OFF: gl.constexpr, K_OFF: gl.constexpr):
    tile_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([64, 64], gl.bfloat16)
    q_smem = gl.allocate_shared_memory(gl.bfloat16, [NV, 64, 64], tile_layout)
    k_smem = gl.allocate_shared_memory(gl.bfloat16, [2 * NV, 64, 64], tile_layout)   # stage st: tiles 9 st ..
    fence_async_shared()
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, 64, 16])
    # (Gluon accesses to both allocations, so that the asm variant keeps them, at the first build's offsets, and
    # its PTX declares global_smem)
    t = (k_smem.index(2 * NV - 1).load(s_layout).to(gl.float32)
         + q_smem.index(NV - 1).load(s_layout).to(gl.float32))
    for _ in range(n_pairs):
        for st in gl.static_range(2):
            s = gl.zeros([64, 64], gl.float32, layout=s_layout)
            if USE_ASM == 1:
                s = _s_asm(s, Q_OFF, K_OFF, st)
            elif USE_ASM == 2:
                s = _s_gluon_loop(s, q_smem, k_smem, st)
            else:
                s = _s_gluon(s, q_smem, k_smem, st)
            t += gl.exp2(s - gl.max(s, axis=1)[:, None])    # some use of S, as a softmax would
    rows = gl.arange(0, 64, layout=gl.SliceLayout(1, s_layout))
    cols = gl.arange(0, 64, layout=gl.SliceLayout(0, s_layout))
    gl.store(out_ptr + rows[:, None] * 64 + cols[None, :], t)


def _compile(use_asm, q_off=0, k_off=0):
    sig = {"out_ptr": "*fp32", "n_pairs": "i32", "USE_ASM": "constexpr", "Q_OFF": "constexpr", "K_OFF": "constexpr"}
    src = GluonASTSource(s_loop_probe, sig, {"USE_ASM": use_asm, "Q_OFF": q_off, "K_OFF": k_off}, {})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})


def offsets(compiled):
    """(Q's, the ring's) shared-memory offsets in ``compiled`` (a build of these allocations), and all of them."""
    offs = CL.smem_offsets(compiled)
    return (CL.find_offset(offs, "9x64x64x"), CL.find_offset(offs, "18x64x64x")), offs


def _sass(k):
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(k.asm["cubin"])
        f.flush()
        tools = triton.__file__.rsplit("/", 1)[0] + "/backends/nvidia/bin"
        return subprocess.run([f"{tools}/cuobjdump", "-sass", f.name], capture_output=True, text=True).stdout


def _mix(sass):
    """Instruction counts by opcode in the page loop: from the target of the last backward branch to that branch."""
    ins = [(int(m.group(1), 16), m.group(2)) for m in re.finditer(r"/\*([0-9a-f]{4})\*/\s+([^;]+);", sass)]
    loops = [(int(t, 16), a) for a, op in ins if (t := (re.search(r"BRA (0x[0-9a-f]+)", op) or [None, None])[1])
             and int(t, 16) < a]
    start, end = loops[-1]
    ops = [re.sub(r"^@!?U?P\w+\s+", "", op).split()[0].split(".")[0] for a, op in ins if start <= a <= end]
    pick = ("HGMMA", "WARPGROUP", "R2UR", "UIADD3", "UMOV", "UMOV", "ULOP3", "USHF", "IMAD", "IADD3", "VIADD", "MOV",
            "SHF", "LOP3", "MUFU", "BAR")
    return len(ops), {p: ops.count(p) for p in dict.fromkeys(pick)}


def main() -> int:
    first = _compile(0)
    (q_off, k_off), offs = offsets(first)
    second = _compile(1, q_off, k_off)
    assert CL.smem_offsets(second) == offs, "the asm build must keep the first build's shared-memory layout"
    for name, k in (("gluon warpgroup_mma, chunks unrolled", first),
                    ("gluon warpgroup_mma, runtime chunk loop (as ws2)", _compile(2)), ("inline-PTX wgmma", second)):
        ptx = k.asm["ptx"]
        regs, st, ld, notes = ptxas_stats(ptx)
        n, counts = _mix(_sass(k))
        print(f"{name}: {regs} registers, {st + ld} spill bytes, ptxas notes {notes}, shared {k.metadata.shared} B; "
              f"loop body {n} SASS instructions: " + ", ".join(f"{p} {c}" for p, c in counts.items() if c))
        if "--sass" in sys.argv:
            print(_sass(k))
    return 0


if __name__ == "__main__":
    sys.exit(main())
