"""wgmma issued from inline PTX, with its shared-memory descriptors on the uniform datapath (opt-in:
``ws2_kernel.ASM_S``; docs/perf-notes.md "Session 20", ``benchmarks/experiments/asm_wgmma``).

Gluon 3.6 builds each wgmma's descriptors in vector registers and moves them to uniform registers (``R2UR``) before
the instruction. Here one base descriptor comes from the ``global_smem`` symbol and every tile and k-step is a
64-bit constant added to it, so ptxas keeps them in uniform registers (``UIADD3``). The accumulator (an m64n64
fp32 tile: 32 registers per thread) goes through each asm block whole (``pack=32``), outputs tied to inputs, so it
stays in place. The shared-memory offsets are constexprs that the launcher reads from a first build
(``cluster.compile_twice``).

Tiles: 64 x 64 of a 16-bit dtype, 128-byte swizzle (``NVMMASharedLayout`` for [64, 64]), K-major (A = rows of Q,
B = rows of K: ``B^T`` as wgmma reads it).
"""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

# high bits of the descriptor: 128-byte swizzle (bits 62-63 = 1), stride byte offset 1024 B (bits 32-45, 16-byte
# units), leading byte offset 0: the constant Triton 3.6 builds for these tiles
DESC_HI = (1 << 62) | ((1024 >> 4) << 32)
# B = V, MN-major (P.V): the 64-column tiles of a page row are 8 KB apart, leading byte offset 8192 (bits 16-29);
# Triton 3.6 builds the same
DESC_HI_V = DESC_HI | ((8192 >> 4) << 16)


def _tied(n_acc, extra=""):
    """Constraints: ``n_acc`` fp32 outputs tied to the first ``n_acc`` inputs, then ``extra`` (more inputs)."""
    return ",".join(["=f"] * n_acc + [str(i) for i in range(n_acc)]) + extra


_TIED32 = gl.constexpr(_tied(32))                           # S tile
_TIED32_RA = gl.constexpr(_tied(32, ",r" * 16))             # S tile, A from registers
_TIED64 = gl.constexpr(_tied(64, ",r" * 16 + ",r" * 32))    # m64n128 P.V: P, the stage offset (a splat)
_TIED128 = gl.constexpr(_tied(128))                         # m64n256 P.V with P in shared memory; mma_wait4
_TIED128_RA = gl.constexpr(_tied(128, ",r" * 16))           # m64n256 P.V, P from registers


@gluon.constexpr_function
def _wgmma_ptx(n, bf16, b_off, v_b, a_off=None, first=None, stage=False, fold_hi=True):
    """PTX: four m64n{n}k16 wgmmas (one 64-deep slab, one commit group) accumulating into $0 .. $n/2-1 (fp32, tied
    to the next n/2 inputs).
    - A (64 x 64, 16-bit) at global_smem + ``a_off`` (K-major, 128-byte swizzle), or with ``a_off`` None from
      registers: the 16 inputs after the tied ones, the m64n64 accumulator layout in 16-bit pairs, which is wgmma's
      A-register layout (k-step kk reads 4 kk .. 4 kk + 3 of them).
    - B at global_smem + ``b_off``, plus with ``stage`` the input after A's registers (a runtime byte offset, the
      same in every lane): K (K-major, k-steps 32 bytes apart) or, ``v_b``, V (MN-major, k-steps 16 rows of 128
      bytes apart).
    - ``first`` True: the first k-step overwrites the accumulator (None: every k-step accumulates).
    - ``fold_hi``: B's descriptor high bits are ORed into the base once (else every descriptor constant carries its
      own)."""
    t = "bf16" if bf16 else "f16"
    n_acc = n // 2
    a_reg = 2 * n_acc
    acc = ", ".join(f"${i}" for i in range(n_acc))
    b_hi, b_step, trans_b = (DESC_HI_V, 2048, 1) if v_b else (DESC_HI, 32, 0)
    hi0 = b_hi if fold_hi else 0
    lines = ["{ .reg .b64 d0, da, db; .reg .b32 a; .reg .pred " + ("p, q;" if first is not None else "q;"),
             "mov.u32 a, global_smem;"]
    if stage:
        lines.append(f"add.u32 a, a, ${a_reg + 16};")
    lines += ["cvt.u64.u32 d0, a;", "shr.b64 d0, d0, 4;"]
    if fold_hi:
        lines.append(f"or.b64 d0, d0, {b_hi};")
    if first is not None:
        lines.append(f"setp.ne.b32 p, {0 if first else 1}, 0;")
    lines += ["setp.eq.b32 q, 0, 0;", "wgmma.fence.sync.aligned;"]
    for kk in range(4):
        scale_d = "p" if first is not None and kk == 0 else "q"
        if a_off is None:
            a = "{" + ", ".join(f"${a_reg + 4 * kk + i}" for i in range(4)) + "}"
            tail = f"1, 1, {trans_b}"
        else:
            lines.append(f"add.s64 da, d0, {DESC_HI - hi0 + ((a_off + 32 * kk) >> 4)};")
            a, tail = "da", f"1, 1, 0, {trans_b}"
        lines.append(f"add.s64 db, d0, {b_hi - hi0 + ((b_off + b_step * kk) >> 4)};")
        lines.append(f"wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{t}.{t} {{{acc}}}, {a}, db, {scale_d}, {tail};")
    lines.append("wgmma.commit_group.sync.aligned; }")
    return "\n\t".join(lines)


@gluon.constexpr_function
def _tile_asm(a_off, b_off, first, bf16):
    """PTX: the four m64n64k16 wgmmas of one 64 x 64 tile pair, accumulator $0..$31 (tied to $32..$63); A at
    global_smem + a_off, B at global_smem + b_off; ``first``: the first k-step overwrites the accumulator."""
    return _wgmma_ptx(64, bf16, b_off, False, a_off=a_off, first=first)


@gluon.constexpr_function
def _pv_asm(b_off, bf16):
    """PTX: O[:, 0:128] += P V over one page (ws2's ASM_PV), four m64n128k16 wgmmas: the accumulator $0..$63 (two
    m64n64 halves, tied to $64..$127), P $128..$143 from registers, the ring stage's byte offset $144; V at
    global_smem + $144 + b_off."""
    return _wgmma_ptx(128, bf16, b_off, True, stage=True)


@gluon.constexpr_function
def _tile_ra_asm(b_off, bf16):
    """PTX: the four m64n64k16 wgmmas of one 64 x 64 tile with A from registers ($64..$79), B (K-major) at
    global_smem + b_off, accumulating into $0..$31 (tied to $32..$63)."""
    return _wgmma_ptx(64, bf16, b_off, False)


@gluon.constexpr_function
def _pv256_asm(a_off, b_off, bf16):
    """PTX: O[:, 0:256] += P V over one page (pair_kernel's ASM_PV), four m64n256k16 wgmmas: O $0..$127 (four m64n64
    quarters, tied to $128..$255); ``a_off`` None: P from registers ($256..$271), else at global_smem + a_off; V at
    global_smem + b_off."""
    return _wgmma_ptx(256, bf16, b_off, True, a_off=a_off, fold_hi=False)


@gluon.constexpr_function
def _wait_asm(n):
    return f"wgmma.wait_group.sync.aligned {n};"


@gluon.jit
def tile_mma(s, A_OFF: gl.constexpr, B_OFF: gl.constexpr, FIRST: gl.constexpr, BF16: gl.constexpr):
    """``s (+)= A B^T`` over one 64 x 64 tile pair, issued asynchronously (one commit group); ``s``: [64, 64] fp32 in
    the m64n64 wgmma accumulator layout; ``A_OFF`` / ``B_OFF``: byte offsets in the CTA's shared memory."""
    return gl.inline_asm_elementwise(_tile_asm(A_OFF, B_OFF, FIRST, BF16), _TIED32, [s], dtype=gl.float32,
                                     is_pure=False, pack=32)


@gluon.jit
def mma_wait(s, N: gl.constexpr):
    """``wgmma.wait_group N`` with ``s`` (the accumulator of the groups waited for) tied through it."""
    return gl.inline_asm_elementwise(_wait_asm(N), _TIED32, [s], dtype=gl.float32, is_pure=False, pack=32)


@gluon.jit
def pv_mma(o0, o1, p, stage_off, B_OFF: gl.constexpr, BF16: gl.constexpr):
    """``[o0 | o1] += p @ V`` issued asynchronously (one commit group): ``o0``, ``o1``: [64, 64] fp32, output columns
    0-63 and 64-127 of one m64n128 accumulator, each in the m64n64 wgmma accumulator layout; ``p``: [64, 64] 16-bit
    in that same layout (the A operand from registers); V: 64 keys x 128 columns at byte ``stage_off + B_OFF`` of
    the CTA's shared memory (``stage_off``: an int32 scalar, ``B_OFF``: a constexpr)."""
    off = gl.full(o0.shape, stage_off, gl.int32, layout=o0.type.layout)
    return gl.inline_asm_elementwise(_pv_asm(B_OFF, BF16), _TIED64, [o0, o1, p, off],
                                     dtype=(gl.float32, gl.float32), is_pure=False, pack=32)


@gluon.jit
def mma_wait4(o0, o1, o2, o3, N: gl.constexpr):
    """``wgmma.wait_group N`` with four m64n64 accumulators tied through it."""
    return gl.inline_asm_elementwise(_wait_asm(N), _TIED128, [o0, o1, o2, o3],
                                     dtype=(gl.float32, gl.float32, gl.float32, gl.float32), is_pure=False, pack=32)



@gluon.jit
def tile_mma_ra(s, a, B_OFF: gl.constexpr, BF16: gl.constexpr):
    """``s += a B^T`` over one 64 x 64 tile, issued asynchronously (one commit group); ``s``: [64, 64] fp32 in the
    m64n64 wgmma accumulator layout; ``a``: [64, 64] 16-bit in that same layout (wgmma's A-register layout); B at
    byte ``B_OFF`` of the CTA's shared memory (K-major, 128-byte swizzle)."""
    return gl.inline_asm_elementwise(_tile_ra_asm(B_OFF, BF16), _TIED32_RA, [s, a], dtype=gl.float32,
                                     is_pure=False, pack=32)



@gluon.jit
def pv256_ra(o, p, B_OFF: gl.constexpr, BF16: gl.constexpr):
    """``o += p @ V`` issued asynchronously (one commit group); ``o``: a tuple of four [64, 64] fp32 quarters (output
    columns 0-63 .. 192-255) in the m64n64 wgmma accumulator layout; ``p``: [64, 64] 16-bit in that layout (the A
    operand from registers); V: 64 keys x 256 columns (four 64-column tiles, 8 KB apart) at byte ``B_OFF``."""
    return gl.inline_asm_elementwise(_pv256_asm(None, B_OFF, BF16), _TIED128_RA, [o[0], o[1], o[2], o[3], p],
                                     dtype=(gl.float32, gl.float32, gl.float32, gl.float32), is_pure=False, pack=32)


@gluon.jit
def pv256_ss(o, A_OFF: gl.constexpr, B_OFF: gl.constexpr, BF16: gl.constexpr):
    """As ``pv256_ra`` with P (64 x 64, K-major) in shared memory at byte ``A_OFF``."""
    return gl.inline_asm_elementwise(_pv256_asm(A_OFF, B_OFF, BF16), _TIED128, [o[0], o[1], o[2], o[3]],
                                     dtype=(gl.float32, gl.float32, gl.float32, gl.float32), is_pure=False, pack=32)
